//! The password file: one user per line, `USER:ARGON2ID-PHC` or
//! `USER:ARGON2ID-PHC:SCRAM-SHA-256$ITERATIONS:SALT$STOREDKEY:SERVERKEY` (the second part in the
//! RFC 5803 form, base64), so one file serves plain CONNECT passwords and SCRAM. Lines starting
//! with `#` and blank lines are ignored. `tern passwd` writes it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use argon2::password_hash::rand_core::{OsRng, RngCore};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;

use crate::scram::ScramCredential;
use crate::AuthError;

/// PBKDF2 iterations for new SCRAM credentials (RFC 7677 asks for at least 4096).
pub const SCRAM_ITERATIONS: u32 = 4096;

/// One user's stored secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The argon2id hash in PHC string form.
    pub hash: String,
    /// SCRAM-SHA-256 keys derived from the same password, if stored.
    pub scram: Option<ScramCredential>,
}

/// A password file in memory, users in name order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PasswordFile {
    users: BTreeMap<String, Entry>,
}

impl PasswordFile {
    /// Parses the file's text.
    pub fn parse(text: &str) -> Result<Self, AuthError> {
        let mut users = BTreeMap::new();
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |why: &str| AuthError::PasswordFile {
                line: index + 1,
                reason: why.to_owned(),
            };
            let mut parts = line.splitn(3, ':');
            let (Some(user), Some(hash)) = (parts.next(), parts.next()) else {
                return Err(bad("expected USER:HASH"));
            };
            if user.is_empty() {
                return Err(bad("empty user name"));
            }
            PasswordHash::new(hash).map_err(|_| bad("not a PHC password hash"))?;
            let scram = match parts.next() {
                None => None,
                Some(text) => Some(ScramCredential::parse(text).ok_or_else(|| {
                    bad("SCRAM part is not SCRAM-SHA-256$ITER:SALT$STORED:SERVER")
                })?),
            };
            let entry = Entry {
                hash: hash.to_owned(),
                scram,
            };
            users.insert(user.to_owned(), entry);
        }
        Ok(Self { users })
    }

    /// Reads and parses a file.
    pub fn load(path: &Path) -> Result<Self, AuthError> {
        let text = std::fs::read_to_string(path).map_err(|source| AuthError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text)
    }

    /// The file's text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (user, entry) in &self.users {
            let _ = write!(out, "{user}:{}", entry.hash);
            if let Some(scram) = &entry.scram {
                let _ = write!(out, ":{}", scram.render());
            }
            out.push('\n');
        }
        out
    }

    /// A user's entry.
    pub fn get(&self, user: &str) -> Option<&Entry> {
        self.users.get(user)
    }

    /// Sets (creates or replaces) a user's password: an argon2id hash and SCRAM keys.
    pub fn set_password(&mut self, user: &str, password: &str) -> Result<(), AuthError> {
        if user.is_empty() || user.contains(':') || user.contains(char::is_control) {
            return Err(AuthError::BadUserName(user.to_owned()));
        }
        let entry = Entry {
            hash: hash_password(password)?,
            scram: Some(ScramCredential::derive(password, SCRAM_ITERATIONS)),
        };
        self.users.insert(user.to_owned(), entry);
        Ok(())
    }

    /// Removes a user; returns whether it was there.
    pub fn remove(&mut self, user: &str) -> bool {
        self.users.remove(user).is_some()
    }

    /// Number of users.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// Whether there are no users.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

/// An argon2id hash of `password` with a fresh random salt, in PHC form.
pub fn hash_password(password: &str) -> Result<String, AuthError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|error| AuthError::Hash(error.to_string()))
}

/// Whether `password` matches the PHC hash (slow on purpose: run it off the broker thread).
pub fn verify_password(hash: &str, password: &[u8]) -> bool {
    PasswordHash::new(hash)
        .is_ok_and(|parsed| Argon2::default().verify_password(password, &parsed).is_ok())
}

/// Random bytes, base64: salts and nonces.
pub(crate) fn random_b64(len: usize) -> String {
    let mut bytes = vec![0_u8; len];
    OsRng.fill_bytes(&mut bytes);
    B64.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_render_parse_verify_remove() {
        let mut file = PasswordFile::default();
        file.set_password("alice", "wonderland").expect("hash");
        file.set_password("bob", "builder").expect("hash");
        let text = file.render();
        assert!(text.starts_with("alice:$argon2id$"));
        assert!(!text.contains("wonderland"));
        let parsed = PasswordFile::parse(&format!("# users\n\n{text}")).expect("parse");
        assert_eq!(parsed, file);
        let alice = parsed.get("alice").expect("alice");
        assert!(verify_password(&alice.hash, b"wonderland"));
        assert!(!verify_password(&alice.hash, b"builder"));
        assert!(alice.scram.is_some());
        let mut parsed = parsed;
        assert!(parsed.remove("bob"));
        assert!(!parsed.remove("bob"));
        assert_eq!(parsed.len(), 1);
    }

    #[test]
    fn bad_lines_are_reported_with_their_number() {
        let error = PasswordFile::parse(
            "ok:$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA\nnope",
        )
        .expect_err("bad line");
        assert!(matches!(error, AuthError::PasswordFile { line: 2, .. }));
        assert!(PasswordFile::parse("u:plaintext").is_err());
        assert!(PasswordFile::default().set_password("a:b", "x").is_err());
    }
}
