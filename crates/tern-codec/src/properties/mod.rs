//! MQTT 5.0 properties (spec table 2-4): identifiers, one typed block per packet kind, and the
//! repeated properties (User Property, Subscription Identifier) kept in their wire form.
//!
//! Decoding rejects unknown identifiers and properties not valid for the packet (0x81 Malformed
//! Packet, section 2.2.2.2) and duplicates of single-valued properties (0x82 Protocol Error).

use bytes::Bytes;

use crate::error::{DecodeError, EncodeError};
use crate::packet::QoS;
use crate::string::MqttString;
use crate::topic::TopicName;
use crate::wire::{Counter, Reader, Sink, VARINT_MAX};

mod message;
mod order;
mod repeated;

pub use message::{PublishProperties, WillProperties};
pub use order::PropertyOrder;
use repeated::RunCollector;
pub use repeated::{SubscriptionIds, UserProperties};

/// A property identifier from MQTT 5.0 table 2-4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
#[allow(missing_docs)] // The names are the spec's.
pub enum PropertyId {
    PayloadFormatIndicator = 0x01,
    MessageExpiryInterval = 0x02,
    ContentType = 0x03,
    ResponseTopic = 0x08,
    CorrelationData = 0x09,
    SubscriptionIdentifier = 0x0B,
    SessionExpiryInterval = 0x11,
    AssignedClientIdentifier = 0x12,
    ServerKeepAlive = 0x13,
    AuthenticationMethod = 0x15,
    AuthenticationData = 0x16,
    RequestProblemInformation = 0x17,
    WillDelayInterval = 0x18,
    RequestResponseInformation = 0x19,
    ResponseInformation = 0x1A,
    ServerReference = 0x1C,
    ReasonString = 0x1F,
    ReceiveMaximum = 0x21,
    TopicAliasMaximum = 0x22,
    TopicAlias = 0x23,
    MaximumQos = 0x24,
    RetainAvailable = 0x25,
    UserProperty = 0x26,
    MaximumPacketSize = 0x27,
    WildcardSubscriptionAvailable = 0x28,
    SubscriptionIdentifierAvailable = 0x29,
    SharedSubscriptionAvailable = 0x2A,
}

impl PropertyId {
    /// Every property identifier, ascending.
    pub const ALL: &'static [Self] = &[
        Self::PayloadFormatIndicator,
        Self::MessageExpiryInterval,
        Self::ContentType,
        Self::ResponseTopic,
        Self::CorrelationData,
        Self::SubscriptionIdentifier,
        Self::SessionExpiryInterval,
        Self::AssignedClientIdentifier,
        Self::ServerKeepAlive,
        Self::AuthenticationMethod,
        Self::AuthenticationData,
        Self::RequestProblemInformation,
        Self::WillDelayInterval,
        Self::RequestResponseInformation,
        Self::ResponseInformation,
        Self::ServerReference,
        Self::ReasonString,
        Self::ReceiveMaximum,
        Self::TopicAliasMaximum,
        Self::TopicAlias,
        Self::MaximumQos,
        Self::RetainAvailable,
        Self::UserProperty,
        Self::MaximumPacketSize,
        Self::WildcardSubscriptionAvailable,
        Self::SubscriptionIdentifierAvailable,
        Self::SharedSubscriptionAvailable,
    ];

    /// The identifier with this value, if the spec defines one.
    pub fn from_u32(value: u32) -> Option<Self> {
        Self::ALL.iter().copied().find(|id| *id as u32 == value)
    }
}

/// The Payload Format Indicator (3.3.2.3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PayloadFormat {
    /// 0: unspecified bytes.
    Unspecified = 0,
    /// 1: UTF-8 encoded character data.
    Utf8 = 1,
}

/// Reads a property block: its length, then each property handed to `on` with the reader
/// positioned after the identifier and the offset where the property began.
fn read_block(
    r: &mut Reader,
    mut on: impl FnMut(PropertyId, &mut Reader, usize) -> Result<(), DecodeError>,
) -> Result<Reader, DecodeError> {
    let len = r.varint()?;
    let mut block = r.sub(len as usize)?;
    while !block.is_empty() {
        let start = block.position();
        let raw = block.varint()?;
        let id = PropertyId::from_u32(raw).ok_or(DecodeError::Malformed("unknown property"))?;
        on(id, &mut block, start)?;
    }
    Ok(block)
}

fn once<T>(slot: &mut Option<T>, value: T) -> Result<(), DecodeError> {
    if slot.is_some() {
        return Err(DecodeError::Protocol("property included more than once"));
    }
    *slot = Some(value);
    Ok(())
}

fn skip_pair(block: &mut Reader) -> Result<(), DecodeError> {
    block.string()?;
    block.string()?;
    Ok(())
}

fn read_flag(r: &mut Reader) -> Result<bool, DecodeError> {
    match r.u8()? {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(DecodeError::Protocol("property value must be 0 or 1")),
    }
}

fn read_nonzero_u16(r: &mut Reader) -> Result<u16, DecodeError> {
    match r.u16()? {
        0 => Err(DecodeError::Protocol("property value must not be 0")),
        v => Ok(v),
    }
}

fn read_nonzero_u32(r: &mut Reader) -> Result<u32, DecodeError> {
    match r.u32()? {
        0 => Err(DecodeError::Protocol("property value must not be 0")),
        v => Ok(v),
    }
}

fn read_subscription_id(r: &mut Reader) -> Result<u32, DecodeError> {
    match r.varint()? {
        0 => Err(DecodeError::Protocol("subscription identifier of 0")),
        v => Ok(v),
    }
}

fn read_payload_format(r: &mut Reader) -> Result<PayloadFormat, DecodeError> {
    Ok(if read_flag(r)? {
        PayloadFormat::Utf8
    } else {
        PayloadFormat::Unspecified
    })
}

fn read_max_qos(r: &mut Reader) -> Result<QoS, DecodeError> {
    Ok(if read_flag(r)? {
        QoS::AtLeastOnce
    } else {
        QoS::AtMostOnce
    })
}

fn read_topic(r: &mut Reader) -> Result<TopicName, DecodeError> {
    TopicName::new(r.string()?)
}

/// Writes a property block: its length as a variable byte integer, then its fields.
pub(crate) fn put_block<S: Sink>(
    s: &mut S,
    write: impl Fn(&mut dyn Sink) -> Result<(), EncodeError>,
) -> Result<(), EncodeError> {
    let mut counter = Counter::default();
    write(&mut counter)?;
    let len = crate::wire::checked_varint(counter.0)?;
    s.put_varint(len);
    write(s)
}

// Sink must be usable as a trait object for the block writers above.
impl Sink for &mut dyn Sink {
    fn put_u8(&mut self, value: u8) {
        (**self).put_u8(value);
    }

    fn put_slice(&mut self, bytes: &[u8]) {
        (**self).put_slice(bytes);
    }
}

macro_rules! kind_type {
    (flag) => {
        bool
    };
    (u16) => {
        u16
    };
    (nonzero_u16) => {
        u16
    };
    (u32) => {
        u32
    };
    (nonzero_u32) => {
        u32
    };
    (subscription_id) => {
        u32
    };
    (string) => {
        MqttString
    };
    (topic) => {
        TopicName
    };
    (binary) => {
        Bytes
    };
    (payload_format) => {
        PayloadFormat
    };
    (max_qos) => {
        QoS
    };
}

macro_rules! read_kind {
    (flag, $r:expr) => {
        read_flag($r)
    };
    (u16, $r:expr) => {
        $r.u16()
    };
    (nonzero_u16, $r:expr) => {
        read_nonzero_u16($r)
    };
    (u32, $r:expr) => {
        $r.u32()
    };
    (nonzero_u32, $r:expr) => {
        read_nonzero_u32($r)
    };
    (subscription_id, $r:expr) => {
        read_subscription_id($r)
    };
    (string, $r:expr) => {
        $r.string()
    };
    (topic, $r:expr) => {
        read_topic($r)
    };
    (binary, $r:expr) => {
        $r.binary()
    };
    (payload_format, $r:expr) => {
        read_payload_format($r)
    };
    (max_qos, $r:expr) => {
        read_max_qos($r)
    };
}

macro_rules! write_kind {
    (flag, $s:expr, $v:expr) => {
        $s.put_u8(u8::from(*$v))
    };
    (u16, $s:expr, $v:expr) => {
        $s.put_u16(*$v)
    };
    (nonzero_u16, $s:expr, $v:expr) => {
        $s.put_u16(*$v)
    };
    (u32, $s:expr, $v:expr) => {
        $s.put_u32(*$v)
    };
    (nonzero_u32, $s:expr, $v:expr) => {
        $s.put_u32(*$v)
    };
    (subscription_id, $s:expr, $v:expr) => {{
        if *$v == 0 || *$v > VARINT_MAX {
            return Err(EncodeError::OutOfRange("subscription identifier"));
        }
        $s.put_varint(*$v)
    }};
    (string, $s:expr, $v:expr) => {
        $s.put_string($v)
    };
    (topic, $s:expr, $v:expr) => {
        $s.put_string($v.as_mqtt_str())
    };
    (binary, $s:expr, $v:expr) => {
        $s.put_binary($v)?
    };
    (payload_format, $s:expr, $v:expr) => {
        $s.put_u8(*$v as u8)
    };
    (max_qos, $s:expr, $v:expr) => {
        $s.put_u8(*$v as u8)
    };
}

macro_rules! property_block {
    (
        $(#[$doc:meta])*
        $name:ident, $packet:literal {
            $( $(#[$fdoc:meta])* $field:ident : $id:ident as $kind:ident ),* $(,)?
        }
    ) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Default, PartialEq, Eq)]
        pub struct $name {
            $( $(#[$fdoc])* pub $field: Option<kind_type!($kind)>, )*
            /// User properties, in order.
            pub user_properties: UserProperties,
        }

        impl $name {
            pub(crate) fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
                let mut props = Self::default();
                let mut users = RunCollector::default();
                let block = read_block(r, |id, block, start| {
                    match id {
                        $( PropertyId::$id => once(&mut props.$field, read_kind!($kind, block)?)?, )*
                        PropertyId::UserProperty => {
                            skip_pair(block)?;
                            users.push(block, start);
                        }
                        _ => {
                            return Err(DecodeError::Malformed(concat!(
                                "property not allowed in ", $packet
                            )))
                        }
                    }
                    Ok(())
                })?;
                let users = users.finish(&block, PropertyId::UserProperty);
                props.user_properties = UserProperties(users);
                Ok(props)
            }

            pub(crate) fn write_fields(&self, s: &mut dyn Sink) -> Result<(), EncodeError> {
                $(
                    if let Some(value) = &self.$field {
                        s.put_u8(PropertyId::$id as u8);
                        write_kind!($kind, s, value);
                    }
                )*
                s.put_slice(self.user_properties.raw());
                Ok(())
            }

            pub(crate) fn encode<S: Sink>(&self, s: &mut S) -> Result<(), EncodeError> {
                put_block(s, |s| self.write_fields(s))
            }

            /// Whether no property is set.
            pub fn is_empty(&self) -> bool {
                $( self.$field.is_none() && )* self.user_properties.is_empty()
            }
        }
    };
}

property_block! {
    /// Properties of CONNECT (3.1.2.11).
    ConnectProperties, "CONNECT" {
        /// Seconds the session outlives the connection; absent means 0.
        session_expiry_interval: SessionExpiryInterval as u32,
        /// The client's limit on concurrent QoS 1/2 deliveries to it; never 0.
        receive_maximum: ReceiveMaximum as nonzero_u16,
        /// Largest packet the client accepts, in bytes; never 0.
        maximum_packet_size: MaximumPacketSize as nonzero_u32,
        /// Highest topic alias the client accepts from the server.
        topic_alias_maximum: TopicAliasMaximum as u16,
        /// Whether the client wants Response Information in CONNACK.
        request_response_information: RequestResponseInformation as flag,
        /// Whether the server may send reason strings and user properties on failures.
        request_problem_information: RequestProblemInformation as flag,
        /// Extended authentication method.
        authentication_method: AuthenticationMethod as string,
        /// Extended authentication data.
        authentication_data: AuthenticationData as binary,
    }
}

property_block! {
    /// Properties of CONNACK (3.2.2.3).
    ConnAckProperties, "CONNACK" {
        /// Session expiry the server chose, when it differs from the client's.
        session_expiry_interval: SessionExpiryInterval as u32,
        /// The server's limit on concurrent QoS 1/2 publishes from the client; never 0.
        receive_maximum: ReceiveMaximum as nonzero_u16,
        /// Highest QoS the server accepts (0 or 1; absent means 2).
        maximum_qos: MaximumQos as max_qos,
        /// Whether the server supports retained messages.
        retain_available: RetainAvailable as flag,
        /// Largest packet the server accepts, in bytes.
        maximum_packet_size: MaximumPacketSize as nonzero_u32,
        /// Client identifier the server assigned to a client that sent an empty one.
        assigned_client_identifier: AssignedClientIdentifier as string,
        /// Highest topic alias the server accepts from the client.
        topic_alias_maximum: TopicAliasMaximum as u16,
        /// Human-readable diagnostic.
        reason_string: ReasonString as string,
        /// Whether wildcard subscriptions are supported.
        wildcard_subscription_available: WildcardSubscriptionAvailable as flag,
        /// Whether subscription identifiers are supported.
        subscription_identifiers_available: SubscriptionIdentifierAvailable as flag,
        /// Whether shared subscriptions are supported.
        shared_subscription_available: SharedSubscriptionAvailable as flag,
        /// Keep alive the client must use instead of its own, in seconds.
        server_keep_alive: ServerKeepAlive as u16,
        /// Basis for response topics, when requested.
        response_information: ResponseInformation as string,
        /// Another server for the client to use.
        server_reference: ServerReference as string,
        /// Extended authentication method.
        authentication_method: AuthenticationMethod as string,
        /// Extended authentication data.
        authentication_data: AuthenticationData as binary,
    }
}

property_block! {
    /// Properties of PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK and UNSUBACK.
    AckProperties, "acknowledgement" {
        /// Human-readable diagnostic.
        reason_string: ReasonString as string,
    }
}

property_block! {
    /// Properties of SUBSCRIBE (3.8.2.1).
    SubscribeProperties, "SUBSCRIBE" {
        /// Identifier echoed in every PUBLISH this subscription delivers; never 0.
        subscription_identifier: SubscriptionIdentifier as subscription_id,
    }
}

property_block! {
    /// Properties of UNSUBSCRIBE (3.10.2.1): user properties only.
    UnsubscribeProperties, "UNSUBSCRIBE" {}
}

property_block! {
    /// Properties of DISCONNECT (3.14.2.2).
    DisconnectProperties, "DISCONNECT" {
        /// New session expiry, sent by a client.
        session_expiry_interval: SessionExpiryInterval as u32,
        /// Human-readable diagnostic.
        reason_string: ReasonString as string,
        /// Another server for the client to use.
        server_reference: ServerReference as string,
    }
}

property_block! {
    /// Properties of AUTH (3.15.2.2).
    AuthProperties, "AUTH" {
        /// Extended authentication method.
        authentication_method: AuthenticationMethod as string,
        /// Extended authentication data.
        authentication_data: AuthenticationData as binary,
        /// Human-readable diagnostic.
        reason_string: ReasonString as string,
    }
}
