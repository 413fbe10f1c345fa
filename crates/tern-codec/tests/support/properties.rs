//! Strategies for MQTT 5 property blocks: every property of each block, with valid values
//! (non-zero where the spec forbids 0, Maximum QoS 0 or 1, authentication data only with a
//! method in CONNECT), several user properties and several subscription identifiers.

use proptest::collection::vec;
use proptest::option::of;
use proptest::prelude::*;
use proptest::sample::select;
use tern_codec::{
    AckProperties, ConnAckProperties, ConnectProperties, MqttString, PayloadFormat,
    PublishProperties, QoS, SubscriptionIds, UserProperties, WillProperties, VARINT_MAX,
};

use super::{binary, mqtt_string, short_string, topic_name};

pub(crate) fn user_properties() -> impl Strategy<Value = UserProperties> {
    prop_oneof![
        2 => Just(Vec::new()),
        3 => vec((short_string(), short_string()), 1..5),
        // The same key twice is allowed and kept in order.
        1 => short_string().prop_map(|k| vec![(k.clone(), MqttString::new("1").unwrap()), (k, MqttString::new("2").unwrap())]),
    ]
    .prop_map(|pairs| UserProperties::from_pairs(pairs.iter().map(|(k, v)| (k, v))))
}

pub(crate) fn subscription_id() -> impl Strategy<Value = u32> {
    prop_oneof![
        3 => 1..=VARINT_MAX,
        1 => select(vec![1, 127, 128, 16_383, 16_384, 2_097_151, 2_097_152, VARINT_MAX]),
    ]
}

pub(crate) fn subscription_ids() -> impl Strategy<Value = SubscriptionIds> {
    vec(subscription_id(), 0..5).prop_map(|ids| SubscriptionIds::from_ids(ids).unwrap())
}

pub(crate) fn nonzero_u16() -> impl Strategy<Value = u16> {
    prop_oneof![Just(1), Just(u16::MAX), 1..=u16::MAX]
}

fn nonzero_u32() -> impl Strategy<Value = u32> {
    prop_oneof![Just(1), Just(u32::MAX), 1..=u32::MAX]
}

fn payload_format() -> impl Strategy<Value = PayloadFormat> {
    prop_oneof![Just(PayloadFormat::Unspecified), Just(PayloadFormat::Utf8)]
}

pub(crate) fn connect_properties() -> impl Strategy<Value = ConnectProperties> {
    (
        (of(any::<u32>()), of(nonzero_u16()), of(nonzero_u32())),
        (of(any::<u16>()), of(any::<bool>()), of(any::<bool>())),
        (of(short_string()), of(binary()), user_properties()),
    )
        .prop_map(|((sei, rm, mps), (tam, rri, rpi), (method, data, users))| {
            ConnectProperties {
                session_expiry_interval: sei,
                receive_maximum: rm,
                maximum_packet_size: mps,
                topic_alias_maximum: tam,
                request_response_information: rri,
                request_problem_information: rpi,
                // Authentication data without a method is a protocol error.
                authentication_data: data.filter(|_| method.is_some()),
                authentication_method: method,
                user_properties: users,
            }
        })
}

pub(crate) fn will_properties() -> impl Strategy<Value = WillProperties> {
    (
        (of(any::<u32>()), of(payload_format()), of(any::<u32>())),
        (of(short_string()), of(topic_name()), of(binary())),
        user_properties(),
    )
        .prop_map(|((delay, pfi, mei), (ct, rt, cd), users)| WillProperties {
            will_delay_interval: delay,
            payload_format_indicator: pfi,
            message_expiry_interval: mei,
            content_type: ct,
            response_topic: rt,
            correlation_data: cd,
            user_properties: users,
            order: Default::default(),
        })
}

pub(crate) fn connack_properties() -> impl Strategy<Value = ConnAckProperties> {
    let max_qos = prop_oneof![Just(QoS::AtMostOnce), Just(QoS::AtLeastOnce)];
    (
        (
            of(any::<u32>()),
            of(nonzero_u16()),
            of(max_qos),
            of(any::<bool>()),
        ),
        (of(nonzero_u32()), of(short_string()), of(any::<u16>())),
        (of(short_string()), of(any::<bool>()), of(any::<bool>())),
        (of(any::<bool>()), of(any::<u16>()), of(short_string())),
        (of(short_string()), of(short_string()), of(binary())),
        user_properties(),
    )
        .prop_map(
            |(
                (sei, rm, mq, ra),
                (mps, aci, tam),
                (rs, wsa, sia),
                (ssa, ska, ri),
                (sr, am, ad),
                u,
            )| {
                ConnAckProperties {
                    session_expiry_interval: sei,
                    receive_maximum: rm,
                    maximum_qos: mq,
                    retain_available: ra,
                    maximum_packet_size: mps,
                    assigned_client_identifier: aci,
                    topic_alias_maximum: tam,
                    reason_string: rs,
                    wildcard_subscription_available: wsa,
                    subscription_identifiers_available: sia,
                    shared_subscription_available: ssa,
                    server_keep_alive: ska,
                    response_information: ri,
                    server_reference: sr,
                    authentication_method: am,
                    authentication_data: ad,
                    user_properties: u,
                }
            },
        )
}

pub(crate) fn ack_properties() -> impl Strategy<Value = AckProperties> {
    (of(mqtt_string()), user_properties()).prop_map(|(rs, u)| AckProperties {
        reason_string: rs,
        user_properties: u,
    })
}

pub(crate) fn publish_properties() -> impl Strategy<Value = PublishProperties> {
    (
        (of(payload_format()), of(any::<u32>()), of(nonzero_u16())),
        (of(topic_name()), of(binary()), of(short_string())),
        (user_properties(), subscription_ids()),
    )
        .prop_map(
            |((pfi, mei, ta), (rt, cd, ct), (u, ids))| PublishProperties {
                payload_format_indicator: pfi,
                message_expiry_interval: mei,
                topic_alias: ta,
                response_topic: rt,
                correlation_data: cd,
                user_properties: u,
                subscription_identifiers: ids,
                content_type: ct,
                order: Default::default(),
            },
        )
}
