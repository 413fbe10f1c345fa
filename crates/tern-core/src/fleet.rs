//! The device fleet's registry: owners and their devices (a device's udid is its client
//! identifier), each device with the credential it logs in with. The broker keeps it in memory
//! and hands every change to the store as a [`crate::StoreOp`], like the rest of its durable
//! state; the authenticator sees the entry a CONNECT names ([`FleetLogin`]), and a fleet
//! identity's permissions follow from its owner and udid by rule ([`FleetTopics`]).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::IpAddr;
use std::ops::Bound;

use tern_codec::ProtocolVersion;

use crate::firmware::{Catalogue, Registration};
use crate::types::Time;

/// Connects within a minute past which a device is flagged as flapping.
pub const FLAPPING_CONNECTS: usize = 6;
/// Status changes kept per device, the newest last (older ones go).
pub const STATUS_HISTORY_MAX: usize = 10;
/// THiNX's status payload while a device is connected (published, retained, for a device that
/// set no will of its own).
pub const STATUS_CONNECTED: &[u8] = b"{\"status\":\"connected\"}";
/// THiNX's status payload once a device's connection has ended.
pub const STATUS_DISCONNECTED: &[u8] = b"{\"status\":\"disconnected\"}";

/// How a device proves who it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceCredential {
    /// An MQTT password: its argon2id PHC string (as in the password file).
    Password(String),
    /// A key of the HTTP bridge (`d:UDID`): an `hk1:` password over MQTT, or a signed request.
    HttpKey,
    /// A client certificate whose CN (or first SAN) is this, verified at the TLS handshake.
    CertificateCn(String),
}

impl DeviceCredential {
    /// The word the operator interface uses for the kind of credential.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Password(_) => "password",
            Self::HttpKey => "key",
            Self::CertificateCn(_) => "cert-cn",
        }
    }
}

/// One device of an owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// The owner it belongs to.
    pub owner: String,
    /// Its unique device identifier, which is also its MQTT client identifier.
    pub udid: String,
    /// A name for people.
    pub alias: String,
    /// Its platform (e.g. `esp32`), as registered.
    pub platform: String,
    /// Its firmware version, as registered.
    pub firmware: String,
    /// Free tags.
    pub tags: Vec<String>,
    /// When it was added (Unix seconds).
    pub created_unix: u64,
    /// A disabled device is refused at CONNECT.
    pub disabled: bool,
    /// What it logs in with.
    pub credential: DeviceCredential,
}

/// An owner of devices; with a password, it logs in over MQTT as the owner identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// Its identifier (THiNX's owner hash, or a slug).
    pub id: String,
    /// When it was first recorded (Unix seconds).
    pub created_unix: u64,
    /// The argon2id PHC string of its MQTT password, if it logs in itself.
    pub password_hash: Option<String>,
}

/// The registry entries a CONNECT names, for the authenticator: the device whose udid is its
/// client identifier, and the owner its user name names.
#[derive(Debug, Clone, Copy, Default)]
pub struct FleetLogin<'a> {
    /// The device registered under the client identifier.
    pub device: Option<&'a Device>,
    /// The owner named by the user name.
    pub owner: Option<&'a Owner>,
}

/// Why a registry change was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FleetError {
    /// An owner or udid that cannot be a single topic level of the fleet's topics.
    #[error(
        "{what} {name:?} cannot name a topic level: it must be non-empty, without '/', '+', '#' \
         or NUL, and not start with '$'"
    )]
    BadName {
        /// `owner` or `udid`.
        what: &'static str,
        /// The name.
        name: String,
    },
    /// `shared` is the owner's shared channel, not a device.
    #[error("\"shared\" names the owner's shared channel and cannot be a device")]
    ReservedUdid,
    /// The udid is registered already (client identifiers are unique across owners).
    #[error("device {0:?} is registered already")]
    Exists(String),
    /// No such device.
    #[error("no device {0:?}")]
    NoDevice(String),
    /// The device logs in with another credential than a password.
    #[error("device {0:?} logs in with no password (its credential is a key or a certificate)")]
    NoPassword(String),
}

/// Checks that `name` can stand as one level of the fleet's topics.
pub fn check_name(what: &'static str, name: &str) -> Result<(), FleetError> {
    let bad = name.is_empty() || name.starts_with('$') || name.contains(['/', '+', '#', '\0']);
    match bad {
        true => Err(FleetError::BadName {
            what,
            name: name.to_owned(),
        }),
        false => Ok(()),
    }
}

/// What the broker knows of a device's connection (since it started: not kept by the store).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceStatus {
    /// Whether it is connected.
    pub online: bool,
    /// Since when (the broker's time).
    pub since: Time,
    /// When it was last seen connecting or disconnecting.
    pub last_seen: Time,
    /// Its address on its last connection.
    pub address: Option<IpAddr>,
    /// The protocol of its last connection.
    pub version: Option<ProtocolVersion>,
    /// Whether its last connection set a will of its own (then the broker does not publish its
    /// status).
    pub own_will: bool,
    /// Connected more than `FLAPPING_CONNECTS` times within the last minute.
    pub flapping: bool,
    /// When it was last seen in a signed request of the HTTP bridge (its own key `d:UDID`).
    pub last_seen_http: Option<Time>,
    /// Its last changes (online, offline), oldest first, at most [`STATUS_HISTORY_MAX`].
    pub history: VecDeque<StatusChange>,
    /// PUBLISH packets it sent over MQTT.
    pub messages_in: u64,
    /// PUBLISH packets sent to it over MQTT.
    pub messages_out: u64,
    /// Messages it published in signed requests of the HTTP bridge, with its own key.
    pub http_messages_in: u64,
    /// Messages its HTTP mailbox handed out to it (one handed out again, after its lease
    /// ended, counts again).
    pub http_messages_out: u64,
    /// When it connected within the last minute.
    pub(crate) connects: VecDeque<Time>,
}

/// One change of a device's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusChange {
    /// Online (connected) or offline from then.
    pub online: bool,
    /// When (the broker's time).
    pub at: Time,
}

impl DeviceStatus {
    /// Records a change, forgetting the oldest past [`STATUS_HISTORY_MAX`].
    pub(crate) fn record(&mut self, online: bool, at: Time) {
        self.online = online;
        self.since = at;
        self.last_seen = at;
        if self.history.len() >= STATUS_HISTORY_MAX {
            self.history.pop_front();
        }
        self.history.push_back(StatusChange { online, at });
    }
}

/// Owners and devices, in memory, with the live status of the devices. Devices are kept in
/// udid order, so a listing goes on from where its last page ended without sorting.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    devices: BTreeMap<String, Device>,
    owners: BTreeMap<String, Owner>,
    status: HashMap<String, DeviceStatus>,
    registrations: HashMap<String, Registration>,
    /// The firmware releases offered at registration.
    pub(crate) catalogue: Catalogue,
    /// The devices' actionable notifications (`broker/fleet_notify.rs`).
    pub(crate) notifications: crate::fleet_notify::Notifications,
}

impl Registry {
    /// The registry of these records (from a store).
    pub fn from_records(owners: Vec<Owner>, devices: Vec<Device>) -> Self {
        Self {
            owners: owners.into_iter().map(|o| (o.id.clone(), o)).collect(),
            devices: devices.into_iter().map(|d| (d.udid.clone(), d)).collect(),
            status: HashMap::new(),
            registrations: HashMap::new(),
            catalogue: Catalogue::default(),
            notifications: Default::default(),
        }
    }

    /// A device's last registration.
    pub fn registration(&self, udid: &str) -> Option<&Registration> {
        self.registrations.get(udid)
    }

    /// Records a device's registration (of a device that is registered).
    pub(crate) fn set_registration(&mut self, udid: &str, registration: Registration) {
        if self.devices.contains_key(udid) {
            self.registrations.insert(udid.to_owned(), registration);
        }
    }

    /// The device of this udid.
    pub fn device(&self, udid: &str) -> Option<&Device> {
        self.devices.get(udid)
    }

    /// The owner of this id.
    pub fn owner(&self, id: &str) -> Option<&Owner> {
        self.owners.get(id)
    }

    /// Devices (of one owner, or all), by udid.
    pub fn devices(&self, owner: Option<&str>) -> Vec<&Device> {
        self.devices
            .values()
            .filter(|d| owner.is_none_or(|o| d.owner == o))
            .collect()
    }

    /// A page of the devices `wanted` admits, by udid, after the udid `after` (from the
    /// first without): at most `limit`, and whether more follow. Looks at no device before
    /// `after`, so each page costs its own length (and the devices it skips), not the fleet's.
    pub fn page(
        &self,
        after: Option<&str>,
        limit: usize,
        wanted: impl Fn(&Device, Option<&DeviceStatus>) -> bool,
    ) -> (Vec<&Device>, bool) {
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        let mut matching = self
            .devices
            .range::<str, _>((start, Bound::Unbounded))
            .map(|(_, device)| device)
            .filter(|device| wanted(device, self.status.get(&device.udid)));
        let page: Vec<&Device> = matching.by_ref().take(limit).collect();
        let more = matching.next().is_some();
        (page, more)
    }

    /// Number of devices.
    pub fn len(&self) -> usize {
        self.devices.len()
    }

    /// Whether there is no owner (and so no namespace closed to anyone).
    pub fn owners_empty(&self) -> bool {
        self.owners.is_empty()
    }

    /// Whether there is no device.
    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }

    /// What a CONNECT with this client identifier and user name names.
    pub fn login(&self, client_id: &str, username: Option<&str>) -> FleetLogin<'_> {
        FleetLogin {
            device: self.devices.get(client_id),
            owner: username.and_then(|u| self.owners.get(u)),
        }
    }

    /// Adds a device, checking its names; returns the owner record made for it if its owner
    /// was not known yet.
    pub(crate) fn add(&mut self, device: Device) -> Result<Option<Owner>, FleetError> {
        check_name("owner", &device.owner)?;
        check_name("udid", &device.udid)?;
        if device.udid == "shared" {
            return Err(FleetError::ReservedUdid);
        }
        if self.devices.contains_key(&device.udid) {
            return Err(FleetError::Exists(device.udid));
        }
        let new_owner = match self.owners.contains_key(&device.owner) {
            true => None,
            false => Some(Owner {
                id: device.owner.clone(),
                created_unix: device.created_unix,
                password_hash: None,
            }),
        };
        if let Some(owner) = &new_owner {
            self.owners.insert(owner.id.clone(), owner.clone());
        }
        self.devices.insert(device.udid.clone(), device);
        Ok(new_owner)
    }

    /// Records an owner (new, or with a new password).
    pub(crate) fn set_owner(&mut self, owner: Owner) -> Result<(), FleetError> {
        check_name("owner", &owner.id)?;
        self.owners.insert(owner.id.clone(), owner);
        Ok(())
    }

    /// The device to change.
    pub(crate) fn device_mut(&mut self, udid: &str) -> Result<&mut Device, FleetError> {
        self.devices
            .get_mut(udid)
            .ok_or_else(|| FleetError::NoDevice(udid.to_owned()))
    }

    /// The live status of a device that connected since the broker started.
    pub fn status(&self, udid: &str) -> Option<&DeviceStatus> {
        self.status.get(udid)
    }

    /// The status to change (made, offline, on first use).
    pub(crate) fn status_mut(&mut self, udid: &str) -> &mut DeviceStatus {
        self.status
            .entry(udid.to_owned())
            .or_insert_with(|| DeviceStatus {
                online: false,
                since: Time::from_millis(0),
                last_seen: Time::from_millis(0),
                address: None,
                version: None,
                own_will: false,
                flapping: false,
                last_seen_http: None,
                history: VecDeque::new(),
                messages_in: 0,
                messages_out: 0,
                http_messages_in: 0,
                http_messages_out: 0,
                connects: VecDeque::new(),
            })
    }

    /// Whether `topic` (a topic name, or a filter whose owner level is not a wildcard) lies in
    /// the namespace of a registered owner: under its root or among the broker's events about
    /// it. One lookup of the owner level, whatever the number of owners.
    pub fn closes(&self, topics: &FleetTopics, topic: &str) -> bool {
        !self.owners.is_empty()
            && topics
                .owner_level(topic)
                .is_some_and(|owner| self.owners.contains_key(owner))
    }

    /// Counts a PUBLISH packet a connected device sent (`inbound`) or was sent.
    pub(crate) fn count_message(&mut self, udid: &str, inbound: bool) {
        if let Some(status) = self.status.get_mut(udid) {
            match inbound {
                true => status.messages_in += 1,
                false => status.messages_out += 1,
            }
        }
    }

    /// Removes a device.
    pub(crate) fn remove(&mut self, udid: &str) -> Result<Device, FleetError> {
        self.status.remove(udid);
        self.registrations.remove(udid);
        self.devices
            .remove(udid)
            .ok_or_else(|| FleetError::NoDevice(udid.to_owned()))
    }
}

/// Where the fleet's topics live: `PREFIX<owner>/<udid>`, PREFIX `/` for THiNX's layout (an
/// empty first level), empty for `owner/udid/...`, or any levels ending in `/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetTopics {
    prefix: String,
}

impl Default for FleetTopics {
    /// THiNX's layout: `/<owner>/<udid>`.
    fn default() -> Self {
        Self {
            prefix: "/".to_owned(),
        }
    }
}

/// A topic prefix that is not empty and does not end in `/`, or holds a wildcard.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("fleet topic prefix {0:?} must be empty or end with '/', without '+', '#' or '$'")]
pub struct BadPrefix(pub String);

impl FleetTopics {
    /// Topics under `prefix` (empty, or ending in `/`).
    pub fn new(prefix: &str) -> Result<Self, BadPrefix> {
        let ok = (prefix.is_empty() || prefix.ends_with('/')) && !prefix.contains(['+', '#', '$']);
        match ok {
            true => Ok(Self {
                prefix: prefix.to_owned(),
            }),
            false => Err(BadPrefix(prefix.to_owned())),
        }
    }

    /// The prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// An owner's root: `/<owner>`.
    pub fn owner_root(&self, owner: &str) -> String {
        format!("{}{owner}", self.prefix)
    }

    /// A device's own channel: `/<owner>/<udid>`.
    pub fn device(&self, owner: &str, udid: &str) -> String {
        format!("{}{owner}/{udid}", self.prefix)
    }

    /// A device's status channel: `/<owner>/<udid>/status`.
    pub fn status(&self, owner: &str, udid: &str) -> String {
        format!("{}{owner}/{udid}/status", self.prefix)
    }

    /// The filters a device may publish to and subscribe with: its own channel, its status,
    /// its owner's shared channel.
    pub fn device_filters(&self, owner: &str, udid: &str) -> [String; 3] {
        [
            self.device(owner, udid),
            self.status(owner, udid),
            format!("{}{owner}/shared/#", self.prefix),
        ]
    }

    /// The filter an owner may publish to and subscribe with: everything of its fleet.
    pub fn owner_filter(&self, owner: &str) -> String {
        format!("{}{owner}/#", self.prefix)
    }

    /// The level of `topic` where an owner's id stands, if `topic` is laid out as the fleet's
    /// (`PREFIX<owner>/...`, or the broker's events `$events/<owner>/...`).
    pub fn owner_level<'t>(&self, topic: &'t str) -> Option<&'t str> {
        let rest = match topic.strip_prefix("$events/") {
            Some(rest) => rest,
            None => topic.strip_prefix(self.prefix.as_str())?,
        };
        rest.split('/').next()
    }

    /// The filter of the broker's events about an owner's devices, which the owner may
    /// subscribe with: `$events/<owner>/#` (`$events/<owner>/<udid>/online|offline`).
    pub fn events_filter(&self, owner: &str) -> String {
        format!("$events/{owner}/#")
    }
}
