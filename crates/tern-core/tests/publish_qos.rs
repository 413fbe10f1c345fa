//! QoS 0, 1 and 2 flows in both directions prove acknowledgements, packet identifiers,
//! exactly-once delivery, the Receive Maximum window, ordering, and re-delivery on resumption.

mod support;

use tern_codec::{Packet, PayloadFormat, ReasonCode, UserProperties};

use support::*;

/// Connects a publisher and a subscriber to `t` with `qos`.
fn pair(
    tb: &mut TestBroker,
    version: tern_codec::ProtocolVersion,
    qos: tern_codec::QoS,
    sub: Opts,
) -> (TestClient, TestClient) {
    let publisher = tb.connect("pub", version, Opts::new());
    let subscriber = tb.connect("sub", version, sub);
    tb.subscribe(&subscriber, "t", qos);
    (publisher, subscriber)
}

/// MQTT-4.3.1-1 (both versions): QoS 0 is forwarded with QoS 0, DUP 0 and no packet identifier,
/// and the publisher gets no answer.
#[test]
fn qos0_is_forwarded_without_acknowledgement() {
    for version in VERSIONS {
        let mut tb = TestBroker::new();
        let (publisher, subscriber) = pair(&mut tb, version, Q2, Opts::new());
        tb.send(&publisher, publish("t", "zero", Q0, 0));
        tb.expect_silent(&publisher);
        assert_eq!(tb.recv(&subscriber), [publish("t", "zero", Q0, 0)]);
    }
}

/// MQTT-4.3.2-1..-4 (5.0), 3.1.1 MQTT-4.3.2-1/-2: the publisher gets PUBACK with its packet
/// identifier; the subscriber gets QoS 1, DUP 0 with a server-assigned identifier that is held
/// until its PUBACK.
#[test]
fn qos1_flow() {
    for version in VERSIONS {
        let mut tb = TestBroker::new();
        let (publisher, subscriber) = pair(&mut tb, version, Q1, Opts::new());
        tb.send(&publisher, publish("t", "one", Q1, 300));
        assert_eq!(tb.recv(&publisher), [puback(300)]);
        assert_eq!(tb.recv(&subscriber), [publish("t", "one", Q1, 1)]);
        tb.send(&subscriber, puback(1));
        tb.expect_silent(&subscriber);
        tb.expect_silent(&publisher);
        // The next message gets an identifier too (any unused one).
        tb.send(&publisher, publish("t", "two", Q1, 300));
        assert_eq!(tb.recv(&publisher), [puback(300)]);
        let packets = tb.recv(&subscriber);
        assert_eq!(packets, [publish("t", "two", Q1, packet_id(&packets[0]))]);
        assert_ne!(packet_id(&packets[0]), 0);
    }
}

/// 5.0 3.4.2.1: PUBACK 0x10 (No matching subscribers) when nobody subscribes; 3.1.1 has no
/// reason codes and gets a plain PUBACK.
#[test]
fn qos1_without_subscribers() {
    let mut tb = TestBroker::new();
    let v5 = tb.connect("p5", V5, Opts::new());
    tb.send(&v5, publish("nobody", "x", Q1, 1));
    assert_eq!(
        tb.recv(&v5),
        [Packet::PubAck(ack(1, ReasonCode::NoMatchingSubscribers))]
    );
    let v3 = tb.connect("p3", V311, Opts::new());
    tb.send(&v3, publish("nobody", "x", Q1, 1));
    assert_eq!(encode(&tb.recv(&v3)[0], V311), [0x40, 0x02, 0x00, 0x01]);
}

/// 5.0 3.5.2.1: a PUBREC is Success, in its two-byte form, whether or not anyone subscribes
/// (0x10 is allowed, not required, and would cost the publisher two more bytes). Mosquitto's
/// 03-publish-qos2, 02-subpub-qos2-1322 and 03-publish-c2b-qos2-len expect exactly these bytes.
#[test]
fn qos2_pubrec_is_short_without_subscribers() {
    for version in VERSIONS {
        let mut tb = TestBroker::new();
        let client = tb.connect("p", version, Opts::new());
        tb.send(&client, publish("nobody", "x", Q2, 312));
        let packets = tb.recv(&client);
        assert_eq!(packets.len(), 1, "{packets:?}");
        assert_eq!(encode(&packets[0], version), [0x50, 0x02, 0x01, 0x38]);
    }
}

/// The PUBREC for a QoS 2 PUBLISH goes out before the copy delivered back to the publisher's own
/// subscription, as the publisher's answer comes first on its connection (Mosquitto's
/// 02-subpub-qos2 reads the PUBREC before anything else).
#[test]
fn qos2_pubrec_precedes_delivery_on_the_same_connection() {
    for version in VERSIONS {
        let mut tb = TestBroker::new();
        let client = tb.connect("c", version, Opts::new());
        tb.subscribe(&client, "t", Q2);
        tb.send(&client, publish("t", "self", Q2, 301));
        assert_eq!(
            tb.recv(&client),
            [pubrec(301), publish("t", "self", Q2, 1)],
            "{version:?}"
        );
    }
}

/// MQTT-4.3.3-8, MQTT-4.3.3-10, MQTT-4.3.3-11 (5.0); 3.1.1 MQTT-4.3.3-2: inbound QoS 2 is
/// answered with PUBREC; the same identifier resent before PUBREL (DUP 1) is acknowledged again
/// but delivered only once; PUBREL gets PUBCOMP.
#[test]
fn inbound_qos2_duplicate_is_delivered_once() {
    for version in VERSIONS {
        let mut tb = TestBroker::new();
        let (publisher, subscriber) = pair(&mut tb, version, Q0, Opts::new());
        tb.send(&publisher, publish("t", "once", Q2, 9));
        assert_eq!(tb.recv(&publisher), [pubrec(9)]);
        // Every copy before the PUBREL, however many, gets its PUBREC (MQTT-4.3.3-10; Mosquitto's
        // 03-publish-qos2-dup expects the connection closed at the third).
        for _ in 0..2 {
            tb.send(
                &publisher,
                publish_with("t", "once", Q2, 9, |p| p.dup = true),
            );
            assert_eq!(tb.recv(&publisher), [pubrec(9)]);
        }
        tb.send(&publisher, pubrel(9));
        assert_eq!(tb.recv(&publisher), [pubcomp(9)]);
        assert_eq!(
            tb.recv(&subscriber),
            [publish("t", "once", Q0, 0)],
            "{version:?}"
        );

        // MQTT-4.3.3-12: after PUBCOMP the identifier starts a new message.
        tb.send(&publisher, publish("t", "again", Q2, 9));
        assert_eq!(tb.recv(&publisher), [pubrec(9)]);
        assert_eq!(tb.recv(&subscriber), [publish("t", "again", Q0, 0)]);
        assert_eq!(tb.stats().publish_received, 4);
    }
}

/// MQTT-4.3.3-11: a PUBREL for an identifier the server no longer holds (resent after a
/// reconnection because its PUBCOMP was lost, MQTT-4.4.0-1) gets a plain PUBCOMP: the identifier
/// is released, which is what Success says (3.7.2.1), in two bytes where 0x92 would take three
/// (Mosquitto's 03-publish-c2b-disconnect-qos2 expects this form).
#[test]
fn pubrel_for_unknown_identifier() {
    for version in VERSIONS {
        let mut tb = TestBroker::new();
        let client = tb.connect("c", version, Opts::new());
        tb.send(&client, pubrel(44));
        let packets = tb.recv(&client);
        assert_eq!(packets, [pubcomp(44)]);
        assert_eq!(encode(&packets[0], version), [0x70, 0x02, 0x00, 0x2C]);
    }
}

/// MQTT-4.3.3-1..-5 (5.0), 3.1.1 MQTT-4.3.3-1: outbound QoS 2 goes PUBLISH, PUBREC, PUBREL,
/// PUBCOMP with one identifier; a repeated PUBREC is answered with PUBREL again.
#[test]
fn outbound_qos2_flow() {
    for version in VERSIONS {
        let mut tb = TestBroker::new();
        let (publisher, subscriber) = pair(&mut tb, version, Q2, Opts::new());
        tb.send(&publisher, publish("t", "two", Q2, 5));
        assert_eq!(tb.recv(&publisher), [pubrec(5)]);
        assert_eq!(tb.recv(&subscriber), [publish("t", "two", Q2, 1)]);
        tb.send(&subscriber, pubrec(1));
        assert_eq!(tb.recv(&subscriber), [pubrel(1)]);
        tb.send(&subscriber, pubrec(1));
        assert_eq!(tb.recv(&subscriber), [pubrel(1)]);
        tb.send(&subscriber, pubcomp(1));
        tb.expect_silent(&subscriber);
        tb.send(&publisher, publish("t", "next", Q2, 6));
        tb.recv(&publisher);
        let packets = tb.recv(&subscriber);
        assert_eq!(packets, [publish("t", "next", Q2, packet_id(&packets[0]))]);
    }
}

/// MQTT-4.3.3-4 and MQTT-4.4.0-2: PUBREC with a reason code of 0x80 or more ends the exchange:
/// no PUBREL, no retransmission, and the window slot is free.
#[test]
fn outbound_qos2_refused_by_client() {
    let mut tb = TestBroker::new();
    let (publisher, subscriber) = pair(&mut tb, V5, Q2, Opts::new().receive_maximum(1));
    tb.send_all(
        &publisher,
        [publish("t", "a", Q2, 1), publish("t", "b", Q2, 2)],
    );
    assert_eq!(tb.recv(&subscriber), [publish("t", "a", Q2, 1)]);
    tb.send(
        &subscriber,
        Packet::PubRec(ack(1, ReasonCode::UnspecifiedError)),
    );
    let packets = tb.recv(&subscriber);
    assert_eq!(packets, [publish("t", "b", Q2, packet_id(&packets[0]))]);
    tb.send(
        &subscriber,
        Packet::PubRec(ack(packet_id(&packets[0]), ReasonCode::UnspecifiedError)),
    );
    tb.expect_silent(&subscriber);
}

/// 5.0 3.6.2.1: PUBREC for an identifier not in flight is answered with PUBREL 0x92.
#[test]
fn pubrec_for_unknown_identifier() {
    let mut tb = TestBroker::new();
    let client = tb.connect("c", V5, Opts::new());
    tb.send(&client, pubrec(12));
    assert_eq!(
        tb.recv(&client),
        [Packet::PubRel(ack(
            12,
            ReasonCode::PacketIdentifierNotFound
        ))]
    );
}

/// MQTT-2.2.1-4: concurrent outbound messages get distinct, unused, non-zero identifiers.
#[test]
fn outbound_packet_identifiers_are_unused() {
    let mut tb = TestBroker::new();
    let (publisher, subscriber) = pair(&mut tb, V5, Q2, Opts::new());
    tb.send_all(
        &publisher,
        [
            publish("t", "a", Q1, 1),
            publish("t", "b", Q2, 2),
            publish("t", "c", Q1, 3),
        ],
    );
    let ids: Vec<u16> = publishes(&tb.recv(&subscriber))
        .iter()
        .map(|p| p.packet_id.expect("QoS > 0").get())
        .collect();
    assert_eq!(ids, [1, 2, 3]);
    tb.send(&subscriber, puback(1));
    tb.send(&publisher, publish("t", "d", Q1, 4));
    tb.recv(&publisher);
    // 1 is free again; 2 and 3 are still held.
    let ids: Vec<u16> = publishes(&tb.recv(&subscriber))
        .iter()
        .map(|p| p.packet_id.expect("QoS > 0").get())
        .collect();
    assert_eq!(ids.len(), 1);
    assert!(ids[0] != 2 && ids[0] != 3);
}

/// MQTT-3.3.4-9, MQTT-4.9.0-2 and MQTT-3.3.4-10: no more than the client's Receive Maximum QoS
/// 1/2 publishes are unacknowledged; the next one goes when one is acknowledged (QoS 2 only at
/// PUBCOMP); other packets are not held back.
#[test]
fn outbound_window_honours_receive_maximum() {
    {
        let mut tb = TestBroker::new();
        let (publisher, subscriber) = pair(&mut tb, V5, Q2, Opts::new().receive_maximum(2));
        for n in 1..=5u16 {
            let qos = if n % 2 == 0 { Q2 } else { Q1 };
            tb.send(&publisher, publish("t", &format!("m{n}"), qos, n));
        }
        assert_eq!(payloads(&tb.recv(&subscriber)), ["m1", "m2"]);
        tb.send(&subscriber, Packet::PingReq);
        tb.send(&publisher, publish("t", "q0", Q0, 0));
        assert_eq!(
            tb.recv(&subscriber),
            [Packet::PingResp, publish("t", "q0", Q0, 0)]
        );

        tb.send(&subscriber, puback(1));
        let m3 = tb.recv(&subscriber);
        assert_eq!(m3, [publish("t", "m3", Q1, packet_id(&m3[0]))]);
        tb.send(&subscriber, pubrec(2));
        assert_eq!(
            tb.recv(&subscriber),
            [pubrel(2)],
            "PUBREC does not free the slot"
        );
        tb.send(&subscriber, pubcomp(2));
        let m4 = tb.recv(&subscriber);
        assert_eq!(m4, [publish("t", "m4", Q2, packet_id(&m4[0]))]);
        assert_ne!(
            packet_id(&m4[0]),
            packet_id(&m3[0]),
            "identifiers in flight are distinct"
        );
        tb.send(&subscriber, puback(packet_id(&m3[0])));
        let m5 = tb.recv(&subscriber);
        assert_eq!(m5, [publish("t", "m5", Q1, packet_id(&m5[0]))]);
    }
}

/// MQTT-4.6.0-5/-6 (5.0), 3.1.1 MQTT-4.6.0-6: messages of one topic and QoS reach a subscriber
/// in the order they were published, through a window of one.
#[test]
fn messages_keep_their_order() {
    for version in VERSIONS {
        let mut tb = TestBroker::new();
        let (publisher, subscriber) = pair(&mut tb, version, Q1, Opts::new().receive_maximum(1));
        for n in 1..=20u16 {
            tb.send(&publisher, publish("t", &format!("{n}"), Q1, n));
        }
        let mut seen = Vec::new();
        loop {
            let packets = tb.recv(&subscriber);
            if packets.is_empty() {
                break;
            }
            seen.extend(payloads(&packets));
            for packet in &packets {
                tb.send(&subscriber, puback(packet_id(packet)));
            }
        }
        let expected: Vec<String> = (1..=20).map(|n| n.to_string()).collect();
        assert_eq!(seen, expected, "{version:?}");
    }
}

/// MQTT-4.4.0-1, MQTT-3.3.1-1 (both versions): on resumption the server resends unacknowledged
/// PUBLISH packets with DUP 1 and their original identifiers, and PUBREL for those already
/// PUBRECed, in their original order, before anything new.
#[test]
fn resumption_resends_in_original_order() {
    for version in VERSIONS {
        // A window of three, in 3.1.1 too.
        let mut tb = TestBroker::with_limits(tern_core::Limits {
            inflight_count_max: 3,
            ..Default::default()
        });
        let persistent = Opts::new().resume().expiry(600);
        let (publisher, subscriber) = pair(&mut tb, version, Q2, persistent.clone());
        tb.send_all(
            &publisher,
            [
                publish("t", "a", Q1, 1),
                publish("t", "b", Q2, 2),
                publish("t", "c", Q2, 3),
            ],
        );
        tb.send(&publisher, publish("t", "d", Q1, 4));
        assert_eq!(payloads(&tb.recv(&subscriber)), ["a", "b", "c"]);
        tb.send(&subscriber, pubrec(2));
        assert_eq!(tb.recv(&subscriber), [pubrel(2)]);
        tb.lose(&subscriber);

        let subscriber = tb.connect("sub", version, persistent);
        assert!(subscriber.connack.session_present);
        let packets = tb.recv(&subscriber);
        // PUBREL holds no send quota on the new connection (MQTT-4.9.0-1), so the queued
        // message follows at once, after the resent ones, with an unused identifier.
        let d = packet_id(&packets[3]);
        let expected = [
            publish_with("t", "a", Q1, 1, |p| p.dup = true),
            pubrel(2),
            publish_with("t", "c", Q2, 3, |p| p.dup = true),
            publish("t", "d", Q1, d),
        ];
        assert_eq!(packets, expected, "{version:?}");
        assert!(![1, 2, 3].contains(&d));
        tb.send_all(&subscriber, [puback(1), pubcomp(2), pubrec(3), puback(d)]);
        assert_eq!(tb.recv(&subscriber), [pubrel(3)]);
    }
}

/// MQTT-4.3.3-6: once PUBREL is sent the PUBLISH is never resent, even across a reconnect; the
/// message reaches the client exactly once.
#[test]
fn outbound_exactly_once_across_reconnect() {
    let mut tb = TestBroker::new();
    let persistent = Opts::new().resume().expiry(600);
    let (publisher, subscriber) = pair(&mut tb, V5, Q2, persistent.clone());
    tb.send(&publisher, publish("t", "x", Q2, 1));
    assert_eq!(tb.recv(&subscriber), [publish("t", "x", Q2, 1)]);
    tb.send(&subscriber, pubrec(1));
    assert_eq!(tb.recv(&subscriber), [pubrel(1)]);
    tb.lose(&subscriber);
    let subscriber = tb.connect("sub", V5, persistent.clone());
    assert_eq!(tb.recv(&subscriber), [pubrel(1)]);
    tb.send(&subscriber, pubcomp(1));
    tb.lose(&subscriber);
    let subscriber = tb.connect("sub", V5, persistent);
    tb.expect_silent(&subscriber);
}

/// MQTT-4.3.3-10 and MQTT-4.4.0-1 (both versions): a publisher that loses its connection after
/// PUBREC and resends the PUBLISH with DUP 1 on a resumed session gets PUBREC again, no
/// duplicate is delivered, and PUBREL completes with PUBCOMP.
#[test]
fn inbound_exactly_once_across_reconnect() {
    for version in VERSIONS {
        let mut tb = TestBroker::new();
        let persistent = Opts::new().resume().expiry(600);
        let publisher = tb.connect("pub", version, persistent.clone());
        let subscriber = tb.connect("sub", version, Opts::new());
        tb.subscribe(&subscriber, "t", Q2);
        tb.send(&publisher, publish("t", "x", Q2, 77));
        assert_eq!(tb.recv(&publisher), [pubrec(77)]);
        tb.lose(&publisher);

        let publisher = tb.connect("pub", version, persistent);
        assert!(publisher.connack.session_present);
        tb.send(&publisher, publish_with("t", "x", Q2, 77, |p| p.dup = true));
        assert_eq!(tb.recv(&publisher), [pubrec(77)]);
        tb.send(&publisher, pubrel(77));
        assert_eq!(tb.recv(&publisher), [pubcomp(77)]);
        assert_eq!(
            tb.recv(&subscriber),
            [publish("t", "x", Q2, 1)],
            "{version:?}: exactly one copy"
        );
    }
}

/// MQTT-3.3.1-3 (both versions): the DUP flag of an incoming PUBLISH is not propagated.
#[test]
fn incoming_dup_is_not_forwarded() {
    for version in VERSIONS {
        let mut tb = TestBroker::new();
        let (publisher, subscriber) = pair(&mut tb, version, Q1, Opts::new());
        tb.send(&publisher, publish_with("t", "x", Q1, 3, |p| p.dup = true));
        assert_eq!(tb.recv(&subscriber), [publish("t", "x", Q1, 1)]);
    }
}

/// MQTT-3.8.4-8 (5.0), 3.1.1 MQTT-3.8.4-6: a message is delivered with the lower of its QoS and
/// the granted QoS.
#[test]
fn delivery_qos_is_the_minimum_of_published_and_granted() {
    for version in VERSIONS {
        for (granted_qos, published, delivered) in
            [(Q0, Q2, Q0), (Q1, Q2, Q1), (Q2, Q1, Q1), (Q2, Q0, Q0)]
        {
            let mut tb = TestBroker::new();
            let (publisher, subscriber) = pair(&mut tb, version, granted_qos, Opts::new());
            let id = if published == Q0 { 0 } else { 8 };
            tb.send(&publisher, publish("t", "x", published, id));
            let delivered_id = if delivered == Q0 { 0 } else { 1 };
            assert_eq!(
                tb.recv(&subscriber),
                [publish("t", "x", delivered, delivered_id)]
            );
        }
    }
}

/// MQTT-3.3.2-4, MQTT-3.3.2-15..-20: Payload Format Indicator, Response Topic, Correlation
/// Data, Content Type and User Properties (in order) are forwarded unaltered.
#[test]
fn publish_properties_are_forwarded_unaltered() {
    let mut tb = TestBroker::new();
    let (publisher, subscriber) = pair(&mut tb, V5, Q1, Opts::new());
    let (k1, v1, k2, v2) = (mstr("b"), mstr("1"), mstr("a"), mstr("2"));
    let user_properties = UserProperties::from_pairs([(&k1, &v1), (&k2, &v2), (&k1, &v2)]);
    let with_properties = |p: &mut tern_codec::Publish| {
        p.properties.payload_format_indicator = Some(PayloadFormat::Utf8);
        p.properties.response_topic = Some(topic("reply/here"));
        p.properties.correlation_data = Some(bytes::Bytes::from_static(b"\x00\x01"));
        p.properties.content_type = Some(mstr("text/plain"));
        p.properties.user_properties = user_properties.clone();
    };
    tb.send(&publisher, publish_with("t", "x", Q1, 1, with_properties));
    assert_eq!(
        tb.recv(&subscriber),
        [publish_with("t", "x", Q1, 1, with_properties)]
    );
}

/// The publisher's acknowledgement does not wait for subscribers: PUBACK comes at once even when
/// the subscriber's window is full (MQTT-4.5.0-1: the message is in its session state).
#[test]
fn puback_does_not_wait_for_subscribers() {
    let mut tb = TestBroker::new();
    let (publisher, subscriber) = pair(&mut tb, V5, Q1, Opts::new().receive_maximum(1));
    tb.send_all(
        &publisher,
        [publish("t", "a", Q1, 1), publish("t", "b", Q1, 2)],
    );
    assert_eq!(tb.recv(&publisher), [puback(1), puback(2)]);
    assert_eq!(payloads(&tb.recv(&subscriber)), ["a"]);
}

/// MQTT-4.9.0-1/-2 and MQTT-3.3.4-9: the send quota belongs to the connection, so a client that
/// resumes with a smaller Receive Maximum gets no more unacknowledged PUBLISH packets than that,
/// resent ones included (MQTT-4.4.0-1: original identifiers, DUP 1); the rest follow as it
/// acknowledges. PUBREL is not limited (MQTT-3.3.4-10).
#[test]
fn resumption_honours_the_new_receive_maximum() {
    let mut tb = TestBroker::new();
    let (publisher, subscriber) = pair(
        &mut tb,
        V5,
        Q2,
        Opts::new().resume().expiry(600).receive_maximum(4),
    );
    tb.send_all(
        &publisher,
        [
            publish("t", "a", Q2, 1),
            publish("t", "b", Q1, 2),
            publish("t", "c", Q1, 3),
            publish("t", "d", Q1, 4),
        ],
    );
    tb.send(&publisher, publish("t", "e", Q1, 5));
    assert_eq!(payloads(&tb.recv(&subscriber)), ["a", "b", "c", "d"]);
    tb.send(&subscriber, pubrec(1));
    assert_eq!(tb.recv(&subscriber), [pubrel(1)]);
    tb.lose(&subscriber);

    let subscriber = tb.connect(
        "sub",
        V5,
        Opts::new().resume().expiry(600).receive_maximum(1),
    );
    let dup = |topic_payload: &str, id| publish_with("t", topic_payload, Q1, id, |p| p.dup = true);
    assert_eq!(tb.recv(&subscriber), [pubrel(1), dup("b", 2)]);
    tb.send(&subscriber, puback(2));
    assert_eq!(tb.recv(&subscriber), [dup("c", 3)]);
    tb.send(&subscriber, pubcomp(1));
    tb.expect_silent(&subscriber);
    tb.send(&subscriber, puback(3));
    assert_eq!(tb.recv(&subscriber), [dup("d", 4)]);
    tb.send(&subscriber, puback(4));
    let packets = tb.recv(&subscriber);
    assert_eq!(packets, [publish("t", "e", Q1, packet_id(&packets[0]))]);
}

/// Acknowledgements for nothing in flight (PUBACK, PUBCOMP, and a PUBACK for a QoS 2 message)
/// change nothing and are not errors.
#[test]
fn stray_acknowledgements_are_ignored() {
    let mut tb = TestBroker::new();
    let (publisher, subscriber) = pair(&mut tb, V5, Q2, Opts::new().receive_maximum(1));
    tb.send_all(&subscriber, [puback(9), pubcomp(9)]);
    tb.send_all(
        &publisher,
        [publish("t", "a", Q2, 1), publish("t", "b", Q2, 2)],
    );
    assert_eq!(payloads(&tb.recv(&subscriber)), ["a"]);
    tb.send_all(&subscriber, [puback(1), pubcomp(1)]);
    tb.expect_silent(&subscriber);
    tb.send(&subscriber, pubrec(1));
    assert_eq!(tb.recv(&subscriber), [pubrel(1)]);
    tb.send(&subscriber, pubcomp(1));
    assert_eq!(payloads(&tb.recv(&subscriber)), ["b"]);
    assert_eq!(tb.stats().protocol_errors, 0);
}
