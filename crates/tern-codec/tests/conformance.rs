//! Proves the packet-level MQTT 3.1.1 and 5.0 normative statements the codec enforces: fixed
//! header flags, packet identifiers, CONNECT flags and payload, PUBLISH flags, reason codes,
//! properties and variable byte integers, plus framing against the maximum packet size. Each
//! statement test is named after the statement it proves; docs/conformance.md points at it.

// In a test crate a failed expectation is a failed test, and `expect` names what was expected.
#![allow(clippy::expect_used)]

use bytes::{Bytes, BytesMut};
use tern_codec::{
    decode_varint, AckProperties, Connect, ConnectProperties, DecodeError, Decoder, EncodeError,
    MqttString, Packet, PacketId, ProtocolVersion, Publish, QoS, ReasonCode, SubAck, UnsubAck,
    Will, WillProperties, PACKET_SIZE_MAX,
};

/// Declares one `#[test]` per normative statement, named after it, whose body runs the check.
macro_rules! statements {
    ($($(#[$doc:meta])+ fn $name:ident() $body:block)+) => {
        $($(#[$doc])+ #[test] fn $name() $body)+
    };
}

mod wire_builders;
use wire_builders::{cat, decode, frame, props, str16};

const V3: ProtocolVersion = ProtocolVersion::V311;
const V5: ProtocolVersion = ProtocolVersion::V5;
const V31: ProtocolVersion = ProtocolVersion::V31;
const MALFORMED: ReasonCode = ReasonCode::MalformedPacket;
const PROTOCOL: ReasonCode = ReasonCode::ProtocolError;

fn accept(v: ProtocolVersion, wire: &[u8]) -> Packet {
    decode(v, wire).unwrap_or_else(|e| panic!("{wire:02X?} refused: {e}"))
}

fn reject(v: ProtocolVersion, wire: &[u8], code: ReasonCode) -> DecodeError {
    match decode(v, wire) {
        Ok(packet) => panic!("{wire:02X?} accepted as {packet:?}"),
        Err(e) => {
            assert_eq!(e.reason_code(), code, "{wire:02X?}: {e}");
            e
        }
    }
}

fn encode(v: ProtocolVersion, packet: &Packet) -> Result<Vec<u8>, EncodeError> {
    let mut out = BytesMut::new();
    packet.encode(v, &mut out)?;
    Ok(out.to_vec())
}

fn s(text: &str) -> MqttString {
    MqttString::new(text).expect("valid string")
}

fn pid(value: u16) -> PacketId {
    PacketId::new(value).expect("non-zero")
}

/// A CONNECT frame: protocol name "MQTT", the level of `v`, `flags`, keep alive 60, an
/// empty property block in 5.0, then `payload`.
fn conn(v: ProtocolVersion, flags: u8, payload: &[u8]) -> Vec<u8> {
    let header = [0, 4, b'M', b'Q', b'T', b'T', v.level(), flags, 0, 60];
    frame(0x10, &cat(&[&header, &props(v, &[]), payload]))
}

fn connect_of(packet: Packet) -> Connect {
    match packet {
        Packet::Connect(connect) => Connect::clone(&connect),
        other => panic!("not a CONNECT: {other:?}"),
    }
}

fn publish_of(packet: Packet) -> Publish {
    match packet {
        Packet::Publish(publish) => publish,
        other => panic!("not a PUBLISH: {other:?}"),
    }
}

fn connect_struct(v: ProtocolVersion) -> Connect {
    Connect {
        protocol_version: v,
        clean_start: true,
        keep_alive: 60,
        properties: ConnectProperties::default(),
        client_id: s("c"),
        will: None,
        username: None,
        password: None,
    }
}

// --- Fixed header flags ----------------------------------------------------------------------

/// (packet type, flags table 2.2 requires, a minimal valid body) for every type but PUBLISH.
fn minimal_bodies(v: ProtocolVersion) -> Vec<(u8, u8, Vec<u8>)> {
    let p = props(v, &[]);
    let name = [0, 4, b'M', b'Q', b'T', b'T', v.level(), 0x02, 0, 0];
    let mut list = vec![
        (1, 0, cat(&[&name, &p, &[0, 0]])),
        (2, 0, cat(&[&[0, 0], &p])),
        (4, 0, vec![0, 1]),
        (5, 0, vec![0, 1]),
        (6, 2, vec![0, 1]),
        (7, 0, vec![0, 1]),
        (8, 2, cat(&[&[0, 1], &p, &[0, 1, b'a', 0]])),
        (9, 0, cat(&[&[0, 1], &p, &[0]])),
        (10, 2, cat(&[&[0, 1], &p, &[0, 1, b'a']])),
        (11, 0, cat(&[&[0, 1], &p, if v == V5 { &[0] } else { &[] }])),
        (12, 0, vec![]),
        (13, 0, vec![]),
        (14, 0, vec![]),
    ];
    if v == V5 {
        list.push((15, 0, vec![]));
    }
    list
}

/// Each packet type decodes with exactly the listed flags and is encoded with them.
fn listed_flags_only(v: ProtocolVersion, kinds: &[u8]) {
    for (kind, flags, body) in minimal_bodies(v) {
        if !kinds.is_empty() && !kinds.contains(&kind) {
            continue;
        }
        let wire = frame(kind << 4 | flags, &body);
        let packet = accept(v, &wire);
        assert_eq!(encode(v, &packet), Ok(wire), "type {kind} re-encodes");
        for other in (0..16).filter(|&f| f != flags) {
            reject(v, &frame(kind << 4 | other, &body), MALFORMED);
        }
    }
}

statements! {
    /// Where a flag bit is reserved it carries the value listed in table 2.2.
    fn v311_mqtt_2_2_2_1() { listed_flags_only(V3, &[]) }
}

/// Invalid fixed-header flags make the receiver close the connection.
#[test]
fn v311_mqtt_2_2_2_2() {
    listed_flags_only(V3, &[]);
    // Types 0 and 15 are reserved in 3.1.1.
    for first in (0x00..=0x0F).chain(0xF0..=0xFF) {
        reject(V3, &[first, 0x00], MALFORMED);
    }
}

/// Reserved fixed-header flag bits are set to the listed values.
#[test]
fn v5_mqtt_2_1_3_1() {
    listed_flags_only(V5, &[]);
    for first in 0x00..=0x0F {
        reject(V5, &[first, 0x00], MALFORMED);
    }
}

statements! {
    /// PUBREL flags are 0010; any other value is malformed.
    fn v311_mqtt_3_6_1_1() { listed_flags_only(V3, &[6]) }

    /// PUBREL flags are 0010; any other value is malformed.
    fn v5_mqtt_3_6_1_1() { listed_flags_only(V5, &[6]) }

    /// SUBSCRIBE flags are 0010; any other value is malformed.
    fn v311_mqtt_3_8_1_1() { listed_flags_only(V3, &[8]) }

    /// SUBSCRIBE flags are 0010; any other value is malformed.
    fn v5_mqtt_3_8_1_1() { listed_flags_only(V5, &[8]) }

    /// UNSUBSCRIBE flags are 0010; any other value is malformed.
    fn v311_mqtt_3_10_1_1() { listed_flags_only(V3, &[10]) }

    /// UNSUBSCRIBE flags are 0010; any other value is malformed.
    fn v5_mqtt_3_10_1_1() { listed_flags_only(V5, &[10]) }
}

/// The server validates that DISCONNECT's reserved bits are zero and disconnects otherwise.
#[test]
fn v311_mqtt_3_14_1_1() {
    listed_flags_only(V3, &[14]);
    // A 3.1.1 DISCONNECT has no variable header or payload.
    reject(V3, &[0xE0, 0x01, 0x00], MALFORMED);
}

statements! {
    /// DISCONNECT reserved bits are 0; otherwise DISCONNECT with 0x81 Malformed Packet.
    fn v5_mqtt_3_14_1_1() { listed_flags_only(V5, &[14]) }

    /// AUTH flags are 0000; any other value is malformed.
    fn v5_mqtt_3_15_1_1() { listed_flags_only(V5, &[15]) }
}

// --- Packet identifiers ----------------------------------------------------------------------

fn zero_packet_id_refused(v: ProtocolVersion) {
    assert_eq!(PacketId::new(0), None);
    let p = props(v, &[]);
    for id in [[0, 0], [0, 1]] {
        let frames = [
            frame(0x82, &cat(&[&id, &p, &[0, 1, b'a', 0]])),
            frame(0xA2, &cat(&[&id, &p, &[0, 1, b'a']])),
            frame(0x32, &cat(&[&[0, 1, b't'], &id, &p])),
            frame(0x34, &cat(&[&[0, 1, b't'], &id, &p])),
        ];
        for wire in frames {
            if id == [0, 0] {
                reject(v, &wire, PROTOCOL);
            } else {
                accept(v, &wire);
            }
        }
    }
}

statements! {
    /// SUBSCRIBE, UNSUBSCRIBE and QoS > 0 PUBLISH carry a non-zero packet identifier.
    fn v311_mqtt_2_3_1_1() { zero_packet_id_refused(V3) }

    /// New SUBSCRIBE, UNSUBSCRIBE and QoS > 0 PUBLISH get a non-zero packet identifier.
    fn v5_mqtt_2_2_1_3() { zero_packet_id_refused(V5) }
}

fn qos0_has_no_packet_id(v: ProtocolVersion) {
    // The two bytes after the topic of a QoS 0 PUBLISH are not an identifier.
    let wire = frame(0x30, &cat(&[&[0, 1, b't'], &props(v, &[]), &[0x00, 0x01]]));
    let publish = publish_of(accept(v, &wire));
    assert_eq!(publish.packet_id, None);
    assert_eq!(publish.payload, Bytes::from_static(&[0x00, 0x01]));
    assert_eq!(encode(v, &Packet::Publish(publish.clone())), Ok(wire));
    // The encoder refuses a QoS 0 PUBLISH with an identifier and a QoS 1 one without.
    let with_id = Publish {
        packet_id: Some(pid(1)),
        ..publish.clone()
    };
    let result = encode(v, &Packet::Publish(with_id));
    assert_eq!(result, Err(EncodeError::PacketIdMismatch));
    let without_id = Publish {
        qos: QoS::AtLeastOnce,
        ..publish
    };
    let result = encode(v, &Packet::Publish(without_id));
    assert_eq!(result, Err(EncodeError::PacketIdMismatch));
}

statements! {
    /// A QoS 0 PUBLISH contains no packet identifier.
    fn v311_mqtt_2_3_1_5() { qos0_has_no_packet_id(V3) }

    /// A QoS 0 PUBLISH contains no packet identifier.
    fn v5_mqtt_2_2_1_2() { qos0_has_no_packet_id(V5) }
}

// --- CONNECT ---------------------------------------------------------------------------------

fn protocol_name_checked(v: ProtocolVersion) {
    let ok = conn(v, 0x02, &str16(b"c"));
    assert_eq!(connect_of(accept(v, &ok)).protocol_version, v);
    for name in [&b"MQTX"[..], b"mqtt", b"MQTT ", b"MQ"] {
        let body = cat(&[&str16(name), &[v.level(), 0x02, 0, 60], &str16(b"c")]);
        let e = reject(v, &frame(0x10, &body), PROTOCOL);
        assert!(matches!(e, DecodeError::Protocol(_)), "{e:?}");
    }
    // MQTT 3.1's name goes with its level 3 only, and level 3 with that name: any other pairing
    // is an unsupported version.
    let body = cat(&[&str16(b"MQIsdp"), &[3, 0x02, 0, 60], &str16(b"c")]);
    assert_eq!(
        connect_of(accept(v, &frame(0x10, &body))).protocol_version,
        V31
    );
    for (name, level) in [(&b"MQIsdp"[..], 4), (b"MQTT", 3)] {
        let body = cat(&[&str16(name), &[level, 0x02, 0, 60], &str16(b"c")]);
        let e = decode(v, &frame(0x10, &body));
        assert_eq!(e, Err(DecodeError::UnsupportedProtocolVersion(level)));
    }
}

statements! {
    /// A CONNECT with a wrong protocol name is not processed under this specification.
    fn v311_mqtt_3_1_2_1() { protocol_name_checked(V3) }

    /// The protocol name is "MQTT"; anything else is refused (optionally with CONNACK 0x84).
    fn v5_mqtt_3_1_2_1() { protocol_name_checked(V5) }
}

fn reserved_connect_flag(v: ProtocolVersion) {
    reject(v, &conn(v, 0x03, &str16(b"c")), MALFORMED);
    reject(v, &conn(v, 0x01, &str16(b"c")), MALFORMED);
    let mut connect = connect_struct(v);
    connect.password = Some(Bytes::from_static(b"p"));
    connect.username = Some(s("u"));
    let wire = encode(v, &Packet::Connect(connect.into())).expect("encodes");
    assert_eq!(wire[9] & 0x01, 0, "reserved flag clear");
}

statements! {
    /// The server validates that the CONNECT reserved flag is zero and disconnects otherwise.
    fn v311_mqtt_3_1_2_3() { reserved_connect_flag(V3) }

    /// The server validates that the CONNECT reserved flag is 0.
    fn v5_mqtt_3_1_2_3() { reserved_connect_flag(V5) }
}

/// The payload of a CONNECT with a will: client id, will properties (5.0), topic, message.
fn will_payload(v: ProtocolVersion, topic: &[u8], message: &[u8]) -> Vec<u8> {
    cat(&[&str16(b"c"), &props(v, &[]), &str16(topic), &str16(message)])
}

fn will_fields_present(v: ProtocolVersion) {
    let wire = conn(v, 0x06, &will_payload(v, b"w", b"m"));
    let connect = connect_of(accept(v, &wire));
    let will = connect.will.clone().expect("a will");
    assert_eq!((will.topic.as_str(), &will.payload[..]), ("w", &b"m"[..]));
    assert_eq!(encode(v, &Packet::Connect(connect.into())), Ok(wire));
    // Will flag 1 with the will fields missing, or only the topic present.
    reject(v, &conn(v, 0x06, &str16(b"c")), MALFORMED);
    let topic_only = cat(&[&str16(b"c"), &props(v, &[]), &str16(b"w")]);
    reject(v, &conn(v, 0x06, &topic_only), MALFORMED);
}

statements! {
    /// Will Flag 1: the Will Topic and Will Message are present in the payload.
    fn v311_mqtt_3_1_2_9() { will_fields_present(V3) }

    /// Will Flag 1: Will Properties, Will Topic and Will Payload are present in the payload.
    fn v5_mqtt_3_1_2_9() { will_fields_present(V5) }
}

/// Will Flag 0 with the given will bits set is malformed; the encoder never sets them alone.
fn will_bits_need_will(v: ProtocolVersion, bits: &[u8]) {
    for &bit in bits {
        reject(v, &conn(v, 0x02 | bit, &str16(b"c")), MALFORMED);
    }
    let wire = encode(v, &Packet::Connect(connect_struct(v).into())).expect("encodes");
    assert_eq!(wire[9] & 0x3C, 0, "no will: will flag, QoS, retain 0");
}

/// Will Flag 0: Will QoS and Will Retain are zero and no will fields are present.
#[test]
fn v311_mqtt_3_1_2_11() {
    will_bits_need_will(V3, &[0x08, 0x10, 0x18, 0x20]);
    let fields = cat(&[&str16(b"c"), &str16(b"w"), &str16(b"m")]);
    reject(V3, &conn(V3, 0x02, &fields), MALFORMED);
}

statements! {
    /// Will Flag 0 requires Will QoS 0.
    fn v311_mqtt_3_1_2_13() { will_bits_need_will(V3, &[0x08, 0x10]) }

    /// Will Flag 0 requires Will QoS 0.
    fn v5_mqtt_3_1_2_11() { will_bits_need_will(V5, &[0x08, 0x10]) }

    /// Will Flag 0 requires Will Retain 0.
    fn v311_mqtt_3_1_2_15() { will_bits_need_will(V3, &[0x20]) }

    /// Will Flag 0 requires Will Retain 0.
    fn v5_mqtt_3_1_2_13() { will_bits_need_will(V5, &[0x20]) }
}

fn will_qos_values(v: ProtocolVersion) {
    let payload = will_payload(v, b"w", b"m");
    for (bits, qos) in [
        (0x00, QoS::AtMostOnce),
        (0x08, QoS::AtLeastOnce),
        (0x10, QoS::ExactlyOnce),
    ] {
        let connect = connect_of(accept(v, &conn(v, 0x06 | bits, &payload)));
        assert_eq!(connect.will.expect("a will").qos, qos);
    }
    reject(v, &conn(v, 0x1E, &payload), MALFORMED);
}

statements! {
    /// Will QoS is 0, 1 or 2, never 3.
    fn v311_mqtt_3_1_2_14() { will_qos_values(V3) }

    /// With Will Flag 1, Will QoS is 0, 1 or 2.
    fn v5_mqtt_3_1_2_12() { will_qos_values(V5) }
}

/// Flag `bit` set: the field follows the client id; flag clear: no such field.
fn credential_flag(v: ProtocolVersion, bit: u8, present: bool) {
    let user = if bit == 0x40 { 0x80 } else { 0 }; // a 3.1.1 password needs a user name
    let before: &[u8] = if user != 0 { &[0, 1, b'u'] } else { &[] };
    let with_field = cat(&[&str16(b"c"), before, &str16(b"x")]);
    let without = cat(&[&str16(b"c"), before]);
    if present {
        reject(v, &conn(v, 0x02 | user | bit, &without), MALFORMED);
        let connect = connect_of(accept(v, &conn(v, 0x02 | user | bit, &with_field)));
        let field = if bit == 0x80 {
            connect.username.map(MqttString::into_bytes)
        } else {
            connect.password
        };
        assert_eq!(field, Some(Bytes::from_static(b"x")));
    } else {
        reject(v, &conn(v, 0x02 | user, &with_field), MALFORMED);
        let connect = connect_of(accept(v, &conn(v, 0x02 | user, &without)));
        assert!(if bit == 0x80 {
            connect.username.is_none()
        } else {
            connect.password.is_none()
        });
        let wire = encode(v, &Packet::Connect(connect.into())).expect("encodes");
        assert_eq!(wire[9] & bit, 0, "absent field, clear flag");
    }
}

statements! {
    /// User Name Flag 0: no user name in the payload.
    fn v311_mqtt_3_1_2_18() { credential_flag(V3, 0x80, false) }

    /// User Name Flag 1: a user name is present in the payload.
    fn v311_mqtt_3_1_2_19() { credential_flag(V3, 0x80, true) }

    /// Password Flag 0: no password in the payload.
    fn v311_mqtt_3_1_2_20() { credential_flag(V3, 0x40, false) }

    /// Password Flag 1: a password is present in the payload.
    fn v311_mqtt_3_1_2_21() { credential_flag(V3, 0x40, true) }

    /// User Name Flag 0: no User Name in the payload.
    fn v5_mqtt_3_1_2_16() { credential_flag(V5, 0x80, false) }

    /// User Name Flag 1: a User Name is present in the payload.
    fn v5_mqtt_3_1_2_17() { credential_flag(V5, 0x80, true) }

    /// Password Flag 0: no Password in the payload.
    fn v5_mqtt_3_1_2_18() { credential_flag(V5, 0x40, false) }
}

/// Password Flag 1: a Password is present in the payload (5.0 allows it without a User Name).
#[test]
fn v5_mqtt_3_1_2_19() {
    credential_flag(V5, 0x40, true);
    let wire = conn(V5, 0x42, &cat(&[&str16(b"c"), &str16(b"p")]));
    let connect = connect_of(accept(V5, &wire));
    assert_eq!(connect.username, None);
    assert_eq!(connect.password, Some(Bytes::from_static(b"p")));
}

/// User Name Flag 0 requires Password Flag 0.
#[test]
fn v311_mqtt_3_1_2_22() {
    let wire = conn(V3, 0x42, &cat(&[&str16(b"c"), &str16(b"p")]));
    reject(V3, &wire, MALFORMED);
    let mut connect = connect_struct(V3);
    connect.password = Some(Bytes::from_static(b"p"));
    assert!(encode(V3, &Packet::Connect(connect.into())).is_err());
}

fn payload_order(v: ProtocolVersion) {
    let connect = Connect {
        will: Some(Will {
            topic: "w".parse().expect("topic"),
            payload: Bytes::from_static(b"m"),
            qos: QoS::AtMostOnce,
            retain: false,
            properties: WillProperties::default(),
        }),
        username: Some(s("u")),
        password: Some(Bytes::from_static(b"p")),
        ..connect_struct(v)
    };
    let wire = encode(v, &Packet::Connect(connect.clone().into())).expect("encodes");
    #[rustfmt::skip]
    let order = cat(&[
        &[0, 1, b'c'],              // client identifier
        &props(v, &[]),       // will properties (5.0)
        &[0, 1, b'w', 0, 1, b'm'],  // will topic, will message
        &[0, 1, b'u', 0, 1, b'p'],  // user name, password
    ]);
    assert!(wire.ends_with(&order), "{wire:02X?}");
    assert_eq!(connect_of(accept(v, &wire)), connect);
}

statements! {
    /// CONNECT payload fields appear in the order Client Identifier, Will Topic, Will Message,
    /// User Name, Password.
    fn v311_mqtt_3_1_3_1() { payload_order(V3) }

    /// CONNECT payload fields appear in the order Client Identifier, Will Properties, Will Topic,
    /// Will Payload, User Name, Password.
    fn v5_mqtt_3_1_3_1() { payload_order(V5) }
}

fn client_id_first(v: ProtocolVersion) {
    reject(v, &conn(v, 0x02, &[]), MALFORMED);
    let connect = connect_of(accept(v, &conn(v, 0x02, &str16(b"id"))));
    assert_eq!(connect.client_id, s("id"));
    let empty = connect_of(accept(v, &conn(v, 0x02, &[0, 0])));
    assert_eq!(empty.client_id, MqttString::empty());
}

statements! {
    /// The Client Identifier is present and is the first payload field.
    fn v311_mqtt_3_1_3_3() { client_id_first(V3) }

    /// The ClientID is present and is the first payload field.
    fn v5_mqtt_3_1_3_3() { client_id_first(V5) }
}

// --- CONNACK ---------------------------------------------------------------------------------

/// CONNACK acknowledge flags bits 7-1 are reserved and zero.
#[test]
fn v5_mqtt_3_2_2_1() {
    for flags in 0x02..=0xFF {
        reject(V5, &[0x20, 0x03, flags, 0x00, 0x00], MALFORMED);
    }
    let packet = accept(V5, &[0x20, 0x03, 0x01, 0x00, 0x00]);
    assert_eq!(encode(V5, &packet), Ok(vec![0x20, 0x03, 0x01, 0x00, 0x00]));
}

// --- Reason codes ----------------------------------------------------------------------------

/// The body of a packet of type `first` carrying the reason code `code`.
fn with_code(v: ProtocolVersion, first: u8, code: u8) -> Vec<u8> {
    match (first >> 4, v) {
        (2, _) => vec![0x00, code, 0x00],
        (9 | 11, ProtocolVersion::V5) => vec![0x00, 0x01, 0x00, code],
        (4..=7 | 9, _) => vec![0x00, 0x01, code],
        (14, _) => vec![code],
        _ => vec![code, 0x00],
    }
}

fn reason_of(packet: &Packet) -> ReasonCode {
    match packet {
        Packet::ConnAck(p) => p.reason_code,
        Packet::PubAck(p) | Packet::PubRec(p) | Packet::PubRel(p) | Packet::PubComp(p) => {
            p.reason_code
        }
        Packet::SubAck(SubAck { reason_codes, .. })
        | Packet::UnsubAck(UnsubAck { reason_codes, .. }) => reason_codes[0],
        Packet::Disconnect(p) => p.reason_code,
        Packet::Auth(p) => p.reason_code,
        other => panic!("no reason code in {other:?}"),
    }
}

/// Every byte decodes as a reason code of this packet exactly when the spec lists it there.
fn only_listed_codes(v: ProtocolVersion, first: u8, listed: &[u8]) {
    for byte in 0..=255u8 {
        let wire = frame(first, &with_code(v, first, byte));
        match decode(v, &wire) {
            Ok(packet) if listed.contains(&byte) => assert_eq!(reason_of(&packet).as_u8(), byte),
            Ok(packet) => panic!("{byte:#04X} accepted in {packet:?}"),
            Err(e) if listed.contains(&byte) => panic!("{byte:#04X} refused: {e}"),
            Err(e) => assert_eq!(e.reason_code(), PROTOCOL, "{byte:#04X}"),
        }
    }
}

#[rustfmt::skip]
const CONNACK_CODES: &[u8] = &[
    0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C, 0x90, 0x95,
    0x97, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F,
];
const PUBACK_CODES: &[u8] = &[0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99];
const PUBREL_CODES: &[u8] = &[0x00, 0x92];
#[rustfmt::skip]
const SUBACK_CODES: &[u8] = &[
    0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2,
];
const UNSUBACK_CODES: &[u8] = &[0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91];
#[rustfmt::skip]
const DISCONNECT_CODES: &[u8] = &[
    0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8C, 0x8D, 0x8E, 0x8F, 0x90, 0x93,
    0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1, 0xA2,
];
const AUTH_CODES: &[u8] = &[0x00, 0x18, 0x19];
const V311_SUBACK_CODES: &[u8] = &[0x00, 0x01, 0x02, 0x80];

/// Whatever SUBACK reason codes the broker picks, a 3.1.1 SUBACK says granted QoS or 0x80.
fn v311_suback_encoding() {
    let reason_codes: Vec<ReasonCode> = ReasonCode::ALL
        .iter()
        .copied()
        .filter(|c| c.allowed_in(tern_codec::PacketType::SubAck))
        .collect();
    let suback = SubAck {
        packet_id: pid(1),
        properties: AckProperties::default(),
        reason_codes,
    };
    let wire = encode(V3, &Packet::SubAck(suback)).expect("encodes");
    for code in &wire[4..] {
        assert!(V311_SUBACK_CODES.contains(code), "{code:#04X}");
    }
}

/// An UNSUBACK without reason codes is refused and never encoded.
fn unsuback_not_empty() {
    reject(V5, &[0xB0, 0x03, 0x00, 0x01, 0x00], PROTOCOL);
    let empty = UnsubAck {
        packet_id: pid(1),
        properties: AckProperties::default(),
        reason_codes: Vec::new(),
    };
    let result = encode(V5, &Packet::UnsubAck(empty));
    assert_eq!(result, Err(EncodeError::EmptyList));
}

statements! {
    /// CONNACK carries one of the Connect Reason Codes.
    fn v5_mqtt_3_2_2_8() { only_listed_codes(V5, 0x20, CONNACK_CODES) }

    /// PUBACK carries one of the PUBACK Reason Codes.
    fn v5_mqtt_3_4_2_1() { only_listed_codes(V5, 0x40, PUBACK_CODES) }

    /// PUBREC carries one of the PUBREC Reason Codes.
    fn v5_mqtt_3_5_2_1() { only_listed_codes(V5, 0x50, PUBACK_CODES) }

    /// PUBREL carries one of the PUBREL Reason Codes.
    fn v5_mqtt_3_6_2_1() { only_listed_codes(V5, 0x62, PUBREL_CODES) }

    /// PUBCOMP carries one of the PUBCOMP Reason Codes.
    fn v5_mqtt_3_7_2_1() { only_listed_codes(V5, 0x70, PUBREL_CODES) }

    /// SUBACK return codes are only 0x00, 0x01, 0x02 and 0x80.
    fn v311_mqtt_3_9_3_2() {
        only_listed_codes(V3, 0x90, V311_SUBACK_CODES);
        v311_suback_encoding();
    }

    /// SUBACK carries one of the Subscribe Reason Codes per topic filter.
    fn v5_mqtt_3_9_3_2() { only_listed_codes(V5, 0x90, SUBACK_CODES) }

    /// UNSUBACK carries one Unsubscribe Reason Code per topic filter.
    fn v5_mqtt_3_11_3_2() { only_listed_codes(V5, 0xB0, UNSUBACK_CODES); unsuback_not_empty() }

    /// DISCONNECT carries one of the DISCONNECT Reason Codes.
    fn v5_mqtt_3_14_2_1() { only_listed_codes(V5, 0xE0, DISCONNECT_CODES) }

    /// AUTH carries one of the Authenticate Reason Codes.
    fn v5_mqtt_3_15_2_1() { only_listed_codes(V5, 0xF0, AUTH_CODES) }
}

// --- PUBLISH ---------------------------------------------------------------------------------

fn publish_frame(v: ProtocolVersion, first: u8) -> Vec<u8> {
    let id: &[u8] = if first & 0x06 != 0 { &[0, 1] } else { &[] };
    frame(first, &cat(&[&str16(b"t"), id, &props(v, &[]), b"x"]))
}

fn dup_only_with_qos(v: ProtocolVersion) {
    reject(v, &publish_frame(v, 0x38), MALFORMED);
    reject(v, &publish_frame(v, 0x39), MALFORMED);
    assert!(publish_of(accept(v, &publish_frame(v, 0x3A))).dup);
    assert!(publish_of(accept(v, &publish_frame(v, 0x3C))).dup);
}

statements! {
    /// The DUP flag is 0 in every QoS 0 PUBLISH.
    fn v311_mqtt_3_3_1_2() { dup_only_with_qos(V3) }

    /// The DUP flag is 0 in every QoS 0 PUBLISH.
    fn v5_mqtt_3_3_1_2() { dup_only_with_qos(V5) }
}

fn no_qos_3(v: ProtocolVersion) {
    for first in [0x36, 0x37, 0x3E, 0x3F] {
        reject(v, &publish_frame(v, first), MALFORMED);
    }
}

statements! {
    /// A PUBLISH with both QoS bits set is refused and the connection closed.
    fn v311_mqtt_3_3_1_4() { no_qos_3(V3) }

    /// A PUBLISH never has both QoS bits set.
    fn v5_mqtt_3_3_1_4() { no_qos_3(V5) }
}

/// A Topic Alias of 0 is never sent.
#[test]
fn v5_mqtt_3_3_2_8() {
    let with_alias = |alias: [u8; 2]| {
        let block = cat(&[&[0x23], &alias]);
        frame(0x30, &cat(&[&str16(b"t"), &props(V5, &block), b"x"]))
    };
    // Section 3.3.2.3.4: a receiver answers Topic Alias 0 with DISCONNECT 0x94.
    reject(V5, &with_alias([0, 0]), ReasonCode::TopicAliasInvalid);
    let publish = publish_of(accept(V5, &with_alias([0, 1])));
    assert_eq!(publish.properties.topic_alias, Some(1));
}

// --- Properties and variable byte integers ---------------------------------------------------

/// Variable byte integers use the fewest bytes that hold the value.
#[test]
fn v5_mqtt_1_5_5_1() {
    assert!(decode_varint(&[0x80, 0x00]).is_err());
    assert!(decode_varint(&[0xFF, 0x80, 0x00]).is_err());
    assert!(decode_varint(&[0x80, 0x80, 0x80, 0x00]).is_err());
    assert!(decode_varint(&[0x80, 0x80, 0x80, 0x80, 0x01]).is_err());
    let largest = decode_varint(&[0xFF, 0xFF, 0xFF, 0x7F]);
    assert_eq!(largest, Ok(Some((268_435_455, 4))));
    // Remaining length 3 written in two bytes.
    reject(V5, &[0x30, 0x83, 0x00, 0x00, 0x01, b't', 0x00], MALFORMED);
    // Property length 0 written in two bytes; subscription identifier 1 written in two bytes.
    reject(V5, &[0x30, 0x05, 0x00, 0x01, b't', 0x80, 0x00], MALFORMED);
    let sub_id = with_props(0x82, &[0, 1], &[0x0B, 0x81, 0x00], &[0, 1, b'a', 0]);
    reject(V5, &sub_id, MALFORMED);
    // The encoder's remaining length switches width exactly at 128 and 16,384.
    for (payload, header) in [
        (124, &[0x30, 0x7F][..]),
        (125, &[0x30, 0x80, 0x01]),
        (16_380, &[0x30, 0xFF, 0x7F]),
        (16_381, &[0x30, 0x80, 0x80, 0x01]),
    ] {
        let publish = Publish::new("t".parse().expect("topic"), Bytes::from(vec![0; payload]));
        let wire = encode(V3, &Packet::Publish(publish)).expect("encodes");
        assert!(wire.starts_with(header), "{payload}: {:02X?}", &wire[..5]);
    }
}

/// With no properties, a Property Length of zero is present.
#[test]
fn v5_mqtt_2_2_2_1() {
    let t = "t".parse().expect("topic");
    let publish = encode(V5, &Packet::Publish(Publish::new(t, Bytes::new()))).expect("encodes");
    assert_eq!(publish, [0x30, 0x04, 0x00, 0x01, b't', 0x00]);
    let connect = encode(V5, &Packet::Connect(connect_struct(V5).into())).expect("encodes");
    assert_eq!(connect[12], 0x00, "{connect:02X?}");
    let will = conn(V5, 0x06, &will_payload(V5, b"w", b"m"));
    let subscribe = with_props(0x82, &[0, 1], &[], &[0, 1, b'a', 0]);
    let suback = with_props(0x90, &[0, 1], &[], &[0]);
    for wire in [will, subscribe, suback] {
        assert_eq!(encode(V5, &accept(V5, &wire)), Ok(wire));
    }
    // A CONNACK without its property length is refused.
    reject(V5, &[0x20, 0x02, 0x00, 0x00], MALFORMED);
}

/// A 5.0 frame: `before`, the property block `block`, `after`.
fn with_props(first: u8, before: &[u8], block: &[u8], after: &[u8]) -> Vec<u8> {
    frame(first, &cat(&[before, &props(V5, block), after]))
}

/// A property that may appear once, given twice, is a Protocol Error.
#[test]
fn v5_duplicate_property_is_protocol_error() {
    let twice = |block: &[u8]| cat(&[block, block]);
    let connect = [0, 4, b'M', b'Q', b'T', b'T', 5, 0x02, 0, 0];
    let frames = [
        with_props(0x10, &connect, &twice(&[0x11, 0, 0, 0, 1]), &[0, 0]),
        with_props(0x30, &str16(b"t"), &twice(&[0x02, 0, 0, 0, 1]), &[]),
        with_props(0x40, &[0, 1, 0x10], &twice(&[0x1F, 0, 1, b'r']), &[]),
        with_props(0x82, &[0, 1], &twice(&[0x0B, 0x01]), &[0, 1, b'a', 0]),
    ];
    for wire in frames {
        reject(V5, &wire, PROTOCOL);
    }
    // User Property and a PUBLISH's Subscription Identifier may repeat.
    let user = [0x26, 0, 1, b'k', 0, 1, b'v'];
    let block = cat(&[&user, &user, &[0x0B, 0x01, 0x0B, 0x02]]);
    accept(V5, &with_props(0x30, &str16(b"t"), &block, &[]));
}

/// A property identifier not valid for its packet type is a Malformed Packet (2.2.2.2).
#[test]
fn v5_property_not_valid_for_packet_is_malformed() {
    let frames = [
        with_props(0x30, &str16(b"t"), &[0x11, 0, 0, 0, 1], &[]),
        with_props(0x40, &[0, 1, 0x10], &[0x23, 0, 1], &[]),
        with_props(0x82, &[0, 1], &[0x1F, 0, 1, b'r'], &[0, 1, b'a', 0]),
        // An identifier the spec does not define at all.
        with_props(0xE0, &[0x00], &[0x7F, 0x00], &[]),
    ];
    for wire in frames {
        reject(V5, &wire, MALFORMED);
    }
}

// --- Framing ---------------------------------------------------------------------------------

/// A packet above the maximum size is refused from its fixed header alone (0x95), before any
/// of its body arrives, and nothing is consumed.
#[test]
fn decoder_refuses_oversize_packet_from_fixed_header() {
    for v in [V3, V5] {
        let mut decoder = Decoder::new(v, 16);
        // Remaining length 14: 16 bytes in all, allowed; the decoder waits for the body.
        let mut buf = BytesMut::from(&[0x30, 0x0E][..]);
        assert_eq!(decoder.decode(&mut buf), Ok(None));
        // Remaining length 15: 17 bytes in all.
        let mut buf = BytesMut::from(&[0x30, 0x0F][..]);
        let e = decoder.decode(&mut buf).expect_err("too large");
        assert_eq!(e, DecodeError::PacketTooLarge { size: 17, max: 16 });
        assert_eq!(e.reason_code(), ReasonCode::PacketTooLarge);
        assert_eq!(buf.len(), 2, "nothing consumed");
        // The largest remaining length, announced in four bytes.
        let mut decoder = Decoder::new(v, 1 << 20);
        let mut buf = BytesMut::from(&[0x30, 0xFF, 0xFF, 0xFF, 0x7F][..]);
        let e = decoder.decode(&mut buf).expect_err("too large");
        assert_eq!(e.reason_code(), ReasonCode::PacketTooLarge);
        // Unlimited: the same header only waits for more bytes.
        let mut decoder = Decoder::new(v, PACKET_SIZE_MAX);
        assert_eq!(decoder.decode(&mut buf), Ok(None));
    }
}
