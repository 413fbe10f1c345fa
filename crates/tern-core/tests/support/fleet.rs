//! A fleet for the scenarios of the device fleet: devices, and an authenticator that lets a
//! registered device in as itself.

use tern_codec::ReasonCode;
use tern_core::fleet::{Device, DeviceCredential};
use tern_core::{
    Access, AuthDecision, AuthRequest, Authenticator, Authorizer, Identity, Method, Permissions,
    Principal,
};

pub(crate) fn device(owner: &str, udid: &str) -> Device {
    Device {
        owner: owner.into(),
        udid: udid.into(),
        alias: String::new(),
        platform: String::new(),
        firmware: String::new(),
        tags: Vec::new(),
        created_unix: 1_767_225_600,
        disabled: false,
        credential: DeviceCredential::HttpKey,
    }
}

/// Lets a registered device in as itself (disabled or not: the broker's own check is under
/// test), and anyone else as the password user its client identifier names.
#[derive(Debug)]
pub(crate) struct AsFleet;

impl Authenticator for AsFleet {
    fn authenticate(&mut self, request: &AuthRequest<'_>) -> AuthDecision {
        let identity = match request.fleet.device {
            Some(device) => Identity {
                method: Method::FleetDevice,
                username: Some(device.udid.clone()),
                owner: Some(device.owner.clone()),
                ..Identity::default()
            },
            None => Identity {
                method: Method::Password,
                username: Some(request.client_id.as_str().to_owned()),
                ..Identity::default()
            },
        };
        AuthDecision::AcceptAs {
            data: None,
            identity,
        }
    }

    fn continue_auth(&mut self, _request: &AuthRequest<'_>) -> AuthDecision {
        AuthDecision::Refuse(ReasonCode::BadAuthenticationMethod)
    }
}

/// Everything, as rules an operator configured would allow it: such rules open the fleet's
/// namespaces to clients that are not of the fleet (a console, a monitoring client).
#[derive(Debug)]
pub(crate) struct Everything;

impl Permissions for Everything {
    fn allows(&self, _access: Access, _topic: &str) -> bool {
        true
    }
}

/// Compiles [`Everything`] for every client.
#[derive(Debug)]
pub(crate) struct RulesAllowingAll;

impl Authorizer for RulesAllowingAll {
    fn permissions(&mut self, _principal: &Principal<'_>) -> Option<Box<dyn Permissions>> {
        Some(Box::new(Everything))
    }
}
