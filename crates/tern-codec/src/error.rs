//! Typed decode and encode errors; every decode error names the reason code a peer is answered with.

use crate::reason::ReasonCode;

/// Why a byte sequence is not an acceptable MQTT packet.
///
/// The detail strings are static so that decoding never allocates for an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The bytes do not follow the packet grammar (answer 0x81 Malformed Packet).
    #[error("malformed packet: {0}")]
    Malformed(&'static str),
    /// The bytes parse but break a protocol rule (answer 0x82 Protocol Error).
    #[error("protocol error: {0}")]
    Protocol(&'static str),
    /// The fixed header declares a packet larger than the configured maximum (answer 0x95).
    #[error("packet of {size} bytes exceeds the maximum packet size of {max} bytes")]
    PacketTooLarge {
        /// Total packet size declared by the fixed header, in bytes.
        size: usize,
        /// The configured maximum, in bytes.
        max: u32,
    },
    /// CONNECT asks for a protocol level this codec does not speak (answer 0x84, or 0x01 in 3.1.1).
    #[error("unsupported protocol level {0}")]
    UnsupportedProtocolVersion(u8),
    /// A topic name breaks the topic name rules (answer 0x90 Topic Name invalid).
    #[error("invalid topic name: {0}")]
    TopicNameInvalid(&'static str),
    /// A PUBLISH carries Topic Alias 0 (answer 0x94 Topic Alias invalid, 3.3.2.3.4).
    #[error("invalid topic alias: {0}")]
    TopicAliasInvalid(&'static str),
    /// A topic filter breaks the topic filter rules (answer 0x8F Topic Filter invalid).
    #[error("invalid topic filter: {0}")]
    TopicFilterInvalid(&'static str),
}

impl DecodeError {
    /// The MQTT 5 reason code a server or client answers this error with.
    pub fn reason_code(&self) -> ReasonCode {
        match self {
            Self::Malformed(_) => ReasonCode::MalformedPacket,
            Self::Protocol(_) => ReasonCode::ProtocolError,
            Self::PacketTooLarge { .. } => ReasonCode::PacketTooLarge,
            Self::UnsupportedProtocolVersion(_) => ReasonCode::UnsupportedProtocolVersion,
            Self::TopicNameInvalid(_) => ReasonCode::TopicNameInvalid,
            Self::TopicFilterInvalid(_) => ReasonCode::TopicFilterInvalid,
            Self::TopicAliasInvalid(_) => ReasonCode::TopicAliasInvalid,
        }
    }
}

/// Why a value cannot be encoded as an MQTT packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// Binary data (password, correlation data, will payload) longer than 65,535 bytes.
    #[error("binary field of {0} bytes exceeds 65535")]
    BinaryTooLong(usize),
    /// The packet would exceed the largest remaining length MQTT can express (268,435,455).
    #[error("packet body of {0} bytes exceeds the MQTT limit")]
    PacketTooLarge(usize),
    /// QoS and packet identifier disagree (QoS 0 with an identifier, or QoS 1/2 without).
    #[error("packet identifier must be present exactly when QoS > 0")]
    PacketIdMismatch,
    /// The packet does not exist in the requested protocol version (AUTH in 3.1.1).
    #[error("packet type not available in this protocol version")]
    NotInVersion,
    /// A list that must not be empty (SUBSCRIBE filters, UNSUBSCRIBE filters) is empty.
    #[error("packet requires at least one topic filter")]
    EmptyList,
    /// A value does not fit the field that carries it (e.g. a subscription identifier above 268,435,455).
    #[error("value out of range: {0}")]
    OutOfRange(&'static str),
}
