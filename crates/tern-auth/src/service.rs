//! The [`Authenticator`] the broker installs: one [`Profile`] per configured name, chosen per
//! listener, each a set of enabled methods. A CONNECT is judged by what it carries:
//!
//! 1. an Authentication Method: SCRAM-SHA-256 if the profile enables it, else 0x8C;
//! 2. no user name and no password: let in if the profile allows anonymous clients, else 0x87
//!    (a profile that allows anonymous clients and has no methods lets every client in);
//! 3. a password starting `hk1:` while the HTTP bridge runs: one of its keys
//!    ([`crate::key_login`]); a password starting `dk1:` with device keys enabled: a device key;
//! 4. a password that looks like a JWT with tokens enabled: a JWT;
//! 5. otherwise the password file, checked off the broker thread (argon2 is slow on purpose),
//!    unless the same user logged in with the same password before ([`LoginCache`]).
//!
//! Wrong credentials get 0x86 Bad user name or password (0x04 in 3.1.1). The reason is logged
//! with the user name, never the password. Each accepted client is an [`Identity`] of the
//! method that proved it ([`Method`]): names of different methods never meet. A profile may
//! also bind client identifiers to names ([`ClientIds::Own`]).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tern_codec::ReasonCode;
use tern_core::{
    AuthDecision, AuthJob, AuthRequest, Authenticator, ConnectionId, Identity, Method,
};
use tracing::warn;

use crate::cache::{LoginCache, LOGIN_CACHE_ENTRIES_MAX};
use crate::device::DeviceKeys;
use crate::directory::UserDirectory;
use crate::jwt::JwtVerifier;
use crate::key_login::{self, KeyLogins};
use crate::passwd::{hash_password, verify_password, PasswordFile};
use crate::scram::{self, FakeSaltKey, ScramFailure, ScramPending};

/// SCRAM exchanges in progress at once; the oldest is forgotten beyond this (its client, if
/// still there, fails the exchange and may retry).
const SCRAM_PENDING_MAX: usize = 4096;

/// Which client identifiers a profile's clients may use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ClientIds {
    /// Any (MQTT's own rule): a session is still bound to the identity that created it.
    #[default]
    Any,
    /// Only the client's own: its name, or its name followed by `-` and anything; so `%c` in
    /// ACL rules stays inside the client's name. An empty identifier (one the broker assigns)
    /// is allowed. Refused with 0x85 Client Identifier not valid (3.1.1: 0x02).
    Own,
}

impl ClientIds {
    /// Whether a client named `name` may use `client_id`.
    pub fn allows(self, name: Option<&str>, client_id: &str) -> bool {
        match (self, name) {
            (Self::Any, _) => true,
            (Self::Own, _) if client_id.is_empty() => true,
            (Self::Own, None) => false,
            (Self::Own, Some(name)) => client_id
                .strip_prefix(name)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('-')),
        }
    }
}

/// The methods one listener accepts.
#[derive(Debug, Clone, Default)]
pub struct Profile {
    /// Clients without a user name or password are let in.
    pub anonymous: bool,
    /// Users with argon2id hashes (and SCRAM keys).
    pub passwords: Option<Arc<PasswordFile>>,
    /// MQTT 5 enhanced authentication with SCRAM-SHA-256 against `passwords`.
    pub scram: bool,
    /// JWT bearer tokens in the password.
    pub jwt: Option<Arc<JwtVerifier>>,
    /// Device keys (per-owner secrets).
    pub devices: Option<Arc<DeviceKeys>>,
    /// Which client identifiers its clients may use.
    pub client_ids: ClientIds,
    /// The HTTP bridge's keys, for `hk1:` logins (set on every profile while it runs).
    pub http_keys: Option<Arc<dyn KeyLogins>>,
    /// Users kept outside the broker, asked for a user name the password file lacks.
    pub directory: Option<Arc<dyn UserDirectory>>,
}

impl Profile {
    /// Lets everyone in without credentials: the behaviour without any configuration.
    pub fn open() -> Self {
        Self {
            anonymous: true,
            ..Self::default()
        }
    }
}

/// The broker's authenticator: profiles by index (the listener's
/// [`tern_core::AuthRequest::profile`]).
#[derive(Debug)]
pub struct AuthService {
    profiles: Vec<Profile>,
    scram: HashMap<ConnectionId, ScramPending>,
    scram_order: VecDeque<ConnectionId>,
    /// A hash to verify against for unknown users, so they take as long as known ones.
    decoy_hash: Arc<str>,
    /// Successful password checks, so a client logging in again is not hashed again.
    logins: LoginCache,
    /// The same for users of a directory, whose checks learn the hash off the broker thread.
    pub(crate) directory_logins: Arc<Mutex<LoginCache>>,
    /// What SCRAM salts of unknown users are made from.
    fake_salts: FakeSaltKey,
}

impl AuthService {
    /// An authenticator over `profiles`.
    pub fn new(profiles: Vec<Profile>) -> Self {
        let decoy_hash = hash_password("decoy password for unknown users").unwrap_or_default();
        Self {
            profiles,
            scram: HashMap::new(),
            scram_order: VecDeque::new(),
            decoy_hash: decoy_hash.into(),
            logins: LoginCache::new(LOGIN_CACHE_ENTRIES_MAX),
            directory_logins: Arc::new(Mutex::new(LoginCache::new(LOGIN_CACHE_ENTRIES_MAX))),
            fake_salts: FakeSaltKey::random(),
        }
    }

    /// Makes the SCRAM salts of unknown users from `key` rather than a secret of this process
    /// (which would change them at a restart, while known users' stay).
    pub fn with_fake_salt_key(mut self, key: FakeSaltKey) -> Self {
        self.fake_salts = key;
        self
    }

    /// Remembers at most `entries` successful logins (0: none).
    pub fn with_login_cache(mut self, entries: usize) -> Self {
        self.logins = LoginCache::new(entries);
        self.directory_logins = Arc::new(Mutex::new(LoginCache::new(entries)));
        self
    }

    /// The remembered logins.
    pub fn login_cache(&self) -> &LoginCache {
        &self.logins
    }

    pub(crate) fn login_cache_mut(&mut self) -> &mut LoginCache {
        &mut self.logins
    }

    /// Lets the clients of every profile log in with the HTTP bridge's `keys`.
    pub fn with_http_keys(mut self, keys: Arc<dyn KeyLogins>) -> Self {
        for profile in &mut self.profiles {
            profile.http_keys = Some(Arc::clone(&keys));
        }
        self
    }

    fn scram_start(&mut self, profile: &Profile, request: &AuthRequest<'_>) -> AuthDecision {
        let Some(passwords) = profile.passwords.as_ref().filter(|_| profile.scram) else {
            return AuthDecision::Refuse(ReasonCode::BadAuthenticationMethod);
        };
        let lookup = |user: &str| passwords.get(user).and_then(|e| e.scram.clone());
        match scram::start(request.data.unwrap_or_default(), lookup, &self.fake_salts) {
            Ok((server_first, pending)) => {
                if self.scram.len() >= SCRAM_PENDING_MAX {
                    if let Some(oldest) = self.scram_order.pop_front() {
                        self.scram.remove(&oldest);
                    }
                }
                self.scram.insert(request.connection, pending);
                self.scram_order.push_back(request.connection);
                AuthDecision::Continue {
                    data: Bytes::from(server_first),
                }
            }
            Err(_) => {
                refused(request, "malformed SCRAM client-first message");
                AuthDecision::Refuse(ReasonCode::MalformedPacket)
            }
        }
    }

    fn scram_finish(&mut self, request: &AuthRequest<'_>) -> AuthDecision {
        let Some(pending) = self.scram.remove(&request.connection) else {
            refused(request, "SCRAM step without an exchange in progress");
            return AuthDecision::Refuse(ReasonCode::NotAuthorized);
        };
        self.scram_order.retain(|&id| id != request.connection);
        match scram::finish(&pending, request.data.unwrap_or_default()) {
            Ok(server_final) => {
                let identity = Identity {
                    method: Method::Password,
                    username: Some(pending.username),
                    ..Identity::default()
                };
                let data = Some(Bytes::from(server_final));
                self.accept_as(request, identity, data)
            }
            Err(failure) => {
                let why = match failure {
                    ScramFailure::Malformed => "malformed SCRAM client-final message",
                    ScramFailure::BadProof => "SCRAM proof wrong (or unknown user)",
                };
                warn!(
                    conn = request.connection.0,
                    user = %pending.username,
                    "authentication failed: {why}"
                );
                AuthDecision::Refuse(ReasonCode::BadUserNameOrPassword)
            }
        }
    }

    fn password(&mut self, profile: &Profile, request: &AuthRequest<'_>) -> AuthDecision {
        let username = request.username.map(|u| u.as_str());
        let password = request.password.unwrap_or_default();
        if let Some(keys) = profile
            .http_keys
            .as_ref()
            .filter(|_| password.starts_with(key_login::PASSWORD_PREFIX.as_bytes()))
        {
            let Some(key_id) = username else {
                refused(request, "HTTP key login without the key id as user name");
                return AuthDecision::Refuse(ReasonCode::BadUserNameOrPassword);
            };
            let client_id = request.client_id.as_str();
            return match key_login::verify(keys.as_ref(), key_id, client_id, password, unix_now()) {
                Ok(identity) => self.accept_as(request, identity, None),
                Err(failure) => {
                    refused(request, &format!("HTTP key refused: {failure:?}"));
                    AuthDecision::Refuse(ReasonCode::BadUserNameOrPassword)
                }
            };
        }
        if let Some(devices) = profile
            .devices
            .as_ref()
            .filter(|_| DeviceKeys::claims(password))
        {
            let Some(device) = username else {
                refused(request, "device key without a device identifier");
                return AuthDecision::Refuse(ReasonCode::BadUserNameOrPassword);
            };
            let now = unix_now();
            return match devices.verify(device, request.client_id.as_str(), password, now) {
                Ok(owner) => {
                    let identity = Identity {
                        method: Method::DeviceKey,
                        username: Some(device.to_owned()),
                        owner: Some(owner),
                        ..Identity::default()
                    };
                    self.accept_as(request, identity, None)
                }
                Err(failure) => {
                    refused(request, &format!("device key refused: {failure:?}"));
                    AuthDecision::Refuse(ReasonCode::BadUserNameOrPassword)
                }
            };
        }
        if let Some(jwt) = profile
            .jwt
            .as_ref()
            .filter(|_| JwtVerifier::claims(password))
        {
            return match jwt.verify(password, username) {
                Ok(token) => {
                    let identity = Identity {
                        method: Method::Token,
                        username: Some(token.username),
                        owner: None,
                        topics: token.topics,
                        // Checked again while connected: the connection ends with the token.
                        valid_for_millis: Some(
                            token
                                .valid_until_unix_secs
                                .saturating_mul(1000)
                                .saturating_sub(unix_now_millis()),
                        ),
                        directory: None,
                    };
                    self.accept_as(request, identity, None)
                }
                Err(failure) => {
                    refused(request, &format!("token refused: {failure:?}"));
                    AuthDecision::Refuse(ReasonCode::BadUserNameOrPassword)
                }
            };
        }
        let no_methods = profile.passwords.is_none()
            && profile.jwt.is_none()
            && profile.devices.is_none()
            && profile.directory.is_none();
        if no_methods && profile.anonymous {
            // Nothing to check against: the open profile takes the user name as given.
            if !profile
                .client_ids
                .allows(username, request.client_id.as_str())
            {
                return client_id_refused(request);
            }
            return AuthDecision::Accept { data: None };
        }
        if let (Some(directory), Some(user)) = (&profile.directory, username) {
            let in_file = (profile.passwords.as_ref()).is_some_and(|file| file.get(user).is_some());
            if !in_file {
                if !profile
                    .client_ids
                    .allows(Some(user), request.client_id.as_str())
                {
                    return client_id_refused(request);
                }
                return self.directory_login(request, directory, user);
            }
        }
        let (Some(passwords), Some(user)) = (&profile.passwords, username) else {
            refused(
                request,
                "no method of this listener accepts these credentials",
            );
            return AuthDecision::Refuse(ReasonCode::BadUserNameOrPassword);
        };
        if !profile
            .client_ids
            .allows(Some(user), request.client_id.as_str())
        {
            return client_id_refused(request);
        }
        let (hash, known): (Arc<str>, bool) = match passwords.get(user) {
            Some(entry) => (entry.hash.as_str().into(), true),
            None => (Arc::clone(&self.decoy_hash), false),
        };
        if known && self.logins.check(request.connection, user, &hash, password) {
            return password_accepted(user.to_owned());
        }
        let password = password.to_vec();
        let user = user.to_owned();
        let connection = request.connection.0;
        AuthDecision::Pending(AuthJob::new(move || {
            if verify_password(&hash, &password) && known {
                password_accepted(user)
            } else {
                let why = if known {
                    "wrong password"
                } else {
                    "unknown user"
                };
                warn!(conn = connection, user = %user, "authentication failed: {why}");
                AuthDecision::Refuse(ReasonCode::BadUserNameOrPassword)
            }
        }))
    }
}

impl AuthService {
    /// Lets a verified client in, if its profile lets it use its client identifier.
    pub(crate) fn accept_as(
        &self,
        request: &AuthRequest<'_>,
        identity: Identity,
        data: Option<Bytes>,
    ) -> AuthDecision {
        let client_ids = self
            .profiles
            .get(request.profile)
            .map_or(ClientIds::Any, |p| p.client_ids);
        let name = identity.username.as_deref();
        if !client_ids.allows(name, request.client_id.as_str()) {
            return client_id_refused(request);
        }
        AuthDecision::AcceptAs { data, identity }
    }
}

impl Authenticator for AuthService {
    fn authenticate(&mut self, request: &AuthRequest<'_>) -> AuthDecision {
        let Some(profile) = self.profiles.get(request.profile).cloned() else {
            refused(request, "listener has no authentication profile");
            return AuthDecision::Refuse(ReasonCode::NotAuthorized);
        };
        if let Some(method) = request.method {
            if method.as_str() == scram::METHOD {
                return self.scram_start(&profile, request);
            }
            refused(
                request,
                &format!("unsupported authentication method {:?}", method.as_str()),
            );
            return AuthDecision::Refuse(ReasonCode::BadAuthenticationMethod);
        }
        // A registered udid logs in only as its device, on every listener.
        if let Some(device) = request.fleet.device {
            return self.fleet_device(&profile, request, device);
        }
        if request.username.is_none() && request.password.is_none() {
            if profile.anonymous {
                return AuthDecision::Accept { data: None };
            }
            refused(
                request,
                "anonymous clients are not allowed on this listener",
            );
            return AuthDecision::Refuse(ReasonCode::NotAuthorized);
        }
        let decision = self.password(&profile, request);
        match request.fleet.owner {
            Some(owner) => self.fleet_owner(request, owner, decision),
            None => decision,
        }
    }

    fn continue_auth(&mut self, request: &AuthRequest<'_>) -> AuthDecision {
        if request.method.map(|m| m.as_str()) != Some(scram::METHOD) {
            return AuthDecision::Refuse(ReasonCode::BadAuthenticationMethod);
        }
        if self.scram.contains_key(&request.connection) {
            return self.scram_finish(request);
        }
        // Re-authentication starts a new exchange with a client-first message.
        let Some(profile) = self.profiles.get(request.profile).cloned() else {
            return AuthDecision::Refuse(ReasonCode::NotAuthorized);
        };
        self.scram_start(&profile, request)
    }

    fn connection_closed(&mut self, connection: ConnectionId) {
        if self.scram.remove(&connection).is_some() {
            self.scram_order.retain(|&id| id != connection);
        }
        self.logins.forget(connection);
    }

    fn check_finished(&mut self, connection: ConnectionId, accepted: bool) {
        self.logins.finished(connection, accepted);
    }
}

/// What a right password (checked, or remembered) lets `user` in as.
fn password_accepted(user: String) -> AuthDecision {
    AuthDecision::AcceptAs {
        data: None,
        identity: Identity {
            method: Method::Password,
            username: Some(user),
            ..Identity::default()
        },
    }
}

fn client_id_refused(request: &AuthRequest<'_>) -> AuthDecision {
    refused(
        request,
        "the client identifier is not the client's own (client_ids = \"own\")",
    );
    AuthDecision::Refuse(ReasonCode::ClientIdentifierNotValid)
}

fn refused(request: &AuthRequest<'_>, why: &str) {
    warn!(
        conn = request.connection.0,
        user = request.username.map(|u| u.as_str()),
        client = request.client_id.as_str(),
        "authentication failed: {why}"
    );
}

fn unix_now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or_default()
}

pub(crate) fn unix_now() -> u64 {
    unix_now_millis() / 1000
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use tern_codec::{MqttString, ProtocolVersion};

    fn decide(
        service: &mut AuthService,
        profile: usize,
        user: Option<&str>,
        password: Option<&[u8]>,
        method: Option<&str>,
    ) -> AuthDecision {
        let client_id = MqttString::new("c").unwrap_or_default();
        let username = user.and_then(|u| MqttString::new(u).ok());
        let method = method.and_then(|m| MqttString::new(m).ok());
        let request = AuthRequest {
            connection: ConnectionId(1),
            version: ProtocolVersion::V5,
            client_id: &client_id,
            username: username.as_ref(),
            password,
            method: method.as_ref(),
            data: None,
            profile,
            certificate_identity: None,
            fleet: tern_core::fleet::FleetLogin::default(),
        };
        match service.authenticate(&request) {
            AuthDecision::Pending(job) => job.run(),
            decision => decision,
        }
    }

    fn refused(decision: &AuthDecision) -> Option<ReasonCode> {
        match decision {
            AuthDecision::Refuse(code) => Some(*code),
            _ => None,
        }
    }

    fn profile_with_alice() -> Profile {
        let mut file = PasswordFile::default();
        file.set_password("alice", "pw").unwrap_or_default();
        Profile {
            passwords: Some(Arc::new(file)),
            ..Profile::default()
        }
    }

    fn scram_first(service: &mut AuthService) -> AuthDecision {
        let client_id = MqttString::new("c").unwrap_or_default();
        let method = MqttString::new(scram::METHOD).unwrap_or_default();
        let request = AuthRequest {
            connection: ConnectionId(1),
            version: ProtocolVersion::V5,
            client_id: &client_id,
            username: None,
            password: None,
            method: Some(&method),
            data: Some(b"n,,n=alice,r=abc"),
            profile: 0,
            certificate_identity: None,
            fleet: tern_core::fleet::FleetLogin::default(),
        };
        service.authenticate(&request)
    }

    #[test]
    fn profiles_decide_by_listener() {
        let locked = profile_with_alice();
        let mut service = AuthService::new(vec![Profile::open(), locked]);
        // The open profile lets everyone in, with or without a user name.
        assert_eq!(refused(&decide(&mut service, 0, None, None, None)), None);
        assert_eq!(
            refused(&decide(&mut service, 0, Some("x"), Some(b"y"), None)),
            None
        );
        // The locked one checks the password file, and refuses anonymous clients.
        assert_eq!(
            refused(&decide(&mut service, 1, Some("alice"), Some(b"pw"), None)),
            None
        );
        let bad = ReasonCode::BadUserNameOrPassword;
        assert_eq!(
            refused(&decide(&mut service, 1, Some("alice"), Some(b"no"), None)),
            Some(bad)
        );
        assert_eq!(
            refused(&decide(&mut service, 1, Some("bob"), Some(b"pw"), None)),
            Some(bad)
        );
        let anonymous = decide(&mut service, 1, None, None, None);
        assert_eq!(refused(&anonymous), Some(ReasonCode::NotAuthorized));
        // Enhanced methods: SCRAM is not enabled here; others are unknown.
        let scram = decide(&mut service, 1, None, None, Some(scram::METHOD));
        assert_eq!(refused(&scram), Some(ReasonCode::BadAuthenticationMethod));
        let other = decide(&mut service, 1, None, None, Some("OTHER"));
        assert_eq!(refused(&other), Some(ReasonCode::BadAuthenticationMethod));
        // A SCRAM exchange left half-way is forgotten when its connection goes.
        let mut service = AuthService::new(vec![Profile {
            scram: true,
            ..profile_with_alice()
        }]);
        let started = scram_first(&mut service);
        assert!(matches!(started, AuthDecision::Continue { .. }));
        assert_eq!(service.scram.len(), 1);
        service.connection_closed(ConnectionId(1));
        assert!(service.scram.is_empty() && service.scram_order.is_empty());
        // A listener with an unknown profile lets nobody in.
        assert_eq!(
            refused(&decide(&mut service, 9, None, None, None)),
            Some(ReasonCode::NotAuthorized)
        );
    }

    /// What `service` decides for a CONNECT (MQTT 5) of `client_id` with `user` and `pw`, a
    /// pending check run to its end.
    pub(crate) fn decide_as(
        service: &mut AuthService,
        client_id: &str,
        user: &str,
        pw: &[u8],
    ) -> AuthDecision {
        let client_id = MqttString::new(client_id).unwrap_or_default();
        let username = MqttString::new(user).ok();
        let request = AuthRequest {
            connection: ConnectionId(1),
            version: ProtocolVersion::V5,
            client_id: &client_id,
            username: username.as_ref(),
            password: Some(pw),
            method: None,
            data: None,
            profile: 0,
            certificate_identity: None,
            fleet: tern_core::fleet::FleetLogin::default(),
        };
        match service.authenticate(&request) {
            AuthDecision::Pending(job) => job.run(),
            decision => decision,
        }
    }

    #[test]
    fn each_method_names_its_own_identity() {
        let mut profile = profile_with_alice();
        profile.devices = Some(Arc::new(DeviceKeys::new(
            [("acme".to_owned(), b"s".to_vec())].into_iter().collect(),
            300,
        )));
        let mut service = AuthService::new(vec![profile]);
        let identity = |decision: AuthDecision| match decision {
            AuthDecision::AcceptAs { identity, .. } => Some(identity),
            _ => None,
        };
        let alice = identity(decide_as(&mut service, "c", "alice", b"pw"));
        assert_eq!(alice.as_ref().map(|i| i.method), Some(Method::Password));
        let key = crate::device_password("acme", b"s", "alice", "c", unix_now());
        let device = identity(decide_as(&mut service, "c", "alice", key.as_bytes()));
        assert_eq!(device.as_ref().map(|i| i.method), Some(Method::DeviceKey));
        assert_eq!(
            device.as_ref().and_then(|i| i.owner.as_deref()),
            Some("acme")
        );
        // One name, two identities: their sessions are not each other's.
        let (Some(alice), Some(device)) = (alice, device) else {
            panic!("both let in");
        };
        assert_ne!(alice.session_owner(), device.session_owner());
    }

    #[test]
    fn own_client_identifiers_start_with_the_clients_name() {
        let mut profile = profile_with_alice();
        profile.client_ids = ClientIds::Own;
        let mut service = AuthService::new(vec![profile]);
        for (client_id, allowed) in [
            ("alice", true),
            ("alice-phone", true),
            ("", true),
            ("alicex", false),
            ("bob-phone", false),
            ("ali", false),
        ] {
            let decision = decide_as(&mut service, client_id, "alice", b"pw");
            let code = refused(&decision);
            if allowed {
                assert_eq!(code, None, "{client_id:?}");
            } else {
                assert_eq!(
                    code,
                    Some(ReasonCode::ClientIdentifierNotValid),
                    "{client_id:?}"
                );
            }
        }
        // Any client identifier with the default.
        let mut open = AuthService::new(vec![profile_with_alice()]);
        assert_eq!(
            refused(&decide_as(&mut open, "bob-phone", "alice", b"pw")),
            None
        );
    }
}
