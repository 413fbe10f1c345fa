//! The fleet registry in the store (format version 6): owners and devices set are loaded after
//! reopening with every field, deleted ones are not; a version 5 store is converted and keeps
//! its sessions; in this format a missing `fleet` partition is damage, and a fleet record that
//! does not decode is refused (or dropped when recovering).
#![allow(clippy::expect_used, clippy::unwrap_used)] // Test code: a panic is a failure.

use tern_codec::MqttString;
use tern_core::fleet::{Device, DeviceCredential, Owner};
use tern_core::store::SessionRecord;
use tern_core::{SessionOwner, Store, StoreOp};
use tern_store::{DiskStore, Durability, StoreError, FORMAT_VERSION};

mod support;
use support::{clock, open};

fn device(udid: &str, credential: DeviceCredential) -> Device {
    Device {
        owner: "acme".into(),
        udid: udid.into(),
        alias: format!("{udid} in the hall"),
        platform: "esp32".into(),
        firmware: "1.2.3".into(),
        tags: vec!["hall".into(), "beta".into()],
        created_unix: 1_767_225_600,
        disabled: false,
        credential,
    }
}

fn owner(id: &str, password_hash: Option<&str>) -> Owner {
    Owner {
        id: id.into(),
        created_unix: 1_767_225_600,
        password_hash: password_hash.map(str::to_owned),
    }
}

fn sorted(mut devices: Vec<Device>) -> Vec<Device> {
    devices.sort_by(|a, b| a.udid.cmp(&b.udid));
    devices
}

#[test]
fn owners_and_devices_are_loaded_after_reopening_and_deleted_ones_are_not() {
    let dir = tempfile::tempdir().unwrap();
    let hash = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA";
    let mut disabled = device("d3", DeviceCredential::CertificateCn("d3.acme".into()));
    disabled.disabled = true;
    let kept = vec![
        device("d1", DeviceCredential::Password(hash.into())),
        device("d2", DeviceCredential::HttpKey),
        disabled,
    ];
    {
        let mut store = open(dir.path());
        let mut ops: Vec<StoreOp> = kept.iter().cloned().map(StoreOp::FleetDeviceSet).collect();
        ops.push(StoreOp::FleetDeviceSet(device(
            "gone",
            DeviceCredential::HttpKey,
        )));
        ops.push(StoreOp::FleetOwnerSet(owner("acme", None)));
        store.apply(&ops).unwrap();
        store
            .apply(&[
                StoreOp::FleetDeviceRemove("gone".into()),
                StoreOp::FleetOwnerSet(owner("acme", Some(hash))),
            ])
            .unwrap();
    }
    let snapshot = open(dir.path()).load().unwrap();
    assert_eq!(sorted(snapshot.fleet_devices), kept);
    assert_eq!(snapshot.fleet_owners, vec![owner("acme", Some(hash))]);
}

#[test]
fn a_version_5_store_is_converted_and_keeps_its_sessions() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut store = open(dir.path());
        let session = SessionRecord {
            client_id: MqttString::new("old").unwrap(),
            owner: SessionOwner::unverified(),
            expiry_secs: 3600,
            subscriptions: Vec::new(),
            will: None,
            expires_at: None,
            will_at: None,
            next_seq: 7,
        };
        store.apply(&[StoreOp::SessionSet(session)]).unwrap();
    }
    // What version 5 left: no `fleet` partition, and the version 5 in `meta`.
    {
        let keyspace = fjall::Config::new(dir.path()).open().unwrap();
        let options = fjall::PartitionCreateOptions::default;
        let fleet = keyspace.open_partition("fleet", options()).unwrap();
        keyspace.delete_partition(fleet).unwrap();
        let meta = keyspace.open_partition("meta", options()).unwrap();
        meta.insert("format", 5_u32.to_be_bytes()).unwrap();
        keyspace.persist(fjall::PersistMode::SyncAll).unwrap();
    }
    assert!(!dir.path().join("partitions/fleet").exists());
    for round in 0..2 {
        let mut store = open(dir.path());
        let snapshot = store.load().unwrap();
        assert_eq!(snapshot.sessions.len(), 1);
        let record = &snapshot.sessions[0].record;
        assert_eq!((record.client_id.as_str(), record.next_seq), ("old", 7));
        assert_eq!(snapshot.fleet_devices.len(), round);
        let udid = format!("d{round}");
        store
            .apply(&[StoreOp::FleetDeviceSet(device(
                &udid,
                DeviceCredential::HttpKey,
            ))])
            .unwrap();
    }
    let keyspace = fjall::Config::new(dir.path()).open().unwrap();
    let meta = keyspace
        .open_partition("meta", fjall::PartitionCreateOptions::default())
        .unwrap();
    let format = meta.get("format").unwrap().expect("a format version");
    assert_eq!(
        u32::from_be_bytes(format[..].try_into().unwrap()),
        FORMAT_VERSION
    );
    assert_eq!(FORMAT_VERSION, 7);
}

#[test]
fn a_version_6_store_without_its_fleet_partition_is_damaged() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut store = open(dir.path());
        let op = StoreOp::FleetDeviceSet(device("d1", DeviceCredential::HttpKey));
        store.apply(&[op]).unwrap();
    }
    std::fs::remove_dir_all(dir.path().join("partitions/fleet")).unwrap();
    let error = DiskStore::open(dir.path(), Durability::Fsync, clock())
        .expect_err("a partition of this format missing is damage");
    assert!(
        matches!(&error, StoreError::Damaged { problem, .. }
            if problem.contains("partition `fleet` is missing")),
        "{error}"
    );
}

#[test]
fn a_fleet_record_that_does_not_decode_is_refused_or_dropped_when_recovering() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut store = open(dir.path());
        let op = StoreOp::FleetDeviceSet(device("d1", DeviceCredential::HttpKey));
        store.apply(&[op]).unwrap();
    }
    {
        let keyspace = fjall::Config::new(dir.path()).open().unwrap();
        let fleet = keyspace
            .open_partition("fleet", fjall::PartitionCreateOptions::default())
            .unwrap();
        fleet.insert(b"\x01broken", [0_u8, 9, b'x']).unwrap();
        keyspace.persist(fjall::PersistMode::SyncAll).unwrap();
    }
    let error = open(dir.path())
        .load()
        .expect_err("a short record is corrupt");
    assert!(
        matches!(
            &error,
            StoreError::Corrupt {
                partition: "fleet",
                ..
            }
        ),
        "{error}"
    );
    let mut store = DiskStore::recover(dir.path(), Durability::Fsync, clock()).unwrap();
    let snapshot = store.load().unwrap();
    let udids: Vec<_> = snapshot
        .fleet_devices
        .iter()
        .map(|d| d.udid.as_str())
        .collect();
    assert_eq!(udids, ["d1"]);
}
