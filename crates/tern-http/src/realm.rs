//! What an operator token may see and change: its **realm**. A token of the whole broker sees
//! everything; a token of a client prefix sees the clients whose identifiers start with it
//! (and nothing of the device fleet); a token bound to an owner of the fleet sees that owner's
//! devices (as clients: their sessions, connections and events) and nothing else. Every route
//! asks here, on the broker thread where the registry is: "may this token see owner X / device
//! D / client C". Another owner's device is answered as absent, never as forbidden, so a token
//! learns nothing of what is outside its realm.

use tern_core::fleet::{Device, Registry};

/// The clients and fleet a token's realm holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Realm {
    /// Client identifiers starting with this; empty: the whole broker, the fleet included.
    Clients(String),
    /// One owner's fleet: its devices, and the clients that are its devices.
    Owner(String),
}

impl Realm {
    /// Whether this is the whole broker (bans, keys of groups and apps, every owner).
    pub(crate) fn is_whole_broker(&self) -> bool {
        matches!(self, Self::Clients(prefix) if prefix.is_empty())
    }

    /// Whether the realm holds this owner's fleet.
    pub(crate) fn sees_owner(&self, owner: &str) -> bool {
        match self {
            Self::Clients(prefix) => prefix.is_empty(),
            Self::Owner(own) => own == owner,
        }
    }

    /// Whether the realm holds any of the fleet (a client-prefix token holds none).
    pub(crate) fn sees_fleet(&self) -> bool {
        !matches!(self, Self::Clients(prefix) if !prefix.is_empty())
    }

    /// The owner the realm is bound to, if it is one owner's.
    pub(crate) fn owner(&self) -> Option<&str> {
        match self {
            Self::Owner(owner) => Some(owner),
            Self::Clients(_) => None,
        }
    }

    /// The device of `udid` if the realm holds it (another owner's is as absent as one that
    /// was never registered).
    pub(crate) fn device<'a>(&self, fleet: &'a Registry, udid: &str) -> Option<&'a Device> {
        fleet.device(udid).filter(|d| self.sees_owner(&d.owner))
    }

    /// Whether the realm holds the device `udid` of `owner` (by its names: for what outlives
    /// or comes before its registry entry, such as its notifications).
    pub(crate) fn holds_device(&self, owner: &str, udid: &str) -> bool {
        match self {
            Self::Clients(prefix) => udid.starts_with(prefix.as_str()),
            Self::Owner(own) => own == owner,
        }
    }

    /// Whether the realm holds the client of this identifier.
    pub(crate) fn holds_client(&self, fleet: &Registry, client_id: &str) -> bool {
        match self {
            Self::Clients(prefix) => client_id.starts_with(prefix.as_str()),
            Self::Owner(_) => self.device(fleet, client_id).is_some(),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use tern_core::fleet::DeviceCredential;

    fn device(owner: &str, udid: &str) -> Device {
        Device {
            owner: owner.to_owned(),
            udid: udid.to_owned(),
            alias: String::new(),
            platform: String::new(),
            firmware: String::new(),
            tags: Vec::new(),
            created_unix: 0,
            disabled: false,
            credential: DeviceCredential::HttpKey,
        }
    }

    #[test]
    fn an_owner_sees_its_devices_only_and_a_client_prefix_sees_no_fleet() {
        let fleet = Registry::from_records(
            Vec::new(),
            vec![device("acme", "a1"), device("globex", "g1")],
        );
        let acme = Realm::Owner("acme".to_owned());
        assert!(acme.sees_owner("acme") && !acme.sees_owner("globex"));
        assert!(acme.device(&fleet, "a1").is_some());
        assert!(acme.device(&fleet, "g1").is_none());
        assert!(acme.holds_client(&fleet, "a1"));
        for outside in ["g1", "a", "a1x", "nobody", ""] {
            assert!(!acme.holds_client(&fleet, outside), "{outside}");
        }
        assert!(!acme.is_whole_broker() && acme.sees_fleet());
        assert!(acme.holds_device("acme", "gone") && !acme.holds_device("globex", "a1"));
        let all = Realm::Clients(String::new());
        assert!(all.is_whole_broker() && all.sees_owner("globex"));
        assert!(all.device(&fleet, "g1").is_some() && all.holds_client(&fleet, "x"));
        let prefix = Realm::Clients("a".to_owned());
        assert!(!prefix.sees_fleet() && !prefix.sees_owner("acme"));
        assert!(prefix.device(&fleet, "a1").is_none());
        assert!(prefix.holds_client(&fleet, "a1") && !prefix.holds_client(&fleet, "g1"));
        assert!(prefix.holds_device("globex", "a1") && !prefix.holds_device("acme", "g1"));
    }
}
