//! Device keys: a fleet where each owner shares one secret with all of its devices, so no
//! device needs a secret of its own. A device connects with its device identifier as the user
//! name and a password the device computes itself:
//!
//! ```text
//! password = "dk1:" OWNER ":" UNIX_SECONDS ":" hex(HMAC-SHA256(owner secret,
//!                DEVICE_ID "\n" CLIENT_ID "\n" UNIX_SECONDS))
//! ```
//!
//! The broker accepts it when the owner is known, the MAC matches, and the timestamp is within
//! the configured window of the broker's clock (either side). The device then acts as user
//! `DEVICE_ID` (`%u`) of owner `OWNER` (`%o`) in ACL rules. A password is a bearer credential
//! for the length of the window: use TLS.

use std::collections::HashMap;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Why a device key was refused (for the log; the client only hears "bad user name or password").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKeyFailure {
    /// Not of the `dk1:OWNER:SECONDS:MAC` form.
    Malformed,
    /// No secret is configured for the owner.
    UnknownOwner,
    /// The timestamp is outside the window.
    OutsideWindow,
    /// The MAC does not match.
    BadMac,
}

/// Owners' secrets and the accepted clock difference.
#[derive(Debug, Clone, Default)]
pub struct DeviceKeys {
    secrets: HashMap<String, Vec<u8>>,
    window_secs: u64,
}

impl DeviceKeys {
    /// Secrets by owner, and the window in seconds.
    pub fn new(secrets: HashMap<String, Vec<u8>>, window_secs: u64) -> Self {
        Self {
            secrets,
            window_secs,
        }
    }

    /// Whether `password` looks like a device key (so other methods are not tried on it).
    pub fn claims(password: &[u8]) -> bool {
        password.starts_with(b"dk1:")
    }

    /// Checks a device key; on success returns the owner.
    pub fn verify(
        &self,
        device_id: &str,
        client_id: &str,
        password: &[u8],
        now_unix_secs: u64,
    ) -> Result<String, DeviceKeyFailure> {
        let text = std::str::from_utf8(password).map_err(|_| DeviceKeyFailure::Malformed)?;
        let mut parts = text.splitn(4, ':');
        let (Some("dk1"), Some(owner), Some(seconds), Some(mac)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(DeviceKeyFailure::Malformed);
        };
        let timestamp: u64 = seconds.parse().map_err(|_| DeviceKeyFailure::Malformed)?;
        let mac = decode_hex(mac).ok_or(DeviceKeyFailure::Malformed)?;
        let secret = self
            .secrets
            .get(owner)
            .ok_or(DeviceKeyFailure::UnknownOwner)?;
        if timestamp.abs_diff(now_unix_secs) > self.window_secs {
            return Err(DeviceKeyFailure::OutsideWindow);
        }
        let mut expected =
            Hmac::<Sha256>::new_from_slice(secret).map_err(|_| DeviceKeyFailure::BadMac)?;
        expected.update(message(device_id, client_id, timestamp).as_bytes());
        // `verify_slice` compares in constant time.
        expected
            .verify_slice(&mac)
            .map_err(|_| DeviceKeyFailure::BadMac)?;
        Ok(owner.to_owned())
    }
}

/// The password a device with `secret` computes (what device firmware implements).
pub fn device_password(
    owner: &str,
    secret: &[u8],
    device_id: &str,
    client_id: &str,
    unix_secs: u64,
) -> String {
    let mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(mut mac) => {
            mac.update(message(device_id, client_id, unix_secs).as_bytes());
            mac.finalize().into_bytes().to_vec()
        }
        Err(_) => Vec::new(),
    };
    let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
    format!("dk1:{owner}:{unix_secs}:{hex}")
}

fn message(device_id: &str, client_id: &str, unix_secs: u64) -> String {
    format!("{device_id}\n{client_id}\n{unix_secs}")
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> DeviceKeys {
        let secrets = HashMap::from([("acme".to_owned(), b"s3cret".to_vec())]);
        DeviceKeys::new(secrets, 300)
    }

    #[test]
    fn a_fresh_key_is_accepted_and_names_the_owner() {
        let password = device_password("acme", b"s3cret", "dev-1", "client-1", 1_000_000);
        assert!(DeviceKeys::claims(password.as_bytes()));
        let owner = keys().verify("dev-1", "client-1", password.as_bytes(), 1_000_100);
        assert_eq!(owner.as_deref(), Ok("acme"));
    }

    #[test]
    fn forged_stale_or_misused_keys_are_refused() {
        let k = keys();
        let good = device_password("acme", b"s3cret", "dev-1", "client-1", 1_000_000);
        let forged = device_password("acme", b"guess", "dev-1", "client-1", 1_000_000);
        let check = |dev: &str, client: &str, pw: &str, now: u64| {
            k.verify(dev, client, pw.as_bytes(), now).err()
        };
        assert_eq!(
            check("dev-1", "client-1", &forged, 1_000_000),
            Some(DeviceKeyFailure::BadMac)
        );
        assert_eq!(
            check("dev-1", "client-1", &good, 1_000_301),
            Some(DeviceKeyFailure::OutsideWindow)
        );
        assert_eq!(
            check("dev-1", "client-1", &good, 999_600),
            Some(DeviceKeyFailure::OutsideWindow)
        );
        // Bound to the device identifier and the client identifier.
        assert_eq!(
            check("dev-2", "client-1", &good, 1_000_000),
            Some(DeviceKeyFailure::BadMac)
        );
        assert_eq!(
            check("dev-1", "client-2", &good, 1_000_000),
            Some(DeviceKeyFailure::BadMac)
        );
        let other = device_password("globex", b"s3cret", "dev-1", "client-1", 1_000_000);
        assert_eq!(
            check("dev-1", "client-1", &other, 1_000_000),
            Some(DeviceKeyFailure::UnknownOwner)
        );
        assert_eq!(
            check("dev-1", "client-1", "dk1:acme:x:00", 1),
            Some(DeviceKeyFailure::Malformed)
        );
    }
}
