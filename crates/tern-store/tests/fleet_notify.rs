//! The fleet's actionable notifications in the store (format version 7): notifications set
//! are loaded after reopening with every field, their times at the same wall-clock instants
//! whatever the process's epoch, forgotten ones are not; a version 6 store is converted and
//! keeps its registry; in this format a missing `notify` partition is damage, and a record
//! that does not decode is refused (or dropped when recovering).
#![allow(clippy::expect_used, clippy::unwrap_used)] // Test code: a panic is a failure.

use bytes::Bytes;
use tern_core::fleet::{Device, DeviceCredential};
use tern_core::fleet_notify::{Direction, Notification, NotifyState, ResponseType};
use tern_core::{Store, StoreOp, Time};
use tern_store::FORMAT_VERSION;

mod support;
use support::{
    format_version, insert_raw, make_older, missing_partition_is_damage, open, open_at,
    refused_then_recovered, EPOCH_UNIX_MS,
};

fn notification(nid: &str) -> Notification {
    Notification {
        owner: "acme".into(),
        udid: "d1".into(),
        nid: nid.into(),
        direction: Direction::FromDevice,
        body: "Door open 3 h: close it?".into(),
        response_type: ResponseType::Bool,
        correlation: None,
        state: NotifyState::Pending,
        response: None,
        created: Time::from_millis(1_000),
        expires: Time::from_millis(86_401_000),
        finished: None,
        message_id: None,
        delivered: None,
    }
}

fn answered() -> Notification {
    Notification {
        direction: Direction::ToDevice,
        response_type: ResponseType::Choice(vec!["eco".into(), "boost".into()]),
        correlation: Some(Bytes::from_static(b"\x00req-7")),
        state: NotifyState::Answered,
        response: Some("\"boost\"".into()),
        finished: Some(Time::from_millis(5_000)),
        message_id: Some(42),
        delivered: Some(Time::from_millis(6_000)),
        ..notification("mode")
    }
}

fn sorted(mut notes: Vec<Notification>) -> Vec<Notification> {
    notes.sort_by(|a, b| a.nid.cmp(&b.nid));
    notes
}

#[test]
fn notifications_are_loaded_after_reopening_and_forgotten_ones_are_not() {
    let dir = tempfile::tempdir().unwrap();
    let string = Notification {
        response_type: ResponseType::String,
        state: NotifyState::Cancelled,
        finished: Some(Time::from_millis(2_000)),
        ..notification("name")
    };
    {
        let mut store = open(dir.path());
        let ops = [
            notification("door"),
            answered(),
            string.clone(),
            notification("gone"),
        ];
        store.apply(&ops.map(StoreOp::FleetNotifySet)).unwrap();
        let gone = StoreOp::FleetNotifyRemove {
            udid: "d1".into(),
            nid: "gone".into(),
        };
        store.apply(&[gone]).unwrap();
    }
    let snapshot = open(dir.path()).load().unwrap();
    let want = vec![notification("door"), answered(), string];
    assert_eq!(sorted(snapshot.fleet_notifications), sorted(want.clone()));
    // A process that started 3 s later sees the same instants 3 s earlier on its clock.
    let later = open_at(dir.path(), EPOCH_UNIX_MS + 3_000).load().unwrap();
    let door = later
        .fleet_notifications
        .iter()
        .find(|n| n.nid == "door")
        .unwrap();
    assert_eq!(door.expires, Time::from_millis(86_398_000));
    assert_eq!(
        door.created,
        Time::from_millis(0),
        "before this process: its zero"
    );
}

#[test]
fn a_version_6_store_is_converted_and_keeps_its_registry() {
    let dir = tempfile::tempdir().unwrap();
    let device = Device {
        owner: "acme".into(),
        udid: "d1".into(),
        alias: "hall".into(),
        platform: "esp32".into(),
        firmware: "1.0.0".into(),
        tags: vec!["beta".into()],
        created_unix: 1_767_225_600,
        disabled: false,
        credential: DeviceCredential::HttpKey,
    };
    {
        let mut store = open(dir.path());
        store
            .apply(&[StoreOp::FleetDeviceSet(device.clone())])
            .unwrap();
    }
    make_older(dir.path(), 6, "notify");
    assert!(!dir.path().join("partitions/notify").exists());
    for round in 0..2 {
        let mut store = open(dir.path());
        let snapshot = store.load().unwrap();
        assert_eq!(snapshot.fleet_devices, vec![device.clone()]);
        assert_eq!(snapshot.fleet_notifications.len(), round);
        let op = StoreOp::FleetNotifySet(notification(&format!("n{round}")));
        store.apply(&[op]).unwrap();
    }
    assert_eq!(format_version(dir.path()), 7);
    assert_eq!(FORMAT_VERSION, 7);
}

#[test]
fn a_version_7_store_without_its_notify_partition_is_damaged() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut store = open(dir.path());
        let op = StoreOp::FleetNotifySet(notification("door"));
        store.apply(&[op]).unwrap();
    }
    missing_partition_is_damage(dir.path(), "notify");
}

#[test]
fn a_notification_record_that_does_not_decode_is_refused_or_dropped_when_recovering() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut store = open(dir.path());
        let op = StoreOp::FleetNotifySet(notification("door"));
        store.apply(&[op]).unwrap();
    }
    insert_raw(dir.path(), "notify", b"\x00\x02d2broken", &[0, 9, b'x']);
    let snapshot = refused_then_recovered(dir.path(), "notify");
    let nids: Vec<_> = snapshot
        .fleet_notifications
        .iter()
        .map(|n| &n.nid)
        .collect();
    assert_eq!(nids, ["door"]);
}
