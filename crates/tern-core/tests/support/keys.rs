//! Identities of HTTP keys, for the scenarios of requests and mailboxes.

use tern_core::{AuthDecision, AuthRequest, Authenticator, Identity, Method};

/// The identity an HTTP key `name` verifies as.
pub(crate) fn key_identity(name: &str) -> Identity {
    Identity {
        method: Method::HttpKey,
        username: Some(name.to_owned()),
        ..Identity::default()
    }
}

/// Lets every MQTT client in as the HTTP key of its client identifier (as a key used over MQTT
/// would be).
#[derive(Debug)]
pub(crate) struct AsKey;

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
