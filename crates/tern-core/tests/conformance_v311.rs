//! MQTT 3.1.1 statements of `docs/conformance.md` that the scenario suites do not prove on their
//! own: one test per statement, named after it, each driving the broker core through the harness.

mod support;

use tern_codec::{filter_matches, ConnAck, DecodeError, Packet, ReasonCode};
use tern_core::{AuthDecision, AuthRequest, Authenticator, Event, Limits};

use support::*;

/// Every packet written on connection `id` until it has nothing more, the close included.
fn transmits(tb: &mut TestBroker, id: tern_core::ConnectionId) -> Vec<Sent> {
    std::iter::from_fn(|| tb.broker.poll_transmit(id).map(Sent::from)).collect()
}

/// The payload of a PUBLISH, as text.
fn text(packet: &Packet) -> String {
    payloads(std::slice::from_ref(packet)).concat()
}

/// Refuses the client identifier "banned" (0x85, sent as return code 0x02 in 3.1.1) and lets
/// every other client in.
#[derive(Debug)]
struct BanOneId;

impl Authenticator for BanOneId {
    fn authenticate(&mut self, request: &AuthRequest<'_>) -> AuthDecision {
        if request.client_id.as_str() == "banned" {
            AuthDecision::Refuse(ReasonCode::ClientIdentifierNotValid)
        } else {
            AuthDecision::Accept { data: None }
        }
    }

    fn continue_auth(&mut self, _request: &AuthRequest<'_>) -> AuthDecision {
        AuthDecision::Refuse(ReasonCode::NotAuthorized)
    }
}

/// MQTT-2.3.1-4: the server's own QoS 1 and 2 PUBLISH packets carry non-zero identifiers that no
/// other unacknowledged one holds, and a resent PUBLISH keeps its identifier.
#[test]
fn v311_mqtt_2_3_1_4() {
    let mut tb = TestBroker::new();
    let persistent = Opts::new().resume();
    let subscriber = tb.connect("sub", V311, persistent.clone());
    tb.subscribe(&subscriber, "t", Q2);
    let publisher = tb.connect("pub", V311, Opts::new());
    tb.send_all(
        &publisher,
        [
            publish("t", "a", Q1, 1),
            publish("t", "b", Q2, 2),
            publish("t", "c", Q1, 3),
        ],
    );
    let ids: Vec<u16> = tb.recv(&subscriber).iter().map(packet_id).collect();
    assert_eq!(ids.len(), 3);
    assert!(!ids.contains(&0));
    assert!(ids[0] != ids[1] && ids[1] != ids[2] && ids[0] != ids[2]);
    // Once "a" is acknowledged its identifier is free again; those of "b" and "c" are not.
    tb.send(&subscriber, puback(ids[0]));
    tb.send(&publisher, publish("t", "d", Q1, 4));
    let d = packet_id(&tb.recv(&subscriber)[0]);
    assert!(d != 0 && d != ids[1] && d != ids[2]);
    // Resent after a reconnect: the same identifiers.
    tb.lose(&subscriber);
    let subscriber = tb.connect("sub", V311, persistent);
    let resent: Vec<u16> = tb.recv(&subscriber).iter().map(packet_id).collect();
    assert_eq!(resent, [ids[1], ids[2], d]);
}

/// MQTT-2.3.1-6: the server's PUBACK and PUBREC carry the identifier of the client's PUBLISH, and
/// the PUBREL it sends carries the identifier of its own PUBLISH.
#[test]
fn v311_mqtt_2_3_1_6() {
    let mut tb = TestBroker::new();
    let subscriber = tb.connect("sub", V311, Opts::new());
    tb.subscribe(&subscriber, "t", Q2);
    let publisher = tb.connect("pub", V311, Opts::new());
    tb.send(&publisher, publish("t", "one", Q1, 0x1234));
    assert_eq!(tb.recv(&publisher), [puback(0x1234)]);
    tb.send(&publisher, publish("t", "two", Q2, u16::MAX));
    assert_eq!(tb.recv(&publisher), [pubrec(u16::MAX)]);
    tb.send(&publisher, pubrel(u16::MAX));
    assert_eq!(tb.recv(&publisher), [pubcomp(u16::MAX)]);

    let packets = tb.recv(&subscriber);
    assert_eq!(payloads(&packets), ["one", "two"]);
    tb.send(&subscriber, puback(packet_id(&packets[0])));
    let two = packet_id(&packets[1]);
    tb.send(&subscriber, pubrec(two));
    assert_eq!(tb.recv(&subscriber), [pubrel(two)]);
}

/// MQTT-2.3.1-7: SUBACK and UNSUBACK carry the identifier of the SUBSCRIBE or UNSUBSCRIBE they
/// answer.
#[test]
fn v311_mqtt_2_3_1_7() {
    let mut tb = TestBroker::new();
    let client = tb.connect("c", V311, Opts::new());
    for id in [1, 0x1234, u16::MAX] {
        tb.send(&client, subscribe(id, &[("t", Q1)]));
        assert_eq!(tb.recv(&client), [suback(id, &[granted(Q1)])]);
        tb.send(&client, unsubscribe(id, &["t"]));
        assert_eq!(tb.recv(&client), [unsuback(id, &[])]);
    }
}

/// MQTT-3.1.2-6: CleanSession 1 discards the stored session (its subscriptions and the messages
/// queued for it); the new session ends with its connection and is never picked up again.
#[test]
fn v311_mqtt_3_1_2_6() {
    let mut tb = TestBroker::new();
    let old = tb.connect("c", V311, Opts::new().resume());
    tb.subscribe(&old, "old", Q1);
    tb.disconnect(&old);
    let publisher = tb.connect("p", V311, Opts::new());
    tb.send(&publisher, publish("old", "queued", Q1, 1));

    let clean = tb.connect("c", V311, Opts::new());
    assert!(!clean.connack.session_present);
    tb.expect_silent(&clean);
    tb.send(&publisher, publish("old", "after", Q1, 2));
    tb.expect_silent(&clean);
    tb.subscribe(&clean, "new", Q1);
    tb.disconnect(&clean);
    assert_eq!(
        tb.stats().sessions,
        1,
        "only the publisher's session is left"
    );

    let later = tb.connect("c", V311, Opts::new().resume());
    assert!(!later.connack.session_present);
    tb.send(&publisher, publish("new", "x", Q1, 3));
    tb.expect_silent(&later);
}

/// MQTT-3.1.2-8: the Will of an accepted CONNECT is held, not published, while the connection
/// lasts; it is published when the connection closes without DISCONNECT, by network failure or
/// by the server, and not when the client sent DISCONNECT.
#[test]
fn v311_mqtt_3_1_2_8() {
    let mut tb = TestBroker::new();
    let watcher = tb.connect("w", V311, Opts::new());
    tb.subscribe(&watcher, "will/#", Q1);
    let lost = tb.connect(
        "lost",
        V311,
        Opts::new().will(will("will/lost", "l", Q1, false)),
    );
    let broken = tb.connect(
        "broken",
        V311,
        Opts::new().will(will("will/broken", "b", Q0, false)),
    );
    let polite = tb.connect(
        "polite",
        V311,
        Opts::new().will(will("will/polite", "p", Q0, false)),
    );
    tb.expect_silent(&watcher);

    tb.lose(&lost);
    assert_eq!(tb.recv(&watcher), [publish("will/lost", "l", Q1, 1)]);
    // A packet only a server sends is a protocol violation: the server closes the connection.
    tb.send(&broken, Packet::PingResp);
    assert_eq!(tb.expect_closed(&broken), []);
    assert_eq!(tb.recv(&watcher), [publish("will/broken", "b", Q0, 0)]);
    tb.disconnect(&polite);
    tb.expect_silent(&watcher);
}

/// MQTT-3.1.2-10: a published Will leaves the session, so ending that session later publishes
/// nothing more; DISCONNECT removes the Will without publishing it.
#[test]
fn v311_mqtt_3_1_2_10() {
    let mut tb = TestBroker::new();
    let watcher = tb.connect("w", V311, Opts::new());
    tb.subscribe(&watcher, "will/#", Q0);

    let client = tb.connect(
        "c",
        V311,
        Opts::new().resume().will(will("will/c", "once", Q0, false)),
    );
    tb.lose(&client);
    assert_eq!(tb.recv(&watcher), [publish("will/c", "once", Q0, 0)]);
    // CleanSession 1 ends the stored session: a Will still in it would go out now.
    let client = tb.connect("c", V311, Opts::new());
    tb.disconnect(&client);
    tb.expect_silent(&watcher);

    let client = tb.connect(
        "c",
        V311,
        Opts::new()
            .resume()
            .will(will("will/c", "never", Q0, false)),
    );
    tb.disconnect(&client);
    let client = tb.connect("c", V311, Opts::new());
    tb.lose(&client);
    tb.expect_silent(&watcher);
}

/// MQTT-3.1.2-12: without a Will, nothing is published when the connection ends, however it
/// ends.
#[test]
fn v311_mqtt_3_1_2_12() {
    let mut tb = TestBroker::new();
    let watcher = tb.connect("w", V311, Opts::new());
    tb.subscribe(&watcher, "#", Q0);
    let lost = tb.connect("lost", V311, Opts::new());
    tb.lose(&lost);
    let silent = tb.connect("silent", V311, Opts::new().keep_alive(1));
    tb.advance(1_501);
    assert_eq!(tb.expect_closed(&silent), []);
    let broken = tb.connect("broken", V311, Opts::new());
    tb.send(&broken, Packet::PingResp);
    tb.expect_closed(&broken);
    tb.expect_silent(&watcher);
}

/// MQTT-3.1.3-2: the client identifier names the session: each client resumes its own
/// subscriptions and queued messages, never another client's.
#[test]
fn v311_mqtt_3_1_3_2() {
    let mut tb = TestBroker::new();
    let persistent = Opts::new().resume();
    let alpha = tb.connect("alpha", V311, persistent.clone());
    tb.subscribe(&alpha, "for/alpha", Q1);
    let beta = tb.connect("beta", V311, persistent.clone());
    tb.subscribe(&beta, "for/beta", Q1);
    tb.disconnect(&alpha);
    tb.disconnect(&beta);
    let publisher = tb.connect("p", V311, Opts::new());
    tb.send_all(
        &publisher,
        [
            publish("for/alpha", "A", Q1, 1),
            publish("for/beta", "B", Q1, 2),
        ],
    );

    let beta = tb.connect("beta", V311, persistent.clone());
    assert!(beta.connack.session_present);
    assert_eq!(payloads(&tb.recv(&beta)), ["B"]);
    let alpha = tb.connect("alpha", V311, persistent.clone());
    assert!(alpha.connack.session_present);
    assert_eq!(payloads(&tb.recv(&alpha)), ["A"]);
    let gamma = tb.connect("gamma", V311, persistent);
    assert!(!gamma.connack.session_present);
    tb.expect_silent(&gamma);
}

/// MQTT-3.1.3-5: client identifiers of 1 to 23 bytes drawn from 0-9, a-z and A-Z are accepted,
/// each naming a session of its own.
#[test]
fn v311_mqtt_3_1_3_5() {
    let alphabet = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let ids = [
        "0",
        "Z",
        &alphabet[..23],
        &alphabet[23..46],
        &alphabet[39..],
    ];
    let mut tb = TestBroker::new();
    for id in ids {
        let client = tb.connect(id, V311, Opts::new().resume());
        assert!(!client.connack.session_present, "{id}");
        tb.send(&client, Packet::PingReq);
        assert_eq!(tb.recv(&client), [Packet::PingResp], "{id}");
    }
    assert_eq!(tb.stats().sessions, ids.len() as u64);
    assert_eq!(tb.stats().clients_connected, ids.len() as u64);
}

/// MQTT-3.1.3-6: clients that send an empty identifier each get a unique one, and the CONNECT is
/// then handled as if they had sent it: two such clients hold separate sessions side by side.
#[test]
fn v311_mqtt_3_1_3_6() {
    let mut tb = TestBroker::new();
    let first = tb.connect("", V311, Opts::new());
    let second = tb.connect("", V311, Opts::new());
    let assigned: Vec<String> = tb
        .events()
        .into_iter()
        .filter_map(|event| match event {
            Event::Connected { client_id, .. } => Some(client_id.as_str().to_owned()),
            _ => None,
        })
        .collect();
    assert_eq!(assigned.len(), 2);
    assert!(!assigned[0].is_empty() && !assigned[1].is_empty());
    assert_ne!(assigned[0], assigned[1]);
    // Neither took the other's session over.
    assert_eq!(tb.stats().sessions, 2);
    tb.subscribe(&first, "t", Q0);
    tb.send(&second, publish("t", "x", Q0, 0));
    assert_eq!(tb.recv(&first), [publish("t", "x", Q0, 0)]);
    tb.expect_silent(&second);
}

/// MQTT-3.1.3-9: a client identifier the server rejects (here by the authentication hook) gets
/// CONNACK with return code 0x02, and the connection is closed.
#[test]
fn v311_mqtt_3_1_3_9() {
    let mut tb = TestBroker::new();
    tb.broker.set_authenticator(Box::new(BanOneId));
    let (id, packets, closed) = tb.try_connect(connect_packet("banned", V311, &Opts::new()));
    let [connack] = packets.as_slice() else {
        panic!("{packets:?}");
    };
    assert_eq!(encode(connack, V311), [0x20, 0x02, 0x00, 0x02]);
    assert!(closed);
    assert_eq!(tb.broker.poll_transmit(id), None);
    assert_eq!(tb.stats().sessions, 0);
    tb.connect("welcome", V311, Opts::new());
}

/// MQTT-3.1.4-1 and MQTT-3.2.2-6: a CONNECT that does not conform (malformed, breaking a
/// protocol rule, or with an invalid Will Topic) closes the connection with no CONNACK, since no
/// return code fits.
#[test]
fn v311_mqtt_3_1_4_1() {
    let errors = [
        DecodeError::Malformed("reserved CONNECT flag set"),
        DecodeError::Protocol("password without user name"),
        DecodeError::TopicNameInvalid("wildcard in will topic"),
    ];
    for error in errors {
        let mut tb = TestBroker::new();
        let id = tb.open();
        tb.broker.handle_decode_error(id, error, tb.now);
        assert_eq!(transmits(&mut tb, id), [Sent::Close], "{error}");
        assert_eq!(tb.stats().sessions, 0);
        assert_eq!(tb.stats().clients_connected, 0);
    }
}

/// MQTT-3.2.0-1: CONNACK is the first packet the server sends, even when the resumed session has
/// messages waiting.
#[test]
fn v311_mqtt_3_2_0_1() {
    let mut tb = TestBroker::new();
    let subscriber = tb.connect("s", V311, Opts::new().resume());
    tb.subscribe(&subscriber, "t", Q1);
    tb.disconnect(&subscriber);
    let publisher = tb.connect("p", V311, Opts::new());
    tb.send(&publisher, publish("t", "waiting", Q1, 1));

    let (_, packets, closed) = tb.try_connect(connect_packet("s", V311, &Opts::new().resume()));
    assert!(!closed);
    let Packet::ConnAck(connack) = &packets[0] else {
        panic!("CONNACK first: {packets:?}");
    };
    assert!(connack.session_present);
    assert_eq!(packets[1..], [publish("t", "waiting", Q1, 1)]);
}

/// MQTT-3.2.2-4: a CONNACK with a non-zero return code has Session Present 0, even when a session
/// is stored for the client identifier.
#[test]
fn v311_mqtt_3_2_2_4() {
    let mut tb = TestBroker::with_limits(Limits {
        qos_max: Q1,
        ..Limits::default()
    });
    let client = tb.connect("c", V311, Opts::new().resume());
    tb.subscribe(&client, "t", Q1);
    tb.disconnect(&client);

    let refused = connect_packet(
        "c",
        V311,
        &Opts::new().resume().will(will("w", "x", Q2, false)),
    );
    let (_, packets, closed) = tb.try_connect(refused);
    assert!(closed);
    let [connack] = packets.as_slice() else {
        panic!("{packets:?}");
    };
    let bytes = encode(connack, V311);
    assert_eq!(bytes[..3], [0x20, 0x02, 0x00], "Session Present 0");
    assert_ne!(bytes[3], 0x00, "a refusal");
    // The session was there all along.
    let client = tb.connect("c", V311, Opts::new().resume());
    assert!(client.connack.session_present);
}

/// MQTT-3.3.1-6: a new subscription gets the last retained message of every topic it matches,
/// each with RETAIN set.
#[test]
fn v311_mqtt_3_3_1_6() {
    let mut tb = TestBroker::new();
    let publisher = tb.connect("p", V311, Opts::new());
    tb.send_all(
        &publisher,
        [
            retained("s/1", "first", Q0, 0),
            retained("s/1", "last", Q0, 0),
            retained("s/2", "only", Q1, 1),
            retained("other", "x", Q0, 0),
        ],
    );
    let subscriber = tb.connect("s", V311, Opts::new());
    tb.subscribe(&subscriber, "s/+", Q1);
    let packets = tb.recv(&subscriber);
    let mut got: Vec<(String, String, bool)> = publishes(&packets)
        .iter()
        .map(|p| {
            let payload = String::from_utf8_lossy(&p.payload).into_owned();
            (p.topic.to_string(), payload, p.retain)
        })
        .collect();
    got.sort();
    let expected = [
        ("s/1".to_owned(), "last".to_owned(), true),
        ("s/2".to_owned(), "only".to_owned(), true),
    ];
    assert_eq!(got, expected);
}

/// MQTT-3.3.2-3: every PUBLISH the server sends carries a Topic Name that matches the filter of
/// the subscription it was sent for.
#[test]
fn v311_mqtt_3_3_2_3() {
    let filters = ["a/+/c", "a/#", "+", "#", "a/b", "+/+", "/+"];
    let topics = [
        "a", "a/b", "a/b/c", "a/x/c", "b", "a/b/c/d", "/a", "a/", "x/y",
    ];
    let mut tb = TestBroker::new();
    let subscribers: Vec<TestClient> = filters
        .iter()
        .enumerate()
        .map(|(n, filter)| {
            let client = tb.connect(&format!("s{n}"), V311, Opts::new());
            tb.subscribe(&client, filter, Q0);
            client
        })
        .collect();
    let publisher = tb.connect("p", V311, Opts::new());
    for topic_name in topics {
        tb.send(&publisher, publish(topic_name, topic_name, Q0, 0));
    }
    for (filter, subscriber) in filters.iter().zip(&subscribers) {
        let packets = tb.recv(subscriber);
        let delivered: Vec<&str> = publishes(&packets)
            .iter()
            .map(|p| p.topic.as_str())
            .collect();
        let expected: Vec<&str> = topics
            .iter()
            .copied()
            .filter(|t| filter_matches(filter, t))
            .collect();
        assert_eq!(delivered, expected, "filter {filter}");
        assert_eq!(payloads(&packets), expected, "filter {filter}");
    }
}

/// MQTT-3.3.4-1: the server answers a QoS 0 PUBLISH with nothing, QoS 1 with PUBACK and QoS 2
/// with PUBREC (and the PUBREL that follows with PUBCOMP).
#[test]
fn v311_mqtt_3_3_4_1() {
    let mut tb = TestBroker::new();
    let client = tb.connect("c", V311, Opts::new());
    tb.send(&client, publish("t", "0", Q0, 0));
    tb.expect_silent(&client);
    tb.send(&client, publish("t", "1", Q1, 7));
    assert_eq!(tb.recv(&client), [puback(7)]);
    tb.send(&client, publish("t", "2", Q2, 8));
    assert_eq!(tb.recv(&client), [pubrec(8)]);
    tb.send(&client, pubrel(8));
    assert_eq!(tb.recv(&client), [pubcomp(8)]);
}

/// MQTT-3.8.4-3: SUBSCRIBE with the filter of an existing subscription replaces it (one
/// subscription, the new maximum QoS), sends the retained message again, and loses none of the
/// messages already on their way.
#[test]
fn v311_mqtt_3_8_4_3() {
    let mut tb = TestBroker::with_limits(Limits {
        inflight_count_max: 1,
        ..Limits::default()
    });
    let publisher = tb.connect("p", V311, Opts::new());
    tb.send(&publisher, retained("t", "kept", Q1, 1));
    let client = tb.connect("c", V311, Opts::new());
    tb.subscribe(&client, "t", Q1);
    let mut packets = tb.recv(&client);
    assert_eq!(packets, [retained("t", "kept", Q1, packet_id(&packets[0]))]);
    // Two more wait behind the unacknowledged one.
    tb.send_all(
        &publisher,
        [publish("t", "m1", Q1, 2), publish("t", "m2", Q1, 3)],
    );
    tb.send(&client, subscribe(9, &[("t", Q2)]));
    assert_eq!(tb.recv(&client), [suback(9, &[granted(Q2)])]);
    assert_eq!(tb.stats().subscriptions, 1);

    let mut got = Vec::new();
    while let Some(packet) = packets.first() {
        let Packet::Publish(publish) = packet else {
            panic!("{packet:?}");
        };
        got.push((text(packet), publish.retain));
        tb.send(&client, puback(packet_id(packet)));
        packets = tb.recv(&client);
    }
    let expected = [("kept", true), ("m1", false), ("m2", false), ("kept", true)];
    assert_eq!(got, expected.map(|(p, r)| (p.to_owned(), r)));
    // The replacement's maximum QoS applies from now on, once per message.
    tb.send(&publisher, publish("t", "m3", Q2, 4));
    let packets = tb.recv(&client);
    assert_eq!(packets, [publish("t", "m3", Q2, packet_id(&packets[0]))]);
}

/// MQTT-3.10.4-1: UNSUBSCRIBE filters are compared character by character with the client's
/// filters: only an identical one is deleted, wildcards and case notwithstanding.
#[test]
fn v311_mqtt_3_10_4_1() {
    let mut tb = TestBroker::new();
    let client = tb.connect("c", V311, Opts::new());
    tb.subscribe(&client, "a/+", Q0);
    tb.subscribe(&client, "a/b", Q1);
    tb.subscribe(&client, "A/B", Q0);
    tb.send(
        &client,
        unsubscribe(5, &["a/#", "a/b/", "+/b", "a/B", "a/b"]),
    );
    assert_eq!(tb.recv(&client), [unsuback(5, &[])]);
    assert_eq!(tb.stats().subscriptions, 2);
    let publisher = tb.connect("p", V311, Opts::new());
    // Only "a/+" (granted QoS 0) still matches "a/b": "a/b" (QoS 1) is gone.
    tb.send(&publisher, publish("a/b", "x", Q1, 1));
    tb.send(&publisher, publish("A/B", "y", Q0, 0));
    assert_eq!(
        tb.recv(&client),
        [publish("a/b", "x", Q0, 0), publish("A/B", "y", Q0, 0)]
    );
}

/// MQTT-3.10.4-3: QoS 1 and 2 deliveries the server had started complete after their
/// subscription is deleted; nothing new is sent for it.
#[test]
fn v311_mqtt_3_10_4_3() {
    let mut tb = TestBroker::new();
    let client = tb.connect("c", V311, Opts::new());
    tb.subscribe(&client, "t", Q2);
    let publisher = tb.connect("p", V311, Opts::new());
    tb.send_all(
        &publisher,
        [publish("t", "one", Q1, 1), publish("t", "two", Q2, 2)],
    );
    let packets = tb.recv(&client);
    assert_eq!(payloads(&packets), ["one", "two"]);
    tb.send(&client, unsubscribe(3, &["t"]));
    assert_eq!(tb.recv(&client), [unsuback(3, &[])]);
    tb.send(&publisher, publish("t", "three", Q1, 3));

    tb.send(&client, puback(packet_id(&packets[0])));
    let two = packet_id(&packets[1]);
    tb.send(&client, pubrec(two));
    assert_eq!(tb.recv(&client), [pubrel(two)]);
    tb.send(&client, pubcomp(two));
    tb.expect_silent(&client);
}

/// MQTT-3.10.4-5: UNSUBSCRIBE is answered with UNSUBACK even when it deletes nothing.
#[test]
fn v311_mqtt_3_10_4_5() {
    let mut tb = TestBroker::new();
    let client = tb.connect("c", V311, Opts::new());
    tb.send(&client, unsubscribe(42, &["never/subscribed", "#"]));
    assert_eq!(tb.recv(&client), [unsuback(42, &[])]);
    tb.subscribe(&client, "a", Q0);
    tb.send(&client, unsubscribe(43, &["b"]));
    assert_eq!(tb.recv(&client), [unsuback(43, &[])]);
    assert_eq!(tb.stats().subscriptions, 1);
}

/// MQTT-4.1.0-1: a CleanSession 0 session keeps all its state (subscriptions, unacknowledged and
/// queued outgoing messages, received QoS 2 identifiers) for as long as it lasts, through a long
/// absence.
#[test]
fn v311_mqtt_4_1_0_1() {
    let mut tb = TestBroker::new();
    let persistent = Opts::new().resume();
    let client = tb.connect("c", V311, persistent.clone());
    tb.subscribe(&client, "t", Q1);
    let publisher = tb.connect("p", V311, Opts::new());
    tb.send(&publisher, publish("t", "in flight", Q1, 1));
    let in_flight = packet_id(&tb.recv(&client)[0]);
    tb.send(&client, publish("out", "x", Q2, 5));
    assert_eq!(tb.recv(&client), [pubrec(5)]);
    tb.lose(&client);
    tb.send(&publisher, publish("t", "queued", Q1, 2));

    tb.advance_secs(30 * 24 * 3600);
    let client = tb.connect("c", V311, persistent);
    assert!(client.connack.session_present);
    let packets = tb.recv(&client);
    assert_eq!(
        packets,
        [
            publish_with("t", "in flight", Q1, in_flight, |p| p.dup = true),
            publish("t", "queued", Q1, packet_id(&packets[1])),
        ]
    );
    // The QoS 2 exchange the client started is remembered: its resend is not a new message.
    let watcher = tb.connect("w", V311, Opts::new());
    tb.subscribe(&watcher, "out", Q0);
    tb.send(&client, publish_with("out", "x", Q2, 5, |p| p.dup = true));
    assert_eq!(tb.recv(&client), [pubrec(5)]);
    tb.expect_silent(&watcher);
}

/// MQTT-4.1.0-2: a session lasts at least as long as its network connection: a CleanSession 1
/// session keeps working however long its connection stays open.
#[test]
fn v311_mqtt_4_1_0_2() {
    let mut tb = TestBroker::new();
    let client = tb.connect("c", V311, Opts::new());
    tb.subscribe(&client, "t", Q1);
    let publisher = tb.connect("p", V311, Opts::new());
    tb.advance_secs(365 * 24 * 3600);
    assert_eq!(tb.stats().sessions, 2);
    tb.send(&publisher, publish("t", "still here", Q1, 1));
    assert_eq!(tb.recv(&client), [publish("t", "still here", Q1, 1)]);
}

/// MQTT-4.3.2-1: as a QoS 1 sender the server sends each new message with an unused identifier,
/// QoS 1 and DUP 0, and holds it unacknowledged (resent after a reconnect, keeping its place in
/// the window) until its PUBACK.
#[test]
fn v311_mqtt_4_3_2_1() {
    let mut tb = TestBroker::with_limits(Limits {
        inflight_count_max: 1,
        ..Limits::default()
    });
    let persistent = Opts::new().resume();
    let subscriber = tb.connect("s", V311, persistent.clone());
    tb.subscribe(&subscriber, "t", Q1);
    let publisher = tb.connect("p", V311, Opts::new());
    tb.send_all(
        &publisher,
        [publish("t", "a", Q1, 1), publish("t", "b", Q1, 2)],
    );
    let packets = tb.recv(&subscriber);
    let a = packet_id(&packets[0]);
    assert_eq!(packets, [publish("t", "a", Q1, a)]);
    assert_ne!(a, 0);

    tb.lose(&subscriber);
    let subscriber = tb.connect("s", V311, persistent.clone());
    assert_eq!(
        tb.recv(&subscriber),
        [publish_with("t", "a", Q1, a, |p| p.dup = true)]
    );
    tb.send(&subscriber, puback(a));
    let packets = tb.recv(&subscriber);
    let b = packet_id(&packets[0]);
    assert_eq!(packets, [publish("t", "b", Q1, b)]);
    assert_ne!(b, 0);
    tb.send(&subscriber, puback(b));
    tb.lose(&subscriber);
    let subscriber = tb.connect("s", V311, persistent);
    tb.expect_silent(&subscriber);
}

/// MQTT-4.3.2-2: as a QoS 1 receiver the server answers with PUBACK carrying the identifier, and
/// afterwards takes a PUBLISH with that identifier as a new message, whatever its DUP flag.
#[test]
fn v311_mqtt_4_3_2_2() {
    let mut tb = TestBroker::new();
    let subscriber = tb.connect("s", V311, Opts::new());
    tb.subscribe(&subscriber, "t", Q0);
    let publisher = tb.connect("p", V311, Opts::new());
    tb.send(&publisher, publish("t", "first", Q1, 10));
    assert_eq!(tb.recv(&publisher), [puback(10)]);
    for _ in 0..2 {
        tb.send(
            &publisher,
            publish_with("t", "next", Q1, 10, |p| p.dup = true),
        );
        assert_eq!(tb.recv(&publisher), [puback(10)]);
    }
    assert_eq!(payloads(&tb.recv(&subscriber)), ["first", "next", "next"]);
}

/// MQTT-4.3.3-1: as a QoS 2 sender the server sends PUBLISH (unused identifier, QoS 2, DUP 0),
/// resends it until PUBREC, then sends PUBREL with the same identifier and resends that until
/// PUBCOMP, never the PUBLISH again.
#[test]
fn v311_mqtt_4_3_3_1() {
    let mut tb = TestBroker::new();
    let persistent = Opts::new().resume();
    let subscriber = tb.connect("s", V311, persistent.clone());
    tb.subscribe(&subscriber, "t", Q2);
    let publisher = tb.connect("p", V311, Opts::new());
    tb.send(&publisher, publish("t", "x", Q2, 1));
    let packets = tb.recv(&subscriber);
    let id = packet_id(&packets[0]);
    assert_eq!(packets, [publish("t", "x", Q2, id)]);
    assert_ne!(id, 0);

    tb.lose(&subscriber);
    let subscriber = tb.connect("s", V311, persistent.clone());
    assert_eq!(
        tb.recv(&subscriber),
        [publish_with("t", "x", Q2, id, |p| p.dup = true)]
    );
    tb.send(&subscriber, pubrec(id));
    assert_eq!(tb.recv(&subscriber), [pubrel(id)]);

    tb.lose(&subscriber);
    let subscriber = tb.connect("s", V311, persistent.clone());
    assert_eq!(tb.recv(&subscriber), [pubrel(id)]);
    tb.send(&subscriber, pubcomp(id));
    tb.expect_silent(&subscriber);
    tb.lose(&subscriber);
    let subscriber = tb.connect("s", V311, persistent);
    tb.expect_silent(&subscriber);
}

/// MQTT-4.5.0-1: an accepted message joins the session of every client with a matching
/// subscription, connected or not, and no other.
#[test]
fn v311_mqtt_4_5_0_1() {
    let mut tb = TestBroker::new();
    let online = tb.connect("online", V311, Opts::new());
    tb.subscribe(&online, "a/b", Q1);
    let offline = tb.connect("offline", V311, Opts::new().resume());
    tb.subscribe(&offline, "a/+", Q1);
    tb.disconnect(&offline);
    let other = tb.connect("other", V311, Opts::new());
    tb.subscribe(&other, "a/c", Q1);
    let publisher = tb.connect("p", V311, Opts::new());
    tb.send(&publisher, publish("a/b", "m", Q1, 1));
    assert_eq!(tb.recv(&publisher), [puback(1)]);

    assert_eq!(tb.recv(&online), [publish("a/b", "m", Q1, 1)]);
    tb.expect_silent(&other);
    let offline = tb.connect("offline", V311, Opts::new().resume());
    assert_eq!(tb.recv(&offline), [publish("a/b", "m", Q1, 1)]);
}

/// MQTT-4.7.3-4: matching compares topic names and filters exactly as sent: no case folding,
/// Unicode normalisation, slash trimming or character substitution, and the delivered topic is
/// unchanged.
#[test]
fn v311_mqtt_4_7_3_4() {
    // (filter, a topic that differs from it only in a way normalisation would hide)
    let cases = [
        ("caf\u{e9}", "cafe\u{301}"),
        ("a/b", "A/B"),
        ("a/b", "a/b/"),
        ("a", "/a"),
        ("a b", "a  b"),
        ("x", "\u{ff58}"),
        ("t", "\u{feff}t"),
        ("\u{feff}t", "t"),
    ];
    let mut tb = TestBroker::new();
    let publisher = tb.connect("p", V311, Opts::new());
    for (n, (filter_text, other)) in cases.iter().enumerate() {
        let subscriber = tb.connect(&format!("s{n}"), V311, Opts::new());
        tb.subscribe(&subscriber, filter_text, Q0);
        tb.send(&publisher, publish(other, "other", Q0, 0));
        tb.send(&publisher, publish(filter_text, "same", Q0, 0));
        assert_eq!(
            tb.recv(&subscriber),
            [publish(filter_text, "same", Q0, 0)],
            "{filter_text:?} against {other:?}"
        );
    }
}

/// MQTT-4.8.0-1: a protocol violation closes the connection it arrived on (3.1.1 has no
/// DISCONNECT from the server), and nothing more from it is processed.
#[test]
fn v311_mqtt_4_8_0_1() {
    let connack = Packet::ConnAck(Box::new(ConnAck {
        session_present: false,
        reason_code: ReasonCode::Success,
        properties: Default::default(),
    }));
    let violations = [
        Packet::Connect(Box::new(connect_packet("c", V311, &Opts::new()))),
        connack,
        suback(1, &[granted(Q0)]),
        unsuback(1, &[]),
        Packet::PingResp,
    ];
    for violation in violations {
        let mut tb = TestBroker::new();
        let watcher = tb.connect("w", V311, Opts::new());
        tb.subscribe(&watcher, "t", Q0);
        let client = tb.connect("c", V311, Opts::new());
        tb.send(&client, violation.clone());
        tb.send(&client, publish("t", "after", Q0, 0));
        assert_eq!(tb.expect_closed(&client), [], "{violation:?}");
        tb.expect_silent(&watcher);
        assert_eq!(tb.stats().protocol_errors, 1);
    }
    // A packet that does not decode is a violation too.
    let mut tb = TestBroker::new();
    let client = tb.connect("c", V311, Opts::new());
    tb.send_garbage(&client, DecodeError::Malformed("bad remaining length"));
    assert_eq!(tb.expect_closed(&client), []);
}
