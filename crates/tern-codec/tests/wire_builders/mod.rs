//! Byte builders shared by the conformance tests: frames, strings, property blocks, decoding
//! one frame.
#![allow(dead_code)] // Each test file uses part of it.
#![allow(clippy::expect_used)] // Test code: a panic is a failure.

use bytes::BytesMut;
use tern_codec::{DecodeError, Decoder, Packet, ProtocolVersion, PACKET_SIZE_MAX};

/// A frame: `first` byte, remaining length (minimal variable byte integer), `body`.
pub(crate) fn frame(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    let mut len = body.len();
    loop {
        let byte = (len % 128) as u8;
        len /= 128;
        out.push(if len > 0 { byte | 0x80 } else { byte });
        if len == 0 {
            break;
        }
    }
    out.extend_from_slice(body);
    out
}

pub(crate) fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// A length-prefixed string or binary field.
pub(crate) fn str16(bytes: &[u8]) -> Vec<u8> {
    cat(&[&(bytes.len() as u16).to_be_bytes(), bytes])
}

/// The property length byte (for blocks under 128 bytes) followed by the block, in 5.0 only.
pub(crate) fn props(v: ProtocolVersion, block: &[u8]) -> Vec<u8> {
    match v {
        ProtocolVersion::V31 | ProtocolVersion::V311 => Vec::new(),
        ProtocolVersion::V5 => cat(&[&[block.len() as u8], block]),
    }
}

/// Decodes `wire`, which must be exactly one whole frame.
pub(crate) fn decode(v: ProtocolVersion, wire: &[u8]) -> Result<Packet, DecodeError> {
    let mut buf = BytesMut::from(wire);
    let packet = Decoder::new(v, PACKET_SIZE_MAX).decode(&mut buf)?;
    assert!(buf.is_empty(), "one whole frame");
    Ok(packet.expect("the frame is complete"))
}
