//! The byte layout of the firmware catalogue's releases (partition `firmware`, format version
//! 7; see docs/design/store-format.md).
//!
//! Key: the release's id (UTF-8). Value: platform, version, url, sha256 (strings, as in the
//! `fleet` partition: `[len u16][UTF-8]`), `[size u64]`, `[has owner u8]` then, with one, the
//! owner (a string), `[tag count u16]` and the tags (strings), `[rollout percent u8]`,
//! `[created u64]` (Unix seconds).

use bytes::{BufMut, BytesMut};
use fjall::{Batch, PartitionHandle};
use tern_core::firmware::Release;
use tern_core::{Snapshot, StoreOp};

use crate::fleet::{get_str, get_u16, get_u64, get_u8, put_str};
use crate::record::RecordError;
use crate::salvage::Progress;
use crate::{drop_record, DiskStore, StoreError};

/// Adds a catalogue change to `batch` (other operations are not the catalogue's: nothing).
pub(crate) fn write(
    batch: &mut Batch,
    firmware: &PartitionHandle,
    op: &StoreOp,
) -> Result<(), RecordError> {
    match op {
        StoreOp::FirmwareSet(release) => {
            batch.insert(firmware, release.id.as_bytes(), encode(release)?)
        }
        StoreOp::FirmwareRemove(id) => batch.remove(firmware, id.as_bytes()),
        _ => {}
    }
    Ok(())
}

impl DiskStore {
    /// Reads the catalogue into `snapshot`; a record that does not decode is refused, or when
    /// recovering dropped with the `dropped` batch.
    pub(crate) fn load_firmware(
        &mut self,
        snapshot: &mut Snapshot,
        dropped: &mut Batch,
        progress: &mut Progress,
    ) -> Result<(), StoreError> {
        for item in self.firmware.iter() {
            let (key, value) = item.map_err(|e| self.engine(e))?;
            match decode(&key, &value).map_err(self.record("firmware")) {
                Ok(release) => snapshot.firmware.push(release),
                Err(e) => drop_record(&mut self.salvage, dropped, &self.firmware, key, e)?,
            }
            progress.tick();
        }
        Ok(())
    }
}

/// A release's value.
pub(crate) fn encode(release: &Release) -> Result<Vec<u8>, RecordError> {
    let mut buf = BytesMut::with_capacity(256);
    for text in [
        &release.platform,
        &release.version,
        &release.url,
        &release.sha256,
    ] {
        put_str(&mut buf, text)?;
    }
    buf.put_u64(release.size);
    match &release.owner {
        Some(owner) => {
            buf.put_u8(1);
            put_str(&mut buf, owner)?;
        }
        None => buf.put_u8(0),
    }
    let tags = u16::try_from(release.tags.len()).map_err(|_| RecordError::corrupt("tags"))?;
    buf.put_u16(tags);
    for tag in &release.tags {
        put_str(&mut buf, tag)?;
    }
    buf.put_u8(release.rollout_percent);
    buf.put_u64(release.created_unix);
    Ok(buf.to_vec())
}

/// A release back from its key and value.
pub(crate) fn decode(key: &[u8], value: &[u8]) -> Result<Release, RecordError> {
    let id = String::from_utf8(key.to_vec()).map_err(|_| RecordError::corrupt("not UTF-8"))?;
    let mut value = value;
    let platform = get_str(&mut value)?;
    let version = get_str(&mut value)?;
    let url = get_str(&mut value)?;
    let sha256 = get_str(&mut value)?;
    let size = get_u64(&mut value)?;
    let owner = match get_u8(&mut value)? {
        0 => None,
        1 => Some(get_str(&mut value)?),
        _ => return Err(RecordError::corrupt("release owner flag")),
    };
    let count = get_u16(&mut value)?;
    let tags = (0..count)
        .map(|_| get_str(&mut value))
        .collect::<Result<_, _>>()?;
    let rollout_percent = get_u8(&mut value)?;
    let created_unix = get_u64(&mut value)?;
    if !value.is_empty() {
        return Err(RecordError::corrupt("bytes left over"));
    }
    Ok(Release {
        id,
        platform,
        version,
        url,
        sha256,
        size,
        owner,
        tags,
        rollout_percent,
        created_unix,
    })
}
