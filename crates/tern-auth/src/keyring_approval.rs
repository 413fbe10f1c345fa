//! App keys with approval: one shared secret, but a device speaks for its client identifier
//! only once an operator approved it, with grants of its own (publish-only, subscribe-only or
//! both over ACL patterns) or the app key's. Until then the device's correctly signed requests
//! make an access request (the HTTP bridge keeps those) and do nothing else, so a leaked app
//! secret no longer speaks for every device at once.

use std::collections::BTreeMap;

use super::{compile_grants, Acl, Grant, HttpKey, KeyError, KeyKind, KeyRing};

/// A device an operator approved for an app key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovedDevice {
    /// Its grants; none: the app key's own.
    pub grants: Vec<Grant>,
    restriction: Option<Acl>,
}

impl HttpKey {
    /// The rules `client_id`'s requests are limited by: an approved device's own grants, or
    /// the key's.
    pub(super) fn restriction_for(&self, client_id: &str) -> Option<&Acl> {
        self.devices
            .get(client_id)
            .and_then(|device| device.restriction.as_ref())
            .or(self.restriction.as_ref())
    }

    /// Whether `client_id` must be approved before it may act.
    pub(super) fn awaits_approval(&self, client_id: &str) -> bool {
        self.approval && !self.devices.contains_key(client_id)
    }
}

impl KeyRing {
    /// Sets what the key file kept of an app key's approval.
    pub(super) fn restore_approval(
        &mut self,
        id: &str,
        approval: bool,
        devices: BTreeMap<String, Vec<Grant>>,
    ) -> Result<(), KeyError> {
        if approval {
            self.set_approval(id, true)?;
        }
        for (client_id, grants) in devices {
            self.approve_device(id, &client_id, grants)?;
        }
        Ok(())
    }

    /// Makes an app key's devices need approval (`true`), or lets every device speak again.
    pub fn set_approval(&mut self, id: &str, approval: bool) -> Result<(), KeyError> {
        self.app_key(id)?.approval = approval;
        Ok(())
    }

    /// Approves `client_id` for the app key `id`, with its own grants (none: the key's).
    pub fn approve_device(
        &mut self,
        id: &str,
        client_id: &str,
        grants: Vec<Grant>,
    ) -> Result<(), KeyError> {
        if !super::valid_name(client_id) {
            return Err(KeyError::Prefix(
                "a client identifier is 1-64 of A-Z a-z 0-9 . _ -",
            ));
        }
        let restriction = compile_grants(&grants)?;
        self.app_key(id)?.devices.insert(
            client_id.to_owned(),
            ApprovedDevice {
                grants,
                restriction,
            },
        );
        Ok(())
    }

    /// Withdraws a device's approval; whether it had one.
    pub fn forget_device(&mut self, id: &str, client_id: &str) -> Result<bool, KeyError> {
        Ok(self.app_key(id)?.devices.remove(client_id).is_some())
    }

    fn app_key(&mut self, id: &str) -> Result<&mut HttpKey, KeyError> {
        if !matches!(super::parse_key_id(id)?, (KeyKind::App, _)) {
            return Err(KeyError::Prefix(
                "only an app key (a:) has devices to approve",
            ));
        }
        self.keys
            .get_mut(id)
            .ok_or_else(|| KeyError::Unknown(id.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::super::MasterKey;
    use super::*;
    use crate::RuleAccess;

    #[test]
    fn an_unapproved_device_awaits_and_an_approved_one_has_its_own_grants_across_a_reload() {
        let mut ring = KeyRing::default();
        ring.add("a:fleet", None, Vec::new(), 1).unwrap();
        assert!(
            !ring
                .lookup("a:fleet", Some("dev1"))
                .unwrap()
                .awaiting_approval
        );
        ring.set_approval("a:fleet", true).unwrap();
        assert!(
            ring.lookup("a:fleet", Some("dev1"))
                .unwrap()
                .awaiting_approval
        );
        let publish_only = vec![Grant {
            access: RuleAccess::Publish,
            topic: "fleet/%c/#".to_owned(),
        }];
        ring.approve_device("a:fleet", "dev1", publish_only.clone())
            .unwrap();
        let master = MasterKey::random();
        let ring = KeyRing::parse(&ring.render(&master), &master).unwrap();
        let approved = ring.lookup("a:fleet", Some("dev1")).unwrap();
        assert!(!approved.awaiting_approval);
        let rules = approved.restriction.unwrap();
        use tern_core::{Access, Permissions};
        assert!(rules.allows(Access::Publish, "fleet/dev1/t"));
        assert!(!rules.allows(Access::Subscribe, "fleet/dev1/t"));
        assert!(
            ring.lookup("a:fleet", Some("dev2"))
                .unwrap()
                .awaiting_approval
        );
        let mut ring = ring;
        assert!(ring.forget_device("a:fleet", "dev1").unwrap());
        assert!(
            ring.lookup("a:fleet", Some("dev1"))
                .unwrap()
                .awaiting_approval
        );
        assert!(ring.set_approval("d:dev1", true).is_err());
    }
}
