//! The authentication hook: CONNECT credentials decided by an `Authenticator` (wrong ones get
//! CONNACK 0x86 in 5.0, 0x04 in 3.1.1), and the MQTT 5 AUTH exchange before CONNACK and for
//! re-authentication (section 4.12).
#![allow(clippy::expect_used)] // Test code: a panic is a failure.

mod support;

use bytes::Bytes;
use support::*;
use tern_codec::{Auth, AuthProperties, ConnAck, Packet, ReasonCode};
use tern_core::{AuthDecision, AuthRequest, Authenticator};

const METHOD: &str = "TEST-CHALLENGE";

/// Accepts alice/secret with plain CONNECT; runs a one-round challenge for `METHOD`.
#[derive(Debug)]
struct TestAuth;

impl Authenticator for TestAuth {
    fn authenticate(&mut self, request: &AuthRequest<'_>) -> AuthDecision {
        match request.method {
            Some(method) if method.as_str() == METHOD => AuthDecision::Continue {
                data: Bytes::from_static(b"nonce"),
            },
            Some(_) => AuthDecision::Refuse(ReasonCode::BadAuthenticationMethod),
            None => {
                let good = request.username.map(|u| u.as_str()) == Some("alice")
                    && request.password == Some(&b"secret"[..]);
                if good {
                    AuthDecision::Accept { data: None }
                } else {
                    AuthDecision::Refuse(ReasonCode::BadUserNameOrPassword)
                }
            }
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

fn broker() -> TestBroker {
    let mut t = TestBroker::new();
    t.broker.set_authenticator(Box::new(TestAuth));
    t
}

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

fn connack_code(packets: &[Packet]) -> ReasonCode {
    match packets.first() {
        Some(Packet::ConnAck(connack)) => connack.reason_code,
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

#[test]
fn credentials_are_checked_by_the_hook() {
    for version in VERSIONS {
        let mut t = broker();
        let mut connect = connect_packet("c", version, &Opts::new());
        connect.username = Some(mstr("alice"));
        connect.password = Some(Bytes::from_static(b"wrong"));
        let (_, packets, closed) = t.try_connect(connect.clone());
        assert_eq!(
            connack_code(&packets),
            ReasonCode::BadUserNameOrPassword,
            "{version:?}"
        );
        assert!(closed);
        connect.password = Some(Bytes::from_static(b"secret"));
        let (_, packets, closed) = t.try_connect(connect);
        assert_eq!(connack_code(&packets), ReasonCode::Success);
        assert!(!closed);
    }
    // On the wire, 3.1.1 says 0x04 "bad user name or password".
    let connack = ConnAck {
        session_present: false,
        reason_code: ReasonCode::BadUserNameOrPassword,
        properties: Default::default(),
    };
    assert_eq!(encode(&Packet::ConnAck(Box::new(connack)), V311)[3], 0x04);
}

/// MQTT-4.12.0-1/-2/-3/-5: an unsupported method is refused with 0x8C; a supported one runs
/// AUTH 0x18 rounds with the same method, and CONNACK carries the method and final data.
#[test]
fn enhanced_authentication_before_connack() {
    let mut t = broker();
    let mut connect = connect_packet("e", V5, &Opts::new());
    connect.properties.authentication_method = Some(mstr("UNKNOWN"));
    let (_, packets, closed) = t.try_connect(connect.clone());
    assert_eq!(connack_code(&packets), ReasonCode::BadAuthenticationMethod);
    assert!(closed);

    connect.properties.authentication_method = Some(mstr(METHOD));
    let (id, packets, closed) = t.try_connect(connect);
    assert!(!closed);
    assert_eq!(
        packets,
        [auth(
            ReasonCode::ContinueAuthentication,
            METHOD,
            Some(b"nonce")
        )]
    );
    t.send_to(
        id,
        V5,
        auth(
            ReasonCode::ContinueAuthentication,
            METHOD,
            Some(b"nonce-signed"),
        ),
    );
    let packets = t.drain(id);
    let Some(Packet::ConnAck(connack)) = packets.first() else {
        panic!("expected CONNACK, got {packets:?}");
    };
    assert_eq!(connack.reason_code, ReasonCode::Success);
    assert_eq!(connack.properties.authentication_method, Some(mstr(METHOD)));
    assert_eq!(
        connack.properties.authentication_data,
        Some(Bytes::from_static(b"welcome"))
    );

    // Re-authentication with the same method (MQTT-4.12.1-1).
    t.send_to(
        id,
        V5,
        auth(ReasonCode::ReAuthenticate, METHOD, Some(b"nonce-signed")),
    );
    assert_eq!(
        t.drain(id),
        [auth(ReasonCode::Success, METHOD, Some(b"welcome"))]
    );
    // Failed re-authentication closes the connection (MQTT-4.12.1-2).
    t.send_to(
        id,
        V5,
        auth(ReasonCode::ReAuthenticate, METHOD, Some(b"forged")),
    );
    let packets = t.drain(id);
    assert!(t.take_closed(id));
    assert!(
        matches!(packets.as_slice(), [Packet::Disconnect(d)] if d.reason_code == ReasonCode::NotAuthorized)
    );
}

#[test]
fn wrong_answer_or_other_packets_during_authentication_are_refused() {
    let mut t = broker();
    let mut connect = connect_packet("e", V5, &Opts::new());
    connect.properties.authentication_method = Some(mstr(METHOD));
    let (id, _, _) = t.try_connect(connect.clone());
    t.send_to(
        id,
        V5,
        auth(ReasonCode::ContinueAuthentication, METHOD, Some(b"forged")),
    );
    let packets = t.drain(id);
    assert_eq!(connack_code(&packets), ReasonCode::NotAuthorized);
    assert!(t.take_closed(id));

    // Anything but AUTH or DISCONNECT before CONNACK is a protocol error (MQTT-4.12.0-6), told
    // with a CONNACK, the only packet allowed before CONNACK (MQTT-3.2.0-1).
    let (id, _, _) = t.try_connect(connect.clone());
    t.send_to(id, V5, Packet::PingReq);
    let packets = t.drain(id);
    assert!(t.take_closed(id));
    assert_eq!(connack_code(&packets), ReasonCode::ProtocolError);

    // A different method in AUTH is a protocol error (MQTT-4.12.0-5).
    let (id, _, _) = t.try_connect(connect);
    t.send_to(
        id,
        V5,
        auth(
            ReasonCode::ContinueAuthentication,
            "OTHER",
            Some(b"nonce-signed"),
        ),
    );
    let packets = t.drain(id);
    assert!(t.take_closed(id));
    assert_eq!(connack_code(&packets), ReasonCode::ProtocolError);
}

/// MQTT-4.12.0-7 / 3.15.2-1: AUTH from a client that did not use enhanced authentication is a
/// protocol error.
#[test]
fn auth_without_a_method_is_a_protocol_error() {
    let mut t = broker();
    let mut connect = connect_packet("p", V5, &Opts::new());
    connect.username = Some(mstr("alice"));
    connect.password = Some(Bytes::from_static(b"secret"));
    let (id, packets, _) = t.try_connect(connect);
    assert_eq!(connack_code(&packets), ReasonCode::Success);
    t.send_to(id, V5, auth(ReasonCode::ReAuthenticate, METHOD, None));
    let packets = t.drain(id);
    assert!(t.take_closed(id));
    assert!(
        matches!(packets.as_slice(), [Packet::Disconnect(d)] if d.reason_code == ReasonCode::ProtocolError)
    );
}

#[test]
fn default_hook_refuses_enhanced_authentication() {
    let mut t = TestBroker::new();
    let mut connect = connect_packet("d", V5, &Opts::new());
    connect.properties.authentication_method = Some(mstr("SCRAM-SHA-256"));
    let (_, packets, closed) = t.try_connect(connect);
    assert_eq!(connack_code(&packets), ReasonCode::BadAuthenticationMethod);
    assert!(closed);
}
