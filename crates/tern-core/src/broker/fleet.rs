//! The device fleet on the broker thread: the registry's changes (each kept by the store, as
//! the rest of the broker's state), and the check every CONNECT passes once authenticated: a
//! registered udid is used only by that device, logged in as itself, while it is enabled.

use tern_codec::{ProtocolVersion, ReasonCode, TopicName};

use super::Broker;
use crate::auth::{Identity, Method};
use crate::events::{CloseReason, Event, FleetChange};
use crate::fleet::{Device, DeviceCredential, FleetError, Owner, Registry};
use crate::store::StoreOp;
use crate::types::{ConnectionId, Time};

impl Broker {
    /// The fleet's registry.
    pub fn fleet(&self) -> &Registry {
        &self.fleet
    }

    /// Adds a device (and its owner, if new).
    pub fn fleet_add(&mut self, device: Device) -> Result<(), FleetError> {
        if let Some(owner) = self.fleet.add(device.clone())? {
            self.persist(StoreOp::FleetOwnerSet(owner));
        }
        self.fleet_changed(&device, FleetChange::Added);
        self.persist(StoreOp::FleetDeviceSet(device));
        Ok(())
    }

    /// Reports a change of a device's registry entry or status to observers.
    fn fleet_changed(&mut self, device: &Device, change: FleetChange) {
        self.events.push_back(Event::FleetChanged {
            owner: device.owner.clone(),
            udid: device.udid.clone(),
            change,
        });
    }

    /// Records an owner, or gives it a new password.
    pub fn fleet_set_owner(&mut self, owner: Owner) -> Result<(), FleetError> {
        self.fleet.set_owner(owner.clone())?;
        self.persist(StoreOp::FleetOwnerSet(owner));
        Ok(())
    }

    /// Disables a device (its connection is closed at once, and it is refused from now on),
    /// or enables it again.
    pub fn fleet_disable(
        &mut self,
        udid: &str,
        disabled: bool,
        now: Time,
    ) -> Result<(), FleetError> {
        let device = self.fleet.device_mut(udid)?;
        device.disabled = disabled;
        let record = device.clone();
        self.fleet_changed(&record, FleetChange::Changed);
        self.persist(StoreOp::FleetDeviceSet(record));
        if disabled {
            self.admin_kick(udid, false, now);
        }
        Ok(())
    }

    /// Gives a device that logs in with a password a new one (an argon2id hash): its next
    /// CONNECT needs it; a connection open now stays.
    pub fn fleet_set_password(&mut self, udid: &str, hash: String) -> Result<(), FleetError> {
        let device = self.fleet.device_mut(udid)?;
        let DeviceCredential::Password(kept) = &mut device.credential else {
            return Err(FleetError::NoPassword(udid.to_owned()));
        };
        *kept = hash;
        let record = device.clone();
        self.fleet_changed(&record, FleetChange::Changed);
        self.persist(StoreOp::FleetDeviceSet(record));
        Ok(())
    }

    /// Deletes a device: its connection is closed, its session ends (and leaves the store),
    /// and the retained messages of its channel and its status are cleared.
    pub fn fleet_delete(&mut self, udid: &str, now: Time) -> Result<Device, FleetError> {
        let device = self.fleet.remove(udid)?;
        self.fleet_changed(&device, FleetChange::Deleted);
        self.persist(StoreOp::FleetDeviceRemove(device.udid.clone()));
        self.admin_kick(udid, true, now);
        self.fleet_notify_forget(udid);
        let topics = &self.config.fleet;
        let retained = [
            topics.device(&device.owner, &device.udid),
            topics.status(&device.owner, &device.udid),
        ];
        for topic in retained {
            if let Ok(topic) = topic.parse::<TopicName>() {
                self.admin_retained_delete(&topic);
            }
        }
        Ok(device)
    }

    /// Loads the registry a store kept.
    pub(super) fn fleet_restore(&mut self, owners: Vec<Owner>, devices: Vec<Device>) {
        self.fleet = Registry::from_records(owners, devices);
    }

    /// Whether a client the authenticator let in as `identity`, with `client_id`, may have
    /// the connection: a registered udid only as that device (enabled), and a fleet identity
    /// only while its registry entry is there. Refuses the CONNECT (0x87 Not authorized; 3.1.1:
    /// 0x05) with the reason logged otherwise.
    pub(super) fn fleet_admits(
        &mut self,
        id: ConnectionId,
        version: ProtocolVersion,
        client_id: &str,
        identity: &Identity,
        now: Time,
    ) -> bool {
        let name = identity.username.as_deref().unwrap_or_default();
        let owner = identity.owner.as_deref().unwrap_or_default();
        let refusal = match (self.fleet.device(client_id), identity.method) {
            (Some(device), Method::FleetDevice) if device.udid != name || device.owner != owner => {
                Some("the client identifier is another device's udid")
            }
            (Some(device), Method::FleetDevice) if device.disabled => {
                Some("the device is disabled")
            }
            (Some(_), Method::FleetDevice) => None,
            (Some(_), _) => Some("the client identifier is a registered device's udid"),
            (None, Method::FleetDevice) => Some("the device is not registered"),
            (None, Method::FleetOwner) if self.fleet.owner(owner).is_none() => {
                Some("the owner is not registered")
            }
            (None, _) => None,
        };
        let Some(why) = refusal else {
            return true;
        };
        let reason = CloseReason::FleetRefused(why);
        self.refuse_connect_because(id, version, ReasonCode::NotAuthorized, reason, now);
        false
    }
}
