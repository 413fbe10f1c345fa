//! Sessions of a dead node adopted by a survivor, and queues read back from the message stream.
//!
//! A node's sessions are indexed by keys `o.<node>.<session key>` in the sessions bucket
//! (written with each claim, removed when the session leaves the node), so that the sessions of
//! a node whose lease lapsed can be listed (`lease`). The adopter takes each record by
//! compare-and-set on the revision the dead node last wrote, so that of several nodes trying
//! one wins, and hands the session to its core as the dead node recorded it, will included.
//! Its queue is what the message stream holds from the session's cursor on: read back with
//! direct gets, subject by subject, merged in the stream's order and handed over with it.

use std::collections::BTreeMap;

use bytes::Bytes;
use tern_core::store::{SessionRecord, StoredSession};
use tracing::{debug, info, warn};

use crate::dispatch::{remote_message, Command, Settlement};
use crate::envelope::Envelope;
use crate::exactly_once::outbound_records;
use crate::lease::{bucket_subject, index_key};
use crate::node::{INGEST_PREFIX, LIVE_PREFIX};
use crate::sessions::{record_subjects, session_key, Holder, Sessions};

impl Sessions {
    /// Indexes `key` as held by this node.
    pub(crate) async fn index(&self, key: &str) {
        let index = index_key(&self.node_id, key);
        if let Err(error) = self.kv.put(&index, Bytes::new()).await {
            warn!("the index key {index} is not written: {error}");
        }
    }

    /// Removes the index key of `key` held by `node` (purged: nothing of it stays listed).
    pub(crate) async fn unindex(&self, node: &str, key: &str) {
        let subject = bucket_subject(&index_key(node, key));
        if let Err(error) = self.bucket_stream.purge().filter(subject).await {
            debug!("the index key of {key} for {node} stays: {error}");
        }
    }

    /// Adopts the session `key` if the dead node `dead` still holds it.
    pub(crate) async fn adopt(&self, key: &str, dead: &str) {
        let (entry, revision) = match self.read(key).await {
            Ok(read) => read,
            Err(error) => {
                debug!("cannot read the record {key} to adopt it: {error}");
                return;
            }
        };
        let Some(entry) = entry.filter(|entry| entry.node == dead) else {
            // Taken or ended meanwhile.
            self.unindex(dead, key).await;
            return;
        };
        let client_id = entry.client_id.clone();
        let Some(record) = entry.session.clone() else {
            // Claimed and never recorded: nothing to resume, no will.
            if self
                .kv
                .delete_expect_revision(key, Some(revision))
                .await
                .is_ok()
            {
                self.unindex(dead, key).await;
            }
            return;
        };
        let claim = {
            let mut state = self.state();
            state.next_claim += 1;
            state.next_claim
        };
        let subjects = record_subjects(&record);
        let open = Command::Open {
            claim,
            client_id: client_id.clone(),
            subjects: subjects.clone(),
        };
        let _ = self.dispatch.send(open);
        self.hold_for_adoption(key, subjects).await;
        let mine = self.entry(
            &client_id,
            Some(record.clone()),
            entry.epoch,
            entry.cursor,
            entry.resume_from,
        );
        let value = match mine.encode() {
            Ok(value) => value,
            Err(error) => {
                warn!("the record of {client_id:?} cannot be written: {error}");
                self.settle_unadopted(key, claim).await;
                return;
            }
        };
        let (updated, ()) = tokio::join!(self.kv.update(key, value, revision), self.index(key));
        let written = match updated {
            Ok(written) => written,
            Err(error) => {
                debug!("another node adopted {client_id:?} first ({error})");
                self.settle_unadopted(key, claim).await;
                return;
            }
        };
        self.now_owns(key, &mine, written);
        self.unindex(dead, key).await;
        let count = self.replay_into(claim, &record, entry.cursor).await;
        info!(
            "adopted the session of {client_id:?} from node {dead}, which is gone ({count} \
             messages from its cursor)"
        );
        let session = StoredSession {
            record,
            deliveries: Vec::new(),
            incoming_qos2: Vec::new(),
        };
        let settle = Command::Settle {
            claim,
            connection: None,
            outcome: Settlement::Adopted(Box::new(session)),
        };
        let _ = self.dispatch.send(settle);
    }

    /// Ends an adoption that did not happen.
    async fn settle_unadopted(&self, key: &str, claim: u64) {
        self.release(Holder::Adoption(key.to_owned())).await;
        let settle = Command::Settle {
            claim,
            connection: None,
            outcome: Settlement::Unavailable,
        };
        let _ = self.dispatch.send(settle);
    }

    /// Reads what the stream holds for `record`'s subscriptions from `cursor` on into the
    /// backlog of `claim` (whose subjects are held already, so what is stored later comes live);
    /// returns how many messages were read.
    pub(crate) async fn replay_into(
        &self,
        claim: u64,
        record: &SessionRecord,
        cursor: u64,
    ) -> usize {
        let mut found: BTreeMap<u64, Bytes> = BTreeMap::new();
        let live = format!("{LIVE_PREFIX}.");
        for subject in record_subjects(record) {
            let Some(rest) = subject.strip_prefix(&live) else {
                continue;
            };
            let stored = format!("{INGEST_PREFIX}.{rest}");
            let mut next = cursor.max(1);
            loop {
                match self
                    .messages
                    .direct_get_next_for_subject(stored.as_str(), Some(next))
                    .await
                {
                    Ok(message) => {
                        next = message.sequence + 1;
                        found.insert(message.sequence, message.payload);
                    }
                    Err(error)
                        if error.kind()
                            == async_nats::jetstream::stream::DirectGetErrorKind::NotFound =>
                    {
                        break
                    }
                    Err(error) => {
                        warn!("cannot read the stream from {next} on {stored}: {error}");
                        break;
                    }
                }
            }
        }
        let mut messages = Vec::with_capacity(found.len());
        for (seq, payload) in found {
            match Envelope::decode(payload) {
                Ok(envelope) => messages.push((seq, remote_message(envelope, Some(seq)))),
                Err(error) => {
                    self.counters.count_undecodable();
                    warn!("message {seq} of the stream is not from a Tern node: {error}");
                }
            }
        }
        let count = messages.len();
        let outbound = match count {
            0 => Vec::new(),
            _ => outbound_records(&self.qos2, &session_key(&record.client_id)).await,
        };
        let replayed = Command::Replayed {
            claim,
            from: cursor,
            messages,
            outbound,
        };
        let _ = self.dispatch.send(replayed);
        count
    }
}
