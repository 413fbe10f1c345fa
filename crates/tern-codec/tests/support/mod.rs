//! Proptest strategies that generate every valid packet the codec can carry, per protocol level.
//!
//! A strategy for 3.1.1 generates only what 3.1.1 can carry: no properties, no AUTH, CONNACK
//! codes that survive `to_v3_connack`, SUBACK codes 0/1/2/0x80, plain acknowledgements,
//! empty UNSUBACK reason codes and a default DISCONNECT.
#![allow(dead_code)]

mod properties;
pub(crate) mod samples;

use bytes::Bytes;
use proptest::collection::vec;
use proptest::option::of;
use proptest::prelude::*;
use proptest::sample::select;
use tern_codec::{
    Ack, AckProperties, Auth, AuthProperties, ConnAck, ConnAckProperties, Connect,
    ConnectProperties, Disconnect, DisconnectProperties, FilterList, MqttString, Packet, PacketId,
    PacketType, ProtocolVersion, Publish, PublishProperties, QoS, ReasonCode, RetainHandling,
    SubAck, Subscribe, SubscribeProperties, Subscription, SubscriptionList, SubscriptionOptions,
    TopicFilter, TopicName, UnsubAck, Unsubscribe, UnsubscribeProperties, Will, WillProperties,
};

pub(crate) use properties::*;
use ProtocolVersion::{V31, V311, V5};

/// Both protocol levels.
pub(crate) const VERSIONS: [ProtocolVersion; 2] = [V311, V5];

/// The fifteen packet types, in the order of their type nibble.
pub(crate) const PACKET_TYPES: [PacketType; 15] = [
    PacketType::Connect,
    PacketType::ConnAck,
    PacketType::Publish,
    PacketType::PubAck,
    PacketType::PubRec,
    PacketType::PubRel,
    PacketType::PubComp,
    PacketType::Subscribe,
    PacketType::SubAck,
    PacketType::Unsubscribe,
    PacketType::UnsubAck,
    PacketType::PingReq,
    PacketType::PingResp,
    PacketType::Disconnect,
    PacketType::Auth,
];

pub(crate) fn version() -> impl Strategy<Value = ProtocolVersion> {
    prop_oneof![Just(V311), Just(V5)]
}

pub(crate) fn qos() -> impl Strategy<Value = QoS> {
    prop_oneof![
        Just(QoS::AtMostOnce),
        Just(QoS::AtLeastOnce),
        Just(QoS::ExactlyOnce)
    ]
}

pub(crate) fn packet_id() -> impl Strategy<Value = PacketId> {
    prop_oneof![
        1 => Just(1u16),
        1 => Just(u16::MAX),
        6 => 1..=u16::MAX,
    ]
    .prop_map(|id| PacketId::new(id).unwrap())
}

/// Any character an MQTT string may hold, biased towards multi-byte ones and U+FEFF.
fn text_char() -> impl Strategy<Value = char> {
    prop_oneof![
        4 => proptest::char::range('a', 'z'),
        3 => any::<char>().prop_filter("U+0000 is not allowed", |c| *c != '\0'),
        1 => Just('\u{FEFF}'),
        2 => select(vec![
            ' ', '$', '/', '+', '#', '\u{1}', '\u{7F}', '\u{80}', 'é', '€', '中', '\u{FFFF}',
            '𝄞', '😀', '\u{10FFFF}',
        ]),
    ]
}

pub(crate) fn text() -> impl Strategy<Value = String> {
    vec(text_char(), 0..12).prop_map(String::from_iter)
}

pub(crate) fn mqtt_string() -> impl Strategy<Value = MqttString> {
    prop_oneof![
        12 => text(),
        1 => Just(String::new()),
        // The longest string a two-byte length can carry, ending in a multi-byte character.
        1 => Just(format!("{}\u{FEFF}", "x".repeat(65_532))),
    ]
    .prop_map(|s| MqttString::new(&s).unwrap())
}

/// A short string (for fields repeated many times in one packet).
pub(crate) fn short_string() -> impl Strategy<Value = MqttString> {
    text().prop_map(|s| MqttString::new(&s).unwrap())
}

fn level_char() -> impl Strategy<Value = char> {
    text_char().prop_filter("no separator or wildcard inside a level", |c| {
        !matches!(c, '+' | '#' | '/')
    })
}

fn level() -> impl Strategy<Value = String> {
    vec(level_char(), 0..6).prop_map(String::from_iter)
}

/// A non-empty topic name, empty levels and `$` topics included.
pub(crate) fn topic_name() -> impl Strategy<Value = TopicName> {
    prop_oneof![
        8 => vec(level(), 1..5).prop_map(|levels| levels.join("/")),
        1 => select(vec!["/", "a", "$SYS/uptime", "a//b", "\u{FEFF}"]).prop_map(String::from),
    ]
    .prop_filter_map("topic names are not empty", |s| s.parse().ok())
}

fn plain_filter() -> impl Strategy<Value = String> {
    (
        vec(prop_oneof![1 => Just("+".to_owned()), 3 => level()], 0..5),
        any::<bool>(),
    )
        .prop_map(|(mut levels, hash)| {
            if hash || levels.is_empty() {
                levels.push("#".to_owned());
            }
            levels.join("/")
        })
}

/// A valid topic filter: wildcards, empty levels and `$share/{group}/` filters.
pub(crate) fn topic_filter() -> impl Strategy<Value = TopicFilter> {
    let group = vec(level_char(), 1..6).prop_map(String::from_iter);
    prop_oneof![
        6 => plain_filter(),
        2 => (group, plain_filter()).prop_map(|(g, f)| format!("$share/{g}/{f}")),
        1 => select(vec!["#", "+", "/", "+/+", "$SYS/#", "$share/g/#", "$share/g//"])
            .prop_map(String::from),
    ]
    .prop_filter_map("generated filter is valid", |s| s.parse().ok())
}

/// Binary data (at most 65,535 bytes), the limit included.
pub(crate) fn binary() -> impl Strategy<Value = Bytes> {
    prop_oneof![
        10 => vec(any::<u8>(), 0..24),
        1 => any::<u8>().prop_map(|b| vec![b; 65_535]),
    ]
    .prop_map(Bytes::from)
}

/// A payload: empty, small, or large enough for three- and four-byte remaining lengths.
pub(crate) fn payload() -> impl Strategy<Value = Bytes> {
    prop_oneof![
        2 => Just(Vec::new()),
        8 => vec(any::<u8>(), 0..64),
        2 => vec(any::<u8>(), 100..400),
        1 => (any::<u8>(), 16_300..16_500usize).prop_map(|(b, n)| vec![b; n]),
        1 => (any::<u8>(), 65_000..70_000usize).prop_map(|(b, n)| vec![b; n]),
        1 => Just(vec![0xA5; 2_097_200]),
    ]
    .prop_map(Bytes::from)
}

/// A reason code the spec allows in `packet` (MQTT 5).
pub(crate) fn reason_in(packet: PacketType) -> impl Strategy<Value = ReasonCode> {
    let codes: Vec<ReasonCode> = ReasonCode::ALL
        .iter()
        .copied()
        .filter(|c| c.allowed_in(packet))
        .collect();
    select(codes)
}

pub(crate) fn connect(version: ProtocolVersion) -> BoxedStrategy<Connect> {
    let v5 = version == V5;
    let will = (
        topic_name(),
        binary(),
        qos(),
        any::<bool>(),
        will_properties(),
    )
        .prop_map(move |(topic, payload, qos, retain, properties)| Will {
            topic,
            payload,
            qos,
            retain,
            properties: if v5 {
                properties
            } else {
                WillProperties::default()
            },
        });
    (
        (
            any::<bool>(),
            any::<u16>(),
            connect_properties(),
            mqtt_string(),
        ),
        (of(will), of(mqtt_string()), of(binary())),
    )
        .prop_map(
            move |(
                (clean_start, keep_alive, properties, client_id),
                (will, username, password),
            )| {
                Connect {
                    protocol_version: version,
                    clean_start,
                    keep_alive,
                    properties: if v5 {
                        properties
                    } else {
                        ConnectProperties::default()
                    },
                    client_id,
                    will,
                    // 3.1.1 carries a password only after a user name.
                    password: password.filter(|_| v5 || username.is_some()),
                    username,
                }
            },
        )
        .boxed()
}

pub(crate) fn connack(version: ProtocolVersion) -> BoxedStrategy<ConnAck> {
    let code = match version {
        V31 | V311 => (0u8..=5)
            .prop_map(|c| ReasonCode::from_v3_connack(c).unwrap())
            .boxed(),
        V5 => reason_in(PacketType::ConnAck).boxed(),
    };
    let properties = match version {
        V31 | V311 => Just(ConnAckProperties::default()).boxed(),
        V5 => connack_properties().boxed(),
    };
    (any::<bool>(), code, properties)
        .prop_map(|(session_present, reason_code, properties)| ConnAck {
            // Session Present is only set on an accepted connection.
            session_present: session_present && reason_code == ReasonCode::Success,
            reason_code,
            properties,
        })
        .boxed()
}

pub(crate) fn publish(version: ProtocolVersion) -> BoxedStrategy<Publish> {
    let properties = match version {
        V31 | V311 => Just(PublishProperties::default()).boxed(),
        V5 => publish_properties().boxed(),
    };
    let topic = match version {
        V31 | V311 => topic_name().boxed(),
        V5 => prop_oneof![6 => topic_name(), 1 => Just(TopicName::empty())].boxed(),
    };
    (
        (any::<bool>(), qos(), any::<bool>(), packet_id()),
        (topic, properties, payload(), nonzero_u16()),
    )
        .prop_map(
            |((dup, qos, retain, id), (topic, mut properties, payload, alias))| {
                // An empty topic name stands for a topic alias, which must then be present.
                if topic.is_empty() && properties.topic_alias.is_none() {
                    properties.topic_alias = Some(alias);
                }
                let qos0 = qos == QoS::AtMostOnce;
                Publish {
                    dup: dup && !qos0,
                    qos,
                    retain,
                    topic,
                    packet_id: if qos0 { None } else { Some(id) },
                    properties,
                    payload,
                }
            },
        )
        .boxed()
}

pub(crate) fn ack(version: ProtocolVersion, packet: PacketType) -> BoxedStrategy<Ack> {
    match version {
        V31 | V311 => packet_id().prop_map(Ack::new).boxed(),
        V5 => (packet_id(), reason_in(packet), ack_properties())
            .prop_map(|(packet_id, reason_code, properties)| Ack {
                packet_id,
                reason_code,
                properties,
            })
            .boxed(),
    }
}

fn subscription(version: ProtocolVersion) -> impl Strategy<Value = Subscription> {
    let handling = prop_oneof![
        Just(RetainHandling::SendAtSubscribe),
        Just(RetainHandling::SendIfNew),
        Just(RetainHandling::DoNotSend)
    ];
    (
        topic_filter(),
        qos(),
        any::<bool>(),
        any::<bool>(),
        handling,
    )
        .prop_map(move |(filter, qos, no_local, rap, handling)| {
            let options = match version {
                V31 | V311 => SubscriptionOptions::qos(qos),
                V5 => SubscriptionOptions {
                    qos,
                    // No Local on a shared subscription is a protocol error.
                    no_local: no_local && !filter.is_shared(),
                    retain_as_published: rap,
                    retain_handling: handling,
                },
            };
            Subscription { filter, options }
        })
}

pub(crate) fn subscribe(version: ProtocolVersion) -> BoxedStrategy<Subscribe> {
    let properties = match version {
        V31 | V311 => Just(SubscribeProperties::default()).boxed(),
        V5 => (of(subscription_id()), user_properties())
            .prop_map(|(id, u)| SubscribeProperties {
                subscription_identifier: id,
                user_properties: u,
            })
            .boxed(),
    };
    (packet_id(), properties, vec(subscription(version), 1..8))
        .prop_map(|(packet_id, properties, subs)| Subscribe {
            packet_id,
            properties,
            subscriptions: SubscriptionList::new(&subs),
        })
        .boxed()
}

pub(crate) fn suback(version: ProtocolVersion) -> BoxedStrategy<SubAck> {
    let (code, properties) = match version {
        V31 | V311 => (
            select(vec![
                ReasonCode::GRANTED_QOS_0,
                ReasonCode::GrantedQos1,
                ReasonCode::GrantedQos2,
                ReasonCode::UnspecifiedError,
            ])
            .boxed(),
            Just(AckProperties::default()).boxed(),
        ),
        V5 => (
            reason_in(PacketType::SubAck).boxed(),
            ack_properties().boxed(),
        ),
    };
    (packet_id(), properties, vec(code, 1..10))
        .prop_map(|(packet_id, properties, reason_codes)| SubAck {
            packet_id,
            properties,
            reason_codes,
        })
        .boxed()
}

pub(crate) fn unsubscribe(version: ProtocolVersion) -> BoxedStrategy<Unsubscribe> {
    let properties = match version {
        V31 | V311 => Just(UnsubscribeProperties::default()).boxed(),
        V5 => user_properties()
            .prop_map(|u| UnsubscribeProperties { user_properties: u })
            .boxed(),
    };
    (packet_id(), properties, vec(topic_filter(), 1..8))
        .prop_map(|(packet_id, properties, filters)| Unsubscribe {
            packet_id,
            properties,
            filters: FilterList::new(&filters),
        })
        .boxed()
}

pub(crate) fn unsuback(version: ProtocolVersion) -> BoxedStrategy<UnsubAck> {
    match version {
        V31 | V311 => packet_id()
            .prop_map(|packet_id| UnsubAck {
                packet_id,
                properties: AckProperties::default(),
                reason_codes: Vec::new(),
            })
            .boxed(),
        V5 => (
            packet_id(),
            ack_properties(),
            vec(reason_in(PacketType::UnsubAck), 1..10),
        )
            .prop_map(|(packet_id, properties, reason_codes)| UnsubAck {
                packet_id,
                properties,
                reason_codes,
            })
            .boxed(),
    }
}

pub(crate) fn disconnect(version: ProtocolVersion) -> BoxedStrategy<Disconnect> {
    match version {
        V31 | V311 => Just(Disconnect::default()).boxed(),
        V5 => (
            reason_in(PacketType::Disconnect),
            of(any::<u32>()),
            of(mqtt_string()),
            of(short_string()),
            user_properties(),
        )
            .prop_map(|(reason_code, sei, rs, sr, u)| Disconnect {
                reason_code,
                properties: DisconnectProperties {
                    session_expiry_interval: sei,
                    reason_string: rs,
                    server_reference: sr,
                    user_properties: u,
                },
            })
            .boxed(),
    }
}

/// AUTH exists only in MQTT 5.
pub(crate) fn auth() -> BoxedStrategy<Auth> {
    (
        reason_in(PacketType::Auth),
        of(short_string()),
        of(binary()),
        of(mqtt_string()),
        user_properties(),
    )
        .prop_map(|(reason_code, am, ad, rs, u)| Auth {
            reason_code,
            properties: AuthProperties {
                authentication_method: am,
                authentication_data: ad,
                reason_string: rs,
                user_properties: u,
            },
        })
        .boxed()
}

/// A packet of the given type for `version`; AUTH only for MQTT 5.
pub(crate) fn packet_of(version: ProtocolVersion, packet: PacketType) -> BoxedStrategy<Packet> {
    match packet {
        PacketType::Connect => connect(version)
            .prop_map(|c| Packet::Connect(Box::new(c)))
            .boxed(),
        PacketType::ConnAck => connack(version)
            .prop_map(|c| Packet::ConnAck(Box::new(c)))
            .boxed(),
        PacketType::Publish => publish(version).prop_map(Packet::Publish).boxed(),
        PacketType::PubAck => ack(version, packet).prop_map(Packet::PubAck).boxed(),
        PacketType::PubRec => ack(version, packet).prop_map(Packet::PubRec).boxed(),
        PacketType::PubRel => ack(version, packet).prop_map(Packet::PubRel).boxed(),
        PacketType::PubComp => ack(version, packet).prop_map(Packet::PubComp).boxed(),
        PacketType::Subscribe => subscribe(version).prop_map(Packet::Subscribe).boxed(),
        PacketType::SubAck => suback(version).prop_map(Packet::SubAck).boxed(),
        PacketType::Unsubscribe => unsubscribe(version).prop_map(Packet::Unsubscribe).boxed(),
        PacketType::UnsubAck => unsuback(version).prop_map(Packet::UnsubAck).boxed(),
        PacketType::PingReq => Just(Packet::PingReq).boxed(),
        PacketType::PingResp => Just(Packet::PingResp).boxed(),
        PacketType::Disconnect => disconnect(version).prop_map(Packet::Disconnect).boxed(),
        PacketType::Auth => {
            assert_eq!(version, V5, "AUTH does not exist in MQTT 3.1.1");
            auth().prop_map(Packet::Auth).boxed()
        }
    }
}

/// Any packet `version` can carry.
pub(crate) fn packet(version: ProtocolVersion) -> BoxedStrategy<Packet> {
    let types: Vec<PacketType> = PACKET_TYPES
        .into_iter()
        .filter(|t| version == V5 || *t != PacketType::Auth)
        .collect();
    select(types)
        .prop_flat_map(move |t| packet_of(version, t))
        .boxed()
}

/// A protocol level and a packet it can carry.
pub(crate) fn versioned_packet() -> impl Strategy<Value = (ProtocolVersion, Packet)> {
    version().prop_flat_map(|v| (Just(v), packet(v)))
}
