//! PUBLISH (3.3): the one packet on the hot path; decoding slices topic and payload out of the
//! frame without copying.

use bytes::{Bytes, BytesMut};

use super::{
    counted_body, framed_len, put_framed, Packet, PacketId, PacketType, ProtocolVersion, QoS,
};
use crate::error::{DecodeError, EncodeError};
use crate::properties::{PublishProperties, SubscriptionIds};
use crate::topic::TopicName;
use crate::wire::{Reader, Sink};

/// PUBLISH: an application message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// Whether this may be a re-delivery of an earlier attempt.
    pub dup: bool,
    /// Delivery QoS.
    pub qos: QoS,
    /// Whether the message is, or was, retained.
    pub retain: bool,
    /// Topic name; empty only when a topic alias stands for it (MQTT 5).
    pub topic: TopicName,
    /// Present exactly when QoS > 0.
    pub packet_id: Option<PacketId>,
    /// PUBLISH properties (MQTT 5 only).
    pub properties: PublishProperties,
    /// The application payload, shared with the buffer it was read from.
    pub payload: Bytes,
}

impl Publish {
    /// A QoS 0 message with no properties.
    pub fn new(topic: TopicName, payload: Bytes) -> Self {
        Self {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic,
            packet_id: None,
            properties: PublishProperties::default(),
            payload,
        }
    }

    pub(super) fn flags(&self) -> u8 {
        flags(self.dup, self.qos, self.retain)
    }

    /// Decodes a PUBLISH body straight into a [`Packet`].
    ///
    /// The packet is built in its final place and the property block is decoded into it, so the
    /// hot path does not move a PUBLISH through several `Result`s.
    pub(super) fn decode_packet(
        flags: u8,
        r: &mut Reader,
        version: ProtocolVersion,
    ) -> Result<Packet, DecodeError> {
        let qos =
            QoS::from_u8((flags >> 1) & 0x03).ok_or(DecodeError::Malformed("PUBLISH QoS of 3"))?;
        let dup = flags & 0x08 != 0;
        if dup && qos == QoS::AtMostOnce {
            return Err(DecodeError::Malformed("DUP set on a QoS 0 PUBLISH"));
        }
        let topic = TopicName::decode(r.binary()?)?;
        let packet_id = match qos {
            QoS::AtMostOnce => None,
            QoS::AtLeastOnce | QoS::ExactlyOnce => Some(PacketId::read(r)?),
        };
        let mut packet = Packet::Publish(Self {
            dup,
            qos,
            retain: flags & 0x01 != 0,
            topic,
            packet_id,
            properties: PublishProperties::default(),
            payload: Bytes::new(),
        });
        let Packet::Publish(publish) = &mut packet else {
            unreachable!("constructed as a PUBLISH just above");
        };
        if version == ProtocolVersion::V5 {
            publish.properties.decode_into(r)?;
        }
        if publish.topic.is_empty() && publish.properties.topic_alias.is_none() {
            return Err(match version {
                ProtocolVersion::V5 => {
                    DecodeError::Protocol("empty topic name without a topic alias")
                }
                ProtocolVersion::V31 | ProtocolVersion::V311 => {
                    DecodeError::TopicNameInvalid("topic name is empty")
                }
            });
        }
        publish.payload = r.rest();
        Ok(packet)
    }

    pub(super) fn encode<S: Sink>(
        &self,
        version: ProtocolVersion,
        s: &mut S,
    ) -> Result<(), EncodeError> {
        self.view().write_body(version, s)
    }

    /// This PUBLISH as a view, to encode as it stands.
    pub fn view(&self) -> PublishView<'_> {
        PublishView {
            dup: self.dup,
            qos: self.qos,
            retain: self.retain,
            topic: &self.topic,
            packet_id: self.packet_id,
            properties: &self.properties,
            topic_alias: self.properties.topic_alias,
            message_expiry_interval: self.properties.message_expiry_interval,
            subscription_identifiers: &self.properties.subscription_identifiers,
            payload: &self.payload,
        }
    }
}

/// A PUBLISH to encode from borrowed parts: how a broker sends one stored message to many
/// receivers without building a [`Publish`] for each. The Topic Alias, Message Expiry Interval
/// and Subscription Identifiers sent are the fields here, not those in `properties`.
#[derive(Debug, Clone, Copy)]
pub struct PublishView<'a> {
    /// DUP flag.
    pub dup: bool,
    /// Delivery QoS.
    pub qos: QoS,
    /// RETAIN flag.
    pub retain: bool,
    /// Topic name.
    pub topic: &'a TopicName,
    /// Present exactly when QoS > 0.
    pub packet_id: Option<PacketId>,
    /// The other properties (MQTT 5 only).
    pub properties: &'a PublishProperties,
    /// Topic Alias sent (MQTT 5 only); with an empty `topic`, it stands for the topic.
    pub topic_alias: Option<u16>,
    /// Message Expiry Interval sent (MQTT 5 only).
    pub message_expiry_interval: Option<u32>,
    /// Subscription Identifiers sent (MQTT 5 only).
    pub subscription_identifiers: &'a SubscriptionIds,
    /// The application payload.
    pub payload: &'a [u8],
}

impl PublishView<'_> {
    fn check_sendable(&self) -> Result<(), EncodeError> {
        if (self.qos == QoS::AtMostOnce) != self.packet_id.is_none() {
            return Err(EncodeError::PacketIdMismatch);
        }
        if (self.dup && self.qos == QoS::AtMostOnce) || self.topic_alias == Some(0) {
            return Err(EncodeError::OutOfRange(
                "field value a receiver must reject",
            ));
        }
        Ok(())
    }

    fn write_body<S: Sink>(&self, version: ProtocolVersion, s: &mut S) -> Result<(), EncodeError> {
        self.check_sendable()?;
        s.put_string(self.topic.as_mqtt_str());
        if let Some(id) = self.packet_id {
            s.put_u16(id.get());
        }
        if version == ProtocolVersion::V5 {
            self.properties.encode_as(
                s,
                self.topic_alias,
                self.message_expiry_interval,
                self.subscription_identifiers,
            )?;
        }
        s.put_slice(self.payload);
        Ok(())
    }

    /// Total encoded size in bytes, fixed header included.
    pub fn encoded_len(&self, version: ProtocolVersion) -> Result<usize, EncodeError> {
        Ok(framed_len(counted_body(|c| self.write_body(version, c))?))
    }

    /// Appends the encoding for `version` to `buf`.
    pub fn encode(&self, version: ProtocolVersion, buf: &mut BytesMut) -> Result<(), EncodeError> {
        let body = counted_body(|c| self.write_body(version, c))?;
        let first_byte =
            ((PacketType::Publish as u8) << 4) | flags(self.dup, self.qos, self.retain);
        put_framed(buf, first_byte, body, |buf| self.write_body(version, buf))
    }
}

/// The flags nibble of a PUBLISH's first byte.
fn flags(dup: bool, qos: QoS, retain: bool) -> u8 {
    (u8::from(dup) << 3) | ((qos as u8) << 1) | u8::from(retain)
}

/// Writes `id` as the packet identifier of the encoded QoS 1 or 2 PUBLISH `packet` (one
/// complete packet, fixed header first), so one encoding can be sent to several receivers;
/// returns false, changing nothing, if `packet` is no such PUBLISH.
pub fn set_publish_packet_id(packet: &mut [u8], id: PacketId) -> bool {
    let Some(&first) = packet.first() else {
        return false;
    };
    if first >> 4 != PacketType::Publish as u8 || (first >> 1) & 0x03 == 0 {
        return false;
    }
    let Ok(Some((_, header_len))) = crate::wire::decode_varint(&packet[1..]) else {
        return false;
    };
    let topic_at = 1 + header_len;
    let Some(topic_len) = packet.get(topic_at..topic_at + 2) else {
        return false;
    };
    let id_at = topic_at + 2 + usize::from(u16::from_be_bytes([topic_len[0], topic_len[1]]));
    let Some(slot) = packet.get_mut(id_at..id_at + 2) else {
        return false;
    };
    slot.copy_from_slice(&id.get().to_be_bytes());
    true
}

/// Appends to `out` the MQTT 5 PUBLISH `packet` (one complete packet, fixed header first, with no
/// Topic Alias: a broker's encoding shared by its receivers) as sent with Topic Alias `alias`,
/// first in its properties, and without its topic name when `omit_topic` (the client has the
/// alias already). The result is the bytes the same PUBLISH encodes to with that alias, got by
/// copying rather than encoding again. Returns false, appending nothing, if `packet` is no such
/// PUBLISH or the result would exceed the MQTT size limit.
pub fn put_with_topic_alias(
    packet: &[u8],
    alias: u16,
    omit_topic: bool,
    out: &mut BytesMut,
) -> bool {
    let Some(parts) = PublishParts::of(packet) else {
        return false;
    };
    let topic = if omit_topic { &[][..] } else { parts.topic };
    let properties_len = parts.properties.len() + 3;
    let Ok(properties_len) = u32::try_from(properties_len) else {
        return false;
    };
    let body = 2
        + topic.len()
        + parts.packet_id.len()
        + crate::wire::varint_len(properties_len)
        + properties_len as usize
        + parts.payload.len();
    let Ok(body) = crate::wire::checked_varint(body) else {
        return false;
    };
    put_framed(out, packet[0], body, |out| {
        let s: &mut dyn Sink = out;
        s.put_u16(topic.len() as u16);
        s.put_slice(topic);
        s.put_slice(parts.packet_id);
        s.put_varint(properties_len);
        s.put_u8(crate::properties::PropertyId::TopicAlias as u8);
        s.put_u16(alias);
        s.put_slice(parts.properties);
        s.put_slice(parts.payload);
        Ok(())
    })
    .is_ok()
}

/// The fields of an encoded MQTT 5 PUBLISH, as slices of it.
struct PublishParts<'a> {
    topic: &'a [u8],
    /// Empty at QoS 0.
    packet_id: &'a [u8],
    /// The property block without its length.
    properties: &'a [u8],
    payload: &'a [u8],
}

impl<'a> PublishParts<'a> {
    fn of(packet: &'a [u8]) -> Option<Self> {
        let first = *packet.first()?;
        if first >> 4 != PacketType::Publish as u8 {
            return None;
        }
        let (remaining, header_len) = crate::wire::decode_varint(packet.get(1..)?).ok()??;
        let body = packet.get(1 + header_len..)?;
        if body.len() != remaining as usize {
            return None;
        }
        let topic_len = usize::from(u16::from_be_bytes([*body.first()?, *body.get(1)?]));
        let topic = body.get(2..2 + topic_len)?;
        let id_len = if (first >> 1) & 0x03 == 0 { 0 } else { 2 };
        let at = 2 + topic_len;
        let packet_id = body.get(at..at + id_len)?;
        let (properties_len, len_len) =
            crate::wire::decode_varint(body.get(at + id_len..)?).ok()??;
        let start = at + id_len + len_len;
        let properties = body.get(start..start + properties_len as usize)?;
        let payload = body.get(start + properties_len as usize..)?;
        Some(Self {
            topic,
            packet_id,
            properties,
            payload,
        })
    }
}
