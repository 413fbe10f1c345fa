//! Encodes what the core queued for a socket; a message forwarded alike to several receivers is
//! encoded once and copied to the rest.

use std::sync::Arc;

use bytes::BytesMut;
use rustc_hash::FxHashMap;

use tern_codec::{put_with_topic_alias, set_publish_packet_id, EncodeError, ProtocolVersion};
use tern_core::{OutgoingPublish, Transmit};

/// Encodings larger than this are not kept: copying them costs what encoding them does.
const KEPT_BYTES_MAX: usize = 4 * 1024;
/// Encodings kept at most; once full, the store starts afresh. A fan-out writes each
/// receiver's whole queue in one batch, so the encodings of a batch's messages must all stay
/// until the next receiver's batch asks for them.
const KEPT_MAX: usize = 1024;

/// What makes two receivers' copies of a message the same bytes, the packet identifier aside:
/// the message, and the form it is sent in (protocol version, QoS, RETAIN, DUP, what remains of
/// its expiry, the receiver's topic alias) packed into one word, so that looking a copy up per
/// delivery hashes and compares two words. A topic alias is part of the form: in a fan-out the
/// receivers usually hold the same alias for a topic (they took their aliases in the order the
/// same topics came), so they share its bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    message_id: u64,
    form: u64,
}

/// Where the alias sits in [`Key::form`]: its 16 bits and the flag for "alias alone".
const ALIAS_SHIFT: u32 = 33;
const ALIAS_MASK: u64 = 0x1_FFFF << ALIAS_SHIFT;

impl Key {
    fn of(publish: &OutgoingPublish, version: ProtocolVersion) -> Self {
        // Bits 0-32: the expiry, present or not; 33-48: the alias (0: none); 49: the alias
        // stands alone; 50: RETAIN; 51: DUP; 52-53: QoS; 54-55: the protocol version.
        let expiry = publish
            .message_expiry_interval
            .map_or(0, |secs| u64::from(secs) << 1 | 1);
        let alias = publish.alias.map_or(0, |alias| u64::from(alias.get()))
            | u64::from(publish.alias_only) << 16;
        let version: u64 = match version {
            ProtocolVersion::V31 => 0,
            ProtocolVersion::V311 => 1,
            ProtocolVersion::V5 => 2,
        };
        Self {
            message_id: publish.message.id,
            form: expiry
                | alias << ALIAS_SHIFT
                | u64::from(publish.retain) << 50
                | u64::from(publish.dup) << 51
                | (publish.qos as u64) << 52
                | version << 54,
        }
    }

    /// The key of the same copy without a topic alias.
    fn without_alias(self) -> Self {
        Self {
            form: self.form & !ALIAS_MASK,
            ..self
        }
    }
}

/// Encodes what the core queued. The encodings of messages other receivers are still to get
/// are kept, so those receivers copy the bytes and write their own packet identifier in.
#[derive(Default)]
pub(crate) struct Encoder {
    kept: FxHashMap<Key, Vec<u8>>,
}

impl Encoder {
    /// Appends the encoding of `transmit` at `version` to `buf`; `Close` appends nothing.
    pub(crate) fn encode(
        &mut self,
        transmit: &Transmit,
        version: ProtocolVersion,
        buf: &mut BytesMut,
    ) -> Result<(), EncodeError> {
        match transmit {
            Transmit::Publish(publish) => self.encode_publish(publish, version, buf),
            Transmit::Packet(packet) => packet.encode(version, buf),
            Transmit::Close => Ok(()),
        }
    }

    fn encode_publish(
        &mut self,
        publish: &OutgoingPublish,
        version: ProtocolVersion,
        buf: &mut BytesMut,
    ) -> Result<(), EncodeError> {
        // Subscription identifiers are the receiver's own: such a copy is never shared.
        if !publish.subscription_ids.is_empty() {
            return publish.view().encode(version, buf);
        }
        let key = Key::of(publish, version);
        let start = buf.len();
        let copied = if let Some(bytes) = self.kept.get(&key) {
            buf.extend_from_slice(bytes);
            true
        } else {
            // A copy that differs from a kept one only by its topic alias is made from it: the
            // alias changes the head of the packet alone.
            let spliced = publish.topic_alias().is_some_and(|alias| {
                let without_alias = key.without_alias();
                self.kept.get(&without_alias).is_some_and(|bytes| {
                    put_with_topic_alias(bytes, alias.value(), alias.omits_topic(), buf)
                })
            });
            if !spliced {
                // Encoded for this receiver: its own packet identifier is in already.
                publish.view().encode(version, buf)?;
            }
            // Keep it only if someone else may want it: the message is referenced by more than
            // this copy and, at QoS 1 and 2, this receiver's own in-flight record.
            let others = Arc::strong_count(&publish.message) > 2;
            let encoded = &buf[start..];
            if others && encoded.len() <= KEPT_BYTES_MAX {
                if self.kept.len() >= KEPT_MAX {
                    self.kept.clear();
                }
                self.kept.insert(key, encoded.to_vec());
            }
            spliced
        };
        // A copy holds the identifier of the receiver it was encoded for.
        if let (true, Some(id)) = (copied, publish.packet_id) {
            set_publish_packet_id(&mut buf[start..], id);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failure.

    use super::*;
    use bytes::Bytes;
    use tern_codec::{MqttString, Packet, PacketId, QoS, SubscriptionIds, TopicName};
    use tern_core::{Message, SharedMessage, TopicAlias};

    fn message(id: u64, topic: &str, payload: &'static [u8]) -> SharedMessage {
        Arc::new(Message {
            id,
            topic: TopicName::new(MqttString::new(topic).unwrap()).unwrap(),
            payload: Bytes::from_static(payload),
            qos: QoS::ExactlyOnce,
            retain: true,
            properties: Default::default(),
            expires_at: None,
            origin: None,
        })
    }

    fn outgoing(message: &SharedMessage, qos: QoS, packet_id: Option<u16>) -> OutgoingPublish {
        OutgoingPublish {
            message: Arc::clone(message),
            qos,
            retain: false,
            dup: false,
            packet_id: packet_id.map(|id| PacketId::new(id).unwrap()),
            message_expiry_interval: None,
            subscription_ids: SubscriptionIds::new(),
            alias: None,
            alias_only: false,
        }
    }

    /// The bytes of `publish` built out in full and encoded the ordinary way.
    fn expected(publish: &OutgoingPublish, version: ProtocolVersion) -> Vec<u8> {
        let mut buf = BytesMut::new();
        Packet::Publish(publish.to_publish())
            .encode(version, &mut buf)
            .unwrap();
        buf.to_vec()
    }

    /// Every receiver's bytes are those of its own PUBLISH, whether they were encoded or copied
    /// from the previous receiver's, in any order of versions, QoS levels and identifiers.
    #[test]
    fn copies_are_the_receivers_own_packets() {
        let first = message(1, "site/a/temp", b"21.5");
        let second = message(2, "site/b/temp", b"19.0");
        let third = message(3, "site/c/humidity", b"40");
        let ids = SubscriptionIds::from_ids([7]).unwrap();
        let mut with_ids = outgoing(&first, QoS::AtLeastOnce, Some(4));
        with_ids.subscription_ids = ids;
        let mut expiring = outgoing(&first, QoS::AtLeastOnce, Some(5));
        expiring.message_expiry_interval = Some(30);
        let mut resent = outgoing(&first, QoS::AtLeastOnce, Some(6));
        resent.dup = true;
        let mut retained = outgoing(&first, QoS::AtMostOnce, None);
        retained.retain = true;
        let aliased = |publish: &OutgoingPublish, alias: TopicAlias| {
            let mut aliased = publish.clone();
            aliased.set_topic_alias(Some(alias));
            aliased
        };
        let sequence = [
            (
                outgoing(&first, QoS::AtMostOnce, None),
                ProtocolVersion::V311,
            ),
            (
                outgoing(&first, QoS::AtMostOnce, None),
                ProtocolVersion::V311,
            ),
            (
                outgoing(&first, QoS::AtLeastOnce, Some(1)),
                ProtocolVersion::V311,
            ),
            (
                outgoing(&first, QoS::AtLeastOnce, Some(2)),
                ProtocolVersion::V311,
            ),
            (
                outgoing(&first, QoS::AtLeastOnce, Some(3)),
                ProtocolVersion::V5,
            ),
            (with_ids, ProtocolVersion::V5),
            (expiring, ProtocolVersion::V5),
            (resent, ProtocolVersion::V5),
            (retained, ProtocolVersion::V5),
            (
                outgoing(&first, QoS::ExactlyOnce, Some(9)),
                ProtocolVersion::V5,
            ),
            (
                outgoing(&first, QoS::ExactlyOnce, Some(10)),
                ProtocolVersion::V5,
            ),
            (
                outgoing(&second, QoS::ExactlyOnce, Some(11)),
                ProtocolVersion::V5,
            ),
            (
                outgoing(&first, QoS::ExactlyOnce, Some(12)),
                ProtocolVersion::V5,
            ),
            // Receivers' own topic aliases, setting one or using one, from a kept encoding.
            (
                aliased(
                    &outgoing(&first, QoS::ExactlyOnce, Some(13)),
                    TopicAlias::Set(2),
                ),
                ProtocolVersion::V5,
            ),
            (
                aliased(
                    &outgoing(&first, QoS::ExactlyOnce, Some(14)),
                    TopicAlias::Use(2),
                ),
                ProtocolVersion::V5,
            ),
            (
                aliased(&outgoing(&first, QoS::AtMostOnce, None), TopicAlias::Use(7)),
                ProtocolVersion::V5,
            ),
            // And for a message first encoded for an aliased receiver.
            (
                aliased(
                    &outgoing(&third, QoS::AtLeastOnce, Some(15)),
                    TopicAlias::Set(1),
                ),
                ProtocolVersion::V5,
            ),
            (
                outgoing(&third, QoS::AtLeastOnce, Some(16)),
                ProtocolVersion::V5,
            ),
            (
                aliased(
                    &outgoing(&third, QoS::AtLeastOnce, Some(17)),
                    TopicAlias::Use(1),
                ),
                ProtocolVersion::V5,
            ),
            // Another receiver with the same alias copies the aliased encoding kept for it.
            (
                aliased(
                    &outgoing(&third, QoS::AtLeastOnce, Some(18)),
                    TopicAlias::Use(1),
                ),
                ProtocolVersion::V5,
            ),
        ];
        let mut encoder = Encoder::default();
        for (publish, version) in &sequence {
            let mut buf = BytesMut::from(&b"before"[..]);
            let transmit = Transmit::Publish(publish.clone());
            encoder.encode(&transmit, *version, &mut buf).unwrap();
            assert_eq!(&buf[..6], b"before");
            assert_eq!(
                &buf[6..],
                &expected(publish, *version)[..],
                "{publish:?} {version:?}"
            );
        }
    }

    /// A message other receivers still hold is kept; one nobody else holds is not.
    #[test]
    fn keeps_only_what_others_will_ask_for() {
        let mut encoder = Encoder::default();
        let mut buf = BytesMut::new();
        let alone = message(1, "a", b"x");
        let only_copy = Transmit::Publish(outgoing(&alone, QoS::AtMostOnce, None));
        drop(alone);
        encoder
            .encode(&only_copy, ProtocolVersion::V5, &mut buf)
            .unwrap();
        assert!(encoder.kept.is_empty());
        let shared = message(2, "a", b"x");
        let copies: Vec<_> = (1..=3)
            .map(|id| Transmit::Publish(outgoing(&shared, QoS::AtLeastOnce, Some(id))))
            .collect();
        encoder
            .encode(&copies[0], ProtocolVersion::V5, &mut buf)
            .unwrap();
        assert_eq!(encoder.kept.len(), 1);
    }

    /// Once full, the kept encodings start afresh.
    #[test]
    fn kept_encodings_are_bounded() {
        let mut encoder = Encoder::default();
        let mut buf = BytesMut::new();
        let messages: Vec<_> = (0..=KEPT_MAX as u64)
            .map(|id| message(id, "t", b"p"))
            .collect();
        for (index, shared) in messages.iter().enumerate() {
            let copies = [
                outgoing(shared, QoS::AtMostOnce, None),
                outgoing(shared, QoS::AtMostOnce, None),
            ];
            encoder
                .encode(
                    &Transmit::Publish(copies[0].clone()),
                    ProtocolVersion::V311,
                    &mut buf,
                )
                .unwrap();
            assert_eq!(encoder.kept.len(), index % KEPT_MAX + 1);
        }
    }

    /// A large message is encoded for every receiver rather than kept.
    #[test]
    fn large_messages_are_not_kept() {
        static LARGE: [u8; KEPT_BYTES_MAX + 1] = [0x55; KEPT_BYTES_MAX + 1];
        let large = message(1, "big", &LARGE);
        let mut encoder = Encoder::default();
        let mut buf = BytesMut::new();
        // Two more receivers hold it, so only its size keeps it from being kept.
        let copies = [(); 3].map(|()| outgoing(&large, QoS::AtMostOnce, None));
        let publish = Transmit::Publish(copies[0].clone());
        encoder
            .encode(&publish, ProtocolVersion::V311, &mut buf)
            .unwrap();
        assert!(encoder.kept.is_empty());
        let small = message(2, "small", b"x");
        let small_copies = [(); 3].map(|()| outgoing(&small, QoS::AtMostOnce, None));
        let publish = Transmit::Publish(small_copies[0].clone());
        encoder
            .encode(&publish, ProtocolVersion::V311, &mut buf)
            .unwrap();
        assert_eq!(encoder.kept.len(), 1);
        buf.clear();
        encoder
            .encode(
                &Transmit::Publish(copies[1].clone()),
                ProtocolVersion::V311,
                &mut buf,
            )
            .unwrap();
        assert_eq!(
            &buf[..],
            &expected(
                &outgoing(&large, QoS::AtMostOnce, None),
                ProtocolVersion::V311
            )[..]
        );
    }
}
