//! SCRAM-SHA-256 (RFC 5802, RFC 7677), server side, for MQTT 5 enhanced authentication: the
//! CONNECT carries the client-first message, AUTH 0x18 the server-first, the client's AUTH the
//! client-final, and CONNACK the server-final. The broker stores only StoredKey and ServerKey.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::passwd::random_b64;

/// The method name in the Authentication Method property.
pub const METHOD: &str = "SCRAM-SHA-256";

type HmacSha256 = Hmac<Sha256>;

/// What the server keeps of a SCRAM password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScramCredential {
    /// PBKDF2 iterations.
    pub iterations: u32,
    /// The salt.
    pub salt: Vec<u8>,
    /// SHA-256(ClientKey).
    pub stored_key: [u8; 32],
    /// HMAC(SaltedPassword, "Server Key").
    pub server_key: [u8; 32],
}

impl ScramCredential {
    /// Derives the keys from a password with a fresh salt.
    pub fn derive(password: &str, iterations: u32) -> Self {
        let salt = B64.decode(random_b64(16)).unwrap_or_default();
        Self::derive_with_salt(password, salt, iterations)
    }

    /// Derives the keys from a password and a given salt.
    pub fn derive_with_salt(password: &str, salt: Vec<u8>, iterations: u32) -> Self {
        let mut salted = [0_u8; 32];
        pbkdf2::pbkdf2_hmac::<Sha256>(password.as_bytes(), &salt, iterations, &mut salted);
        let client_key = hmac(&salted, b"Client Key");
        Self {
            iterations,
            salt,
            stored_key: Sha256::digest(client_key).into(),
            server_key: hmac(&salted, b"Server Key"),
        }
    }

    /// `SCRAM-SHA-256$ITERATIONS:SALT$STOREDKEY:SERVERKEY` (RFC 5803), base64.
    pub fn render(&self) -> String {
        format!(
            "{METHOD}${}:{}${}:{}",
            self.iterations,
            B64.encode(&self.salt),
            B64.encode(self.stored_key),
            B64.encode(self.server_key)
        )
    }

    /// Reads the form [`ScramCredential::render`] writes.
    pub fn parse(text: &str) -> Option<Self> {
        let rest = text.strip_prefix(METHOD)?.strip_prefix('$')?;
        let (params, keys) = rest.split_once('$')?;
        let (iterations, salt) = params.split_once(':')?;
        let (stored, server) = keys.split_once(':')?;
        Some(Self {
            iterations: iterations.parse().ok().filter(|&i| i > 0)?,
            salt: B64.decode(salt).ok()?,
            stored_key: B64.decode(stored).ok()?.try_into().ok()?,
            server_key: B64.decode(server).ok()?.try_into().ok()?,
        })
    }
}

/// Why an exchange failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScramFailure {
    /// The message did not follow the RFC's grammar (or asked for channel binding).
    Malformed,
    /// Unknown user or wrong proof (not told apart, so names cannot be probed).
    BadProof,
}

/// An exchange waiting for the client-final message.
#[derive(Debug, Clone)]
pub struct ScramPending {
    /// The user name the client gave.
    pub username: String,
    client_first_bare: String,
    server_first: String,
    gs2_header: String,
    nonce: String,
    credential: Option<ScramCredential>,
}

/// The server secret unknown users' salts are made from: HMAC-SHA256(secret, user name), so
/// the salt of a name is the same every time it is asked for (as a real user's is), and cannot
/// be computed from the name alone (which would tell that the name is unknown).
#[derive(Clone, PartialEq, Eq)]
pub struct FakeSaltKey([u8; 32]);

impl FakeSaltKey {
    /// A fresh random secret.
    pub fn random() -> Self {
        let mut bytes = [0_u8; 32];
        argon2::password_hash::rand_core::RngCore::fill_bytes(
            &mut argon2::password_hash::rand_core::OsRng,
            &mut bytes,
        );
        Self(bytes)
    }

    /// A secret kept elsewhere (see [`FakeSaltKey::to_bytes`]).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The secret, to keep across restarts.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0
    }

    /// The made-up salt for the unknown user `name`, as long as the salts `tern passwd` makes.
    pub fn salt(&self, name: &str) -> Vec<u8> {
        hmac(&self.0, name.as_bytes())[..16].to_vec()
    }
}

impl std::fmt::Debug for FakeSaltKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FakeSaltKey(..)")
    }
}

/// Reads the client-first message and answers with the server-first. An unknown user gets a
/// made-up salt (from `fake_salts`) and fails at the proof, like a wrong password.
pub fn start(
    client_first: &[u8],
    lookup: impl FnOnce(&str) -> Option<ScramCredential>,
    fake_salts: &FakeSaltKey,
) -> Result<(String, ScramPending), ScramFailure> {
    let text = std::str::from_utf8(client_first).map_err(|_| ScramFailure::Malformed)?;
    // gs2-header: "n" or "y" (no channel binding), optional authzid, then the bare message.
    let (flag, rest) = text.split_once(',').ok_or(ScramFailure::Malformed)?;
    if flag != "n" && flag != "y" {
        return Err(ScramFailure::Malformed);
    }
    let (authzid, bare) = rest.split_once(',').ok_or(ScramFailure::Malformed)?;
    let gs2_header = format!("{flag},{authzid},");
    let mut username = None;
    let mut client_nonce = None;
    for attribute in bare.split(',') {
        if let Some(name) = attribute.strip_prefix("n=") {
            username = Some(unescape(name).ok_or(ScramFailure::Malformed)?);
        } else if let Some(nonce) = attribute.strip_prefix("r=") {
            client_nonce = Some(nonce);
        } else if attribute.starts_with("m=") {
            return Err(ScramFailure::Malformed);
        }
    }
    let (Some(username), Some(client_nonce)) = (username, client_nonce) else {
        return Err(ScramFailure::Malformed);
    };
    if client_nonce.is_empty() || client_nonce.contains(',') {
        return Err(ScramFailure::Malformed);
    }
    let credential = lookup(&username);
    let (salt, iterations) = match &credential {
        Some(c) => (c.salt.clone(), c.iterations),
        None => (fake_salts.salt(&username), crate::passwd::SCRAM_ITERATIONS),
    };
    let nonce = format!("{client_nonce}{}", random_b64(18));
    let server_first = format!("r={nonce},s={},i={iterations}", B64.encode(salt));
    let pending = ScramPending {
        username,
        client_first_bare: bare.to_owned(),
        server_first: server_first.clone(),
        gs2_header,
        nonce,
        credential,
    };
    Ok((server_first, pending))
}

/// Checks the client-final message; on success returns the server-final message.
pub fn finish(pending: &ScramPending, client_final: &[u8]) -> Result<String, ScramFailure> {
    let text = std::str::from_utf8(client_final).map_err(|_| ScramFailure::Malformed)?;
    let (without_proof, proof) = text.rsplit_once(",p=").ok_or(ScramFailure::Malformed)?;
    let proof = B64.decode(proof).map_err(|_| ScramFailure::Malformed)?;
    let mut binding = None;
    let mut nonce = None;
    for attribute in without_proof.split(',') {
        if let Some(value) = attribute.strip_prefix("c=") {
            binding = Some(value);
        } else if let Some(value) = attribute.strip_prefix("r=") {
            nonce = Some(value);
        }
    }
    if binding != Some(B64.encode(&pending.gs2_header).as_str())
        || nonce != Some(pending.nonce.as_str())
    {
        return Err(ScramFailure::Malformed);
    }
    let Some(credential) = &pending.credential else {
        return Err(ScramFailure::BadProof);
    };
    let auth_message = format!(
        "{},{},{without_proof}",
        pending.client_first_bare, pending.server_first
    );
    let signature = hmac(&credential.stored_key, auth_message.as_bytes());
    if proof.len() != signature.len() {
        return Err(ScramFailure::BadProof);
    }
    let client_key: Vec<u8> = proof.iter().zip(signature).map(|(p, s)| p ^ s).collect();
    let stored: [u8; 32] = Sha256::digest(&client_key).into();
    if !bool::from(stored.ct_eq(&credential.stored_key)) {
        return Err(ScramFailure::BadProof);
    }
    let server_signature = hmac(&credential.server_key, auth_message.as_bytes());
    Ok(format!("v={}", B64.encode(server_signature)))
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = match HmacSha256::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => return [0; 32],
    };
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// Undoes the `=2C` / `=3D` escaping of SCRAM names.
fn unescape(name: &str) -> Option<String> {
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(at) = rest.find('=') {
        out.push_str(&rest[..at]);
        match rest.get(at..at + 3) {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => return None,
        }
        rest = &rest[at + 3..];
    }
    out.push_str(rest);
    (!out.is_empty()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client side written from the RFC, to drive the server.
    fn client_final(password: &str, client_first_bare: &str, server_first: &str) -> String {
        let mut fields = server_first.split(',');
        let nonce = fields
            .next()
            .and_then(|f| f.strip_prefix("r="))
            .unwrap_or_default();
        let salt = fields
            .next()
            .and_then(|f| f.strip_prefix("s="))
            .unwrap_or_default();
        let iterations: u32 = fields
            .next()
            .and_then(|f| f.strip_prefix("i="))
            .and_then(|i| i.parse().ok())
            .unwrap_or(1);
        let salt = B64.decode(salt).unwrap_or_default();
        let mut salted = [0_u8; 32];
        pbkdf2::pbkdf2_hmac::<Sha256>(password.as_bytes(), &salt, iterations, &mut salted);
        let client_key = hmac(&salted, b"Client Key");
        let stored_key: [u8; 32] = Sha256::digest(client_key).into();
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
        let signature = hmac(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(signature)
            .map(|(k, s)| k ^ s)
            .collect();
        format!("{without_proof},p={}", B64.encode(proof))
    }

    #[test]
    fn full_exchange_accepts_the_right_password_only() {
        let credential = ScramCredential::derive("pencil", 4096);
        assert_eq!(
            ScramCredential::parse(&credential.render()),
            Some(credential.clone())
        );
        let bare = "n=user,r=rOprNGfwEbeRWgbNEkqO";
        for (password, ok) in [("pencil", true), ("pen", false)] {
            let first = format!("n,,{bare}");
            let lookup = |_: &str| Some(credential.clone());
            let (server_first, pending) =
                start(first.as_bytes(), lookup, &FakeSaltKey::random()).expect("first");
            assert!(server_first.starts_with("r=rOprNGfwEbeRWgbNEkqO"));
            let reply = client_final(password, bare, &server_first);
            let result = finish(&pending, reply.as_bytes());
            assert_eq!(result.is_ok(), ok, "{password}");
            if let Ok(server_final) = result {
                let expected = hmac(
                    &credential.server_key,
                    format!(
                        "{bare},{server_first},c=biws,r={}",
                        &server_first[2..server_first.find(',').unwrap_or(2)]
                    )
                    .as_bytes(),
                );
                assert_eq!(server_final, format!("v={}", B64.encode(expected)));
            }
        }
    }

    #[test]
    fn unknown_users_and_malformed_messages_fail() {
        let bare = "n=ghost,r=abc";
        let key = FakeSaltKey::random();
        let (server_first, pending) =
            start(format!("n,,{bare}").as_bytes(), |_| None, &key).expect("first");
        let reply = client_final("x", bare, &server_first);
        assert_eq!(
            finish(&pending, reply.as_bytes()),
            Err(ScramFailure::BadProof)
        );
        assert!(start(b"p=tls-unique,,n=u,r=x", |_| None, &key).is_err());
        assert!(start(b"n,,r=x", |_| None, &key).is_err());
        assert!(start(b"n,,n=a=zz,r=x", |_| None, &key).is_err());
        assert_eq!(unescape("a=2Cb=3Dc").as_deref(), Some("a,b=c"));
    }

    /// The salt an unknown name gets: the same each time under one secret, not the SHA-256
    /// of the name (which anyone can compute, and so tell the name is unknown), and another
    /// under another secret.
    #[test]
    fn unknown_users_get_a_stable_salt_only_the_server_can_compute() {
        let salt_of = |key: &FakeSaltKey, name: &str| {
            let first = format!("n,,n={name},r=abc");
            let (server_first, _) = start(first.as_bytes(), |_| None, key).expect("first");
            let salt = server_first
                .split(',')
                .nth(1)
                .unwrap_or_default()
                .to_owned();
            B64.decode(salt.strip_prefix("s=").unwrap_or_default())
                .unwrap_or_default()
        };
        let key = FakeSaltKey::random();
        let ghost = salt_of(&key, "ghost");
        assert_eq!(ghost.len(), 16);
        assert_eq!(ghost, salt_of(&key, "ghost"));
        assert_ne!(ghost, salt_of(&key, "ghost2"));
        assert_ne!(ghost, Sha256::digest(b"ghost")[..16].to_vec());
        let kept = FakeSaltKey::from_bytes(key.to_bytes());
        assert_eq!(ghost, salt_of(&kept, "ghost"));
        assert_ne!(ghost, salt_of(&FakeSaltKey::random(), "ghost"));
        assert_eq!(format!("{key:?}"), "FakeSaltKey(..)");
    }
}
