//! The byte layout of stored records: the records themselves are the core's (see
//! `tern_core::record` and docs/design/store-format.md); the keys that group a session's
//! records are the store's own.

use bytes::Bytes;
use tern_codec::MqttString;
pub(crate) use tern_core::record::{
    decode_delivery, decode_retained, decode_session, decode_stage, encode_delivery,
    encode_retained, encode_session, encode_stage, RecordError, SessionLayout,
};

fn corrupt(what: impl Into<String>) -> RecordError {
    RecordError::corrupt(what)
}

/// The key prefix of everything that belongs to one session: `[len u16][client id]`, so that
/// no client identifier's prefix is a prefix of another's.
pub(crate) fn session_prefix(client_id: &MqttString) -> Vec<u8> {
    let bytes = client_id.as_bytes();
    let mut key = Vec::with_capacity(2 + bytes.len() + 8);
    // Client identifiers are MQTT strings, at most 65,535 bytes.
    key.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
    key.extend_from_slice(bytes);
    key
}

/// Splits a key that starts `[len u16][name]` into the name and the rest.
pub(crate) fn split_prefixed(key: &[u8]) -> Result<(&[u8], &[u8]), RecordError> {
    let (len, rest) = key
        .split_first_chunk::<2>()
        .ok_or_else(|| corrupt("key too short"))?;
    let len = usize::from(u16::from_be_bytes(*len));
    if rest.len() < len {
        return Err(corrupt("key too short"));
    }
    Ok(rest.split_at(len))
}

/// Splits a per-session key into the client identifier and the rest.
pub(crate) fn split_session_key(key: &[u8]) -> Result<(MqttString, &[u8]), RecordError> {
    let (id, rest) = split_prefixed(key)?;
    let client_id = MqttString::from_bytes(Bytes::copy_from_slice(id))
        .map_err(|e| corrupt(format!("client identifier: {e}")))?;
    Ok((client_id, rest))
}

/// The key of a session's delivery `seq` (partitions `deliveries` and `stages`).
pub(crate) fn delivery_key(client_id: &MqttString, seq: u64) -> Vec<u8> {
    let mut key = session_prefix(client_id);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// The key of a session's incoming QoS 2 packet identifier (partition `incoming`).
pub(crate) fn incoming_key(client_id: &MqttString, packet_id: u16) -> Vec<u8> {
    let mut key = session_prefix(client_id);
    key.extend_from_slice(&packet_id.to_be_bytes());
    key
}
