//! The authentication hook. CONNECT credentials and MQTT 5 enhanced authentication (AUTH
//! packets) are decided by an [`Authenticator`]; the core only runs the exchange. Password
//! files, JWTs, device keys and SCRAM plug in here.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use tern_codec::{MqttString, ProtocolVersion, ReasonCode};

use crate::fleet::FleetLogin;
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
    /// The authentication profile of the listener the connection came in on (see
    /// [`crate::Broker::set_auth_profile`]); 0 unless the runtime says otherwise.
    pub profile: usize,
    /// The fleet registry's entries the CONNECT names (its client identifier a device's udid,
    /// its user name an owner); empty for AUTH packets.
    pub fleet: FleetLogin<'a>,
}

/// How a client proved who it is. Names are only unique within one method (and, for devices,
/// one owner): a password user `ops`, a token whose subject is `ops` and a device `ops` are
/// three identities, so rules and sessions tell them apart by method as well as by name.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Method {
    /// Nothing was verified: an anonymous client, or a user name taken as the client gave it
    /// (a listener that lets everyone in).
    #[default]
    Unverified,
    /// A user of the password file, by password or SCRAM.
    Password,
    /// A bearer token (JWT): the name is its subject claim.
    Token,
    /// A client certificate verified at the TLS handshake: the name is the certificate's.
    Certificate,
    /// A device key: the name is the device identifier, unique within its owner.
    DeviceKey,
    /// A key of the HTTP bridge (a signed request): the name is the client identifier the key
    /// speaks for; an app key's devices have the app as their owner.
    HttpKey,
    /// A device of the fleet registry (`crate::fleet`): the name is its udid, the owner its
    /// owner's id. Its permissions follow from both by rule, and configured ACL rules do not
    /// apply to it.
    FleetDevice,
    /// An owner of the fleet registry, by its own password: the name and the owner are its id.
    FleetOwner,
    /// A user of a directory outside the broker (the mosquitto-go-auth Redis layout): its
    /// password and its topics are kept there, and configured ACL rules do not apply to it.
    Directory,
}

impl Method {
    /// The word configuration files and logs use for the method.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unverified => "unverified",
            Self::Password => "password",
            Self::Token => "jwt",
            Self::Certificate => "certificate",
            Self::DeviceKey => "device",
            Self::HttpKey => "http",
            Self::FleetDevice => "fleet-device",
            Self::FleetOwner => "fleet-owner",
            Self::Directory => "directory",
        }
    }
}

/// Who an authenticator found the client to be, beyond the CONNECT user name: what the
/// authorizer compiles the connection's rules for, and what a persistent session is bound to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    /// How the name was proved; [`Method::Unverified`] unless an authenticator says otherwise.
    pub method: Method,
    /// The authenticated user name (`%u` in ACL rules); may differ from CONNECT's (a JWT claim).
    pub username: Option<String>,
    /// The owner a device belongs to (`%o` in ACL rules), for device-key authentication.
    pub owner: Option<String>,
    /// Topic filters the credential itself restricts the client to (a JWT claim), on top of the
    /// ACL rules; `None` leaves only the ACL rules.
    pub topics: Option<Vec<String>>,
    /// How long the credential stays valid from this decision (a token's expiry): the broker
    /// then closes the connection (MQTT 5: DISCONNECT 0xA0, Maximum connect time). `None`: for
    /// as long as the connection lasts.
    pub valid_for_millis: Option<u64>,
    /// The topics a user directory keeps for a [`Method::Directory`] user, as its login found
    /// them: what its permissions are compiled from, at CONNECT and again at every reload.
    pub directory: Option<Arc<DirectoryTopics>>,
}

/// A directory user's topic patterns (mosquitto-go-auth's Redis layout: its own sets and the
/// common ones together), with `%u` and `%c` not yet substituted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DirectoryTopics {
    /// May do anything.
    pub superuser: bool,
    /// Patterns of topics it may read (`racls`, `rwacls`).
    pub read: Vec<String>,
    /// Patterns of topics it may write (`wacls`, `rwacls`).
    pub write: Vec<String>,
    /// Patterns of filters it may subscribe with (`sacls`); none: the read patterns decide.
    pub subscribe: Vec<String>,
}

impl Identity {
    /// The principal a session created by this identity belongs to (see [`SessionOwner`]).
    pub fn session_owner(&self) -> SessionOwner {
        match (self.method, &self.username) {
            (Method::Unverified, _) | (_, None) => SessionOwner::unverified(),
            (method, Some(name)) => {
                let owner = self.owner.as_deref().unwrap_or_default();
                // U+0000 cannot occur in an MQTT string, so the parts cannot run together.
                let key = format!("{}\0{owner}\0{name}", method.as_str());
                SessionOwner(Some(key.into_boxed_str()))
            }
        }
    }

    /// The identity as logs name it: `password:alice`, `device:acme/ops`, `unverified:bob`.
    pub fn describe(&self) -> String {
        let name = self.username.as_deref().unwrap_or("(anonymous)");
        describe(self.method.as_str(), self.owner.as_deref(), name)
    }
}

/// An identity's words (`method:name`, `method:owner/name`), as logs and the operator API
/// name it.
pub fn describe(method: &str, owner: Option<&str>, name: &str) -> String {
    match owner {
        Some(owner) => format!("{method}:{owner}/{name}"),
        None => format!("{method}:{name}"),
    }
}

/// The identity a persistent session is bound to: only the same method, owner and name may
/// resume it. Clients whose names nothing verified share one owner ([`SessionOwner::unverified`])
/// (none of them can be told apart), and never resume a verified identity's session or the
/// other way round. Kept as one boxed string (`method NUL owner NUL name`), so the common
/// unverified case costs a session no allocation.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct SessionOwner(Option<Box<str>>);

impl SessionOwner {
    /// Sessions of clients whose names were not verified (the default).
    pub const fn unverified() -> Self {
        Self(None)
    }

    /// A session recovered from a store that did not record owners: the first identity to
    /// resume it claims it.
    pub fn unknown() -> Self {
        Self(Some(Box::from("")))
    }

    /// Whether this is [`SessionOwner::unknown`].
    pub fn is_unknown(&self) -> bool {
        self.0.as_deref() == Some("")
    }

    /// Whether the session belongs to a key of the HTTP bridge (its mailbox).
    pub fn is_http_key(&self) -> bool {
        self.0
            .as_deref()
            .is_some_and(|key| key.starts_with("http\0"))
    }

    /// Whether the session belongs to an identity of the device fleet.
    pub fn is_fleet(&self) -> bool {
        self.0.as_deref().is_some_and(|key| {
            [Method::FleetDevice, Method::FleetOwner]
                .iter()
                .any(|method| {
                    key.strip_prefix(method.as_str())
                        .is_some_and(|rest| rest.starts_with('\0'))
                })
        })
    }

    /// The stored form: `None` for unverified, `""` for unknown, the key otherwise.
    pub fn as_stored(&self) -> Option<&str> {
        self.0.as_deref()
    }

    /// Back from [`SessionOwner::as_stored`].
    pub fn from_stored(stored: Option<&str>) -> Self {
        Self(stored.map(Box::from))
    }

    /// A stored key's parts, `(method, owner, name)` (the owner empty when the identity has
    /// none), for showing it; `None` for the unknown owner or a key of another form.
    pub fn parts_of(stored: &str) -> Option<(&str, &str, &str)> {
        let mut parts = stored.splitn(3, '\0');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(method), Some(owner), Some(name)) if !method.is_empty() => {
                Some((method, owner, name))
            }
            _ => None,
        }
    }
}

/// A slow credential check (password hashing) for the runtime to run off the broker thread;
/// its result goes back through [`crate::Broker::auth_finished`].
pub struct AuthJob(Box<dyn FnOnce() -> AuthDecision + Send>);

impl AuthJob {
    /// Wraps the check.
    pub fn new(check: impl FnOnce() -> AuthDecision + Send + 'static) -> Self {
        Self(Box::new(check))
    }

    /// Runs the check (blocking).
    pub fn run(self) -> AuthDecision {
        (self.0)()
    }
}

impl fmt::Debug for AuthJob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuthJob")
    }
}

/// An authenticator's answer.
#[derive(Debug)]
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
    /// Let the client in as this identity (user name, owner, topic restrictions).
    AcceptAs {
        /// Final Authentication Data, if the method has any.
        data: Option<Bytes>,
        /// Who the client is.
        identity: Identity,
    },
    /// Refuse with this reason code (CONNACK, mapped for 3.1.1; DISCONNECT on re-authentication).
    Refuse(ReasonCode),
    /// The answer needs a slow check: the core parks the CONNECT (holding any packets that
    /// follow it) and the runtime runs the job on another thread. Only for CONNECT.
    Pending(AuthJob),
}

/// Decides who may connect. Implementations must not block: slow checks (password hashing)
/// belong to the runtime, which can pre-compute and hand the result in.
pub trait Authenticator: fmt::Debug {
    /// A CONNECT arrived.
    fn authenticate(&mut self, request: &AuthRequest<'_>) -> AuthDecision;

    /// An AUTH packet continued enhanced authentication, or started re-authentication.
    fn continue_auth(&mut self, request: &AuthRequest<'_>) -> AuthDecision;

    /// The connection is gone: forget any exchange in progress for it.
    fn connection_closed(&mut self, _connection: ConnectionId) {}

    /// The slow check this authenticator handed out for `connection` (as
    /// [`AuthDecision::Pending`]) answered, accepting the client or not. The answer may come
    /// from a check handed out by an authenticator this one replaced.
    fn check_finished(&mut self, _connection: ConnectionId, _accepted: bool) {}
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_owner_splits_back_into_its_method_owner_and_name() {
        let device = Identity {
            method: Method::FleetDevice,
            username: Some("d1".into()),
            owner: Some("acme".into()),
            ..Identity::default()
        };
        let stored = device.session_owner();
        let stored = stored.as_stored().unwrap_or_default();
        assert_eq!(
            SessionOwner::parts_of(stored),
            Some(("fleet-device", "acme", "d1"))
        );
        let user = Identity {
            method: Method::Password,
            username: Some("alice".into()),
            ..Identity::default()
        };
        let stored = user.session_owner();
        assert_eq!(
            SessionOwner::parts_of(stored.as_stored().unwrap_or_default()),
            Some(("password", "", "alice"))
        );
        assert_eq!(SessionOwner::parts_of(""), None);
        assert_eq!(SessionOwner::parts_of("password"), None);
    }
}
