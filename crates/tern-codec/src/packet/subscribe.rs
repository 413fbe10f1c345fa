//! SUBSCRIBE, SUBACK, UNSUBSCRIBE and UNSUBACK (3.8-3.11).
//!
//! Filter lists stay in their validated wire form: decoding allocates nothing per filter, and
//! iteration hands out filters that share the frame's bytes.

use alloc::vec::Vec;

use bytes::{Bytes, BytesMut};

use super::{PacketId, PacketType, ProtocolVersion, QoS};
use crate::error::{DecodeError, EncodeError};
use crate::properties::{AckProperties, SubscribeProperties, UnsubscribeProperties};
use crate::reason::ReasonCode;
use crate::topic::TopicFilter;
use crate::wire::{Reader, Sink};

/// When retained messages are sent for a new subscription (3.8.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RetainHandling {
    /// 0: send retained messages at the time of the subscribe.
    #[default]
    SendAtSubscribe = 0,
    /// 1: send them only if the subscription did not already exist.
    SendIfNew = 1,
    /// 2: do not send them.
    DoNotSend = 2,
}

/// The options byte of a subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SubscriptionOptions {
    /// Maximum QoS the server may deliver with.
    pub qos: QoS,
    /// Do not deliver the client's own publishes back to it (MQTT 5).
    pub no_local: bool,
    /// Keep the RETAIN flag as published when forwarding (MQTT 5).
    pub retain_as_published: bool,
    /// When to send retained messages (MQTT 5).
    pub retain_handling: RetainHandling,
}

impl SubscriptionOptions {
    /// Options with this QoS and everything else at its default.
    pub fn qos(qos: QoS) -> Self {
        Self {
            qos,
            ..Self::default()
        }
    }

    fn to_byte(self, version: ProtocolVersion) -> u8 {
        let mut byte = self.qos as u8;
        if version == ProtocolVersion::V5 {
            byte |= u8::from(self.no_local) << 2;
            byte |= u8::from(self.retain_as_published) << 3;
            byte |= (self.retain_handling as u8) << 4;
        }
        byte
    }

    fn from_byte(byte: u8, version: ProtocolVersion) -> Result<Self, DecodeError> {
        let reserved = match version {
            ProtocolVersion::V31 | ProtocolVersion::V311 => 0xFC,
            ProtocolVersion::V5 => 0xC0,
        };
        if byte & reserved != 0 {
            return Err(DecodeError::Malformed(
                "subscription options reserved bits are set",
            ));
        }
        // QoS 3 is malformed in 3.1.1 (MQTT-3.8.3-4) but a Protocol Error in 5.0 (3.8.3.1).
        let qos = QoS::from_u8(byte & 0x03).ok_or(match version {
            ProtocolVersion::V31 | ProtocolVersion::V311 => {
                DecodeError::Malformed("subscription QoS of 3")
            }
            ProtocolVersion::V5 => DecodeError::Protocol("subscription QoS of 3"),
        })?;
        let retain_handling = match (byte >> 4) & 0x03 {
            0 => RetainHandling::SendAtSubscribe,
            1 => RetainHandling::SendIfNew,
            2 => RetainHandling::DoNotSend,
            _ => return Err(DecodeError::Protocol("retain handling of 3")),
        };
        Ok(Self {
            qos,
            no_local: byte & 0x04 != 0,
            retain_as_published: byte & 0x08 != 0,
            retain_handling,
        })
    }
}

/// One topic filter with its options.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Subscription {
    /// The topic filter.
    pub filter: TopicFilter,
    /// Its options.
    pub options: SubscriptionOptions,
}

/// The payload of SUBSCRIBE: filter and options pairs, in order, in validated wire form.
///
/// The options bytes are stored as MQTT 5 encodes them; 3.1.1 encoding drops the bits it lacks.
#[derive(Clone, PartialEq, Eq)]
pub struct SubscriptionList(Bytes);

impl SubscriptionList {
    /// Builds the list; it must not be empty to be encoded.
    pub fn new<'a>(subscriptions: impl IntoIterator<Item = &'a Subscription>) -> Self {
        let mut buf = BytesMut::new();
        for sub in subscriptions {
            buf.put_string(sub.filter.as_mqtt_str());
            buf.put_u8(sub.options.to_byte(ProtocolVersion::V5));
        }
        Self(buf.freeze())
    }

    /// The subscriptions, in order.
    pub fn iter(&self) -> impl Iterator<Item = Subscription> + '_ {
        let mut r = Reader::new(self.0.clone());
        core::iter::from_fn(move || {
            if r.is_empty() {
                return None;
            }
            // Validated on construction; an error here would be a bug, so stop quietly.
            let filter = TopicFilter::new(r.string().ok()?).ok()?;
            let options = SubscriptionOptions::from_byte(r.u8().ok()?, ProtocolVersion::V5).ok()?;
            Some(Subscription { filter, options })
        })
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn decode(r: &mut Reader, version: ProtocolVersion) -> Result<Self, DecodeError> {
        let payload = r.rest();
        if payload.is_empty() {
            return Err(DecodeError::Protocol("SUBSCRIBE without topic filters"));
        }
        let mut items = Reader::new(payload.clone());
        while !items.is_empty() {
            let filter = TopicFilter::new(items.string()?)?;
            let options = SubscriptionOptions::from_byte(items.u8()?, version)?;
            if filter.is_shared() && options.no_local {
                return Err(DecodeError::Protocol("No Local on a shared subscription"));
            }
        }
        // A 3.1.1 options byte has only its QoS bits set, so it is already a valid MQTT 5 byte.
        Ok(Self(payload))
    }

    fn encode<S: Sink>(&self, version: ProtocolVersion, s: &mut S) {
        match version {
            ProtocolVersion::V5 => s.put_slice(&self.0),
            ProtocolVersion::V31 | ProtocolVersion::V311 => {
                for sub in self.iter() {
                    s.put_string(sub.filter.as_mqtt_str());
                    s.put_u8(sub.options.to_byte(version));
                }
            }
        }
    }
}

impl core::fmt::Debug for SubscriptionList {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// SUBSCRIBE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    /// Packet identifier, echoed in SUBACK.
    pub packet_id: PacketId,
    /// Subscription identifier and user properties (MQTT 5 only).
    pub properties: SubscribeProperties,
    /// The filters and their options; at least one.
    pub subscriptions: SubscriptionList,
}

impl Subscribe {
    pub(super) fn decode(r: &mut Reader, version: ProtocolVersion) -> Result<Self, DecodeError> {
        let packet_id = PacketId::read(r)?;
        let properties = match version {
            ProtocolVersion::V5 => SubscribeProperties::decode(r)?,
            ProtocolVersion::V31 | ProtocolVersion::V311 => SubscribeProperties::default(),
        };
        let subscriptions = SubscriptionList::decode(r, version)?;
        Ok(Self {
            packet_id,
            properties,
            subscriptions,
        })
    }

    pub(super) fn encode<S: Sink>(
        &self,
        version: ProtocolVersion,
        s: &mut S,
    ) -> Result<(), EncodeError> {
        if self.subscriptions.is_empty() {
            return Err(EncodeError::EmptyList);
        }
        s.put_u16(self.packet_id.get());
        if version == ProtocolVersion::V5 {
            self.properties.encode(s)?;
        }
        self.subscriptions.encode(version, s);
        Ok(())
    }
}

/// The payload of UNSUBSCRIBE: topic filters, in order, in validated wire form.
#[derive(Clone, PartialEq, Eq)]
pub struct FilterList(Bytes);

impl FilterList {
    /// Builds the list; it must not be empty to be encoded.
    pub fn new<'a>(filters: impl IntoIterator<Item = &'a TopicFilter>) -> Self {
        let mut buf = BytesMut::new();
        for filter in filters {
            buf.put_string(filter.as_mqtt_str());
        }
        Self(buf.freeze())
    }

    /// The filters, in order.
    pub fn iter(&self) -> impl Iterator<Item = TopicFilter> + '_ {
        let mut r = Reader::new(self.0.clone());
        core::iter::from_fn(move || {
            if r.is_empty() {
                return None;
            }
            TopicFilter::new(r.string().ok()?).ok()
        })
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        let payload = r.rest();
        if payload.is_empty() {
            return Err(DecodeError::Protocol("UNSUBSCRIBE without topic filters"));
        }
        let mut items = Reader::new(payload.clone());
        while !items.is_empty() {
            TopicFilter::new(items.string()?)?;
        }
        Ok(Self(payload))
    }
}

impl core::fmt::Debug for FilterList {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// UNSUBSCRIBE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsubscribe {
    /// Packet identifier, echoed in UNSUBACK.
    pub packet_id: PacketId,
    /// User properties (MQTT 5 only).
    pub properties: UnsubscribeProperties,
    /// The filters to remove; at least one.
    pub filters: FilterList,
}

impl Unsubscribe {
    pub(super) fn decode(r: &mut Reader, version: ProtocolVersion) -> Result<Self, DecodeError> {
        let packet_id = PacketId::read(r)?;
        let properties = match version {
            ProtocolVersion::V5 => UnsubscribeProperties::decode(r)?,
            ProtocolVersion::V31 | ProtocolVersion::V311 => UnsubscribeProperties::default(),
        };
        let filters = FilterList::decode(r)?;
        Ok(Self {
            packet_id,
            properties,
            filters,
        })
    }

    pub(super) fn encode<S: Sink>(
        &self,
        version: ProtocolVersion,
        s: &mut S,
    ) -> Result<(), EncodeError> {
        if self.filters.is_empty() {
            return Err(EncodeError::EmptyList);
        }
        s.put_u16(self.packet_id.get());
        if version == ProtocolVersion::V5 {
            self.properties.encode(s)?;
        }
        s.put_slice(&self.filters.0);
        Ok(())
    }
}

/// SUBACK: one reason code per requested filter, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubAck {
    /// The SUBSCRIBE's packet identifier.
    pub packet_id: PacketId,
    /// Reason string and user properties (MQTT 5 only).
    pub properties: AckProperties,
    /// Granted QoS or failure, per filter (3.1.1 failures all encode as 0x80).
    pub reason_codes: Vec<ReasonCode>,
}

impl SubAck {
    pub(super) fn decode(r: &mut Reader, version: ProtocolVersion) -> Result<Self, DecodeError> {
        let packet_id = PacketId::read(r)?;
        let properties = match version {
            ProtocolVersion::V5 => AckProperties::decode(r)?,
            ProtocolVersion::V31 | ProtocolVersion::V311 => AckProperties::default(),
        };
        let reason_codes = read_reason_list(r, PacketType::SubAck, version)?;
        if reason_codes.is_empty() {
            return Err(DecodeError::Protocol("SUBACK without reason codes"));
        }
        Ok(Self {
            packet_id,
            properties,
            reason_codes,
        })
    }

    pub(super) fn encode<S: Sink>(
        &self,
        version: ProtocolVersion,
        s: &mut S,
    ) -> Result<(), EncodeError> {
        s.put_u16(self.packet_id.get());
        match version {
            ProtocolVersion::V5 => {
                self.properties.encode(s)?;
                self.reason_codes
                    .iter()
                    .for_each(|code| s.put_u8(code.as_u8()));
            }
            ProtocolVersion::V31 | ProtocolVersion::V311 => {
                self.reason_codes
                    .iter()
                    .for_each(|code| s.put_u8(code.to_v3_suback()));
            }
        }
        Ok(())
    }
}

/// UNSUBACK: in MQTT 5, one reason code per filter; in 3.1.1 only the packet identifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsubAck {
    /// The UNSUBSCRIBE's packet identifier.
    pub packet_id: PacketId,
    /// Reason string and user properties (MQTT 5 only).
    pub properties: AckProperties,
    /// Outcome per filter (MQTT 5 only; empty in 3.1.1).
    pub reason_codes: Vec<ReasonCode>,
}

impl UnsubAck {
    pub(super) fn decode(r: &mut Reader, version: ProtocolVersion) -> Result<Self, DecodeError> {
        let packet_id = PacketId::read(r)?;
        let (properties, reason_codes) = match version {
            ProtocolVersion::V5 => {
                let properties = AckProperties::decode(r)?;
                let codes = read_reason_list(r, PacketType::UnsubAck, version)?;
                if codes.is_empty() {
                    return Err(DecodeError::Protocol("UNSUBACK without reason codes"));
                }
                (properties, codes)
            }
            ProtocolVersion::V31 | ProtocolVersion::V311 => (AckProperties::default(), Vec::new()),
        };
        Ok(Self {
            packet_id,
            properties,
            reason_codes,
        })
    }

    pub(super) fn encode<S: Sink>(
        &self,
        version: ProtocolVersion,
        s: &mut S,
    ) -> Result<(), EncodeError> {
        s.put_u16(self.packet_id.get());
        if version == ProtocolVersion::V5 {
            if self.reason_codes.is_empty() {
                return Err(EncodeError::EmptyList);
            }
            self.properties.encode(s)?;
            self.reason_codes
                .iter()
                .for_each(|code| s.put_u8(code.as_u8()));
        }
        Ok(())
    }
}

/// Reads the reason codes that fill the rest of a SUBACK or UNSUBACK.
fn read_reason_list(
    r: &mut Reader,
    packet: PacketType,
    version: ProtocolVersion,
) -> Result<Vec<ReasonCode>, DecodeError> {
    let bytes = r.rest();
    // One code per byte: reserving exactly avoids regrowing (and over-allocating) the list.
    let mut codes = Vec::with_capacity(bytes.len());
    for &byte in bytes.iter() {
        let code = match version {
            ProtocolVersion::V31 | ProtocolVersion::V311 => match byte {
                0x00..=0x02 | 0x80 => ReasonCode::from_u8(byte),
                _ => None,
            },
            ProtocolVersion::V5 => ReasonCode::from_u8(byte).filter(|c| c.allowed_in(packet)),
        };
        codes.push(code.ok_or(DecodeError::Protocol(
            "reason code not allowed in this packet",
        ))?);
    }
    Ok(codes)
}
