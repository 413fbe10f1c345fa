//! What the store's format tests share: one wall-clock epoch and a store opened at it.
#![allow(dead_code, clippy::expect_used)] // Each test file uses what it needs; a panic is a failure.

use tern_store::{DiskStore, Durability, WallClock};

/// The process's epoch in these tests, in wall-clock milliseconds.
pub(crate) const EPOCH_UNIX_MS: u64 = 1_700_000_000_000;

pub(crate) fn clock() -> WallClock {
    WallClock {
        epoch_unix_ms: EPOCH_UNIX_MS,
    }
}

/// The store in `dir`, as a process started at `epoch_unix_ms` opens it.
pub(crate) fn open_at(dir: &std::path::Path, epoch_unix_ms: u64) -> DiskStore {
    DiskStore::open(dir, Durability::Fsync, WallClock { epoch_unix_ms }).expect("store opens")
}

pub(crate) fn open(dir: &std::path::Path) -> DiskStore {
    open_at(dir, EPOCH_UNIX_MS)
}

/// Makes the store in `dir` look as format `version` left it: without `partition` (which that
/// version did not have), and `version` in `meta`.
pub(crate) fn as_written_by(dir: &std::path::Path, version: u32, partition: &str) {
    let keyspace = fjall::Config::new(dir).open().expect("fjall opens");
    let options = fjall::PartitionCreateOptions::default;
    let newer = keyspace
        .open_partition(partition, options())
        .expect("partition opens");
    keyspace.delete_partition(newer).expect("partition deleted");
    let meta = keyspace
        .open_partition("meta", options())
        .expect("meta opens");
    meta.insert("format", version.to_be_bytes())
        .expect("format written");
    keyspace
        .persist(fjall::PersistMode::SyncAll)
        .expect("persisted");
    assert!(!dir.join("partitions").join(partition).exists());
}

/// The format version the store in `dir` records.
pub(crate) fn format_of(dir: &std::path::Path) -> u32 {
    let keyspace = fjall::Config::new(dir).open().expect("fjall opens");
    let meta = keyspace
        .open_partition("meta", fjall::PartitionCreateOptions::default())
        .expect("meta opens");
    let format = meta
        .get("format")
        .expect("meta reads")
        .expect("a format version");
    u32::from_be_bytes(format[..].try_into().expect("4 bytes"))
}
