//! The fjall store gives back, after reopening, exactly what the applied operations left;
//! deadlines survive as wall-clock times; other format versions, damaged records and a journal
//! that reads back short of what was committed are refused, and recovering opens what reads
//! back; a crash's unfinished last write, a creation cut off and a store older than the commit
//! marker open as they are.
#![allow(clippy::expect_used, clippy::unwrap_used)] // Test code: a panic is a failure.

use std::sync::Arc;

use bytes::Bytes;
use tern_codec::{
    MqttString, PacketId, PublishProperties, QoS, SubscriptionIds, SubscriptionOptions,
    TopicFilter, TopicName, UserProperties, Will, WillProperties,
};
use tern_core::session::{Delivery, PendingWill};
use tern_core::store::{DeliveryStage, SessionRecord};
use tern_core::tree::SubscriptionInfo;
use tern_core::{Identity, Message, Method, SessionOwner, Store, StoreOp, Time};
use tern_store::{DiskStore, Durability, StoreError, WallClock, FORMAT_VERSION};

const EPOCH: u64 = 1_700_000_000_000;

fn s(text: &str) -> MqttString {
    MqttString::new(text).unwrap()
}

fn topic(text: &str) -> TopicName {
    TopicName::new(s(text)).unwrap()
}

fn message(id: u64, name: &str, payload: &'static str, expires_at: Option<Time>) -> Arc<Message> {
    let mut user_properties = UserProperties::default();
    user_properties.push(&s("k"), &s("v"));
    Arc::new(Message {
        id,
        topic: topic(name),
        payload: Bytes::from_static(payload.as_bytes()),
        qos: QoS::ExactlyOnce,
        retain: true,
        properties: PublishProperties {
            content_type: Some(s("text/plain")),
            user_properties,
            ..PublishProperties::default()
        },
        expires_at,
        origin: None,
    })
}

fn session(client: &str) -> SessionRecord {
    let owner = Identity {
        method: Method::DeviceKey,
        username: Some("ops".to_owned()),
        owner: Some("acme".to_owned()),
        ..Identity::default()
    };
    SessionRecord {
        client_id: s(client),
        owner: owner.session_owner(),
        expiry_secs: 3600,
        subscriptions: vec![(
            TopicFilter::new(s("a/+/c")).unwrap(),
            SubscriptionInfo {
                options: SubscriptionOptions {
                    qos: QoS::AtLeastOnce,
                    no_local: true,
                    retain_as_published: true,
                    ..SubscriptionOptions::default()
                },
                identifier: Some(42),
                tree_view: None,
            },
        )],
        will: Some(PendingWill {
            will: Will {
                topic: topic("wills/x"),
                payload: Bytes::from_static(b"gone"),
                qos: QoS::AtLeastOnce,
                retain: false,
                properties: WillProperties {
                    will_delay_interval: Some(30),
                    ..WillProperties::default()
                },
            },
            delay_secs: 30,
        }),
        expires_at: Some(Time::from_millis(90_000)),
        will_at: Some(Time::from_millis(40_000)),
        next_seq: 17,
    }
}

fn delivery(seq: u64, msg: Arc<Message>) -> Delivery {
    Delivery {
        seq,
        charge: msg.charge(),
        message: msg,
        qos: QoS::AtLeastOnce,
        retain: false,
        subscription_ids: SubscriptionIds::from_ids([42]).unwrap(),
    }
}

/// Changes `partition` of the store in `dir` behind the store's back, with the engine alone.
fn edit_partition(
    dir: &std::path::Path,
    partition: &str,
    edit: impl FnOnce(&fjall::PartitionHandle),
) {
    let keyspace = fjall::Config::new(dir).open().unwrap();
    let handle = keyspace
        .open_partition(partition, fjall::PartitionCreateOptions::default())
        .unwrap();
    edit(&handle);
    keyspace.persist(fjall::PersistMode::SyncAll).unwrap();
}

fn clock() -> WallClock {
    WallClock {
        epoch_unix_ms: EPOCH,
    }
}

fn open(dir: &std::path::Path, epoch: u64) -> DiskStore {
    DiskStore::open(
        dir,
        Durability::Fsync,
        WallClock {
            epoch_unix_ms: epoch,
        },
    )
    .expect("store opens")
}

#[test]
fn what_was_applied_is_loaded_after_reopening_with_times_moved_to_the_new_epoch() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut store = open(dir.path(), EPOCH);
        let client = s("sub");
        let ops = vec![
            StoreOp::RetainedSet(message(
                1,
                "r/kept",
                "kept",
                Some(Time::from_millis(600_000)),
            )),
            StoreOp::RetainedSet(message(2, "r/cleared", "x", None)),
            StoreOp::RetainedClear(topic("r/cleared")),
            StoreOp::SessionSet(session("sub")),
            StoreOp::DeliveryQueued {
                client_id: client.clone(),
                delivery: delivery(0, message(3, "a/b/c", "zero", None)),
            },
            StoreOp::DeliveryQueued {
                client_id: client.clone(),
                delivery: delivery(1, message(4, "a/b/c", "one", None)),
            },
            StoreOp::DeliveryQueued {
                client_id: client.clone(),
                delivery: delivery(2, message(5, "a/b/c", "two", None)),
            },
            StoreOp::DeliveryStage {
                client_id: client.clone(),
                seq: 0,
                stage: DeliveryStage::Sent(PacketId::new(7).unwrap()),
            },
            StoreOp::DeliveryStage {
                client_id: client.clone(),
                seq: 1,
                stage: DeliveryStage::Released(PacketId::new(8).unwrap()),
            },
            StoreOp::DeliveryDone {
                client_id: client.clone(),
                seq: 2,
            },
            StoreOp::IncomingQos2 {
                client_id: client.clone(),
                packet_id: 9,
                pending: true,
            },
            StoreOp::IncomingQos2 {
                client_id: client.clone(),
                packet_id: 10,
                pending: true,
            },
            StoreOp::IncomingQos2 {
                client_id: client,
                packet_id: 10,
                pending: false,
            },
            // A session created and removed in the same batch leaves nothing behind.
            StoreOp::SessionSet(session("brief")),
            StoreOp::DeliveryQueued {
                client_id: s("brief"),
                delivery: delivery(0, message(6, "a/b/c", "lost", None)),
            },
            StoreOp::SessionRemove(s("brief")),
        ];
        store.apply(&ops).unwrap();
    }
    // The next process started 10 s of wall-clock time later.
    let mut store = open(dir.path(), EPOCH + 10_000);
    let snapshot = store.load().unwrap();

    assert_eq!(snapshot.retained.len(), 1);
    let kept = &snapshot.retained[0];
    assert_eq!(*kept.as_ref(), {
        let mut m = (*message(1, "r/kept", "kept", None)).clone();
        m.expires_at = Some(Time::from_millis(590_000));
        m
    });

    assert_eq!(snapshot.sessions.len(), 1, "the removed session is gone");
    let stored = &snapshot.sessions[0];
    let mut expected = session("sub");
    expected.expires_at = Some(Time::from_millis(80_000));
    expected.will_at = Some(Time::from_millis(30_000));
    assert_eq!(format!("{:?}", stored.record), format!("{expected:?}"));
    let got: Vec<(u64, String, DeliveryStage, Vec<u32>)> = stored
        .deliveries
        .iter()
        .map(|(d, stage)| {
            (
                d.seq,
                String::from_utf8_lossy(&d.message.payload).into_owned(),
                *stage,
                d.subscription_ids.iter().collect(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (
                0,
                "zero".to_owned(),
                DeliveryStage::Sent(PacketId::new(7).unwrap()),
                vec![42]
            ),
            (
                1,
                "one".to_owned(),
                DeliveryStage::Released(PacketId::new(8).unwrap()),
                vec![42]
            ),
        ]
    );
    assert_eq!(stored.incoming_qos2, [9]);
}

#[test]
fn a_deadline_that_passed_while_stopped_is_due_at_once() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut store = open(dir.path(), EPOCH);
        store.apply(&[StoreOp::SessionSet(session("sub"))]).unwrap();
    }
    let mut store = open(dir.path(), EPOCH + 3_600_000);
    let snapshot = store.load().unwrap();
    let record = &snapshot.sessions[0].record;
    assert_eq!(record.expires_at, Some(Time::from_millis(0)));
    assert_eq!(record.will_at, Some(Time::from_millis(0)));
}

#[test]
fn a_store_of_another_format_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path(), EPOCH));
    edit_partition(dir.path(), "meta", |p| {
        p.insert("format", (FORMAT_VERSION + 1).to_be_bytes())
            .unwrap();
    });
    let error = DiskStore::open(
        dir.path(),
        Durability::Fsync,
        WallClock { epoch_unix_ms: 0 },
    )
    .expect_err("another version is refused");
    assert!(
        matches!(error, StoreError::UnknownVersion { found, .. } if found == FORMAT_VERSION + 1),
        "{error}"
    );
}

#[test]
fn a_version_1_store_is_converted_and_its_sessions_owner_is_unknown() {
    let dir = tempfile::tempdir().unwrap();
    let unowned = SessionRecord {
        owner: SessionOwner::unverified(),
        ..session("old")
    };
    drop(open(dir.path(), EPOCH));
    {
        let mut store = open(dir.path(), EPOCH);
        store.apply(&[StoreOp::SessionSet(unowned)]).unwrap();
    }
    // Rewrite it as version 1 wrote it: the same record without the owner's byte and the next
    // sequence number (eight bytes) after it.
    {
        let keyspace = fjall::Config::new(dir.path()).open().unwrap();
        let options = fjall::PartitionCreateOptions::default;
        let meta = keyspace.open_partition("meta", options()).unwrap();
        let sessions = keyspace.open_partition("sessions", options()).unwrap();
        let value = sessions.get("old").unwrap().expect("the session record");
        let (record, next_seq) = value.split_at(value.len() - 8);
        assert_eq!(next_seq, 17_u64.to_be_bytes());
        assert_eq!(
            record.last(),
            Some(&0),
            "an unverified owner is one byte, 0"
        );
        sessions.insert("old", &record[..record.len() - 1]).unwrap();
        meta.insert("format", 1_u32.to_be_bytes()).unwrap();
        keyspace.persist(fjall::PersistMode::SyncAll).unwrap();
    }
    for _ in 0..2 {
        // Converted at the first open; the second reads the converted store.
        let mut store = open(dir.path(), EPOCH);
        let snapshot = store.load().unwrap();
        assert_eq!(snapshot.sessions.len(), 1);
        let record = &snapshot.sessions[0].record;
        assert!(record.owner.is_unknown(), "{:?}", record.owner);
        assert_eq!(record.subscriptions.len(), 1);
        assert!(record.will.is_some());
    }
    let keyspace = fjall::Config::new(dir.path()).open().unwrap();
    let meta = keyspace
        .open_partition("meta", fjall::PartitionCreateOptions::default())
        .unwrap();
    let format = meta.get("format").unwrap().expect("a format version");
    assert_eq!(&format[..], FORMAT_VERSION.to_be_bytes());
}

#[test]
fn a_damaged_record_is_an_error_not_a_silent_reset() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut store = open(dir.path(), EPOCH);
        store.apply(&[StoreOp::SessionSet(session("sub"))]).unwrap();
    }
    edit_partition(dir.path(), "sessions", |p| {
        p.insert("sub", [1u8, 2, 3]).unwrap();
    });
    let mut store = open(dir.path(), EPOCH);
    let error = store.load().expect_err("a damaged record is refused");
    assert!(
        matches!(
            error,
            StoreError::Corrupt {
                partition: "sessions",
                ..
            }
        ),
        "{error}"
    );
}

#[test]
fn records_without_a_format_version_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    edit_partition(dir.path(), "retained", |p| {
        p.insert("t", [0u8]).unwrap();
    });
    let error = DiskStore::open(
        dir.path(),
        Durability::Fsync,
        WallClock { epoch_unix_ms: 0 },
    )
    .expect_err("records without a version are refused");
    assert!(matches!(error, StoreError::Corrupt { .. }), "{error}");
}

#[test]
fn stages_written_in_later_batches_take_precedence_and_go_with_the_delivery() {
    let dir = tempfile::tempdir().unwrap();
    let client = s("sub");
    let queued = |seq| StoreOp::DeliveryQueued {
        client_id: s("sub"),
        delivery: delivery(seq, message(10 + seq, "a/b/c", "m", None)),
    };
    let stage = |seq, stage| StoreOp::DeliveryStage {
        client_id: s("sub"),
        seq,
        stage,
    };
    let sent = DeliveryStage::Sent(PacketId::new(3).unwrap());
    let released = DeliveryStage::Released(PacketId::new(3).unwrap());
    {
        let mut store = open(dir.path(), EPOCH);
        store
            .apply(&[StoreOp::SessionSet(session("sub")), queued(0), queued(1)])
            .unwrap();
        store.apply(&[stage(0, sent), stage(1, sent)]).unwrap();
        store.apply(&[stage(0, released)]).unwrap();
        store
            .apply(&[StoreOp::DeliveryDone {
                client_id: client.clone(),
                seq: 1,
            }])
            .unwrap();
    }
    let stages_of = |store: &mut DiskStore| -> Vec<(u64, DeliveryStage)> {
        store.load().unwrap().sessions[0]
            .deliveries
            .iter()
            .map(|(d, stage)| (d.seq, *stage))
            .collect()
    };
    let mut store = open(dir.path(), EPOCH);
    assert_eq!(stages_of(&mut store), [(0, released)]);
    store
        .apply(&[StoreOp::DeliveryDone {
            client_id: client,
            seq: 0,
        }])
        .unwrap();
    drop(store);
    let mut store = open(dir.path(), EPOCH);
    assert_eq!(stages_of(&mut store), []);
    // No stage record outlives its delivery.
    drop(store);
    let keyspace = fjall::Config::new(dir.path()).open().unwrap();
    let stages = keyspace
        .open_partition("stages", fjall::PartitionCreateOptions::default())
        .unwrap();
    assert!(stages.is_empty().unwrap());
}

/// The one journal file of a small store, and how many bytes of it were written (the rest is
/// the zeros it was preallocated with).
fn journal(dir: &std::path::Path) -> (std::path::PathBuf, Vec<u8>, usize) {
    let mut files = std::fs::read_dir(dir.join("journals")).unwrap();
    let path = files.next().unwrap().unwrap().path();
    assert!(files.next().is_none(), "one journal");
    let bytes = std::fs::read(&path).unwrap();
    let written = bytes
        .iter()
        .rposition(|b| *b != 0)
        .map_or(0, |last| last + 1);
    (path, bytes, written)
}

/// The client identifiers of the sessions `store` loads.
fn sessions(store: &mut DiskStore) -> Vec<String> {
    let mut ids: Vec<String> = store
        .load()
        .unwrap()
        .sessions
        .iter()
        .map(|s| s.record.client_id.as_str().to_owned())
        .collect();
    ids.sort();
    ids
}

/// A store holding sessions `a` then `b`, each committed in its own batch.
fn two_batches(dir: &std::path::Path) {
    let mut store = open(dir, EPOCH);
    store.apply(&[StoreOp::SessionSet(session("a"))]).unwrap();
    store.apply(&[StoreOp::SessionSet(session("b"))]).unwrap();
}

#[test]
fn a_last_write_cut_off_by_a_crash_is_dropped_and_the_store_opens() {
    let dir = tempfile::tempdir().unwrap();
    two_batches(dir.path());
    let (path, mut bytes, written) = journal(dir.path());
    // The beginning of a batch whose write was cut off: a start entry and part of an item.
    bytes[written..written + 17]
        .copy_from_slice(&[1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 2, 0]);
    std::fs::write(&path, &bytes).unwrap();
    let mut store = open(dir.path(), EPOCH);
    assert_eq!(sessions(&mut store), ["a", "b"]);
}

#[test]
fn a_committed_batch_that_no_longer_reads_back_is_refused_and_recovering_drops_it() {
    let dir = tempfile::tempdir().unwrap();
    two_batches(dir.path());
    let (path, mut bytes, written) = journal(dir.path());
    // A byte flipped in the last batch, committed: the journal reads back one batch of two.
    bytes[written - 20] ^= 0xFF;
    std::fs::write(&path, &bytes).unwrap();
    let error = DiskStore::open(dir.path(), Durability::Fsync, clock())
        .expect_err("a store short of what was committed is refused");
    assert!(
        matches!(&error, StoreError::Damaged { problem, .. }
            if problem.contains("batch 2 was committed") && problem.contains("batch 1:")),
        "{error}"
    );
    let mut store = DiskStore::recover(dir.path(), Durability::Fsync, clock()).unwrap();
    assert_eq!(sessions(&mut store), ["a"]);
    drop(store);
    // Recovered, the store opens again as it now is.
    let mut store = open(dir.path(), EPOCH);
    assert_eq!(sessions(&mut store), ["a"]);
}

#[test]
fn a_store_older_than_the_commit_marker_is_taken_and_a_removed_marker_refused() {
    let dir = tempfile::tempdir().unwrap();
    two_batches(dir.path());
    let marker = dir.path().join("committed");
    std::fs::remove_file(&marker).unwrap();
    let error = DiskStore::open(dir.path(), Durability::Fsync, clock())
        .expect_err("a store that committed batches needs its marker");
    assert!(
        matches!(&error, StoreError::Damaged { problem, .. } if problem.contains("commit marker")),
        "{error}"
    );
    // A store from before the marker had no counter either: it is taken, and marked.
    edit_partition(dir.path(), "meta", |p| {
        p.remove("commit").unwrap();
    });
    let mut store = open(dir.path(), EPOCH);
    assert_eq!(sessions(&mut store), ["a", "b"]);
    assert!(marker.exists());
}

#[test]
fn a_creation_cut_off_is_a_fresh_start_and_other_files_are_not_a_store() {
    // The engine's first folders, before its `version` file.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("journals")).unwrap();
    std::fs::create_dir(dir.path().join("partitions")).unwrap();
    std::fs::write(dir.path().join("journals").join("0"), vec![0; 4096]).unwrap();
    let mut store = open(dir.path(), EPOCH);
    assert!(sessions(&mut store).is_empty());
    store.apply(&[StoreOp::SessionSet(session("a"))]).unwrap();
    drop(store);
    assert_eq!(sessions(&mut open(dir.path(), EPOCH)), ["a"]);

    // The engine's store made, Tern's partitions not yet.
    let dir = tempfile::tempdir().unwrap();
    drop(fjall::Config::new(dir.path()).open().unwrap());
    assert!(sessions(&mut open(dir.path(), EPOCH)).is_empty());

    // Anything else is not taken for a store, recovering or not.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), b"mine").unwrap();
    for recover in [false, true] {
        let opened = match recover {
            false => DiskStore::open(dir.path(), Durability::Fsync, clock()),
            true => DiskStore::recover(dir.path(), Durability::Fsync, clock()),
        };
        let error = opened.expect_err("not a store");
        assert!(matches!(error, StoreError::Unusable { .. }), "{error}");
    }
}

#[test]
fn recovering_drops_records_that_do_not_decode_but_not_another_format_version() {
    let dir = tempfile::tempdir().unwrap();
    two_batches(dir.path());
    edit_partition(dir.path(), "sessions", |p| {
        p.insert("b", [1u8, 2, 3]).unwrap();
    });
    let mut store = DiskStore::recover(dir.path(), Durability::Fsync, clock()).unwrap();
    assert_eq!(sessions(&mut store), ["a"]);
    drop(store);
    // The record was dropped, not skipped: the store now loads without recovering.
    assert_eq!(sessions(&mut open(dir.path(), EPOCH)), ["a"]);

    edit_partition(dir.path(), "meta", |p| {
        p.insert("format", (FORMAT_VERSION + 1).to_be_bytes())
            .unwrap();
    });
    let error = DiskStore::recover(dir.path(), Durability::Fsync, clock())
        .expect_err("another format version is not damage");
    assert!(
        matches!(error, StoreError::UnknownVersion { .. }),
        "{error}"
    );
}

#[test]
fn with_durability_os_a_journal_emptied_after_a_stop_is_refused_too() {
    let dir = tempfile::tempdir().unwrap();
    {
        // Batches closer together than the marker is written with `os`: closing brings it up.
        let mut store = DiskStore::open(dir.path(), Durability::Os, clock()).unwrap();
        for name in ["a", "b", "c"] {
            store.apply(&[StoreOp::SessionSet(session(name))]).unwrap();
        }
    }
    let (path, _, _) = journal(dir.path());
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(0)
        .unwrap();
    let error =
        DiskStore::open(dir.path(), Durability::Os, clock()).expect_err("the batches are missing");
    assert!(
        matches!(&error, StoreError::Damaged { problem, .. }
            if problem.contains("batch 3 was committed")),
        "{error}"
    );
}

#[test]
fn recovering_a_version_1_store_drops_the_sessions_that_do_not_convert() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut store = open(dir.path(), EPOCH);
        let unowned = SessionRecord {
            owner: SessionOwner::unverified(),
            ..session("a")
        };
        store.apply(&[StoreOp::SessionSet(unowned)]).unwrap();
    }
    edit_partition(dir.path(), "meta", |p| {
        p.insert("format", 1_u32.to_be_bytes()).unwrap();
    });
    // `a` as version 1 wrote it (without the owner's byte and the next sequence number), `b`
    // beyond reading.
    edit_partition(dir.path(), "sessions", |p| {
        let a = p.get("a").unwrap().expect("the session record");
        p.insert("a", &a[..a.len() - 9]).unwrap();
        p.insert("b", [1u8, 2, 3]).unwrap();
    });
    let error = DiskStore::open(dir.path(), Durability::Fsync, clock())
        .expect_err("a session that does not convert is refused");
    assert!(matches!(error, StoreError::Corrupt { .. }), "{error}");
    let mut store = DiskStore::recover(dir.path(), Durability::Fsync, clock()).unwrap();
    assert_eq!(sessions(&mut store), ["a"]);
    drop(store);
    assert_eq!(sessions(&mut open(dir.path(), EPOCH)), ["a"]);
}
