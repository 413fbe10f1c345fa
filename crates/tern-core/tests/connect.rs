//! CONNECT handling proves the CONNACK codes and properties, client identifier assignment, the
//! first/second CONNECT rules, Session Present, and session take-over, for MQTT 3.1.1 and 5.0.

mod support;

use tern_codec::{ConnAckProperties, DecodeError, Packet, ReasonCode};
use tern_core::{Event, Limits, Transmit};

use support::*;

/// MQTT-3.1.4-5 / 3.1.1 MQTT-3.1.4-4: a valid CONNECT is answered by a CONNACK 0x00 that
/// advertises the server's limits (5.0, 3.2.2.3).
#[test]
fn connack_success_advertises_limits() {
    let mut tb = TestBroker::new();
    let v5 = tb.connect("c5", V5, Opts::new());
    assert!(!v5.connack.session_present);
    let expected = ConnAckProperties {
        receive_maximum: Some(1024),
        maximum_packet_size: Some(1024 * 1024),
        topic_alias_maximum: Some(64),
        ..ConnAckProperties::default()
    };
    assert_eq!(v5.connack.properties, expected);

    let v3 = tb.connect("c3", V311, Opts::new());
    assert!(!v3.connack.session_present);
    assert_eq!(v3.connack.properties, ConnAckProperties::default());
    assert_eq!(tb.stats().clients_connected, 2);
    tb.expect_silent(&v5);
    tb.expect_silent(&v3);
}

/// MQTT-3.2.2-9, MQTT-3.2.2-13 (Retain Available), MQTT-3.2.2-21 (Server Keep Alive) and the
/// Session Expiry Interval the server chose (3.2.2.3.2) appear in CONNACK when limits differ.
#[test]
fn connack_properties_follow_limits() {
    let limits = Limits {
        qos_max: Q1,
        retain_available: false,
        session_expiry_max_secs: 100,
        keep_alive_max_secs: 30,
        topic_alias_max: 0,
        receive_maximum: u16::MAX,
        packet_size_max_bytes: tern_codec::PACKET_SIZE_MAX,
        ..Limits::default()
    };
    let mut tb = TestBroker::with_limits(limits);
    let client = tb.connect("c", V5, Opts::new().expiry(500).keep_alive(60));
    let expected = ConnAckProperties {
        session_expiry_interval: Some(100),
        maximum_qos: Some(Q1),
        retain_available: Some(false),
        server_keep_alive: Some(30),
        ..ConnAckProperties::default()
    };
    assert_eq!(client.connack.properties, expected);
}

/// MQTT-3.1.3-6, MQTT-3.1.3-7, MQTT-3.2.2-16: an empty client identifier gets a unique one,
/// returned as Assigned Client Identifier, and the session is the client's under that name.
#[test]
fn v5_empty_client_id_is_assigned() {
    let mut tb = TestBroker::new();
    let first = tb.connect("", V5, Opts::new().expiry(60));
    let second = tb.connect("", V5, Opts::new());
    assert_eq!(first.client_id, "auto-1");
    assert_eq!(second.client_id, "auto-2");
    assert_eq!(
        first.connack.properties.assigned_client_identifier,
        Some(mstr("auto-1"))
    );
    tb.subscribe(&first, "t", Q1);
    tb.disconnect(&first);

    let again = tb.connect("auto-1", V5, Opts::new().resume().expiry(60));
    assert!(again.connack.session_present);
    assert_eq!(again.connack.properties.assigned_client_identifier, None);
    tb.send(&second, publish("t", "m", Q1, 1));
    assert_eq!(tb.recv(&again), [publish("t", "m", Q1, 1)]);
}

/// An assigned identifier never collides with a session the broker already holds
/// (MQTT-3.2.2-16: "not used by any other Session currently in the Server").
#[test]
fn assigned_client_id_skips_taken_names() {
    let mut tb = TestBroker::new();
    tb.connect("auto-1", V5, Opts::new());
    let client = tb.connect("", V5, Opts::new());
    assert_eq!(client.client_id, "auto-2");
}

/// 3.1.1 MQTT-3.1.3-6: an empty identifier with Clean Session 1 is accepted.
#[test]
fn v311_empty_client_id_with_clean_session_is_accepted() {
    let mut tb = TestBroker::new();
    let client = tb.connect("", V311, Opts::new());
    assert!(!client.connack.session_present);
    tb.send(&client, Packet::PingReq);
    assert_eq!(tb.recv(&client), [Packet::PingResp]);
}

/// 3.1.1 MQTT-3.1.3-8: an empty identifier with Clean Session 0 gets return code 0x02 and the
/// connection is closed.
#[test]
fn v311_empty_client_id_without_clean_session_is_refused_with_0x02() {
    let mut tb = TestBroker::new();
    let (_, packets, closed) = tb.try_connect(connect_packet("", V311, &Opts::new().resume()));
    assert!(closed);
    assert_eq!(packets.len(), 1);
    // Fixed header, flags (session present 0), return code 0x02.
    assert_eq!(encode(&packets[0], V311), [0x20, 0x02, 0x00, 0x02]);
    assert_eq!(tb.stats().sessions, 0);
    assert_eq!(tb.stats().clients_connected, 0);
}

/// MQTT-3.1.0-1: the first packet must be CONNECT; anything else closes without a reply
/// (MQTT-3.14.0-1: no DISCONNECT before a CONNACK).
#[test]
fn first_packet_not_connect_closes_without_reply() {
    for version in VERSIONS {
        let mut tb = TestBroker::new();
        let id = tb.open();
        tb.send_to(id, version, publish("t", "x", Q0, 0));
        assert_eq!(tb.broker.poll_transmit(id), Some(Transmit::Close));
        assert_eq!(tb.broker.poll_transmit(id), None);
        assert_eq!(tb.stats().protocol_errors, 1);
        // Nothing more is processed on it.
        tb.send_to(
            id,
            version,
            Packet::Connect(Box::new(connect_packet("c", version, &Opts::new()))),
        );
        assert_eq!(tb.broker.poll_transmit(id), None);
        assert_eq!(tb.stats().clients_connected, 0);
    }
}

/// MQTT-3.1.0-2 (both versions): a second CONNECT is a protocol error; MQTT 5 says so with
/// DISCONNECT 0x82 before closing, 3.1.1 just closes.
#[test]
fn second_connect_closes() {
    for version in VERSIONS {
        let mut tb = TestBroker::new();
        let client = tb.connect("c", version, Opts::new());
        tb.send(
            &client,
            Packet::Connect(Box::new(connect_packet("c", version, &Opts::new()))),
        );
        let packets = tb.expect_closed(&client);
        match version {
            V5 => assert_eq!(packets, [disconnect(ReasonCode::ProtocolError)]),
            V31 | V311 => assert_eq!(packets, []),
        }
        assert_eq!(tb.stats().protocol_errors, 1);
        assert_eq!(tb.stats().clients_connected, 0);
    }
}

/// A client may not send packets only a server sends: protocol error, DISCONNECT 0x82 in 5.0
/// (MQTT-4.13.1-1).
#[test]
fn server_only_packet_from_client_closes() {
    let mut tb = TestBroker::new();
    let client = tb.connect("c", V5, Opts::new());
    tb.send(&client, suback(1, &[ReasonCode::GrantedQos1]));
    assert_eq!(
        tb.expect_closed(&client),
        [disconnect(ReasonCode::ProtocolError)]
    );
}

/// MQTT-3.2.2-2, MQTT-3.2.2-3 (5.0) and 3.1.1 MQTT-3.1.2-4/-6: Session Present is 1 exactly
/// when Clean Start is 0 and a session existed; Clean Start 1 discards the old session.
#[test]
fn session_present_follows_clean_start() {
    for version in VERSIONS {
        let mut tb = TestBroker::new();
        let persistent = Opts::new().resume().expiry(300);
        let first = tb.connect("c", version, persistent.clone());
        assert!(
            !first.connack.session_present,
            "{version:?}: no session existed"
        );
        tb.subscribe(&first, "t", Q1);
        tb.disconnect(&first);

        let resumed = tb.connect("c", version, persistent.clone());
        assert!(
            resumed.connack.session_present,
            "{version:?}: session resumed"
        );
        tb.disconnect(&resumed);

        let clean = tb.connect("c", version, Opts::new().expiry(300));
        assert!(!clean.connack.session_present, "{version:?}: clean start");
        let publisher = tb.connect("p", version, Opts::new());
        tb.send(&publisher, publish("t", "x", Q1, 1));
        tb.recv(&publisher);
        tb.expect_silent(&clean);
        assert_eq!(
            tb.stats().subscriptions,
            0,
            "{version:?}: the old subscription went with its session"
        );
    }
}

/// MQTT-3.1.4-3: take-over sends the existing connection DISCONNECT 0x8E and closes it; with
/// Clean Start 0 the session continues on the new connection (MQTT-3.1.2-5).
#[test]
fn v5_take_over_keeps_session_with_clean_start_0() {
    let mut tb = TestBroker::new();
    let old = tb.connect("c", V5, Opts::new().expiry(60));
    tb.subscribe(&old, "t", Q1);
    let new = tb.connect("c", V5, Opts::new().resume().expiry(60));
    assert!(new.connack.session_present);
    assert_eq!(
        tb.expect_closed(&old),
        [disconnect(ReasonCode::SessionTakenOver)]
    );

    let publisher = tb.connect("p", V5, Opts::new());
    tb.send(&publisher, publish("t", "after", Q1, 7));
    assert_eq!(tb.recv(&publisher), [puback(7)]);
    assert_eq!(tb.recv(&new), [publish("t", "after", Q1, 1)]);
    assert_eq!(tb.stats().clients_connected, 2);
    assert_eq!(tb.stats().sessions, 2);
    let events = tb.events();
    assert!(events.iter().any(|e| matches!(
        e,
        Event::Disconnected {
            reason: tern_core::CloseReason::SessionTakenOver,
            ..
        }
    )));
}

/// 3.1.1 MQTT-3.1.4-2: the existing client is disconnected (no DISCONNECT packet in 3.1.1) and
/// the session continues with Clean Session 0.
#[test]
fn v311_take_over_closes_old_connection() {
    let mut tb = TestBroker::new();
    let old = tb.connect("c", V311, Opts::new().resume());
    tb.subscribe(&old, "t", Q1);
    let new = tb.connect("c", V311, Opts::new().resume());
    assert!(new.connack.session_present);
    assert_eq!(tb.expect_closed(&old), []);
    let publisher = tb.connect("p", V311, Opts::new());
    tb.send(&publisher, publish("t", "x", Q1, 1));
    assert_eq!(tb.recv(&new), [publish("t", "x", Q1, 1)]);
}

/// Take-over with Clean Start 1 discards the existing session (MQTT-3.1.2-4).
#[test]
fn take_over_with_clean_start_discards_session() {
    for version in VERSIONS {
        let mut tb = TestBroker::new();
        let old = tb.connect("c", version, Opts::new().resume().expiry(60));
        tb.subscribe(&old, "t", Q1);
        let new = tb.connect("c", version, Opts::new());
        assert!(!new.connack.session_present);
        tb.expect_closed(&old);
        assert_eq!(tb.stats().subscriptions, 0);
        assert_eq!(tb.stats().sessions, 1);
    }
}

/// 3.1.1 MQTT-3.1.2-6: the state of a Clean Session 1 session lasts as long as its network
/// connection and MUST NOT be reused, even when a Clean Session 0 connection takes it over.
/// Likewise a 5.0 session with Session Expiry Interval 0 ends with its connection
/// (MQTT-3.1.2-23 only keeps state when the interval is greater than 0).
#[test]
fn take_over_of_a_session_ending_with_its_connection_starts_a_new_one() {
    for version in VERSIONS {
        let mut tb = TestBroker::new();
        let old = tb.connect("c", version, Opts::new());
        tb.subscribe(&old, "t", Q1);
        let new = tb.connect("c", version, Opts::new().resume().expiry(60));
        assert!(!new.connack.session_present, "{version:?}");
        tb.expect_closed(&old);
        assert_eq!(tb.stats().subscriptions, 0, "{version:?}");
    }
}

/// 3.1.1 MQTT-3.1.2-2 and 5.0 MQTT-3.1.2-2: an unsupported protocol level gets CONNACK 0x01
/// (3.1.1 encoding) or 0x84 (5.0 encoding), then the connection closes.
#[test]
fn unsupported_protocol_level_gets_connack_then_close() {
    for (level, bytes) in [
        (3u8, vec![0x20, 0x02, 0x00, 0x01]),
        (6, vec![0x20, 0x03, 0x00, 0x84, 0x00]),
    ] {
        let mut tb = TestBroker::new();
        let id = tb.open();
        tb.broker
            .handle_decode_error(id, DecodeError::UnsupportedProtocolVersion(level), tb.now);
        let version = tb.broker.protocol_version(id).expect("open");
        let Some(Transmit::Packet(connack)) = tb.broker.poll_transmit(id) else {
            panic!("level {level}: no CONNACK");
        };
        assert_eq!(encode(&connack, version), bytes, "level {level}");
        assert_eq!(tb.broker.poll_transmit(id), Some(Transmit::Close));
    }
}

/// MQTT-3.2.2-12 and MQTT-3.2.2-13: a will the server cannot honour refuses the connection with
/// 0x9B (QoS not supported) or 0x9A (Retain not supported).
#[test]
fn will_beyond_capabilities_is_refused() {
    let limits = Limits {
        qos_max: Q1,
        retain_available: false,
        ..Limits::default()
    };
    let cases = [
        (will("w", "x", Q2, false), ReasonCode::QosNotSupported),
        (will("w", "x", Q0, true), ReasonCode::RetainNotSupported),
    ];
    for (will, code) in cases {
        let mut tb = TestBroker::with_limits(limits.clone());
        let (_, packets, closed) = tb.try_connect(connect_packet("c", V5, &Opts::new().will(will)));
        assert!(closed);
        let [Packet::ConnAck(connack)] = packets.as_slice() else {
            panic!("{packets:?}")
        };
        assert_eq!(connack.reason_code, code);
        assert!(!connack.session_present, "MQTT-3.2.2-6");
        assert_eq!(tb.stats().sessions, 0);
    }
}

/// MQTT-4.12.0-1: an unsupported Authentication Method is refused with 0x8C and closed.
#[test]
fn unknown_authentication_method_is_refused() {
    let mut tb = TestBroker::new();
    let mut connect = connect_packet("c", V5, &Opts::new());
    connect.properties.authentication_method = Some(mstr("SCRAM-SHA-1"));
    let (_, packets, closed) = tb.try_connect(connect);
    assert!(closed);
    let [Packet::ConnAck(connack)] = packets.as_slice() else {
        panic!("{packets:?}")
    };
    assert_eq!(connack.reason_code, ReasonCode::BadAuthenticationMethod);
}

/// MQTT-3.12.4-1: PINGREQ is answered by PINGRESP, in both versions.
#[test]
fn pingreq_gets_pingresp() {
    for version in VERSIONS {
        let mut tb = TestBroker::new();
        let client = tb.connect("c", version, Opts::new());
        tb.send(&client, Packet::PingReq);
        assert_eq!(tb.recv(&client), [Packet::PingResp]);
    }
}

/// Connect and disconnect events name the client, its version and whether a session resumed.
#[test]
fn events_report_connects_and_disconnects() {
    let mut tb = TestBroker::new();
    let client = tb.connect("c", V5, Opts::new());
    tb.disconnect(&client);
    let events = tb.events();
    assert_eq!(
        events,
        [
            Event::Connected {
                connection: client.id,
                client_id: mstr("c"),
                version: V5,
                session_present: false
            },
            Event::Disconnected {
                connection: client.id,
                client_id: mstr("c"),
                reason: tern_core::CloseReason::ClientDisconnect,
                will_triggered: false,
            },
            Event::SessionEnded {
                client_id: mstr("c")
            },
        ]
    );
}

/// MQTT-3.1.4-6 / 3.1.1 MQTT-3.1.4-5: after a refused CONNECT nothing else is processed.
#[test]
fn nothing_is_processed_after_a_refused_connect() {
    let mut tb = TestBroker::new();
    let watcher = tb.connect("w", V311, Opts::new());
    tb.subscribe(&watcher, "#", Q0);
    // The runtime has not finished closing the refused connection when more packets arrive.
    let id = tb.open();
    tb.send_to(
        id,
        V311,
        Packet::Connect(Box::new(connect_packet("", V311, &Opts::new().resume()))),
    );
    tb.send_to(id, V311, publish("t", "x", Q0, 0));
    tb.send_to(id, V311, Packet::PingReq);
    tb.expect_silent(&watcher);
    let first = tb.broker.poll_transmit(id).and_then(Transmit::into_packet);
    assert!(matches!(first, Some(Packet::ConnAck(_))), "CONNACK first");
    assert_eq!(tb.broker.poll_transmit(id), Some(Transmit::Close));
    assert_eq!(tb.broker.poll_transmit(id), None);
    assert_eq!(tb.stats().publish_received, 0);
}

/// MQTT-3.1.0-2 and MQTT-3.14.2-1: a second CONNECT that does not even decode (unsupported
/// protocol level) is still a protocol error, answered with a DISCONNECT reason code that
/// DISCONNECT allows (0x82, not the CONNACK-only 0x84).
#[test]
fn undecodable_second_connect_is_a_protocol_error() {
    for version in VERSIONS {
        let mut tb = TestBroker::new();
        let client = tb.connect("c", version, Opts::new());
        tb.send_garbage(&client, DecodeError::UnsupportedProtocolVersion(3));
        let expected = if version == V5 {
            vec![disconnect(ReasonCode::ProtocolError)]
        } else {
            vec![]
        };
        assert_eq!(tb.expect_closed(&client), expected);
    }
}

/// MQTT 3.1 ("MQIsdp", level 3) is served as 3.1.1: a persistent session is resumed, with its
/// queued messages, but the CONNACK says nothing of it, as 3.1 has no Session Present flag
/// (Mosquitto's 03-publish-c2b-disconnect-qos2 connects at level 3 and expects CONNACK 0).
#[test]
fn v31_client_is_served_as_3_1_1() {
    let mut tb = TestBroker::new();
    let client = tb.connect("dev-1", V31, Opts::new().resume());
    tb.subscribe(&client, "t", Q1);
    tb.disconnect(&client);
    let publisher = tb.connect("p", V311, Opts::new());
    tb.send(&publisher, publish("t", "queued", Q1, 1));
    let (id, packets, closed) = tb.try_connect(connect_packet("dev-1", V31, &Opts::new().resume()));
    assert!(!closed);
    assert_eq!(encode(&packets[0], V31), [0x20, 0x02, 0x00, 0x00]);
    assert_eq!(&packets[1..], [publish("t", "queued", Q1, 1)]);
    assert_eq!(tb.broker.protocol_version(id), Some(V31));
}

/// MQTT 3.1 has no assigned client identifiers: an empty one is refused with return code 0x02
/// (Identifier rejected), whatever the Clean Session flag.
#[test]
fn v31_empty_client_id_is_refused() {
    let mut tb = TestBroker::new();
    let (_, packets, closed) = tb.try_connect(connect_packet("", V31, &Opts::new()));
    assert!(closed);
    assert_eq!(encode(&packets[0], V31), [0x20, 0x02, 0x00, 0x02]);
}

/// An MQTT 3.1 SUBACK can only grant (a 3.1 client reads any byte there as a granted QoS), so a
/// refused filter closes the connection: the one refusal 3.1 knows. Filters granted in the same
/// SUBSCRIBE stay.
#[test]
fn v31_refused_subscription_closes_the_connection() {
    let mut tb = TestBroker::with_limits(Limits {
        topic_levels_max: 2,
        ..Limits::default()
    });
    let client = tb.connect("dev-1", V31, Opts::new().resume());
    tb.send(&client, subscribe(1, &[("a", Q1), ("a/b/c", Q0)]));
    assert_eq!(tb.expect_closed(&client), []);
    assert_eq!(tb.stats().subscriptions, 1);
}
