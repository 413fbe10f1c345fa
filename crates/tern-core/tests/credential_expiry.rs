//! A credential with an expiry (a token's `exp`) ends the connection when it runs out: MQTT 5
//! clients get DISCONNECT 0xA0 Maximum connect time first, 3.1.1 clients are closed as on a
//! network failure, and either way the will is published. A successful re-authentication
//! brings the new credential's expiry.
#![allow(clippy::expect_used)] // Test code: a panic is a failure.

mod support;

use bytes::Bytes;
use support::*;
use tern_codec::{Auth, AuthProperties, Packet, ReasonCode};
use tern_core::{AuthDecision, AuthRequest, Authenticator, CloseReason, Event, Identity};

/// Accepts everyone with a credential valid for `valid_for_millis`; re-authentication grants
/// `renewed_millis`.
#[derive(Debug)]
struct Expiring {
    valid_for_millis: Option<u64>,
    renewed_millis: u64,
}

impl Authenticator for Expiring {
    fn authenticate(&mut self, request: &AuthRequest<'_>) -> AuthDecision {
        AuthDecision::AcceptAs {
            data: None,
            identity: Identity {
                username: request.username.map(|u| u.as_str().to_owned()),
                valid_for_millis: self.valid_for_millis,
                ..Identity::default()
            },
        }
    }

    fn continue_auth(&mut self, _request: &AuthRequest<'_>) -> AuthDecision {
        AuthDecision::AcceptAs {
            data: Some(Bytes::from_static(b"renewed")),
            identity: Identity {
                valid_for_millis: Some(self.renewed_millis),
                ..Identity::default()
            },
        }
    }
}

fn broker(valid_for_millis: Option<u64>) -> TestBroker {
    let mut t = TestBroker::new();
    t.broker.set_authenticator(Box::new(Expiring {
        valid_for_millis,
        renewed_millis: 60_000,
    }));
    t
}

fn expired(events: &[Event]) -> bool {
    events.iter().any(|e| {
        matches!(
            e,
            Event::Disconnected {
                reason: CloseReason::CredentialExpired,
                ..
            }
        )
    })
}

#[test]
fn an_expired_credential_ends_the_connection() {
    for version in VERSIONS {
        let mut t = broker(Some(5_000));
        let other = t.connect("o", V5, Opts::new());
        let client = t.connect("c", version, Opts::new());
        t.advance(4_999);
        t.expect_silent(&client);
        t.advance(1);
        let expected = match version {
            V5 => vec![disconnect(ReasonCode::MaximumConnectTime)],
            V31 | V311 => vec![],
        };
        assert_eq!(t.expect_closed(&client), expected, "{version:?}");
        // Every connection's credential is checked, not only the newest.
        assert_eq!(
            t.expect_closed(&other),
            [disconnect(ReasonCode::MaximumConnectTime)]
        );
        assert!(expired(&t.events()), "{version:?}");
    }
}

#[test]
fn the_will_of_an_expired_connection_reaches_a_subscriber_whose_credential_lasts() {
    let mut t = TestBroker::new();
    t.broker.set_authenticator(Box::new(Expiring {
        valid_for_millis: None,
        renewed_millis: 0,
    }));
    let watcher = t.connect("w", V5, Opts::new());
    t.subscribe(&watcher, "will", Q0);
    // Only this client's credential expires.
    t.broker.set_authenticator(Box::new(Expiring {
        valid_for_millis: Some(1_000),
        renewed_millis: 0,
    }));
    let client = t.connect(
        "c",
        V311,
        Opts::new().will(will("will", "expired", Q0, false)),
    );
    t.advance(1_000);
    assert_eq!(t.expect_closed(&client), []);
    assert_eq!(t.recv(&watcher), [publish("will", "expired", Q0, 0)]);
    t.expect_silent(&watcher);
}

#[test]
fn a_credential_without_expiry_lasts_as_long_as_the_connection() {
    let mut t = broker(None);
    let client = t.connect("c", V5, Opts::new());
    t.advance(24 * 3_600 * 1_000);
    t.expect_silent(&client);
    assert!(!expired(&t.events()));
}

fn auth(reason_code: ReasonCode, data: &'static [u8]) -> Packet {
    Packet::Auth(Auth {
        reason_code,
        properties: AuthProperties {
            authentication_method: Some(mstr("token")),
            authentication_data: Some(Bytes::from_static(data)),
            ..AuthProperties::default()
        },
    })
}

#[test]
fn re_authentication_brings_the_new_credentials_expiry() {
    let mut t = broker(Some(5_000));
    let mut connect = connect_packet("c", V5, &Opts::new());
    connect.properties.authentication_method = Some(mstr("token"));
    let (id, packets, closed) = t.try_connect(connect);
    assert!(
        matches!(packets.first(), Some(Packet::ConnAck(c)) if c.reason_code == ReasonCode::Success),
        "{packets:?}"
    );
    assert!(!closed);
    t.advance(4_000);
    t.send_to(id, V5, auth(ReasonCode::ReAuthenticate, b"fresh"));
    assert_eq!(t.drain(id), [auth(ReasonCode::Success, b"renewed")]);
    // The first credential's expiry has passed; the renewed one (60 s from the AUTH) has not.
    t.advance(2_000);
    assert_eq!(t.drain(id), []);
    assert!(!t.take_closed(id));
    t.advance(57_999);
    assert_eq!(t.drain(id), []);
    t.advance(1);
    assert_eq!(t.drain(id), [disconnect(ReasonCode::MaximumConnectTime)]);
    assert!(t.take_closed(id));
}
