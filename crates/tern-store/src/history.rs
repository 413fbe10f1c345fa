//! The byte layout of kept messages (partition `history`, format version 5; see
//! docs/design/store-format.md): the last messages of the topics `[[history]]` names.
//!
//! Key: `[topic len u16][topic][message id u64]`, so a topic's messages lie together in id
//! order. Value: `[kept at i64]` (wall-clock milliseconds) then the message as a retained
//! message record.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use tern_codec::TopicName;
use tern_core::history::Kept;

use tern_core::record::WallClock;

use crate::record::{self, RecordError};

/// The key of the kept message `id` of `topic`.
pub(crate) fn key(topic: &TopicName, id: u64) -> Result<Vec<u8>, RecordError> {
    let len = u16::try_from(topic.len()).map_err(|_| RecordError::corrupt("topic too long"))?;
    let mut bytes = Vec::with_capacity(10 + topic.len());
    bytes.extend_from_slice(&len.to_be_bytes());
    bytes.extend_from_slice(topic.as_bytes());
    bytes.extend_from_slice(&id.to_be_bytes());
    Ok(bytes)
}

/// A kept message's value.
pub(crate) fn encode(clock: WallClock, kept: &Kept) -> Result<Bytes, RecordError> {
    let epoch = i64::try_from(clock.epoch_unix_ms).unwrap_or(i64::MAX);
    let message = record::encode_retained(clock, &kept.message)?;
    let mut buf = BytesMut::with_capacity(8 + message.len());
    buf.put_i64(epoch.saturating_add(kept.at));
    buf.put_slice(&message);
    Ok(buf.freeze())
}

/// A kept message back from its value (its key is checked against it).
pub(crate) fn decode(clock: WallClock, key: &[u8], value: &[u8]) -> Result<Kept, RecordError> {
    let (at, message) = value
        .split_first_chunk::<8>()
        .ok_or_else(|| RecordError::corrupt("record ends early"))?;
    let epoch = i64::try_from(clock.epoch_unix_ms).unwrap_or(i64::MAX);
    let at = i64::from_be_bytes(*at).saturating_sub(epoch);
    let message = record::decode_retained(clock, Bytes::copy_from_slice(message))?;
    if self::key(&message.topic, message.id)? != key {
        return Err(RecordError::corrupt("the key does not name the message"));
    }
    Ok(Kept {
        at,
        message: Arc::new(message),
    })
}
