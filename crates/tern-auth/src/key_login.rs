//! MQTT logins with the HTTP bridge's keys, so a device is one identity whether it polls its
//! mailbox over HTTP or connects over MQTT, and sees one session. The user name is the key id
//! (`d:CLIENT`, or `a:APP` with the device's client identifier as the MQTT client identifier)
//! and the password one the device computes with its secret:
//!
//! ```text
//! password = "hk1:" UNIX_SECONDS ":" hex(HMAC-SHA256(secret,
//!                "TERN1-MQTT\n" KEY_ID "\n" CLIENT_ID "\n" UNIX_SECONDS))
//! ```
//!
//! accepted within the HTTP bridge's time window of the broker's clock. Like a device key's,
//! the password is a bearer credential for the length of the window: use TLS. A key with
//! grants is refused over MQTT (its grants limit publishing and subscribing separately, which
//! an MQTT connection's rules cannot yet carry): the ACL rules alone would decide there.

use std::fmt;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use tern_core::Identity;

use crate::keyring::Credential;

/// What a key login's password starts with.
pub const PASSWORD_PREFIX: &str = "hk1:";

/// Where key logins find the keys in force (the HTTP bridge's, reloaded as they change).
pub trait KeyLogins: fmt::Debug + Send + Sync {
    /// The key `key_id` speaking for `client_id`, if known, and the secrets to check: always
    /// as many, decoys standing in for an unknown key, so the work does not tell keys apart.
    fn secrets(&self, key_id: &str, client_id: &str) -> (Option<Credential>, Vec<[u8; 32]>);

    /// How far a password's time may be from the broker's clock, either way.
    fn window_secs(&self) -> u64;
}

/// Why a key login was refused (for the log; the client hears "bad user name or password").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyLoginFailure {
    /// Not of the `hk1:SECONDS:HEX` form.
    Malformed,
    /// The time is outside the window.
    OutsideWindow,
    /// No secret of the key (or an unknown key, or a client it may not speak for) signed it.
    BadSignature,
    /// The key has grants, which an MQTT connection cannot carry yet.
    HasGrants,
    /// An app key's device that an operator has not approved.
    AwaitingApproval,
}

/// The password a device computes (what firmware implements).
pub fn key_password(secret: &[u8; 32], key_id: &str, client_id: &str, unix_secs: u64) -> String {
    let mac = mac(secret, key_id, client_id, unix_secs);
    let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
    format!("{PASSWORD_PREFIX}{unix_secs}:{hex}")
}

fn mac(secret: &[u8; 32], key_id: &str, client_id: &str, unix_secs: u64) -> [u8; 32] {
    match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(mut mac) => {
            mac.update(format!("TERN1-MQTT\n{key_id}\n{client_id}\n{unix_secs}").as_bytes());
            mac.finalize().into_bytes().into()
        }
        Err(_) => [0; 32],
    }
}

/// Checks a key login: the key `key_id` (the user name) for `client_id`, at `now` (Unix
/// seconds). Returns the identity the key verifies as, the same as over HTTP.
pub fn verify(
    logins: &dyn KeyLogins,
    key_id: &str,
    client_id: &str,
    password: &[u8],
    now: u64,
) -> Result<Identity, KeyLoginFailure> {
    let text = std::str::from_utf8(password).map_err(|_| KeyLoginFailure::Malformed)?;
    let rest = text
        .strip_prefix(PASSWORD_PREFIX)
        .ok_or(KeyLoginFailure::Malformed)?;
    let (seconds, hex) = rest.split_once(':').ok_or(KeyLoginFailure::Malformed)?;
    let seconds: u64 = seconds.parse().map_err(|_| KeyLoginFailure::Malformed)?;
    let offered = decode_hex(hex).ok_or(KeyLoginFailure::Malformed)?;
    if seconds.abs_diff(now) > logins.window_secs() {
        return Err(KeyLoginFailure::OutsideWindow);
    }
    let (credential, secrets) = logins.secrets(key_id, client_id);
    let real = credential.as_ref().map_or(0, |c| c.secrets.len());
    // Every secret is tried, decoys too, and compared in constant time.
    let mut matched = false;
    for (index, secret) in secrets.iter().enumerate() {
        let expected = mac(secret, key_id, client_id, seconds);
        let equal: bool = expected.ct_eq(&offered).into();
        matched |= equal && index < real;
    }
    match credential {
        Some(credential) if matched && credential.awaiting_approval => {
            Err(KeyLoginFailure::AwaitingApproval)
        }
        Some(credential) if matched && credential.restriction.is_some() => {
            Err(KeyLoginFailure::HasGrants)
        }
        Some(credential) if matched => Ok(credential.identity),
        _ => Err(KeyLoginFailure::BadSignature),
    }
}

fn decode_hex(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let mut bytes = [0; 32];
    for (i, byte) in bytes.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(bytes)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // Test code: a panic is a failure.

    use super::*;
    use crate::keyring::{Grant, KeyRing, MasterKey};
    use crate::RuleAccess;

    const NOW: u64 = 1_767_225_600;

    #[derive(Debug)]
    struct Ring(KeyRing, MasterKey);

    impl KeyLogins for Ring {
        fn secrets(&self, key_id: &str, client_id: &str) -> (Option<Credential>, Vec<[u8; 32]>) {
            let credential = self.0.lookup(key_id, Some(client_id));
            let mut secrets = credential
                .as_ref()
                .map(|c| c.secrets.clone())
                .unwrap_or_default();
            while secrets.len() < 2 {
                secrets.push(self.1.decoy(key_id));
            }
            (credential, secrets)
        }

        fn window_secs(&self) -> u64 {
            300
        }
    }

    fn ring() -> (Ring, [u8; 32], [u8; 32]) {
        let mut ring = KeyRing::default();
        let device = ring.add("d:dev1", None, Vec::new(), NOW).unwrap();
        let app = ring.add("a:fleet", None, Vec::new(), NOW).unwrap();
        let grant = Grant {
            access: RuleAccess::Publish,
            topic: "t/%c".to_owned(),
        };
        ring.add("d:limited", None, vec![grant], NOW).unwrap();
        (Ring(ring, MasterKey::random()), device, app)
    }

    #[test]
    fn a_key_logs_in_as_the_identity_it_has_over_http_and_nothing_else_does() {
        let (ring, device, app) = ring();
        let password = key_password(&device, "d:dev1", "dev1", NOW);
        let identity = verify(&ring, "d:dev1", "dev1", password.as_bytes(), NOW + 10).unwrap();
        let over_http = ring.0.lookup("d:dev1", None).unwrap().identity;
        assert_eq!(identity, over_http);
        // An app key speaks for the client identifier it connects with.
        let password = key_password(&app, "a:fleet", "7F3A", NOW);
        let identity = verify(&ring, "a:fleet", "7F3A", password.as_bytes(), NOW).unwrap();
        assert_eq!(identity.username.as_deref(), Some("fleet/7F3A"));

        let bad = |key_id: &str, client: &str, password: &str, now: u64| {
            verify(&ring, key_id, client, password.as_bytes(), now).unwrap_err()
        };
        let own = key_password(&device, "d:dev1", "dev1", NOW);
        assert_eq!(
            bad("d:dev1", "dev1", &own, NOW + 301),
            KeyLoginFailure::OutsideWindow
        );
        assert_eq!(
            bad("d:dev1", "dev2", &own, NOW),
            KeyLoginFailure::BadSignature
        );
        assert_eq!(
            bad("d:other", "dev1", &own, NOW),
            KeyLoginFailure::BadSignature
        );
        let other_secret = key_password(&app, "d:dev1", "dev1", NOW);
        assert_eq!(
            bad("d:dev1", "dev1", &other_secret, NOW),
            KeyLoginFailure::BadSignature
        );
        assert_eq!(
            bad("d:dev1", "dev1", "hk1:x:00", NOW),
            KeyLoginFailure::Malformed
        );
        let limited = ring.0.lookup("d:limited", None).unwrap().secrets[0];
        let password = key_password(&limited, "d:limited", "limited", NOW);
        assert_eq!(
            bad("d:limited", "limited", &password, NOW),
            KeyLoginFailure::HasGrants
        );
    }

    #[test]
    fn a_device_awaiting_approval_does_not_log_in_over_mqtt() {
        let (mut ring, _, app) = ring();
        ring.0.set_approval("a:fleet", true).unwrap();
        let password = key_password(&app, "a:fleet", "7F3A", NOW);
        assert_eq!(
            verify(&ring, "a:fleet", "7F3A", password.as_bytes(), NOW).unwrap_err(),
            KeyLoginFailure::AwaitingApproval
        );
        ring.0
            .approve_device("a:fleet", "7F3A", Vec::new())
            .unwrap();
        assert!(verify(&ring, "a:fleet", "7F3A", password.as_bytes(), NOW).is_ok());
    }
}
