//! Byte-exact vectors for all fifteen MQTT control packets in 3.1.1 and 5.0: every hand-written
//! frame, laid out field by field from the specification, decodes to the expected packet, and
//! encoding that packet gives back exactly the same bytes.

// In a test crate a failed expectation is a failed test, and `expect` names what was expected.
#![allow(clippy::expect_used)]

use bytes::{Bytes, BytesMut};
use tern_codec::ReasonCode as R;
use tern_codec::RetainHandling::{self, DoNotSend, SendAtSubscribe, SendIfNew};
use tern_codec::{
    Ack, AckProperties, Auth, AuthProperties, ConnAck, ConnAckProperties, Connect,
    ConnectProperties, Decoder, Disconnect, DisconnectProperties, FilterList, MqttString, Packet,
    PacketId, PayloadFormat, PropertyOrder, ProtocolVersion, Publish, PublishProperties, QoS,
    SubAck, Subscribe, SubscribeProperties, Subscription, SubscriptionIds, SubscriptionList,
    SubscriptionOptions, TopicFilter, TopicName, UnsubAck, Unsubscribe, UnsubscribeProperties,
    UserProperties, Will, WillProperties, PACKET_SIZE_MAX,
};

const V3: ProtocolVersion = ProtocolVersion::V311;
const V5: ProtocolVersion = ProtocolVersion::V5;

/// Asserts that `wire` is one complete frame that decodes to `packet`, and that `packet` encodes
/// to exactly `wire`.
fn vector(version: ProtocolVersion, wire: &[u8], packet: Packet) {
    let mut decoder = Decoder::new(version, PACKET_SIZE_MAX);
    let mut short = BytesMut::from(&wire[..wire.len() - 1]);
    assert_eq!(decoder.decode(&mut short), Ok(None), "one byte short: wait");
    let mut buf = BytesMut::from(wire);
    let decoded = decoder.decode(&mut buf).expect("decodes");
    assert_eq!(decoded.as_ref(), Some(&packet), "decoded packet");
    assert!(buf.is_empty(), "the whole frame is consumed");
    assert_eq!(encode(version, &packet), wire, "encoded bytes");
    assert_eq!(packet.encoded_len(version), Ok(wire.len()));
}

/// Asserts that `wire` decodes to `packet` (a form the encoder never produces).
fn decodes_to(version: ProtocolVersion, wire: &[u8], packet: Packet) {
    let mut buf = BytesMut::from(wire);
    let decoded = Decoder::new(version, PACKET_SIZE_MAX).decode(&mut buf);
    assert_eq!(decoded, Ok(Some(packet)));
}

fn encode(version: ProtocolVersion, packet: &Packet) -> Vec<u8> {
    let mut out = BytesMut::new();
    packet.encode(version, &mut out).expect("encodes");
    out.to_vec()
}

fn s(text: &str) -> MqttString {
    MqttString::new(text).expect("valid string")
}

fn bin(bytes: &'static [u8]) -> Bytes {
    Bytes::from_static(bytes)
}

fn topic(text: &str) -> TopicName {
    text.parse().expect("valid topic name")
}

fn filter(text: &str) -> TopicFilter {
    text.parse().expect("valid topic filter")
}

fn pid(value: u16) -> PacketId {
    PacketId::new(value).expect("non-zero packet identifier")
}

fn users(pairs: &[(&str, &str)]) -> UserProperties {
    let mut list = UserProperties::new();
    for (key, value) in pairs {
        list.push(&s(key), &s(value));
    }
    list
}

/// A CONNECT with no flags, keep alive off and no properties.
fn connect(version: ProtocolVersion, client_id: &str) -> Connect {
    Connect {
        protocol_version: version,
        clean_start: false,
        keep_alive: 0,
        properties: ConnectProperties::default(),
        client_id: s(client_id),
        will: None,
        username: None,
        password: None,
    }
}

fn connack(session_present: bool, reason_code: R, properties: ConnAckProperties) -> Packet {
    let connack = ConnAck {
        session_present,
        reason_code,
        properties,
    };
    Packet::ConnAck(connack.into())
}

/// A PUBLISH without DUP, RETAIN or properties; packet identifier 0 stands for none.
fn publish(qos: QoS, id: u16, topic: TopicName, payload: &'static [u8]) -> Publish {
    Publish {
        qos,
        packet_id: PacketId::new(id),
        ..Publish::new(topic, bin(payload))
    }
}

fn ack(id: u16, reason_code: R, properties: AckProperties) -> Ack {
    Ack {
        packet_id: pid(id),
        reason_code,
        properties,
    }
}

fn reason_string(text: &str) -> AckProperties {
    AckProperties {
        reason_string: Some(s(text)),
        ..AckProperties::default()
    }
}

fn options(qos: QoS) -> SubscriptionOptions {
    SubscriptionOptions::qos(qos)
}

/// Options with every field given: QoS, No Local, Retain As Published, Retain Handling.
fn all_options(qos: QoS, nl: bool, rap: bool, rh: RetainHandling) -> SubscriptionOptions {
    SubscriptionOptions {
        qos,
        no_local: nl,
        retain_as_published: rap,
        retain_handling: rh,
    }
}

fn subscribe(
    id: u16,
    properties: SubscribeProperties,
    subs: &[(&str, SubscriptionOptions)],
) -> Packet {
    let subs: Vec<Subscription> = subs
        .iter()
        .map(|&(text, options)| Subscription {
            filter: filter(text),
            options,
        })
        .collect();
    Packet::Subscribe(Subscribe {
        packet_id: pid(id),
        properties,
        subscriptions: SubscriptionList::new(&subs),
    })
}

fn suback(id: u16, properties: AckProperties, reason_codes: &[R]) -> Packet {
    Packet::SubAck(SubAck {
        packet_id: pid(id),
        properties,
        reason_codes: reason_codes.to_vec(),
    })
}

fn unsubscribe(id: u16, properties: UnsubscribeProperties, filters: &[&str]) -> Packet {
    let filters: Vec<TopicFilter> = filters.iter().map(|f| filter(f)).collect();
    Packet::Unsubscribe(Unsubscribe {
        packet_id: pid(id),
        properties,
        filters: FilterList::new(&filters),
    })
}

fn unsuback(id: u16, properties: AckProperties, reason_codes: &[R]) -> Packet {
    Packet::UnsubAck(UnsubAck {
        packet_id: pid(id),
        properties,
        reason_codes: reason_codes.to_vec(),
    })
}

// ---------------------------------------------------------------------------------------------
// MQTT 3.1.1
// ---------------------------------------------------------------------------------------------

#[rustfmt::skip]
const V311_CONNECT_FULL: &[u8] = &[
    0x10, 0x22,                         // CONNECT, remaining length 34
    0x00, 0x04, b'M', b'Q', b'T', b'T', // protocol name "MQTT"
    0x04,                               // protocol level 4
    0xEE,                               // user name, password, will retain, will QoS 1, will, clean
    0x00, 0x3C,                         // keep alive 60
    0x00, 0x02, b'c', b'1',             // client identifier "c1"
    0x00, 0x03, b'w', b'/', b't',       // will topic "w/t"
    0x00, 0x03, b'b', b'y', b'e',       // will message "bye"
    0x00, 0x04, b'u', b's', b'e', b'r', // user name "user"
    0x00, 0x02, b'p', b'w',             // password "pw"
];

#[test]
fn v311_connect_with_will_username_password() {
    let will = Will {
        topic: topic("w/t"),
        payload: bin(b"bye"),
        qos: QoS::AtLeastOnce,
        retain: true,
        properties: WillProperties::default(),
    };
    let connect = Connect {
        clean_start: true,
        keep_alive: 60,
        will: Some(will),
        username: Some(s("user")),
        password: Some(bin(b"pw")),
        ..connect(V3, "c1")
    };
    vector(V3, V311_CONNECT_FULL, Packet::Connect(connect.into()));
}

#[test]
fn v311_connect_minimal() {
    #[rustfmt::skip]
    let wire = [
        0x10, 0x0C,                         // CONNECT, remaining length 12
        0x00, 0x04, b'M', b'Q', b'T', b'T', // protocol name
        0x04, 0x00,                         // level 4, no flags (Clean Session 0)
        0x00, 0x00,                         // keep alive off
        0x00, 0x00,                         // empty client identifier
    ];
    vector(V3, &wire, Packet::Connect(connect(V3, "").into()));
}

#[test]
fn v311_connack() {
    // CONNACK, remaining length 2, Session Present 1, return code 0x00 accepted.
    let packet = connack(true, R::Success, ConnAckProperties::default());
    vector(V3, &[0x20, 0x02, 0x01, 0x00], packet);
}

#[test]
fn v311_connack_return_code_mapping() {
    // The six 3.1.1 return codes (table 3.1) and the reason codes they stand for.
    #[rustfmt::skip]
    let codes = [
        (0x00, R::Success), (0x01, R::UnsupportedProtocolVersion),
        (0x02, R::ClientIdentifierNotValid), (0x03, R::ServerUnavailable),
        (0x04, R::BadUserNameOrPassword), (0x05, R::NotAuthorized),
    ];
    for (byte, code) in codes {
        let packet = connack(false, code, ConnAckProperties::default());
        vector(V3, &[0x20, 0x02, 0x00, byte], packet);
    }
    // MQTT 5 refusals reach a 3.1.1 client as the closest return code.
    #[rustfmt::skip]
    let mapped = [
        (R::BadAuthenticationMethod, 0x04), (R::Banned, 0x05), (R::ServerBusy, 0x03),
        (R::UseAnotherServer, 0x03), (R::ServerMoved, 0x03),
        (R::ConnectionRateExceeded, 0x03), (R::UnspecifiedError, 0x03),
    ];
    for (code, byte) in mapped {
        let packet = connack(false, code, ConnAckProperties::default());
        assert_eq!(encode(V3, &packet), [0x20, 0x02, 0x00, byte], "{code:?}");
    }
}

#[test]
fn v311_publish() {
    #[rustfmt::skip]
    let qos0 = [
        0x30, 0x07,                   // PUBLISH, QoS 0, remaining length 7
        0x00, 0x03, b'a', b'/', b'b', // topic name "a/b"
        b'h', b'i',                   // payload "hi"
    ];
    let packet = publish(QoS::AtMostOnce, 0, topic("a/b"), b"hi");
    vector(V3, &qos0, Packet::Publish(packet));
    #[rustfmt::skip]
    let qos1 = [
        0x3B, 0x08,                   // PUBLISH, DUP 1, QoS 1, RETAIN 1, remaining length 8
        0x00, 0x03, b'a', b'/', b'b', // topic name "a/b"
        0x01, 0x02,                   // packet identifier 258
        b'x',                         // payload
    ];
    let packet = Publish {
        dup: true,
        retain: true,
        ..publish(QoS::AtLeastOnce, 258, topic("a/b"), b"x")
    };
    vector(V3, &qos1, Packet::Publish(packet));
    // PUBLISH QoS 2, remaining length 5, topic "t", packet identifier 65535, no payload.
    let qos2 = [0x34, 0x05, 0x00, 0x01, b't', 0xFF, 0xFF];
    let packet = publish(QoS::ExactlyOnce, 0xFFFF, topic("t"), b"");
    vector(V3, &qos2, Packet::Publish(packet));
}

#[test]
fn v311_publish_two_byte_remaining_length() {
    // Remaining length 321 = 0x41 + 2 * 128: encoded 0xC1 0x02, least significant group first.
    let mut wire = vec![0x30, 0xC1, 0x02, 0x00, 0x01, b't'];
    wire.extend_from_slice(&[0x5A; 318]);
    let publish = Publish::new(topic("t"), Bytes::from(vec![0x5A; 318]));
    vector(V3, &wire, Packet::Publish(publish));
}

#[test]
fn v311_acks() {
    // PUBACK, PUBREC, PUBREL (flags 0010), PUBCOMP: remaining length 2, packet identifier.
    #[rustfmt::skip]
    let acks: [(&[u8], Packet); 4] = [
        (&[0x40, 0x02, 0x00, 0x07], Packet::PubAck(Ack::new(pid(7)))),
        (&[0x50, 0x02, 0x00, 0x08], Packet::PubRec(Ack::new(pid(8)))),
        (&[0x62, 0x02, 0x00, 0x09], Packet::PubRel(Ack::new(pid(9)))),
        (&[0x70, 0x02, 0x01, 0x0A], Packet::PubComp(Ack::new(pid(266)))),
    ];
    for (wire, packet) in acks {
        vector(V3, wire, packet);
    }
}

#[test]
fn v311_subscribe() {
    #[rustfmt::skip]
    let wire = [
        0x82, 0x0E,                         // SUBSCRIBE (flags 0010), remaining length 14
        0x00, 0x0A,                         // packet identifier 10
        0x00, 0x03, b'a', b'/', b'+', 0x00, // "a/+", requested QoS 0
        0x00, 0x03, b'b', b'/', b'#', 0x02, // "b/#", requested QoS 2
    ];
    let subs = [
        ("a/+", options(QoS::AtMostOnce)),
        ("b/#", options(QoS::ExactlyOnce)),
    ];
    let packet = subscribe(10, SubscribeProperties::default(), &subs);
    vector(V3, &wire, packet);
}

#[test]
fn v311_suback() {
    // SUBACK, remaining length 6, packet identifier 10, return codes QoS 0, 1, 2 and failure.
    let wire = [0x90, 0x06, 0x00, 0x0A, 0x00, 0x01, 0x02, 0x80];
    let codes = [
        R::GRANTED_QOS_0,
        R::GrantedQos1,
        R::GrantedQos2,
        R::UnspecifiedError,
    ];
    let packet = suback(10, AckProperties::default(), &codes);
    vector(V3, &wire, packet);
}

#[test]
fn v311_suback_failure_mapping() {
    // Every MQTT 5 refusal is the single 3.1.1 failure code 0x80.
    #[rustfmt::skip]
    let codes = [
        R::GrantedQos1, R::NotAuthorized, R::TopicFilterInvalid, R::QuotaExceeded,
        R::WildcardSubscriptionsNotSupported,
    ];
    let packet = suback(3, AckProperties::default(), &codes);
    let wire = [0x90, 0x07, 0x00, 0x03, 0x01, 0x80, 0x80, 0x80, 0x80];
    assert_eq!(encode(V3, &packet), wire);
    // 0x80 reads back as the generic failure.
    let codes = [R::GrantedQos1, R::UnspecifiedError];
    let packet = suback(3, AckProperties::default(), &codes);
    decodes_to(V3, &[0x90, 0x04, 0x00, 0x03, 0x01, 0x80], packet);
}

#[test]
fn v311_unsubscribe() {
    #[rustfmt::skip]
    let wire = [
        0xA2, 0x0A,                   // UNSUBSCRIBE (flags 0010), remaining length 10
        0x00, 0x0B,                   // packet identifier 11
        0x00, 0x03, b'a', b'/', b'+', // "a/+"
        0x00, 0x01, b'c',             // "c"
    ];
    let packet = unsubscribe(11, UnsubscribeProperties::default(), &["a/+", "c"]);
    vector(V3, &wire, packet);
}

#[test]
fn v311_unsuback_has_no_payload() {
    // UNSUBACK, remaining length 2: only the packet identifier.
    let packet = unsuback(11, AckProperties::default(), &[]);
    vector(V3, &[0xB0, 0x02, 0x00, 0x0B], packet);
}

#[test]
fn v311_ping_and_disconnect() {
    vector(V3, &[0xC0, 0x00], Packet::PingReq);
    vector(V3, &[0xD0, 0x00], Packet::PingResp);
    vector(V3, &[0xE0, 0x00], Packet::Disconnect(Disconnect::default()));
}

// ---------------------------------------------------------------------------------------------
// MQTT 5.0
// ---------------------------------------------------------------------------------------------

#[rustfmt::skip]
const V5_CONNECT_FULL: &[u8] = &[
    0x10, 0x72,                               // CONNECT, remaining length 114
    0x00, 0x04, b'M', b'Q', b'T', b'T',       // protocol name "MQTT"
    0x05,                                     // protocol version 5
    0xF6,                                     // user name, password, will retain, will QoS 2,
                                              // will, clean start
    0x00, 0x1E,                               // keep alive 30
    0x2E,                                     // property length 46
    0x11, 0x00, 0x00, 0x00, 0x78,             //   session expiry interval 120
    0x21, 0x00, 0x14,                         //   receive maximum 20
    0x27, 0x00, 0x00, 0x10, 0x00,             //   maximum packet size 4096
    0x22, 0x00, 0x0A,                         //   topic alias maximum 10
    0x19, 0x01,                               //   request response information 1
    0x17, 0x00,                               //   request problem information 0
    0x15, 0x00, 0x04, b'S', b'C', b'R', b'M', //   authentication method "SCRM"
    0x16, 0x00, 0x02, 0x01, 0x02,             //   authentication data 01 02
    0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'v', //   user property k=v
    0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'w', //   user property k=w (same key, kept in order)
    0x00, 0x02, b'c', b'l',                   // client identifier "cl"
    0x25,                                     // will property length 37
    0x18, 0x00, 0x00, 0x00, 0x05,             //   will delay interval 5
    0x01, 0x01,                               //   payload format indicator: UTF-8
    0x02, 0x00, 0x00, 0x0E, 0x10,             //   message expiry interval 3600
    0x08, 0x00, 0x03, b'r', b'/', b'x',       //   response topic "r/x"
    0x09, 0x00, 0x02, 0x0A, 0x0B,             //   correlation data 0A 0B
    0x03, 0x00, 0x04, b't', b'e', b'x', b't', //   content type "text"
    0x26, 0x00, 0x01, b'a', 0x00, 0x01, b'b', //   user property a=b
    0x00, 0x01, b'w',                         // will topic "w"
    0x00, 0x03, b'b', b'y', b'e',             // will payload "bye"
    0x00, 0x01, b'u',                         // user name "u"
    0x00, 0x02, 0x00, 0xFF,                   // password 00 FF
];

#[test]
fn v5_connect_with_all_properties_and_will() {
    let properties = ConnectProperties {
        session_expiry_interval: Some(120),
        receive_maximum: Some(20),
        maximum_packet_size: Some(4096),
        topic_alias_maximum: Some(10),
        request_response_information: Some(true),
        request_problem_information: Some(false),
        authentication_method: Some(s("SCRM")),
        authentication_data: Some(bin(&[0x01, 0x02])),
        user_properties: users(&[("k", "v"), ("k", "w")]),
    };
    let will_properties = WillProperties {
        will_delay_interval: Some(5),
        payload_format_indicator: Some(PayloadFormat::Utf8),
        message_expiry_interval: Some(3600),
        content_type: Some(s("text")),
        response_topic: Some(topic("r/x")),
        correlation_data: Some(bin(&[0x0A, 0x0B])),
        user_properties: users(&[("a", "b")]),
        order: PropertyOrder::canonical(),
    };
    let will = Will {
        topic: topic("w"),
        payload: bin(b"bye"),
        qos: QoS::ExactlyOnce,
        retain: true,
        properties: will_properties,
    };
    let connect = Connect {
        clean_start: true,
        keep_alive: 30,
        properties,
        will: Some(will),
        username: Some(s("u")),
        password: Some(bin(&[0x00, 0xFF])),
        ..connect(V5, "cl")
    };
    vector(V5, V5_CONNECT_FULL, Packet::Connect(connect.into()));
}

#[test]
fn v5_connect_minimal() {
    #[rustfmt::skip]
    let wire = [
        0x10, 0x0D,                         // CONNECT, remaining length 13
        0x00, 0x04, b'M', b'Q', b'T', b'T', // protocol name
        0x05, 0x00, 0x00, 0x00,             // version 5, no flags, keep alive off
        0x00,                               // property length 0
        0x00, 0x00,                         // empty client identifier
    ];
    vector(V5, &wire, Packet::Connect(connect(V5, "").into()));
}

#[rustfmt::skip]
const V5_CONNACK_FULL: &[u8] = &[
    0x20, 0x44,                               // CONNACK, remaining length 68
    0x01,                                     // Session Present 1
    0x00,                                     // reason code Success
    0x41,                                     // property length 65
    0x11, 0x00, 0x00, 0x00, 0x3C,             //   session expiry interval 60
    0x21, 0x00, 0x0A,                         //   receive maximum 10
    0x24, 0x01,                               //   maximum QoS 1
    0x25, 0x00,                               //   retain available 0
    0x27, 0x00, 0x01, 0x00, 0x00,             //   maximum packet size 65536
    0x12, 0x00, 0x03, b'i', b'd', b'1',       //   assigned client identifier "id1"
    0x22, 0x00, 0x05,                         //   topic alias maximum 5
    0x1F, 0x00, 0x02, b'o', b'k',             //   reason string "ok"
    0x28, 0x00,                               //   wildcard subscription available 0
    0x29, 0x01,                               //   subscription identifiers available 1
    0x2A, 0x00,                               //   shared subscription available 0
    0x13, 0x00, 0x1E,                         //   server keep alive 30
    0x1A, 0x00, 0x02, b'r', b'i',             //   response information "ri"
    0x1C, 0x00, 0x02, b's', b'2',             //   server reference "s2"
    0x15, 0x00, 0x01, b'M',                   //   authentication method "M"
    0x16, 0x00, 0x01, 0x07,                   //   authentication data 07
    0x26, 0x00, 0x01, b'x', 0x00, 0x01, b'y', //   user property x=y
];

#[test]
fn v5_connack_with_all_properties() {
    let properties = ConnAckProperties {
        session_expiry_interval: Some(60),
        receive_maximum: Some(10),
        maximum_qos: Some(QoS::AtLeastOnce),
        retain_available: Some(false),
        maximum_packet_size: Some(65536),
        assigned_client_identifier: Some(s("id1")),
        topic_alias_maximum: Some(5),
        reason_string: Some(s("ok")),
        wildcard_subscription_available: Some(false),
        subscription_identifiers_available: Some(true),
        shared_subscription_available: Some(false),
        server_keep_alive: Some(30),
        response_information: Some(s("ri")),
        server_reference: Some(s("s2")),
        authentication_method: Some(s("M")),
        authentication_data: Some(bin(&[0x07])),
        user_properties: users(&[("x", "y")]),
    };
    vector(V5, V5_CONNACK_FULL, connack(true, R::Success, properties));
}

#[test]
fn v5_connack_refusal() {
    // CONNACK, remaining length 3, no session, 0x87 Not authorized, property length 0.
    let packet = connack(false, R::NotAuthorized, ConnAckProperties::default());
    vector(V5, &[0x20, 0x03, 0x00, 0x87, 0x00], packet);
}

#[test]
fn v5_publish_without_properties() {
    #[rustfmt::skip]
    let qos0 = [
        0x30, 0x08,                   // PUBLISH, QoS 0, remaining length 8
        0x00, 0x03, b'a', b'/', b'b', // topic name "a/b"
        0x00,                         // property length 0
        b'h', b'i',                   // payload "hi"
    ];
    let packet = publish(QoS::AtMostOnce, 0, topic("a/b"), b"hi");
    vector(V5, &qos0, Packet::Publish(packet));
    #[rustfmt::skip]
    let qos1 = [
        0x3A, 0x0A,                   // PUBLISH, DUP 1, QoS 1, remaining length 10
        0x00, 0x03, b'a', b'/', b'b', // topic name "a/b"
        0x00, 0x01,                   // packet identifier 1
        0x00,                         // property length 0
        b'h', b'i',                   // payload "hi"
    ];
    let packet = Publish {
        dup: true,
        ..publish(QoS::AtLeastOnce, 1, topic("a/b"), b"hi")
    };
    vector(V5, &qos1, Packet::Publish(packet));
    // PUBLISH QoS 2 "a/b", packet identifier 7, property length 0, payload "hi".
    let qos2 = [
        0x34, 0x0A, 0x00, 0x03, b'a', b'/', b'b', 0x00, 0x07, 0x00, b'h', b'i',
    ];
    let packet = publish(QoS::ExactlyOnce, 7, topic("a/b"), b"hi");
    vector(V5, &qos2, Packet::Publish(packet));
}

#[test]
fn v5_publish_qos0_with_properties() {
    #[rustfmt::skip]
    let wire = [
        0x30, 0x0E,                         // PUBLISH, QoS 0, remaining length 14
        0x00, 0x03, b'a', b'/', b'b',       // topic name "a/b"
        0x08,                               // property length 8
        0x01, 0x00,                         //   payload format indicator: unspecified
        0x26, 0x00, 0x01, b'k', 0x00, 0x00, //   user property k="" (empty value)
    ]; // empty payload
    let packet = Publish {
        properties: PublishProperties {
            payload_format_indicator: Some(PayloadFormat::Unspecified),
            user_properties: users(&[("k", "")]),
            ..PublishProperties::default()
        },
        ..publish(QoS::AtMostOnce, 0, topic("a/b"), b"")
    };
    vector(V5, &wire, Packet::Publish(packet));
}

#[rustfmt::skip]
const V5_PUBLISH_FULL: &[u8] = &[
    0x32, 0x47,                               // PUBLISH, QoS 1, remaining length 71
    0x00, 0x03, b'a', b'/', b'b',             // topic name "a/b"
    0x00, 0x05,                               // packet identifier 5
    0x3D,                                     // property length 61
    0x23, 0x00, 0x03,                         //   topic alias 3 (first: see PublishView)
    0x01, 0x01,                               //   payload format indicator: UTF-8
    0x02, 0x00, 0x00, 0x00, 0x0A,             //   message expiry interval 10
    0x08, 0x00, 0x05, b'r', b'e', b'p', b'/', b'1', //   response topic "rep/1"
    0x09, 0x00, 0x03, 0x01, 0x02, 0x03,       //   correlation data 01 02 03
    0x03, 0x00, 0x0A, b't', b'e', b'x', b't', b'/', b'p', b'l', b'a', b'i', b'n',
                                              //   content type "text/plain"
    0x26, 0x00, 0x01, b'z', 0x00, 0x01, b'1', //   user property z=1
    0x26, 0x00, 0x01, b'a', 0x00, 0x01, b'2', //   user property a=2 (order kept, not sorted)
    0x0B, 0x01,                               //   subscription identifier 1
    0x0B, 0x80, 0x01,                         //   subscription identifier 128
    0x0B, 0xFF, 0xFF, 0xFF, 0x7F,             //   subscription identifier 268,435,455
    b'{', b'}',                               // payload "{}"
];

#[test]
fn v5_publish_qos1_with_all_properties() {
    let ids = SubscriptionIds::from_ids([1, 128, 268_435_455]).expect("identifiers in range");
    let properties = PublishProperties {
        payload_format_indicator: Some(PayloadFormat::Utf8),
        message_expiry_interval: Some(10),
        topic_alias: Some(3),
        response_topic: Some(topic("rep/1")),
        correlation_data: Some(bin(&[1, 2, 3])),
        user_properties: users(&[("z", "1"), ("a", "2")]),
        subscription_identifiers: ids,
        content_type: Some(s("text/plain")),
        order: PropertyOrder::canonical(),
    };
    let packet = Publish {
        properties,
        ..publish(QoS::AtLeastOnce, 5, topic("a/b"), b"{}")
    };
    vector(V5, V5_PUBLISH_FULL, Packet::Publish(packet.clone()));
    // Both repeated properties keep their order.
    let pairs: Vec<_> = packet.properties.user_properties.iter().collect();
    assert_eq!(pairs, [("z", "1"), ("a", "2")]);
    let ids: Vec<_> = packet.properties.subscription_identifiers.iter().collect();
    assert_eq!(ids, [1, 128, 268_435_455]);
}

#[test]
fn v5_publish_qos2_topic_alias_only() {
    #[rustfmt::skip]
    let wire = [
        0x35, 0x09,             // PUBLISH, QoS 2, RETAIN 1, remaining length 9
        0x00, 0x00,             // empty topic name: the topic alias stands for it
        0x00, 0x06,             // packet identifier 6
        0x03, 0x23, 0x00, 0x01, // property length 3: topic alias 1
        b'p',                   // payload
    ];
    let properties = PublishProperties {
        topic_alias: Some(1),
        ..PublishProperties::default()
    };
    let packet = Publish {
        retain: true,
        properties,
        ..publish(QoS::ExactlyOnce, 6, TopicName::empty(), b"p")
    };
    vector(V5, &wire, Packet::Publish(packet));
}

#[test]
fn v5_acks_short_and_long_forms() {
    type Make = fn(Ack) -> Packet;
    // Per type: the 3-byte form's reason code, the long form's reason code.
    #[rustfmt::skip]
    let kinds: [(Make, R, R); 4] = [
        (Packet::PubAck, R::NoMatchingSubscribers, R::NotAuthorized),
        (Packet::PubRec, R::QuotaExceeded, R::NoMatchingSubscribers),
        (Packet::PubRel, R::PacketIdentifierNotFound, R::Success),
        (Packet::PubComp, R::PacketIdentifierNotFound, R::PacketIdentifierNotFound),
    ];
    #[rustfmt::skip]
    let wires: [[&[u8]; 3]; 4] = [
        // Remaining length 2: Success, no properties. Remaining length 3: reason code only.
        // Remaining length 9: reason code, property length 5, reason string "no".
        [&[0x40, 0x02, 0x00, 0x01], &[0x40, 0x03, 0x00, 0x01, 0x10],
         &[0x40, 0x09, 0x00, 0x01, 0x87, 0x05, 0x1F, 0x00, 0x02, b'n', b'o']],
        [&[0x50, 0x02, 0x00, 0x01], &[0x50, 0x03, 0x00, 0x01, 0x97],
         &[0x50, 0x09, 0x00, 0x01, 0x10, 0x05, 0x1F, 0x00, 0x02, b'n', b'o']],
        [&[0x62, 0x02, 0x00, 0x01], &[0x62, 0x03, 0x00, 0x01, 0x92],
         &[0x62, 0x09, 0x00, 0x01, 0x00, 0x05, 0x1F, 0x00, 0x02, b'n', b'o']],
        [&[0x70, 0x02, 0x00, 0x01], &[0x70, 0x03, 0x00, 0x01, 0x92],
         &[0x70, 0x09, 0x00, 0x01, 0x92, 0x05, 0x1F, 0x00, 0x02, b'n', b'o']],
    ];
    for ((make, short_code, long_code), [rl2, rl3, long]) in kinds.into_iter().zip(wires) {
        vector(V5, rl2, make(Ack::new(pid(1))));
        vector(V5, rl3, make(ack(1, short_code, AckProperties::default())));
        vector(V5, long, make(ack(1, long_code, reason_string("no"))));
    }
}

#[test]
fn v5_puback_with_reason_string_and_user_properties() {
    #[rustfmt::skip]
    let wire = [
        0x40, 0x10,                               // PUBACK, remaining length 16
        0x00, 0x01,                               // packet identifier 1
        0x87,                                     // Not authorized
        0x0C,                                     // property length 12
        0x1F, 0x00, 0x02, b'n', b'o',             //   reason string "no"
        0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'v', //   user property k=v
    ];
    let properties = AckProperties {
        user_properties: users(&[("k", "v")]),
        ..reason_string("no")
    };
    let packet = Packet::PubAck(ack(1, R::NotAuthorized, properties));
    vector(V5, &wire, packet);
}

#[test]
fn v5_ack_with_empty_property_block_decodes_as_short_form() {
    // Remaining length 4 with property length 0 means the same as the 3-byte form.
    let packet = Packet::PubAck(ack(1, R::NoMatchingSubscribers, AckProperties::default()));
    decodes_to(V5, &[0x40, 0x04, 0x00, 0x01, 0x10, 0x00], packet);
    // Remaining length 3 with Success means the same as the 2-byte form.
    let packet = Packet::PubRel(Ack::new(pid(1)));
    decodes_to(V5, &[0x62, 0x03, 0x00, 0x01, 0x00], packet);
}

#[rustfmt::skip]
const V5_SUBSCRIBE_FULL: &[u8] = &[
    0x82, 0x25,                               // SUBSCRIBE (flags 0010), remaining length 37
    0x00, 0x0C,                               // packet identifier 12
    0x09,                                     // property length 9
    0x0B, 0x05,                               //   subscription identifier 5
    0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'v', //   user property k=v
    0x00, 0x03, b'a', b'/', b'+',             // "a/+"
    0x2E,                                     //   retain handling 2, RAP, No Local, QoS 2
    0x00, 0x0A, b'$', b's', b'h', b'a', b'r', b'e', b'/', b'g', b'/', b'b',
                                              // "$share/g/b"
    0x11,                                     //   retain handling 1, QoS 1
    0x00, 0x03, b'c', b'/', b'#',             // "c/#"
    0x08,                                     //   Retain As Published, QoS 0
];

#[test]
fn v5_subscribe_with_every_option_bit() {
    #[rustfmt::skip]
    let subs = [
        ("a/+", all_options(QoS::ExactlyOnce, true, true, DoNotSend)),
        ("$share/g/b", all_options(QoS::AtLeastOnce, false, false, SendIfNew)),
        ("c/#", all_options(QoS::AtMostOnce, false, true, SendAtSubscribe)),
    ];
    let properties = SubscribeProperties {
        subscription_identifier: Some(5),
        user_properties: users(&[("k", "v")]),
    };
    vector(V5, V5_SUBSCRIBE_FULL, subscribe(12, properties, &subs));
}

#[test]
fn v5_subscribe_without_properties() {
    // SUBSCRIBE, remaining length 7, id 1, property length 0, "x" with options 0.
    let wire = [0x82, 0x07, 0x00, 0x01, 0x00, 0x00, 0x01, b'x', 0x00];
    let subs = [("x", options(QoS::AtMostOnce))];
    let packet = subscribe(1, SubscribeProperties::default(), &subs);
    vector(V5, &wire, packet);
}

#[test]
fn v5_suback() {
    #[rustfmt::skip]
    let wire = [
        0x90, 0x16,                               // SUBACK, remaining length 22
        0x00, 0x0C,                               // packet identifier 12
        0x07,                                     // property length 7
        0x1F, 0x00, 0x04, b'p', b'a', b'r', b't', //   reason string "part"
        0x00, 0x01, 0x02, 0x80, 0x83, 0x87,       // every Subscribe reason code
        0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2,
    ];
    #[rustfmt::skip]
    let codes = [
        R::GRANTED_QOS_0, R::GrantedQos1, R::GrantedQos2, R::UnspecifiedError,
        R::ImplementationSpecificError, R::NotAuthorized, R::TopicFilterInvalid,
        R::PacketIdentifierInUse, R::QuotaExceeded, R::SharedSubscriptionsNotSupported,
        R::SubscriptionIdentifiersNotSupported, R::WildcardSubscriptionsNotSupported,
    ];
    vector(V5, &wire, suback(12, reason_string("part"), &codes));
    // SUBACK, remaining length 4, id 12, property length 0, Granted QoS 1.
    let plain = [0x90, 0x04, 0x00, 0x0C, 0x00, 0x01];
    let packet = suback(12, AckProperties::default(), &[R::GrantedQos1]);
    vector(V5, &plain, packet);
}

#[test]
fn v5_unsubscribe() {
    #[rustfmt::skip]
    let wire = [
        0xA2, 0x1B,                               // UNSUBSCRIBE (flags 0010), remaining length 27
        0x00, 0x0D,                               // packet identifier 13
        0x07,                                     // property length 7
        0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'v', //   user property k=v
        0x00, 0x03, b'a', b'/', b'+',             // "a/+"
        0x00, 0x0A, b'$', b's', b'h', b'a', b'r', b'e', b'/', b'g', b'/', b'b',
                                                  // "$share/g/b"
    ];
    let properties = UnsubscribeProperties {
        user_properties: users(&[("k", "v")]),
    };
    let packet = unsubscribe(13, properties, &["a/+", "$share/g/b"]);
    vector(V5, &wire, packet);
}

#[test]
fn v5_unsuback() {
    #[rustfmt::skip]
    let wire = [
        0xB0, 0x0F,                         // UNSUBACK, remaining length 15
        0x00, 0x0D,                         // packet identifier 13
        0x05,                               // property length 5
        0x1F, 0x00, 0x02, b'n', b'o',       //   reason string "no"
        0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, // every Unsubscribe reason code
        0x91,
    ];
    #[rustfmt::skip]
    let codes = [
        R::Success, R::NoSubscriptionExisted, R::UnspecifiedError,
        R::ImplementationSpecificError, R::NotAuthorized, R::TopicFilterInvalid,
        R::PacketIdentifierInUse,
    ];
    vector(V5, &wire, unsuback(13, reason_string("no"), &codes));
    // UNSUBACK, remaining length 4, id 13, property length 0, Success.
    let plain = [0xB0, 0x04, 0x00, 0x0D, 0x00, 0x00];
    let packet = unsuback(13, AckProperties::default(), &[R::Success]);
    vector(V5, &plain, packet);
}

#[test]
fn v5_ping() {
    vector(V5, &[0xC0, 0x00], Packet::PingReq);
    vector(V5, &[0xD0, 0x00], Packet::PingResp);
}

#[test]
fn v5_disconnect_short_forms() {
    // Remaining length 0: Normal disconnection, no properties.
    vector(V5, &[0xE0, 0x00], Packet::Disconnect(Disconnect::default()));
    // Remaining length 1: reason code 0x04 Disconnect with Will Message, no property length.
    let with_will = Disconnect::new(R::DisconnectWithWillMessage);
    vector(V5, &[0xE0, 0x01, 0x04], Packet::Disconnect(with_will));
}

#[test]
fn v5_disconnect_long_forms() {
    #[rustfmt::skip]
    let wire = [
        0xE0, 0x19,                               // DISCONNECT, remaining length 25
        0x9C,                                     // Use another server
        0x17,                                     // property length 23
        0x11, 0x00, 0x00, 0x00, 0x00,             //   session expiry interval 0
        0x1F, 0x00, 0x03, b'b', b'y', b'e',       //   reason string "bye"
        0x1C, 0x00, 0x02, b's', b'2',             //   server reference "s2"
        0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'v', //   user property k=v
    ];
    let properties = DisconnectProperties {
        session_expiry_interval: Some(0),
        reason_string: Some(s("bye")),
        server_reference: Some(s("s2")),
        user_properties: users(&[("k", "v")]),
    };
    let disconnect = Disconnect {
        reason_code: R::UseAnotherServer,
        properties,
    };
    vector(V5, &wire, Packet::Disconnect(disconnect));
    // Normal disconnection that sets a new session expiry of 60: the 0x00 reason code is
    // written because properties follow.
    let wire = [0xE0, 0x07, 0x00, 0x05, 0x11, 0x00, 0x00, 0x00, 0x3C];
    let properties = DisconnectProperties {
        session_expiry_interval: Some(60),
        ..DisconnectProperties::default()
    };
    let disconnect = Disconnect {
        reason_code: R::NORMAL_DISCONNECTION,
        properties,
    };
    vector(V5, &wire, Packet::Disconnect(disconnect));
}

#[test]
fn v5_auth() {
    // Remaining length 0: Success with no properties.
    vector(V5, &[0xF0, 0x00], Packet::Auth(Auth::default()));
    #[rustfmt::skip]
    let wire = [
        0xF0, 0x1B,                               // AUTH, remaining length 27
        0x18,                                     // Continue authentication
        0x19,                                     // property length 25
        0x15, 0x00, 0x04, b'S', b'C', b'R', b'M', //   authentication method "SCRM"
        0x16, 0x00, 0x03, 0x01, 0x02, 0x03,       //   authentication data 01 02 03
        0x1F, 0x00, 0x02, b'g', b'o',             //   reason string "go"
        0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'v', //   user property k=v
    ];
    let properties = AuthProperties {
        authentication_method: Some(s("SCRM")),
        authentication_data: Some(bin(&[1, 2, 3])),
        reason_string: Some(s("go")),
        user_properties: users(&[("k", "v")]),
    };
    let auth = Auth {
        reason_code: R::ContinueAuthentication,
        properties,
    };
    vector(V5, &wire, Packet::Auth(auth));
    // Re-authenticate, property length 7, authentication method "SCRM".
    let wire = [
        0xF0, 0x09, 0x19, 0x07, 0x15, 0x00, 0x04, b'S', b'C', b'R', b'M',
    ];
    let properties = AuthProperties {
        authentication_method: Some(s("SCRM")),
        ..AuthProperties::default()
    };
    let auth = Auth {
        reason_code: R::ReAuthenticate,
        properties,
    };
    vector(V5, &wire, Packet::Auth(auth));
}

/// A will's properties, in whatever order they came, are written back in that order, and the
/// message the will becomes keeps it with the Will Delay Interval taken out (Mosquitto's
/// 07-will-properties compares the delivered bytes with those the client sent).
#[test]
fn v5_will_properties_keep_their_order() {
    #[rustfmt::skip]
    let sent: &[u8] = &[
        0x26, 0x00, 0x01, b'a', 0x00, 0x01, b'1', // user property a=1
        0x08, 0x00, 0x01, b'r',                   // response topic "r"
        0x09, 0x00, 0x01, b'd',                   // correlation data "d"
        0x18, 0x00, 0x00, 0x00, 0x00,             // will delay interval 0
        0x01, 0x01,                               // payload format indicator: UTF-8
        0x03, 0x00, 0x01, b't',                   // content type "t"
        0x26, 0x00, 0x01, b'b', 0x00, 0x01, b'2', // user property b=2
    ];
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 5, 0x04, 0, 60, 0, 0, 1, b'c'];
    body.push(sent.len() as u8);
    body.extend_from_slice(sent);
    body.extend_from_slice(&[0, 1, b'w', 0, 1, b'x']);
    let mut wire = vec![0x10, body.len() as u8];
    wire.extend_from_slice(&body);
    let decoded = Decoder::new(V5, PACKET_SIZE_MAX)
        .decode(&mut BytesMut::from(&wire[..]))
        .expect("decodes")
        .expect("complete");
    assert_eq!(encode(V5, &decoded), wire, "the CONNECT re-encodes as sent");
    let Packet::Connect(connect) = decoded else {
        panic!("{decoded:?}");
    };
    let will = connect.will.expect("a will");
    assert!(!will.properties.order.is_canonical());
    let message = Publish {
        properties: will.properties.to_publish(),
        ..publish(QoS::AtMostOnce, 0, will.topic, b"x")
    };
    let forwarded = encode(V5, &Packet::Publish(message));
    let without_delay: Vec<u8> = [&sent[..15], &sent[20..]].concat();
    let block_at = 2 + 3 + 1;
    assert_eq!(usize::from(forwarded[block_at - 1]), without_delay.len());
    assert_eq!(
        &forwarded[block_at..block_at + without_delay.len()],
        &without_delay[..]
    );
}

/// A PUBLISH's properties in another order than the encoder's come back out in that order.
#[test]
fn v5_publish_properties_keep_their_order() {
    #[rustfmt::skip]
    let wire = [
        0x30, 0x0E,                   // PUBLISH, QoS 0, remaining length 14
        0x00, 0x01, b't',             // topic "t"
        0x09,                         // property length 9
        0x03, 0x00, 0x01, b'j',       //   content type "j"
        0x02, 0x00, 0x00, 0x00, 0x05, //   message expiry interval 5
        b'p',                         // payload
    ];
    let mut buf = BytesMut::from(&wire[..]);
    let decoded = Decoder::new(V5, PACKET_SIZE_MAX)
        .decode(&mut buf)
        .expect("decodes")
        .expect("complete");
    assert_eq!(encode(V5, &decoded), wire);
    let Packet::Publish(publish) = decoded else {
        panic!("{decoded:?}");
    };
    assert!(!publish.properties.order.is_canonical());
}

/// The kept order is bounded: a block of up to 32 runs (here user properties alternating with
/// subscription identifiers, as a client may receive them) comes back out as it came; one of 33
/// keeps no order and is written in the encoder's, its properties all there.
#[test]
fn v5_property_order_is_kept_up_to_32_runs() {
    for runs in [32_u8, 33] {
        let mut props = Vec::new();
        for run in 0..runs {
            if run % 2 == 0 {
                props.extend_from_slice(&[0x26, 0, 0, 0, 0]); // user property ""=""
            } else {
                props.extend_from_slice(&[0x0B, run]);
            }
        }
        let mut body = vec![0x00, 0x01, b't'];
        body.push(u8::try_from(props.len()).unwrap());
        body.extend_from_slice(&props);
        body.push(b'p');
        let mut wire = vec![0x30, u8::try_from(body.len()).unwrap()];
        wire.extend_from_slice(&body);
        let decoded = Decoder::new(V5, PACKET_SIZE_MAX)
            .decode(&mut BytesMut::from(&wire[..]))
            .expect("decodes")
            .expect("complete");
        let Packet::Publish(publish) = &decoded else {
            panic!("{decoded:?}");
        };
        assert_eq!(publish.properties.order.is_canonical(), runs > 32, "{runs}");
        let ids: Vec<u32> = publish.properties.subscription_identifiers.iter().collect();
        assert_eq!(ids.len(), usize::from(runs / 2), "{runs}");
        let encoded = encode(V5, &decoded);
        assert_eq!(encoded == wire, runs <= 32, "{runs}");
        assert_eq!(encoded.len(), wire.len(), "{runs}");
    }
}

const V31: ProtocolVersion = ProtocolVersion::V31;

/// MQTT 3.1 (protocol name "MQIsdp", level 3) decodes as 3.1.1 does; its CONNACK has no
/// Session Present flag (the byte is reserved there), whatever the session.
#[test]
fn v31_connect_and_connack() {
    #[rustfmt::skip]
    let wire = [
        0x10, 0x13,                                     // CONNECT, remaining length 19
        0x00, 0x06, b'M', b'Q', b'I', b's', b'd', b'p', // protocol name "MQIsdp"
        0x03,                                           // protocol level 3
        0x00,                                           // flags: persistent session
        0x00, 0x3C,                                     // keep alive 60
        0x00, 0x05, b'd', b'e', b'v', b'-', b'1',       // client identifier "dev-1"
    ];
    let connect = Connect {
        keep_alive: 60,
        ..connect(V31, "dev-1")
    };
    vector(V31, &wire, Packet::Connect(Box::new(connect)));
    let resumed = connack(true, R::Success, ConnAckProperties::default());
    assert_eq!(encode(V31, &resumed), [0x20, 0x02, 0x00, 0x00]);
    assert_eq!(encode(V3, &resumed), [0x20, 0x02, 0x01, 0x00]);
    let refused = connack(
        false,
        R::ClientIdentifierNotValid,
        ConnAckProperties::default(),
    );
    assert_eq!(encode(V31, &refused), [0x20, 0x02, 0x00, 0x02]);
    // The byte is unused in 3.1: whatever a 3.1 server put there says nothing.
    let accepted = connack(false, R::Success, ConnAckProperties::default());
    decodes_to(V31, &[0x20, 0x02, 0x01, 0x00], accepted.clone());
    decodes_to(V31, &[0x20, 0x02, 0xFF, 0x00], accepted);
}

/// 3.1 lets a client set DUP (and QoS 1) on a PUBREL, SUBSCRIBE or UNSUBSCRIBE it sends again,
/// and reserves none of the other packets' flag bits: they are not checked at level 3.
#[test]
fn v31_flag_bits_are_not_checked() {
    let again = [0x6A, 0x02, 0x00, 0x01]; // PUBREL, DUP 1, QoS 1, packet identifier 1
    decodes_to(
        V31,
        &again,
        Packet::PubRel(ack(1, R::Success, AckProperties::default())),
    );
    let mut buf = BytesMut::from(&again[..]);
    assert!(Decoder::new(V3, PACKET_SIZE_MAX).decode(&mut buf).is_err());
    decodes_to(V31, &[0xC1, 0x00], Packet::PingReq);
}

/// 3.1 lets the remaining length win over the flags: a user name or password that the flags
/// announce but the packet ends before is absent, and the CONNECT valid.
#[test]
fn v31_missing_user_name_and_password_are_absent() {
    #[rustfmt::skip]
    let wire = [
        0x10, 0x0F,
        0x00, 0x06, b'M', b'Q', b'I', b's', b'd', b'p', 0x03,
        0xC2,                         // user name and password flagged, clean session
        0x00, 0x3C,
        0x00, 0x01, b'c',             // client identifier "c", then the packet ends
    ];
    let connect = Connect {
        clean_start: true,
        keep_alive: 60,
        ..connect(V31, "c")
    };
    decodes_to(V31, &wire, Packet::Connect(Box::new(connect)));
    let mut v311 = wire;
    v311[2..9].copy_from_slice(&[0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04]);
    let mut buf = BytesMut::from(&v311[..]);
    assert!(Decoder::new(V3, PACKET_SIZE_MAX).decode(&mut buf).is_err());
}
