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
//!
//! `claim`: claims and take-overs; `record`: the holder's writes of a record, and fencing.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_nats::jetstream::context::Context;
use async_nats::jetstream::kv::{self, Operation};
use async_nats::jetstream::stream::Stream;
use bytes::Bytes;
use tern_codec::MqttString;
use tern_core::store::{SessionRecord, StoredSession};
use tern_core::{ClusterInput, ConnectionId, SessionClaim};
#[cfg(debug_assertions)]
use tokio::sync::Notify;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::adopt::AwaitingCore;
use crate::dispatch::{Command, Handoffs};
use crate::exactly_once::OutboundKeys;
use crate::handoff::SessionEntry;
use crate::interest::Interest;
use crate::joining::until_ready;
use crate::node::LIVE_PREFIX;
use crate::settings::ClusterError;
use crate::subject::{encode_level, filter_subjects, overflow_subject};
use crate::Counters;

mod claim;
mod record;

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
