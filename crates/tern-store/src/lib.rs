//! Tern's durable store: the core's [`Store`] trait on the fjall embedded engine.
//!
//! Each batch of [`StoreOp`]s becomes one fjall write batch; with [`Durability::Fsync`] the
//! journal is then synced, so one sync covers every operation of the batch (group commit is
//! the caller's batching). Records are versioned by a format key; a store of another version,
//! a damaged one, or one whose records do not decode, is refused with an error, never reset;
//! [`DiskStore::recover`] opens a damaged one with what reads back, logging what was lost.
//!
//! # Layout
//! - this file: opening, applying batches, loading a snapshot.
//! - [`record`]: the byte layout of each record; `guard`: of the request guard's records;
//!   `history`: of kept messages.
//! - `layout`: the data directory's pieces, checked before the engine opens them; `journal`
//!   reads the engine's journals for damage; `commit`: the marker of the last batch committed;
//!   `meta`: the format version and commit counter; `salvage`: refusing, or repairing and
//!   logging, what is found.

mod commit;
mod firmware;
mod fleet;
mod fleet_notify;
mod guard;
mod history;
mod journal;
mod layout;
mod meta;
pub mod record;
mod salvage;

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use fjall::{Batch, Keyspace, PartitionCreateOptions, PartitionHandle, PersistMode};
use tern_codec::MqttString;
use tern_core::session::Delivery;
use tern_core::store::{DeliveryStage, SessionRecord, StoredSession};
use tern_core::{Snapshot, Store, StoreOp};
use tracing::info;

use commit::MarkerFile;
pub use layout::BESIDE_THE_STORE;
use meta::Format;
use record::{delivery_key, incoming_key, RecordError};
use salvage::{drop_record, Progress, Salvage};
pub use tern_core::record::WallClock;

/// The record format this build reads and writes.
pub const FORMAT_VERSION: u32 = 7;
/// The oldest format this build converts at open: version 1 session records name no owner;
/// stores before version 3 have no `guard` partition; session records before version 4 do not
/// keep the next sequence number; stores before version 5 have no `history` partition,
/// before version 6 no `fleet` partition, and before 7 no `firmware` or `notify` partition.
const FORMAT_VERSION_OLDEST: u32 = 1;
/// Key of the format version in the `meta` partition.
const FORMAT_KEY: &[u8] = b"format";
/// Key of the number of the last batch committed, in the `meta` partition (see [`commit`]).
const COMMIT_KEY: &[u8] = b"commit";
/// Key of the highest id of a retained message's deletion no longer remembered (format 5).
const KV_HORIZON_KEY: &[u8] = b"kv_horizon";
/// The partition of the format version and the commit counter.
const META_PARTITION: &str = "meta";
/// The partition of the request guard's records (format version 3).
const GUARD_PARTITION: &str = "guard";
/// The partition of kept messages (format version 5).
const HISTORY_PARTITION: &str = "history";
/// The partition of the device fleet's registry (format version 6).
const FLEET_PARTITION: &str = "fleet";
/// The partition of the fleet's firmware catalogue (format version 7).
const FIRMWARE_PARTITION: &str = "firmware";
/// The partition of the fleet's actionable notifications (format version 7).
const NOTIFY_PARTITION: &str = "notify";
/// The partitions, in the order a new store makes them: `meta` last, so that a store whose
/// `meta` exists was made whole (see `layout`).
const PARTITIONS: [&str; 11] = [
    "retained",
    "sessions",
    "deliveries",
    "stages",
    "incoming",
    GUARD_PARTITION,
    HISTORY_PARTITION,
    FLEET_PARTITION,
    FIRMWARE_PARTITION,
    NOTIFY_PARTITION,
    META_PARTITION,
];
/// Partitions a store of an older format does not have, with the version that made each:
/// their absence is damage only in a store of that version or later (see `layout`).
const PARTITIONS_SINCE: [(&str, u32); 5] = [
    (GUARD_PARTITION, 3),
    (HISTORY_PARTITION, 5),
    (FLEET_PARTITION, 6),
    (FIRMWARE_PARTITION, 7),
    (NOTIFY_PARTITION, 7),
];
/// A progress line is logged every this many records while loading.
const PROGRESS_EVERY: u64 = 250_000;
/// Journal size past which fjall flushes memtables and drops old journals: bounds the disk
/// used by the journal under churn.
const JOURNAL_MAX_BYTES: u64 = 64 * 1024 * 1024;
/// Memory for memtables across partitions before they are flushed to disk.
const WRITE_BUFFER_MAX_BYTES: u64 = 32 * 1024 * 1024;
/// With [`Durability::Os`] the commit marker is written at most this often (and when the
/// store is dropped): the write costs about as much as the rest of a small batch, and a
/// marker that lags only narrows the check. With [`Durability::Fsync`] it is written after
/// every batch, a small cost beside the sync.
const OS_MARKER_EVERY: Duration = Duration::from_millis(1);

/// How far a batch has got when [`Store::apply`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Written and synced to disk (`fdatasync` of the journal): survives power loss.
    Fsync,
    /// Written to the operating system: survives the broker being killed, not an OS crash.
    Os,
}

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The engine failed (I/O, or its own files are damaged).
    #[error("store engine error in {path}: {source}")]
    Engine {
        /// The store directory.
        path: PathBuf,
        /// The engine's error.
        source: fjall::Error,
    },
    /// The store was written by a format this build does not know.
    #[error(
        "the store in {path} has format version {found}; this build reads version {FORMAT_VERSION} \
         (move the directory away to start empty, or run the release that wrote it)"
    )]
    UnknownVersion {
        /// The store directory.
        path: PathBuf,
        /// The version found.
        found: u32,
    },
    /// A record could not be read.
    #[error(
        "the store in {path} is corrupt: {partition} record: {reason} (`tern serve --recover` \
         drops what cannot be read and logs it; or move the directory away to start empty)"
    )]
    Corrupt {
        /// The store directory.
        path: PathBuf,
        /// The partition holding the record.
        partition: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A piece of the store is missing or damaged (see `docs/design/store-format.md`).
    #[error(
        "the store in {path} is damaged: {problem} (`tern serve --recover` starts with what \
         reads back and logs what is lost; or move the directory away to start empty)"
    )]
    Damaged {
        /// The store directory.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// The directory cannot hold a store as it is.
    #[error("cannot use {path} as a data directory: {problem}")]
    Unusable {
        /// The directory.
        path: PathBuf,
        /// Why.
        problem: String,
    },
    /// Reading or writing the store's own files (beside the engine's) failed.
    #[error("store I/O error in {path}: {source}")]
    Io {
        /// The store directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// What one batch of operations does to one delivery record.
enum Pending<'a> {
    /// Queued in this batch (and perhaps sent): one record with its stage.
    New(&'a Delivery, DeliveryStage),
    /// Stored earlier; its stage changed.
    Stage(DeliveryStage),
    /// Stored earlier; complete.
    Done,
}

/// The durable store on fjall.
pub struct DiskStore {
    path: PathBuf,
    durability: Durability,
    clock: WallClock,
    keyspace: Keyspace,
    meta: PartitionHandle,
    retained: PartitionHandle,
    sessions: PartitionHandle,
    deliveries: PartitionHandle,
    stages: PartitionHandle,
    incoming: PartitionHandle,
    guard: PartitionHandle,
    history: PartitionHandle,
    fleet: PartitionHandle,
    firmware: PartitionHandle,
    notify: PartitionHandle,
    /// Keys of the deliveries with a record in `stages` (in flight, few), so that completing
    /// one without such a record writes one deletion, not two.
    staged: HashSet<Vec<u8>>,
    /// The number of the last batch committed.
    committed: u64,
    /// The commit marker file, which records it.
    marker: MarkerFile,
    /// When the marker was last written.
    marker_written: Instant,
    /// Damage found while opening, and what recovering did about it.
    salvage: Salvage,
}

impl std::fmt::Debug for DiskStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskStore")
            .field("path", &self.path)
            .field("durability", &self.durability)
            .finish_non_exhaustive()
    }
}

impl Drop for DiskStore {
    /// Brings the commit marker up to date (with [`Durability::Os`] it may lag).
    fn drop(&mut self) {
        if self.keyspace.persist(PersistMode::SyncAll).is_ok() {
            let _ = self.marker.record(self.committed);
        }
    }
}

impl DiskStore {
    /// Opens (or creates) the store in `path`. `clock` maps the broker's `Time` to wall-clock
    /// time, so deadlines survive a restart. A directory that does not exist or is empty gets
    /// a new store; one that holds a damaged store, or anything else, is refused.
    pub fn open(path: &Path, durability: Durability, clock: WallClock) -> Result<Self, StoreError> {
        Self::open_with(path, durability, clock, false)
    }

    /// As [`DiskStore::open`], but a damaged store is opened with what reads back: each
    /// problem is repaired (a journal cut at its damage, a partition made anew, records that
    /// do not decode dropped at [`Store::load`], ...) and logged as a warning with what it
    /// cost. A store of another format version is still refused.
    pub fn recover(
        path: &Path,
        durability: Durability,
        clock: WallClock,
    ) -> Result<Self, StoreError> {
        Self::open_with(path, durability, clock, true)
    }

    fn open_with(
        path: &Path,
        durability: Durability,
        clock: WallClock,
        recover: bool,
    ) -> Result<Self, StoreError> {
        let engine = |source| StoreError::Engine {
            path: path.to_owned(),
            source,
        };
        let mut salvage = Salvage::new(path, recover);
        let newer = PARTITIONS_SINCE.map(|(name, _)| name);
        let found = layout::inspect(path, &PARTITIONS, &newer, &mut salvage)?;
        let keyspace = fjall::Config::new(path)
            .manual_journal_persist(true)
            .max_journaling_size(JOURNAL_MAX_BYTES)
            .max_write_buffer_size(WRITE_BUFFER_MAX_BYTES)
            .open()
            .map_err(engine)?;
        let open = |name: &str| {
            keyspace
                .open_partition(name, PartitionCreateOptions::default())
                .map_err(engine)
        };
        let [retained, sessions, deliveries, stages, incoming, guard, history, fleet, firmware, notify, meta] =
            PARTITIONS.map(open);
        let (retained, sessions, deliveries, stages, incoming, guard, history, fleet, notify) = (
            retained?,
            sessions?,
            deliveries?,
            stages?,
            incoming?,
            guard?,
            history?,
            fleet?,
            notify?,
        );
        let firmware = firmware?;
        let meta = meta?;
        let format = meta.get(FORMAT_KEY).map_err(engine)?;
        let committed = meta.get(COMMIT_KEY).map_err(engine)?;
        let is_empty = [
            &retained,
            &sessions,
            &deliveries,
            &stages,
            &incoming,
            &guard,
            &history,
            &fleet,
            &firmware,
            &notify,
        ]
        .into_iter()
        .try_fold(true, |empty, p| Ok(empty && p.is_empty()?))
        .map_err(engine)?;
        let format = meta::check_format(path, format, is_empty, &mut salvage)?;
        let version = match format {
            Format::Current => FORMAT_VERSION,
            Format::Older(version) => version,
            Format::Write => 0,
        };
        let made = PARTITIONS_SINCE
            .into_iter()
            .filter(|(_, since)| *since <= version);
        let made: Vec<&str> = made.map(|(name, _)| name).collect();
        layout::check_newer_partitions(&found, &made, &mut salvage)?;
        let committed = meta::read_counter(committed, &mut salvage)?;
        meta::check_committed(path, &found, committed, &mut salvage)?;
        if format == Format::Write {
            meta.insert(FORMAT_KEY, FORMAT_VERSION.to_be_bytes())
                .map_err(engine)?;
        }
        // The marker is made once the store is whole and synced: with it, the store is made.
        keyspace.persist(PersistMode::SyncAll).map_err(engine)?;
        let marker = MarkerFile::create(path, committed).map_err(|source| StoreError::Io {
            path: path.to_owned(),
            source,
        })?;
        let mut staged = HashSet::new();
        for item in stages.keys() {
            staged.insert(item.map_err(engine)?.to_vec());
        }
        let mut store = Self {
            path: path.to_owned(),
            durability,
            clock,
            keyspace,
            meta,
            retained,
            sessions,
            deliveries,
            stages,
            incoming,
            guard,
            history,
            fleet,
            firmware,
            notify,
            staged,
            committed,
            marker,
            marker_written: Instant::now(),
            salvage,
        };
        if let Format::Older(version) = format {
            store.upgrade(version)?;
        }
        Ok(store)
    }

    /// Converts a store of an older format `version`: its session records are rewritten in
    /// this format's layout. From version 1 they gain an owner, unknown (the first identity to
    /// resume such a session claims it); before version 4 they gain the next sequence number
    /// (0: the load raises it above the deliveries kept); before version 3 the `guard`
    /// partition was missing, before version 5 the `history` one, before 6 the `fleet` one
    /// and before 7 the `firmware` and `notify` ones: each is made empty at open. One batch,
    /// synced, then the version
    /// is raised; a crash half-way leaves the old version and the conversion runs again. When
    /// recovering, a record that does not decode is dropped (see [`Store::load`]).
    fn upgrade(&mut self, version: u32) -> Result<(), StoreError> {
        let mut batch = self.keyspace.batch();
        let mut converted = 0_u64;
        let layout = match version {
            FORMAT_VERSION_OLDEST => record::SessionLayout::WithoutOwner,
            2 | 3 => record::SessionLayout::WithOwner,
            _ => record::SessionLayout::Current,
        };
        for item in self.sessions.iter() {
            let (key, value) = item.map_err(|e| self.engine(e))?;
            let session = self
                .decode_session(&key, value, layout)
                .and_then(|session| {
                    record::encode_session(self.clock, &session).map_err(self.record("sessions"))
                });
            match session {
                Ok(value) => {
                    batch.insert(&self.sessions, key, value.to_vec());
                    converted += 1;
                }
                Err(e) => drop_record(&mut self.salvage, &mut batch, &self.sessions, key, e)?,
            }
        }
        batch.insert(&self.meta, FORMAT_KEY, FORMAT_VERSION.to_be_bytes());
        batch.commit().map_err(|e| self.engine(e))?;
        self.keyspace
            .persist(PersistMode::SyncAll)
            .map_err(|e| self.engine(e))?;
        let sessions = match version {
            FORMAT_VERSION_OLDEST => {
                format!(" ({converted} session(s), whose owner is unknown until first resumed)")
            }
            _ => format!(" ({converted} session(s))"),
        };
        info!(
            "converted the store in {} from format version {version} to {FORMAT_VERSION}{sessions}",
            self.path.display()
        );
        Ok(())
    }

    /// Where the store lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes the store takes on disk (journal and tables).
    pub fn disk_space(&self) -> u64 {
        self.keyspace.disk_space()
    }

    fn engine(&self, source: fjall::Error) -> StoreError {
        StoreError::Engine {
            path: self.path.clone(),
            source,
        }
    }

    fn corrupt(&self, partition: &'static str, reason: impl Into<String>) -> StoreError {
        StoreError::Corrupt {
            path: self.path.clone(),
            partition,
            reason: reason.into(),
        }
    }

    fn record(&self, partition: &'static str) -> impl Fn(RecordError) -> StoreError + '_ {
        move |e| self.corrupt(partition, e.to_string())
    }

    /// Decodes a `sessions` record: its key, the client id, and its value.
    fn decode_session(
        &self,
        key: &[u8],
        value: fjall::Slice,
        layout: record::SessionLayout,
    ) -> Result<SessionRecord, StoreError> {
        let client_id = MqttString::from_bytes(Bytes::copy_from_slice(key))
            .map_err(|e| self.corrupt("sessions", format!("client identifier: {e}")))?;
        record::decode_session(self.clock, client_id, Bytes::from(value), layout)
            .map_err(self.record("sessions"))
    }

    /// Splits a key of `partition` into its session's client id and `N` bytes after it (`what`).
    fn session_key<const N: usize>(
        &self,
        partition: &'static str,
        key: &[u8],
        what: &str,
    ) -> Result<(MqttString, [u8; N]), StoreError> {
        let (client_id, rest) = record::split_session_key(key).map_err(self.record(partition))?;
        let rest = <[u8; N]>::try_from(rest)
            .map_err(|_| self.corrupt(partition, format!("{what} is not {N} bytes")))?;
        Ok((client_id, rest))
    }

    /// Adds the delivery changes gathered from a batch of operations to `batch`.
    fn write_deliveries(
        &mut self,
        batch: &mut Batch,
        deliveries: &mut HashMap<Vec<u8>, Pending<'_>>,
    ) -> Result<(), StoreError> {
        for (key, pending) in deliveries.drain() {
            match pending {
                Pending::New(delivery, stage) => {
                    let value = record::encode_delivery(self.clock, delivery, stage)
                        .map_err(self.record("deliveries"))?;
                    batch.insert(&self.deliveries, key, value);
                }
                Pending::Stage(stage) => {
                    batch.insert(&self.stages, key.clone(), record::encode_stage(stage));
                    self.staged.insert(key);
                }
                Pending::Done => {
                    batch.remove(&self.deliveries, key.clone());
                    if self.staged.remove(&key) {
                        batch.remove(&self.stages, key);
                    }
                }
            }
        }
        Ok(())
    }

    /// Removes everything stored under `client_id`'s prefix in one partition.
    fn remove_prefix(
        &self,
        batch: &mut Batch,
        partition: &PartitionHandle,
        prefix: &[u8],
    ) -> Result<(), StoreError> {
        for item in partition.prefix(prefix) {
            let key = item.map_err(|e| self.engine(e))?.0;
            batch.remove(partition, key);
        }
        Ok(())
    }
}

impl Store for DiskStore {
    type Error = StoreError;

    fn apply(&mut self, ops: &[StoreOp]) -> Result<(), StoreError> {
        if ops.is_empty() {
            return Ok(());
        }
        let mut batch = self.keyspace.batch();
        let mut deliveries = HashMap::new();
        for op in ops {
            match op {
                StoreOp::RetainedSet(message) => {
                    let value = record::encode_retained(self.clock, message)
                        .map_err(self.record("retained"))?;
                    batch.insert(&self.retained, message.topic.as_str().as_bytes(), value);
                }
                StoreOp::RetainedClear(topic) => {
                    batch.remove(&self.retained, topic.as_str().as_bytes());
                }
                StoreOp::SessionSet(session) => {
                    let value = record::encode_session(self.clock, session)
                        .map_err(self.record("sessions"))?;
                    batch.insert(&self.sessions, session.client_id.as_bytes(), value);
                }
                StoreOp::SessionRemove(client_id) => {
                    // The scan sees only committed records: commit what came before first.
                    self.write_deliveries(&mut batch, &mut deliveries)?;
                    std::mem::replace(&mut batch, self.keyspace.batch())
                        .commit()
                        .map_err(|e| self.engine(e))?;
                    let prefix = record::session_prefix(client_id);
                    self.staged.retain(|key| !key.starts_with(&prefix));
                    batch.remove(&self.sessions, client_id.as_bytes());
                    self.remove_prefix(&mut batch, &self.deliveries, &prefix)?;
                    self.remove_prefix(&mut batch, &self.stages, &prefix)?;
                    self.remove_prefix(&mut batch, &self.incoming, &prefix)?;
                }
                StoreOp::DeliveryQueued {
                    client_id,
                    delivery,
                } => {
                    let key = delivery_key(client_id, delivery.seq);
                    deliveries.insert(key, Pending::New(delivery, DeliveryStage::Queued));
                }
                StoreOp::DeliveryStage {
                    client_id,
                    seq,
                    stage,
                } => match deliveries.entry(delivery_key(client_id, *seq)) {
                    // Sent in the batch that queued it: one record holds both.
                    Entry::Occupied(mut e) => match e.get_mut() {
                        Pending::New(_, at) | Pending::Stage(at) => *at = *stage,
                        Pending::Done => {}
                    },
                    Entry::Vacant(e) => {
                        e.insert(Pending::Stage(*stage));
                    }
                },
                StoreOp::DeliveryDone { client_id, seq } => {
                    match deliveries.entry(delivery_key(client_id, *seq)) {
                        // Queued and done within one batch: never written at all.
                        Entry::Occupied(e) if matches!(e.get(), Pending::New(..)) => {
                            e.remove();
                        }
                        Entry::Occupied(mut e) => *e.get_mut() = Pending::Done,
                        Entry::Vacant(e) => {
                            e.insert(Pending::Done);
                        }
                    }
                }
                StoreOp::IncomingQos2 {
                    client_id,
                    packet_id,
                    pending,
                } => {
                    let key = incoming_key(client_id, *packet_id);
                    if *pending {
                        batch.insert(&self.incoming, key, []);
                    } else {
                        batch.remove(&self.incoming, key);
                    }
                }
                StoreOp::GuardSet(record) => {
                    let key = guard::key(&record.key()).map_err(self.record("guard"))?;
                    batch.insert(&self.guard, key, guard::encode(record));
                }
                StoreOp::GuardForget(key) => {
                    let key = guard::key(key).map_err(self.record("guard"))?;
                    batch.remove(&self.guard, key);
                }
                StoreOp::HistoryKeep(kept) => {
                    let key = history::key(&kept.message.topic, kept.message.id);
                    let value = history::encode(self.clock, kept);
                    let record = |e| self.corrupt("history", format!("{e}"));
                    batch.insert(&self.history, key.map_err(record)?, value.map_err(record)?);
                }
                StoreOp::KvHorizon(id) => {
                    batch.insert(&self.meta, KV_HORIZON_KEY, id.to_be_bytes());
                }
                op @ (StoreOp::FleetDeviceSet(_)
                | StoreOp::FleetDeviceRemove(_)
                | StoreOp::FleetOwnerSet(_)
                | StoreOp::FleetRegistrationSet(..)) => {
                    fleet::write(&mut batch, &self.fleet, op).map_err(self.record("fleet"))?
                }
                op @ (StoreOp::FirmwareSet(_) | StoreOp::FirmwareRemove(_)) => {
                    firmware::write(&mut batch, &self.firmware, op)
                        .map_err(self.record("firmware"))?
                }
                op @ (StoreOp::FleetNotifySet(_) | StoreOp::FleetNotifyRemove { .. }) => {
                    let record = self.record("notify");
                    fleet_notify::write(&mut batch, &self.notify, self.clock, op).map_err(record)?
                }
                StoreOp::HistoryForget { topic, id } => {
                    let key = history::key(topic, *id).map_err(self.record("history"))?;
                    batch.remove(&self.history, key);
                }
            }
        }
        self.write_deliveries(&mut batch, &mut deliveries)?;
        let number = self.committed + 1;
        batch.insert(&self.meta, COMMIT_KEY, number.to_be_bytes());
        batch.commit().map_err(|e| self.engine(e))?;
        let mode = match self.durability {
            Durability::Fsync => PersistMode::SyncData,
            Durability::Os => PersistMode::Buffer,
        };
        self.keyspace.persist(mode).map_err(|e| self.engine(e))?;
        self.committed = number;
        // Only now: the marker never runs ahead of the journal.
        if self.durability == Durability::Fsync || self.marker_written.elapsed() >= OS_MARKER_EVERY
        {
            self.marker
                .record(number)
                .map_err(|source| StoreError::Io {
                    path: self.path.clone(),
                    source,
                })?;
            self.marker_written = Instant::now();
        }
        Ok(())
    }

    fn load(&mut self) -> Result<Snapshot, StoreError> {
        let started = Instant::now();
        let mut progress = Progress::default();
        let mut snapshot = Snapshot::default();
        // Records of a session removed in a batch that also wrote them are orphans, and when
        // recovering, records that do not decode are damage: both are deleted.
        let mut dropped = self.keyspace.batch();
        for item in self.retained.iter() {
            let (key, value) = item.map_err(|e| self.engine(e))?;
            match record::decode_retained(self.clock, Bytes::from(value))
                .map_err(self.record("retained"))
            {
                Ok(message) => snapshot.retained.push(message.into()),
                Err(e) => drop_record(&mut self.salvage, &mut dropped, &self.retained, key, e)?,
            }
            progress.tick();
        }
        let mut sessions: HashMap<MqttString, StoredSession> = HashMap::new();
        for item in self.sessions.iter() {
            let (key, value) = item.map_err(|e| self.engine(e))?;
            let layout = record::SessionLayout::Current;
            let (client_id, record) = match self.decode_session(&key, value, layout) {
                Ok(record) => (record.client_id.clone(), record),
                Err(e) => {
                    drop_record(&mut self.salvage, &mut dropped, &self.sessions, key, e)?;
                    continue;
                }
            };
            let stored = StoredSession {
                record,
                deliveries: Vec::new(),
                incoming_qos2: Vec::new(),
            };
            sessions.insert(client_id, stored);
            progress.tick();
        }
        // Stages exist only for in-flight deliveries: few, so they are read into memory.
        let mut stages = HashMap::new();
        for item in self.stages.iter() {
            let (key, value) = item.map_err(|e| self.engine(e))?;
            match record::decode_stage(&value).map_err(self.record("stages")) {
                Ok(stage) => {
                    stages.insert(key.to_vec(), stage);
                }
                Err(e) => drop_record(&mut self.salvage, &mut dropped, &self.stages, key, e)?,
            }
        }
        for item in self.deliveries.iter() {
            let (key, value) = item.map_err(|e| self.engine(e))?;
            let parsed = self.session_key("deliveries", &key, "sequence number");
            let (client_id, seq) = match parsed {
                Ok((client_id, seq)) => (client_id, u64::from_be_bytes(seq)),
                Err(e) => {
                    drop_record(&mut self.salvage, &mut dropped, &self.deliveries, key, e)?;
                    continue;
                }
            };
            let Some(session) = sessions.get_mut(&client_id) else {
                dropped.remove(&self.deliveries, key.clone());
                dropped.remove(&self.stages, key);
                self.salvage.orphans(1);
                continue;
            };
            let (delivery, inline) =
                match record::decode_delivery(self.clock, seq, Bytes::from(value))
                    .map_err(self.record("deliveries"))
                {
                    Ok(decoded) => decoded,
                    Err(e) => {
                        dropped.remove(&self.stages, key.clone());
                        drop_record(&mut self.salvage, &mut dropped, &self.deliveries, key, e)?;
                        continue;
                    }
                };
            // A later stage, written on its own, takes precedence over the one inline.
            let stage = stages.get(&key[..]).copied().unwrap_or(inline);
            session.deliveries.push((delivery, stage));
            progress.tick();
        }
        for item in self.incoming.iter() {
            let (key, _) = item.map_err(|e| self.engine(e))?;
            match self.session_key("incoming", &key, "packet identifier") {
                Ok((client_id, id)) => match sessions.get_mut(&client_id) {
                    Some(session) => session.incoming_qos2.push(u16::from_be_bytes(id)),
                    None => {
                        dropped.remove(&self.incoming, key);
                        self.salvage.orphans(1);
                    }
                },
                Err(e) => drop_record(&mut self.salvage, &mut dropped, &self.incoming, key, e)?,
            }
        }
        for item in self.guard.iter() {
            let (key, value) = item.map_err(|e| self.engine(e))?;
            match guard::decode(&key, &value).map_err(self.record("guard")) {
                Ok(record) => snapshot.guard.push(record),
                Err(e) => drop_record(&mut self.salvage, &mut dropped, &self.guard, key, e)?,
            }
            progress.tick();
        }
        if let Some(value) = self.meta.get(KV_HORIZON_KEY).map_err(|e| self.engine(e))? {
            let horizon = <[u8; 8]>::try_from(&value[..])
                .map_err(|_| self.corrupt("meta", "kv_horizon is not 8 bytes"))?;
            snapshot.kv_horizon = u64::from_be_bytes(horizon);
        }
        for item in self.history.iter() {
            let (key, value) = item.map_err(|e| self.engine(e))?;
            match history::decode(self.clock, &key, &value).map_err(self.record("history")) {
                Ok(kept) => snapshot.history.push(kept),
                Err(e) => drop_record(&mut self.salvage, &mut dropped, &self.history, key, e)?,
            }
            progress.tick();
        }
        self.load_fleet(&mut snapshot, &mut dropped, &mut progress)?;
        self.load_firmware(&mut snapshot, &mut dropped, &mut progress)?;
        self.load_notify(&mut snapshot, &mut dropped, &mut progress)?;
        if !dropped.is_empty() {
            dropped.commit().map_err(|e| self.engine(e))?;
        }
        snapshot.sessions = sessions.into_values().collect();
        if progress.count >= PROGRESS_EVERY {
            info!(
                "store loaded: {} records in {:.1} s",
                progress.count,
                started.elapsed().as_secs_f64()
            );
        }
        self.salvage.report();
        Ok(snapshot)
    }
}
