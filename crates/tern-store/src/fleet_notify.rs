//! The byte layout of the fleet's actionable notifications (partition `notify`, format
//! version 7; see docs/design/store-format.md).
//!
//! Key: `[udid len u16][udid][nid]`, so a device's notifications lie together. Value: owner
//! (a *string*, `[len u16][UTF-8]`), `[direction u8]` (0 raised by the device, 1 asked of
//! it), body (string), `[response type u8]` (0 bool, 1 string, 2 choice, then `[count u16]`
//! and the choices as strings), correlation data (`[len u16]` and the bytes, `0xFFFF` for
//! none), `[state u8]` (0 pending, 1 answered, 2 expired, 3 cancelled), the response
//! (`[has u8]` then a string of JSON), then `[created u64][expires u64][finished u64]
//! [message id u64][delivered u64]`: times as wall-clock milliseconds, 0 for none (a message
//! id of 0 is none too: ids start at 1).

use bytes::{Buf, BufMut, Bytes, BytesMut};
use fjall::{Batch, PartitionHandle};
use tern_core::fleet_notify::{Direction, Notification, NotifyState, ResponseType};
use tern_core::record::WallClock;
use tern_core::{Snapshot, StoreOp, Time};

use crate::fleet::{get_str, get_u16, get_u64, get_u8, put_str, utf8};
use crate::record::RecordError;
use crate::salvage::Progress;
use crate::{drop_record, DiskStore, StoreError};

/// Correlation data's length when there is none.
const NO_CORRELATION: u16 = u16::MAX;

/// Adds a notification's change to `batch` (other operations: nothing).
pub(crate) fn write(
    batch: &mut Batch,
    notify: &PartitionHandle,
    clock: WallClock,
    op: &StoreOp,
) -> Result<(), RecordError> {
    match op {
        StoreOp::FleetNotifySet(n) => {
            batch.insert(notify, key(&n.udid, &n.nid)?, encode(clock, n)?)
        }
        StoreOp::FleetNotifyRemove { udid, nid } => batch.remove(notify, key(udid, nid)?),
        _ => {}
    }
    Ok(())
}

impl DiskStore {
    /// Reads the notifications into `snapshot`; a record that does not decode is refused, or
    /// when recovering dropped with the `dropped` batch.
    pub(crate) fn load_notify(
        &mut self,
        snapshot: &mut Snapshot,
        dropped: &mut Batch,
        progress: &mut Progress,
    ) -> Result<(), StoreError> {
        for item in self.notify.iter() {
            let (key, value) = item.map_err(|e| self.engine(e))?;
            match decode(self.clock, &key, &value).map_err(self.record("notify")) {
                Ok(n) => snapshot.fleet_notifications.push(n),
                Err(e) => drop_record(&mut self.salvage, dropped, &self.notify, key, e)?,
            }
            progress.tick();
        }
        Ok(())
    }
}

/// The key of notification `nid` of `udid`.
pub(crate) fn key(udid: &str, nid: &str) -> Result<Vec<u8>, RecordError> {
    let len = u16::try_from(udid.len()).map_err(|_| RecordError::corrupt("udid too long"))?;
    let mut key = Vec::with_capacity(2 + udid.len() + nid.len());
    key.extend_from_slice(&len.to_be_bytes());
    key.extend_from_slice(udid.as_bytes());
    key.extend_from_slice(nid.as_bytes());
    Ok(key)
}

fn wall(clock: WallClock, time: Option<Time>) -> u64 {
    time.map_or(0, |t| {
        clock.epoch_unix_ms.saturating_add(t.as_millis()).max(1)
    })
}

/// A time that passed before this process started becomes `Time` zero.
fn time(clock: WallClock, wall: u64) -> Option<Time> {
    (wall != 0).then(|| Time::from_millis(wall.saturating_sub(clock.epoch_unix_ms)))
}

/// A notification's value.
pub(crate) fn encode(clock: WallClock, n: &Notification) -> Result<Vec<u8>, RecordError> {
    let mut buf = BytesMut::with_capacity(128 + n.body.len());
    put_str(&mut buf, &n.owner)?;
    buf.put_u8(match n.direction {
        Direction::FromDevice => 0,
        Direction::ToDevice => 1,
    });
    put_str(&mut buf, &n.body)?;
    match &n.response_type {
        ResponseType::Bool => buf.put_u8(0),
        ResponseType::String => buf.put_u8(1),
        ResponseType::Choice(choices) => {
            buf.put_u8(2);
            let count =
                u16::try_from(choices.len()).map_err(|_| RecordError::corrupt("choices"))?;
            buf.put_u16(count);
            for choice in choices {
                put_str(&mut buf, choice)?;
            }
        }
    }
    match &n.correlation {
        Some(data) => {
            let len = u16::try_from(data.len())
                .ok()
                .filter(|&len| len != NO_CORRELATION)
                .ok_or_else(|| RecordError::corrupt("correlation data too long"))?;
            buf.put_u16(len);
            buf.put_slice(data);
        }
        None => buf.put_u16(NO_CORRELATION),
    }
    buf.put_u8(match n.state {
        NotifyState::Pending => 0,
        NotifyState::Answered => 1,
        NotifyState::Expired => 2,
        NotifyState::Cancelled => 3,
    });
    match &n.response {
        Some(response) => {
            buf.put_u8(1);
            put_str(&mut buf, response)?;
        }
        None => buf.put_u8(0),
    }
    for at in [Some(n.created), Some(n.expires), n.finished] {
        buf.put_u64(wall(clock, at));
    }
    buf.put_u64(n.message_id.unwrap_or(0));
    buf.put_u64(wall(clock, n.delivered));
    Ok(buf.to_vec())
}

/// A notification back from its key and value.
pub(crate) fn decode(
    clock: WallClock,
    key: &[u8],
    value: &[u8],
) -> Result<Notification, RecordError> {
    let mut key_bytes = key;
    let udid_len = usize::from(get_u16(&mut key_bytes)?);
    if key_bytes.len() < udid_len {
        return Err(RecordError::corrupt("key ends early"));
    }
    let udid = utf8(&key_bytes[..udid_len])?;
    let nid = utf8(&key_bytes[udid_len..])?;
    let mut value = value;
    let owner = get_str(&mut value)?;
    let direction = match get_u8(&mut value)? {
        0 => Direction::FromDevice,
        1 => Direction::ToDevice,
        _ => return Err(RecordError::corrupt("notification direction")),
    };
    let body = get_str(&mut value)?;
    let response_type = match get_u8(&mut value)? {
        0 => ResponseType::Bool,
        1 => ResponseType::String,
        2 => {
            let count = get_u16(&mut value)?;
            let choices = (0..count)
                .map(|_| get_str(&mut value))
                .collect::<Result<_, _>>()?;
            ResponseType::Choice(choices)
        }
        _ => return Err(RecordError::corrupt("notification response type")),
    };
    let correlation = match get_u16(&mut value)? {
        NO_CORRELATION => None,
        len => {
            let len = usize::from(len);
            if value.len() < len {
                return Err(RecordError::corrupt("record too short"));
            }
            let data = Bytes::copy_from_slice(&value[..len]);
            value.advance(len);
            Some(data)
        }
    };
    let state = match get_u8(&mut value)? {
        0 => NotifyState::Pending,
        1 => NotifyState::Answered,
        2 => NotifyState::Expired,
        3 => NotifyState::Cancelled,
        _ => return Err(RecordError::corrupt("notification state")),
    };
    let response = match get_u8(&mut value)? {
        0 => None,
        1 => Some(get_str(&mut value)?),
        _ => return Err(RecordError::corrupt("notification response flag")),
    };
    let created = time(clock, get_u64(&mut value)?).unwrap_or_default();
    let expires = time(clock, get_u64(&mut value)?).unwrap_or_default();
    let finished = time(clock, get_u64(&mut value)?);
    let message_id = Some(get_u64(&mut value)?).filter(|&id| id != 0);
    let delivered = time(clock, get_u64(&mut value)?);
    if !value.is_empty() {
        return Err(RecordError::corrupt("bytes left over"));
    }
    Ok(Notification {
        owner,
        udid,
        nid,
        direction,
        body,
        response_type,
        correlation,
        state,
        response,
        created,
        expires,
        finished,
        message_id,
        delivered,
    })
}
