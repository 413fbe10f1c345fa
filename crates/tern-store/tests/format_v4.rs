//! What format versions 3, 4 and 5 added: the request guard's records (what is set is loaded
//! after reopening, what is forgotten is not), dead letters and the next sequence number of a
//! session, kept messages (`history`, loaded at the same wall-clock time whatever the
//! process's epoch); version 2, 3 and 4 stores are converted at open and keep their sessions
//! (a version 2 store has no `guard` partition, a version 4 one no `history`); in this format
//! a missing `guard` or `history` partition is damage.
#![allow(clippy::expect_used, clippy::unwrap_used)] // Test code: a panic is a failure.

use std::sync::Arc;

use bytes::Bytes;
use tern_codec::{MqttString, PacketId, QoS, SubscriptionIds};
use tern_core::history::Kept;
use tern_core::session::Delivery;
use tern_core::store::{DeliveryStage, SessionRecord};
use tern_core::{GuardKey, GuardRecord, Message, SessionOwner, Store, StoreOp};
use tern_store::{DiskStore, Durability, StoreError, WallClock, FORMAT_VERSION};

mod support;
use support::{clock, open, open_at, EPOCH_UNIX_MS as EPOCH};

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
        next_seq: 0,
    }
}

fn delivery(seq: u64, payload: &'static str) -> Delivery {
    let message = Arc::new(Message {
        id: seq + 1,
        topic: "m/a".parse().unwrap(),
        payload: Bytes::from_static(payload.as_bytes()),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: Default::default(),
        expires_at: None,
        origin: None,
    });
    Delivery {
        seq,
        charge: message.charge(),
        message,
        qos: QoS::AtLeastOnce,
        retain: false,
        subscription_ids: SubscriptionIds::new(),
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
fn dead_letters_and_the_next_sequence_number_are_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let client_id = MqttString::new("dev").unwrap();
    let queued = |seq| StoreOp::DeliveryQueued {
        client_id: client_id.clone(),
        delivery: delivery(seq, "x"),
    };
    let dead = |seq| StoreOp::DeliveryStage {
        client_id: client_id.clone(),
        seq,
        stage: DeliveryStage::Dead,
    };
    {
        let mut store = open(dir.path());
        let record = SessionRecord {
            next_seq: 9,
            ..session("dev")
        };
        // 5 becomes a dead letter in the batch that queued it; 6 in a later one, after being
        // sent; 7 stays queued.
        store
            .apply(&[
                StoreOp::SessionSet(record),
                queued(5),
                dead(5),
                queued(6),
                queued(7),
                StoreOp::DeliveryStage {
                    client_id: client_id.clone(),
                    seq: 6,
                    stage: DeliveryStage::Sent(PacketId::new(1).unwrap()),
                },
            ])
            .unwrap();
        store.apply(&[dead(6)]).unwrap();
    }
    let snapshot = open(dir.path()).load().unwrap();
    let stored = &snapshot.sessions[0];
    assert_eq!(stored.record.next_seq, 9);
    let stages: Vec<(u64, DeliveryStage)> = stored
        .deliveries
        .iter()
        .map(|(delivery, stage)| (delivery.seq, *stage))
        .collect();
    assert_eq!(
        stages,
        [
            (5, DeliveryStage::Dead),
            (6, DeliveryStage::Dead),
            (7, DeliveryStage::Queued)
        ]
    );
}

#[test]
fn version_2_and_3_stores_are_converted_and_keep_their_sessions() {
    for version in [2_u32, 3] {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut store = open(dir.path());
            store.apply(&[StoreOp::SessionSet(session("old"))]).unwrap();
        }
        // Make it what that version left: session records without the next sequence number,
        // and before version 3 no `guard` partition.
        {
            let keyspace = fjall::Config::new(dir.path()).open().unwrap();
            let options = fjall::PartitionCreateOptions::default;
            let sessions = keyspace.open_partition("sessions", options()).unwrap();
            let value = sessions.get("old").unwrap().expect("the session record");
            sessions.insert("old", &value[..value.len() - 8]).unwrap();
            if version == 2 {
                let guard = keyspace.open_partition("guard", options()).unwrap();
                keyspace.delete_partition(guard).unwrap();
            }
            let meta = keyspace.open_partition("meta", options()).unwrap();
            meta.insert("format", version.to_be_bytes()).unwrap();
            keyspace.persist(fjall::PersistMode::SyncAll).unwrap();
        }
        assert_eq!(dir.path().join("partitions/guard").exists(), version == 3);
        for round in 0..2 {
            // Converted at the first open; the second reads the converted store.
            let mut store = open(dir.path());
            let snapshot = store.load().unwrap();
            assert_eq!(snapshot.sessions.len(), 1, "from version {version}");
            let record = &snapshot.sessions[0].record;
            assert_eq!(record.client_id.as_str(), "old");
            assert_eq!((record.expiry_secs, record.next_seq), (3600, 0));
            assert_eq!(snapshot.guard.len(), round);
            store
                .apply(&[StoreOp::GuardSet(counter("d:dev", 1))])
                .unwrap();
        }
        assert_eq!(format_version(dir.path()), FORMAT_VERSION);
    }
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

fn kept(id: u64, topic: &str, at: i64) -> Kept {
    Kept {
        at,
        message: Arc::new(Message {
            id,
            topic: topic.parse().unwrap(),
            payload: Bytes::from(format!("m{id}")),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: Default::default(),
            expires_at: None,
            origin: None,
        }),
    }
}

fn loaded_history(store: &mut DiskStore) -> Vec<(u64, i64, Bytes)> {
    let mut history: Vec<_> = store
        .load()
        .unwrap()
        .history
        .into_iter()
        .map(|kept| (kept.message.id, kept.at, kept.message.payload.clone()))
        .collect();
    history.sort();
    history
}

#[test]
fn kept_messages_are_loaded_at_their_wall_clock_time_and_forgotten_ones_are_not() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut store = open_at(dir.path(), EPOCH);
        store
            .apply(&[
                StoreOp::HistoryKeep(kept(1, "h/a", 1_000)),
                StoreOp::HistoryKeep(kept(2, "h/a", 2_000)),
                StoreOp::HistoryKeep(kept(3, "h/b", -500)),
            ])
            .unwrap();
        store
            .apply(&[StoreOp::HistoryForget {
                topic: "h/a".parse().unwrap(),
                id: 1,
            }])
            .unwrap();
    }
    // A process started 10 s later: the same instants, 10 s further back from its zero.
    let mut store = open_at(dir.path(), EPOCH + 10_000);
    assert_eq!(
        loaded_history(&mut store),
        [
            (2, -8_000, Bytes::from_static(b"m2")),
            (3, -10_500, Bytes::from_static(b"m3"))
        ]
    );
}

#[test]
fn a_version_4_store_is_converted_and_keeps_its_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let record = SessionRecord {
        next_seq: 42,
        ..session("old")
    };
    {
        let mut store = open_at(dir.path(), EPOCH);
        store.apply(&[StoreOp::SessionSet(record)]).unwrap();
    }
    // Make it what version 4 left: no `history` partition.
    {
        let keyspace = fjall::Config::new(dir.path()).open().unwrap();
        let options = fjall::PartitionCreateOptions::default;
        let history = keyspace.open_partition("history", options()).unwrap();
        keyspace.delete_partition(history).unwrap();
        let meta = keyspace.open_partition("meta", options()).unwrap();
        meta.insert("format", 4_u32.to_be_bytes()).unwrap();
        keyspace.persist(fjall::PersistMode::SyncAll).unwrap();
    }
    assert!(!dir.path().join("partitions/history").exists());
    for round in 0..2 {
        let mut store = open_at(dir.path(), EPOCH);
        let snapshot = store.load().unwrap();
        assert_eq!(snapshot.sessions.len(), 1);
        assert_eq!(snapshot.sessions[0].record.next_seq, 42);
        assert_eq!(snapshot.history.len(), round);
        store
            .apply(&[StoreOp::HistoryKeep(kept(1, "h/a", 0))])
            .unwrap();
    }
    assert_eq!(format_version(dir.path()), FORMAT_VERSION);
}

#[test]
fn a_version_5_store_without_its_history_partition_is_damaged() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut store = open_at(dir.path(), EPOCH);
        store
            .apply(&[StoreOp::HistoryKeep(kept(1, "h/a", 0))])
            .unwrap();
    }
    std::fs::remove_dir_all(dir.path().join("partitions/history")).unwrap();
    let error = DiskStore::open(
        dir.path(),
        Durability::Fsync,
        WallClock {
            epoch_unix_ms: EPOCH,
        },
    )
    .expect_err("a partition of this format missing is damage");
    assert!(
        matches!(&error, StoreError::Damaged { problem, .. }
            if problem.contains("partition `history` is missing")),
        "{error}"
    );
}

#[test]
fn the_horizon_of_deletions_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut store = open_at(dir.path(), EPOCH);
        assert_eq!(store.load().unwrap().kv_horizon, 0);
        store.apply(&[StoreOp::KvHorizon(7)]).unwrap();
        store.apply(&[StoreOp::KvHorizon(9)]).unwrap();
    }
    assert_eq!(open_at(dir.path(), EPOCH).load().unwrap().kv_horizon, 9);
}
