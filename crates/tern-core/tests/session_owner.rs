//! A session belongs to the identity that created it: another identity (another user, another
//! login method with the same name, another owner's device) never resumes it, never reads its
//! queue, never prunes its subscriptions and never takes its connection over. Queued messages
//! are checked again against the permissions of the connection that resumes a session.
#![allow(clippy::expect_used)] // Test code: a panic is a failure.

mod support;

use support::*;
use tern_codec::{Packet, ProtocolVersion, ReasonCode};
use tern_core::store::{SessionRecord, StoredSession};
use tern_core::{
    Access, AuthDecision, AuthRequest, Authenticator, Authorizer, Config, Event, Identity, Limits,
    Method, OtherIdentity, Permissions, Principal, SessionOwner, Snapshot,
};

/// Lets a client in as the identity its password names: `password`, `jwt`, `certificate`,
/// `device:<owner>`, or anything else for a name nothing verified.
#[derive(Debug)]
struct PasswordNamesMethod;

impl Authenticator for PasswordNamesMethod {
    fn authenticate(&mut self, request: &AuthRequest<'_>) -> AuthDecision {
        let password = request
            .password
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .unwrap_or_default();
        let (method, owner) = match password.split_once(':') {
            Some(("device", owner)) => (Method::DeviceKey, Some(owner.to_owned())),
            _ => match password.as_str() {
                "password" => (Method::Password, None),
                "jwt" => (Method::Token, None),
                "certificate" => (Method::Certificate, None),
                _ => (Method::Unverified, None),
            },
        };
        AuthDecision::AcceptAs {
            data: None,
            identity: Identity {
                method,
                username: request.username.map(|u| u.as_str().to_owned()),
                owner,
                ..Identity::default()
            },
        }
    }

    fn continue_auth(&mut self, _request: &AuthRequest<'_>) -> AuthDecision {
        AuthDecision::Refuse(ReasonCode::NotAuthorized)
    }
}

/// Subscriptions under `devices/<name>/` for named clients; `a/` for everyone.
#[derive(Debug)]
struct OwnDevices;

#[derive(Debug)]
struct Prefixes(Vec<String>);

impl Permissions for Prefixes {
    fn allows(&self, access: Access, topic: &str) -> bool {
        access == Access::Publish || self.0.iter().any(|prefix| topic.starts_with(prefix))
    }
}

impl Authorizer for OwnDevices {
    fn permissions(&mut self, principal: &Principal<'_>) -> Option<Box<dyn Permissions>> {
        let mut prefixes = vec!["a/".to_owned()];
        if let Some(name) = &principal.identity.username {
            prefixes.push(format!("devices/{name}/"));
        }
        Some(Box::new(Prefixes(prefixes)))
    }
}

fn broker_with(other_identity: OtherIdentity) -> TestBroker {
    let mut t = TestBroker::with_config(Config {
        limits: Limits::default(),
        assigned_id_prefix: "auto-".to_owned(),
        other_identity,
        ..Config::default()
    });
    t.broker.set_authenticator(Box::new(PasswordNamesMethod));
    t.broker.set_authorizer(Box::new(OwnDevices));
    t
}

/// CONNECT as `user` with `password` (which names the method); returns the connection, what
/// the broker wrote and whether it closed the connection.
fn connect_as(
    t: &mut TestBroker,
    client_id: &str,
    version: ProtocolVersion,
    user: &str,
    password: &str,
    opts: Opts,
) -> (tern_core::ConnectionId, Vec<Packet>, bool) {
    let mut connect = connect_packet(client_id, version, &opts);
    connect.username = Some(mstr(user));
    connect.password = Some(bytes::Bytes::from(password.to_owned()));
    t.try_connect(connect)
}

fn connack(packets: &[Packet]) -> (ReasonCode, bool) {
    match packets.first() {
        Some(Packet::ConnAck(c)) => (c.reason_code, c.session_present),
        other => panic!("no CONNACK first: {other:?}"),
    }
}

fn persistent(version: ProtocolVersion) -> Opts {
    match version {
        V5 => Opts::new().resume().expiry(3600),
        V311 => Opts::new().resume(),
    }
}

/// alice connects with her password as `alice-phone`, persistent, and is let in with a session
/// present or not; returns her connection and what the broker wrote.
fn alice_connects(
    t: &mut TestBroker,
    version: ProtocolVersion,
    session_present: bool,
) -> (tern_core::ConnectionId, Vec<Packet>) {
    let opts = persistent(version);
    let (alice, packets, closed) = connect_as(t, "alice-phone", version, "alice", "password", opts);
    assert!(!closed);
    assert_eq!(connack(&packets), (ReasonCode::Success, session_present));
    (alice, packets)
}

/// alice's persistent session `alice-phone`, subscribed to `devices/alice/#` at QoS 1, left
/// with three queued messages.
fn alice_with_a_queue(t: &mut TestBroker, version: ProtocolVersion) {
    let (alice, _) = alice_connects(t, version, false);
    t.send_to(alice, version, subscribe(1, &[("devices/alice/#", Q1)]));
    assert_eq!(t.drain(alice), [suback(1, &[granted(Q1)])]);
    t.broker.connection_lost(alice, t.now);
    let publisher = t.connect("publisher", V5, Opts::new());
    for (n, text) in ["one", "two", "three"].into_iter().enumerate() {
        let id = n as u16 + 1;
        t.send(&publisher, publish("devices/alice/door", text, Q1, id));
        assert_eq!(t.recv(&publisher), [puback(id)]);
    }
    t.events();
}

/// alice resumes her session and gets her three messages, then a fourth: her subscription
/// is intact.
fn alice_resumes_intact(t: &mut TestBroker, version: ProtocolVersion) {
    let (alice, packets) = alice_connects(t, version, true);
    assert_eq!(payloads(&packets[1..]), ["one", "two", "three"]);
    let publisher = t.connect("publisher-2", V5, Opts::new());
    t.send(&publisher, publish("devices/alice/door", "four", Q1, 9));
    assert_eq!(t.recv(&publisher), [puback(9)]);
    assert_eq!(payloads(&t.drain(alice)), ["four"]);
}

#[test]
fn another_user_cannot_resume_a_session_or_read_its_queue() {
    for version in VERSIONS {
        let mut t = broker_with(OtherIdentity::Refuse);
        alice_with_a_queue(&mut t, version);
        // bob, with his own good password and alice's client identifier, resuming or not.
        for opts in [persistent(version), Opts::new()] {
            let (_, packets, closed) =
                connect_as(&mut t, "alice-phone", version, "bob", "password", opts);
            // 0x87 Not authorized; a 3.1.1 client reads 0x05 (the codec maps it).
            assert_eq!(connack(&packets), (ReasonCode::NotAuthorized, false));
            assert_eq!(packets.len(), 1, "nothing of alice's queue: {packets:?}");
            assert!(closed);
        }
        let refusals = t
            .events()
            .into_iter()
            .filter(|e| matches!(e, Event::SessionRefused { identity, .. } if identity == "password:bob"))
            .count();
        assert_eq!(refusals, 2);
        assert_eq!(t.stats().subscriptions, 1, "alice's subscription is kept");
        alice_resumes_intact(&mut t, version);
    }
}

#[test]
fn the_same_name_by_another_method_or_owner_is_another_identity() {
    let mut t = broker_with(OtherIdentity::Refuse);
    alice_with_a_queue(&mut t, V5);
    for password in ["jwt", "certificate", "device:acme", "claimed"] {
        let (_, packets, _) =
            connect_as(&mut t, "alice-phone", V5, "alice", password, persistent(V5));
        assert_eq!(
            connack(&packets),
            (ReasonCode::NotAuthorized, false),
            "alice by {password}"
        );
    }
    alice_resumes_intact(&mut t, V5);

    // Devices of two owners with one device name are two identities.
    let v5 = V5;
    let (acme, packets, _) = connect_as(&mut t, "x", v5, "x", "device:acme", persistent(v5));
    assert_eq!(connack(&packets), (ReasonCode::Success, false));
    t.broker.connection_lost(acme, t.now);
    let (_, packets, _) = connect_as(&mut t, "x", v5, "x", "device:globex", persistent(v5));
    assert_eq!(connack(&packets), (ReasonCode::NotAuthorized, false));
    let (_, packets, _) = connect_as(&mut t, "x", v5, "x", "device:acme", persistent(v5));
    assert_eq!(connack(&packets), (ReasonCode::Success, true));
}

#[test]
fn another_identity_cannot_kick_a_live_client_off() {
    let mut t = broker_with(OtherIdentity::Refuse);
    let v5 = V5;
    let (alice, _) = alice_connects(&mut t, v5, false);
    let (_, packets, closed) =
        connect_as(&mut t, "alice-phone", v5, "bob", "password", Opts::new());
    assert_eq!(connack(&packets), (ReasonCode::NotAuthorized, false));
    assert!(closed);
    // alice's connection was not touched: no DISCONNECT 0x8E, still served.
    assert!(t.drain(alice).is_empty());
    assert!(!t.take_closed(alice));
    t.send_to(alice, v5, subscribe(2, &[("devices/alice/x", Q0)]));
    assert_eq!(t.drain(alice), [suback(2, &[granted(Q0)])]);

    // The same identity takes its own session over, as MQTT says (MQTT-3.1.4-3).
    alice_connects(&mut t, v5, true);
    assert_eq!(t.drain(alice), [disconnect(ReasonCode::SessionTakenOver)]);
}

#[test]
fn with_fresh_the_newcomer_starts_empty_and_never_sees_the_old_session() {
    let mut t = broker_with(OtherIdentity::Fresh);
    let v5 = V5;
    alice_with_a_queue(&mut t, v5);
    let (bob, packets, closed) =
        connect_as(&mut t, "alice-phone", v5, "bob", "password", persistent(v5));
    assert!(!closed);
    assert_eq!(connack(&packets), (ReasonCode::Success, false));
    assert_eq!(packets.len(), 1, "none of alice's messages: {packets:?}");
    assert_eq!(t.stats().subscriptions, 0);
    // bob's session is his now: alice is the other identity.
    t.broker.connection_lost(bob, t.now);
    let (_, packets, _) = connect_as(&mut t, "alice-phone", v5, "bob", "password", persistent(v5));
    assert_eq!(connack(&packets), (ReasonCode::Success, true));
}

#[test]
fn clients_whose_names_nothing_verified_share_sessions_as_before() {
    let mut t = broker_with(OtherIdentity::Refuse);
    let v5 = V5;
    let (first, packets, _) = connect_as(&mut t, "kiosk", v5, "anyone", "claimed", persistent(v5));
    assert_eq!(connack(&packets), (ReasonCode::Success, false));
    t.broker.connection_lost(first, t.now);
    // An anonymous client (no name) is as unverified as one that claimed a name.
    let connect = connect_packet("kiosk", v5, &persistent(v5));
    let (_, packets, _) = t.try_connect(connect);
    assert_eq!(connack(&packets), (ReasonCode::Success, true));
    // But a verified identity may not have it.
    let (_, packets, _) = connect_as(&mut t, "kiosk", v5, "anyone", "password", persistent(v5));
    assert_eq!(connack(&packets), (ReasonCode::NotAuthorized, false));
}

/// A broker restored with one session of unknown owner (from a store that kept none),
/// subscribed to `#`, with a queued message on `a/open` and one on `devices/alice/door`.
fn restored_with_unknown_owner() -> TestBroker {
    let persistent_config = Config {
        limits: Limits::default(),
        assigned_id_prefix: "auto-".to_owned(),
        persistence: true,
        ..Config::default()
    };
    let mut t = TestBroker::with_config(persistent_config.clone());
    let v5 = V5;
    let session = t.connect("legacy", v5, Opts::new().resume().expiry(3600));
    t.subscribe(&session, "#", Q1);
    t.lose(&session);
    let publisher = t.connect("p", v5, Opts::new());
    t.send(&publisher, publish("a/open", "open", Q1, 1));
    t.send(&publisher, publish("devices/alice/door", "private", Q1, 2));
    t.recv(&publisher);
    let mut store = tern_core::MemoryStore::default();
    while let Some(op) = t.broker.poll_store_op() {
        tern_core::Store::apply(&mut store, &[op]).expect("memory store");
    }
    let mut snapshot: Snapshot = tern_core::Store::load(&mut store).expect("memory store");
    for stored in &mut snapshot.sessions {
        let StoredSession { record, .. } = stored;
        let SessionRecord { owner, .. } = record;
        *owner = SessionOwner::unknown();
    }
    let mut restored = TestBroker::with_config(persistent_config);
    restored.broker = tern_core::Broker::restore(restored.broker.config().clone(), t.now, snapshot);
    restored
        .broker
        .set_authenticator(Box::new(PasswordNamesMethod));
    restored.broker.set_authorizer(Box::new(OwnDevices));
    restored
}

#[test]
fn a_session_of_unknown_owner_goes_to_its_first_identity_with_only_what_it_may_read() {
    let mut t = restored_with_unknown_owner();
    let v5 = V5;
    let (_, packets, _) = connect_as(&mut t, "legacy", v5, "bob", "password", persistent(v5));
    assert_eq!(connack(&packets), (ReasonCode::Success, true));
    // bob may read a/ but not alice's devices: that message is withdrawn and counted, and the
    // "#" subscription he may not hold is pruned.
    assert_eq!(payloads(&packets[1..]), ["open"]);
    let events = t.events();
    assert!(events.iter().any(|e| matches!(
        e,
        Event::Dropped {
            reason: tern_core::DropReason::NotAuthorized,
            ..
        }
    )));
    assert!(events.iter().any(|e| matches!(
        e,
        Event::Denied { access: Access::Subscribe, topic, .. } if topic == "#"
    )));
    // The session is bob's from now on.
    let (_, packets, _) = connect_as(&mut t, "legacy", v5, "alice", "password", persistent(v5));
    assert_eq!(connack(&packets), (ReasonCode::NotAuthorized, false));
}

/// Rules under which every client may subscribe under `a/` only.
#[derive(Debug)]
struct OnlyA;

impl Authorizer for OnlyA {
    fn permissions(&mut self, _principal: &Principal<'_>) -> Option<Box<dyn Permissions>> {
        Some(Box::new(Prefixes(vec!["a/".to_owned()])))
    }
}

#[test]
fn messages_queued_or_in_flight_under_old_rules_are_not_delivered_under_new_ones() {
    let mut t = broker_with(OtherIdentity::Refuse);
    alice_with_a_queue(&mut t, V5);
    // bob, connected, has a message in flight (unacknowledged) and one queued behind it.
    let (bob, packets, _) = connect_as(
        &mut t,
        "bob-phone",
        V5,
        "bob",
        "password",
        persistent(V5).receive_maximum(1),
    );
    assert_eq!(connack(&packets), (ReasonCode::Success, false));
    t.send_to(bob, V5, subscribe(1, &[("devices/bob/#", Q1)]));
    assert_eq!(t.drain(bob), [suback(1, &[granted(Q1)])]);
    let publisher = t.connect("publisher-3", V5, Opts::new());
    t.send(&publisher, publish("devices/bob/x", "first", Q1, 1));
    t.send(&publisher, publish("devices/bob/x", "second", Q1, 2));
    t.recv(&publisher);
    assert_eq!(payloads(&t.drain(bob)), ["first"]);
    t.events();

    t.broker.replace_authorizer(Box::new(OnlyA), t.now);
    let dropped = t
        .events()
        .into_iter()
        .filter(|e| {
            matches!(
                e,
                Event::Dropped {
                    reason: tern_core::DropReason::NotAuthorized,
                    ..
                }
            )
        })
        .count();
    assert_eq!(dropped, 2, "bob's in-flight and queued messages");
    // Acknowledging the withdrawn message is harmless; nothing more comes.
    t.send_to(bob, V5, puback(1));
    assert!(t.drain(bob).is_empty());

    // alice, offline, resumes under the new rules: her queue is withdrawn with her
    // subscription.
    let (_, packets) = alice_connects(&mut t, V5, true);
    assert_eq!(packets.len(), 1, "{packets:?}");
    assert_eq!(t.stats().subscriptions, 0);
}

#[test]
fn a_withdrawn_qos2_message_in_flight_is_released_not_sent_again() {
    let mut t = broker_with(OtherIdentity::Refuse);
    let (bob, packets, _) = connect_as(&mut t, "bob-phone", V5, "bob", "password", persistent(V5));
    assert_eq!(connack(&packets), (ReasonCode::Success, false));
    t.send_to(bob, V5, subscribe(1, &[("devices/bob/#", Q2)]));
    assert_eq!(t.drain(bob), [suback(1, &[granted(Q2)])]);
    let publisher = t.connect("publisher", V5, Opts::new());
    t.send(&publisher, publish("devices/bob/x", "once", Q2, 1));
    t.recv(&publisher);
    let sent = t.drain(bob);
    assert_eq!(payloads(&sent), ["once"]);
    let id = packet_id(&sent[0]);
    // The rules change before bob's PUBREC: the exchange is closed with PUBREL, so the
    // identifier is free on both sides and the message is not sent again.
    t.broker.replace_authorizer(Box::new(OnlyA), t.now);
    assert_eq!(t.drain(bob), [pubrel(id)]);
    t.send_to(bob, V5, pubcomp(id));
    assert!(t.drain(bob).is_empty());
    t.broker.connection_lost(bob, t.now);
    let (_, packets, _) = connect_as(&mut t, "bob-phone", V5, "bob", "password", persistent(V5));
    assert_eq!(connack(&packets), (ReasonCode::Success, true));
    assert_eq!(packets.len(), 1, "nothing resent: {packets:?}");
}
