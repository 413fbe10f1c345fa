//! Sessions of a dead node adopted by a survivor, and queues read back from the message stream.
//!
//! A node's sessions are indexed by keys `o.<node>.<session key>` in the sessions bucket
//! (written with each claim, removed when the session leaves the node), so that the sessions of
//! a node whose lease lapsed can be listed (`lease`). The adopter takes each record by
//! compare-and-set on the revision the dead node last wrote, so that of several nodes trying
//! one wins, and hands the session to its core as the dead node recorded it, will included.
//! Its queue is what the message stream holds from the session's cursor on: read back with
//! direct gets, subject by subject, merged in the stream's order and handed over with it.
//!
//! The record the adopter writes still says where the dead node's stream of the session
//! resumed; only the core, once it holds the session, knows where it resumes now (past what it
//! was handed). Until the core's first write of the record, the adoption keeps the session's
//! queue of jobs: a claim of the session on this node runs after that write, and reads from the
//! stream only what the core does not hold.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use tern_core::store::{SessionRecord, StoredSession};
use tokio::sync::oneshot;
use tracing::{debug, info, warn};

use crate::dispatch::{remote_message, Command, Settlement};
use crate::envelope::Envelope;
use crate::exactly_once::outbound_records;
use crate::lease::{bucket_subject, index_key};
use crate::node::{INGEST_PREFIX, LIVE_PREFIX};
use crate::sessions::{record_subjects, session_key, Holder, Job, Sessions};

/// How long an adoption waits for the core to take its session in, at most.
const CORE_WAIT: Duration = Duration::from_secs(10);

/// An adoption waiting for the core to take its session in: the core's writes of the
/// session's record meanwhile, to run first once it has.
pub(crate) struct AwaitingCore {
    pub(crate) saves: Vec<Job>,
    done: oneshot::Sender<()>,
}

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
        #[cfg(debug_assertions)]
        self.wait_for_claim_if_asked(key, &client_id).await;
        let (done, core_took) = oneshot::channel();
        let awaiting = AwaitingCore {
            saves: Vec::new(),
            done,
        };
        self.state().awaiting_core.insert(key.to_owned(), awaiting);
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
        if tokio::time::timeout(CORE_WAIT, core_took).await.is_err() {
            warn!(
                "the core did not take the adopted session of {client_id:?} in within \
                 {CORE_WAIT:?}: a claim of it may read its queue again"
            );
            self.core_took(key);
        }
        info!(
            "adopted the session of {client_id:?} from node {dead}, which is gone ({count} \
             messages from its cursor)"
        );
    }

    /// The core took the adopted session `key` in (or did not in time): its writes of the
    /// record meanwhile run next, before anything queued for the session since.
    pub(crate) fn core_took(&self, key: &str) {
        let mut state = self.state();
        let Some(awaiting) = state.awaiting_core.remove(key) else {
            return;
        };
        let queue = state.queues.entry(key.to_owned()).or_default();
        for job in awaiting.saves.into_iter().rev() {
            queue.push_front(job);
        }
        let _ = awaiting.done.send(());
    }

    /// With `TERN_CLUSTER_ADOPTION_WAITS_FOR_CLAIM` set (debug builds, for tests), an adoption
    /// about to settle waits until a claim of the same session is queued, so that a test can
    /// connect exactly in that moment.
    #[cfg(debug_assertions)]
    async fn wait_for_claim_if_asked(&self, key: &str, client_id: &tern_codec::MqttString) {
        if std::env::var_os("TERN_CLUSTER_ADOPTION_WAITS_FOR_CLAIM").is_none() {
            return;
        }
        info!("the adoption of {client_id:?} waits for a claim of it");
        let deadline = tokio::time::Instant::now() + crate::sessions::HANDOFF_WAIT * 10;
        loop {
            let enqueued = self.enqueued.notified();
            tokio::pin!(enqueued);
            enqueued.as_mut().enable();
            if self.claim_queued(key) {
                return;
            }
            if tokio::time::timeout_at(deadline, enqueued).await.is_err() {
                warn!("no claim of {client_id:?} came; its adoption settles");
                return;
            }
        }
    }

    /// Whether a claim of `key` waits in its queue.
    #[cfg(debug_assertions)]
    fn claim_queued(&self, key: &str) -> bool {
        self.state()
            .queues
            .get(key)
            .is_some_and(|jobs| jobs.iter().any(|job| matches!(job, Job::Claim(_))))
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
            _ => {
                let key = session_key(&record.client_id);
                let (outbound, read) = outbound_records(&self.qos2, &key).await;
                debug!(
                    "read {} QoS 2 delivery records of {:?} with {count} messages from {cursor}",
                    outbound.len(),
                    record.client_id
                );
                self.note_outbound(read);
                outbound
            }
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
