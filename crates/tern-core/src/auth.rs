//! The authentication hook. CONNECT credentials and MQTT 5 enhanced authentication (AUTH
//! packets) are decided by an [`Authenticator`]; the core only runs the exchange. Password
//! files, JWTs, device keys and SCRAM plug in here.

use std::fmt;

use bytes::Bytes;
use tern_codec::{MqttString, ProtocolVersion, ReasonCode};

use crate::types::ConnectionId;

/// What an authenticator sees of a CONNECT or an AUTH packet.
#[derive(Debug, Clone, Copy)]
pub struct AuthRequest<'a> {
    /// The connection.
    pub connection: ConnectionId,
    /// Protocol level.
    pub version: ProtocolVersion,
    /// The client identifier (empty if the client sent none and one is yet to be assigned).
    pub client_id: &'a MqttString,
    /// User name from CONNECT.
    pub username: Option<&'a MqttString>,
    /// Password from CONNECT.
    pub password: Option<&'a [u8]>,
    /// Authentication Method (MQTT 5 enhanced authentication).
    pub method: Option<&'a MqttString>,
    /// Authentication Data of this step.
    pub data: Option<&'a [u8]>,
    /// The identity (subject CN or first SAN) of the client certificate the connection
    /// presented and the listener verified (mutual TLS), if any.
    pub certificate_identity: Option<&'a str>,
}

/// An authenticator's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthDecision {
    /// Let the client in; with enhanced authentication, `data` goes in CONNACK (or AUTH on
    /// re-authentication).
    Accept {
        /// Final Authentication Data, if the method has any.
        data: Option<Bytes>,
    },
    /// Another round of enhanced authentication: AUTH 0x18 with this data.
    Continue {
        /// Authentication Data for the client.
        data: Bytes,
    },
    /// Refuse with this reason code (CONNACK, mapped for 3.1.1; DISCONNECT on re-authentication).
    Refuse(ReasonCode),
}

/// Decides who may connect. Implementations must not block: slow checks (password hashing)
/// belong to the runtime, which can pre-compute and hand the result in.
pub trait Authenticator: fmt::Debug {
    /// A CONNECT arrived.
    fn authenticate(&mut self, request: &AuthRequest<'_>) -> AuthDecision;

    /// An AUTH packet continued enhanced authentication, or started re-authentication.
    fn continue_auth(&mut self, request: &AuthRequest<'_>) -> AuthDecision;
}

/// Lets every client in with plain CONNECT, and refuses every enhanced authentication method
/// (0x8C Bad authentication method): the default until methods are configured.
#[derive(Debug, Default, Clone, Copy)]
pub struct AllowAnonymous;

impl Authenticator for AllowAnonymous {
    fn authenticate(&mut self, request: &AuthRequest<'_>) -> AuthDecision {
        match request.method {
            None => AuthDecision::Accept { data: None },
            Some(_) => AuthDecision::Refuse(ReasonCode::BadAuthenticationMethod),
        }
    }

    fn continue_auth(&mut self, _request: &AuthRequest<'_>) -> AuthDecision {
        AuthDecision::Refuse(ReasonCode::BadAuthenticationMethod)
    }
}
