//! The device fleet's logins and namespaces. A CONNECT whose client identifier is a registered
//! device's udid is that device's login, proved by the device's own credential (an MQTT
//! password, a key of the HTTP bridge, or a certificate CN) and nothing else; a user name that
//! names an owner with a password may log in as that owner. Either becomes a fleet identity
//! ([`Method::FleetDevice`], [`Method::FleetOwner`]), whose permissions follow from its owner
//! and udid by rule, never from configured ACL rules: a device reads and writes its own
//! channel, its status and its owner's `shared/#`; an owner everything under its root.

use bytes::Bytes;
use tern_codec::ReasonCode;
use tern_core::fleet::{Device, DeviceCredential, FleetTopics, Owner};
use tern_core::{AuthDecision, AuthJob, AuthRequest, Identity, Method};
use tracing::warn;

use crate::acl::{CompiledAcl, RuleAccess};
use crate::key_login;
use crate::passwd::verify_password;
use crate::service::{unix_now, AuthService, Profile};

/// The permissions of a fleet identity, or `None` for any other.
pub(crate) fn permissions(topics: &FleetTopics, identity: &Identity) -> Option<CompiledAcl> {
    let owner = identity.owner.as_deref()?;
    let filters = match identity.method {
        Method::FleetDevice => {
            let udid = identity.username.as_deref()?;
            topics.device_filters(owner, udid).to_vec()
        }
        Method::FleetOwner => vec![topics.owner_filter(owner)],
        _ => return None,
    };
    // An owner also hears the broker's events about its devices.
    let events = (identity.method == Method::FleetOwner).then(|| topics.events_filter(owner));
    let rules = filters.iter().map(|f| (RuleAccess::Both, f.as_str()));
    let events = events.iter().map(|f| (RuleAccess::Subscribe, f.as_str()));
    Some(CompiledAcl::allowing(rules.chain(events)))
}

fn device_identity(device: &Device) -> Identity {
    Identity {
        method: Method::FleetDevice,
        username: Some(device.udid.clone()),
        owner: Some(device.owner.clone()),
        ..Identity::default()
    }
}

fn owner_identity(owner: &str) -> Identity {
    Identity {
        method: Method::FleetOwner,
        username: Some(owner.to_owned()),
        owner: Some(owner.to_owned()),
        ..Identity::default()
    }
}

/// The key a device's remembered login is kept under: NUL cannot occur in an MQTT user name,
/// so it never meets a user of the password file.
fn login_key(device: &Device) -> String {
    format!("\0fleet\0{}", device.udid)
}

fn refuse(request: &AuthRequest<'_>, why: &str, code: ReasonCode) -> AuthDecision {
    warn!(
        conn = request.connection.0,
        user = request.username.map(|u| u.as_str()),
        client = request.client_id.as_str(),
        "authentication failed: {why}"
    );
    AuthDecision::Refuse(code)
}

impl AuthService {
    /// The login of a registered device (the CONNECT's client identifier is its udid).
    pub(crate) fn fleet_device(
        &mut self,
        profile: &Profile,
        request: &AuthRequest<'_>,
        device: &Device,
    ) -> AuthDecision {
        let wrong = ReasonCode::BadUserNameOrPassword;
        if device.disabled {
            return refuse(request, "device disabled", ReasonCode::NotAuthorized);
        }
        let username = request.username.map(|u| u.as_str());
        let password = request.password.unwrap_or_default();
        match &device.credential {
            DeviceCredential::CertificateCn(cn) => match request.certificate_identity {
                Some(presented) if presented == cn => {
                    self.accept_as(request, device_identity(device), None)
                }
                _ => refuse(
                    request,
                    "device certificate missing or of another name",
                    wrong,
                ),
            },
            DeviceCredential::HttpKey => {
                let (Some(keys), Some(key_id)) = (&profile.http_keys, username) else {
                    return refuse(
                        request,
                        "device key login without the HTTP bridge's keys or a key id",
                        wrong,
                    );
                };
                let udid = request.client_id.as_str();
                match key_login::verify(keys.as_ref(), key_id, udid, password, unix_now()) {
                    Ok(key) if key.username.as_deref() == Some(udid) => {
                        self.accept_as(request, device_identity(device), None)
                    }
                    Ok(_) => refuse(request, "the HTTP key speaks for another client", wrong),
                    Err(failure) => {
                        refuse(request, &format!("device key refused: {failure:?}"), wrong)
                    }
                }
            }
            DeviceCredential::Password(hash) => {
                // THiNX devices give their owner's id as user name; the udid is accepted too.
                if username.is_some_and(|u| u != device.owner && u != device.udid) {
                    return refuse(
                        request,
                        "device user name is neither its owner nor its udid",
                        wrong,
                    );
                }
                let key = login_key(device);
                if self
                    .login_cache_mut()
                    .check(request.connection, &key, hash, password)
                {
                    return AuthDecision::AcceptAs {
                        data: None,
                        identity: device_identity(device),
                    };
                }
                let (hash, password) = (hash.clone(), password.to_vec());
                let (identity, connection) = (device_identity(device), request.connection.0);
                AuthDecision::Pending(AuthJob::new(move || {
                    if verify_password(&hash, &password) {
                        return AuthDecision::AcceptAs {
                            data: None,
                            identity,
                        };
                    }
                    warn!(
                        conn = connection,
                        "authentication failed: wrong device password"
                    );
                    AuthDecision::Refuse(ReasonCode::BadUserNameOrPassword)
                }))
            }
        }
    }

    /// The login of a user name that names an owner with a password: the owner's password
    /// makes it the owner; any other goes on as `otherwise` decides (a user of the password
    /// file of the same name is another identity).
    pub(crate) fn fleet_owner(
        &mut self,
        request: &AuthRequest<'_>,
        owner: &Owner,
        otherwise: AuthDecision,
    ) -> AuthDecision {
        let Some(hash) = owner.password_hash.clone() else {
            return otherwise;
        };
        let password = request.password.unwrap_or_default().to_vec();
        // A success of this check is the owner's: it must not be remembered as the user's.
        self.login_cache_mut().forget(request.connection);
        let identity = owner_identity(&owner.id);
        let fallback: Box<dyn FnOnce() -> AuthDecision + Send> = match otherwise {
            AuthDecision::Pending(job) => Box::new(move || job.run()),
            AuthDecision::Refuse(code) => Box::new(move || AuthDecision::Refuse(code)),
            // A listener that lets every name in unverified: unverified, unless the password
            // is the owner's.
            AuthDecision::Accept { data } => Box::new(move || AuthDecision::Accept { data }),
            // Let in already as someone else (a remembered login, a key): that stands.
            decided => return decided,
        };
        AuthDecision::Pending(AuthJob::new(move || {
            match verify_password(&hash, &password) {
                true => AuthDecision::AcceptAs {
                    data: None::<Bytes>,
                    identity,
                },
                false => fallback(),
            }
        }))
    }
}
