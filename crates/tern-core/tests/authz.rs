//! The authorisation hook and deferred credential checks: denied SUBSCRIBE filters get 0x87
//! (0x80 in 3.1.1), denied PUBLISH gets PUBACK/PUBREC 0x87 in 5.0 and is dropped silently in
//! 3.1.1 (QoS 1/2 still acknowledged), a denied will topic refuses CONNECT; every denial is an
//! event and a count. A `Pending` authentication parks the CONNECT, holds what follows it and
//! carries on when the runtime hands the answer back.
#![allow(clippy::expect_used)] // Test code: a panic is a failure.

mod support;

use bytes::Bytes;
use support::*;
use tern_codec::{Packet, ReasonCode};
use tern_core::{
    Access, AuthDecision, AuthRequest, Authenticator, Authorizer, Event, Identity, Permissions,
    Principal,
};

/// Lets a client publish under `pub/<user>/` and subscribe under `sub/<client id>/`; the client
/// "watch" may subscribe to anything.
#[derive(Debug)]
struct Prefixes;

#[derive(Debug)]
struct PrefixPermissions {
    publish: String,
    subscribe: String,
}

impl Permissions for PrefixPermissions {
    fn allows(&self, access: Access, topic: &str) -> bool {
        match access {
            Access::Publish => topic.starts_with(&self.publish),
            Access::Subscribe => topic.starts_with(&self.subscribe),
        }
    }
}

impl Authorizer for Prefixes {
    fn permissions(&mut self, principal: &Principal<'_>) -> Option<Box<dyn Permissions>> {
        let user = principal.identity.username.clone().unwrap_or_default();
        Some(Box::new(PrefixPermissions {
            publish: format!("pub/{user}/"),
            subscribe: match principal.client_id.as_str() {
                "watch" => String::new(),
                id => format!("sub/{id}/"),
            },
        }))
    }
}

/// Names every client "u" (as an authenticator that read a token would).
#[derive(Debug)]
struct NameIsU;

impl Authenticator for NameIsU {
    fn authenticate(&mut self, _request: &AuthRequest<'_>) -> AuthDecision {
        AuthDecision::AcceptAs {
            data: None,
            identity: Identity {
                username: Some("u".to_owned()),
                ..Identity::default()
            },
        }
    }

    fn continue_auth(&mut self, _request: &AuthRequest<'_>) -> AuthDecision {
        AuthDecision::Refuse(ReasonCode::NotAuthorized)
    }
}

fn broker() -> TestBroker {
    let mut t = TestBroker::new();
    t.broker.set_authenticator(Box::new(NameIsU));
    t.broker.set_authorizer(Box::new(Prefixes));
    t
}

fn denials(events: &[Event]) -> Vec<(Access, String)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Denied { access, topic, .. } => Some((*access, topic.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn denied_subscribe_filters_get_not_authorized() {
    for version in VERSIONS {
        let mut t = broker();
        let c = t.connect("c1", version, Opts::new());
        t.events();
        t.send(
            &c,
            subscribe(7, &[("sub/c1/a", Q1), ("sub/other/a", Q1), ("#", Q0)]),
        );
        // 3.1.1 carries 0x87 as 0x80 Failure (the harness decodes it back as 0x80).
        let refused = match version {
            V5 => ReasonCode::NotAuthorized,
            V31 | V311 => ReasonCode::UnspecifiedError,
        };
        assert_eq!(
            t.recv(&c),
            [suback(7, &[granted(Q1), refused, refused])],
            "{version:?}"
        );
        assert_eq!(t.stats().subscribe_denied, 2);
        assert_eq!(
            denials(&t.events()),
            [
                (Access::Subscribe, "sub/other/a".to_owned()),
                (Access::Subscribe, "#".to_owned())
            ]
        );
        // A shared subscription is judged by the filter inside it.
        t.send(&c, subscribe(8, &[("$share/g/sub/c1/x", Q0)]));
        assert_eq!(t.recv(&c), [suback(8, &[granted(Q0)])]);
    }
}

#[test]
fn denied_publish_is_refused_in_v5_and_dropped_in_v311() {
    for version in VERSIONS {
        let mut t = broker();
        let watcher = t.connect("watch", V5, Opts::new());
        let p = t.connect("p", version, Opts::new());
        t.subscribe(&watcher, "#", Q1);
        t.events();

        t.send(&p, publish("elsewhere/x", "no", Q0, 0));
        t.send(&p, publish("elsewhere/x", "no", Q1, 11));
        t.send(&p, publish("elsewhere/x", "no", Q2, 12));
        let packets = t.recv(&p);
        match version {
            V5 => assert_eq!(
                packets,
                [
                    Packet::PubAck(ack(11, ReasonCode::NotAuthorized)),
                    Packet::PubRec(ack(12, ReasonCode::NotAuthorized)),
                ]
            ),
            V31 | V311 => {
                // Acknowledged as if accepted (3.1.1 has no refusal), and the QoS 2 handshake
                // completes.
                assert_eq!(packets, [puback(11), pubrec(12)]);
                t.send(&p, pubrel(12));
                assert_eq!(t.recv(&p), [pubcomp(12)]);
            }
        }
        assert_eq!(t.stats().publish_denied, 3, "{version:?}");
        assert_eq!(denials(&t.events()).len(), 3);
        t.expect_silent(&watcher);

        // An allowed topic still flows.
        t.send(&p, publish("pub/u/ok", "yes", Q1, 13));
        assert_eq!(t.recv(&p), [puback(13)]);
        let delivered = t.recv(&watcher);
        assert!(
            matches!(delivered.as_slice(), [Packet::Publish(m)] if m.topic.as_str() == "pub/u/ok"),
            "{delivered:?}"
        );
        assert!(t.broker.authorize(p.id, Access::Publish, "pub/u/deeper/x"));
        assert!(!t.broker.authorize(p.id, Access::Publish, "pub/v/x"));
        assert!(t
            .broker
            .authorize(p.id, Access::Subscribe, "$share/g/sub/p/#"));
    }
}

#[test]
fn a_will_topic_the_client_may_not_publish_to_refuses_connect() {
    for version in VERSIONS {
        let mut t = broker();
        let opts = Opts::new().will(will("not/mine", "bye", Q0, false));
        let (_, packets, closed) = t.try_connect(connect_packet("w", version, &opts));
        assert!(closed);
        assert!(
            matches!(packets.as_slice(), [Packet::ConnAck(c)] if c.reason_code == ReasonCode::NotAuthorized),
            "{packets:?}"
        );
        assert_eq!(
            denials(&t.events()),
            [(Access::Publish, "not/mine".to_owned())]
        );
        let opts = Opts::new().will(will("pub/u/status", "bye", Q0, false));
        t.connect("w", version, opts);
    }
}

#[test]
fn pending_checks_park_the_connect_while_others_carry_on() {
    for version in VERSIONS {
        let mut t = TestBroker::new();
        let other = t.connect("other", version, Opts::new());
        t.broker.set_authenticator(Box::new(Deferred::default()));
        let mut connect = connect_packet("slow", version, &Opts::new());
        connect.username = Some(mstr("alice"));
        connect.password = Some(Bytes::from_static(b"secret"));
        let (slow, packets, closed) = t.try_connect(connect.clone());
        assert!(packets.is_empty() && !closed, "answered before the check");
        // Packets after CONNECT are held, not refused.
        t.send_to(slow, version, subscribe(3, &[("t", Q1)]));
        assert!(t.drain(slow).is_empty());
        // Meanwhile an established client is served.
        t.send(&other, Packet::PingReq);
        assert_eq!(t.recv(&other), [Packet::PingResp]);

        let (job_conn, job) = t.broker.poll_auth_job(t.now).expect("a job");
        assert_eq!(job_conn, slow);
        assert!(t.broker.poll_auth_job(t.now).is_none());
        let now = tern_core::Time::from_millis(5);
        t.broker.auth_finished(slow, job.run(), now);
        let packets = t.drain(slow);
        assert!(
            matches!(packets.as_slice(), [Packet::ConnAck(c), Packet::SubAck(_)] if c.reason_code == ReasonCode::Success),
            "{packets:?}"
        );

        // A wrong password is refused once the check answers.
        connect.client_id = mstr("slow2");
        connect.password = Some(Bytes::from_static(b"guess"));
        let (id, _, _) = t.try_connect(connect);
        let (_, job) = t.broker.poll_auth_job(t.now).expect("a job");
        t.broker.auth_finished(id, job.run(), now);
        let packets = t.drain(id);
        assert!(t.take_closed(id));
        assert!(
            matches!(packets.as_slice(), [Packet::ConnAck(c)] if c.reason_code == ReasonCode::BadUserNameOrPassword)
        );
        assert_eq!(t.stats().auth_failures, 1);
    }
}

#[test]
fn an_answer_for_a_closed_connection_is_ignored() {
    let mut t = TestBroker::new();
    t.broker.set_authenticator(Box::new(Deferred::default()));
    let (id, _, _) = t.try_connect(connect_packet("gone", V5, &Opts::new()));
    let (_, job) = t.broker.poll_auth_job(t.now).expect("a job");
    t.broker
        .connection_lost(id, tern_core::Time::from_millis(1));
    t.broker
        .auth_finished(id, job.run(), tern_core::Time::from_millis(2));
    assert_eq!(t.broker.connection_count(), 0);
}

/// A session resumed by a client with narrower permissions (another user taking the client
/// identifier over) keeps only the subscriptions that client may hold.
#[test]
fn a_resumed_session_loses_subscriptions_its_new_owner_may_not_hold() {
    let mut t = TestBroker::new();
    t.broker.set_authorizer(Box::new(UserPrefix));
    let mut alice = connect_packet("shared-id", V5, &Opts::new().expiry(600));
    alice.username = Some(mstr("alice"));
    let (id, _, _) = t.try_connect(alice);
    t.send_to(id, V5, subscribe(1, &[("sub/alice/a", Q1)]));
    assert_eq!(t.drain(id), [suback(1, &[granted(Q1)])]);
    t.send_to(id, V5, disconnect(ReasonCode::NORMAL_DISCONNECTION));
    t.drain(id);
    assert!(t.take_closed(id));
    t.events();

    let mut bob = connect_packet("shared-id", V5, &Opts::new().resume().expiry(600));
    bob.username = Some(mstr("bob"));
    let (bob_id, packets, _) = t.try_connect(bob);
    assert!(
        matches!(packets.as_slice(), [Packet::ConnAck(c)] if c.session_present),
        "{packets:?}"
    );
    assert_eq!(
        denials(&t.events()),
        [(Access::Subscribe, "sub/alice/a".to_owned())]
    );
    assert_eq!(t.stats().subscriptions, 0);
    let publisher = t.connect("p", V5, Opts::new());
    t.send(&publisher, publish("sub/alice/a", "for alice", Q0, 0));
    assert!(t.drain(bob_id).is_empty());
}

/// Publish anywhere; subscribe under `sub/<user name>/` only.
#[derive(Debug)]
struct UserPrefix;

#[derive(Debug)]
struct UserPrefixPermissions(String);

impl Permissions for UserPrefixPermissions {
    fn allows(&self, access: Access, topic: &str) -> bool {
        access == Access::Publish || topic.starts_with(&self.0)
    }
}

impl Authorizer for UserPrefix {
    fn permissions(&mut self, principal: &Principal<'_>) -> Option<Box<dyn Permissions>> {
        let user = principal.identity.username.clone().unwrap_or_default();
        Some(Box::new(UserPrefixPermissions(format!("sub/{user}/"))))
    }
}

/// Rules under which users publish under `out/<user>/` and subscribe under `in/<user>/`.
#[derive(Debug)]
struct Swapped;

impl Authorizer for Swapped {
    fn permissions(&mut self, principal: &Principal<'_>) -> Option<Box<dyn Permissions>> {
        let user = principal.identity.username.clone().unwrap_or_default();
        Some(Box::new(PrefixPermissions {
            publish: format!("out/{user}/"),
            subscribe: format!("in/{user}/"),
        }))
    }
}

#[test]
fn replaced_rules_apply_to_clients_already_connected() {
    let mut t = broker();
    let watcher = t.connect("watch", V5, Opts::new());
    let c = t.connect("c1", V5, Opts::new());
    t.subscribe(&watcher, "#", Q0);
    t.subscribe(&c, "sub/c1/a", Q0);
    t.send(&c, publish("pub/u/x", "before", Q1, 1));
    assert_eq!(t.recv(&c), [puback(1)]);
    assert_eq!(payloads(&t.recv(&watcher)), ["before"]);
    t.events();

    // The identity NameIsU gave at CONNECT ("u") is what the new rules are compiled for.
    let dropped = t.broker.replace_authorizer(Box::new(Swapped), t.now);
    // Both subscriptions fall outside in/u/: dropped, each a denial.
    assert_eq!(dropped, 2);
    assert_eq!(
        denials(&t.events()),
        [
            (Access::Subscribe, "#".to_owned()),
            (Access::Subscribe, "sub/c1/a".to_owned())
        ]
    );
    t.send(&c, publish("pub/u/x", "after", Q1, 2));
    assert_eq!(
        t.recv(&c),
        [Packet::PubAck(ack(2, ReasonCode::NotAuthorized))]
    );
    // Allowed now, and nobody receives it: the watcher's "#" subscription is gone.
    t.send(&c, publish("out/u/x", "allowed", Q1, 3));
    assert_eq!(
        t.recv(&c),
        [Packet::PubAck(ack(3, ReasonCode::NoMatchingSubscribers))]
    );
    t.expect_silent(&watcher);
    t.send(&c, subscribe(4, &[("in/u/#", Q0), ("sub/c1/a", Q0)]));
    assert_eq!(
        t.recv(&c),
        [suback(4, &[granted(Q0), ReasonCode::NotAuthorized])]
    );
}

/// MQTT-4.3.3-9: once the server has answered a PUBREC of 0x80 or above, the next PUBLISH with
/// that packet identifier is a new message. Here the first copy was accepted (its identifier
/// held for PUBREL), the rules changed, and the resent copy was refused with 0x87: the refusal
/// ends the exchange, so the identifier must not stay held, or the client's next message with
/// it would be taken for a duplicate and dropped.
#[test]
fn qos2_refused_after_reload_frees_its_packet_identifier() {
    let mut t = broker();
    let c = t.connect("c1", V5, Opts::new());
    t.send(&c, publish("pub/u/x", "first", Q2, 7));
    assert_eq!(t.recv(&c), [pubrec(7)]);
    t.broker.replace_authorizer(Box::new(Swapped), t.now);
    t.send(
        &c,
        publish_with("pub/u/x", "first", Q2, 7, |p| p.dup = true),
    );
    assert_eq!(
        t.recv(&c),
        [Packet::PubRec(ack(7, ReasonCode::NotAuthorized))]
    );
    // A new message on the same identifier is routed (its retained copy is stored), not
    // acknowledged as a duplicate of the refused one.
    t.send(
        &c,
        publish_with("out/u/x", "second", Q2, 7, |p| p.retain = true),
    );
    assert_eq!(t.recv(&c), [pubrec(7)]);
    assert_eq!(t.stats().retained, 1);
    t.send(&c, pubrel(7));
    assert_eq!(t.recv(&c), [pubcomp(7)]);
}
