//! The fifteen MQTT control packets, shared by protocol levels 4 (3.1.1) and 5 (5.0), and the
//! dispatch that decodes a framed body or encodes a packet for either level.

mod ack;
mod connect;
mod control;
mod publish;
mod subscribe;

use alloc::boxed::Box;
use core::num::NonZeroU16;

use bytes::{BufMut, Bytes, BytesMut};

pub use ack::Ack;
pub use connect::{ConnAck, Connect, Will};
pub use control::{Auth, Disconnect};
pub use publish::{put_with_topic_alias, set_publish_packet_id, Publish, PublishView};
pub use subscribe::{
    FilterList, RetainHandling, SubAck, Subscribe, Subscription, SubscriptionList,
    SubscriptionOptions, UnsubAck, Unsubscribe,
};

use crate::error::{DecodeError, EncodeError};
use crate::reason::ReasonCode;
use crate::wire::{checked_varint, varint_len, Counter, Reader, Sink};

/// The protocol level a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProtocolVersion {
    /// MQTT 3.1 (`MQIsdp`), protocol level 3: spoken as 3.1.1, except that its CONNACK has no
    /// Session Present flag and the flag bits of packets other than PUBLISH are not checked
    /// (3.1 leaves them unused but lets a client set DUP on a PUBREL, SUBSCRIBE or UNSUBSCRIBE it
    /// sends again).
    V31,
    /// MQTT 3.1.1, protocol level 4.
    V311,
    /// MQTT 5.0, protocol level 5.
    V5,
}

impl ProtocolVersion {
    /// The protocol level byte of CONNECT.
    pub fn level(self) -> u8 {
        match self {
            Self::V31 => 3,
            Self::V311 => 4,
            Self::V5 => 5,
        }
    }
}

/// Quality of service of a message or subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum QoS {
    /// QoS 0: at most once.
    #[default]
    AtMostOnce = 0,
    /// QoS 1: at least once.
    AtLeastOnce = 1,
    /// QoS 2: exactly once.
    ExactlyOnce = 2,
}

impl QoS {
    /// The QoS with this value (0, 1 or 2).
    pub fn from_u8(value: u8) -> Option<Self> {
        match value {
            0 => Some(Self::AtMostOnce),
            1 => Some(Self::AtLeastOnce),
            2 => Some(Self::ExactlyOnce),
            _ => None,
        }
    }
}

/// A packet identifier: never 0 (MQTT-2.3.1-1, MQTT-2.2.1-3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PacketId(NonZeroU16);

impl PacketId {
    /// The identifier with this value, unless it is 0.
    pub fn new(value: u16) -> Option<Self> {
        NonZeroU16::new(value).map(Self)
    }

    /// The numeric value.
    pub fn get(self) -> u16 {
        self.0.get()
    }

    fn read(r: &mut Reader) -> Result<Self, DecodeError> {
        Self::new(r.u16()?).ok_or(DecodeError::Protocol("packet identifier of 0"))
    }
}

/// The control packet type, the high nibble of the first byte (table 2-1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(missing_docs)] // The names are the spec's.
pub enum PacketType {
    Connect = 1,
    ConnAck = 2,
    Publish = 3,
    PubAck = 4,
    PubRec = 5,
    PubRel = 6,
    PubComp = 7,
    Subscribe = 8,
    SubAck = 9,
    Unsubscribe = 10,
    UnsubAck = 11,
    PingReq = 12,
    PingResp = 13,
    Disconnect = 14,
    Auth = 15,
}

impl PacketType {
    fn from_nibble(nibble: u8) -> Option<Self> {
        Some(match nibble {
            1 => Self::Connect,
            2 => Self::ConnAck,
            3 => Self::Publish,
            4 => Self::PubAck,
            5 => Self::PubRec,
            6 => Self::PubRel,
            7 => Self::PubComp,
            8 => Self::Subscribe,
            9 => Self::SubAck,
            10 => Self::Unsubscribe,
            11 => Self::UnsubAck,
            12 => Self::PingReq,
            13 => Self::PingResp,
            14 => Self::Disconnect,
            15 => Self::Auth,
            _ => return None,
        })
    }

    /// The fixed flag bits the spec requires for this type (table 2-2); PUBLISH has none fixed.
    fn required_flags(self) -> Option<u8> {
        match self {
            Self::Publish => None,
            Self::PubRel | Self::Subscribe | Self::Unsubscribe => Some(0b0010),
            _ => Some(0),
        }
    }
}

/// An MQTT control packet.
#[derive(Debug, Clone, PartialEq, Eq)]
///
/// CONNECT and CONNACK are boxed: they are large and come once per connection, and keeping
/// them out of line halves the size every PUBLISH is moved around with.
#[allow(missing_docs)] // Each variant is the packet of the same name.
pub enum Packet {
    Connect(Box<Connect>),
    ConnAck(Box<ConnAck>),
    Publish(Publish),
    PubAck(Ack),
    PubRec(Ack),
    PubRel(Ack),
    PubComp(Ack),
    Subscribe(Subscribe),
    SubAck(SubAck),
    Unsubscribe(Unsubscribe),
    UnsubAck(UnsubAck),
    PingReq,
    PingResp,
    Disconnect(Disconnect),
    Auth(Auth),
}

impl Packet {
    /// This packet's type.
    pub fn packet_type(&self) -> PacketType {
        match self {
            Self::Connect(_) => PacketType::Connect,
            Self::ConnAck(_) => PacketType::ConnAck,
            Self::Publish(_) => PacketType::Publish,
            Self::PubAck(_) => PacketType::PubAck,
            Self::PubRec(_) => PacketType::PubRec,
            Self::PubRel(_) => PacketType::PubRel,
            Self::PubComp(_) => PacketType::PubComp,
            Self::Subscribe(_) => PacketType::Subscribe,
            Self::SubAck(_) => PacketType::SubAck,
            Self::Unsubscribe(_) => PacketType::Unsubscribe,
            Self::UnsubAck(_) => PacketType::UnsubAck,
            Self::PingReq => PacketType::PingReq,
            Self::PingResp => PacketType::PingResp,
            Self::Disconnect(_) => PacketType::Disconnect,
            Self::Auth(_) => PacketType::Auth,
        }
    }

    /// Decodes one packet from its first byte and its complete body (the bytes after the
    /// remaining length). A CONNECT is decoded by its own protocol level; every other packet by
    /// `version`.
    pub fn decode(
        first_byte: u8,
        body: Bytes,
        version: ProtocolVersion,
    ) -> Result<Self, DecodeError> {
        let packet_type = PacketType::from_nibble(first_byte >> 4)
            .ok_or(DecodeError::Malformed("reserved packet type 0"))?;
        let flags = first_byte & 0x0F;
        if let Some(required) = packet_type.required_flags() {
            // MQTT 3.1 reserves none of these bits (see `ProtocolVersion::V31`).
            if flags != required && version != ProtocolVersion::V31 {
                return Err(DecodeError::Malformed("reserved flag bits are wrong"));
            }
        }
        let mut r = Reader::new(body);
        let packet = match packet_type {
            PacketType::Connect => Self::Connect(Box::new(Connect::decode(&mut r)?)),
            PacketType::ConnAck => Self::ConnAck(Box::new(ConnAck::decode(&mut r, version)?)),
            // The payload takes the rest of the body, so nothing can be left over.
            PacketType::Publish => return Publish::decode_packet(flags, &mut r, version),
            PacketType::PubAck => Self::PubAck(Ack::decode(&mut r, version, packet_type)?),
            PacketType::PubRec => Self::PubRec(Ack::decode(&mut r, version, packet_type)?),
            PacketType::PubRel => Self::PubRel(Ack::decode(&mut r, version, packet_type)?),
            PacketType::PubComp => Self::PubComp(Ack::decode(&mut r, version, packet_type)?),
            PacketType::Subscribe => Self::Subscribe(Subscribe::decode(&mut r, version)?),
            PacketType::SubAck => Self::SubAck(SubAck::decode(&mut r, version)?),
            PacketType::Unsubscribe => Self::Unsubscribe(Unsubscribe::decode(&mut r, version)?),
            PacketType::UnsubAck => Self::UnsubAck(UnsubAck::decode(&mut r, version)?),
            PacketType::PingReq => Self::PingReq,
            PacketType::PingResp => Self::PingResp,
            PacketType::Disconnect => Self::Disconnect(Disconnect::decode(&mut r, version)?),
            PacketType::Auth => Self::Auth(Auth::decode(&mut r, version)?),
        };
        if !r.is_empty() {
            return Err(DecodeError::Malformed("bytes left over after the packet"));
        }
        Ok(packet)
    }

    fn first_byte(&self) -> u8 {
        let flags = match self {
            Self::Publish(publish) => publish.flags(),
            _ => self.packet_type().required_flags().unwrap_or(0),
        };
        ((self.packet_type() as u8) << 4) | flags
    }

    fn write_body<S: Sink>(&self, version: ProtocolVersion, s: &mut S) -> Result<(), EncodeError> {
        match self {
            Self::Connect(p) => p.encode(s),
            Self::ConnAck(p) => p.encode(version, s),
            Self::Publish(p) => p.encode(version, s),
            Self::PubAck(p) | Self::PubRec(p) | Self::PubRel(p) | Self::PubComp(p) => {
                p.encode(version, s)
            }
            Self::Subscribe(p) => p.encode(version, s),
            Self::SubAck(p) => p.encode(version, s),
            Self::Unsubscribe(p) => p.encode(version, s),
            Self::UnsubAck(p) => p.encode(version, s),
            Self::PingReq | Self::PingResp => Ok(()),
            Self::Disconnect(p) => p.encode(version, s),
            Self::Auth(p) => p.encode(version, s),
        }
    }

    /// Refuses to encode what a receiver would have to reject: a reason code the packet may not
    /// carry, DUP on QoS 0, Topic Alias 0, Maximum QoS 2 in CONNACK.
    fn check_sendable(&self) -> Result<(), EncodeError> {
        let packet_type = self.packet_type();
        let allowed = |code: &ReasonCode| code.allowed_in(packet_type);
        let ok = match self {
            Self::ConnAck(p) => {
                allowed(&p.reason_code) && p.properties.maximum_qos != Some(QoS::ExactlyOnce)
            }
            // A PUBLISH is checked by the view it encodes through.
            Self::Publish(_) => true,
            Self::PubAck(p) | Self::PubRec(p) | Self::PubRel(p) | Self::PubComp(p) => {
                allowed(&p.reason_code)
            }
            Self::SubAck(p) => p.reason_codes.iter().all(allowed),
            Self::UnsubAck(p) => p.reason_codes.iter().all(allowed),
            Self::Disconnect(p) => allowed(&p.reason_code),
            Self::Auth(p) => allowed(&p.reason_code),
            Self::Connect(_) | Self::Subscribe(_) | Self::Unsubscribe(_) => true,
            Self::PingReq | Self::PingResp => true,
        };
        if ok {
            Ok(())
        } else {
            Err(EncodeError::OutOfRange(
                "field value a receiver must reject",
            ))
        }
    }

    fn body_len(&self, version: ProtocolVersion) -> Result<u32, EncodeError> {
        self.check_sendable()?;
        counted_body(|counter| self.write_body(version, counter))
    }

    /// Total encoded size in bytes, fixed header included.
    ///
    /// A CONNECT is encoded at its own protocol level whatever `version` says.
    pub fn encoded_len(&self, version: ProtocolVersion) -> Result<usize, EncodeError> {
        Ok(framed_len(self.body_len(version)?))
    }

    /// Appends the packet's encoding for `version` to `buf`.
    pub fn encode(&self, version: ProtocolVersion, buf: &mut BytesMut) -> Result<(), EncodeError> {
        let body = self.body_len(version)?;
        put_framed(buf, self.first_byte(), body, |buf| {
            self.write_body(version, buf)
        })
    }
}

/// The length of the body `write` writes, as a remaining length.
pub(crate) fn counted_body(
    write: impl FnOnce(&mut Counter) -> Result<(), EncodeError>,
) -> Result<u32, EncodeError> {
    let mut counter = Counter::default();
    write(&mut counter)?;
    checked_varint(counter.0)
}

/// The size of a packet whose body is `body` bytes, fixed header included.
pub(crate) fn framed_len(body: u32) -> usize {
    1 + varint_len(body) + body as usize
}

/// Appends a packet to `buf`: its first byte, the remaining length `body`, and the body that
/// `write_body` writes (which must be `body` bytes).
pub(crate) fn put_framed(
    buf: &mut BytesMut,
    first_byte: u8,
    body: u32,
    write_body: impl FnOnce(&mut BytesMut) -> Result<(), EncodeError>,
) -> Result<(), EncodeError> {
    buf.reserve(framed_len(body));
    let start = buf.len();
    BufMut::put_u8(buf, first_byte);
    Sink::put_varint(buf, body);
    write_body(buf)?;
    debug_assert_eq!(buf.len() - start, framed_len(body));
    Ok(())
}

/// Reads a reason code and checks that the spec allows it in this packet type.
fn read_reason(r: &mut Reader, packet: PacketType) -> Result<ReasonCode, DecodeError> {
    ReasonCode::from_u8(r.u8()?)
        .filter(|code| code.allowed_in(packet))
        .ok_or(DecodeError::Protocol(
            "reason code not allowed in this packet",
        ))
}

/// Requires MQTT 5 for a packet type that 3.1.1 reserves (AUTH).
fn require_v5(version: ProtocolVersion) -> Result<(), DecodeError> {
    match version {
        ProtocolVersion::V5 => Ok(()),
        ProtocolVersion::V31 | ProtocolVersion::V311 => {
            Err(DecodeError::Malformed("AUTH does not exist before MQTT 5"))
        }
    }
}
