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
