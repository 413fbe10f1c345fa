//! A message as it crosses NATS: a small header (format version, QoS, RETAIN, the node and
//! counter that make it unique, its absolute expiry, the publisher's client identifier), then
//! the message as an MQTT 5 PUBLISH encoded by `tern-codec`, a published format that carries
//! topic, properties and payload without a second list of fields kept here by hand.
//!
//! `[version u8][flags u8][origin u64][counter u64]` then `[expiry u64]` (wall-clock
//! milliseconds since the Unix epoch) if flagged, `[publisher len u16][publisher]` if flagged,
//! then the PUBLISH (QoS 0, no packet identifier).

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tern_codec::{parse_frame, MqttString, Packet, ProtocolVersion, Publish, QoS, TopicName};

/// The format version this code writes and reads.
const VERSION: u8 = 1;
const FLAG_RETAIN: u8 = 0b0000_0100;
const FLAG_EXPIRY: u8 = 0b0000_1000;
const FLAG_PUBLISHER: u8 = 0b0001_0000;
const QOS_MASK: u8 = 0b0000_0011;

/// Bytes the header adds at most, besides the publisher's client identifier.
pub const HEADER_LEN_MAX: usize = 1 + 1 + 8 + 8 + 8 + 2;

/// A message with what makes it unique in the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The boot identity of the node that accepted it (random per process start).
    pub origin: u64,
    /// That node's counter of messages it sent to the cluster.
    pub counter: u64,
    /// The topic.
    pub topic: TopicName,
    /// The payload.
    pub payload: Bytes,
    /// The QoS it was published with.
    pub qos: QoS,
    /// Whether it was published with RETAIN.
    pub retain: bool,
    /// Properties, as the core forwards them (no expiry interval: see `expires_at_wall`).
    pub properties: tern_codec::PublishProperties,
    /// When it expires, in wall-clock milliseconds since the Unix epoch.
    pub expires_at_wall: Option<u64>,
    /// The publisher's client identifier, for No Local.
    pub publisher: Option<MqttString>,
}

/// Why bytes from NATS are not an envelope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// Another format version: a node of another release.
    #[error("envelope version {0} (this node reads {VERSION})")]
    Version(u8),
    /// Shorter than its header says.
    #[error("envelope ends early")]
    Short,
    /// The embedded PUBLISH does not decode.
    #[error("embedded PUBLISH: {0}")]
    Publish(String),
    /// The message cannot be encoded.
    #[error("cannot encode the message: {0}")]
    Encode(String),
}

impl Envelope {
    /// The envelope's bytes.
    pub fn encode(&self) -> Result<Bytes, EnvelopeError> {
        let mut buf = BytesMut::with_capacity(HEADER_LEN_MAX + self.payload.len() + 64);
        let mut flags = self.qos as u8 & QOS_MASK;
        if self.retain {
            flags |= FLAG_RETAIN;
        }
        if self.expires_at_wall.is_some() {
            flags |= FLAG_EXPIRY;
        }
        if self.publisher.is_some() {
            flags |= FLAG_PUBLISHER;
        }
        buf.put_u8(VERSION);
        buf.put_u8(flags);
        buf.put_u64(self.origin);
        buf.put_u64(self.counter);
        if let Some(at) = self.expires_at_wall {
            buf.put_u64(at);
        }
        if let Some(publisher) = &self.publisher {
            let bytes = publisher.as_str().as_bytes();
            let len = u16::try_from(bytes.len())
                .map_err(|_| EnvelopeError::Encode("client identifier too long".to_owned()))?;
            buf.put_u16(len);
            buf.put_slice(bytes);
        }
        let mut publish = Publish::new(self.topic.clone(), self.payload.clone());
        publish.properties = self.properties.clone();
        Packet::Publish(publish)
            .encode(ProtocolVersion::V5, &mut buf)
            .map_err(|error| EnvelopeError::Encode(error.to_string()))?;
        Ok(buf.freeze())
    }

    /// Reads an envelope; its topic, properties and payload are slices of `bytes`.
    pub fn decode(mut bytes: Bytes) -> Result<Self, EnvelopeError> {
        let need = |bytes: &Bytes, n: usize| {
            if bytes.remaining() < n {
                Err(EnvelopeError::Short)
            } else {
                Ok(())
            }
        };
        need(&bytes, 18)?;
        let version = bytes.get_u8();
        if version != VERSION {
            return Err(EnvelopeError::Version(version));
        }
        let flags = bytes.get_u8();
        let origin = bytes.get_u64();
        let counter = bytes.get_u64();
        let qos = QoS::from_u8(flags & QOS_MASK).ok_or(EnvelopeError::Publish("QoS 3".into()))?;
        let expires_at_wall = if flags & FLAG_EXPIRY != 0 {
            need(&bytes, 8)?;
            Some(bytes.get_u64())
        } else {
            None
        };
        let publisher = if flags & FLAG_PUBLISHER != 0 {
            need(&bytes, 2)?;
            let len = usize::from(bytes.get_u16());
            need(&bytes, len)?;
            let raw = bytes.split_to(len);
            let text = std::str::from_utf8(&raw)
                .map_err(|_| EnvelopeError::Publish("publisher is not UTF-8".to_owned()))?;
            Some(MqttString::new(text).map_err(|error| EnvelopeError::Publish(error.to_string()))?)
        } else {
            None
        };
        let frame = parse_frame(&bytes, u32::MAX)
            .map_err(|error| EnvelopeError::Publish(error.to_string()))?
            .ok_or(EnvelopeError::Short)?;
        if frame.total_len != bytes.len() {
            return Err(EnvelopeError::Publish("bytes after the PUBLISH".to_owned()));
        }
        let first = bytes[0];
        bytes.advance(frame.header_len);
        let packet = Packet::decode(first, bytes, ProtocolVersion::V5)
            .map_err(|error| EnvelopeError::Publish(error.to_string()))?;
        let Packet::Publish(publish) = packet else {
            return Err(EnvelopeError::Publish("not a PUBLISH".to_owned()));
        };
        Ok(Self {
            origin,
            counter,
            topic: publish.topic,
            payload: publish.payload,
            qos,
            retain: flags & FLAG_RETAIN != 0,
            properties: publish.properties,
            expires_at_wall,
            publisher,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Envelope {
        let properties = tern_codec::PublishProperties {
            content_type: MqttString::new("text/plain").ok(),
            ..Default::default()
        };
        Envelope {
            origin: 0xDEAD_BEEF,
            counter: 42,
            topic: "a.b/c d/é".parse().unwrap_or_else(|_| TopicName::empty()),
            payload: Bytes::from_static(b"payload"),
            qos: QoS::AtLeastOnce,
            retain: true,
            properties,
            expires_at_wall: Some(1_800_000_000_000),
            publisher: MqttString::new("pub-1").ok(),
        }
    }

    #[test]
    fn an_envelope_reads_back_as_written() {
        let envelope = sample();
        let bytes = envelope.encode().unwrap_or_default();
        assert_eq!(Envelope::decode(bytes), Ok(envelope));
        let bare = Envelope {
            expires_at_wall: None,
            publisher: None,
            retain: false,
            qos: QoS::AtMostOnce,
            ..sample()
        };
        assert_eq!(
            Envelope::decode(bare.encode().unwrap_or_default()),
            Ok(bare)
        );
    }

    #[test]
    fn damaged_envelopes_are_refused() {
        let bytes = sample().encode().unwrap_or_default();
        for cut in [0, 1, 10, 20, bytes.len() - 1] {
            assert!(
                Envelope::decode(bytes.slice(..cut)).is_err(),
                "cut at {cut}"
            );
        }
        let mut other_version = BytesMut::from(&bytes[..]);
        other_version[0] = 9;
        assert_eq!(
            Envelope::decode(other_version.freeze()),
            Err(EnvelopeError::Version(9))
        );
    }
}
