//! Claims of sessions: a CONNECT takes its client identifier's record by compare-and-set, and
//! a session another node holds is asked for with a notice through the message stream.

use std::time::Duration;

use async_nats::jetstream::kv::UpdateErrorKind;
use tern_codec::MqttString;
use tern_core::store::StoredSession;
use tern_core::{ConnectionId, SessionClaim};
use tokio::sync::oneshot;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::{lease_key, record_subjects, Holder, Sessions, Waiting, CLAIM_ATTEMPTS, HANDOFF_WAIT};
use crate::dispatch::{notice_subject, Command, Settlement};
use crate::handoff::{Notice, SessionEntry};
use crate::node::{store, INGEST_PREFIX};

impl Sessions {
    pub(super) async fn run_claim(&self, key: &str, claim: SessionClaim) {
        let connection = claim.connection;
        let (id, outcome) = match self.try_claim(key, &claim).await {
            Ok((id, handed_over)) => (id, Settlement::Owned(handed_over.map(Box::new))),
            Err((id, why)) => {
                warn!(
                    "cannot claim the session of {:?}: {why}; its CONNECT is refused",
                    claim.client_id
                );
                (id, Settlement::Unavailable)
            }
        };
        let settle = Command::Settle {
            claim: id,
            connection: Some(connection),
            outcome,
        };
        let _ = self.dispatch.send(settle);
    }

    /// Claims `key`; returns the claim's number and what was handed over, or why not.
    async fn try_claim(
        &self,
        key: &str,
        claim: &SessionClaim,
    ) -> Result<(u64, Option<StoredSession>), (u64, String)> {
        let id = {
            let mut state = self.state();
            state.next_claim += 1;
            state.next_claim
        };
        let client_id = &claim.client_id;
        // Notices that this node must give the session up wait until the claim settles.
        let open = Command::Open {
            claim: id,
            client_id: client_id.clone(),
            subjects: Vec::new(),
        };
        let _ = self.dispatch.send(open);
        let mut attempts = 0;
        let previous = loop {
            attempts += 1;
            let (previous, revision) = self.read(key).await.map_err(|why| (id, why))?;
            if previous
                .as_ref()
                .is_some_and(|entry| entry.client_id != *client_id)
            {
                return Err((id, format!("its key {key} holds another client's session")));
            }
            // A session held elsewhere, or parked here (its messages left in the stream).
            let resumes = previous.as_ref().filter(|entry| {
                !claim.clean_start && (entry.node != self.node_id || entry.resume_from > 0)
            });
            // From here on the node hears the session's messages, before the record moves.
            let subjects = resumes
                .and_then(|entry| entry.session.as_ref())
                .map(record_subjects)
                .unwrap_or_default();
            if !subjects.is_empty() {
                self.hold_for_claim(id, claim.connection, client_id, subjects)
                    .await;
            }
            let session = previous.as_ref().and_then(|entry| entry.session.clone());
            let cursor = previous.as_ref().map_or(0, |entry| entry.cursor);
            // The revision this claim replaces numbers the connection: its will's identity.
            let entry = self.entry(client_id, session, revision, cursor, 0);
            let value = entry.encode().map_err(|e| (id, e.to_string()))?;
            // Indexed first (or at once), so that no record of this node's goes unlisted.
            let (updated, ()) = tokio::join!(self.kv.update(key, value, revision), self.index(key));
            match updated {
                Ok(written) => {
                    self.now_owns(key, &entry, written);
                    break previous;
                }
                Err(error) => {
                    self.release_claim(claim.connection).await;
                    let raced = error.kind() == UpdateErrorKind::WrongLastRevision;
                    if !raced || attempts >= CLAIM_ATTEMPTS {
                        return Err((id, error.to_string()));
                    }
                    debug!("claim of {client_id:?} raced another node's; reading again");
                }
            }
        };
        let Some(previous) = previous else {
            return Ok((id, None));
        };
        if previous.node == self.node_id {
            // The core holds the session; what it left in the stream is read back.
            if let Some(record) = previous.session.as_ref() {
                if !claim.clean_start && previous.resume_from > 0 {
                    self.replay_into(id, record, previous.resume_from).await;
                }
            }
            return Ok((id, None));
        }
        let handed_over = self.take_from(id, claim, &previous).await;
        Ok((id, handed_over))
    }

    /// Subscribes, for the claim `id`, to the subjects of a session another node holds.
    async fn hold_for_claim(
        &self,
        id: u64,
        connection: ConnectionId,
        client_id: &MqttString,
        subjects: Vec<String>,
    ) {
        let open = Command::Open {
            claim: id,
            client_id: client_id.clone(),
            subjects: subjects.clone(),
        };
        let _ = self.dispatch.send(open);
        for subject in &subjects {
            self.interest.hold(subject.clone()).await;
        }
        self.interest.sync().await;
        let holder = Holder::Connection(connection);
        self.state().held_for.insert(holder, subjects);
    }

    /// Holds `subjects` for an adoption of `key` until the core holds the session's own.
    pub(crate) async fn hold_for_adoption(&self, key: &str, subjects: Vec<String>) {
        for subject in &subjects {
            self.interest.hold(subject.clone()).await;
        }
        self.interest.sync().await;
        let holder = Holder::Adoption(key.to_owned());
        self.state().held_for.insert(holder, subjects);
    }

    /// Lets go of what a claim subscribed to, once the core holds the session's own interest.
    pub(crate) async fn release_claim(&self, connection: ConnectionId) {
        self.release(Holder::Connection(connection)).await;
    }

    /// Lets go of what was held for `holder`.
    pub(crate) async fn release(&self, holder: Holder) {
        let subjects = self.state().held_for.remove(&holder);
        for subject in subjects.unwrap_or_default() {
            self.interest.release(&subject).await;
        }
    }

    /// Sends the holder of a session this node claimed the notice, and waits for what it hands
    /// over; without an answer, what the record says.
    async fn take_from(
        &self,
        id: u64,
        claim: &SessionClaim,
        previous: &SessionEntry,
    ) -> Option<StoredSession> {
        let client_id = &claim.client_id;
        let holder = &previous.node;
        let (done, answer) = oneshot::channel();
        let waiting = Waiting {
            client_id: client_id.clone(),
            chunks: Vec::new(),
            done,
        };
        self.state().waiting.insert(id, waiting);
        let notice = Notice {
            client_id: client_id.clone(),
            clean_start: claim.clean_start,
            claim: id,
            claimant: self.node_id.clone(),
            reply: self.reply_subject(),
        };
        let noticed = self.send_notice(id, holder, notice).await;
        let alive = noticed && self.alive(holder).await;
        let handed_over = match alive {
            true => match tokio::time::timeout(HANDOFF_WAIT, answer).await {
                Ok(Ok(handed_over)) => Some(handed_over),
                _ => {
                    warn!(
                        "node {holder} did not hand the session of {client_id:?} over within \
                         {HANDOFF_WAIT:?}: taken as its record says, its queue read from its \
                         cursor in the stream"
                    );
                    None
                }
            },
            false => {
                info!(
                    "node {holder} holds no lease: the session of {client_id:?} is taken as its \
                     record says, its queue read from its cursor in the stream"
                );
                None
            }
        };
        self.state().waiting.remove(&id);
        // What the holder did not keep (all of it without a hand-over) is read from the stream.
        let replay_from = match &handed_over {
            Some((_, resume_from)) => *resume_from,
            None => previous.cursor,
        };
        if let Some(record) = previous.session.as_ref() {
            if !claim.clean_start && replay_from > 0 {
                self.replay_into(id, record, replay_from).await;
            }
        }
        match handed_over {
            Some((session, _)) => session,
            None if claim.clean_start => None,
            None => previous.session.clone().map(|record| StoredSession {
                record,
                deliveries: Vec::new(),
                incoming_qos2: Vec::new(),
            }),
        }
    }

    /// Stores the notice to `holder` in the stream, which gives it its place among the
    /// session's messages; returns whether it was stored.
    async fn send_notice(&self, id: u64, holder: &str, notice: Notice) -> bool {
        let subject = notice_subject(INGEST_PREFIX, holder);
        let message_id = format!("n.{:016x}.{id}", self.boot);
        let payload = notice.encode();
        let deadline = Instant::now() + HANDOFF_WAIT;
        loop {
            let sent = store(&self.jetstream, &subject, &payload, &message_id).await;
            let stored = match sent {
                Ok(ack) => ack.await.map_err(|e| e.to_string()),
                Err(error) => Err(error.to_string()),
            };
            match stored {
                Ok(ack) => {
                    let boundary = Command::Boundary {
                        claim: id,
                        seq: ack.sequence,
                    };
                    let _ = self.dispatch.send(boundary);
                    return true;
                }
                Err(error) if Instant::now() < deadline => {
                    debug!("notice to {holder} not stored yet ({error}); trying again");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(error) => {
                    warn!("cannot send node {holder} its take-over notice: {error}");
                    return false;
                }
            }
        }
    }

    /// Whether `node` holds a lease.
    async fn alive(&self, node: &str) -> bool {
        matches!(self.nodes.get(lease_key(node)).await, Ok(Some(_)))
    }
}
