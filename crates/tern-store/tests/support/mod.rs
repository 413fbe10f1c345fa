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

/// Makes the store in `dir` what an older `version` left: without `partition`, and that
/// version in `meta`.
pub(crate) fn make_older(dir: &std::path::Path, version: u32, partition: &str) {
    let keyspace = fjall::Config::new(dir).open().expect("keyspace opens");
    let options = fjall::PartitionCreateOptions::default;
    let newer = keyspace
        .open_partition(partition, options())
        .expect("opens");
    keyspace.delete_partition(newer).expect("deleted");
    let meta = keyspace.open_partition("meta", options()).expect("opens");
    meta.insert("format", version.to_be_bytes())
        .expect("written");
    keyspace
        .persist(fjall::PersistMode::SyncAll)
        .expect("synced");
}

/// Writes a raw record into `partition` of the store in `dir` (to damage it).
pub(crate) fn insert_raw(dir: &std::path::Path, partition: &str, key: &[u8], value: &[u8]) {
    let keyspace = fjall::Config::new(dir).open().expect("keyspace opens");
    let options = fjall::PartitionCreateOptions::default();
    let handle = keyspace.open_partition(partition, options).expect("opens");
    handle.insert(key, value).expect("written");
    keyspace
        .persist(fjall::PersistMode::SyncAll)
        .expect("synced");
}

/// The format version in the `meta` of the store in `dir`.
pub(crate) fn format_version(dir: &std::path::Path) -> u32 {
    let keyspace = fjall::Config::new(dir).open().expect("keyspace opens");
    let options = fjall::PartitionCreateOptions::default();
    let meta = keyspace.open_partition("meta", options).expect("opens");
    let format = meta.get("format").expect("read").expect("a format version");
    u32::from_be_bytes(format[..].try_into().expect("4 bytes"))
}

/// Loads the store in `dir`, which must be refused as corrupt in `partition`, then recovers it
/// (dropping what does not decode): what loads then.
pub(crate) fn refused_then_recovered(
    dir: &std::path::Path,
    partition: &'static str,
) -> tern_core::Snapshot {
    use tern_core::Store;
    let error = open(dir).load().expect_err("a record is corrupt");
    assert!(
        matches!(&error, tern_store::StoreError::Corrupt { partition: p, .. } if *p == partition),
        "{error}"
    );
    let mut store = DiskStore::recover(dir, Durability::Fsync, clock()).expect("recovers");
    store.load().expect("loads what decodes")
}

/// A store of this format with `partition` missing is refused as damaged.
pub(crate) fn missing_partition_is_damage(dir: &std::path::Path, partition: &str) {
    std::fs::remove_dir_all(dir.join("partitions").join(partition)).expect("removed");
    let error = DiskStore::open(dir, Durability::Fsync, clock())
        .expect_err("a partition of this format missing is damage");
    let missing = format!("partition `{partition}` is missing");
    assert!(
        matches!(&error, tern_store::StoreError::Damaged { problem, .. } if problem.contains(&missing)),
        "{error}"
    );
}
