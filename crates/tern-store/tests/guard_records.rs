//! The request guard's records (format version 3): what is set is loaded after reopening and
//! what is forgotten is not; a version 2 store, which has no `guard` partition, is converted at
//! open and keeps its sessions; in a version 3 store a missing `guard` partition is damage.
#![allow(clippy::expect_used, clippy::unwrap_used)] // Test code: a panic is a failure.

use bytes::Bytes;
use tern_codec::MqttString;
use tern_core::store::SessionRecord;
use tern_core::{GuardKey, GuardRecord, SessionOwner, Store, StoreOp};
use tern_store::{DiskStore, Durability, StoreError, WallClock, FORMAT_VERSION};

fn clock() -> WallClock {
    WallClock {
        epoch_unix_ms: 1_700_000_000_000,
    }
}

fn open(dir: &std::path::Path) -> DiskStore {
    DiskStore::open(dir, Durability::Fsync, clock()).expect("store opens")
}

fn counter(principal: &str, last: u64) -> GuardRecord {
    GuardRecord::Counter {
        principal: principal.into(),
        last,
    }
}

fn answer(nonce: &str) -> GuardRecord {
    GuardRecord::Answer {
        principal: "d:dev".into(),
        nonce: nonce.into(),
        signature: [3; 32],
        status: 200,
        body: Bytes::from_static(b"{\"qos\":2,\"matched\":1}"),
        until: 1_767_312_000,
    }
}

fn session(client: &str) -> SessionRecord {
    SessionRecord {
        client_id: MqttString::new(client).unwrap(),
        owner: SessionOwner::unverified(),
        expiry_secs: 3600,
        subscriptions: Vec::new(),
        will: None,
        expires_at: None,
        will_at: None,
    }
}

fn sorted(mut records: Vec<GuardRecord>) -> Vec<GuardRecord> {
    records.sort_by_key(|record| format!("{record:?}"));
    records
}

fn format_version(dir: &std::path::Path) -> u32 {
    let keyspace = fjall::Config::new(dir).open().unwrap();
    let meta = keyspace
        .open_partition("meta", fjall::PartitionCreateOptions::default())
        .unwrap();
    let format = meta.get("format").unwrap().expect("a format version");
    u32::from_be_bytes(<[u8; 4]>::try_from(&format[..]).unwrap())
}

#[test]
fn guard_records_set_are_loaded_and_forgotten_ones_are_not() {
    let dir = tempfile::tempdir().unwrap();
    let nonce = GuardRecord::Nonce {
        principal: "d:dev".into(),
        nonce: "r:00112233".into(),
        until: 1_767_225_900,
    };
    {
        let mut store = open(dir.path());
        store
            .apply(&[
                StoreOp::GuardSet(counter("d:dev", 4)),
                StoreOp::GuardSet(nonce.clone()),
                StoreOp::GuardSet(answer("c:4")),
                StoreOp::GuardSet(answer("c:5")),
            ])
            .unwrap();
        // A later counter replaces the earlier; a forgotten answer goes.
        store
            .apply(&[
                StoreOp::GuardSet(counter("d:dev", 5)),
                StoreOp::GuardForget(GuardKey::Answer("d:dev".into(), "c:4".into())),
            ])
            .unwrap();
    }
    let snapshot = open(dir.path()).load().unwrap();
    assert_eq!(
        sorted(snapshot.guard),
        sorted(vec![counter("d:dev", 5), nonce, answer("c:5")])
    );
}

#[test]
fn a_version_2_store_is_converted_and_gains_the_guard_partition() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut store = open(dir.path());
        store.apply(&[StoreOp::SessionSet(session("old"))]).unwrap();
    }
    // Make it what version 2 left: no `guard` partition, version 2.
    {
        let keyspace = fjall::Config::new(dir.path()).open().unwrap();
        let options = fjall::PartitionCreateOptions::default;
        let guard = keyspace.open_partition("guard", options()).unwrap();
        keyspace.delete_partition(guard).unwrap();
        let meta = keyspace.open_partition("meta", options()).unwrap();
        meta.insert("format", 2_u32.to_be_bytes()).unwrap();
        keyspace.persist(fjall::PersistMode::SyncAll).unwrap();
    }
    assert!(!dir.path().join("partitions/guard").exists());
    for round in 0..2 {
        // Converted at the first open; the second reads the converted store.
        let mut store = open(dir.path());
        let snapshot = store.load().unwrap();
        assert_eq!(snapshot.sessions.len(), 1);
        assert_eq!(snapshot.sessions[0].record.client_id.as_str(), "old");
        assert_eq!(snapshot.guard.len(), round);
        store
            .apply(&[StoreOp::GuardSet(counter("d:dev", 1))])
            .unwrap();
    }
    assert_eq!(format_version(dir.path()), FORMAT_VERSION);
}

#[test]
fn a_version_3_store_without_its_guard_partition_is_damaged() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut store = open(dir.path());
        store
            .apply(&[StoreOp::GuardSet(counter("d:dev", 1))])
            .unwrap();
    }
    std::fs::remove_dir_all(dir.path().join("partitions/guard")).unwrap();
    let error = DiskStore::open(dir.path(), Durability::Fsync, clock())
        .expect_err("a partition of this format missing is damage");
    assert!(
        matches!(&error, StoreError::Damaged { problem, .. }
            if problem.contains("partition `guard` is missing")),
        "{error}"
    );
    // Recovering opens it with what reads back (here the journal still holds the record).
    let mut store = DiskStore::recover(dir.path(), Durability::Fsync, clock()).unwrap();
    store.load().unwrap();
}
