//! Sessions across nodes: who holds each is recorded in the replicated KV bucket `TERN_SESS`
//! and changed only by compare-and-set on its revision, which fences a node that lost a session
//! (paused, cut off) from writing it again.
//!
//! A claim reads the record; if another node holds the session, the claimant subscribes to the
//! session's filters (so it misses nothing from then on), takes the record by compare-and-set,
//! then sends the holder a notice through the message stream. The notice's place in the stream
//! splits the session's messages: the holder, which takes notices in the stream's order (see
//! `dispatch`), closes the client's connection with 0x8E and hands over what it had of those
//! stored before; the claimant delivers those stored after. A holder without a lease in
//! `TERN_NODES` is not waited for (its sessions are then taken with what the record says: the
//! subscriptions, not the queue), nor is one that does not answer within [`HANDOFF_WAIT`].
//!
//! Every operation on one session's record (claim, write, removal, check) runs in order, one
//! at a time, so the revision this node last wrote is the one its next write expects.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_nats::jetstream::context::Context;
use async_nats::jetstream::kv::{self, Operation, UpdateErrorKind};
use async_nats::jetstream::stream::Stream;
use bytes::Bytes;
use tern_codec::MqttString;
use tern_core::store::{SessionRecord, StoredSession};
use tern_core::{ClusterInput, ConnectionId, SessionClaim};
#[cfg(debug_assertions)]
use tokio::sync::Notify;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::adopt::AwaitingCore;
use crate::dispatch::{notice_subject, Command, Handoffs, Settlement};
use crate::exactly_once::OutboundKeys;
use crate::handoff::{Notice, SessionEntry};
use crate::interest::Interest;
use crate::joining::until_ready;
use crate::node::{store, INGEST_PREFIX, LIVE_PREFIX};
use crate::settings::ClusterError;
use crate::subject::{encode_level, filter_subjects, overflow_subject};
use crate::Counters;

/// The bucket of session records.
pub(crate) const SESSIONS_BUCKET: &str = "TERN_SESS";
/// The bucket of node leases.
pub(crate) const NODES_BUCKET: &str = "TERN_NODES";
/// How long a claimant waits for the holder to hand a session over.
pub(crate) const HANDOFF_WAIT: Duration = Duration::from_secs(3);
/// Claims that lose the compare-and-set race this many times in a row give up (Server
/// unavailable): someone keeps connecting with the same client identifier elsewhere.
const CLAIM_ATTEMPTS: usize = 8;
/// Wait before writing again a record NATS did not take (unreachable).
const WRITE_RETRY_DELAY: Duration = Duration::from_millis(500);
/// Keys longer than this are a hash of the client identifier instead.
const KEY_LEN_MAX: usize = 200;

/// The key of `client_id`'s record: its escaped form, or a hash of a long one.
pub(crate) fn session_key(client_id: &MqttString) -> String {
    let mut key = String::from("s.");
    encode_level(client_id.as_str(), &mut key);
    if key.len() > KEY_LEN_MAX {
        let hash = xxhash_rust::xxh3::xxh3_128(client_id.as_bytes());
        key = format!("h.{hash:032x}");
    }
    key
}

/// Something to do with one session's record.
pub(crate) enum Job {
    Claim(SessionClaim),
    Save(Box<SessionRecord>, Option<u64>, u64, oneshot::Sender<()>),
    End(MqttString),
    Check(MqttString),
    /// Adopt the session if the dead node named still holds it.
    Adopt(String),
}

/// A record this node holds, as it last wrote it.
pub(crate) struct Owned {
    pub(crate) client_id: MqttString,
    pub(crate) revision: u64,
    /// The will's identity (see [`SessionEntry::epoch`]).
    pub(crate) epoch: u64,
    /// The cursor last written.
    pub(crate) cursor: u64,
}

/// What subscriptions held for a session settling here are held for.
#[derive(Clone, PartialEq, Eq, Hash)]
pub(crate) enum Holder {
    /// A CONNECT's claim.
    Connection(ConnectionId),
    /// An adoption, by the session's key.
    Adoption(String),
}

/// What a node keeps about the sessions it deals with.
#[derive(Default)]
pub(crate) struct State {
    /// Jobs per key, in the order they came.
    pub(crate) queues: HashMap<String, VecDeque<Job>>,
    /// Keys whose jobs a task is running.
    running: HashSet<String>,
    /// Records this node holds, by key.
    pub(crate) owned: HashMap<String, Owned>,
    /// Claims waiting for a hand-over.
    pub(crate) waiting: HashMap<u64, Waiting>,
    /// Subjects held for a session settling here until the core holds its own.
    held_for: HashMap<Holder, Vec<String>>,
    pub(crate) next_claim: u64,
    /// Keys with an adoption queued or running.
    pub(crate) adopting: HashSet<String>,
    /// Outbound QoS 2 records to purge once the cursor passes them (`exactly_once`).
    pub(crate) outbound: OutboundKeys,
    /// Adoptions waiting for the core to take their session in (see `adopt`).
    pub(crate) awaiting_core: HashMap<String, AwaitingCore>,
    /// The epoch of each session this node held, kept after it lost the session until the
    /// session ends here: a will the core publishes late (the node was paused) still gets the
    /// identity every other node gives it.
    pub(crate) epochs: HashMap<String, u64>,
}

/// A claim waiting for its session, and the chunks that came so far.
pub(crate) struct Waiting {
    pub(crate) client_id: MqttString,
    pub(crate) chunks: Vec<Option<Bytes>>,
    /// The session handed over, and where its holder kept no more of its messages.
    pub(crate) done: oneshot::Sender<(Option<StoredSession>, u64)>,
}

/// The node's side of sessions across the cluster.
pub(crate) struct Sessions {
    pub(crate) kv: kv::Store,
    pub(crate) nodes: kv::Store,
    pub(crate) jetstream: Context,
    pub(crate) client: async_nats::Client,
    pub(crate) node_id: String,
    pub(crate) boot: u64,
    pub(crate) lease: Duration,
    pub(crate) interest: Arc<Interest>,
    pub(crate) dispatch: mpsc::UnboundedSender<Command>,
    pub(crate) inputs: mpsc::Sender<ClusterInput>,
    pub(crate) handoffs: Arc<Mutex<Handoffs>>,
    pub(crate) counters: Arc<Counters>,
    /// The stream behind the sessions bucket (for its index keys).
    pub(crate) bucket_stream: Stream,
    /// The message stream (for replays from a cursor).
    pub(crate) messages: Stream,
    /// Inbound QoS 2 identifiers and outbound QoS 2 deliveries (`exactly_once`).
    pub(crate) qos2: kv::Store,
    /// When this node last renewed its lease.
    pub(crate) renewed: Mutex<Instant>,
    /// Woken whenever a job is queued (for a test hook, `adopt`).
    #[cfg(debug_assertions)]
    pub(crate) enqueued: Notify,
    state: Mutex<State>,
}

/// A KV bucket as this node needs it: one value per key, replicated like the message stream,
/// values dropped after `max_age` (zero: kept).
pub(crate) struct Bucket<'a> {
    pub(crate) name: &'a str,
    pub(crate) replicas: usize,
    pub(crate) max_age: Duration,
}

/// Finds or makes a KV bucket, trying again while a forming NATS cluster refuses. The bucket's
/// stream is made here as the KV layout has it: async-nats asks the server for its account
/// first, in a form a 2.9 server does not answer.
pub(crate) async fn bucket(
    jetstream: &Context,
    bucket: Bucket<'_>,
    deadline: Instant,
) -> Result<kv::Store, ClusterError> {
    let config = async_nats::jetstream::stream::Config {
        name: format!("KV_{}", bucket.name),
        subjects: vec![format!("$KV.{}.>", bucket.name)],
        max_messages_per_subject: 1,
        max_age: bucket.max_age,
        storage: async_nats::jetstream::stream::StorageType::File,
        num_replicas: bucket.replicas,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: async_nats::jetstream::stream::DiscardPolicy::New,
        ..Default::default()
    };
    let config = &config;
    until_ready(
        &format!("bucket {}", bucket.name),
        deadline,
        move || async move {
            let found = jetstream.get_or_create_stream(config.clone()).await;
            found.map_err(|error| error.to_string())?;
            let store = jetstream.get_key_value(bucket.name).await;
            store.map_err(|error| error.to_string())
        },
    )
    .await
}

impl Sessions {
    #[allow(clippy::too_many_arguments)] // The node's parts, once.
    pub(crate) fn new(
        kv: kv::Store,
        nodes: kv::Store,
        jetstream: Context,
        client: async_nats::Client,
        node_id: String,
        boot: u64,
        lease: Duration,
        interest: Arc<Interest>,
        dispatch: mpsc::UnboundedSender<Command>,
        inputs: mpsc::Sender<ClusterInput>,
        handoffs: Arc<Mutex<Handoffs>>,
        counters: Arc<Counters>,
        bucket_stream: Stream,
        messages: Stream,
        qos2: kv::Store,
    ) -> Self {
        Self {
            kv,
            nodes,
            jetstream,
            client,
            node_id,
            boot,
            lease,
            interest,
            dispatch,
            inputs,
            handoffs,
            counters,
            bucket_stream,
            messages,
            qos2,
            renewed: Mutex::new(Instant::now()),
            #[cfg(debug_assertions)]
            enqueued: Notify::new(),
            state: Mutex::new(State::default()),
        }
    }

    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding it; a poisoned lock still holds consistent data.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Where claimants' hand-overs to this node arrive.
    pub(crate) fn reply_subject(&self) -> String {
        format!("tern.r.{:016x}", self.boot)
    }

    /// Claims the session of `claim`'s client identifier; the dispatcher settles it.
    pub(crate) fn claim(self: &Arc<Self>, claim: SessionClaim) {
        let key = session_key(&claim.client_id);
        self.enqueue(key, Job::Claim(claim));
    }

    /// Writes a session's record with its cursor (`None`: the one last written) and where its
    /// messages resume (see [`SessionEntry::resume_from`]); `done` once written (or refused).
    pub(crate) fn save(
        self: &Arc<Self>,
        record: Box<SessionRecord>,
        cursor: Option<u64>,
        resume_from: u64,
        done: oneshot::Sender<()>,
    ) {
        let key = session_key(&record.client_id);
        let job = Job::Save(record, cursor, resume_from, done);
        if let Some(awaiting) = self.state().awaiting_core.get_mut(&key) {
            awaiting.saves.push(job);
            return;
        }
        self.enqueue(key, job);
    }

    /// Removes the record of a session that ended here.
    pub(crate) fn end(self: &Arc<Self>, client_id: MqttString) {
        let key = session_key(&client_id);
        self.enqueue(key, Job::End(client_id));
    }

    pub(crate) fn enqueue(self: &Arc<Self>, key: String, job: Job) {
        let mut state = self.state();
        state.queues.entry(key.clone()).or_default().push_back(job);
        if state.running.insert(key.clone()) {
            let this = Arc::clone(self);
            tokio::spawn(async move { this.work(key).await });
        }
        drop(state);
        #[cfg(debug_assertions)]
        self.enqueued.notify_waiters();
    }

    async fn work(self: Arc<Self>, key: String) {
        loop {
            let job = {
                let mut state = self.state();
                match state.queues.get_mut(&key).and_then(VecDeque::pop_front) {
                    Some(job) => job,
                    None => {
                        state.queues.remove(&key);
                        state.running.remove(&key);
                        return;
                    }
                }
            };
            match job {
                Job::Claim(claim) => self.run_claim(&key, claim).await,
                Job::Save(record, cursor, resume_from, done) => {
                    let written = self.write(&key, &record, cursor, resume_from).await;
                    let _ = done.send(());
                    // Nothing waits for the purge; a claim of the session comes after it.
                    if let Some(cursor) = written {
                        self.purge_outbound(&key, cursor).await;
                    }
                }
                Job::End(client_id) => self.remove(&key, &client_id).await,
                Job::Check(client_id) => self.check(&key, &client_id).await,
                Job::Adopt(dead) => {
                    self.adopt(&key, &dead).await;
                    self.state().adopting.remove(&key);
                }
            }
        }
    }

    /// The record of `key` and its revision (0 when there is none; a removed record's is that
    /// of its removal, which a compare-and-set expects as well).
    pub(crate) async fn read(&self, key: &str) -> Result<(Option<SessionEntry>, u64), String> {
        let entry = self.kv.entry(key).await.map_err(|e| e.to_string())?;
        let Some(entry) = entry else {
            return Ok((None, 0));
        };
        if entry.operation != Operation::Put {
            return Ok((None, entry.revision));
        }
        let record = SessionEntry::decode(entry.value).map_err(|e| e.to_string())?;
        Ok((Some(record), entry.revision))
    }

    /// The entry this node writes for `client_id`.
    pub(crate) fn entry(
        &self,
        client_id: &MqttString,
        session: Option<SessionRecord>,
        epoch: u64,
        cursor: u64,
        resume_from: u64,
    ) -> SessionEntry {
        SessionEntry {
            node: self.node_id.clone(),
            boot: self.boot,
            epoch,
            cursor,
            resume_from,
            client_id: client_id.clone(),
            session,
        }
    }

    /// Notes that this node holds `key` as written at `revision`.
    pub(crate) fn now_owns(&self, key: &str, entry: &SessionEntry, revision: u64) {
        let owned = Owned {
            client_id: entry.client_id.clone(),
            revision,
            epoch: entry.epoch,
            cursor: entry.cursor,
        };
        let mut state = self.state();
        state.epochs.insert(key.to_owned(), entry.epoch);
        state.owned.insert(key.to_owned(), owned);
    }

    /// The identity in the log of the will of `client_id`'s session, if this node holds it.
    pub(crate) fn will_message_id(&self, client_id: &MqttString) -> Option<String> {
        let key = session_key(client_id);
        let epoch = *self.state().epochs.get(&key)?;
        Some(format!("w.{key}.{epoch}"))
    }

    async fn run_claim(&self, key: &str, claim: SessionClaim) {
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

    /// Writes a record this node holds, expecting the revision it last wrote; a record another
    /// node has written since is not overwritten, and the core is told it lost the session.
    /// Returns the cursor written, if it was.
    async fn write(
        &self,
        key: &str,
        record: &SessionRecord,
        cursor: Option<u64>,
        resume_from: u64,
    ) -> Option<u64> {
        let client_id = &record.client_id;
        let (epoch, last_cursor) = self
            .state()
            .owned
            .get(key)
            .map_or((0, 0), |owned| (owned.epoch, owned.cursor));
        let entry = self.entry(
            client_id,
            Some(record.clone()),
            epoch,
            cursor.unwrap_or(last_cursor),
            resume_from,
        );
        let value = match entry.encode() {
            Ok(value) => value,
            Err(error) => {
                warn!("the record of {client_id:?} cannot be written: {error}");
                return None;
            }
        };
        loop {
            let known = self.state().owned.get(key).map(|owned| owned.revision);
            let expected = match known {
                Some(revision) => revision,
                // A session this node had before the record knew it (restored from its store).
                None => match self.read(key).await {
                    Ok((None, revision)) => revision,
                    Ok((Some(entry), revision)) if entry.node == self.node_id => revision,
                    Ok((Some(entry), _)) => {
                        self.fenced(key, client_id, &entry.node).await;
                        return None;
                    }
                    Err(error) => {
                        debug!("cannot read the record of {client_id:?}: {error}");
                        tokio::time::sleep(WRITE_RETRY_DELAY).await;
                        continue;
                    }
                },
            };
            match self.kv.update(key, value.clone(), expected).await {
                Ok(written) => {
                    self.now_owns(key, &entry, written);
                    return Some(entry.cursor);
                }
                Err(error) if error.kind() == UpdateErrorKind::WrongLastRevision => {
                    let holder = match self.read(key).await {
                        Ok((Some(entry), _)) => entry.node,
                        _ => "another node".to_owned(),
                    };
                    self.fenced(key, client_id, &holder).await;
                    return None;
                }
                Err(error) => {
                    warn!("the record of {client_id:?} is not written yet ({error}); trying again");
                    tokio::time::sleep(WRITE_RETRY_DELAY).await;
                }
            }
        }
    }

    /// This node lost the session of `client_id`: its write was refused, nothing of it is
    /// written again, and the core closes the connection.
    async fn fenced(&self, key: &str, client_id: &MqttString, holder: &str) {
        self.state().owned.remove(key);
        self.unindex(&self.node_id, key).await;
        self.counters.count_fenced();
        warn!(
            "the session of {client_id:?} belongs to {holder} now: this node's write of its \
             record was refused (fenced), and its connection here is closed"
        );
        let input = ClusterInput::TakenOver {
            client_id: client_id.clone(),
            clean_start: false,
            token: None,
        };
        let _ = self.inputs.send(input).await;
    }

    /// Removes the record of a session that ended here, unless another node holds it now.
    async fn remove(&self, key: &str, client_id: &MqttString) {
        self.state().epochs.remove(key);
        self.forget_outbound(key);
        let known = self.state().owned.remove(key).map(|owned| owned.revision);
        let expected = match known {
            Some(revision) => revision,
            None => match self.read(key).await {
                Ok((Some(entry), revision)) if entry.node == self.node_id => revision,
                _ => return,
            },
        };
        match self.kv.delete_expect_revision(key, Some(expected)).await {
            Ok(()) => self.unindex(&self.node_id, key).await,
            Err(error) => debug!("the record of {client_id:?} stays: {error}"),
        }
    }

    /// Checks that a record this node holds is still as it wrote it.
    async fn check(&self, key: &str, client_id: &MqttString) {
        let Some(written) = self.state().owned.get(key).map(|owned| owned.revision) else {
            return;
        };
        match self.read(key).await {
            Ok((_, revision)) if revision == written => {}
            Ok((Some(entry), _)) if entry.node == self.node_id => {}
            Ok((entry, _)) => {
                let holder = entry.map_or_else(|| "nobody".to_owned(), |entry| entry.node);
                self.fenced(key, client_id, &holder).await;
            }
            Err(error) => debug!("cannot check the record of {client_id:?}: {error}"),
        }
    }
}

/// The lease key of `node`.
pub(crate) fn lease_key(node: &str) -> String {
    format!("n.{node}")
}

/// The subjects a session's subscriptions need, and the overflow subject.
pub(crate) fn record_subjects(record: &SessionRecord) -> Vec<String> {
    let mut subjects: Vec<String> = record
        .subscriptions
        .iter()
        // A `$share` group's messages go to one node each, as NATS picks: never read back.
        .filter(|(filter, _)| !filter.is_shared())
        .flat_map(|(filter, _)| {
            // What a `$tree/` subscription needs is its inner filter's messages.
            let filter = filter.as_str();
            let inner = filter.strip_prefix("$tree/").unwrap_or(filter);
            filter_subjects(LIVE_PREFIX, inner)
        })
        .collect();
    subjects.push(overflow_subject(LIVE_PREFIX));
    subjects.sort();
    subjects.dedup();
    subjects
}
