//! Requests (the HTTP bridge's way into the core): a message published for a client without a
//! connection is checked by the same authorizer (narrowed by the credential's own restriction),
//! limits and routing as a PUBLISH, tells how many subscriptions it matched, never uses another
//! identity's session, publishes all or nothing when asked, and leaves the same store
//! operations behind.
#![allow(clippy::expect_used)] // Test code: a panic is a failure.

mod support;

use bytes::Bytes;
use support::*;
use tern_codec::{Packet, Publish, QoS, SubscriptionOptions};
use tern_core::{
    Access, AuthDecision, AuthRequest, Authenticator, Authorizer, Config, ConnectionId, Event,
    Identity, Limits, Method, Permissions, Principal, RequestClient, RequestRefusal, StoreOp,
};

const EDGE: ConnectionId = ConnectionId(1_000_000);

fn key_identity(name: &str) -> Identity {
    Identity {
        method: Method::HttpKey,
        username: Some(name.to_owned()),
        ..Identity::default()
    }
}

fn message(topic_name: &str, qos: QoS) -> Publish {
    let mut publish = Publish::new(topic(topic_name), Bytes::from_static(b"21.5"));
    publish.qos = qos;
    publish
}

fn client(broker: &mut TestBroker, name: &str) -> RequestClient {
    broker
        .broker
        .request_client(EDGE, mstr(name), key_identity(name), None)
}

/// Allows what starts with one prefix.
#[derive(Debug)]
struct Prefix(String);

impl Permissions for Prefix {
    fn allows(&self, _access: Access, topic: &str) -> bool {
        topic.starts_with(&self.0)
    }
}

/// Lets each HTTP key publish under `keys/<name>/` and nothing else, unverified clients do
/// anything, and anyone else nothing.
#[derive(Debug)]
struct KeysOwnPrefix;

impl Authorizer for KeysOwnPrefix {
    fn permissions(&mut self, principal: &Principal<'_>) -> Option<Box<dyn Permissions>> {
        let identity = principal.identity;
        let prefix = match (identity.method, &identity.username) {
            (Method::HttpKey, Some(name)) => format!("keys/{name}/"),
            (Method::Unverified, _) => return None,
            _ => "\u{0}nothing".to_owned(),
        };
        Some(Box::new(Prefix(prefix)))
    }
}

/// Lets every MQTT client in as the HTTP key of its client identifier (as a key used over MQTT
/// would be).
#[derive(Debug)]
struct AsKey;

impl Authenticator for AsKey {
    fn authenticate(&mut self, request: &AuthRequest<'_>) -> AuthDecision {
        AuthDecision::AcceptAs {
            data: None,
            identity: key_identity(request.client_id.as_str()),
        }
    }

    fn continue_auth(&mut self, _request: &AuthRequest<'_>) -> AuthDecision {
        AuthDecision::Refuse(tern_codec::ReasonCode::BadAuthenticationMethod)
    }
}

#[test]
fn a_request_publish_reaches_every_matching_subscription_and_counts_them() {
    let mut broker = TestBroker::new();
    let wide = broker.connect("wide", V5, Opts::new());
    let narrow = broker.connect("narrow", V311, Opts::new());
    broker.subscribe(&wide, "sensors/#", QoS::AtLeastOnce);
    broker.subscribe(&narrow, "sensors/7F3A/t", QoS::AtMostOnce);
    let dev = client(&mut broker, "dev");
    let now = broker.now;
    let outcomes = broker.broker.publish_for(
        &dev,
        vec![
            message("sensors/7F3A/t", QoS::AtLeastOnce),
            message("nobody/listens", QoS::AtLeastOnce),
        ],
        false,
        now,
    );
    assert_eq!(
        outcomes,
        [Ok(Some(2)), Ok(Some(0))],
        "zero matches is an answer, not an error"
    );
    for subscriber in [&wide, &narrow] {
        let packets = broker.recv(subscriber);
        assert!(
            matches!(&packets[..], [Packet::Publish(p)] if p.topic.as_str() == "sensors/7F3A/t"),
            "{packets:?}"
        );
    }
    assert_eq!(broker.stats().publish_received, 2);
}

#[test]
fn the_rules_and_the_credential_restriction_must_both_allow() {
    let mut broker = TestBroker::new();
    broker.broker.set_authorizer(Box::new(KeysOwnPrefix));
    let watcher = broker.connect("watch", V5, Opts::new());
    broker.subscribe(&watcher, "#", QoS::AtMostOnce);
    // The key may write only its `a/` subtree, of what the rules give it.
    let restriction = Some(Box::new(Prefix("keys/dev/a/".to_owned())) as Box<dyn Permissions>);
    let dev = broker
        .broker
        .request_client(EDGE, mstr("dev"), key_identity("dev"), restriction);
    assert!(dev.allows(Access::Publish, "keys/dev/a/x"));
    assert!(!dev.allows(Access::Publish, "keys/dev/b"));
    let now = broker.now;
    let outcomes = broker.broker.publish_for(
        &dev,
        vec![
            message("keys/dev/a/x", QoS::AtMostOnce),
            message("keys/dev/b", QoS::AtMostOnce),
            message("keys/other/a/x", QoS::AtMostOnce),
        ],
        false,
        now,
    );
    assert_eq!(
        outcomes,
        [
            Ok(Some(1)),
            Err(RequestRefusal::NotAuthorized),
            Err(RequestRefusal::NotAuthorized)
        ]
    );
    assert_eq!(broker.recv(&watcher).len(), 1);
    assert_eq!(broker.stats().publish_denied, 2);
    let denied: Vec<String> = broker
        .events()
        .into_iter()
        .filter_map(|event| match event {
            Event::Denied {
                connection, topic, ..
            } if connection == EDGE => Some(topic),
            _ => None,
        })
        .collect();
    assert_eq!(denied, ["keys/dev/b", "keys/other/a/x"]);
    // A password user with the key's name gets nothing the rules give the key.
    let user = Identity {
        method: Method::Password,
        ..key_identity("dev")
    };
    let impostor = broker.broker.request_client(EDGE, mstr("dev"), user, None);
    assert!(!impostor.allows(Access::Publish, "keys/dev/a/x"));
}

#[test]
fn a_session_of_another_identity_refuses_requests_and_its_own_is_the_origin() {
    let mut broker = TestBroker::new();
    // An unverified MQTT client holds the session of client identifier "squat".
    let squatter = broker.connect("squat", V5, Opts::new().expiry(600));
    broker.subscribe(&squatter, "t", QoS::AtMostOnce);
    let squat = client(&mut broker, "squat");
    let now = broker.now;
    let outcomes =
        broker
            .broker
            .publish_for(&squat, vec![message("t", QoS::AtMostOnce)], false, now);
    assert_eq!(outcomes, [Err(RequestRefusal::SessionOfAnotherIdentity)]);
    broker.expect_silent(&squatter);

    // The key's own session (its MQTT connection logged in as the key) is the origin of its
    // requests: No Local keeps them from coming back through it.
    broker.broker.set_authenticator(Box::new(AsKey));
    let own = broker.connect("dev", V5, Opts::new().expiry(600));
    let id = broker.fresh_packet_id();
    let no_local = SubscriptionOptions {
        no_local: true,
        ..opts(QoS::AtMostOnce)
    };
    broker.send(&own, subscribe_with(id, &[("t", no_local)], None));
    broker.recv(&own);
    let dev = client(&mut broker, "dev");
    let outcomes = broker
        .broker
        .publish_for(&dev, vec![message("t", QoS::AtMostOnce)], false, now);
    assert_eq!(outcomes, [Ok(Some(1))], "the squatter's subscription only");
    broker.expect_silent(&own);
    assert_eq!(broker.recv(&squatter).len(), 1);
}

#[test]
fn an_atomic_batch_publishes_all_or_nothing() {
    let mut broker = TestBroker::with_limits(Limits {
        retained_count_max: 2,
        ..Limits::default()
    });
    broker.broker.set_authorizer(Box::new(KeysOwnPrefix));
    let watcher = broker.connect("watch", V5, Opts::new());
    broker.subscribe(&watcher, "keys/#", QoS::AtMostOnce);
    let dev = client(&mut broker, "dev");
    let now = broker.now;
    let batch = vec![
        message("keys/dev/a", QoS::AtLeastOnce),
        message("keys/other/b", QoS::AtLeastOnce),
    ];
    let outcomes = broker.broker.publish_for(&dev, batch, true, now);
    assert_eq!(
        outcomes,
        [
            Err(RequestRefusal::NotApplied),
            Err(RequestRefusal::NotAuthorized)
        ]
    );
    broker.expect_silent(&watcher);

    // Three retained messages where two fit: each alone would, together they do not.
    let retained = |name: &str| {
        let mut publish = message(name, QoS::AtLeastOnce);
        publish.retain = true;
        publish
    };
    let batch = vec![
        retained("keys/dev/1"),
        retained("keys/dev/2"),
        retained("keys/dev/3"),
    ];
    let outcomes = broker.broker.publish_for(&dev, batch.clone(), true, now);
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, Err(RequestRefusal::QuotaExceeded(_)))),
        "{outcomes:?}"
    );
    broker.expect_silent(&watcher);
    assert_eq!(broker.stats().retained, 0);
    assert_eq!(broker.stats().retained_refused, 1);
    // Not atomic: the first two are kept, the third refused.
    let outcomes = broker.broker.publish_for(&dev, batch, false, now);
    assert!(matches!(
        &outcomes[..],
        [
            Ok(Some(1)),
            Ok(Some(1)),
            Err(RequestRefusal::QuotaExceeded(_))
        ]
    ));
    assert_eq!(broker.stats().retained, 2);
    assert_eq!(broker.recv(&watcher).len(), 2);
}

#[test]
fn a_request_leaves_the_store_operations_a_publish_would() {
    let mut broker = TestBroker::with_config(Config {
        persistence: true,
        ..Config::default()
    });
    let sleeper = broker.connect("sleeper", V5, Opts::new().expiry(3600));
    broker.subscribe(&sleeper, "cmd/#", QoS::AtLeastOnce);
    broker.disconnect(&sleeper);
    while broker.broker.poll_store_op().is_some() {}
    let dev = client(&mut broker, "dev");
    let mut kept = message("cmd/dev/config", QoS::AtLeastOnce);
    kept.retain = true;
    let now = broker.now;
    let outcomes = broker.broker.publish_for(&dev, vec![kept], false, now);
    assert_eq!(outcomes, [Ok(Some(1))]);
    let ops: Vec<StoreOp> = std::iter::from_fn(|| broker.broker.poll_store_op()).collect();
    assert!(
        matches!(&ops[..], [StoreOp::RetainedSet(m), StoreOp::DeliveryQueued { client_id, .. }]
            if m.topic.as_str() == "cmd/dev/config" && client_id.as_str() == "sleeper"),
        "{ops:?}"
    );
}

#[test]
fn topics_a_client_may_not_publish_to_are_refused_before_the_rules() {
    let mut broker = TestBroker::with_limits(Limits {
        topic_levels_max: 3,
        ..Limits::default()
    });
    let dev = client(&mut broker, "dev");
    let now = broker.now;
    let outcomes = broker.broker.publish_for(
        &dev,
        vec![
            message("$SYS/broker/uptime", QoS::AtMostOnce),
            message("$tree/a/b", QoS::AtMostOnce),
            message("a/b/c/d", QoS::AtMostOnce),
        ],
        false,
        now,
    );
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, Err(RequestRefusal::TopicInvalid(_)))),
        "{outcomes:?}"
    );
    assert_eq!(broker.stats().publish_denied, 0);
}
