//! PUBLISH (3.3): the one packet on the hot path; decoding slices topic and payload out of the
//! frame without copying.

use bytes::Bytes;

use super::{Packet, PacketId, ProtocolVersion, QoS};
use crate::error::{DecodeError, EncodeError};
use crate::properties::PublishProperties;
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
        (u8::from(self.dup) << 3) | ((self.qos as u8) << 1) | u8::from(self.retain)
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
                ProtocolVersion::V311 => DecodeError::TopicNameInvalid("topic name is empty"),
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
        if (self.qos == QoS::AtMostOnce) != self.packet_id.is_none() {
            return Err(EncodeError::PacketIdMismatch);
        }
        s.put_string(self.topic.as_mqtt_str());
        if let Some(id) = self.packet_id {
            s.put_u16(id.get());
        }
        if version == ProtocolVersion::V5 {
            self.properties.encode(s)?;
        }
        s.put_slice(&self.payload);
        Ok(())
    }
}
