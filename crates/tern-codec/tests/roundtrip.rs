//! Proves that encoding then decoding is the identity for every packet type in MQTT 3.1.1 and
//! 5.0, that `encoded_len` is exact, that encoding is canonical, and that the incremental
//! decoder returns the same packet however the bytes are split.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failure.

mod support;

use bytes::{Bytes, BytesMut};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;
use tern_codec::{
    parse_frame, put_with_topic_alias, set_publish_packet_id, Auth, Connect, DecodeError, Decoder,
    EncodeError, Packet, PacketType, ProtocolVersion, PublishView, PACKET_SIZE_MAX,
};

use support::{packet, packet_of, samples::samples, version, versioned_packet, VERSIONS};
use ProtocolVersion::{V311, V5};

/// Cases per packet type (each case picks one of the levels the type exists in).
const CASES_PER_TYPE: u32 = 256;
/// Cases of the split and stream properties.
const CASES_SPLIT: u32 = 512;

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        ..ProptestConfig::default()
    }
}

fn encode(version: ProtocolVersion, packet: &Packet) -> Bytes {
    let mut buf = BytesMut::new();
    packet.encode(version, &mut buf).unwrap();
    buf.freeze()
}

/// The level a decoder must be at after `packet`: a CONNECT switches it to its own level.
fn level_after(version: ProtocolVersion, packet: &Packet) -> ProtocolVersion {
    match packet {
        Packet::Connect(connect) => connect.protocol_version,
        _ => version,
    }
}

/// Every round-trip property of one packet at one protocol level.
fn check_roundtrip(version: ProtocolVersion, packet: &Packet) -> Result<(), TestCaseError> {
    let len = packet.encoded_len(version).unwrap();
    // Encoding appends: bytes already in the buffer stay in front.
    let mut buf = BytesMut::from(&b"xyz"[..]);
    packet.encode(version, &mut buf).unwrap();
    prop_assert_eq!(&buf[..3], b"xyz");
    let wire = buf.freeze().slice(3..);
    prop_assert_eq!(
        wire.len(),
        len,
        "encoded_len disagrees with the bytes written"
    );
    let first_byte = wire[0];
    prop_assert_eq!(first_byte >> 4, packet.packet_type() as u8);

    // The framed body decodes on its own.
    let frame = parse_frame(&wire, PACKET_SIZE_MAX).unwrap().unwrap();
    prop_assert_eq!(frame.total_len, len);
    let body = wire.slice(frame.header_len..);
    let decoded = Packet::decode(first_byte, body, version).unwrap();
    prop_assert_eq!(&decoded, packet);

    // Encoding is canonical: the decoded packet encodes to the same bytes.
    prop_assert_eq!(&encode(version, &decoded)[..], &wire[..]);

    // The whole buffer at once, followed by the start of another packet that must stay put.
    let mut decoder = Decoder::new(version, PACKET_SIZE_MAX);
    let mut buf = BytesMut::from(&wire[..]);
    buf.extend_from_slice(&[0xC0]);
    let got = decoder.decode(&mut buf).unwrap();
    prop_assert_eq!(got.as_ref(), Some(packet));
    prop_assert_eq!(&buf[..], &[0xC0]);
    prop_assert_eq!(decoder.version(), level_after(version, packet));
    prop_assert_eq!(decoder.decode(&mut buf), Ok(None));
    prop_assert_eq!(buf.len(), 1);

    // One byte at a time: nothing until the last byte, and nothing consumed before it.
    let mut decoder = Decoder::new(version, PACKET_SIZE_MAX);
    let mut buf = BytesMut::with_capacity(len);
    for (index, &byte) in wire.iter().enumerate() {
        buf.extend_from_slice(&[byte]);
        let got = decoder.decode(&mut buf).unwrap();
        if index + 1 < len {
            prop_assert!(
                got.is_none(),
                "packet before its last byte ({index} of {len})"
            );
            prop_assert_eq!(buf.len(), index + 1);
        } else {
            prop_assert_eq!(got.as_ref(), Some(packet));
            prop_assert!(buf.is_empty());
        }
    }

    // The maximum packet size is inclusive, and a larger packet is refused from its header.
    let max = u32::try_from(len).unwrap();
    let mut buf = BytesMut::from(&wire[..]);
    let got = Decoder::new(version, max).decode(&mut buf).unwrap();
    prop_assert_eq!(got.as_ref(), Some(packet));
    let mut buf = BytesMut::from(&wire[..frame.header_len]);
    let refused = Decoder::new(version, max - 1).decode(&mut buf);
    prop_assert_eq!(
        refused,
        Err(DecodeError::PacketTooLarge {
            size: len,
            max: max - 1
        })
    );
    Ok(())
}

/// The levels a packet type exists in, with a packet of that type.
fn typed(packet_type: PacketType) -> impl Strategy<Value = (ProtocolVersion, Packet)> {
    let levels = match packet_type {
        PacketType::Auth => vec![V5],
        _ => VERSIONS.to_vec(),
    };
    proptest::sample::select(levels).prop_flat_map(move |v| (Just(v), packet_of(v, packet_type)))
}

macro_rules! roundtrip_tests {
    ($($name:ident => $packet_type:ident),* $(,)?) => {
        proptest! {
            #![proptest_config(config(CASES_PER_TYPE))]
            $(
                #[test]
                fn $name((version, packet) in typed(PacketType::$packet_type)) {
                    prop_assert_eq!(packet.packet_type(), PacketType::$packet_type);
                    check_roundtrip(version, &packet)?;
                }
            )*
        }
    };
}

roundtrip_tests! {
    connect_roundtrips => Connect,
    connack_roundtrips => ConnAck,
    publish_roundtrips => Publish,
    puback_roundtrips => PubAck,
    pubrec_roundtrips => PubRec,
    pubrel_roundtrips => PubRel,
    pubcomp_roundtrips => PubComp,
    subscribe_roundtrips => Subscribe,
    suback_roundtrips => SubAck,
    unsubscribe_roundtrips => Unsubscribe,
    unsuback_roundtrips => UnsubAck,
    pingreq_roundtrips => PingReq,
    pingresp_roundtrips => PingResp,
    disconnect_roundtrips => Disconnect,
    auth_roundtrips => Auth,
}

proptest! {
    #![proptest_config(config(CASES_SPLIT))]

    /// A packet split at any point: nothing from the first part, the packet after the second.
    #[test]
    fn split_anywhere_decodes_the_same((version, packet) in versioned_packet(), at in any::<Index>()) {
        let wire = encode(version, &packet);
        let at = at.index(wire.len() + 1);
        let mut decoder = Decoder::new(version, PACKET_SIZE_MAX);
        let mut buf = BytesMut::from(&wire[..at]);
        if at < wire.len() {
            prop_assert_eq!(decoder.decode(&mut buf), Ok(None));
            prop_assert_eq!(buf.len(), at);
            buf.extend_from_slice(&wire[at..]);
        }
        prop_assert_eq!(decoder.decode(&mut buf).unwrap(), Some(packet));
        prop_assert!(buf.is_empty());
    }

    /// Several packets in one stream, delivered in three arbitrary chunks, decode in order.
    #[test]
    fn stream_in_chunks_decodes_in_order(
        (version, packets) in version().prop_flat_map(|v| (Just(v), vec(packet(v), 1..6))),
        cuts in vec(any::<Index>(), 2),
    ) {
        let mut wire = BytesMut::new();
        for p in &packets {
            p.encode(version, &mut wire).unwrap();
        }
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c.index(wire.len() + 1)).collect();
        cuts.sort_unstable();
        let chunks = [&wire[..cuts[0]], &wire[cuts[0]..cuts[1]], &wire[cuts[1]..]];
        let mut decoder = Decoder::new(version, PACKET_SIZE_MAX);
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for chunk in chunks {
            buf.extend_from_slice(chunk);
            while let Some(p) = decoder.decode(&mut buf).unwrap() {
                got.push(p);
            }
        }
        prop_assert!(buf.is_empty());
        prop_assert_eq!(got, packets);
    }

    /// A CONNECT is decoded by its own protocol level, whatever level the decoder is at.
    #[test]
    fn connect_decodes_at_its_own_level(
        (version, packet) in typed(PacketType::Connect),
        other_version in version(),
    ) {
        let wire = encode(version, &packet);
        // The level passed to encode does not matter for CONNECT either.
        prop_assert_eq!(&encode(other_version, &packet)[..], &wire[..]);
        let mut decoder = Decoder::new(other_version, PACKET_SIZE_MAX);
        let mut buf = BytesMut::from(&wire[..]);
        prop_assert_eq!(decoder.decode(&mut buf).unwrap(), Some(packet));
        prop_assert_eq!(decoder.version(), version);
    }
}

/// Every hand-written sample (every type, both levels, every property set) round-trips.
#[test]
fn samples_roundtrip() {
    let samples = samples();
    for version in VERSIONS {
        for packet_type in support::PACKET_TYPES {
            let found = samples
                .iter()
                .any(|(_, v, p)| *v == version && p.packet_type() == packet_type);
            assert!(
                found || (version == V311 && packet_type == PacketType::Auth),
                "no sample of {packet_type:?} at {version:?}"
            );
        }
    }
    for (name, version, packet) in &samples {
        if let Err(e) = check_roundtrip(*version, packet) {
            panic!("{name}: {e}");
        }
    }
}

/// AUTH does not exist in 3.1.1: it does not encode, and its bytes do not decode.
#[test]
fn auth_is_refused_in_v311() {
    let packet = Packet::Auth(Auth::default());
    assert_eq!(packet.encoded_len(V311), Err(EncodeError::NotInVersion));
    assert_eq!(
        packet.encode(V311, &mut BytesMut::new()),
        Err(EncodeError::NotInVersion)
    );
    for wire in [&[0xF0, 0x00][..], &[0xF0, 0x02, 0x00, 0x00][..]] {
        let mut buf = BytesMut::from(wire);
        let got = Decoder::new(V311, PACKET_SIZE_MAX).decode(&mut buf);
        assert!(matches!(got, Err(DecodeError::Malformed(_))), "{got:?}");
        let mut buf = BytesMut::from(wire);
        assert!(Decoder::new(V5, PACKET_SIZE_MAX)
            .decode(&mut buf)
            .unwrap()
            .is_some());
    }
}

/// A 3.1.1 CONNECT with a password but no user name is refused both ways.
#[test]
fn v311_password_needs_user_name() {
    let connect = Connect {
        protocol_version: V311,
        clean_start: true,
        keep_alive: 0,
        properties: Default::default(),
        client_id: tern_codec::MqttString::empty(),
        will: None,
        username: None,
        password: Some(Bytes::from_static(b"pw")),
    };
    assert!(Packet::Connect(Box::new(connect))
        .encoded_len(V311)
        .is_err());
    let mut wire = BytesMut::from(
        &[
            0x10, 16, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x42, 0, 0, 0, 0, 0, 2, b'p', b'w',
        ][..],
    );
    let got = Decoder::new(V311, PACKET_SIZE_MAX).decode(&mut wire);
    assert!(matches!(got, Err(DecodeError::Malformed(_))), "{got:?}");
}

/// User properties and subscription identifiers interleaved with each other and with other
/// properties decode to the same ordered lists as when they are adjacent.
#[test]
fn interleaved_repeated_properties_keep_their_order() {
    let props: &[u8] = &[
        0x26, 0, 1, b'a', 0, 1, b'1', // user property a=1
        0x0B, 0x05, // subscription identifier 5
        0x01, 0x01, // payload format indicator
        0x26, 0, 1, b'b', 0, 0, // user property b=
        0x0B, 0x80, 0x01, // subscription identifier 128
        0x23, 0, 9, // topic alias 9
        0x26, 0, 1, b'a', 0, 1, b'2', // user property a=2
    ];
    let mut wire = vec![
        0x30,
        0,
        0x00,
        0x01,
        b't',
        u8::try_from(props.len()).unwrap(),
    ];
    wire.extend_from_slice(props);
    wire.extend_from_slice(b"payload");
    wire[1] = u8::try_from(wire.len() - 2).unwrap();
    let mut buf = BytesMut::from(&wire[..]);
    let packet = Decoder::new(V5, PACKET_SIZE_MAX)
        .decode(&mut buf)
        .unwrap()
        .unwrap();
    let Packet::Publish(publish) = &packet else {
        panic!("not a PUBLISH: {packet:?}");
    };
    let users: Vec<(&str, &str)> = publish.properties.user_properties.iter().collect();
    assert_eq!(users, [("a", "1"), ("b", ""), ("a", "2")]);
    let ids: Vec<u32> = publish.properties.subscription_identifiers.iter().collect();
    assert_eq!(ids, [5, 128]);
    assert_eq!(publish.properties.topic_alias, Some(9));
    assert_eq!(&publish.payload[..], b"payload");
    // The canonical encoding groups each repeated property, in order, and decodes the same.
    check_roundtrip(V5, &packet).unwrap();
    assert_eq!(packet.encoded_len(V5).unwrap(), wire.len());
}

proptest! {
    #![proptest_config(config(CASES_PER_TYPE))]

    /// A PUBLISH encoded from a view, with its Message Expiry Interval and Subscription
    /// Identifiers given beside the properties, is the PUBLISH that carries them; re-addressing
    /// that encoding to another packet identifier gives that packet's bytes.
    #[test]
    fn publish_view_encodes_as_the_publish_it_stands_for(
        (version, packet) in typed(PacketType::Publish),
        (_, donor) in typed(PacketType::Publish),
        other_id in 1u16..,
    ) {
        let (Packet::Publish(publish), Packet::Publish(donor)) = (&packet, &donor) else {
            unreachable!("typed(Publish) yields PUBLISH packets");
        };
        // The forwarded fields come from another PUBLISH; the rest from this one.
        let mut expected = publish.clone();
        expected.properties.message_expiry_interval = donor.properties.message_expiry_interval;
        expected.properties.subscription_identifiers =
            donor.properties.subscription_identifiers.clone();
        let mut stripped = publish.properties.clone();
        stripped.message_expiry_interval = None;
        stripped.subscription_identifiers = tern_codec::SubscriptionIds::new();
        let view = PublishView {
            properties: &stripped,
            message_expiry_interval: donor.properties.message_expiry_interval,
            subscription_identifiers: &donor.properties.subscription_identifiers,
            ..publish.view()
        };
        let mut wire = BytesMut::new();
        view.encode(version, &mut wire).unwrap();
        let expected_packet = Packet::Publish(expected.clone());
        prop_assert_eq!(&wire[..], &encode(version, &expected_packet)[..]);
        prop_assert_eq!(view.encoded_len(version).unwrap(), wire.len());

        let other_id = tern_codec::PacketId::new(other_id).unwrap();
        let readdressed = set_publish_packet_id(&mut wire, other_id);
        prop_assert_eq!(readdressed, publish.packet_id.is_some());
        if readdressed {
            expected.packet_id = Some(other_id);
        }
        prop_assert_eq!(&wire[..], &encode(version, &Packet::Publish(expected))[..]);
    }
}

proptest! {
    #![proptest_config(config(CASES_PER_TYPE))]

    /// A receiver's Topic Alias put into an encoding shared by several receivers gives the bytes
    /// of that receiver's own PUBLISH: with the topic, which the alias is set to, or without it,
    /// the alias standing for it.
    #[test]
    fn topic_alias_put_into_a_shared_encoding(
        packet in packet_of(V5, PacketType::Publish),
        alias in 1u16..,
        omit_topic in any::<bool>(),
    ) {
        let Packet::Publish(mut publish) = packet else {
            unreachable!("packet_of(Publish) yields PUBLISH packets");
        };
        publish.properties.take_topic_alias();
        let shared = encode(V5, &Packet::Publish(publish.clone()));
        let mut own = publish;
        own.properties.topic_alias = Some(alias);
        if omit_topic {
            own.topic = tern_codec::TopicName::empty();
        }
        let mut out = BytesMut::from(&b"kept"[..]);
        prop_assert!(put_with_topic_alias(&shared, alias, omit_topic, &mut out));
        prop_assert_eq!(&out[..4], b"kept");
        prop_assert_eq!(&out[4..], &encode(V5, &Packet::Publish(own))[..]);
    }
}

/// Putting a Topic Alias refuses what is not a PUBLISH, and a truncated one.
#[test]
fn put_with_topic_alias_refuses_other_packets() {
    let mut out = BytesMut::new();
    let publish = Packet::Publish(tern_codec::Publish::new(
        tern_codec::TopicName::new(tern_codec::MqttString::new("a/b").unwrap()).unwrap(),
        Bytes::from_static(b"x"),
    ));
    let wire = encode(V5, &publish);
    assert!(!put_with_topic_alias(
        &wire[..wire.len() - 1],
        1,
        true,
        &mut out
    ));
    assert!(!put_with_topic_alias(
        &encode(V5, &Packet::PingReq),
        1,
        true,
        &mut out
    ));
    assert!(out.is_empty());
}

/// Re-addressing refuses what is not a QoS 1 or 2 PUBLISH, and a truncated one.
#[test]
fn set_publish_packet_id_refuses_other_packets() {
    let id = tern_codec::PacketId::new(7).unwrap();
    let qos0 = Packet::Publish(tern_codec::Publish::new(
        tern_codec::TopicName::new(tern_codec::MqttString::new("a/b").unwrap()).unwrap(),
        Bytes::from_static(b"x"),
    ));
    let mut wire = BytesMut::new();
    qos0.encode(V311, &mut wire).unwrap();
    let before = wire.clone();
    assert!(!set_publish_packet_id(&mut wire, id));
    assert_eq!(wire, before);
    assert!(!set_publish_packet_id(&mut [], id));
    // A QoS 1 PUBLISH header whose body stops inside the topic.
    assert!(!set_publish_packet_id(
        &mut [0x32, 0x05, 0x00, 0x03, b'a'],
        id
    ));
    let mut puback = BytesMut::new();
    Packet::PubAck(tern_codec::Ack::new(id))
        .encode(V311, &mut puback)
        .unwrap();
    assert!(!set_publish_packet_id(&mut puback, id));
}
