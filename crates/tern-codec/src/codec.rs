//! Incremental framing: find a complete packet in a read buffer, refuse an oversized one from its
//! fixed header alone, and split it off without copying.

use bytes::{Buf, BytesMut};

use crate::error::DecodeError;
use crate::packet::{Packet, ProtocolVersion};
use crate::wire::decode_varint;

/// The largest packet MQTT can express: one type byte, four length bytes, 268,435,455 body bytes.
pub const PACKET_SIZE_MAX: u32 = 268_435_460;

/// Where a complete packet lies at the front of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    /// Bytes of the fixed header (type byte and remaining length).
    pub header_len: usize,
    /// Bytes of the whole packet.
    pub total_len: usize,
}

/// Reads the fixed header at the front of `buf`.
///
/// `Ok(None)` means the fixed header itself is incomplete. A header whose packet would exceed
/// `max_packet_size` is refused at once, before any of its body is awaited or buffered.
pub fn parse_frame(buf: &[u8], max_packet_size: u32) -> Result<Option<Frame>, DecodeError> {
    let Some(length_bytes) = buf.get(1..) else {
        return Ok(None);
    };
    let Some((remaining, len_len)) = decode_varint(length_bytes)? else {
        return Ok(None);
    };
    let header_len = 1 + len_len;
    let total_len = header_len + remaining as usize;
    if total_len > max_packet_size as usize {
        return Err(DecodeError::PacketTooLarge {
            size: total_len,
            max: max_packet_size,
        });
    }
    Ok(Some(Frame {
        header_len,
        total_len,
    }))
}

/// The protocol level a CONNECT at the front of `buf` asks for, if enough of it has arrived.
///
/// Lets a server answer a CONNECT it will not decode (one too large, say) in the client's own
/// protocol version.
pub fn connect_protocol_level(buf: &[u8]) -> Option<u8> {
    if buf.first()? >> 4 != 1 {
        return None;
    }
    let (_, len_len) = decode_varint(buf.get(1..)?).ok()??;
    let name = buf.get(1 + len_len..)?;
    match name {
        [0x00, 0x04, b'M', b'Q', b'T', b'T', level, ..]
        | [0x00, 0x06, b'M', b'Q', b'I', b's', b'd', b'p', level, ..] => Some(*level),
        _ => None,
    }
}

/// Decodes packets one at a time from a growing read buffer.
#[derive(Debug, Clone)]
pub struct Decoder {
    version: ProtocolVersion,
    max_packet_size: u32,
}

impl Decoder {
    /// A decoder for `version` that refuses packets larger than `max_packet_size` bytes.
    pub fn new(version: ProtocolVersion, max_packet_size: u32) -> Self {
        Self {
            version,
            max_packet_size,
        }
    }

    /// The protocol level used for packets other than CONNECT.
    pub fn version(&self) -> ProtocolVersion {
        self.version
    }

    /// Changes the protocol level (a client does this before its CONNECT is answered).
    pub fn set_version(&mut self, version: ProtocolVersion) {
        self.version = version;
    }

    /// The largest packet accepted, in bytes.
    pub fn max_packet_size(&self) -> u32 {
        self.max_packet_size
    }

    /// Changes the largest packet accepted.
    pub fn set_max_packet_size(&mut self, max_packet_size: u32) {
        self.max_packet_size = max_packet_size;
    }

    /// Takes the next complete packet off the front of `buf`.
    ///
    /// Returns `Ok(None)` when more bytes are needed; nothing is consumed or reserved then. A
    /// decoded CONNECT switches the decoder to the CONNECT's protocol level.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Packet>, DecodeError> {
        let Some(frame) = parse_frame(buf, self.max_packet_size)? else {
            return Ok(None);
        };
        if buf.len() < frame.total_len {
            return Ok(None);
        }
        let first_byte = buf[0];
        let mut packet = buf.split_to(frame.total_len);
        // `advance` moves a pointer; splitting the header off would cost a reference count.
        packet.advance(frame.header_len);
        let decoded = Packet::decode(first_byte, packet.freeze(), self.version)?;
        if let Packet::Connect(connect) = &decoded {
            self.version = connect.protocol_version;
        }
        Ok(Some(decoded))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_level_is_read_from_a_partial_connect() {
        // CONNECT declaring 2000 bytes, of which only the protocol name and level arrived.
        assert_eq!(
            connect_protocol_level(b"\x10\xD0\x0F\x00\x04MQTT\x05"),
            Some(5)
        );
        assert_eq!(
            connect_protocol_level(b"\x10\x0C\x00\x04MQTT\x04\x02"),
            Some(4)
        );
        assert_eq!(connect_protocol_level(b"\x10\xD0\x0F\x00\x04MQT"), None);
        assert_eq!(connect_protocol_level(b"\x30\x05\x00\x04MQTT\x05"), None);
    }
}
