//! `MqttString`: a UTF-8 encoded string as MQTT defines it, held in shared `Bytes` so decoding
//! never copies it.

use core::fmt;
use core::hash::{Hash, Hasher};
use core::ops::Deref;

use alloc::string::String;

use bytes::Bytes;

/// Why bytes are not an MQTT UTF-8 encoded string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StringError {
    /// Ill-formed UTF-8, including encoded surrogates (MQTT-1.5.3-1, MQTT-1.5.4-1).
    #[error("string is not well-formed UTF-8")]
    InvalidUtf8,
    /// The string contains U+0000 (MQTT-1.5.3-2, MQTT-1.5.4-2).
    #[error("string contains U+0000")]
    NullCharacter,
    /// Longer than the 65,535 bytes a two-byte length prefix can express.
    #[error("string longer than 65535 bytes")]
    TooLong,
}

impl StringError {
    /// The error as a static detail string, for decode errors.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidUtf8 => "string is not well-formed UTF-8",
            Self::NullCharacter => "string contains U+0000",
            Self::TooLong => "string longer than 65535 bytes",
        }
    }
}

/// A UTF-8 encoded string: well-formed, free of U+0000, at most 65,535 bytes.
///
/// A byte order mark (U+FEFF) is kept as is, never stripped (MQTT-1.5.4-3).
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct MqttString(Bytes);

impl MqttString {
    /// Validates shared bytes as an MQTT string without copying them.
    pub fn from_bytes(bytes: Bytes) -> Result<Self, StringError> {
        validate(&bytes)?;
        Ok(Self(bytes))
    }

    /// Validates and copies a string.
    pub fn new(value: &str) -> Result<Self, StringError> {
        validate(value.as_bytes())?;
        Ok(Self(Bytes::copy_from_slice(value.as_bytes())))
    }

    /// Wraps a static string; validated like any other.
    pub fn from_static(value: &'static str) -> Result<Self, StringError> {
        validate(value.as_bytes())?;
        Ok(Self(Bytes::from_static(value.as_bytes())))
    }

    /// Wraps bytes the caller has already validated as an MQTT string.
    pub(crate) fn from_validated(bytes: Bytes) -> Self {
        debug_assert!(validate(&bytes).is_ok());
        Self(bytes)
    }

    /// A copy that owns its bytes, so it no longer keeps alive the buffer it was decoded from.
    ///
    /// For strings kept long after their packet (a session's client identifier): a few bytes
    /// copied instead of a whole read buffer retained.
    pub fn detached(&self) -> Self {
        Self(Bytes::copy_from_slice(&self.0))
    }

    /// The empty string.
    pub const fn empty() -> Self {
        Self(Bytes::new())
    }

    /// The string's text.
    pub fn as_str(&self) -> &str {
        // SAFETY: every constructor ran `validate`, which checks `core::str::from_utf8`, and the
        // bytes are immutable afterwards.
        #[allow(unsafe_code)]
        unsafe {
            core::str::from_utf8_unchecked(&self.0)
        }
    }

    /// The encoded bytes, without the length prefix.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The shared bytes behind the string.
    pub fn into_bytes(self) -> Bytes {
        self.0
    }

    /// A sub-string sharing this string's bytes; `range` must lie on character boundaries.
    pub(crate) fn slice_str(&self, start: usize, end: usize) -> Self {
        debug_assert!(self.as_str().is_char_boundary(start) && self.as_str().is_char_boundary(end));
        Self(self.0.slice(start..end))
    }
}

fn validate(bytes: &[u8]) -> Result<(), StringError> {
    if bytes.len() > usize::from(u16::MAX) {
        return Err(StringError::TooLong);
    }
    // `from_utf8` rejects overlong forms and encoded surrogates (U+D800..U+DFFF).
    core::str::from_utf8(bytes).map_err(|_| StringError::InvalidUtf8)?;
    // A plain loop beats memchr's set-up cost on the short strings topics usually are.
    #[allow(clippy::manual_contains)]
    if bytes.iter().any(|&b| b == 0) {
        return Err(StringError::NullCharacter);
    }
    Ok(())
}

impl Deref for MqttString {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for MqttString {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl core::borrow::Borrow<str> for MqttString {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

// Hash as `str` so that `Borrow<str>` lookups in hash maps agree with `Eq`.
impl Hash for MqttString {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl fmt::Debug for MqttString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for MqttString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl TryFrom<&str> for MqttString {
    type Error = StringError;

    fn try_from(value: &str) -> Result<Self, StringError> {
        Self::new(value)
    }
}

impl TryFrom<String> for MqttString {
    type Error = StringError;

    fn try_from(value: String) -> Result<Self, StringError> {
        validate(value.as_bytes())?;
        Ok(Self(Bytes::from(value.into_bytes())))
    }
}

impl PartialEq<str> for MqttString {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for MqttString {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_surrogates_nulls_and_bad_utf8() {
        // U+D800 encoded as if it were a scalar value.
        assert_eq!(
            MqttString::from_bytes(Bytes::from_static(b"\xED\xA0\x80")),
            Err(StringError::InvalidUtf8)
        );
        assert_eq!(MqttString::new("a\0b"), Err(StringError::NullCharacter));
        assert_eq!(
            MqttString::from_bytes(Bytes::from_static(b"\xC0\x80")),
            Err(StringError::InvalidUtf8)
        );
        let long = "x".repeat(65_536);
        assert_eq!(MqttString::new(&long), Err(StringError::TooLong));
    }

    #[test]
    fn keeps_byte_order_mark() {
        let s = MqttString::from_bytes(Bytes::from_static(b"\xEF\xBB\xBFa")).unwrap();
        assert_eq!(s.as_bytes(), b"\xEF\xBB\xBFa");
        assert_eq!(s.as_str().chars().next(), Some('\u{FEFF}'));
    }
}
