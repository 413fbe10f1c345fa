//! Wire primitives: a bounds-checked reader over a frozen packet body and a sink that either
//! counts or writes, so that every packet has one encoding routine used for both sizing and output.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::error::{DecodeError, EncodeError};
use crate::string::MqttString;

/// Largest value a variable byte integer can hold (four bytes of seven bits).
pub const VARINT_MAX: u32 = 268_435_455;

/// Reads primitives from a packet body that has fully arrived.
///
/// Slices of the body (strings, binary data, payloads) share its allocation: nothing is copied.
#[derive(Debug)]
pub(crate) struct Reader {
    buf: Bytes,
    pos: usize,
}

const TRUNCATED: DecodeError = DecodeError::Malformed("packet ends inside a field");

impl Reader {
    pub(crate) fn new(buf: Bytes) -> Self {
        Self { buf, pos: 0 }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    pub(crate) fn peek(&self) -> Option<u8> {
        self.buf.get(self.pos).copied()
    }

    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        let byte = *self.buf.get(self.pos).ok_or(TRUNCATED)?;
        self.pos += 1;
        Ok(byte)
    }

    pub(crate) fn u16(&mut self) -> Result<u16, DecodeError> {
        let bytes = self.array::<2>()?;
        Ok(u16::from_be_bytes(bytes))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        let bytes = self.array::<4>()?;
        Ok(u32::from_be_bytes(bytes))
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let slice = self.buf.get(self.pos..self.pos + N).ok_or(TRUNCATED)?;
        let mut out = [0u8; N];
        out.copy_from_slice(slice);
        self.pos += N;
        Ok(out)
    }

    /// A variable byte integer; rejects encodings longer than four bytes or than necessary.
    pub(crate) fn varint(&mut self) -> Result<u32, DecodeError> {
        match decode_varint(&self.buf[self.pos..])? {
            Some((value, len)) => {
                self.pos += len;
                Ok(value)
            }
            None => Err(TRUNCATED),
        }
    }

    /// The next `len` bytes as a shared slice of the body.
    pub(crate) fn take(&mut self, len: usize) -> Result<Bytes, DecodeError> {
        if self.remaining() < len {
            return Err(TRUNCATED);
        }
        let out = self.buf.slice(self.pos..self.pos + len);
        self.pos += len;
        Ok(out)
    }

    /// Everything left in the body.
    ///
    /// Hands over the body itself rather than a new slice of it, which saves a reference-count
    /// round trip on every PUBLISH payload.
    pub(crate) fn rest(&mut self) -> Bytes {
        let mut out = core::mem::take(&mut self.buf);
        out.advance(self.pos);
        self.pos = 0;
        out
    }

    /// Binary data: a two-byte length followed by that many bytes.
    pub(crate) fn binary(&mut self) -> Result<Bytes, DecodeError> {
        let len = self.u16()?;
        self.take(usize::from(len))
    }

    /// A UTF-8 encoded string, validated (well-formed, no U+0000).
    pub(crate) fn string(&mut self) -> Result<MqttString, DecodeError> {
        let raw = self.binary()?;
        MqttString::from_bytes(raw).map_err(|e| DecodeError::Malformed(e.as_str()))
    }

    /// A sub-reader over the next `len` bytes (a property block).
    pub(crate) fn sub(&mut self, len: usize) -> Result<Self, DecodeError> {
        Ok(Self::new(self.take(len)?))
    }

    /// Bytes between two earlier positions, as a shared slice.
    pub(crate) fn slice_between(&self, start: usize, end: usize) -> Bytes {
        self.buf.slice(start..end)
    }

    pub(crate) fn position(&self) -> usize {
        self.pos
    }
}

/// Decodes a variable byte integer from the front of `buf`.
///
/// `Ok(None)` means more bytes are needed; errors are non-minimal or over-long encodings.
pub fn decode_varint(buf: &[u8]) -> Result<Option<(u32, usize)>, DecodeError> {
    let mut value: u32 = 0;
    for (index, &byte) in buf.iter().enumerate().take(4) {
        value |= u32::from(byte & 0x7F) << (7 * index);
        if byte & 0x80 == 0 {
            // A final byte of zero after the first means a shorter encoding existed.
            if index > 0 && byte == 0 {
                return Err(DecodeError::Malformed(
                    "variable byte integer not minimally encoded",
                ));
            }
            return Ok(Some((value, index + 1)));
        }
    }
    if buf.len() >= 4 {
        return Err(DecodeError::Malformed(
            "variable byte integer longer than four bytes",
        ));
    }
    Ok(None)
}

/// Number of bytes the variable byte integer encoding of `value` takes.
pub fn varint_len(value: u32) -> usize {
    match value {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// Destination of an encoding: a byte counter or a buffer.
pub(crate) trait Sink {
    fn put_u8(&mut self, value: u8);
    fn put_slice(&mut self, bytes: &[u8]);

    fn put_u16(&mut self, value: u16) {
        self.put_slice(&value.to_be_bytes());
    }

    fn put_u32(&mut self, value: u32) {
        self.put_slice(&value.to_be_bytes());
    }

    fn put_varint(&mut self, mut value: u32) {
        debug_assert!(value <= VARINT_MAX);
        loop {
            let mut byte = (value & 0x7F) as u8;
            value >>= 7;
            if value > 0 {
                byte |= 0x80;
            }
            self.put_u8(byte);
            if value == 0 {
                break;
            }
        }
    }

    fn put_string(&mut self, value: &MqttString) {
        let bytes = value.as_bytes();
        debug_assert!(bytes.len() <= usize::from(u16::MAX));
        self.put_u16(bytes.len() as u16);
        self.put_slice(bytes);
    }

    fn put_binary(&mut self, value: &[u8]) -> Result<(), EncodeError> {
        let len =
            u16::try_from(value.len()).map_err(|_| EncodeError::BinaryTooLong(value.len()))?;
        self.put_u16(len);
        self.put_slice(value);
        Ok(())
    }
}

/// A sink that only counts bytes.
#[derive(Debug, Default)]
pub(crate) struct Counter(pub(crate) usize);

impl Sink for Counter {
    #[inline]
    fn put_u8(&mut self, _value: u8) {
        self.0 += 1;
    }

    #[inline]
    fn put_slice(&mut self, bytes: &[u8]) {
        self.0 += bytes.len();
    }
}

impl Sink for BytesMut {
    #[inline]
    fn put_u8(&mut self, value: u8) {
        BufMut::put_u8(self, value);
    }

    #[inline]
    fn put_slice(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

/// Checks a length against the variable byte integer range.
pub(crate) fn checked_varint(len: usize) -> Result<u32, EncodeError> {
    u32::try_from(len)
        .ok()
        .filter(|&v| v <= VARINT_MAX)
        .ok_or(EncodeError::PacketTooLarge(len))
}
