//! Hand-written packets of every type in both protocol levels: minimal ones and ones with every
//! field and property set. They seed the fuzz corpus and the fixed round-trip cases.

use bytes::Bytes;
use tern_codec::{
    Ack, AckProperties, Auth, AuthProperties, ConnAck, ConnAckProperties, Connect,
    ConnectProperties, Disconnect, DisconnectProperties, FilterList, MqttString, Packet, PacketId,
    PayloadFormat, ProtocolVersion, Publish, PublishProperties, QoS, ReasonCode, RetainHandling,
    SubAck, Subscribe, SubscribeProperties, Subscription, SubscriptionIds, SubscriptionList,
    SubscriptionOptions, TopicFilter, TopicName, UnsubAck, Unsubscribe, UnsubscribeProperties,
    UserProperties, Will, WillProperties, VARINT_MAX,
};

use ProtocolVersion::{V311, V5};

fn s(text: &str) -> MqttString {
    MqttString::new(text).unwrap()
}

fn topic(text: &str) -> TopicName {
    text.parse().unwrap()
}

fn filter(text: &str) -> TopicFilter {
    text.parse().unwrap()
}

fn id(value: u16) -> PacketId {
    PacketId::new(value).unwrap()
}

fn users() -> UserProperties {
    let pairs = [
        (s("k"), s("v")),
        (s("\u{FEFF}clé"), s("中文😀")),
        (s("k"), s("")),
    ];
    UserProperties::from_pairs(pairs.iter().map(|(k, v)| (k, v)))
}

fn subscriptions(version: ProtocolVersion) -> SubscriptionList {
    let v5 = version == V5;
    let subs = [
        Subscription {
            filter: filter("a/+/c"),
            options: SubscriptionOptions::qos(QoS::AtMostOnce),
        },
        Subscription {
            filter: filter("sport/#"),
            options: SubscriptionOptions {
                qos: QoS::AtLeastOnce,
                no_local: v5,
                retain_as_published: v5,
                retain_handling: if v5 {
                    RetainHandling::DoNotSend
                } else {
                    RetainHandling::SendAtSubscribe
                },
            },
        },
        Subscription {
            filter: filter("$share/group/sensors/+/temp"),
            options: SubscriptionOptions {
                qos: QoS::ExactlyOnce,
                retain_handling: if v5 {
                    RetainHandling::SendIfNew
                } else {
                    RetainHandling::SendAtSubscribe
                },
                ..SubscriptionOptions::default()
            },
        },
    ];
    SubscriptionList::new(&subs)
}

fn full_connect(version: ProtocolVersion) -> Connect {
    let v5 = version == V5;
    Connect {
        protocol_version: version,
        clean_start: true,
        keep_alive: 60,
        properties: if v5 {
            ConnectProperties {
                session_expiry_interval: Some(3600),
                receive_maximum: Some(20),
                maximum_packet_size: Some(1 << 20),
                topic_alias_maximum: Some(10),
                request_response_information: Some(true),
                request_problem_information: Some(false),
                authentication_method: Some(s("SCRAM-SHA-1")),
                authentication_data: Some(Bytes::from_static(b"\x00\x01client-first")),
                user_properties: users(),
            }
        } else {
            ConnectProperties::default()
        },
        client_id: s("client-\u{FEFF}é"),
        will: Some(Will {
            topic: topic("clients/c1/status"),
            payload: Bytes::from_static(b"offline"),
            qos: QoS::AtLeastOnce,
            retain: true,
            properties: if v5 {
                WillProperties {
                    will_delay_interval: Some(5),
                    payload_format_indicator: Some(PayloadFormat::Utf8),
                    message_expiry_interval: Some(120),
                    content_type: Some(s("text/plain")),
                    response_topic: Some(topic("clients/c1/reply")),
                    correlation_data: Some(Bytes::from_static(b"corr")),
                    user_properties: users(),
                    order: Default::default(),
                }
            } else {
                WillProperties::default()
            },
        }),
        username: Some(s("user")),
        password: Some(Bytes::from_static(b"p\x00ss")),
    }
}

fn minimal_connect(version: ProtocolVersion) -> Connect {
    Connect {
        protocol_version: version,
        clean_start: false,
        keep_alive: 0,
        properties: ConnectProperties::default(),
        client_id: MqttString::empty(),
        will: None,
        username: None,
        password: None,
    }
}

fn full_connack() -> ConnAck {
    ConnAck {
        session_present: true,
        reason_code: ReasonCode::Success,
        properties: ConnAckProperties {
            session_expiry_interval: Some(0),
            receive_maximum: Some(u16::MAX),
            maximum_qos: Some(QoS::AtLeastOnce),
            retain_available: Some(true),
            maximum_packet_size: Some(u32::MAX),
            assigned_client_identifier: Some(s("auto-1")),
            topic_alias_maximum: Some(0),
            reason_string: Some(s("welcome")),
            wildcard_subscription_available: Some(true),
            subscription_identifiers_available: Some(false),
            shared_subscription_available: Some(true),
            server_keep_alive: Some(30),
            response_information: Some(s("resp/")),
            server_reference: Some(s("other:1883")),
            authentication_method: Some(s("SCRAM-SHA-1")),
            authentication_data: Some(Bytes::from_static(b"server-final")),
            user_properties: users(),
        },
    }
}

fn full_publish() -> Publish {
    Publish {
        dup: true,
        qos: QoS::ExactlyOnce,
        retain: true,
        topic: topic("a/b/\u{FEFF}c"),
        packet_id: Some(id(u16::MAX)),
        properties: PublishProperties {
            payload_format_indicator: Some(PayloadFormat::Utf8),
            message_expiry_interval: Some(u32::MAX),
            topic_alias: Some(7),
            response_topic: Some(topic("reply/here")),
            correlation_data: Some(Bytes::from_static(b"\x00\xFF")),
            user_properties: users(),
            subscription_identifiers: SubscriptionIds::from_ids([1, 128, 16_384, VARINT_MAX])
                .unwrap(),
            content_type: Some(s("application/json")),
            order: Default::default(),
        },
        payload: Bytes::from_static(b"{\"t\":21.5}"),
    }
}

fn full_ack(code: ReasonCode) -> Ack {
    Ack {
        packet_id: id(42),
        reason_code: code,
        properties: AckProperties {
            reason_string: Some(s("why")),
            user_properties: users(),
        },
    }
}

/// Named packets, each with the protocol level it is encoded for.
pub(crate) fn samples() -> Vec<(String, ProtocolVersion, Packet)> {
    let mut out = Vec::new();
    let mut add = |name: &str, version: ProtocolVersion, packet: Packet| {
        let level = if version == V5 { "v5" } else { "v311" };
        out.push((format!("{level}-{name}"), version, packet));
    };
    for v in [V311, V5] {
        add(
            "connect-min",
            v,
            Packet::Connect(Box::new(minimal_connect(v))),
        );
        add(
            "connect-full",
            v,
            Packet::Connect(Box::new(full_connect(v))),
        );
        let qos0 = Publish::new(topic("t"), Bytes::new());
        add("publish-qos0-empty", v, Packet::Publish(qos0));
        let mut qos1 = Publish::new(topic("$SYS/x"), Bytes::from(vec![0x5A; 200]));
        qos1.qos = QoS::AtLeastOnce;
        qos1.packet_id = Some(id(1));
        add("publish-qos1-200b", v, Packet::Publish(qos1));
        add("puback", v, Packet::PubAck(Ack::new(id(1))));
        add("pubrec", v, Packet::PubRec(Ack::new(id(2))));
        add("pubrel", v, Packet::PubRel(Ack::new(id(3))));
        add("pubcomp", v, Packet::PubComp(Ack::new(id(4))));
        let subscribe = Subscribe {
            packet_id: id(10),
            properties: SubscribeProperties::default(),
            subscriptions: subscriptions(v),
        };
        add("subscribe", v, Packet::Subscribe(subscribe));
        let suback = SubAck {
            packet_id: id(10),
            properties: AckProperties::default(),
            reason_codes: vec![
                ReasonCode::GRANTED_QOS_0,
                ReasonCode::GrantedQos1,
                ReasonCode::GrantedQos2,
                ReasonCode::UnspecifiedError,
            ],
        };
        add("suback", v, Packet::SubAck(suback));
        let unsubscribe = Unsubscribe {
            packet_id: id(11),
            properties: UnsubscribeProperties::default(),
            filters: FilterList::new(&[filter("a/+/c"), filter("#"), filter("$share/g/x")]),
        };
        add("unsubscribe", v, Packet::Unsubscribe(unsubscribe));
        let unsuback = UnsubAck {
            packet_id: id(11),
            properties: AckProperties::default(),
            reason_codes: if v == V5 {
                vec![ReasonCode::Success, ReasonCode::NoSubscriptionExisted]
            } else {
                Vec::new()
            },
        };
        add("unsuback", v, Packet::UnsubAck(unsuback));
        add("pingreq", v, Packet::PingReq);
        add("pingresp", v, Packet::PingResp);
        add("disconnect", v, Packet::Disconnect(Disconnect::default()));
    }
    for (code, name) in [(0, "accepted"), (1, "bad-level"), (5, "not-authorized")] {
        let connack = ConnAck {
            session_present: code == 0,
            reason_code: ReasonCode::from_v3_connack(code).unwrap(),
            properties: ConnAckProperties::default(),
        };
        add(
            &format!("connack-{name}"),
            V311,
            Packet::ConnAck(Box::new(connack)),
        );
    }
    add(
        "connack-full",
        V5,
        Packet::ConnAck(Box::new(full_connack())),
    );
    let refused = ConnAck {
        session_present: false,
        reason_code: ReasonCode::Banned,
        properties: ConnAckProperties::default(),
    };
    add("connack-banned", V5, Packet::ConnAck(Box::new(refused)));
    add("publish-full", V5, Packet::Publish(full_publish()));
    let mut aliased = Publish::new(TopicName::empty(), Bytes::from_static(b"x"));
    aliased.properties.topic_alias = Some(1);
    add("publish-alias-only", V5, Packet::Publish(aliased));
    let code = ReasonCode::NoMatchingSubscribers;
    add("puback-full", V5, Packet::PubAck(full_ack(code)));
    add("pubrec-full", V5, Packet::PubRec(full_ack(code)));
    let code = ReasonCode::PacketIdentifierNotFound;
    add("pubrel-full", V5, Packet::PubRel(full_ack(code)));
    add("pubcomp-full", V5, Packet::PubComp(full_ack(code)));
    let subscribe = Subscribe {
        packet_id: id(12),
        properties: SubscribeProperties {
            subscription_identifier: Some(VARINT_MAX),
            user_properties: users(),
        },
        subscriptions: subscriptions(V5),
    };
    add("subscribe-full", V5, Packet::Subscribe(subscribe));
    let suback = SubAck {
        packet_id: id(12),
        properties: AckProperties {
            reason_string: Some(s("partial")),
            user_properties: users(),
        },
        reason_codes: vec![ReasonCode::GrantedQos1, ReasonCode::QuotaExceeded],
    };
    add("suback-full", V5, Packet::SubAck(suback));
    let unsubscribe = Unsubscribe {
        packet_id: id(13),
        properties: UnsubscribeProperties {
            user_properties: users(),
        },
        filters: FilterList::new(&[filter("+")]),
    };
    add("unsubscribe-full", V5, Packet::Unsubscribe(unsubscribe));
    let unsuback = UnsubAck {
        packet_id: id(13),
        properties: AckProperties {
            reason_string: Some(s("gone")),
            user_properties: users(),
        },
        reason_codes: vec![ReasonCode::TopicFilterInvalid],
    };
    add("unsuback-full", V5, Packet::UnsubAck(unsuback));
    let disconnect = Disconnect {
        reason_code: ReasonCode::ServerMoved,
        properties: DisconnectProperties {
            session_expiry_interval: Some(10),
            reason_string: Some(s("moving")),
            server_reference: Some(s("elsewhere:1883")),
            user_properties: users(),
        },
    };
    add("disconnect-full", V5, Packet::Disconnect(disconnect));
    add("auth-min", V5, Packet::Auth(Auth::default()));
    let auth = Auth {
        reason_code: ReasonCode::ContinueAuthentication,
        properties: AuthProperties {
            authentication_method: Some(s("SCRAM-SHA-1")),
            authentication_data: Some(Bytes::from_static(b"client-final")),
            reason_string: Some(s("step 2")),
            user_properties: users(),
        },
    };
    add("auth-full", V5, Packet::Auth(auth));
    out
}
