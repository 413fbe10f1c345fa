//! Limits prove that full queues (with `overload = "drop"`) and outboxes drop the newest message
//! for that subscriber only, that the server's Receive Maximum, Maximum QoS, Retain Available and
//! size limits are enforced with the right reason codes, that the client's Maximum Packet Size is
//! honoured, and that the counters add up.

mod support;

use tern_codec::{DecodeError, Packet, PayloadFormat, ReasonCode};
use tern_core::{DropReason, Limits, Overload, Stats};

use support::*;

/// With `overload = "drop"`, a full session queue drops the newest message for that subscriber
/// only: others still get it, and the publisher still gets its PUBACK (the message was
/// accepted, MQTT-4.5.0-1). (Under the default backpressure the publisher is held instead:
/// flow_control.rs.)
#[test]
fn full_queue_drops_newest_for_that_subscriber_only() {
    let limits = Limits {
        queued_count_max: 2,
        inflight_count_max: 1,
        overload: Overload::Drop,
        ..Limits::default()
    };
    let mut tb = TestBroker::with_limits(limits);
    let slow = tb.connect("slow", V5, Opts::new());
    let fast = tb.connect("fast", V5, Opts::new());
    tb.subscribe(&slow, "t", Q1);
    tb.subscribe(&fast, "t", Q1);
    let publisher = tb.connect("p", V5, Opts::new());
    let mut fast_got = Vec::new();
    for n in 1..=5u16 {
        tb.send(&publisher, publish("t", &format!("m{n}"), Q1, n));
        assert_eq!(tb.recv(&publisher), [puback(n)]);
        let packets = tb.recv(&fast);
        fast_got.extend(payloads(&packets));
        tb.send(&fast, puback(packet_id(&packets[0])));
    }
    assert_eq!(fast_got, ["m1", "m2", "m3", "m4", "m5"]);
    assert_eq!(tb.stats().publish_dropped, 2);
    let dropped = vec![("slow".to_owned(), DropReason::QueueFull); 2];
    assert_eq!(drops(&tb.events()), dropped);

    let first = tb.recv(&slow);
    assert_eq!(payloads(&first), ["m1"]);
    let mut slow_got = Vec::new();
    let mut next = packet_id(&first[0]);
    loop {
        tb.send(&slow, puback(next));
        let packets = tb.recv(&slow);
        let Some(packet) = packets.first() else { break };
        slow_got.extend(payloads(&packets));
        next = packet_id(packet);
    }
    assert_eq!(slow_got, ["m2", "m3"]);
}

/// 3.1.1 MQTT-3.1.2-5 with a bounded queue: an offline session keeps the oldest messages up to
/// the count and byte limits; newer ones are dropped.
#[test]
fn offline_queue_keeps_the_oldest() {
    let limits = Limits {
        queued_count_max: 3,
        queued_bytes_max: 13,
        ..Limits::default()
    };
    let mut tb = TestBroker::with_limits(limits);
    let client = tb.connect("c", V311, Opts::new().resume());
    tb.subscribe(&client, "t", Q1);
    tb.disconnect(&client);
    let publisher = tb.connect("p", V311, Opts::new());
    // Each is charged its topic and payload: 5 + 5 bytes fit, 5 more would make 15 > 13, 3 more
    // make 13, then the count is full.
    for (n, payload) in ["aaaa", "bbbb", "cccc", "dd", "e"].iter().enumerate() {
        tb.send(&publisher, publish("t", payload, Q1, n as u16 + 1));
    }
    assert_eq!(tb.stats().publish_dropped, 2);
    let client = tb.connect("c", V311, Opts::new().resume());
    assert_eq!(payloads(&tb.recv(&client)), ["aaaa", "bbbb", "dd"]);
}

/// QoS 0 messages waiting to be written to a slow connection are capped; past the cap new ones
/// are dropped and counted, and delivery resumes once the connection has drained.
#[test]
fn qos0_outbox_cap() {
    let mut tb = TestBroker::with_limits(Limits {
        outbox_qos0_count_max: 2,
        ..Limits::default()
    });
    let subscriber = tb.connect("s", V311, Opts::new());
    tb.subscribe(&subscriber, "t", Q1);
    let publisher = tb.connect("p", V311, Opts::new());
    for n in 1..=3 {
        tb.send(&publisher, publish("t", &n.to_string(), Q0, 0));
    }
    tb.send(&publisher, publish("t", "q1", Q1, 1));
    assert_eq!(
        tb.recv(&subscriber),
        [
            publish("t", "1", Q0, 0),
            publish("t", "2", Q0, 0),
            publish("t", "q1", Q1, 1)
        ]
    );
    assert_eq!(
        drops(&tb.events()),
        [("s".to_owned(), DropReason::OutboxFull)]
    );
    tb.send(&publisher, publish("t", "4", Q0, 0));
    assert_eq!(tb.recv(&subscriber), [publish("t", "4", Q0, 0)]);
}

/// 3.3.4 (Receive Maximum): more unacknowledged QoS 2 publishes than the server's Receive
/// Maximum (announced in CONNACK) is answered with DISCONNECT 0x93. A resent identifier does not
/// count twice, and PUBREL frees a slot.
#[test]
fn client_exceeding_receive_maximum_is_disconnected() {
    let mut tb = TestBroker::with_limits(Limits {
        receive_maximum: 2,
        ..Limits::default()
    });
    let watcher = tb.connect("w", V5, Opts::new());
    tb.subscribe(&watcher, "t", Q0);
    let client = tb.connect("c", V5, Opts::new());
    assert_eq!(client.connack.properties.receive_maximum, Some(2));
    tb.send_all(
        &client,
        [
            publish("t", "1", Q2, 1),
            publish("t", "2", Q2, 2),
            publish_with("t", "2", Q2, 2, |p| p.dup = true),
        ],
    );
    assert_eq!(tb.recv(&client), [pubrec(1), pubrec(2), pubrec(2)]);
    tb.send(&client, pubrel(1));
    assert_eq!(tb.recv(&client), [pubcomp(1)]);
    tb.send_all(
        &client,
        [publish("t", "1", Q1, 1), publish("t", "3", Q2, 3)],
    );
    assert_eq!(tb.recv(&client), [puback(1), pubrec(3)]);
    tb.send(&client, publish("t", "4", Q2, 4));
    assert_eq!(
        tb.expect_closed(&client),
        [disconnect(ReasonCode::ReceiveMaximumExceeded)]
    );
    assert_eq!(
        payloads(&tb.recv(&watcher)),
        ["1", "2", "1", "3"],
        "delivered once each, \"4\" not at all"
    );
    assert_eq!(tb.stats().protocol_errors, 1);
}

/// MQTT-3.1.2-24 and MQTT-3.1.2-25: a message larger than the client's Maximum Packet Size is
/// not sent, is counted as dropped, and is treated as delivered (later messages flow; its
/// packet identifier is not held).
#[test]
fn oversize_for_the_client_is_dropped_and_counted() {
    let mut tb = TestBroker::new();
    let subscriber = tb.connect("s", V5, Opts::new().max_packet_size(32).receive_maximum(1));
    tb.subscribe(&subscriber, "t", Q1);
    let publisher = tb.connect("p", V5, Opts::new());
    let big = "x".repeat(40);
    tb.send_all(
        &publisher,
        [publish("t", "small", Q0, 0), publish("t", &big, Q0, 0)],
    );
    tb.send_all(
        &publisher,
        [publish("t", &big, Q1, 1), publish("t", "fits", Q1, 2)],
    );
    assert_eq!(tb.recv(&publisher), [puback(1), puback(2)]);
    let packets = tb.recv(&subscriber);
    assert_eq!(
        packets,
        [
            publish("t", "small", Q0, 0),
            publish("t", "fits", Q1, packet_id(&packets[1]))
        ]
    );
    assert_eq!(tb.stats().publish_dropped, 2);
    let dropped = vec![("s".to_owned(), DropReason::TooLargeForClient); 2];
    assert_eq!(drops(&tb.events()), dropped);
}

/// MQTT-3.1.2-24/25 at the boundary, QoS 1 and 2 (Mosquitto's
/// 12-prop-maximum-packet-size-publish-qos1/-qos2): Maximum Packet Size counts the whole packet,
/// fixed header included, so a PUBLISH of exactly the maximum is sent and one a byte longer is
/// not; a dropped one counts as sent and holds no place in the client's Receive Maximum, so the
/// next that fits still arrives.
#[test]
fn oversize_qos1_and_qos2_at_the_boundary_do_not_block_the_next() {
    let topic = "12/max/publish/qos2/test/topic";
    for qos in [Q1, Q2] {
        let mut tb = TestBroker::new();
        let subscriber = tb.connect("s", V5, Opts::new().max_packet_size(40).receive_maximum(1));
        tb.subscribe(&subscriber, topic, qos);
        let publisher = tb.connect("p", V5, Opts::new());
        // 2 + 2 + 30 + 2 + 1 + payload: 41 bytes, 41 bytes (a property), then 40 bytes.
        let oversize = [
            publish(topic, "1234", qos, 1),
            publish_with(topic, "56", qos, 2, |p| {
                p.properties.payload_format_indicator = Some(PayloadFormat::Utf8)
            }),
        ];
        for packet in oversize {
            tb.send(&publisher, packet);
            tb.expect_silent(&subscriber);
        }
        tb.send(&publisher, publish(topic, "789", qos, 3));
        let packets = tb.recv(&subscriber);
        assert_eq!(
            packets,
            [publish(topic, "789", qos, packet_id(&packets[0]))]
        );
        assert_eq!(tb.stats().publish_dropped, 2, "{qos:?}");
    }
}

/// 3.3.1.2: a PUBLISH above the Maximum QoS the server announced is answered with DISCONNECT
/// 0x9B; 3.3.1.3: RETAIN when Retain Available is 0, with 0x9A. 3.1.1 clients are just closed.
#[test]
fn publish_beyond_server_capabilities_is_refused() {
    let limits = Limits {
        qos_max: Q1,
        retain_available: false,
        ..Limits::default()
    };
    let cases = [
        (publish("t", "x", Q2, 1), ReasonCode::QosNotSupported),
        (retained("t", "x", Q0, 0), ReasonCode::RetainNotSupported),
    ];
    for (packet, code) in cases {
        for version in VERSIONS {
            let mut tb = TestBroker::with_limits(limits.clone());
            let watcher = tb.connect("w", V5, Opts::new());
            tb.subscribe(&watcher, "t", Q1);
            let client = tb.connect("c", version, Opts::new());
            tb.send(&client, packet.clone());
            let expected = if version == V5 {
                vec![disconnect(code)]
            } else {
                vec![]
            };
            assert_eq!(tb.expect_closed(&client), expected);
            tb.expect_silent(&watcher);
            assert_eq!(tb.stats().retained, 0);
        }
    }
}

/// MQTT-3.9.3-2 / 3.1.1 MQTT-3.9.3-2: subscriptions past the per-session quota fail with 0x97
/// (0x80 in 3.1.1); filters past the length or depth limits fail with 0x8F; the others in the
/// same SUBSCRIBE are granted.
#[test]
fn subscription_limits_fail_single_filters() {
    let limits = Limits {
        subscriptions_per_session_max: 2,
        topic_length_max_bytes: 16,
        topic_levels_max: 3,
        ..Limits::default()
    };
    for version in VERSIONS {
        let mut tb = TestBroker::with_limits(limits.clone());
        let client = tb.connect("c", version, Opts::new());
        let long = "x".repeat(17);
        tb.send(
            &client,
            subscribe(
                1,
                &[
                    ("a", Q1),
                    (long.as_str(), Q0),
                    ("a/b/c/d", Q0),
                    ("b", Q2),
                    ("c", Q0),
                    ("a", Q0),
                ],
            ),
        );
        let quota = if version == V5 {
            ReasonCode::QuotaExceeded
        } else {
            ReasonCode::UnspecifiedError
        };
        let invalid = if version == V5 {
            ReasonCode::TopicFilterInvalid
        } else {
            ReasonCode::UnspecifiedError
        };
        let codes = [
            ReasonCode::GrantedQos1,
            invalid,
            invalid,
            ReasonCode::GrantedQos2,
            quota,
            ReasonCode::GRANTED_QOS_0,
        ];
        assert_eq!(
            tb.recv(&client),
            [suback(1, &codes)],
            "{version:?}: replacing an existing filter needs no quota"
        );
        assert_eq!(tb.stats().subscriptions, 2);
    }
}

/// A topic name past the length or depth limits is refused with DISCONNECT 0x90.
#[test]
fn topic_name_limits() {
    let limits = Limits {
        topic_length_max_bytes: 8,
        topic_levels_max: 2,
        ..Limits::default()
    };
    for name in ["123456789", "a/b/c"] {
        let mut tb = TestBroker::with_limits(limits.clone());
        let client = tb.connect("c", V5, Opts::new());
        tb.send(&client, publish(name, "x", Q0, 0));
        assert_eq!(
            tb.expect_closed(&client),
            [disconnect(ReasonCode::TopicNameInvalid)],
            "{name}"
        );
    }
}

/// The server's in-flight cap bounds the window even when the client's Receive Maximum is
/// larger (MQTT-3.3.4-9 only sets an upper bound).
#[test]
fn inflight_cap_bounds_the_window() {
    let mut tb = TestBroker::with_limits(Limits {
        inflight_count_max: 2,
        ..Limits::default()
    });
    let subscriber = tb.connect("s", V5, Opts::new().receive_maximum(100));
    tb.subscribe(&subscriber, "t", Q1);
    let publisher = tb.connect("p", V5, Opts::new());
    for n in 1..=4u16 {
        tb.send(&publisher, publish("t", &n.to_string(), Q1, n));
    }
    assert_eq!(payloads(&tb.recv(&subscriber)), ["1", "2"]);
}

/// By default a subscriber that states no Receive Maximum (any 3.1.1 client, and an MQTT 5 one
/// that leaves it out, which means 65,535) gets 8,192 QoS 1 messages before it acknowledges
/// one: a window deep enough to keep a fast subscriber busy across its round trips. The next
/// waits for an acknowledgement.
#[test]
fn default_window_for_a_subscriber_without_receive_maximum() {
    const WINDOW: u16 = 8_192;
    for version in VERSIONS {
        let mut tb = TestBroker::new();
        let subscriber = tb.connect("s", version, Opts::new());
        tb.subscribe(&subscriber, "t", Q1);
        let publisher = tb.connect("p", V311, Opts::new());
        for n in 1..=WINDOW + 1 {
            tb.send(&publisher, publish("t", &n.to_string(), Q1, n));
            assert_eq!(tb.recv(&publisher), [puback(n)]);
        }
        let window = tb.recv(&subscriber);
        assert_eq!(window.len(), usize::from(WINDOW), "{version:?}");
        tb.send(&subscriber, puback(packet_id(&window[0])));
        let last = (WINDOW + 1).to_string();
        assert_eq!(
            payloads(&tb.recv(&subscriber)),
            [last.as_str()],
            "{version:?}"
        );
    }
}

/// MQTT-4.13.1-1: a packet that fails to decode after CONNECT closes the connection, with the
/// reason code the error names in 5.0 (0x81 Malformed Packet, 0x95 Packet too large).
#[test]
fn decode_errors_close_with_their_reason_code() {
    let cases = [
        (DecodeError::Malformed("bad"), ReasonCode::MalformedPacket),
        (
            DecodeError::PacketTooLarge {
                size: 2_000_000,
                max: 1_048_576,
            },
            ReasonCode::PacketTooLarge,
        ),
    ];
    for (error, code) in cases {
        for version in VERSIONS {
            let mut tb = TestBroker::new();
            let client = tb.connect("c", version, Opts::new());
            tb.send_garbage(&client, error);
            let expected = if version == V5 {
                vec![disconnect(code)]
            } else {
                vec![]
            };
            assert_eq!(tb.expect_closed(&client), expected);
            assert_eq!(tb.stats().protocol_errors, 1);
        }
    }
}

/// The counters: connections, sessions, subscriptions, retained messages, PUBLISH packets
/// received and sent, drops and protocol errors.
#[test]
fn stats_add_up() {
    let mut tb = TestBroker::new();
    assert_eq!(tb.stats(), Stats::default());
    let subscriber = tb.connect("s", V5, Opts::new().resume().expiry(60));
    tb.subscribe(&subscriber, "t/#", Q1);
    tb.subscribe(&subscriber, "u", Q0);
    let publisher = tb.connect("p", V311, Opts::new());
    tb.send_all(
        &publisher,
        [
            retained("t/1", "a", Q1, 1),
            publish("t/2", "b", Q0, 0),
            publish("u", "c", Q0, 0),
        ],
    );
    let packets = tb.recv(&subscriber);
    assert_eq!(payloads(&packets), ["a", "b", "c"]);
    tb.send(&subscriber, puback(packet_id(&packets[0])));
    tb.disconnect(&subscriber);
    tb.send(&publisher, publish("u", "offline q0 is not kept", Q0, 0));
    tb.send(&publisher, publish("t/3", "queued", Q1, 2));
    let expected = Stats {
        clients_connected: 1,
        sessions: 2,
        publish_received: 5,
        publish_sent: 3,
        // t/1 and t/3 at QoS 1, the rest at 0; "a" went at 1 (t/# is QoS 1), "b" and "c" at 0.
        publish_received_by_qos: [3, 2, 0],
        publish_sent_by_qos: [2, 1, 0],
        publish_expired: 0,
        publish_dropped: 0,
        publish_dropped_memory: 0,
        sessions_shed: 0,
        // "queued" on t/3, held for the subscriber: the topic's 3 bytes and the payload's 6.
        held_bytes: 9,
        retained: 1,
        // "t/1" and "a".
        retained_bytes: 4,
        retained_refused: 0,
        retained_capped: 0,
        subscriptions: 2,
        protocol_errors: 0,
        publish_denied: 0,
        subscribe_denied: 0,
        auth_failures: 0,
        auth_checks_run: 0,
        auth_checks_skipped: 0,
        auth_queue_full: 0,
        logins_throttled: 0,
        history_refused: 0,
        subscribers_cut_loose: 0,
        subscribers_congested: 0,
        publishers_held: 0,
        publishers_paused: 0,
        acks_held: 0,
        held_millis: 0,
        paused_millis: 0,
    };
    assert_eq!(tb.stats(), expected);
    let subscriber = tb.connect("s", V5, Opts::new().resume().expiry(60));
    assert_eq!(payloads(&tb.recv(&subscriber)), ["queued"]);
    tb.send(&publisher, Packet::PingResp);
    tb.expect_closed(&publisher);
    // Still held: in flight, not yet acknowledged.
    let expected = Stats {
        publish_sent: 4,
        // "queued" went at QoS 1.
        publish_sent_by_qos: [2, 2, 0],
        protocol_errors: 1,
        sessions: 1,
        ..expected
    };
    assert_eq!(tb.stats(), expected);
}

/// MQTT-3.1.2-24/-25: a message waiting for re-delivery that is too large for the Maximum Packet
/// Size of the resumed connection is not resent but discarded as if delivered.
#[test]
fn oversize_resend_is_dropped() {
    let mut tb = TestBroker::new();
    let persistent = Opts::new().resume().expiry(600);
    let subscriber = tb.connect("s", V5, persistent.clone());
    tb.subscribe(&subscriber, "t", Q1);
    let publisher = tb.connect("p", V5, Opts::new());
    let big = "x".repeat(40);
    tb.send_all(
        &publisher,
        [publish("t", &big, Q1, 1), publish("t", "small", Q1, 2)],
    );
    assert_eq!(payloads(&tb.recv(&subscriber)), [big.as_str(), "small"]);
    tb.lose(&subscriber);
    let subscriber = tb.connect("s", V5, persistent.max_packet_size(32));
    assert_eq!(
        tb.recv(&subscriber),
        [publish_with("t", "small", Q1, 2, |p| p.dup = true)]
    );
    assert_eq!(tb.stats().publish_dropped, 1);
}

/// A 3.1.1 client is never told a Receive Maximum, so the broker does not hold it to one: its
/// open QoS 2 exchanges are bounded by the packet identifiers alone.
#[test]
fn v311_clients_are_not_held_to_receive_maximum() {
    let mut tb = TestBroker::with_limits(Limits {
        receive_maximum: 2,
        ..Limits::default()
    });
    let client = tb.connect("c", V311, Opts::new());
    tb.send_all(
        &client,
        [
            publish("t", "1", Q2, 1),
            publish("t", "2", Q2, 2),
            publish("t", "3", Q2, 3),
        ],
    );
    assert_eq!(tb.recv(&client), [pubrec(1), pubrec(2), pubrec(3)]);
}

/// MQTT-3.1.2-24: nothing larger than the client's Maximum Packet Size is sent to it. A reply
/// that cannot fit (a SUBACK for 60 filters, to a client accepting 40 bytes) is not sent; the
/// connection is closed instead, with a DISCONNECT that fits.
#[test]
fn v5_mqtt_3_1_2_24_a_reply_that_cannot_fit_closes_the_connection() {
    let mut tb = TestBroker::new();
    let client = tb.connect("c", V5, Opts::new().max_packet_size(40));
    let names: Vec<String> = (0..60).map(|i| format!("f/{i}")).collect();
    let filters: Vec<(&str, tern_codec::QoS)> = names.iter().map(|n| (n.as_str(), Q0)).collect();
    tb.send(&client, subscribe(1, &filters));
    assert_eq!(
        tb.expect_closed(&client),
        [disconnect(ReasonCode::ImplementationSpecificError)]
    );
    // A reply that fits is sent as usual.
    let other = tb.connect("d", V5, Opts::new().max_packet_size(40));
    tb.subscribe(&other, "f/1", Q0);
}

/// An MQTT 5 CONNECT larger than the broker's maximum is answered with CONNACK 0x95 when its
/// protocol level could be read; a 3.1.1 one is closed without a reply.
#[test]
fn oversized_connect_is_refused_in_the_clients_version() {
    let too_large = DecodeError::PacketTooLarge {
        size: 2048,
        max: 1024,
    };
    let mut tb = TestBroker::new();
    let id = tb.open();
    tb.broker.hint_protocol_level(id, 5);
    tb.broker.handle_decode_error(id, too_large, tb.now);
    let packets = tb.drain(id);
    assert!(tb.take_closed(id));
    assert!(
        matches!(packets.as_slice(), [Packet::ConnAck(c)] if c.reason_code == ReasonCode::PacketTooLarge),
        "{packets:?}"
    );
    let id = tb.open();
    tb.broker.hint_protocol_level(id, 4);
    tb.broker.handle_decode_error(id, too_large, tb.now);
    assert!(tb.drain(id).is_empty());
    assert!(tb.take_closed(id));
}

/// The per-client publish rate: up to the limit in each one-second window; one more closes the
/// connection, with DISCONNECT 0x96 Message rate too high in MQTT 5 (3.1.1 has no such code and
/// is closed silently). The message over the limit is not delivered.
#[test]
fn publish_rate_above_the_limit_disconnects() {
    for version in VERSIONS {
        let mut tb = TestBroker::with_limits(Limits {
            publish_rate_per_client_max: 3,
            ..Limits::default()
        });
        let watcher = tb.connect("w", V5, Opts::new());
        tb.subscribe(&watcher, "t", Q0);
        let client = tb.connect("c", version, Opts::new());
        tb.send_all(&client, (1..=3).map(|n| publish("t", "a", Q1, n)));
        assert_eq!(tb.recv(&client), [puback(1), puback(2), puback(3)]);
        tb.advance(1000);
        tb.send_all(&client, (4..=6).map(|n| publish("t", "b", Q1, n)));
        assert_eq!(tb.recv(&client), [puback(4), puback(5), puback(6)]);
        tb.advance(500);
        tb.send(&client, publish("t", "c", Q1, 7));
        let expected = match version {
            V5 => vec![disconnect(ReasonCode::MessageRateTooHigh)],
            _ => vec![],
        };
        assert_eq!(tb.expect_closed(&client), expected, "{version:?}");
        assert_eq!(
            payloads(&tb.recv(&watcher)),
            ["a", "a", "a", "b", "b", "b"],
            "{version:?}: the publish over the limit is not delivered"
        );
    }
}

/// By default a topic may be as long as MQTT allows (65,535 bytes) and have 200 separators (201
/// levels), as in Mosquitto: its 02-subpub-qos0-long-topic subscribes and publishes to topics
/// of 200 separators, `/` alone or between words. One level more is refused (SUBACK 0x80).
#[test]
fn default_topic_limits_take_long_and_deep_topics() {
    let longest = "x".repeat(65_535);
    let deepest_words = ["abc"; 200].join("/") + "/d";
    let deepest_empty = "/".repeat(200);
    for name in [&longest, &deepest_words, &deepest_empty] {
        let mut tb = TestBroker::new();
        let client = tb.connect("c", V311, Opts::new());
        tb.send(&client, subscribe(1, &[(name, Q0)]));
        assert_eq!(tb.recv(&client), [suback(1, &[ReasonCode::GRANTED_QOS_0])]);
        tb.send(&client, publish(name, "x", Q0, 0));
        assert_eq!(tb.recv(&client), [publish(name, "x", Q0, 0)]);
    }
    let too_deep = "/".repeat(201);
    let mut tb = TestBroker::new();
    let client = tb.connect("c", V311, Opts::new());
    tb.send(&client, subscribe(1, &[(&too_deep, Q0)]));
    assert_eq!(
        tb.recv(&client),
        [suback(1, &[ReasonCode::UnspecifiedError])]
    );
}
