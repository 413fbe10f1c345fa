//! The byte layout of the fleet registry's records (partition `fleet`, format version 6; see
//! docs/design/store-format.md): owners and their devices, and (format 7) the devices' last
//! registrations.
//!
//! Key: `[kind u8][id]` (kind 0: an owner, by its id; 1: a device, by its udid; 2: a device's
//! registration, by its udid). A *string* is
//! `[len u16][UTF-8]`. Owner: `[created u64][has password u8]` then, with one, the password's
//! argon2id PHC string. Device: owner, alias, platform, firmware (strings), `[tag count u16]`
//! and the tags (strings), `[created u64][disabled u8][credential kind u8]` then the
//! credential's string (kind 0: the password's PHC string; 1: an HTTP key, empty; 2: a
//! certificate CN). Registration: mac, firmware, version, commit (strings), `[registered
//! u64]`. Times are Unix seconds.

use bytes::{Buf, BufMut, BytesMut};
use fjall::{Batch, PartitionHandle};
use tern_core::firmware::Registration;
use tern_core::fleet::{Device, DeviceCredential, Owner};
use tern_core::{Snapshot, StoreOp};

use crate::record::RecordError;
use crate::salvage::Progress;
use crate::{drop_record, DiskStore, StoreError};

/// Adds a registry change to `batch` (other operations are not the registry's: nothing).
pub(crate) fn write(
    batch: &mut Batch,
    fleet: &PartitionHandle,
    op: &StoreOp,
) -> Result<(), RecordError> {
    match op {
        StoreOp::FleetDeviceSet(device) => {
            batch.insert(fleet, device_key(&device.udid), encode_device(device)?)
        }
        StoreOp::FleetDeviceRemove(udid) => {
            batch.remove(fleet, device_key(udid));
            batch.remove(fleet, key(REGISTRATION, udid));
        }
        StoreOp::FleetRegistrationSet(udid, registration) => batch.insert(
            fleet,
            key(REGISTRATION, udid),
            encode_registration(registration)?,
        ),
        StoreOp::FleetOwnerSet(owner) => {
            batch.insert(fleet, owner_key(&owner.id), encode_owner(owner)?)
        }
        _ => {}
    }
    Ok(())
}

impl DiskStore {
    /// Reads the registry into `snapshot`; a record that does not decode is refused, or when
    /// recovering dropped with the `dropped` batch.
    pub(crate) fn load_fleet(
        &mut self,
        snapshot: &mut Snapshot,
        dropped: &mut Batch,
        progress: &mut Progress,
    ) -> Result<(), StoreError> {
        let started = std::time::Instant::now();
        for item in self.fleet.iter() {
            let (key, value) = item.map_err(|e| self.engine(e))?;
            match decode(&key, &value).map_err(self.record("fleet")) {
                Ok(FleetRecord::Owner(owner)) => snapshot.fleet_owners.push(owner),
                Ok(FleetRecord::Device(device)) => {
                    snapshot.fleet_devices.push(device);
                    let loaded = snapshot.fleet_devices.len();
                    if loaded % PROGRESS_DEVICES == 0 {
                        tracing::info!("loading the fleet registry: {loaded} devices");
                    }
                }
                Ok(FleetRecord::Registration(udid, registration)) => {
                    snapshot.fleet_registrations.push((udid, registration))
                }
                Err(e) => drop_record(&mut self.salvage, dropped, &self.fleet, key, e)?,
            }
            progress.tick();
        }
        if snapshot.fleet_devices.len() >= PROGRESS_DEVICES {
            tracing::info!(
                "fleet registry loaded: {} devices of {} owners in {:.2} s",
                snapshot.fleet_devices.len(),
                snapshot.fleet_owners.len(),
                started.elapsed().as_secs_f64()
            );
        }
        Ok(())
    }
}

/// A progress line every this many devices loaded (a fleet of 100,000 loads in a few).
const PROGRESS_DEVICES: usize = 25_000;

const OWNER: u8 = 0;
const DEVICE: u8 = 1;
const REGISTRATION: u8 = 2;

/// A record of the `fleet` partition.
pub(crate) enum FleetRecord {
    /// An owner.
    Owner(Owner),
    /// A device.
    Device(Device),
    /// A device's last registration, by its udid.
    Registration(String, Registration),
}

/// The key of an owner's record.
pub(crate) fn owner_key(id: &str) -> Vec<u8> {
    key(OWNER, id)
}

/// The key of a device's record.
pub(crate) fn device_key(udid: &str) -> Vec<u8> {
    key(DEVICE, udid)
}

fn key(kind: u8, id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + id.len());
    key.push(kind);
    key.extend_from_slice(id.as_bytes());
    key
}

pub(crate) fn put_str(buf: &mut BytesMut, value: &str) -> Result<(), RecordError> {
    let len = u16::try_from(value.len()).map_err(|_| RecordError::corrupt("string too long"))?;
    buf.put_u16(len);
    buf.put_slice(value.as_bytes());
    Ok(())
}

/// An owner's value.
pub(crate) fn encode_owner(owner: &Owner) -> Result<Vec<u8>, RecordError> {
    let mut buf = BytesMut::with_capacity(16);
    buf.put_u64(owner.created_unix);
    match &owner.password_hash {
        Some(hash) => {
            buf.put_u8(1);
            put_str(&mut buf, hash)?;
        }
        None => buf.put_u8(0),
    }
    Ok(buf.to_vec())
}

/// A registration's value.
fn encode_registration(registration: &Registration) -> Result<Vec<u8>, RecordError> {
    let mut buf = BytesMut::with_capacity(64);
    for text in [
        &registration.mac,
        &registration.firmware,
        &registration.version,
        &registration.commit,
    ] {
        put_str(&mut buf, text)?;
    }
    buf.put_u64(registration.registered_unix);
    Ok(buf.to_vec())
}

/// A device's value.
pub(crate) fn encode_device(device: &Device) -> Result<Vec<u8>, RecordError> {
    let mut buf = BytesMut::with_capacity(128);
    for text in [
        &device.owner,
        &device.alias,
        &device.platform,
        &device.firmware,
    ] {
        put_str(&mut buf, text)?;
    }
    let tags = u16::try_from(device.tags.len()).map_err(|_| RecordError::corrupt("tags"))?;
    buf.put_u16(tags);
    for tag in &device.tags {
        put_str(&mut buf, tag)?;
    }
    buf.put_u64(device.created_unix);
    buf.put_u8(u8::from(device.disabled));
    let (kind, text) = match &device.credential {
        DeviceCredential::Password(hash) => (0, hash.as_str()),
        DeviceCredential::HttpKey => (1, ""),
        DeviceCredential::CertificateCn(cn) => (2, cn.as_str()),
    };
    buf.put_u8(kind);
    put_str(&mut buf, text)?;
    Ok(buf.to_vec())
}

/// A record back from its key and value.
pub(crate) fn decode(key: &[u8], value: &[u8]) -> Result<FleetRecord, RecordError> {
    let (&kind, id) = key
        .split_first()
        .ok_or_else(|| RecordError::corrupt("empty key"))?;
    let id = utf8(id)?;
    let mut value = value;
    let record = match kind {
        OWNER => {
            let created_unix = get_u64(&mut value)?;
            let password_hash = match get_u8(&mut value)? {
                0 => None,
                1 => Some(get_str(&mut value)?),
                _ => return Err(RecordError::corrupt("owner password flag")),
            };
            FleetRecord::Owner(Owner {
                id,
                created_unix,
                password_hash,
            })
        }
        DEVICE => {
            let owner = get_str(&mut value)?;
            let alias = get_str(&mut value)?;
            let platform = get_str(&mut value)?;
            let firmware = get_str(&mut value)?;
            let count = get_u16(&mut value)?;
            let tags = (0..count)
                .map(|_| get_str(&mut value))
                .collect::<Result<_, _>>()?;
            let created_unix = get_u64(&mut value)?;
            let disabled = match get_u8(&mut value)? {
                0 => false,
                1 => true,
                _ => return Err(RecordError::corrupt("device disabled flag")),
            };
            let kind = get_u8(&mut value)?;
            let text = get_str(&mut value)?;
            let credential = match kind {
                0 => DeviceCredential::Password(text),
                1 => DeviceCredential::HttpKey,
                2 => DeviceCredential::CertificateCn(text),
                _ => return Err(RecordError::corrupt("device credential kind")),
            };
            FleetRecord::Device(Device {
                owner,
                udid: id,
                alias,
                platform,
                firmware,
                tags,
                created_unix,
                disabled,
                credential,
            })
        }
        REGISTRATION => FleetRecord::Registration(
            id,
            Registration {
                mac: get_str(&mut value)?,
                firmware: get_str(&mut value)?,
                version: get_str(&mut value)?,
                commit: get_str(&mut value)?,
                registered_unix: get_u64(&mut value)?,
            },
        ),
        _ => return Err(RecordError::corrupt("unknown fleet record kind")),
    };
    if !value.is_empty() {
        return Err(RecordError::corrupt("bytes left over"));
    }
    Ok(record)
}

pub(crate) fn utf8(bytes: &[u8]) -> Result<String, RecordError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| RecordError::corrupt("not UTF-8"))
}

fn need(value: &[u8], len: usize) -> Result<(), RecordError> {
    match value.len() >= len {
        true => Ok(()),
        false => Err(RecordError::corrupt("record too short")),
    }
}

pub(crate) fn get_u8(value: &mut &[u8]) -> Result<u8, RecordError> {
    need(value, 1)?;
    Ok(value.get_u8())
}

pub(crate) fn get_u16(value: &mut &[u8]) -> Result<u16, RecordError> {
    need(value, 2)?;
    Ok(value.get_u16())
}

pub(crate) fn get_u64(value: &mut &[u8]) -> Result<u64, RecordError> {
    need(value, 8)?;
    Ok(value.get_u64())
}

pub(crate) fn get_str(value: &mut &[u8]) -> Result<String, RecordError> {
    let len = usize::from(get_u16(value)?);
    need(value, len)?;
    let text = utf8(&value[..len])?;
    value.advance(len);
    Ok(text)
}
