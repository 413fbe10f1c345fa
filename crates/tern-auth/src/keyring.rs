//! Keys of the HTTP bridge (docs/http.md, "Keys"): who may sign requests, with which secrets,
//! as which client, limited to which topics. Three kinds, one file:
//!
//! - `d:CLIENT`: a device key, a secret of its own for one client identifier;
//! - `g:GROUP`: a group of derived device keys: a device `d:CLIENT` whose client identifier
//!   starts with the group's prefix (and has no key of its own) signs with
//!   `HMAC-SHA256(group secret, "tern-dk1\0" CLIENT)`, computed on the fly, so nothing is kept
//!   per device and a device that leaks its secret leaks only itself;
//! - `a:APP`: an app key, one secret shared by every device of an app, which names its client
//!   identifier in the `Tern-Client` header: weaker isolation (any holder may speak as any of
//!   the app's devices), for fleets provisioned with one secret.
//!
//! Each key has up to two active secrets (32 random bytes), so a secret can be rotated while
//! devices still use the old one. The file keeps them sealed with ChaCha20-Poly1305 under a
//! master key kept beside it (`http.key`, mode 0600), bound to the key and secret they belong
//! to. A verified key acts as a [`Method::HttpKey`] identity: a name means nothing without
//! its method, so no rule written for a password user of the same name applies to it.

use std::collections::BTreeMap;

use argon2::password_hash::rand_core::{OsRng, RngCore};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tern_core::{Identity, Method};

use crate::acl::{Acl, CompiledAcl, Rule, RuleAccess};
use crate::scope::{RuleMethod, RuleMethods};

/// The key file in the data directory.
pub const KEYS_FILE: &str = "http-keys.json";
/// The master key that seals the secrets, beside the key file.
pub const MASTER_KEY_FILE: &str = "http.key";
/// Active secrets per key.
pub const SECRETS_PER_KEY_MAX: usize = 2;
/// The label derived device secrets are made with.
const DERIVED_LABEL: &[u8] = b"tern-dk1\0";
/// Longest key name or client identifier a key may use.
const NAME_LEN_MAX: usize = 64;

/// Why a key file or a change to it was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    /// The key id is not `d:`, `g:` or `a:` followed by a name of 1-64 characters of
    /// `A-Z a-z 0-9 . _ -`.
    #[error("invalid key id {0:?}: d:CLIENT, g:GROUP or a:APP, with 1-64 of A-Z a-z 0-9 . _ -")]
    BadId(String),
    /// There is no such key.
    #[error("no key {0:?}")]
    Unknown(String),
    /// The key exists already.
    #[error("key {0:?} exists already (rotate it to get a new secret)")]
    Exists(String),
    /// The key has no secret of that number.
    #[error("key {0:?} has no secret {1}")]
    NoSecret(String, u32),
    /// A grant's topic filter cannot be used.
    #[error("grant {0:?}: {1}")]
    BadGrant(String, String),
    /// A prefix was given for a key that is not a group, or a group without one.
    #[error("{0}")]
    Prefix(&'static str),
    /// The file does not parse, or a secret does not unseal under the master key.
    #[error("key file: {0}")]
    File(String),
}

/// The master key the secrets are sealed with.
#[derive(Clone)]
pub struct MasterKey([u8; 32]);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

impl MasterKey {
    /// A fresh random master key.
    pub fn random() -> Self {
        Self(random_secret())
    }

    /// From the 32 bytes of the master key file.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The 32 bytes to keep in the master key file.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0
    }

    /// A secret for `label` that exists for no key: what an unknown key is answered with, so
    /// that answers do not tell unknown keys from known ones.
    pub fn decoy(&self, label: &str) -> [u8; 32] {
        hmac(&self.0, &[b"tern-decoy\0", label.as_bytes()])
    }

    fn cipher(&self) -> ChaCha20Poly1305 {
        ChaCha20Poly1305::new((&self.0).into())
    }
}

/// What kind of key an id names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// `d:CLIENT`.
    Device,
    /// `g:GROUP`: derived device keys.
    Group,
    /// `a:APP`.
    App,
}

/// Splits a key id into its kind and name.
pub fn parse_key_id(id: &str) -> Result<(KeyKind, &str), KeyError> {
    let (kind, name) = match id.split_once(':') {
        Some(("d", name)) => (KeyKind::Device, name),
        Some(("g", name)) => (KeyKind::Group, name),
        Some(("a", name)) => (KeyKind::App, name),
        _ => return Err(KeyError::BadId(id.to_owned())),
    };
    if !valid_name(name) {
        return Err(KeyError::BadId(id.to_owned()));
    }
    Ok((kind, name))
}

/// Whether `name` may be a key name or a client identifier signed for: 1-64 of
/// `A-Z a-z 0-9 . _ -` (so it is one topic level and never a wildcard).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= NAME_LEN_MAX
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// One secret of a key.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    /// Its number: 1 for the first, one more at each rotation.
    pub n: u32,
    /// When it was made (Unix seconds).
    pub created: u64,
    bytes: [u8; 32],
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret({}, created {})", self.n, self.created)
    }
}

impl Secret {
    /// The secret's bytes (the HMAC key).
    pub fn bytes(&self) -> &[u8; 32] {
        &self.bytes
    }
}

/// What a key may do: publish, subscribe or both, on topics matching a filter (with `%c`,
/// the client identifier, and `%u`, the key's name, substituted), on top of the ACL rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// Publish, subscribe or both.
    pub access: RuleAccess,
    /// The topic filter.
    pub topic: String,
}

/// One key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpKey {
    /// `d:CLIENT`, `g:GROUP` or `a:APP`.
    pub id: String,
    /// For a group: the client identifiers whose devices derive their secret from it.
    pub prefix: Option<String>,
    /// What it is limited to; none: the ACL rules alone decide.
    pub grants: Vec<Grant>,
    /// Its active secrets, oldest first.
    pub secrets: Vec<Secret>,
    /// The grants compiled as rules.
    restriction: Option<Acl>,
    /// For an app key: whether its devices need an operator's approval (`approval.rs`).
    pub approval: bool,
    /// For an app key with approval: the devices approved, by client identifier.
    pub devices: BTreeMap<String, ApprovedDevice>,
}

/// A key that verified a request, and who it speaks as.
#[derive(Debug, Clone)]
pub struct Credential {
    /// The key id (`d:CLIENT`, `a:APP`).
    pub key_id: String,
    /// The client identifier it acts for.
    pub client_id: String,
    /// The identity the broker sees.
    pub identity: Identity,
    /// The secrets the request may be signed with (one or two).
    pub secrets: Vec<[u8; 32]>,
    /// What the key's grants limit it to, compiled for this client.
    pub restriction: Option<CompiledAcl>,
    /// An app key's device that an operator has not approved (yet): its requests make an
    /// access request, and do nothing else.
    pub awaiting_approval: bool,
}

/// Every key of the bridge.
#[derive(Debug, Clone, Default)]
pub struct KeyRing {
    keys: BTreeMap<String, HttpKey>,
}

#[derive(Serialize, Deserialize)]
struct FileForm {
    format: u32,
    keys: Vec<KeyForm>,
}

#[derive(Serialize, Deserialize)]
struct KeyForm {
    id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    grants: Vec<Grant>,
    secrets: Vec<SecretForm>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    approval: bool,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    devices: BTreeMap<String, Vec<Grant>>,
}

#[derive(Serialize, Deserialize)]
struct SecretForm {
    n: u32,
    created: u64,
    /// base64 of the 12-byte nonce and the sealed secret.
    sealed: String,
}

impl KeyRing {
    /// Reads a key file, unsealing its secrets with `master`.
    pub fn parse(text: &str, master: &MasterKey) -> Result<Self, KeyError> {
        let form: FileForm =
            serde_json::from_str(text).map_err(|e| KeyError::File(e.to_string()))?;
        if form.format != 1 {
            return Err(KeyError::File(format!(
                "format {} (this build reads 1)",
                form.format
            )));
        }
        let mut ring = Self::default();
        for key in form.keys {
            parse_key_id(&key.id)?;
            let secrets = key
                .secrets
                .iter()
                .map(|s| {
                    let bytes = unseal(master, &key.id, s.n, &s.sealed)?;
                    Ok(Secret {
                        n: s.n,
                        created: s.created,
                        bytes,
                    })
                })
                .collect::<Result<Vec<_>, KeyError>>()?;
            let id = key.id.clone();
            ring.insert(key.id, key.prefix, key.grants, secrets)?;
            ring.restore_approval(&id, key.approval, key.devices)?;
        }
        Ok(ring)
    }

    /// The key file's text, every secret sealed anew with `master`.
    pub fn render(&self, master: &MasterKey) -> String {
        let keys = self
            .keys
            .values()
            .map(|key| KeyForm {
                id: key.id.clone(),
                prefix: key.prefix.clone(),
                grants: key.grants.clone(),
                approval: key.approval,
                devices: key
                    .devices
                    .iter()
                    .map(|(client, device)| (client.clone(), device.grants.clone()))
                    .collect(),
                secrets: key
                    .secrets
                    .iter()
                    .map(|s| SecretForm {
                        n: s.n,
                        created: s.created,
                        sealed: seal(master, &key.id, s.n, &s.bytes),
                    })
                    .collect(),
            })
            .collect();
        let form = FileForm { format: 1, keys };
        let mut text = serde_json::to_string_pretty(&form).unwrap_or_default();
        text.push('\n');
        text
    }

    fn insert(
        &mut self,
        id: String,
        prefix: Option<String>,
        grants: Vec<Grant>,
        secrets: Vec<Secret>,
    ) -> Result<(), KeyError> {
        let (kind, _) = parse_key_id(&id)?;
        match (kind, &prefix) {
            (KeyKind::Group, None) => return Err(KeyError::Prefix("a group needs a prefix")),
            (KeyKind::Group, Some(prefix)) if !prefix.is_empty() && !valid_name(prefix) => {
                return Err(KeyError::Prefix(
                    "a prefix is 0-64 of A-Z a-z 0-9 . _ - (empty: every client)",
                ));
            }
            (KeyKind::Device | KeyKind::App, Some(_)) => {
                return Err(KeyError::Prefix("only a group (g:) has a prefix"));
            }
            _ => {}
        }
        let restriction = compile_grants(&grants)?;
        self.keys.insert(
            id.clone(),
            HttpKey {
                id,
                prefix,
                grants,
                secrets,
                restriction,
                approval: false,
                devices: BTreeMap::new(),
            },
        );
        Ok(())
    }

    /// Adds a key with a new secret, which is returned (to be shown once).
    pub fn add(
        &mut self,
        id: &str,
        prefix: Option<String>,
        grants: Vec<Grant>,
        now_unix_secs: u64,
    ) -> Result<[u8; 32], KeyError> {
        if self.keys.contains_key(id) {
            return Err(KeyError::Exists(id.to_owned()));
        }
        let bytes = random_secret();
        let secret = Secret {
            n: 1,
            created: now_unix_secs,
            bytes,
        };
        self.insert(id.to_owned(), prefix, grants, vec![secret])?;
        Ok(bytes)
    }

    /// Gives a key a new secret, which is returned with its number; with two active already,
    /// the older goes.
    pub fn rotate(&mut self, id: &str, now_unix_secs: u64) -> Result<(u32, [u8; 32]), KeyError> {
        let key = self
            .keys
            .get_mut(id)
            .ok_or_else(|| KeyError::Unknown(id.to_owned()))?;
        let n = key.secrets.iter().map(|s| s.n).max().unwrap_or(0) + 1;
        let bytes = random_secret();
        key.secrets.push(Secret {
            n,
            created: now_unix_secs,
            bytes,
        });
        while key.secrets.len() > SECRETS_PER_KEY_MAX {
            key.secrets.remove(0);
        }
        Ok((n, bytes))
    }

    /// Retires one secret of a key, or (without a number) the whole key.
    pub fn revoke(&mut self, id: &str, secret: Option<u32>) -> Result<(), KeyError> {
        let Some(n) = secret else {
            return match self.keys.remove(id) {
                Some(_) => Ok(()),
                None => Err(KeyError::Unknown(id.to_owned())),
            };
        };
        let key = self
            .keys
            .get_mut(id)
            .ok_or_else(|| KeyError::Unknown(id.to_owned()))?;
        let before = key.secrets.len();
        key.secrets.retain(|s| s.n != n);
        if key.secrets.len() == before {
            return Err(KeyError::NoSecret(id.to_owned(), n));
        }
        Ok(())
    }

    /// Every key, by id.
    pub fn keys(&self) -> impl Iterator<Item = &HttpKey> {
        self.keys.values()
    }

    /// The key a request names in `Tern-Key` (and, for an app key, `Tern-Client`), with the
    /// secrets it may be signed with; `None` for an unknown or revoked key, or a client
    /// identifier a key may not speak for.
    pub fn lookup(&self, key_id: &str, client: Option<&str>) -> Option<Credential> {
        let (kind, name) = parse_key_id(key_id).ok()?;
        let (client_id, username, key, secrets) = match kind {
            KeyKind::Group => return None,
            KeyKind::Device => {
                if client.is_some_and(|c| c != name) {
                    return None;
                }
                match self.keys.get(key_id) {
                    Some(key) => (name, name.to_owned(), key, own_secrets(key)),
                    None => {
                        let group = self.group_of(name)?;
                        let secrets = group
                            .secrets
                            .iter()
                            .map(|s| derive_device_secret(&s.bytes, name))
                            .collect();
                        (name, name.to_owned(), group, secrets)
                    }
                }
            }
            KeyKind::App => {
                let client = client.filter(|c| valid_name(c))?;
                let key = self.keys.get(key_id)?;
                // A slash keeps the app's devices apart from device keys of the same name,
                // and out of `%u` substitutions.
                (client, format!("{name}/{client}"), key, own_secrets(key))
            }
        };
        if secrets.is_empty() {
            return None;
        }
        let identity = Identity {
            method: Method::HttpKey,
            username: Some(username),
            ..Identity::default()
        };
        let restriction = key
            .restriction_for(client_id)
            .map(|acl| acl.compile(client_id, &identity));
        Some(Credential {
            key_id: key_id.to_owned(),
            client_id: client_id.to_owned(),
            identity,
            secrets,
            restriction,
            awaiting_approval: kind == KeyKind::App && key.awaits_approval(client_id),
        })
    }

    /// The group with the longest prefix of `client_id`.
    fn group_of(&self, client_id: &str) -> Option<&HttpKey> {
        self.keys
            .values()
            .filter(|key| {
                key.prefix
                    .as_deref()
                    .is_some_and(|prefix| client_id.starts_with(prefix))
            })
            .max_by_key(|key| key.prefix.as_deref().map_or(0, str::len))
    }
}

fn own_secrets(key: &HttpKey) -> Vec<[u8; 32]> {
    key.secrets.iter().map(|s| s.bytes).collect()
}

/// The grants as ACL rules of the HTTP method: the first that applies decides, none denies.
fn compile_grants(grants: &[Grant]) -> Result<Option<Acl>, KeyError> {
    if grants.is_empty() {
        return Ok(None);
    }
    let rules = grants
        .iter()
        .map(|grant| Rule {
            access: grant.access,
            topic: grant.topic.clone(),
            method: Some(RuleMethods::One(RuleMethod::Http)),
            ..Rule::default()
        })
        .collect();
    Acl::new(rules)
        .map(Some)
        .map_err(|e| KeyError::BadGrant(e.topic, e.reason.to_string()))
}

/// The secret of device `client_id` in a group: HMAC-SHA256(group secret, "tern-dk1\0" ‖
/// client id).
pub fn derive_device_secret(group_secret: &[u8; 32], client_id: &str) -> [u8; 32] {
    hmac(group_secret, &[DERIVED_LABEL, client_id.as_bytes()])
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

fn random_secret() -> [u8; 32] {
    let mut bytes = [0; 32];
    OsRng.fill_bytes(&mut bytes);
    bytes
}

/// What a sealed secret is bound to: moved to another key or number, it does not unseal.
fn binding(id: &str, n: u32) -> Vec<u8> {
    format!("tern-http-key\0{id}\0{n}").into_bytes()
}

fn seal(master: &MasterKey, id: &str, n: u32, secret: &[u8; 32]) -> String {
    let mut nonce = [0; 12];
    OsRng.fill_bytes(&mut nonce);
    let aad = binding(id, n);
    let payload = Payload {
        msg: secret,
        aad: &aad,
    };
    // Encryption fails only for messages longer than the cipher allows.
    let sealed = master
        .cipher()
        .encrypt(Nonce::from_slice(&nonce), payload)
        .unwrap_or_default();
    let mut out = nonce.to_vec();
    out.extend_from_slice(&sealed);
    B64.encode(out)
}

fn unseal(master: &MasterKey, id: &str, n: u32, sealed: &str) -> Result<[u8; 32], KeyError> {
    let refused = || KeyError::File(format!("secret {n} of {id} does not unseal with http.key"));
    let bytes = B64.decode(sealed).map_err(|_| refused())?;
    if bytes.len() < 12 {
        return Err(refused());
    }
    let (nonce, sealed) = bytes.split_at(12);
    let aad = binding(id, n);
    let payload = Payload {
        msg: sealed,
        aad: &aad,
    };
    let secret = master
        .cipher()
        .decrypt(Nonce::from_slice(nonce), payload)
        .map_err(|_| refused())?;
    secret.try_into().map_err(|_| refused())
}

#[path = "keyring_approval.rs"]
mod approval;
pub use approval::ApprovedDevice;

#[cfg(test)]
#[path = "keyring_tests.rs"]
mod tests;
