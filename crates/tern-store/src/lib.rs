//! Tern's durable store: the core's [`Store`] trait on the fjall embedded engine.
//!
//! Each batch of [`StoreOp`]s becomes one fjall write batch; with [`Durability::Fsync`] the
//! journal is then synced, so one sync covers every operation of the batch (group commit is
//! the caller's batching). Records are versioned by a format key; a store of another version,
//! or one whose records do not decode, is refused with an error, never reset.
//!
//! # Layout
//! - this file: opening, applying batches, loading a snapshot.
//! - [`record`]: the byte layout of each record.

pub mod record;

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use fjall::{Batch, Keyspace, PartitionCreateOptions, PartitionHandle, PersistMode};
use tern_codec::MqttString;
use tern_core::session::Delivery;
use tern_core::store::{DeliveryStage, StoredSession};
use tern_core::{Snapshot, Store, StoreOp};
use tracing::info;

use record::RecordError;
pub use record::WallClock;

/// The record format this build reads and writes.
pub const FORMAT_VERSION: u32 = 2;
/// The older format this build converts at open: version 1 session records name no owner.
const FORMAT_VERSION_1: u32 = 1;
/// Key of the format version in the `meta` partition.
const FORMAT_KEY: &[u8] = b"format";
/// A progress line is logged every this many records while loading.
const PROGRESS_EVERY: u64 = 250_000;
/// Journal size past which fjall flushes memtables and drops old journals: bounds the disk
/// used by the journal under churn.
const JOURNAL_MAX_BYTES: u64 = 64 * 1024 * 1024;
/// Memory for memtables across partitions before they are flushed to disk.
const WRITE_BUFFER_MAX_BYTES: u64 = 32 * 1024 * 1024;

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
    #[error("the store in {path} is corrupt: {partition} record: {reason}")]
    Corrupt {
        /// The store directory.
        path: PathBuf,
        /// The partition holding the record.
        partition: &'static str,
        /// What is wrong.
        reason: String,
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
    retained: PartitionHandle,
    sessions: PartitionHandle,
    deliveries: PartitionHandle,
    stages: PartitionHandle,
    incoming: PartitionHandle,
    /// Keys of the deliveries with a record in `stages` (in flight, few), so that completing
    /// one without such a record writes one deletion, not two.
    staged: HashSet<Vec<u8>>,
}

impl std::fmt::Debug for DiskStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskStore")
            .field("path", &self.path)
            .field("durability", &self.durability)
            .finish_non_exhaustive()
    }
}

impl DiskStore {
    /// Opens (or creates) the store in `path`. `clock` maps the broker's `Time` to wall-clock
    /// time, so deadlines survive a restart.
    pub fn open(path: &Path, durability: Durability, clock: WallClock) -> Result<Self, StoreError> {
        let engine = |source| StoreError::Engine {
            path: path.to_owned(),
            source,
        };
        let fresh = !path.exists()
            || std::fs::read_dir(path)
                .map(|mut d| d.next().is_none())
                .unwrap_or(false);
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
        let meta = open("meta")?;
        let mut store = Self {
            path: path.to_owned(),
            durability,
            clock,
            retained: open("retained")?,
            sessions: open("sessions")?,
            deliveries: open("deliveries")?,
            stages: open("stages")?,
            incoming: open("incoming")?,
            keyspace,
            staged: HashSet::new(),
        };
        match meta.get(FORMAT_KEY).map_err(engine)? {
            Some(value) => {
                let found = <[u8; 4]>::try_from(&value[..])
                    .map(u32::from_be_bytes)
                    .map_err(|_| store.corrupt("meta", "format version is not 4 bytes"))?;
                if found == FORMAT_VERSION_1 {
                    store.upgrade_from_version_1(&meta)?;
                } else if found != FORMAT_VERSION {
                    return Err(StoreError::UnknownVersion {
                        path: path.to_owned(),
                        found,
                    });
                }
            }
            None if fresh || store.is_empty()? => {
                meta.insert(FORMAT_KEY, FORMAT_VERSION.to_be_bytes())
                    .map_err(engine)?;
                store
                    .keyspace
                    .persist(PersistMode::SyncAll)
                    .map_err(engine)?;
            }
            None => return Err(store.corrupt("meta", "records without a format version")),
        }
        for item in store.stages.keys() {
            let key = item.map_err(&engine)?;
            store.staged.insert(key.to_vec());
        }
        Ok(store)
    }

    /// Converts a format version 1 store: its session records gain an owner field, unknown
    /// (the first identity to resume such a session claims it). One batch, synced, then the
    /// version is raised; a crash half-way leaves version 1 and the conversion runs again.
    fn upgrade_from_version_1(&self, meta: &PartitionHandle) -> Result<(), StoreError> {
        let mut batch = self.keyspace.batch();
        let mut converted = 0_u64;
        for item in self.sessions.iter() {
            let (key, value) = item.map_err(|e| self.engine(e))?;
            let client_id = MqttString::from_bytes(Bytes::copy_from_slice(&key))
                .map_err(|e| self.corrupt("sessions", format!("client identifier: {e}")))?;
            let layout = record::SessionLayout::WithoutOwner;
            let session = record::decode_session(self.clock, client_id, Bytes::from(value), layout)
                .map_err(self.record("sessions"))?;
            let value =
                record::encode_session(self.clock, &session).map_err(self.record("sessions"))?;
            batch.insert(&self.sessions, key, value.to_vec());
            converted += 1;
        }
        batch.insert(meta, FORMAT_KEY, FORMAT_VERSION.to_be_bytes());
        batch.commit().map_err(|e| self.engine(e))?;
        self.keyspace
            .persist(PersistMode::SyncAll)
            .map_err(|e| self.engine(e))?;
        info!(
            "converted the store in {} from format version 1 to {FORMAT_VERSION} ({converted} \
             session(s), whose owner is unknown until first resumed)",
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

    fn is_empty(&self) -> Result<bool, StoreError> {
        for partition in [
            &self.retained,
            &self.sessions,
            &self.deliveries,
            &self.stages,
            &self.incoming,
        ] {
            if !partition.is_empty().map_err(|e| self.engine(e))? {
                return Ok(false);
            }
        }
        Ok(true)
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
        move |e| self.corrupt(partition, e.0)
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

fn delivery_key(client_id: &MqttString, seq: u64) -> Vec<u8> {
    let mut key = record::session_prefix(client_id);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

fn incoming_key(client_id: &MqttString, packet_id: u16) -> Vec<u8> {
    let mut key = record::session_prefix(client_id);
    key.extend_from_slice(&packet_id.to_be_bytes());
    key
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
            }
        }
        self.write_deliveries(&mut batch, &mut deliveries)?;
        batch.commit().map_err(|e| self.engine(e))?;
        let mode = match self.durability {
            Durability::Fsync => PersistMode::SyncData,
            Durability::Os => PersistMode::Buffer,
        };
        self.keyspace.persist(mode).map_err(|e| self.engine(e))
    }

    fn load(&mut self) -> Result<Snapshot, StoreError> {
        let started = std::time::Instant::now();
        let mut progress = Progress::default();
        let mut snapshot = Snapshot::default();
        for item in self.retained.iter() {
            let (_, value) = item.map_err(|e| self.engine(e))?;
            let message = record::decode_retained(self.clock, Bytes::from(value))
                .map_err(self.record("retained"))?;
            snapshot.retained.push(message.into());
            progress.tick();
        }
        let mut sessions: HashMap<MqttString, StoredSession> = HashMap::new();
        for item in self.sessions.iter() {
            let (key, value) = item.map_err(|e| self.engine(e))?;
            let client_id = MqttString::from_bytes(Bytes::from(key))
                .map_err(|e| self.corrupt("sessions", format!("client identifier: {e}")))?;
            let layout = record::SessionLayout::WithOwner;
            let record =
                record::decode_session(self.clock, client_id.clone(), Bytes::from(value), layout)
                    .map_err(self.record("sessions"))?;
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
            let stage = record::decode_stage(&value).map_err(self.record("stages"))?;
            stages.insert(key.to_vec(), stage);
        }
        // Records of a session removed in a batch that also wrote them are orphans: dropped.
        let mut orphans = self.keyspace.batch();
        for item in self.deliveries.iter() {
            let (key, value) = item.map_err(|e| self.engine(e))?;
            let (client_id, rest) =
                record::split_session_key(&key).map_err(self.record("deliveries"))?;
            let seq = <[u8; 8]>::try_from(rest)
                .map(u64::from_be_bytes)
                .map_err(|_| self.corrupt("deliveries", "sequence number is not 8 bytes"))?;
            let Some(session) = sessions.get_mut(&client_id) else {
                orphans.remove(&self.deliveries, key.clone());
                orphans.remove(&self.stages, key);
                continue;
            };
            let (delivery, inline) = record::decode_delivery(self.clock, seq, Bytes::from(value))
                .map_err(self.record("deliveries"))?;
            // A later stage, written on its own, takes precedence over the one inline.
            let stage = stages.get(&key[..]).copied().unwrap_or(inline);
            session.deliveries.push((delivery, stage));
            progress.tick();
        }
        for item in self.incoming.iter() {
            let (key, _) = item.map_err(|e| self.engine(e))?;
            let (client_id, rest) =
                record::split_session_key(&key).map_err(self.record("incoming"))?;
            let packet_id = <[u8; 2]>::try_from(rest)
                .map(u16::from_be_bytes)
                .map_err(|_| self.corrupt("incoming", "packet identifier is not 2 bytes"))?;
            match sessions.get_mut(&client_id) {
                Some(session) => session.incoming_qos2.push(packet_id),
                None => orphans.remove(&self.incoming, key),
            }
        }
        if !orphans.is_empty() {
            orphans.commit().map_err(|e| self.engine(e))?;
        }
        snapshot.sessions = sessions.into_values().collect();
        if progress.count >= PROGRESS_EVERY {
            info!(
                "store loaded: {} records in {:.1} s",
                progress.count,
                started.elapsed().as_secs_f64()
            );
        }
        Ok(snapshot)
    }
}

/// Counts records while loading and logs a line now and then, so a large recovery is visibly
/// moving.
#[derive(Debug, Default)]
struct Progress {
    count: u64,
}

impl Progress {
    fn tick(&mut self) {
        self.count += 1;
        if self.count % PROGRESS_EVERY == 0 {
            info!("recovering the store: {} records loaded", self.count);
        }
    }
}
