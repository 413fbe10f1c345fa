//! MQTT 5.0 statements of `docs/conformance.md` that the scenario suites do not prove on their
//! own: one test per statement, named after it, each driving the broker core through the harness.

mod support;

use bytes::Bytes;
use tern_codec::RetainHandling::SendAtSubscribe;
use tern_codec::{
    filter_matches, Auth, AuthProperties, Connect, DecodeError, Disconnect, Packet, ReasonCode,
    SubscriptionIds,
};
use tern_core::{AuthDecision, AuthRequest, Authenticator, ConnectionId, Limits};

use support::*;

/// A small Maximum Packet Size, still large enough for the packets the scenarios below make the
/// server send (the harness checks each of them against it).
const SMALL_PACKET_SIZE: u32 = 24;

/// Connects with a CONNECT the caller built and expects it accepted with nothing else sent.
fn connect_with(tb: &mut TestBroker, connect: Connect) -> TestClient {
    let version = connect.protocol_version;
    let client_id = connect.client_id.as_str().to_owned();
    let (id, packets, closed) = tb.try_connect(connect);
    assert!(!closed, "{packets:?}");
    let [Packet::ConnAck(connack)] = packets.as_slice() else {
        panic!("expected only CONNACK: {packets:?}");
    };
    assert_eq!(connack.reason_code, ReasonCode::Success);
    TestClient {
        id,
        version,
        client_id,
        connack: (**connack).clone(),
    }
}

/// Everything written on connection `id` until it has nothing more, the close included.
fn transmits(tb: &mut TestBroker, id: ConnectionId) -> Vec<Sent> {
    std::iter::from_fn(|| tb.broker.poll_transmit(id).map(Sent::from)).collect()
}

/// A CONNECT naming an Authentication Method that the default authenticator refuses (0x8C).
fn connect_with_auth_method(client_id: &str, opts: &Opts) -> Connect {
    let mut connect = connect_packet(client_id, V5, opts);
    connect.properties.authentication_method = Some(mstr("SCRAM-SHA-256"));
    connect
}

/// Asserts that a packet the server sent carries neither a Reason String nor User Properties.
fn assert_no_diagnostics(packet: &Packet) {
    let (reason_string, user_properties) = match packet {
        Packet::PubAck(ack) | Packet::PubRec(ack) | Packet::PubRel(ack) | Packet::PubComp(ack) => (
            &ack.properties.reason_string,
            &ack.properties.user_properties,
        ),
        Packet::SubAck(suback) => (
            &suback.properties.reason_string,
            &suback.properties.user_properties,
        ),
        Packet::UnsubAck(unsuback) => (
            &unsuback.properties.reason_string,
            &unsuback.properties.user_properties,
        ),
        Packet::ConnAck(connack) => (
            &connack.properties.reason_string,
            &connack.properties.user_properties,
        ),
        Packet::Disconnect(disconnect) => (
            &disconnect.properties.reason_string,
            &disconnect.properties.user_properties,
        ),
        Packet::Auth(auth) => (
            &auth.properties.reason_string,
            &auth.properties.user_properties,
        ),
        other => panic!("not a packet with diagnostics: {other:?}"),
    };
    assert_eq!(*reason_string, None, "{packet:?}");
    assert!(user_properties.is_empty(), "{packet:?}");
}

/// A client with a small Maximum Packet Size; the harness checks every packet sent to it.
fn small_client(tb: &mut TestBroker, client_id: &str) -> TestClient {
    tb.connect(
        client_id,
        V5,
        Opts::new().max_packet_size(SMALL_PACKET_SIZE),
    )
}

/// The DISCONNECT packets the server sends to a client connected with `opts`, one per situation
/// in which it sends one (protocol error, malformed packet, keep alive timeout, take-over,
/// shutdown); each is the last packet before the connection is closed.
fn server_disconnects(opts: &Opts) -> Vec<Disconnect> {
    let mut written = Vec::new();
    let mut tb = TestBroker::new();
    let client = tb.connect("c", V5, opts.clone());
    tb.send(&client, Packet::PingResp);
    written.push(tb.expect_closed(&client));

    let mut tb = TestBroker::new();
    let client = tb.connect("c", V5, opts.clone());
    tb.send_garbage(&client, DecodeError::Malformed("bad"));
    written.push(tb.expect_closed(&client));

    let mut tb = TestBroker::new();
    let client = tb.connect("c", V5, opts.clone().keep_alive(1));
    tb.advance(1_501);
    written.push(tb.expect_closed(&client));

    let mut tb = TestBroker::new();
    let client = tb.connect("c", V5, opts.clone());
    tb.connect("c", V5, opts.clone());
    written.push(tb.expect_closed(&client));

    let mut tb = TestBroker::new();
    let client = tb.connect("c", V5, opts.clone());
    let now = tb.now;
    tb.broker.shutdown(now);
    written.push(tb.expect_closed(&client));

    written
        .into_iter()
        .map(|packets| match packets.as_slice() {
            [Packet::Disconnect(disconnect)] => disconnect.clone(),
            other => panic!("expected one DISCONNECT before the close: {other:?}"),
        })
        .collect()
}

/// The enhanced authentication method [`Challenge`] knows.
const METHOD: &str = "TEST-CHALLENGE";

/// Lets plain CONNECTs in; for [`METHOD`] sends the challenge "nonce" and accepts the answer
/// "nonce-signed", on CONNECT as on re-authentication; refuses any other method.
#[derive(Debug)]
struct Challenge;

impl Authenticator for Challenge {
    fn authenticate(&mut self, request: &AuthRequest<'_>) -> AuthDecision {
        match request.method.map(|m| m.as_str()) {
            None => AuthDecision::Accept { data: None },
            Some(METHOD) => AuthDecision::Continue {
                data: Bytes::from_static(b"nonce"),
            },
            Some(_) => AuthDecision::Refuse(ReasonCode::BadAuthenticationMethod),
        }
    }

    fn continue_auth(&mut self, request: &AuthRequest<'_>) -> AuthDecision {
        if request.data == Some(&b"nonce-signed"[..]) {
            AuthDecision::Accept {
                data: Some(Bytes::from_static(b"welcome")),
            }
        } else {
            AuthDecision::Refuse(ReasonCode::NotAuthorized)
        }
    }
}

/// A broker whose authenticator is [`Challenge`].
fn challenge_broker() -> TestBroker {
    let mut tb = TestBroker::new();
    tb.broker.set_authenticator(Box::new(Challenge));
    tb
}

/// AUTH with a reason code, a method and optional data.
fn auth(reason_code: ReasonCode, method: &str, data: Option<&'static [u8]>) -> Packet {
    Packet::Auth(Auth {
        reason_code,
        properties: AuthProperties {
            authentication_method: Some(mstr(method)),
            authentication_data: data.map(Bytes::from_static),
            ..AuthProperties::default()
        },
    })
}

/// Sends a CONNECT with [`METHOD`] and expects the challenge; returns the connection.
fn begin_challenge(tb: &mut TestBroker, client_id: &str, opts: &Opts) -> ConnectionId {
    let mut connect = connect_packet(client_id, V5, opts);
    connect.properties.authentication_method = Some(mstr(METHOD));
    let (id, packets, closed) = tb.try_connect(connect);
    assert!(!closed);
    assert_eq!(
        packets,
        [auth(
            ReasonCode::ContinueAuthentication,
            METHOD,
            Some(b"nonce")
        )]
    );
    id
}

/// Whether `written` holds a CONNACK accepting the connection.
fn accepted(written: &[Sent]) -> bool {
    written.iter().any(
        |t| matches!(t, Sent::Packet(Packet::ConnAck(c)) if c.reason_code == ReasonCode::Success),
    )
}

/// Refuses the client identifier "banned" with 0x85 and lets every other client in.
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

/// Two members of the shared subscription `$share/g/t` at `qos`, with sessions lasting
/// `expiry` seconds, and a publisher.
fn shared_pair(
    tb: &mut TestBroker,
    qos: tern_codec::QoS,
    expiry: [u32; 2],
) -> (TestClient, TestClient, TestClient) {
    let first = tb.connect("m1", V5, Opts::new().resume().expiry(expiry[0]));
    let second = tb.connect("m2", V5, Opts::new().resume().expiry(expiry[1]));
    tb.subscribe(&first, "$share/g/t", qos);
    tb.subscribe(&second, "$share/g/t", qos);
    let publisher = tb.connect("p", V5, Opts::new());
    (first, second, publisher)
}

/// MQTT-2.2.1-5: PUBACK, PUBREC and PUBCOMP from the server carry the identifier of the client's
/// PUBLISH, and the server's PUBREL the identifier of its own PUBLISH.
#[test]
fn v5_mqtt_2_2_1_5() {
    let mut tb = TestBroker::new();
    let subscriber = tb.connect("sub", V5, Opts::new());
    tb.subscribe(&subscriber, "t", Q2);
    let publisher = tb.connect("pub", V5, Opts::new());
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

/// MQTT-2.2.1-6: SUBACK and UNSUBACK carry the identifier of the SUBSCRIBE or UNSUBSCRIBE they
/// answer.
#[test]
fn v5_mqtt_2_2_1_6() {
    let mut tb = TestBroker::new();
    let client = tb.connect("c", V5, Opts::new());
    for id in [1, 0x1234, u16::MAX] {
        tb.send(&client, subscribe(id, &[("t", Q1)]));
        assert_eq!(tb.recv(&client), [suback(id, &[granted(Q1)])]);
        tb.send(&client, unsubscribe(id, &["t"]));
        assert_eq!(tb.recv(&client), [unsuback(id, &[ReasonCode::Success])]);
    }
}

/// MQTT-3.1.2-5: Clean Start 0 with a stored session resumes it: its subscriptions, the message
/// left unacknowledged and the one queued while the client was away.
#[test]
fn v5_mqtt_3_1_2_5() {
    let mut tb = TestBroker::new();
    let persistent = Opts::new().resume().expiry(600);
    let client = tb.connect("c", V5, persistent.clone());
    tb.subscribe(&client, "t", Q1);
    let publisher = tb.connect("p", V5, Opts::new());
    tb.send(&publisher, publish("t", "in flight", Q1, 1));
    let in_flight = packet_id(&tb.recv(&client)[0]);
    tb.lose(&client);
    tb.send(&publisher, publish("t", "queued", Q1, 2));

    let client = tb.connect("c", V5, persistent);
    assert!(client.connack.session_present);
    let packets = tb.recv(&client);
    assert_eq!(
        packets,
        [
            publish_with("t", "in flight", Q1, in_flight, |p| p.dup = true),
            publish("t", "queued", Q1, packet_id(&packets[1])),
        ]
    );
    tb.send(&publisher, publish("t", "live", Q1, 3));
    assert_eq!(payloads(&tb.recv(&client)), ["live"]);
}

/// MQTT-3.1.2-8: after the connection closes the Will goes out once its delay has passed or the
/// session has ended, whichever comes first; never after DISCONNECT 0x00, nor when the client
/// reconnects within the delay.
#[test]
fn v5_mqtt_3_1_2_8() {
    let mut tb = TestBroker::new();
    let watcher = tb.connect("w", V5, Opts::new());
    tb.subscribe(&watcher, "will/#", Q0);
    let delayed = tb.connect(
        "delayed",
        V5,
        Opts::new()
            .expiry(60)
            .will(delayed_will("will/delayed", "d", 5)),
    );
    let ending = tb.connect(
        "ending",
        V5,
        Opts::new()
            .expiry(3)
            .will(delayed_will("will/ending", "e", 60)),
    );
    let back = tb.connect(
        "back",
        V5,
        Opts::new()
            .resume()
            .expiry(60)
            .will(delayed_will("will/back", "b", 5)),
    );
    let polite = tb.connect(
        "polite",
        V5,
        Opts::new()
            .expiry(60)
            .will(will("will/polite", "p", Q0, false)),
    );
    tb.lose(&delayed);
    tb.lose(&ending);
    tb.lose(&back);
    tb.disconnect(&polite);
    tb.expect_silent(&watcher);

    tb.advance(2_000);
    let back = tb.connect("back", V5, Opts::new().resume().expiry(60));
    assert!(back.connack.session_present);
    tb.advance(999);
    tb.expect_silent(&watcher);
    tb.advance(1);
    assert_eq!(tb.recv(&watcher), [publish("will/ending", "e", Q0, 0)]);
    tb.advance(1_999);
    tb.expect_silent(&watcher);
    tb.advance(1);
    assert_eq!(tb.recv(&watcher), [publish("will/delayed", "d", Q0, 0)]);
    tb.advance_secs(120);
    tb.expect_silent(&watcher);
}

/// MQTT-3.1.2-10: a published Will leaves the session (its later end publishes nothing more), and
/// DISCONNECT 0x00 removes the Will unpublished, even when the session outlives the connection.
#[test]
fn v5_mqtt_3_1_2_10() {
    let mut tb = TestBroker::new();
    let watcher = tb.connect("w", V5, Opts::new());
    tb.subscribe(&watcher, "will/#", Q0);
    let published = tb.connect(
        "published",
        V5,
        Opts::new()
            .expiry(10)
            .will(delayed_will("will/published", "once", 5)),
    );
    let removed = tb.connect(
        "removed",
        V5,
        Opts::new()
            .expiry(10)
            .will(delayed_will("will/removed", "never", 5)),
    );
    tb.lose(&published);
    tb.disconnect(&removed);
    tb.advance_secs(5);
    assert_eq!(
        tb.recv(&watcher),
        [publish("will/published", "once", Q0, 0)]
    );
    // Both sessions end now; a Will still held would be published at that point.
    tb.advance_secs(5);
    assert_eq!(tb.stats().sessions, 1, "only the watcher's session is left");
    tb.expect_silent(&watcher);
}

/// MQTT-3.1.2-22: with no packet for one and a half times the Keep Alive the server closes the
/// connection as if the network had failed: DISCONNECT 0x8D, then the Will is published.
#[test]
fn v5_mqtt_3_1_2_22() {
    let mut tb = TestBroker::new();
    let watcher = tb.connect("w", V5, Opts::new());
    tb.subscribe(&watcher, "will", Q0);
    let client = tb.connect(
        "c",
        V5,
        Opts::new()
            .keep_alive(10)
            .will(will("will", "silent", Q0, false)),
    );
    tb.advance(15_000);
    tb.expect_silent(&client);
    tb.expect_silent(&watcher);
    tb.advance(1);
    assert_eq!(
        tb.expect_closed(&client),
        [disconnect(ReasonCode::KeepAliveTimeout)]
    );
    assert_eq!(tb.recv(&watcher), [publish("will", "silent", Q0, 0)]);
}

/// MQTT-3.1.2-26 and MQTT-3.3.2-11: the server sends no Topic Alias above the Topic Alias Maximum
/// the client gave in CONNECT, whatever aliases the publisher used: with a maximum of 2, the
/// first two topics get aliases 1 and 2 and the third goes by its name.
#[test]
fn v5_mqtt_3_1_2_26() {
    let mut tb = TestBroker::new();
    let subscriber = tb.connect("s", V5, Opts::new().topic_alias_maximum(2));
    tb.subscribe(&subscriber, "#", Q1);
    let publisher = tb.connect("p", V5, Opts::new());
    let topics = ["a/long/topic", "b/long/topic", "c/long/topic"];
    for round in 0..2 {
        for (alias, topic_name) in (1..).zip(topics) {
            let name = if round == 0 { topic_name } else { "" };
            tb.send(
                &publisher,
                publish_with(name, topic_name, Q0, 0, |p| {
                    p.properties.topic_alias = Some(alias);
                }),
            );
        }
    }
    let packets = tb.recv(&subscriber);
    let aliases: Vec<(Option<u16>, &str)> = publishes(&packets)
        .into_iter()
        .map(|p| (p.properties.topic_alias, p.topic.as_str()))
        .collect();
    assert_eq!(
        aliases,
        [
            (Some(1), "a/long/topic"),
            (Some(2), "b/long/topic"),
            (None, "c/long/topic"),
            (Some(1), ""),
            (Some(2), ""),
            (None, "c/long/topic"),
        ]
    );
}

/// MQTT-3.1.2-28: a client that sets Request Response Information to 0 gets no Response
/// Information in CONNACK.
#[test]
fn v5_mqtt_3_1_2_28() {
    let mut tb = TestBroker::new();
    let mut connect = connect_packet("c", V5, &Opts::new());
    connect.properties.request_response_information = Some(false);
    let client = connect_with(&mut tb, connect);
    assert_eq!(client.connack.properties.response_information, None);
}

/// MQTT-3.1.2-29: with Request Problem Information 0, no acknowledgement the server sends carries
/// a Reason String or User Properties, failures included.
#[test]
fn v5_mqtt_3_1_2_29() {
    let mut tb = TestBroker::with_limits(Limits {
        subscriptions_per_session_max: 1,
        ..Limits::default()
    });
    let mut connect = connect_packet("c", V5, &Opts::new());
    connect.properties.request_problem_information = Some(false);
    let client = connect_with(&mut tb, connect);
    tb.send_all(
        &client,
        [
            publish("nobody", "x", Q1, 1),
            publish("nobody", "x", Q2, 2),
            pubrel(3),
            pubrec(4),
            subscribe(5, &[("a", Q0), ("b", Q0)]),
            unsubscribe(6, &["c"]),
        ],
    );
    let packets = tb.recv(&client);
    let codes: Vec<ReasonCode> = packets
        .iter()
        .map(|packet| match packet {
            Packet::PubAck(a) | Packet::PubRec(a) | Packet::PubRel(a) | Packet::PubComp(a) => {
                a.reason_code
            }
            Packet::SubAck(s) => s.reason_codes[1],
            Packet::UnsubAck(u) => u.reason_codes[0],
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        codes,
        [
            ReasonCode::NoMatchingSubscribers,
            ReasonCode::Success,
            ReasonCode::Success,
            ReasonCode::PacketIdentifierNotFound,
            ReasonCode::QuotaExceeded,
            ReasonCode::NoSubscriptionExisted,
        ]
    );
    packets.iter().for_each(assert_no_diagnostics);
}

/// MQTT-3.1.2-30: while enhanced authentication is under way the server takes nothing from the
/// client but AUTH or DISCONNECT: any other packet ends the connection unaccepted, without
/// effect, and a correct AUTH after it changes nothing.
#[test]
fn v5_mqtt_3_1_2_30() {
    let intruders = [
        publish("t", "x", Q0, 0),
        subscribe(1, &[("t", Q0)]),
        Packet::PingReq,
    ];
    for intruder in intruders {
        let mut tb = challenge_broker();
        let watcher = tb.connect("w", V5, Opts::new());
        tb.subscribe(&watcher, "#", Q0);
        let id = begin_challenge(&mut tb, "c", &Opts::new());
        tb.send_to(id, V5, intruder.clone());
        let answer = auth(
            ReasonCode::ContinueAuthentication,
            METHOD,
            Some(b"nonce-signed"),
        );
        tb.send_to(id, V5, answer);
        let written = transmits(&mut tb, id);
        assert_eq!(written.last(), Some(&Sent::Close), "{intruder:?}");
        assert!(!accepted(&written), "{intruder:?}: {written:?}");
        tb.expect_silent(&watcher);
        assert_eq!(tb.stats().subscriptions, 1, "only the watcher's");
        assert_eq!(tb.stats().clients_connected, 1, "only the watcher");
    }
}

/// MQTT-3.1.3-2: the client identifier names the session: each client resumes its own
/// subscriptions and queued messages, never another client's.
#[test]
fn v5_mqtt_3_1_3_2() {
    let mut tb = TestBroker::new();
    let persistent = Opts::new().resume().expiry(600);
    let alpha = tb.connect("alpha", V5, persistent.clone());
    tb.subscribe(&alpha, "for/alpha", Q1);
    let beta = tb.connect("beta", V5, persistent.clone());
    tb.subscribe(&beta, "for/beta", Q1);
    tb.disconnect(&alpha);
    tb.disconnect(&beta);
    let publisher = tb.connect("p", V5, Opts::new());
    tb.send_all(
        &publisher,
        [
            publish("for/alpha", "A", Q1, 1),
            publish("for/beta", "B", Q1, 2),
        ],
    );

    let beta = tb.connect("beta", V5, persistent.clone());
    assert!(beta.connack.session_present);
    assert_eq!(payloads(&tb.recv(&beta)), ["B"]);
    let alpha = tb.connect("alpha", V5, persistent.clone());
    assert!(alpha.connack.session_present);
    assert_eq!(payloads(&tb.recv(&alpha)), ["A"]);
    let gamma = tb.connect("gamma", V5, persistent);
    assert!(!gamma.connack.session_present);
    tb.expect_silent(&gamma);
}

/// MQTT-3.1.3-5: client identifiers of 1 to 23 bytes drawn from 0-9, a-z and A-Z are accepted as
/// given (none is reassigned), each naming a session of its own.
#[test]
fn v5_mqtt_3_1_3_5() {
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
        let client = tb.connect(id, V5, Opts::new().expiry(60));
        assert!(!client.connack.session_present, "{id}");
        assert_eq!(
            client.connack.properties.assigned_client_identifier, None,
            "{id}"
        );
        tb.send(&client, Packet::PingReq);
        assert_eq!(tb.recv(&client), [Packet::PingResp], "{id}");
    }
    assert_eq!(tb.stats().sessions, ids.len() as u64);
    assert_eq!(tb.stats().clients_connected, ids.len() as u64);
}

/// MQTT-3.1.3-8: a client identifier the server rejects (here by the authentication hook) gets
/// CONNACK 0x85, and the connection is closed.
#[test]
fn v5_mqtt_3_1_3_8() {
    let mut tb = TestBroker::new();
    tb.broker.set_authenticator(Box::new(BanOneId));
    let (id, packets, closed) = tb.try_connect(connect_packet("banned", V5, &Opts::new()));
    let [Packet::ConnAck(connack)] = packets.as_slice() else {
        panic!("{packets:?}");
    };
    assert_eq!(connack.reason_code, ReasonCode::ClientIdentifierNotValid);
    assert!(closed);
    assert_eq!(tb.broker.poll_transmit(id), None);
    assert_eq!(tb.stats().sessions, 0);
    tb.connect("welcome", V5, Opts::new());
}

/// MQTT-3.1.4-1: a CONNECT that does not match the packet format (malformed, breaking a protocol
/// rule, or with an invalid Will Topic) closes the connection; no session is created.
#[test]
fn v5_mqtt_3_1_4_1() {
    let errors = [
        DecodeError::Malformed("reserved CONNECT flag set"),
        DecodeError::Protocol("duplicated property"),
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

/// MQTT-3.1.4-6: after refusing a CONNECT the server processes nothing else the client sends on
/// that connection: no PUBLISH is routed, no SUBSCRIBE or PINGREQ answered, no CONNACK repeated.
#[test]
fn v5_mqtt_3_1_4_6() {
    let mut tb = TestBroker::new();
    let watcher = tb.connect("w", V5, Opts::new());
    tb.subscribe(&watcher, "#", Q0);
    let id = tb.open();
    let refused = connect_with_auth_method("c", &Opts::new());
    tb.send_to(id, V5, Packet::Connect(Box::new(refused)));
    tb.send_to(id, V5, publish("t", "x", Q1, 1));
    tb.send_to(id, V5, subscribe(2, &[("t", Q0)]));
    tb.send_to(id, V5, Packet::PingReq);
    let valid = connect_packet("c", V5, &Opts::new());
    tb.send_to(id, V5, Packet::Connect(Box::new(valid)));

    let written = transmits(&mut tb, id);
    let [Sent::Packet(Packet::ConnAck(connack)), Sent::Close] = written.as_slice() else {
        panic!("{written:?}");
    };
    assert_eq!(connack.reason_code, ReasonCode::BadAuthenticationMethod);
    tb.expect_silent(&watcher);
    assert_eq!(tb.stats().publish_received, 0);
    assert_eq!(tb.stats().subscriptions, 1, "only the watcher's");
    assert_eq!(tb.stats().clients_connected, 1, "only the watcher");
}

/// MQTT-3.2.0-2: a connection gets one CONNACK at most: a second CONNECT after an accepted one
/// gets DISCONNECT, and one after a refused CONNECT gets nothing.
#[test]
fn v5_mqtt_3_2_0_2() {
    let mut tb = TestBroker::new();
    let client = tb.connect("c", V5, Opts::new());
    tb.send(
        &client,
        Packet::Connect(Box::new(connect_packet("c", V5, &Opts::new()))),
    );
    assert_eq!(
        tb.expect_closed(&client),
        [disconnect(ReasonCode::ProtocolError)]
    );

    let id = tb.open();
    let refused = connect_with_auth_method("d", &Opts::new());
    tb.send_to(id, V5, Packet::Connect(Box::new(refused)));
    let valid = connect_packet("d", V5, &Opts::new());
    tb.send_to(id, V5, Packet::Connect(Box::new(valid)));
    let written = transmits(&mut tb, id);
    let connacks = written
        .iter()
        .filter(|t| matches!(t, Sent::Packet(Packet::ConnAck(_))))
        .count();
    assert_eq!(connacks, 1, "{written:?}");
    assert_eq!(written.last(), Some(&Sent::Close));
}

/// MQTT-3.2.2-6: a CONNACK with a non-zero Reason Code has Session Present 0, even when a session
/// is stored for the client identifier.
#[test]
fn v5_mqtt_3_2_2_6() {
    let mut tb = TestBroker::with_limits(Limits {
        qos_max: Q1,
        ..Limits::default()
    });
    let persistent = Opts::new().resume().expiry(600);
    let client = tb.connect("c", V5, persistent.clone());
    tb.subscribe(&client, "t", Q1);
    tb.disconnect(&client);

    let refusals = [
        connect_packet("c", V5, &persistent.clone().will(will("w", "x", Q2, false))),
        connect_with_auth_method("c", &persistent),
    ];
    for refused in refusals {
        let (_, packets, closed) = tb.try_connect(refused);
        assert!(closed);
        let [Packet::ConnAck(connack)] = packets.as_slice() else {
            panic!("{packets:?}");
        };
        assert_ne!(connack.reason_code, ReasonCode::Success);
        assert!(!connack.session_present, "{connack:?}");
    }
    let client = tb.connect("c", V5, persistent);
    assert!(client.connack.session_present, "the session was there");
}

/// MQTT-3.2.2-10: a server that accepts only QoS 0 publishes still accepts SUBSCRIBE asking for
/// QoS 0, 1 or 2 (granting QoS 0) and delivers on each subscription.
#[test]
fn v5_mqtt_3_2_2_10() {
    let mut tb = TestBroker::with_limits(Limits {
        qos_max: Q0,
        ..Limits::default()
    });
    let client = tb.connect("c", V5, Opts::new());
    assert_eq!(client.connack.properties.maximum_qos, Some(Q0));
    tb.send(&client, subscribe(1, &[("a", Q0), ("b", Q1), ("c", Q2)]));
    assert_eq!(tb.recv(&client), [suback(1, &[granted(Q0); 3])]);
    let publisher = tb.connect("p", V5, Opts::new());
    for topic_name in ["a", "b", "c"] {
        tb.send(&publisher, publish(topic_name, topic_name, Q0, 0));
    }
    assert_eq!(payloads(&tb.recv(&client)), ["a", "b", "c"]);
}

/// MQTT-3.2.2-19 and MQTT-3.2.2-20: CONNACK, accepting or refusing, carries no Reason String and
/// no User Properties, so neither can push it over the client's Maximum Packet Size.
#[test]
fn v5_mqtt_3_2_2_19() {
    let mut tb = TestBroker::with_limits(Limits {
        qos_max: Q1,
        ..Limits::default()
    });
    let small = Opts::new().max_packet_size(SMALL_PACKET_SIZE);
    let accepted = tb.connect("c", V5, small.clone());
    assert_no_diagnostics(&Packet::ConnAck(Box::new(accepted.connack)));
    let refusals = [
        connect_packet("d", V5, &small.clone().will(will("w", "x", Q2, false))),
        connect_with_auth_method("d", &small),
    ];
    for refused in refusals {
        let (_, packets, _) = tb.try_connect(refused);
        let [connack] = packets.as_slice() else {
            panic!("{packets:?}");
        };
        assert!(encode(connack, V5).len() <= SMALL_PACKET_SIZE as usize);
        assert_no_diagnostics(connack);
    }
}

/// MQTT-3.3.2-3: every PUBLISH the server sends carries a Topic Name matching the filter of the
/// subscription it was sent for (for a shared subscription, the filter after the share name).
#[test]
fn v5_mqtt_3_3_2_3() {
    // (filter subscribed to, filter the delivered topic must match)
    let filters = [
        ("a/+/c", "a/+/c"),
        ("a/#", "a/#"),
        ("+", "+"),
        ("#", "#"),
        ("+/+", "+/+"),
        ("/+", "/+"),
        ("$share/g/a/+", "a/+"),
    ];
    let topics = [
        "a", "a/b", "a/b/c", "a/x/c", "b", "a/b/c/d", "/a", "a/", "x/y",
    ];
    let mut tb = TestBroker::new();
    let subscribers: Vec<TestClient> = filters
        .iter()
        .enumerate()
        .map(|(n, (filter_text, _))| {
            let client = tb.connect(&format!("s{n}"), V5, Opts::new());
            tb.subscribe(&client, filter_text, Q0);
            client
        })
        .collect();
    let publisher = tb.connect("p", V5, Opts::new());
    for topic_name in topics {
        tb.send(&publisher, publish(topic_name, topic_name, Q0, 0));
    }
    for ((_, matching), subscriber) in filters.iter().zip(&subscribers) {
        let packets = tb.recv(subscriber);
        let delivered: Vec<&str> = publishes(&packets)
            .iter()
            .map(|p| p.topic.as_str())
            .collect();
        let expected: Vec<&str> = topics
            .iter()
            .copied()
            .filter(|t| filter_matches(matching, t))
            .collect();
        assert_eq!(delivered, expected, "filter {matching}");
        assert_eq!(payloads(&packets), expected, "filter {matching}");
    }
}

/// MQTT-3.3.2-12: every Topic Alias from 1 up to the Topic Alias Maximum the server announced is
/// accepted, both to set a mapping and to use it.
#[test]
fn v5_mqtt_3_3_2_12() {
    let mut tb = TestBroker::with_limits(Limits {
        topic_alias_max: 5,
        ..Limits::default()
    });
    let subscriber = tb.connect("s", V5, Opts::new());
    tb.subscribe(&subscriber, "#", Q0);
    let publisher = tb.connect("p", V5, Opts::new());
    assert_eq!(publisher.connack.properties.topic_alias_maximum, Some(5));
    let with_alias =
        |alias| move |p: &mut tern_codec::Publish| p.properties.topic_alias = Some(alias);
    for alias in 1..=5u16 {
        let name = format!("alias/{alias}");
        tb.send(
            &publisher,
            publish_with(&name, "set", Q0, 0, with_alias(alias)),
        );
    }
    for alias in 1..=5u16 {
        tb.send(
            &publisher,
            publish_with("", "use", Q0, 0, with_alias(alias)),
        );
    }
    tb.expect_silent(&publisher);
    let packets = tb.recv(&subscriber);
    let topics: Vec<&str> = publishes(&packets)
        .iter()
        .map(|p| p.topic.as_str())
        .collect();
    let expected: Vec<String> = (1..=5).chain(1..=5).map(|n| format!("alias/{n}")).collect();
    assert_eq!(topics, expected);
}

/// MQTT-3.3.4-1: the server answers a QoS 0 PUBLISH with nothing, QoS 1 with PUBACK and QoS 2
/// with PUBREC (and the PUBREL that follows with PUBCOMP).
#[test]
fn v5_mqtt_3_3_4_1() {
    let mut tb = TestBroker::new();
    let subscriber = tb.connect("s", V5, Opts::new());
    tb.subscribe(&subscriber, "t", Q0);
    let client = tb.connect("c", V5, Opts::new());
    tb.send(&client, publish("t", "0", Q0, 0));
    tb.expect_silent(&client);
    tb.send(&client, publish("t", "1", Q1, 7));
    assert_eq!(tb.recv(&client), [puback(7)]);
    tb.send(&client, publish("t", "2", Q2, 8));
    assert_eq!(tb.recv(&client), [pubrec(8)]);
    tb.send(&client, pubrel(8));
    assert_eq!(tb.recv(&client), [pubcomp(8)]);
}

/// MQTT-3.3.4-6: a Subscription Identifier that a client wrongly puts on its PUBLISH is not passed
/// on: each subscriber sees only the identifiers of its own subscriptions.
#[test]
fn v5_mqtt_3_3_4_6() {
    let mut tb = TestBroker::new();
    let with_id = tb.connect("with", V5, Opts::new());
    tb.send(&with_id, subscribe_with(1, &[("t", opts(Q0))], Some(3)));
    tb.recv(&with_id);
    let without_id = tb.connect("without", V5, Opts::new());
    tb.subscribe(&without_id, "t", Q0);
    let publisher = tb.connect("p", V5, Opts::new());
    tb.send(
        &publisher,
        publish_with("t", "x", Q0, 0, |p| {
            p.properties.subscription_identifiers =
                SubscriptionIds::from_ids([7]).expect("in range");
        }),
    );
    assert_eq!(sub_ids(publishes(&tb.recv(&with_id))[0]), [3]);
    assert_eq!(tb.recv(&without_id), [publish("t", "x", Q0, 0)]);
}

/// MQTT-3.4.2-2 and MQTT-3.4.2-3: the server's PUBACK, success or not, carries no Reason String
/// and no User Properties, so neither can push it over the client's Maximum Packet Size.
#[test]
fn v5_mqtt_3_4_2_2() {
    let mut tb = TestBroker::new();
    let client = small_client(&mut tb, "c");
    tb.subscribe(&client, "t", Q0);
    tb.send(&client, publish("nobody", "x", Q1, 1));
    tb.send(&client, publish("t", "x", Q1, 2));
    let packets = tb.recv(&client);
    let acks: Vec<&Packet> = packets
        .iter()
        .filter(|p| matches!(p, Packet::PubAck(_)))
        .collect();
    assert_eq!(
        acks,
        [
            &Packet::PubAck(ack(1, ReasonCode::NoMatchingSubscribers)),
            &puback(2)
        ]
    );
    acks.into_iter().for_each(assert_no_diagnostics);
}

/// MQTT-3.5.2-2 and MQTT-3.5.2-3: the server's PUBREC, success or not, carries no Reason String
/// and no User Properties, so neither can push it over the client's Maximum Packet Size.
#[test]
fn v5_mqtt_3_5_2_2() {
    let mut tb = TestBroker::new();
    let client = small_client(&mut tb, "c");
    tb.subscribe(&client, "t", Q0);
    tb.send(&client, publish("nobody", "x", Q2, 1));
    tb.send(&client, publish("t", "x", Q2, 2));
    let packets = tb.recv(&client);
    let acks: Vec<&Packet> = packets
        .iter()
        .filter(|p| matches!(p, Packet::PubRec(_)))
        .collect();
    assert_eq!(acks, [&pubrec(1), &pubrec(2)]);
    acks.into_iter().for_each(assert_no_diagnostics);
}

/// MQTT-3.6.2-2 and MQTT-3.6.2-3: the server's PUBREL, success or not, carries no Reason String
/// and no User Properties, so neither can push it over the client's Maximum Packet Size.
#[test]
fn v5_mqtt_3_6_2_2() {
    let mut tb = TestBroker::new();
    let client = small_client(&mut tb, "c");
    tb.subscribe(&client, "t", Q2);
    let publisher = tb.connect("p", V5, Opts::new());
    tb.send(&publisher, publish("t", "x", Q2, 1));
    let id = packet_id(&tb.recv(&client)[0]);
    tb.send(&client, pubrec(id));
    tb.send(&client, pubrec(id + 100));
    let packets = tb.recv(&client);
    assert_eq!(
        packets,
        [
            pubrel(id),
            Packet::PubRel(ack(id + 100, ReasonCode::PacketIdentifierNotFound))
        ]
    );
    packets.iter().for_each(assert_no_diagnostics);
}

/// MQTT-3.7.2-2 and MQTT-3.7.2-3: the server's PUBCOMP, success or not, carries no Reason String
/// and no User Properties, so neither can push it over the client's Maximum Packet Size.
#[test]
fn v5_mqtt_3_7_2_2() {
    let mut tb = TestBroker::new();
    let client = small_client(&mut tb, "c");
    tb.send(&client, publish("t", "x", Q2, 1));
    assert_eq!(tb.recv(&client).len(), 1, "PUBREC");
    tb.send_all(&client, [pubrel(1), pubrel(2)]);
    let packets = tb.recv(&client);
    assert_eq!(packets, [pubcomp(1), pubcomp(2)]);
    packets.iter().for_each(assert_no_diagnostics);
}

/// MQTT-3.8.4-4: SUBSCRIBE replacing a subscription with Retain Handling 0 sends the retained
/// message again, and no message already on its way to the client is lost.
#[test]
fn v5_mqtt_3_8_4_4() {
    let mut tb = TestBroker::new();
    let publisher = tb.connect("p", V5, Opts::new());
    tb.send(&publisher, retained("t", "kept", Q1, 1));
    let client = tb.connect("c", V5, Opts::new().receive_maximum(1));
    let rh0 = [("t", opts_rh(Q1, SendAtSubscribe))];
    tb.send(&client, subscribe_with(1, &rh0, None));
    let mut packets = tb.recv(&client);
    assert_eq!(packets[0], suback(1, &[granted(Q1)]));
    packets.remove(0);
    tb.send_all(
        &publisher,
        [publish("t", "m1", Q1, 2), publish("t", "m2", Q1, 3)],
    );
    tb.send(&client, subscribe_with(2, &rh0, None));
    assert_eq!(tb.recv(&client), [suback(2, &[granted(Q1)])]);
    assert_eq!(tb.stats().subscriptions, 1);

    let mut got = Vec::new();
    while let Some(packet) = packets.first() {
        let Packet::Publish(publish) = packet else {
            panic!("{packet:?}");
        };
        got.push((
            payloads(std::slice::from_ref(packet)).concat(),
            publish.retain,
        ));
        tb.send(&client, puback(packet_id(packet)));
        packets = tb.recv(&client);
    }
    let expected = [("kept", true), ("m1", false), ("m2", false), ("kept", true)];
    assert_eq!(got, expected.map(|(p, r)| (p.to_owned(), r)));
}

/// MQTT-3.8.4-5: a SUBSCRIBE with several filters acts as that many SUBSCRIBE packets answered by
/// one SUBACK; a message matching two of its filters is still delivered once.
#[test]
fn v5_mqtt_3_8_4_5() {
    let mut tb = TestBroker::new();
    let client = tb.connect("c", V5, Opts::new());
    tb.send(
        &client,
        subscribe(9, &[("x/#", Q1), ("x/y", Q0), ("z", Q0)]),
    );
    assert_eq!(
        tb.recv(&client),
        [suback(9, &[granted(Q1), granted(Q0), granted(Q0)])]
    );
    assert_eq!(tb.stats().subscriptions, 3);
    let publisher = tb.connect("p", V5, Opts::new());
    tb.send_all(
        &publisher,
        [publish("x/y", "1", Q1, 1), publish("z", "2", Q1, 2)],
    );
    assert_eq!(
        tb.recv(&client),
        [publish("x/y", "1", Q1, 1), publish("z", "2", Q0, 0)]
    );
}

/// MQTT-3.9.2-1 and MQTT-3.9.2-2: the server's SUBACK, granting or failing, carries no Reason
/// String and no User Properties, so neither can push it over the client's Maximum Packet Size.
#[test]
fn v5_mqtt_3_9_2_1() {
    let mut tb = TestBroker::with_limits(Limits {
        subscriptions_per_session_max: 1,
        topic_levels_max: 2,
        ..Limits::default()
    });
    let client = small_client(&mut tb, "c");
    tb.send(
        &client,
        subscribe(1, &[("a", Q1), ("b", Q0), ("c/d/e", Q0)]),
    );
    let packets = tb.recv(&client);
    let codes = [
        ReasonCode::GrantedQos1,
        ReasonCode::QuotaExceeded,
        ReasonCode::TopicFilterInvalid,
    ];
    assert_eq!(packets, [suback(1, &codes)]);
    assert_no_diagnostics(&packets[0]);
}

/// MQTT-3.10.4-1: UNSUBSCRIBE filters are compared character by character with the client's
/// filters: only an identical one is deleted, wildcards and case notwithstanding.
#[test]
fn v5_mqtt_3_10_4_1() {
    let mut tb = TestBroker::new();
    let client = tb.connect("c", V5, Opts::new());
    tb.subscribe(&client, "a/+", Q0);
    tb.subscribe(&client, "a/b", Q1);
    tb.subscribe(&client, "A/B", Q0);
    tb.send(
        &client,
        unsubscribe(5, &["a/#", "a/b/", "+/b", "a/B", "a/b"]),
    );
    let none = ReasonCode::NoSubscriptionExisted;
    assert_eq!(
        tb.recv(&client),
        [unsuback(5, &[none, none, none, none, ReasonCode::Success])]
    );
    assert_eq!(tb.stats().subscriptions, 2);
    let publisher = tb.connect("p", V5, Opts::new());
    // Only "a/+" (granted QoS 0) still matches "a/b": "a/b" (QoS 1) is gone.
    tb.send(&publisher, publish("a/b", "x", Q1, 1));
    tb.send(&publisher, publish("A/B", "y", Q0, 0));
    assert_eq!(
        tb.recv(&client),
        [publish("a/b", "x", Q0, 0), publish("A/B", "y", Q0, 0)]
    );
}

/// MQTT-3.11.2-1 and MQTT-3.11.2-2: the server's UNSUBACK carries no Reason String and no User
/// Properties, so neither can push it over the client's Maximum Packet Size.
#[test]
fn v5_mqtt_3_11_2_1() {
    let mut tb = TestBroker::new();
    let client = small_client(&mut tb, "c");
    tb.subscribe(&client, "a", Q0);
    tb.send(&client, unsubscribe(1, &["a", "b"]));
    let packets = tb.recv(&client);
    let codes = [ReasonCode::Success, ReasonCode::NoSubscriptionExisted];
    assert_eq!(packets, [unsuback(1, &codes)]);
    assert_no_diagnostics(&packets[0]);
}

/// MQTT-3.14.2-2: no DISCONNECT the server sends carries a Session Expiry Interval, even to a
/// client whose session outlives the connection.
#[test]
fn v5_mqtt_3_14_2_2() {
    let disconnects = server_disconnects(&Opts::new().resume().expiry(600));
    assert_eq!(disconnects.len(), 5);
    for disconnect in disconnects {
        assert_eq!(
            disconnect.properties.session_expiry_interval, None,
            "{disconnect:?}"
        );
    }
}

/// MQTT-3.14.2-3 and MQTT-3.14.2-4: the server's DISCONNECT carries no Reason String and no User
/// Properties, so neither can push it over the client's Maximum Packet Size.
#[test]
fn v5_mqtt_3_14_2_3() {
    let disconnects = server_disconnects(&Opts::new().max_packet_size(SMALL_PACKET_SIZE));
    assert_eq!(disconnects.len(), 5);
    for disconnect in disconnects {
        assert_no_diagnostics(&Packet::Disconnect(disconnect));
    }
}

/// MQTT-3.14.4-1: after its DISCONNECT the server writes nothing more on the connection, though
/// messages for the client keep arriving and the client keeps sending.
#[test]
fn v5_mqtt_3_14_4_1() {
    let mut tb = TestBroker::new();
    let client = tb.connect("c", V5, Opts::new().resume().expiry(600));
    tb.subscribe(&client, "t", Q1);
    let publisher = tb.connect("p", V5, Opts::new());
    tb.send(&client, Packet::PingResp);
    tb.send(&publisher, publish("t", "late", Q1, 1));
    tb.send(&publisher, publish("t", "later", Q0, 0));
    tb.send(&client, Packet::PingReq);
    tb.send(&client, publish("t", "own", Q1, 2));
    let written = transmits(&mut tb, client.id);
    assert_eq!(
        written,
        [
            Sent::Packet(disconnect(ReasonCode::ProtocolError)),
            Sent::Close
        ]
    );
    assert_eq!(tb.broker.poll_transmit(client.id), None);
}

/// MQTT-3.14.4-2: each time the server sends DISCONNECT it closes the connection after it.
#[test]
fn v5_mqtt_3_14_4_2() {
    // `server_disconnects` checks that every DISCONNECT is followed by the close.
    let codes: Vec<ReasonCode> = server_disconnects(&Opts::new())
        .iter()
        .map(|d| d.reason_code)
        .collect();
    assert_eq!(
        codes,
        [
            ReasonCode::ProtocolError,
            ReasonCode::MalformedPacket,
            ReasonCode::KeepAliveTimeout,
            ReasonCode::SessionTakenOver,
            ReasonCode::ServerShuttingDown,
        ]
    );
}

/// MQTT-3.15.2-2 and MQTT-3.15.2-3: the server's AUTH packets (challenge, re-authentication
/// success) carry no Reason String and no User Properties, so neither can push them over the
/// client's Maximum Packet Size.
#[test]
fn v5_mqtt_3_15_2_2() {
    let mut tb = challenge_broker();
    // Room for the CONNACK (its limits, method and final data: 43 bytes) and for the AUTH
    // packets' method and data, and no more.
    let limit = 43;
    let small = Opts::new().max_packet_size(limit);
    let id = begin_challenge(&mut tb, "c", &small);
    let answer = auth(
        ReasonCode::ContinueAuthentication,
        METHOD,
        Some(b"nonce-signed"),
    );
    tb.send_to(id, V5, answer);
    assert!(accepted(&transmits(&mut tb, id)));
    tb.send_to(
        id,
        V5,
        auth(ReasonCode::ReAuthenticate, METHOD, Some(b"nonce-signed")),
    );
    let written = transmits(&mut tb, id);
    let [Sent::Packet(success)] = written.as_slice() else {
        panic!("{written:?}");
    };
    let challenge = auth(ReasonCode::ContinueAuthentication, METHOD, Some(b"nonce"));
    for packet in [&challenge, success] {
        assert!(matches!(packet, Packet::Auth(_)), "{packet:?}");
        assert!(encode(packet, V5).len() <= limit as usize);
        assert_no_diagnostics(packet);
    }
}

/// MQTT-4.1.0-1: a session is kept whole while its connection is open, however long that is and
/// however short its Session Expiry Interval: subscriptions, unacknowledged messages both ways.
#[test]
fn v5_mqtt_4_1_0_1() {
    let mut tb = TestBroker::new();
    let client = tb.connect("c", V5, Opts::new().resume().expiry(5));
    tb.subscribe(&client, "t", Q1);
    let publisher = tb.connect("p", V5, Opts::new());
    tb.send(&publisher, publish("t", "first", Q1, 1));
    let first = packet_id(&tb.recv(&client)[0]);
    tb.send(&client, publish("out", "x", Q2, 3));
    assert_eq!(tb.recv(&client), [pubrec(3)]);

    tb.advance_secs(3600);
    assert_eq!(tb.stats().sessions, 2);
    // The QoS 2 exchange is still known (0x92 would mean it was forgotten).
    tb.send(&client, pubrel(3));
    assert_eq!(tb.recv(&client), [pubcomp(3)]);
    tb.send(&client, puback(first));
    tb.send(&publisher, publish("t", "second", Q1, 2));
    assert_eq!(payloads(&tb.recv(&client)), ["second"]);
}

/// MQTT-4.3.2-3: a QoS 1 PUBLISH the server sent stays unacknowledged until its PUBACK: other
/// acknowledgements do not free its place in the window, and it is resent after a reconnect.
#[test]
fn v5_mqtt_4_3_2_3() {
    let mut tb = TestBroker::new();
    let persistent = Opts::new().resume().expiry(600).receive_maximum(1);
    let subscriber = tb.connect("s", V5, persistent.clone());
    tb.subscribe(&subscriber, "t", Q1);
    let publisher = tb.connect("p", V5, Opts::new());
    tb.send_all(
        &publisher,
        [publish("t", "a", Q1, 1), publish("t", "b", Q1, 2)],
    );
    let a = packet_id(&tb.recv(&subscriber)[0]);
    tb.send(&subscriber, pubcomp(a));
    tb.expect_silent(&subscriber);

    tb.lose(&subscriber);
    let subscriber = tb.connect("s", V5, persistent);
    assert_eq!(
        tb.recv(&subscriber),
        [publish_with("t", "a", Q1, a, |p| p.dup = true)]
    );
    tb.send(&subscriber, puback(a));
    assert_eq!(payloads(&tb.recv(&subscriber)), ["b"]);
}

/// MQTT-4.3.2-5: after its PUBACK the server takes a PUBLISH reusing the identifier as a new
/// message, whatever its DUP flag.
#[test]
fn v5_mqtt_4_3_2_5() {
    let mut tb = TestBroker::new();
    let subscriber = tb.connect("s", V5, Opts::new());
    tb.subscribe(&subscriber, "t", Q0);
    let publisher = tb.connect("p", V5, Opts::new());
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

/// MQTT-4.3.3-3: a QoS 2 PUBLISH the server sent stays unacknowledged until its PUBREC: a PUBACK
/// does not free its place in the window, and it is resent after a reconnect.
#[test]
fn v5_mqtt_4_3_3_3() {
    let mut tb = TestBroker::new();
    let persistent = Opts::new().resume().expiry(600).receive_maximum(1);
    let subscriber = tb.connect("s", V5, persistent.clone());
    tb.subscribe(&subscriber, "t", Q2);
    let publisher = tb.connect("p", V5, Opts::new());
    tb.send_all(
        &publisher,
        [publish("t", "a", Q2, 1), publish("t", "b", Q2, 2)],
    );
    let a = packet_id(&tb.recv(&subscriber)[0]);
    tb.send(&subscriber, puback(a));
    tb.expect_silent(&subscriber);

    tb.lose(&subscriber);
    let subscriber = tb.connect("s", V5, persistent);
    assert_eq!(
        tb.recv(&subscriber),
        [publish_with("t", "a", Q2, a, |p| p.dup = true)]
    );
    tb.send(&subscriber, pubrec(a));
    assert_eq!(tb.recv(&subscriber), [pubrel(a)]);
    tb.send(&subscriber, pubcomp(a));
    assert_eq!(payloads(&tb.recv(&subscriber)), ["b"]);
}

/// MQTT-4.3.3-7: once the server has sent a QoS 2 PUBLISH, its Message Expiry no longer applies:
/// the exchange is resumed after the message expired, PUBLISH and then PUBREL.
#[test]
fn v5_mqtt_4_3_3_7() {
    let mut tb = TestBroker::new();
    let persistent = Opts::new().resume().expiry(600);
    let subscriber = tb.connect("s", V5, persistent.clone());
    tb.subscribe(&subscriber, "t", Q2);
    let publisher = tb.connect("p", V5, Opts::new());
    tb.send(
        &publisher,
        publish_with("t", "x", Q2, 1, |p| {
            p.properties.message_expiry_interval = Some(5);
        }),
    );
    let id = packet_id(&tb.recv(&subscriber)[0]);
    tb.lose(&subscriber);
    tb.advance_secs(60);

    let subscriber = tb.connect("s", V5, persistent.clone());
    let packets = tb.recv(&subscriber);
    let [Packet::Publish(resent)] = packets.as_slice() else {
        panic!("{packets:?}");
    };
    assert_eq!((resent.packet_id, resent.dup), (Some(pid(id)), true));
    assert_eq!(&resent.payload[..], b"x");
    tb.send(&subscriber, pubrec(id));
    assert_eq!(tb.recv(&subscriber), [pubrel(id)]);
    tb.lose(&subscriber);
    tb.advance_secs(60);
    let subscriber = tb.connect("s", V5, persistent);
    assert_eq!(tb.recv(&subscriber), [pubrel(id)]);
    tb.send(&subscriber, pubcomp(id));
    tb.expect_silent(&subscriber);
}

/// MQTT-4.3.3-13: as a QoS 2 receiver the server completes the exchange after the message has
/// expired: a resent PUBLISH gets PUBREC (and is not delivered again), PUBREL gets PUBCOMP 0x00.
#[test]
fn v5_mqtt_4_3_3_13() {
    let mut tb = TestBroker::new();
    let subscriber = tb.connect("s", V5, Opts::new());
    tb.subscribe(&subscriber, "t", Q0);
    let publisher = tb.connect("p", V5, Opts::new());
    let expiring = |dup| {
        move |p: &mut tern_codec::Publish| {
            p.dup = dup;
            p.properties.message_expiry_interval = Some(1);
        }
    };
    tb.send(&publisher, publish_with("t", "x", Q2, 4, expiring(false)));
    assert_eq!(tb.recv(&publisher), [pubrec(4)]);
    tb.advance_secs(10);
    tb.send(&publisher, publish_with("t", "x", Q2, 4, expiring(true)));
    assert_eq!(tb.recv(&publisher), [pubrec(4)]);
    tb.send(&publisher, pubrel(4));
    assert_eq!(tb.recv(&publisher), [pubcomp(4)]);
    assert_eq!(payloads(&tb.recv(&subscriber)), ["x"]);
}

/// MQTT-4.4.0-1: the server resends unacknowledged PUBLISH packets (original identifiers) only
/// when a reconnect with Clean Start 0 resumes the session: not while the connection lasts, and
/// not after Clean Start 1.
#[test]
fn v5_mqtt_4_4_0_1() {
    let mut tb = TestBroker::new();
    let persistent = Opts::new().resume().expiry(600);
    let subscriber = tb.connect("s", V5, persistent.clone());
    tb.subscribe(&subscriber, "t", Q1);
    let publisher = tb.connect("p", V5, Opts::new());
    tb.send(&publisher, publish("t", "a", Q1, 1));
    let a = packet_id(&tb.recv(&subscriber)[0]);
    tb.advance_secs(3600);
    tb.send(&subscriber, Packet::PingReq);
    assert_eq!(tb.recv(&subscriber), [Packet::PingResp]);

    tb.lose(&subscriber);
    let subscriber = tb.connect("s", V5, persistent);
    assert_eq!(
        tb.recv(&subscriber),
        [publish_with("t", "a", Q1, a, |p| p.dup = true)]
    );
    tb.lose(&subscriber);
    let subscriber = tb.connect("s", V5, Opts::new().expiry(600));
    assert!(!subscriber.connack.session_present);
    tb.expect_silent(&subscriber);
}

/// MQTT-4.4.0-2: a PUBLISH the client answered with a PUBACK or PUBREC of 0x80 or more counts as
/// acknowledged and is never sent again, not even after a reconnect.
#[test]
fn v5_mqtt_4_4_0_2() {
    let mut tb = TestBroker::new();
    let persistent = Opts::new().resume().expiry(600);
    let subscriber = tb.connect("s", V5, persistent.clone());
    tb.subscribe(&subscriber, "t", Q2);
    let publisher = tb.connect("p", V5, Opts::new());
    tb.send_all(
        &publisher,
        [publish("t", "a", Q1, 1), publish("t", "b", Q2, 2)],
    );
    let packets = tb.recv(&subscriber);
    assert_eq!(payloads(&packets), ["a", "b"]);
    tb.send_all(
        &subscriber,
        [
            Packet::PubAck(ack(packet_id(&packets[0]), ReasonCode::UnspecifiedError)),
            Packet::PubRec(ack(packet_id(&packets[1]), ReasonCode::QuotaExceeded)),
        ],
    );
    tb.expect_silent(&subscriber);
    tb.lose(&subscriber);
    let subscriber = tb.connect("s", V5, persistent);
    assert!(subscriber.connack.session_present);
    tb.expect_silent(&subscriber);
}

/// MQTT-4.5.0-1: an accepted message joins the session of every client with a matching
/// subscription, connected or not, and no other.
#[test]
fn v5_mqtt_4_5_0_1() {
    let mut tb = TestBroker::new();
    let online = tb.connect("online", V5, Opts::new());
    tb.subscribe(&online, "a/b", Q1);
    let persistent = Opts::new().resume().expiry(600);
    let offline = tb.connect("offline", V5, persistent.clone());
    tb.subscribe(&offline, "a/+", Q1);
    tb.disconnect(&offline);
    let other = tb.connect("other", V5, Opts::new());
    tb.subscribe(&other, "a/c", Q1);
    let publisher = tb.connect("p", V5, Opts::new());
    tb.send(&publisher, publish("a/b", "m", Q1, 1));
    assert_eq!(tb.recv(&publisher), [puback(1)]);

    assert_eq!(tb.recv(&online), [publish("a/b", "m", Q1, 1)]);
    tb.expect_silent(&other);
    let offline = tb.connect("offline", V5, persistent);
    assert_eq!(tb.recv(&offline), [publish("a/b", "m", Q1, 1)]);
}

/// MQTT-4.7.3-4: matching compares topic names and filters exactly as sent: no case folding,
/// Unicode normalisation, slash trimming or character substitution, and the delivered topic is
/// unchanged.
#[test]
fn v5_mqtt_4_7_3_4() {
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
    let publisher = tb.connect("p", V5, Opts::new());
    for (n, (filter_text, other)) in cases.iter().enumerate() {
        let subscriber = tb.connect(&format!("s{n}"), V5, Opts::new());
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

/// MQTT-4.8.2-4: when the connection of the member chosen for a shared QoS 2 message breaks
/// before the delivery completes, the delivery is completed with that client when it
/// reconnects, not handed to another member.
#[test]
fn v5_mqtt_4_8_2_4() {
    let mut tb = TestBroker::new();
    let (first, second, publisher) = shared_pair(&mut tb, Q2, [600, 600]);
    tb.send(&publisher, publish("t", "x", Q2, 1));
    let packets = tb.recv(&first);
    let id = packet_id(&packets[0]);
    assert_eq!(packets, [publish("t", "x", Q2, id)]);
    tb.expect_silent(&second);

    tb.lose(&first);
    let first = tb.connect("m1", V5, Opts::new().resume().expiry(600));
    assert_eq!(
        tb.recv(&first),
        [publish_with("t", "x", Q2, id, |p| p.dup = true)]
    );
    tb.send(&first, pubrec(id));
    assert_eq!(tb.recv(&first), [pubrel(id)]);
    tb.lose(&first);
    let first = tb.connect("m1", V5, Opts::new().resume().expiry(600));
    assert_eq!(tb.recv(&first), [pubrel(id)]);
    tb.send(&first, pubcomp(id));
    tb.expect_silent(&first);
    tb.expect_silent(&second);
}

/// MQTT-4.8.2-5: when the session of the chosen member ends before it reconnects, its shared
/// message is not sent to another member.
#[test]
fn v5_mqtt_4_8_2_5() {
    let mut tb = TestBroker::new();
    let (first, second, publisher) = shared_pair(&mut tb, Q2, [5, 600]);
    tb.send(&publisher, publish("t", "x", Q2, 1));
    assert_eq!(payloads(&tb.recv(&first)), ["x"]);
    tb.lose(&first);
    tb.advance_secs(6);
    assert_eq!(tb.stats().sessions, 2, "m1's session ended");
    tb.expect_silent(&second);
    // The group still works: new messages go to the remaining member.
    tb.send(&publisher, publish("t", "y", Q2, 2));
    assert_eq!(payloads(&tb.recv(&second)), ["y"]);
}

/// MQTT-4.8.2-6: a shared message that the chosen member refuses with a PUBACK or PUBREC of 0x80
/// or more is discarded, not offered to another member.
#[test]
fn v5_mqtt_4_8_2_6() {
    for qos in [Q1, Q2] {
        let mut tb = TestBroker::new();
        let (first, second, publisher) = shared_pair(&mut tb, qos, [600, 600]);
        tb.send(&publisher, publish("t", "x", qos, 1));
        let packets = tb.recv(&first);
        assert_eq!(payloads(&packets), ["x"]);
        let refusal = ack(packet_id(&packets[0]), ReasonCode::UnspecifiedError);
        let refusal = if qos == Q1 {
            Packet::PubAck(refusal)
        } else {
            Packet::PubRec(refusal)
        };
        tb.send(&first, refusal);
        tb.expect_silent(&first);
        tb.expect_silent(&second);
    }
}

/// MQTT-4.12.0-3: the client's answer to the server's AUTH must carry 0x18 (Continue
/// authentication): with it the connection is accepted, with any other code it is closed
/// unaccepted.
#[test]
fn v5_mqtt_4_12_0_3() {
    for (code, accept) in [
        (ReasonCode::ContinueAuthentication, true),
        (ReasonCode::Success, false),
        (ReasonCode::ReAuthenticate, false),
    ] {
        let mut tb = challenge_broker();
        let id = begin_challenge(&mut tb, "c", &Opts::new());
        tb.send_to(id, V5, auth(code, METHOD, Some(b"nonce-signed")));
        let written = transmits(&mut tb, id);
        assert_eq!(accepted(&written), accept, "{code:?}: {written:?}");
        assert_eq!(written.last() == Some(&Sent::Close), !accept, "{code:?}");
    }
}

/// MQTT-4.12.0-4: the server can refuse authentication at the CONNECT or at any later AUTH; it
/// answers CONNACK with a code of 0x80 or more and closes the connection, creating no session.
#[test]
fn v5_mqtt_4_12_0_4() {
    // Refused at CONNECT: a method the authenticator does not know.
    let mut tb = challenge_broker();
    let mut connect = connect_packet("c", V5, &Opts::new());
    connect.properties.authentication_method = Some(mstr("OTHER"));
    let (_, packets, closed) = tb.try_connect(connect);
    assert!(closed);
    let [Packet::ConnAck(connack)] = packets.as_slice() else {
        panic!("{packets:?}");
    };
    assert_eq!(connack.reason_code, ReasonCode::BadAuthenticationMethod);
    // Refused after a round: a wrong answer to the challenge.
    let id = begin_challenge(&mut tb, "d", &Opts::new());
    tb.send_to(
        id,
        V5,
        auth(ReasonCode::ContinueAuthentication, METHOD, Some(b"forged")),
    );
    let written = transmits(&mut tb, id);
    let [Sent::Packet(Packet::ConnAck(connack)), Sent::Close] = written.as_slice() else {
        panic!("{written:?}");
    };
    assert_eq!(connack.reason_code, ReasonCode::NotAuthorized);
    assert_eq!(tb.stats().sessions, 0);
    assert_eq!(tb.stats().clients_connected, 0);
}

/// MQTT-4.12.0-5: the server's AUTH and its Success CONNACK repeat the Authentication Method of
/// the CONNECT; a client AUTH naming another method ends the connection unaccepted.
#[test]
fn v5_mqtt_4_12_0_5() {
    let mut tb = challenge_broker();
    // `begin_challenge` checks the method of the server's AUTH.
    let id = begin_challenge(&mut tb, "c", &Opts::new());
    tb.send_to(
        id,
        V5,
        auth(
            ReasonCode::ContinueAuthentication,
            METHOD,
            Some(b"nonce-signed"),
        ),
    );
    let written = transmits(&mut tb, id);
    let [Sent::Packet(Packet::ConnAck(connack))] = written.as_slice() else {
        panic!("{written:?}");
    };
    assert_eq!(connack.reason_code, ReasonCode::Success);
    assert_eq!(connack.properties.authentication_method, Some(mstr(METHOD)));

    let id = begin_challenge(&mut tb, "d", &Opts::new());
    tb.send_to(
        id,
        V5,
        auth(
            ReasonCode::ContinueAuthentication,
            "OTHER",
            Some(b"nonce-signed"),
        ),
    );
    let written = transmits(&mut tb, id);
    assert!(!accepted(&written), "{written:?}");
    assert_eq!(written.last(), Some(&Sent::Close));
}

/// MQTT-4.12.0-6 and MQTT-4.12.0-7: a client that sent no Authentication Method gets no
/// Authentication Method in CONNACK and never an AUTH; an AUTH from it is a protocol error,
/// answered with DISCONNECT 0x82.
#[test]
fn v5_mqtt_4_12_0_6() {
    let mut tb = TestBroker::new();
    let client = tb.connect("c", V5, Opts::new());
    assert_eq!(client.connack.properties.authentication_method, None);
    assert_eq!(client.connack.properties.authentication_data, None);
    tb.send(&client, Packet::Auth(Auth::default()));
    assert_eq!(
        tb.expect_closed(&client),
        [disconnect(ReasonCode::ProtocolError)]
    );
}

/// MQTT-4.12.1-1: re-authentication must use the method the connection was authenticated with:
/// with it the server answers AUTH 0x00, with another method it closes the connection
/// (DISCONNECT 0x82).
#[test]
fn v5_mqtt_4_12_1_1() {
    let mut tb = challenge_broker();
    let id = begin_challenge(&mut tb, "c", &Opts::new());
    tb.send_to(
        id,
        V5,
        auth(
            ReasonCode::ContinueAuthentication,
            METHOD,
            Some(b"nonce-signed"),
        ),
    );
    assert!(accepted(&transmits(&mut tb, id)));
    tb.send_to(
        id,
        V5,
        auth(ReasonCode::ReAuthenticate, METHOD, Some(b"nonce-signed")),
    );
    assert_eq!(
        transmits(&mut tb, id),
        [Sent::Packet(auth(
            ReasonCode::Success,
            METHOD,
            Some(b"welcome")
        ))]
    );
    tb.send_to(
        id,
        V5,
        auth(ReasonCode::ReAuthenticate, "OTHER", Some(b"nonce-signed")),
    );
    assert_eq!(
        transmits(&mut tb, id),
        [
            Sent::Packet(disconnect(ReasonCode::ProtocolError)),
            Sent::Close
        ]
    );
}

/// MQTT-4.13.1-1: a Malformed Packet or a Protocol Error closes the connection, after a
/// DISCONNECT naming it.
#[test]
fn v5_mqtt_4_13_1_1() {
    type Breach = fn(&mut TestBroker, &TestClient);
    let cases: [(Breach, ReasonCode); 9] = [
        (
            |tb, c| tb.send_garbage(c, DecodeError::Malformed("bad")),
            ReasonCode::MalformedPacket,
        ),
        (
            |tb, c| tb.send_garbage(c, DecodeError::Protocol("bad")),
            ReasonCode::ProtocolError,
        ),
        (
            |tb, c| {
                tb.send(
                    c,
                    Packet::Connect(Box::new(connect_packet("c", V5, &Opts::new()))),
                )
            },
            ReasonCode::ProtocolError,
        ),
        (
            |tb, c| tb.send(c, Packet::Auth(Auth::default())),
            ReasonCode::ProtocolError,
        ),
        (
            |tb, c| tb.send(c, Packet::PingResp),
            ReasonCode::ProtocolError,
        ),
        (
            |tb, c| {
                tb.send(
                    c,
                    publish_with("", "x", Q0, 0, |p| p.properties.topic_alias = Some(1)),
                )
            },
            ReasonCode::ProtocolError,
        ),
        (
            |tb, c| {
                tb.send(
                    c,
                    disconnect_with_expiry(ReasonCode::NORMAL_DISCONNECTION, 60),
                )
            },
            ReasonCode::ProtocolError,
        ),
        (
            |tb, c| {
                tb.send(
                    c,
                    publish_with("t", "x", Q0, 0, |p| p.properties.topic_alias = Some(65)),
                )
            },
            ReasonCode::TopicAliasInvalid,
        ),
        (
            |tb, c| {
                let receive_maximum = tb.broker.config().limits.receive_maximum;
                for n in 1..=receive_maximum + 1 {
                    tb.send(c, publish("t", "x", Q2, n));
                }
            },
            ReasonCode::ReceiveMaximumExceeded,
        ),
    ];
    for (breach, code) in cases {
        let mut tb = TestBroker::new();
        let client = tb.connect("c", V5, Opts::new());
        breach(&mut tb, &client);
        let packets = tb.expect_closed(&client);
        assert_eq!(packets.last(), Some(&disconnect(code)));
        assert_eq!(tb.stats().protocol_errors, 1, "{code:?}");
    }
}

/// MQTT-4.13.2-1: a CONNACK or DISCONNECT with a Reason Code of 0x80 or more ends the connection,
/// whichever side sent it.
#[test]
fn v5_mqtt_4_13_2_1() {
    // CONNACK from the server.
    let mut tb = TestBroker::new();
    let id = tb.open();
    let refused = connect_with_auth_method("c", &Opts::new());
    tb.send_to(id, V5, Packet::Connect(Box::new(refused)));
    let written = transmits(&mut tb, id);
    let [Sent::Packet(Packet::ConnAck(connack)), Sent::Close] = written.as_slice() else {
        panic!("{written:?}");
    };
    assert!(!connack.reason_code.is_success());

    // DISCONNECT from the server.
    let codes: Vec<ReasonCode> = server_disconnects(&Opts::new())
        .iter()
        .map(|d| d.reason_code)
        .collect();
    assert!(codes.iter().all(|code| !code.is_success()), "{codes:?}");

    // DISCONNECT from the client: the server closes and processes nothing more.
    let mut tb = TestBroker::new();
    let watcher = tb.connect("w", V5, Opts::new());
    tb.subscribe(&watcher, "t", Q0);
    let client = tb.connect("c", V5, Opts::new());
    tb.send(&client, disconnect(ReasonCode::ImplementationSpecificError));
    tb.send(&client, publish("t", "after", Q0, 0));
    assert_eq!(tb.expect_closed(&client), []);
    tb.expect_silent(&watcher);
}
