//! The fleet's registrations and firmware catalogue in the store (format version 7): a
//! device's last registration and the releases are loaded after reopening with every field,
//! deleted ones are not (deleting a device deletes its registration); a version 6 store is
//! converted, its registry kept and an empty catalogue made; in this format a missing
//! `firmware` partition is damage.
#![allow(clippy::expect_used, clippy::unwrap_used)] // Test code: a panic is a failure.

use tern_core::firmware::{Registration, Release};
use tern_core::fleet::{Device, DeviceCredential};
use tern_core::{Store, StoreOp};
use tern_store::FORMAT_VERSION;

mod support;
use support::{format_version, make_older, missing_partition_is_damage, open};

fn device(udid: &str) -> Device {
    Device {
        owner: "acme".into(),
        udid: udid.into(),
        alias: String::new(),
        platform: "esp32".into(),
        firmware: "1.7.24".into(),
        tags: Vec::new(),
        created_unix: 1_767_225_600,
        disabled: false,
        credential: DeviceCredential::HttpKey,
    }
}

fn registration(version: &str) -> Registration {
    Registration {
        mac: "5CCF7FE4631D".into(),
        firmware: format!("thinx-firmware-esp8266-{version}"),
        version: version.into(),
        commit: "24e715f7fb5dc3ebe228165dae45fa933fade1bd".into(),
        registered_unix: 1_767_225_601,
    }
}

fn release(id: &str, owner: Option<&str>, tags: &[&str]) -> Release {
    Release {
        id: id.into(),
        platform: "esp32".into(),
        version: "1.7.25".into(),
        url: format!("https://firmware.example/{id}.bin"),
        sha256: "0f".repeat(32),
        size: 412_345,
        owner: owner.map(str::to_owned),
        tags: tags.iter().map(|t| (*t).to_owned()).collect(),
        rollout_percent: 50,
        created_unix: 1_767_225_600,
    }
}

#[test]
fn registrations_and_releases_are_loaded_after_reopening_and_deleted_ones_are_not() {
    let dir = tempfile::tempdir().unwrap();
    let kept = vec![
        release("fw-a", None, &[]),
        release("fw-b", Some("acme"), &["beta", "hall"]),
    ];
    {
        let mut store = open(dir.path());
        let mut ops: Vec<StoreOp> = ["d1", "d2"]
            .map(|udid| StoreOp::FleetDeviceSet(device(udid)))
            .into();
        ops.push(StoreOp::FleetRegistrationSet(
            "d1".into(),
            registration("1.7.23"),
        ));
        ops.push(StoreOp::FleetRegistrationSet(
            "d1".into(),
            registration("1.7.24"),
        ));
        ops.push(StoreOp::FleetRegistrationSet(
            "d2".into(),
            registration("1.7.24"),
        ));
        ops.extend(kept.iter().cloned().map(StoreOp::FirmwareSet));
        ops.push(StoreOp::FirmwareSet(release("gone", None, &[])));
        store.apply(&ops).unwrap();
        store
            .apply(&[
                StoreOp::FirmwareRemove("gone".into()),
                StoreOp::FleetDeviceRemove("d2".into()),
            ])
            .unwrap();
    }
    let snapshot = open(dir.path()).load().unwrap();
    assert_eq!(
        snapshot.fleet_registrations,
        vec![("d1".to_owned(), registration("1.7.24"))]
    );
    let mut releases = snapshot.firmware;
    releases.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(releases, kept);
}

#[test]
fn a_version_6_store_is_converted_and_keeps_its_registry() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut store = open(dir.path());
        store
            .apply(&[StoreOp::FleetDeviceSet(device("d1"))])
            .unwrap();
    }
    make_older(dir.path(), 6, "firmware");
    assert!(!dir.path().join("partitions/firmware").exists());
    for round in 0..2 {
        let mut store = open(dir.path());
        let snapshot = store.load().unwrap();
        assert_eq!(snapshot.fleet_devices.len(), 1);
        assert_eq!(snapshot.firmware.len(), round);
        let id = format!("fw-{round}");
        store
            .apply(&[StoreOp::FirmwareSet(release(&id, None, &[]))])
            .unwrap();
    }
    assert_eq!(format_version(dir.path()), FORMAT_VERSION);
    assert_eq!(FORMAT_VERSION, 7);
}

#[test]
fn a_version_7_store_without_its_firmware_partition_is_damaged() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut store = open(dir.path());
        let op = StoreOp::FirmwareSet(release("fw-a", None, &[]));
        store.apply(&[op]).unwrap();
    }
    missing_partition_is_damage(dir.path(), "firmware");
}
