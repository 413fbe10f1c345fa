//! The device fleet's logins and namespaces, attacked: a device of owner A reads and writes
//! only its own channel, its status and A's shared channel (no wildcard, other owner, other
//! device or owner root gets through); an owner gets its whole fleet and nothing of another;
//! configured rules never widen a fleet identity, and a password user named like a device or
//! an owner is neither. Logins: a registered udid is logged in only by its own credential.
#![allow(clippy::expect_used, clippy::unwrap_used)] // Test code: a panic is a failure.

use std::sync::Arc;

use tern_auth::{Acl, AuthService, PasswordFile, Profile, Rule};
use tern_codec::{MqttString, ProtocolVersion, ReasonCode};
use tern_core::fleet::{Device, DeviceCredential, FleetLogin, FleetTopics, Owner};
use tern_core::{
    Access, AuthDecision, AuthRequest, Authenticator, ConnectionId, Identity, Method, Permissions,
};

fn identity(method: Method, name: &str, owner: Option<&str>) -> Identity {
    Identity {
        method,
        username: Some(name.to_owned()),
        owner: owner.map(str::to_owned),
        ..Identity::default()
    }
}

fn device_of(owner: &str, udid: &str) -> Identity {
    identity(Method::FleetDevice, udid, Some(owner))
}

/// Configured rules a careless operator might write: they must not reach fleet identities.
fn generous_acl() -> Acl {
    let everything = Rule {
        topic: "#".to_owned(),
        ..Rule::default()
    };
    let own = Rule {
        topic: "/%o/#".to_owned(),
        ..Rule::default()
    };
    Acl::new(vec![own, everything]).unwrap()
}

const DENIED_TO_ACME_D1: [(Access, &str); 22] = [
    (Access::Subscribe, "#"),
    (Access::Subscribe, "/#"),
    (Access::Subscribe, "+/#"),
    (Access::Subscribe, "/+/+/status"),
    (Access::Subscribe, "/+/d1/status"),
    (Access::Subscribe, "/acme/#"),
    (Access::Subscribe, "/acme/+"),
    (Access::Subscribe, "/acme/+/status"),
    (Access::Subscribe, "/acme/d1/#"),
    (Access::Subscribe, "/acme/d2"),
    (Access::Subscribe, "/acme/d2/status"),
    (Access::Subscribe, "/globex/#"),
    (Access::Subscribe, "/globex/d9/status"),
    (Access::Subscribe, "/globex/shared/#"),
    (Access::Subscribe, "$SYS/#"),
    (Access::Publish, "/acme/d2"),
    (Access::Publish, "/acme/d2/status"),
    (Access::Publish, "/acme"),
    (Access::Publish, "/acme/d1/other"),
    (Access::Publish, "/globex/d9/status"),
    (Access::Publish, "/globex/shared/x"),
    (Access::Publish, "acme/d1/status"),
];

#[test]
fn a_device_has_its_channel_its_status_and_its_owners_shared_channel_only() {
    for acl in [
        Acl::allow_all(),
        generous_acl(),
        Acl::new(Vec::new()).unwrap(),
    ] {
        let p = acl.compile("d1", &device_of("acme", "d1"));
        for topic in [
            "/acme/d1",
            "/acme/d1/status",
            "/acme/shared/x",
            "/acme/shared",
        ] {
            assert!(p.allows(Access::Publish, topic), "{topic}");
            assert!(p.allows(Access::Subscribe, topic), "{topic}");
        }
        assert!(p.allows(Access::Subscribe, "/acme/shared/#"));
        assert!(p.allows(Access::Subscribe, "/acme/shared/+/x"));
        for (access, topic) in DENIED_TO_ACME_D1 {
            assert!(!p.allows(access, topic), "{access:?} {topic}");
        }
    }
}

#[test]
fn an_owner_has_its_fleet_and_nothing_of_another() {
    let p = generous_acl().compile("dash", &identity(Method::FleetOwner, "acme", Some("acme")));
    assert!(p.allows(Access::Subscribe, "/acme/#"));
    assert!(p.allows(Access::Subscribe, "/acme/+/status"));
    assert!(p.allows(Access::Publish, "/acme/d1"));
    for (access, topic) in [
        (Access::Subscribe, "#"),
        (Access::Subscribe, "/+/d1/status"),
        (Access::Subscribe, "/globex/#"),
        (Access::Publish, "/globex/d9"),
        (Access::Publish, "acme/d1"),
    ] {
        assert!(!p.allows(access, topic), "{access:?} {topic}");
    }
}

#[test]
fn the_layout_without_the_leading_slash_is_configurable() {
    let acl = Acl::allow_all().with_fleet_topics(FleetTopics::new("").unwrap());
    let p = acl.compile("d1", &device_of("acme", "d1"));
    assert!(p.allows(Access::Publish, "acme/d1/status"));
    assert!(p.allows(Access::Subscribe, "acme/shared/#"));
    assert!(!p.allows(Access::Publish, "/acme/d1/status"));
    assert!(!p.allows(Access::Subscribe, "acme/+/status"));
    assert!(FleetTopics::new("fleet").is_err());
    assert!(FleetTopics::new("fleet/#/").is_err());
}

#[test]
fn names_of_other_methods_are_not_fleet_identities() {
    // With rules in force (here: none allow anything), a password user, a device key or a
    // token named like a device gets nothing of the device's namespace.
    let acl = Acl::new(Vec::new()).unwrap();
    for method in [
        Method::Password,
        Method::DeviceKey,
        Method::Token,
        Method::HttpKey,
    ] {
        let p = acl.compile("d1", &identity(method, "d1", Some("acme")));
        assert!(!p.allows(Access::Publish, "/acme/d1/status"), "{method:?}");
        assert!(!p.allows(Access::Subscribe, "/acme/shared/#"), "{method:?}");
    }
}

fn device(credential: DeviceCredential) -> Device {
    Device {
        owner: "acme".into(),
        udid: "d1".into(),
        alias: String::new(),
        platform: String::new(),
        firmware: String::new(),
        tags: Vec::new(),
        created_unix: 0,
        disabled: false,
        credential,
    }
}

struct Login<'a> {
    client_id: &'a str,
    username: Option<&'a str>,
    password: Option<&'a str>,
    certificate: Option<&'a str>,
    fleet: FleetLogin<'a>,
}

fn login(service: &mut AuthService, login: &Login<'_>) -> AuthDecision {
    let client_id = MqttString::new(login.client_id).unwrap();
    let username = login.username.map(|u| MqttString::new(u).unwrap());
    let request = AuthRequest {
        connection: ConnectionId(1),
        version: ProtocolVersion::V311,
        client_id: &client_id,
        username: username.as_ref(),
        password: login.password.map(str::as_bytes),
        method: None,
        data: None,
        certificate_identity: login.certificate,
        profile: 0,
        fleet: login.fleet,
    };
    match service.authenticate(&request) {
        AuthDecision::Pending(job) => job.run(),
        decision => decision,
    }
}

fn accepted_as(decision: AuthDecision) -> Result<Identity, ReasonCode> {
    match decision {
        AuthDecision::AcceptAs { identity, .. } => Ok(identity),
        AuthDecision::Refuse(code) => Err(code),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn a_registered_udid_logs_in_only_with_its_own_credential() {
    let mut users = PasswordFile::default();
    users.set_password("d1", "user-pw").unwrap();
    users.set_password("acme", "user-pw").unwrap();
    let profile = Profile {
        passwords: Some(Arc::new(users)),
        anonymous: true,
        ..Profile::default()
    };
    let mut service = AuthService::new(vec![profile]).with_login_cache(0);
    let hash = tern_auth::passwd::hash_password("device-pw").unwrap();
    let by_password = device(DeviceCredential::Password(hash.clone()));
    let fleet = FleetLogin {
        device: Some(&by_password),
        owner: None,
    };
    let as_device = |username, password| Login {
        client_id: "d1",
        username,
        password,
        certificate: None,
        fleet,
    };
    // THiNX: the owner's id as user name, or the udid.
    for user in [Some("acme"), Some("d1"), None] {
        let identity = accepted_as(login(&mut service, &as_device(user, Some("device-pw"))));
        assert_eq!(identity.unwrap(), device_of("acme", "d1"));
    }
    // The password of a password user named like the device is not the device's.
    let wrong = login(&mut service, &as_device(Some("d1"), Some("user-pw")));
    assert_eq!(accepted_as(wrong), Err(ReasonCode::BadUserNameOrPassword));
    let other_name = login(&mut service, &as_device(Some("globex"), Some("device-pw")));
    assert_eq!(
        accepted_as(other_name),
        Err(ReasonCode::BadUserNameOrPassword)
    );
    // Nor does an anonymous CONNECT with the udid get in on an open listener.
    let anonymous = login(&mut service, &as_device(None, None));
    assert_eq!(
        accepted_as(anonymous),
        Err(ReasonCode::BadUserNameOrPassword)
    );
    // Disabled: refused with its right password.
    let mut disabled = by_password.clone();
    disabled.disabled = true;
    let mut attempt = as_device(Some("acme"), Some("device-pw"));
    attempt.fleet.device = Some(&disabled);
    assert_eq!(
        accepted_as(login(&mut service, &attempt)),
        Err(ReasonCode::NotAuthorized)
    );
    // By certificate CN: the verified certificate's name, nothing else.
    let by_cert = device(DeviceCredential::CertificateCn("d1.acme".into()));
    let mut attempt = as_device(None, None);
    attempt.fleet.device = Some(&by_cert);
    attempt.certificate = Some("d1.acme");
    assert!(accepted_as(login(&mut service, &attempt)).is_ok());
    attempt.certificate = Some("d2.acme");
    assert!(accepted_as(login(&mut service, &attempt)).is_err());
    // A password user of the same name, with another client identifier, stays a user.
    let user = Login {
        client_id: "laptop",
        username: Some("d1"),
        password: Some("user-pw"),
        certificate: None,
        fleet: FleetLogin::default(),
    };
    let identity = accepted_as(login(&mut service, &user)).unwrap();
    assert_eq!(identity.method, Method::Password);
}

#[test]
fn an_owner_logs_in_by_its_password_and_a_user_of_its_name_stays_a_user() {
    let mut users = PasswordFile::default();
    users.set_password("acme", "user-pw").unwrap();
    let profile = Profile {
        passwords: Some(Arc::new(users)),
        ..Profile::default()
    };
    let mut service = AuthService::new(vec![profile]);
    let owner = owner_acme();
    let mut as_owner = |password| accepted_as(owner_login(&mut service, &owner, password));
    let identity = as_owner("owner-pw").unwrap();
    assert_eq!(identity, identity_of_owner());
    assert_eq!(as_owner("user-pw").unwrap().method, Method::Password);
    assert_eq!(as_owner("guess"), Err(ReasonCode::BadUserNameOrPassword));
}

fn identity_of_owner() -> Identity {
    identity(Method::FleetOwner, "acme", Some("acme"))
}

/// Owner acme, whose password is `owner-pw`.
fn owner_acme() -> Owner {
    Owner {
        id: "acme".into(),
        created_unix: 0,
        password_hash: Some(tern_auth::passwd::hash_password("owner-pw").unwrap()),
    }
}

/// A console's CONNECT with owner acme's id as user name.
fn owner_login(service: &mut AuthService, owner: &Owner, password: &str) -> AuthDecision {
    let attempt = Login {
        client_id: "console",
        username: Some("acme"),
        password: Some(password),
        certificate: None,
        fleet: FleetLogin {
            device: None,
            owner: Some(owner),
        },
    };
    login(service, &attempt)
}

#[test]
fn an_owner_logs_in_as_itself_on_a_listener_open_to_every_name() {
    let mut service = AuthService::new(vec![Profile::open()]);
    let owner = owner_acme();
    let mut login_with = |password| owner_login(&mut service, &owner, password);
    let identity = accepted_as(login_with("owner-pw")).unwrap();
    assert_eq!(identity, identity_of_owner());
    // Any other password: let in as the open listener lets every name in, unverified.
    assert!(matches!(login_with("other"), AuthDecision::Accept { .. }));
}
