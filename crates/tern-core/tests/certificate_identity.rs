//! A verified client certificate (mutual TLS) reaches the authenticator as
//! `AuthRequest::certificate_identity`, and with `use_identity_as_username` it replaces the
//! CONNECT user name; such a connection without a certificate identity is refused.
#![allow(clippy::expect_used)] // Test code: a panic is a failure.

mod support;

use std::cell::RefCell;
use std::rc::Rc;

use support::*;
use tern_codec::{Packet, ReasonCode};
use tern_core::{AuthDecision, AuthRequest, Authenticator, ConnectionInfo};

/// What the authenticator was shown: (user name, certificate identity) per CONNECT.
type Seen = Rc<RefCell<Vec<(Option<String>, Option<String>)>>>;

/// Records what it sees and accepts only the user "device-7".
#[derive(Debug)]
struct Recorder(Seen);

impl Authenticator for Recorder {
    fn authenticate(&mut self, request: &AuthRequest<'_>) -> AuthDecision {
        let username = request.username.map(|u| u.as_str().to_owned());
        self.0.borrow_mut().push((
            username.clone(),
            request.certificate_identity.map(str::to_owned),
        ));
        if username.as_deref() == Some("device-7") {
            AuthDecision::Accept { data: None }
        } else {
            AuthDecision::Refuse(ReasonCode::NotAuthorized)
        }
    }

    fn continue_auth(&mut self, _request: &AuthRequest<'_>) -> AuthDecision {
        AuthDecision::Refuse(ReasonCode::BadAuthenticationMethod)
    }
}

fn broker() -> (TestBroker, Seen) {
    let seen = Seen::default();
    let mut t = TestBroker::new();
    t.broker
        .set_authenticator(Box::new(Recorder(Rc::clone(&seen))));
    (t, seen)
}

fn connack_code(packets: &[Packet]) -> ReasonCode {
    match packets.first() {
        Some(Packet::ConnAck(connack)) => connack.reason_code,
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

fn connect_on(t: &mut TestBroker, info: ConnectionInfo, username: Option<&str>) -> Vec<Packet> {
    let id = t.open_with(info);
    let mut connect = connect_packet("c", V5, &Opts::new());
    connect.username = username.map(mstr);
    t.send_to(id, V5, Packet::Connect(Box::new(connect)));
    t.drain(id)
}

#[test]
fn identity_is_shown_to_the_authenticator_next_to_the_user_name() {
    let (mut t, seen) = broker();
    let info = ConnectionInfo {
        certificate_identity: Some("device-7".to_owned()),
        use_identity_as_username: false,
        ..ConnectionInfo::default()
    };
    let packets = connect_on(&mut t, info, Some("someone-else"));
    assert_eq!(connack_code(&packets), ReasonCode::NotAuthorized);
    assert_eq!(
        seen.borrow().as_slice(),
        &[(Some("someone-else".to_owned()), Some("device-7".to_owned()))]
    );
}

#[test]
fn identity_replaces_the_user_name_when_configured() {
    let (mut t, seen) = broker();
    let info = ConnectionInfo {
        certificate_identity: Some("device-7".to_owned()),
        use_identity_as_username: true,
        ..ConnectionInfo::default()
    };
    let packets = connect_on(&mut t, info, Some("someone-else"));
    assert_eq!(connack_code(&packets), ReasonCode::Success);
    assert_eq!(
        seen.borrow().as_slice(),
        &[(Some("device-7".to_owned()), Some("device-7".to_owned()))]
    );
}

#[test]
fn identity_as_user_name_without_a_certificate_is_refused() {
    for version in VERSIONS {
        let (mut t, seen) = broker();
        let id = t.open_with(ConnectionInfo {
            certificate_identity: None,
            use_identity_as_username: true,
            ..ConnectionInfo::default()
        });
        let mut connect = connect_packet("c", version, &Opts::new());
        connect.username = Some(mstr("device-7"));
        t.send_to(id, version, Packet::Connect(Box::new(connect)));
        let packets = t.drain(id);
        assert_eq!(
            connack_code(&packets),
            ReasonCode::NotAuthorized,
            "{version:?}"
        );
        assert!(t.take_closed(id), "{version:?}: connection stays open");
        assert!(seen.borrow().is_empty(), "authenticator consulted");
    }
}

#[test]
fn plain_connections_carry_no_identity() {
    let (mut t, seen) = broker();
    let packets = connect_on(&mut t, ConnectionInfo::default(), Some("device-7"));
    assert_eq!(connack_code(&packets), ReasonCode::Success);
    assert_eq!(
        seen.borrow().as_slice(),
        &[(Some("device-7".to_owned()), None)]
    );
}
