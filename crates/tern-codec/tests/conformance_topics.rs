//! Proves the MQTT 3.1.1 and 5.0 normative statements the codec enforces on UTF-8 strings, topic
//! names and topic filters, SUBSCRIBE and UNSUBSCRIBE payloads, subscription options and shared
//! subscriptions, and checks the codec's reference topic matcher. Each statement test is named
//! after the statement it proves; docs/conformance.md points at it.

// In a test crate a failed expectation is a failed test, and `expect` names what was expected.
#![allow(clippy::expect_used)]

use std::str::FromStr;

use bytes::{Bytes, BytesMut};
use tern_codec::{
    filter_matches, EncodeError, FilterList, MqttString, Packet, PacketId, ProtocolVersion,
    Publish, ReasonCode, Subscribe, SubscribeProperties, SubscriptionList, TopicFilter, TopicName,
    Unsubscribe, UnsubscribeProperties,
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
const MALFORMED: ReasonCode = ReasonCode::MalformedPacket;
const NAME_INVALID: ReasonCode = ReasonCode::TopicNameInvalid;
const FILTER_INVALID: ReasonCode = ReasonCode::TopicFilterInvalid;
const PROTOCOL: ReasonCode = ReasonCode::ProtocolError;

/// Byte strings that are not well-formed UTF-8: an encoded surrogate (U+D800), an overlong
/// encoding of U+0000, a stray continuation byte, a truncated sequence, an encoded U+DFFF.
const ILL_FORMED: [&[u8]; 5] = [
    b"\xED\xA0\x80",
    b"\xC0\x80",
    b"a\x80",
    b"\xE2\x82",
    b"\xED\xBF\xBF",
];

fn accept(v: ProtocolVersion, wire: &[u8]) -> Packet {
    decode(v, wire).unwrap_or_else(|e| panic!("{:02X?} refused: {e}", &wire[..16.min(wire.len())]))
}

fn reject(v: ProtocolVersion, wire: &[u8], code: ReasonCode) {
    match decode(v, wire) {
        Ok(packet) => panic!("{wire:02X?} accepted as {packet:?}"),
        Err(e) => assert_eq!(e.reason_code(), code, "{wire:02X?}: {e}"),
    }
}

fn try_encode(v: ProtocolVersion, packet: &Packet) -> Result<Vec<u8>, EncodeError> {
    let mut out = BytesMut::new();
    packet.encode(v, &mut out)?;
    Ok(out.to_vec())
}

fn encode(v: ProtocolVersion, packet: &Packet) -> Vec<u8> {
    try_encode(v, packet).expect("encodes")
}

fn conn(v: ProtocolVersion, flags: u8, payload: &[u8]) -> Vec<u8> {
    let header = [0, 4, b'M', b'Q', b'T', b'T', v.level(), flags, 0, 60];
    frame(0x10, &cat(&[&header, &props(v, &[]), payload]))
}

fn client_id(v: ProtocolVersion, id: &[u8]) -> Vec<u8> {
    conn(v, 0x02, &str16(id))
}

fn will_topic(v: ProtocolVersion, topic: &[u8]) -> Vec<u8> {
    let payload = cat(&[&str16(b"c"), &props(v, &[]), &str16(topic), &str16(b"m")]);
    conn(v, 0x06, &payload)
}

fn user_name(v: ProtocolVersion, name: &[u8]) -> Vec<u8> {
    conn(v, 0x82, &cat(&[&str16(b"c"), &str16(name)]))
}

fn publish(v: ProtocolVersion, topic: &[u8]) -> Vec<u8> {
    frame(0x30, &cat(&[&str16(topic), &props(v, &[]), b"p"]))
}

fn publish_props(block: &[u8]) -> Vec<u8> {
    frame(0x30, &cat(&[&str16(b"t"), &props(V5, block)]))
}

fn subscribe_with(v: ProtocolVersion, filter: &[u8], options: u8) -> Vec<u8> {
    let body = cat(&[&[0, 1], &props(v, &[]), &str16(filter), &[options]]);
    frame(0x82, &body)
}

fn subscribe(v: ProtocolVersion, filter: &[u8]) -> Vec<u8> {
    subscribe_with(v, filter, 0)
}

fn unsubscribe(v: ProtocolVersion, filter: &[u8]) -> Vec<u8> {
    frame(0xA2, &cat(&[&[0, 1], &props(v, &[]), &str16(filter)]))
}

/// `field` holding `ok` decodes; holding ill-formed UTF-8 or U+0000 it is a Malformed Packet.
fn utf8_field(v: ProtocolVersion, field: impl Fn(ProtocolVersion, &[u8]) -> Vec<u8>) {
    accept(v, &field(v, "ok/\u{E9}".as_bytes()));
    for bad in ILL_FORMED.into_iter().chain([&b"a\0b"[..]]) {
        reject(v, &field(v, bad), MALFORMED);
    }
}

fn topic(text: &str) -> TopicName {
    text.parse().expect("valid topic name")
}

fn filter(text: &str) -> TopicFilter {
    text.parse().expect("valid topic filter")
}

fn publish_topic(packet: Packet) -> TopicName {
    match packet {
        Packet::Publish(publish) => publish.topic,
        other => panic!("not a PUBLISH: {other:?}"),
    }
}

// --- UTF-8 encoded strings -------------------------------------------------------------------

fn ill_formed_utf8(v: ProtocolVersion) {
    for bad in ILL_FORMED {
        let string = MqttString::from_bytes(Bytes::from_static(bad));
        assert!(string.is_err(), "{bad:02X?}");
    }
    utf8_field(v, publish);
    utf8_field(v, client_id);
}

statements! {
    /// Strings are well-formed UTF-8 without encoded surrogates; ill-formed ones close the
    /// connection.
    fn v311_mqtt_1_5_3_1() { ill_formed_utf8(V3) }

    /// Strings are well-formed UTF-8 without encodings of U+D800..U+DFFF.
    fn v5_mqtt_1_5_4_1() { ill_formed_utf8(V5) }
}

fn no_null_character(v: ProtocolVersion) {
    assert!(MqttString::new("a\0").is_err());
    reject(v, &publish(v, b"a\0b"), MALFORMED);
    reject(v, &client_id(v, b"\0"), MALFORMED);
    reject(v, &user_name(v, b"u\0"), MALFORMED);
}

statements! {
    /// Strings never contain U+0000; receiving one closes the connection.
    fn v311_mqtt_1_5_3_2() { no_null_character(V3) }

    /// Strings never contain U+0000.
    fn v5_mqtt_1_5_4_2() { no_null_character(V5) }
}

fn byte_order_mark_kept(v: ProtocolVersion) {
    let bom = "\u{FEFF}a/\u{FEFF}";
    assert_eq!(bom.as_bytes()[..3], [0xEF, 0xBB, 0xBF]);
    let wire = publish(v, bom.as_bytes());
    let packet = accept(v, &wire);
    assert_eq!(encode(v, &packet), wire, "re-encoded unchanged");
    let name = publish_topic(packet);
    assert_eq!(name.as_str(), bom);
    assert!(filter("\u{FEFF}a/+").matches(&name) && !filter("a/+").matches(&name));
    let Packet::Connect(connect) = accept(v, &client_id(v, bom.as_bytes())) else {
        panic!("not a CONNECT");
    };
    assert_eq!(connect.client_id.as_bytes(), bom.as_bytes());
}

statements! {
    /// 0xEF 0xBB 0xBF is U+FEFF wherever it appears and is never skipped or stripped.
    fn v311_mqtt_1_5_3_3() { byte_order_mark_kept(V3) }

    /// 0xEF 0xBB 0xBF is U+FEFF wherever it appears and is never skipped or stripped.
    fn v5_mqtt_1_5_4_3() { byte_order_mark_kept(V5) }
}

/// Both strings of a string pair follow the UTF-8 string rules.
#[test]
fn v5_mqtt_1_5_7_1() {
    let pair = |key: &[u8], value: &[u8]| {
        let property = cat(&[&[0x26], &str16(key), &str16(value)]);
        publish_props(&property)
    };
    let Packet::Publish(publish) = accept(V5, &pair(b"k\xC3\xA9", b"")) else {
        panic!("not a PUBLISH");
    };
    let pairs: Vec<_> = publish.properties.user_properties.iter().collect();
    assert_eq!(pairs, [("k\u{E9}", "")]);
    for bad in ILL_FORMED.into_iter().chain([&b"\0"[..]]) {
        reject(V5, &pair(bad, b"v"), MALFORMED);
        reject(V5, &pair(b"k", bad), MALFORMED);
    }
}

statements! {
    /// The Client Identifier is a UTF-8 encoded string.
    fn v311_mqtt_3_1_3_4() { utf8_field(V3, client_id) }

    /// The ClientID is a UTF-8 Encoded String.
    fn v5_mqtt_3_1_3_4() { utf8_field(V5, client_id) }

    /// The Will Topic is a UTF-8 encoded string.
    fn v311_mqtt_3_1_3_10() { utf8_field(V3, will_topic) }

    /// The Will Topic is a UTF-8 Encoded String.
    fn v5_mqtt_3_1_3_11() { utf8_field(V5, will_topic) }

    /// The User Name is a UTF-8 encoded string.
    fn v311_mqtt_3_1_3_11() { utf8_field(V3, user_name) }

    /// The User Name is a UTF-8 Encoded String.
    fn v5_mqtt_3_1_3_12() { utf8_field(V5, user_name) }
}

fn topic_name_first(v: ProtocolVersion) {
    utf8_field(v, publish);
    assert_eq!(
        publish_topic(accept(v, &publish(v, b"a/b"))).as_str(),
        "a/b"
    );
    // A body too short for the topic name it announces.
    reject(v, &[0x30, 0x03, 0x00, 0x05, b'a'], MALFORMED);
}

statements! {
    /// The Topic Name is the first field of the PUBLISH variable header, a UTF-8 encoded string.
    fn v311_mqtt_3_3_2_1() { topic_name_first(V3) }

    /// The Topic Name is the first field of the PUBLISH variable header, a UTF-8 Encoded String.
    fn v5_mqtt_3_3_2_1() { topic_name_first(V5) }
}

fn publish_topic_has_no_wildcards(v: ProtocolVersion) {
    for name in [&b"a/+"[..], b"#", b"a/#", b"+", b"a+b", b"sport/#/x"] {
        reject(v, &publish(v, name), NAME_INVALID);
    }
    accept(v, &publish(v, b"a/b$c"));
}

statements! {
    /// The PUBLISH Topic Name contains no wildcard characters.
    fn v311_mqtt_3_3_2_2() { publish_topic_has_no_wildcards(V3) }

    /// The PUBLISH Topic Name contains no wildcard characters.
    fn v5_mqtt_3_3_2_2() { publish_topic_has_no_wildcards(V5) }

    /// The Response Topic is a UTF-8 Encoded String.
    fn v5_mqtt_3_3_2_13() { utf8_field(V5, |_, t| publish_props(&cat(&[&[0x08], &str16(t)]))) }
}

/// The Response Topic contains no wildcard characters.
#[test]
fn v5_mqtt_3_3_2_14() {
    for bad in [&b"r/+"[..], b"r/#", b"#"] {
        reject(
            V5,
            &publish_props(&cat(&[&[0x08], &str16(bad)])),
            NAME_INVALID,
        );
        // The same rule for a will message's Response Topic.
        let will = cat(&[&[0x08], &str16(bad)]);
        let payload = cat(&[&str16(b"c"), &props(V5, &will), &str16(b"w"), &str16(b"m")]);
        reject(V5, &conn(V5, 0x06, &payload), NAME_INVALID);
    }
}

statements! {
    /// The Content Type is a UTF-8 Encoded String.
    fn v5_mqtt_3_3_2_19() { utf8_field(V5, |_, t| publish_props(&cat(&[&[0x03], &str16(t)]))) }

    /// Topic filters in SUBSCRIBE are UTF-8 encoded strings.
    fn v311_mqtt_3_8_3_1() { utf8_field(V3, subscribe) }

    /// Topic filters in SUBSCRIBE are UTF-8 Encoded Strings.
    fn v5_mqtt_3_8_3_1() { utf8_field(V5, subscribe) }
}

fn unsubscribe_filters(v: ProtocolVersion) {
    utf8_field(v, unsubscribe);
    let two = frame(
        0xA2,
        &cat(&[&[0, 1], &props(v, &[]), &str16(b"a"), &str16(b"b/#")]),
    );
    let Packet::Unsubscribe(packet) = accept(v, &two) else {
        panic!("not an UNSUBSCRIBE");
    };
    assert_eq!(
        packet.filters.iter().collect::<Vec<_>>(),
        [filter("a"), filter("b/#")]
    );
    // A stray byte between the filters breaks the contiguous packing.
    let gap = frame(
        0xA2,
        &cat(&[&[0, 1], &props(v, &[]), &str16(b"a"), &[0xFF], &str16(b"b")]),
    );
    reject(v, &gap, MALFORMED);
}

statements! {
    /// UNSUBSCRIBE topic filters are UTF-8 encoded strings, packed contiguously.
    fn v311_mqtt_3_10_3_1() { unsubscribe_filters(V3) }

    /// UNSUBSCRIBE topic filters are UTF-8 Encoded Strings.
    fn v5_mqtt_3_10_3_1() { unsubscribe_filters(V5) }
}

// --- Topic names and filters -----------------------------------------------------------------

fn wildcards_only_in_filters(v: ProtocolVersion) {
    for text in ["+", "#", "a/+/b", "a/#", "+/+/#"] {
        assert!(TopicFilter::from_str(text).is_ok(), "{text}");
        accept(v, &subscribe(v, text.as_bytes()));
        accept(v, &unsubscribe(v, text.as_bytes()));
        let e = TopicName::from_str(text).expect_err("wildcard in a topic name");
        assert_eq!(e.reason_code(), NAME_INVALID);
        reject(v, &publish(v, text.as_bytes()), NAME_INVALID);
        reject(v, &will_topic(v, text.as_bytes()), NAME_INVALID);
    }
}

statements! {
    /// Wildcards may appear in topic filters but never in topic names.
    fn v311_mqtt_4_7_1_1() { wildcards_only_in_filters(V3) }

    /// Wildcards may appear in topic filters but never in topic names.
    fn v5_mqtt_4_7_0_1() { wildcards_only_in_filters(V5) }
}

fn filter_syntax(v: ProtocolVersion, valid: &[&str], invalid: &[&str]) {
    for text in valid {
        assert!(TopicFilter::from_str(text).is_ok(), "{text}");
        accept(v, &subscribe(v, text.as_bytes()));
    }
    for text in invalid {
        let e = TopicFilter::from_str(text).expect_err(text);
        assert_eq!(e.reason_code(), FILTER_INVALID);
        reject(v, &subscribe(v, text.as_bytes()), FILTER_INVALID);
        reject(v, &unsubscribe(v, text.as_bytes()), FILTER_INVALID);
    }
}

fn multi_level_wildcard(v: ProtocolVersion) {
    let valid = ["#", "a/#", "/#", "a/b/#", "+/#"];
    filter_syntax(v, &valid, &["a#", "a/#/b", "#/", "a/b#", "##", "#/a"]);
    let f = filter("sport/tennis/#");
    for t in ["sport/tennis", "sport/tennis/p1", "sport/tennis/p1/ranking"] {
        assert!(f.matches(t), "{t}");
    }
    assert!(!f.matches("sport/tenni") && !f.matches("sport"));
    assert!(filter("#").matches("a/b") && filter("#").matches("/"));
}

statements! {
    /// '#' stands alone or after a '/', and is always the last character of the filter.
    fn v311_mqtt_4_7_1_2() { multi_level_wildcard(V3) }

    /// '#' stands alone or after a '/', and is always the last character of the filter.
    fn v5_mqtt_4_7_1_1() { multi_level_wildcard(V5) }
}

fn single_level_wildcard(v: ProtocolVersion) {
    let valid = ["+", "+/tennis/#", "sport/+/player1", "/+", "+/", "+/+"];
    filter_syntax(v, &valid, &["sport+", "+a", "a/b+/c", "++", "a/+b"]);
    let cases = [
        ("sport/+", "sport", false),
        ("sport/+", "sport/", true),
        ("sport/+", "sport/a/b", false),
        ("+/+", "/finance", true),
        ("/+", "/finance", true),
        ("+", "/finance", false),
        ("sport/+/player1", "sport/tennis/player1", true),
    ];
    for (f, t, want) in cases {
        assert_eq!(filter(f).matches(t), want, "{f} vs {t}");
    }
}

statements! {
    /// '+' occupies a whole level of the filter, at any level.
    fn v311_mqtt_4_7_1_3() { single_level_wildcard(V3) }

    /// '+' occupies a whole level of the filter, at any level.
    fn v5_mqtt_4_7_1_2() { single_level_wildcard(V5) }
}

fn dollar_topics(v: ProtocolVersion) {
    let cases = [
        ("#", "$SYS/uptime", false),
        ("+/monitor/Clients", "$SYS/monitor/Clients", false),
        ("+", "$SYS", false),
        ("$SYS/#", "$SYS/monitor/Clients", true),
        ("$SYS/monitor/+", "$SYS/monitor/Clients", true),
        ("#", "a/$SYS", true),
        ("+/+", "a$/b", true),
    ];
    for (f, t, want) in cases {
        assert_eq!(filter_matches(f, t), want, "{f} vs {t}");
        assert_eq!(filter(f).matches(t), want, "{f} vs {t}");
    }
    let name = publish_topic(accept(v, &publish(v, b"$SYS/x")));
    assert!(name.is_dollar() && !filter("#").matches(&name));
}

/// The codec's reference matcher never matches a filter starting with a wildcard with a topic
/// name starting with '$' (the server's own index is held to MQTT-4.7.2-1 by the broker tests).
#[test]
fn reference_matcher_keeps_dollar_topics_from_leading_wildcards() {
    dollar_topics(V3);
    dollar_topics(V5);
    // A shared subscription matches by its inner filter, so the rule holds there too.
    assert!(!filter("$share/g/#").matches("$SYS/x") && filter("$share/g/#").matches("a"));
}

fn at_least_one_character(v: ProtocolVersion) {
    assert!(TopicName::from_str("").is_err() && TopicFilter::from_str("").is_err());
    reject(v, &subscribe(v, b""), FILTER_INVALID);
    reject(v, &unsubscribe(v, b""), FILTER_INVALID);
    reject(v, &will_topic(v, b""), NAME_INVALID);
    for one in ["a", "/"] {
        assert_eq!(
            publish_topic(accept(v, &publish(v, one.as_bytes()))).as_str(),
            one
        );
        accept(v, &subscribe(v, one.as_bytes()));
    }
}

/// Topic names and topic filters are at least one character long.
#[test]
fn v311_mqtt_4_7_3_1() {
    at_least_one_character(V3);
    reject(V3, &publish(V3, b""), NAME_INVALID);
}

/// Topic names and topic filters are at least one character long.
#[test]
fn v5_mqtt_4_7_3_1() {
    at_least_one_character(V5);
    // An empty PUBLISH topic is only a placeholder for a Topic Alias (3.3.2.3.4).
    reject(V5, &publish(V5, b""), PROTOCOL);
    let aliased = frame(0x30, &cat(&[&str16(b""), &props(V5, &[0x23, 0, 1])]));
    assert!(publish_topic(accept(V5, &aliased)).is_empty());
}

fn topic_without_null(v: ProtocolVersion) {
    assert!(TopicName::from_str("a\0").is_err() && TopicFilter::from_str("a/\0").is_err());
    reject(v, &publish(v, b"a/\0"), MALFORMED);
    reject(v, &will_topic(v, b"\0"), MALFORMED);
    reject(v, &subscribe(v, b"a/\0/#"), MALFORMED);
    reject(v, &unsubscribe(v, b"\0"), MALFORMED);
}

statements! {
    /// Topic names and topic filters contain no U+0000.
    fn v311_mqtt_4_7_3_2() { topic_without_null(V3) }

    /// Topic names and topic filters contain no U+0000.
    fn v5_mqtt_4_7_3_2() { topic_without_null(V5) }
}

fn at_most_65535_bytes(v: ProtocolVersion) {
    let longest = "a".repeat(65_535);
    let too_long = "a".repeat(65_536);
    assert!(TopicName::from_str(&longest).is_ok() && TopicFilter::from_str(&longest).is_ok());
    assert!(TopicName::from_str(&too_long).is_err() && TopicFilter::from_str(&too_long).is_err());
    // Remaining length 65,538 (3.1.1) or 65,539 (5.0): three bytes, the last one 0x04.
    let wire = publish(v, longest.as_bytes());
    assert_eq!(
        (wire[2], wire[3], &wire[4..6]),
        (0x80, 0x04, &[0xFF, 0xFF][..])
    );
    let packet = accept(v, &wire);
    assert_eq!(encode(v, &packet), wire);
    let publish = Publish::new(topic(&longest), Bytes::new());
    assert_eq!(encode(v, &Packet::Publish(publish))[4..6], [0xFF, 0xFF]);
}

statements! {
    /// Topic names and topic filters encode to at most 65,535 bytes.
    fn v311_mqtt_4_7_3_3() { at_most_65535_bytes(V3) }

    /// Topic names and topic filters encode to at most 65,535 bytes.
    fn v5_mqtt_4_7_3_3() { at_most_65535_bytes(V5) }
}

fn no_normalisation(v: ProtocolVersion) {
    let composed = "caf\u{E9}";
    let decomposed = "cafe\u{301}";
    assert!(!filter(composed).matches(decomposed) && !filter(decomposed).matches(composed));
    let cases = [
        ("a/b", "A/b"),
        ("a/b", "a/b/"),
        ("a/b", "a//b"),
        ("a b", "a  b"),
        ("a", " a"),
    ];
    for (f, t) in cases {
        assert!(!filter(f).matches(t), "{f:?} vs {t:?}");
    }
    // Unassigned, private-use and noncharacter code points are kept byte for byte.
    for text in [decomposed, "x/\u{378}", "\u{E000}/\u{FFFF}"] {
        let name = publish_topic(accept(v, &publish(v, text.as_bytes())));
        assert_eq!(name.as_str().as_bytes(), text.as_bytes());
        assert!(filter(text).matches(&name));
    }
}

/// The codec keeps topic names byte for byte and its reference matcher neither normalises nor
/// substitutes characters (the server's own index is held to MQTT-4.7.3-4 by the broker tests).
#[test]
fn reference_matcher_does_not_normalise() {
    no_normalisation(V3);
    no_normalisation(V5);
}

// --- SUBSCRIBE and UNSUBSCRIBE structure -----------------------------------------------------

fn subscribe_needs_a_filter(v: ProtocolVersion) {
    reject(v, &frame(0x82, &cat(&[&[0, 1], &props(v, &[])])), PROTOCOL);
    if v == V5 {
        // Properties alone do not make a payload.
        reject(V5, &frame(0x82, &[0, 1, 2, 0x0B, 0x01]), PROTOCOL);
    }
    let empty = Subscribe {
        packet_id: PacketId::new(1).expect("non-zero"),
        properties: SubscribeProperties::default(),
        subscriptions: SubscriptionList::new([]),
    };
    let result = try_encode(v, &Packet::Subscribe(empty));
    assert_eq!(result, Err(EncodeError::EmptyList));
}

statements! {
    /// A SUBSCRIBE carries at least one topic filter and QoS pair.
    fn v311_mqtt_3_8_3_3() { subscribe_needs_a_filter(V3) }

    /// A SUBSCRIBE carries at least one topic filter and subscription options pair.
    fn v5_mqtt_3_8_3_2() { subscribe_needs_a_filter(V5) }
}

fn unsubscribe_needs_a_filter(v: ProtocolVersion) {
    reject(v, &frame(0xA2, &cat(&[&[0, 1], &props(v, &[])])), PROTOCOL);
    let empty = Unsubscribe {
        packet_id: PacketId::new(1).expect("non-zero"),
        properties: UnsubscribeProperties::default(),
        filters: FilterList::new([]),
    };
    let result = try_encode(v, &Packet::Unsubscribe(empty));
    assert_eq!(result, Err(EncodeError::EmptyList));
}

statements! {
    /// An UNSUBSCRIBE carries at least one topic filter.
    fn v311_mqtt_3_10_3_2() { unsubscribe_needs_a_filter(V3) }

    /// An UNSUBSCRIBE carries at least one topic filter.
    fn v5_mqtt_3_10_3_2() { unsubscribe_needs_a_filter(V5) }
}

/// SUBSCRIBE with non-zero reserved bits or QoS 3 is malformed and the connection closed.
#[test]
fn v311_mqtt_3_8_3_4() {
    for options in [0x00, 0x01, 0x02] {
        accept(V3, &subscribe_with(V3, b"a", options));
    }
    for options in [0x03, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80, 0xFE] {
        reject(V3, &subscribe_with(V3, b"a", options), MALFORMED);
    }
}

/// No Local set on a Shared Subscription is a Protocol Error.
#[test]
fn v5_mqtt_3_8_3_4() {
    reject(V5, &subscribe_with(V5, b"$share/g/a", 0x04), PROTOCOL);
    reject(V5, &subscribe_with(V5, b"$share/g/a", 0x2E), PROTOCOL);
    accept(V5, &subscribe_with(V5, b"$share/g/a", 0x2A));
    accept(V5, &subscribe_with(V5, b"a", 0x04));
}

/// Non-zero reserved bits in the subscription options make SUBSCRIBE malformed.
#[test]
fn v5_mqtt_3_8_3_5() {
    accept(V5, &subscribe_with(V5, b"a", 0x2E));
    for options in [0x40, 0x80, 0xC0, 0x6E] {
        reject(V5, &subscribe_with(V5, b"a", options), MALFORMED);
    }
}

/// Retain Handling 3 and Maximum QoS 3 in subscription options are Protocol Errors (3.8.3.1).
#[test]
fn v5_subscription_option_value_3_is_protocol_error() {
    reject(V5, &subscribe_with(V5, b"a", 0x30), PROTOCOL);
    reject(V5, &subscribe_with(V5, b"a", 0x03), PROTOCOL);
}

// --- Shared subscriptions --------------------------------------------------------------------

/// A shared subscription's filter starts with "$share/" and has a ShareName of at least one
/// character.
#[test]
fn v5_mqtt_4_8_2_1() {
    let shared = filter("$share/g/a/+");
    let (group, inner) = shared.shared().expect("shared");
    assert_eq!((group, inner.as_str()), ("g", "a/+"));
    assert!(shared.is_shared() && shared.matches("a/b") && !shared.matches("$share/g/a/b"));
    for plain in ["$sharex/g/a", "$SHARE/g/a", "share/g/a", "a/$share/g"] {
        assert!(filter(plain).shared().is_none(), "{plain}");
    }
    filter_syntax(V5, &[], &["$share//a", "$share/", "$share//"]);
}

/// A ShareName contains no '/', '+' or '#', and is followed by '/' and a topic filter.
#[test]
fn v5_mqtt_4_8_2_2() {
    filter_syntax(
        V5,
        &["$share/g/#"],
        &["$share/g+/a", "$share/+/a", "$share/#/a", "$share/g"],
    );
    filter_syntax(
        V5,
        &[],
        &["$share/g/", "$share/g/a#", "$share/g/#/a", "$share/g/a+"],
    );
    // The ShareName ends at the first '/': everything after it is the filter.
    let nested = filter("$share/a/b/c");
    let (group, inner) = nested.shared().expect("shared");
    assert_eq!((group, inner.as_str()), ("a", "b/c"));
}
