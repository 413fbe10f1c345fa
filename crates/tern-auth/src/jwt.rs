//! JWT bearer tokens in the CONNECT password: HS256 with a shared secret, or RS256/ES256 with
//! a public key (PEM) or the keys of an identity provider's JSON Web Key Set, picked by the
//! token's `kid`. The signature and `exp` are checked (a token without `exp` is refused);
//! one claim names the user, and an optional claim lists the topic filters the connection is
//! restricted to, on top of the ACL rules.

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use serde_json::Value;

use crate::AuthError;

/// Why a token was refused (for the log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwtFailure {
    /// Bad signature, wrong algorithm, malformed, or expired: the library's reason.
    Invalid(String),
    /// The username claim is missing or not a string.
    NoUsername,
    /// The CONNECT user name differs from the token's.
    UsernameMismatch,
}

/// A verified token's meaning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtIdentity {
    /// The user the token names.
    pub username: String,
    /// Topic filters the token restricts the client to, if the claim is present.
    pub topics: Option<Vec<String>>,
    /// The last second the token is accepted: its `exp` plus the verifier's leeway.
    pub valid_until_unix_secs: u64,
}

/// How tokens are checked.
#[derive(Clone)]
pub struct JwtVerifier {
    key: DecodingKey,
    /// The keys of a JSON Web Key Set, by `kid` (none: `key` is the one key).
    key_set: Vec<(Option<String>, DecodingKey)>,
    validation: Validation,
    username_claim: String,
    topics_claim: Option<String>,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key stays out of logs.
        f.debug_struct("JwtVerifier")
            .field("algorithms", &self.validation.algorithms)
            .field("username_claim", &self.username_claim)
            .field("topics_claim", &self.topics_claim)
            .finish_non_exhaustive()
    }
}

impl JwtVerifier {
    /// A verifier for `algorithm` ("HS256", "RS256" or "ES256") with `key`: the shared secret
    /// for HS256, a PEM public key otherwise.
    pub fn new(
        algorithm: &str,
        key: &[u8],
        username_claim: &str,
        topics_claim: Option<&str>,
        leeway_secs: u64,
    ) -> Result<Self, AuthError> {
        let bad = |why: String| AuthError::Jwt(why);
        let (algorithm, key) = match algorithm {
            "HS256" => (Algorithm::HS256, DecodingKey::from_secret(key)),
            "RS256" => (
                Algorithm::RS256,
                DecodingKey::from_rsa_pem(key).map_err(|e| bad(format!("RS256 key: {e}")))?,
            ),
            "ES256" => (
                Algorithm::ES256,
                DecodingKey::from_ec_pem(key).map_err(|e| bad(format!("ES256 key: {e}")))?,
            ),
            other => {
                return Err(bad(format!(
                    "unsupported algorithm {other:?} (HS256, RS256, ES256)"
                )))
            }
        };
        Ok(Self {
            key,
            key_set: Vec::new(),
            validation: validation(algorithm, leeway_secs),
            username_claim: username_claim.to_owned(),
            topics_claim: topics_claim.map(str::to_owned),
        })
    }

    /// A verifier for `algorithm` ("RS256" or "ES256") with the keys of a JSON Web Key Set
    /// (`{"keys": [...]}`, as an identity provider publishes it): a token's header names its
    /// key (`kid`), or the set has one key.
    pub fn with_key_set(
        algorithm: &str,
        key_set: &[u8],
        username_claim: &str,
        topics_claim: Option<&str>,
        leeway_secs: u64,
    ) -> Result<Self, AuthError> {
        let bad = |why: String| AuthError::Jwt(why);
        let algorithm = match algorithm {
            "RS256" => Algorithm::RS256,
            "ES256" => Algorithm::ES256,
            other => {
                return Err(bad(format!(
                    "a key set's algorithm: RS256 or ES256, not {other:?}"
                )))
            }
        };
        let set: JwkSet =
            serde_json::from_slice(key_set).map_err(|e| bad(format!("the key set: {e}")))?;
        let key_set = set
            .keys
            .iter()
            .map(|jwk| {
                let key = DecodingKey::from_jwk(jwk)
                    .map_err(|e| bad(format!("the key set's key {:?}: {e}", jwk.common.key_id)))?;
                Ok((jwk.common.key_id.clone(), key))
            })
            .collect::<Result<Vec<_>, AuthError>>()?;
        let Some((_, first)) = key_set.first() else {
            return Err(bad("the key set has no key".to_owned()));
        };
        Ok(Self {
            key: first.clone(),
            key_set,
            validation: validation(algorithm, leeway_secs),
            username_claim: username_claim.to_owned(),
            topics_claim: topics_claim.map(str::to_owned),
        })
    }

    /// The key a token is checked with: the one key, or the key set's key its `kid` names.
    fn key_of(&self, token: &str) -> Result<&DecodingKey, JwtFailure> {
        if self.key_set.is_empty() {
            return Ok(&self.key);
        }
        let header = decode_header(token).map_err(|e| JwtFailure::Invalid(e.to_string()))?;
        let found = match &header.kid {
            Some(kid) => self
                .key_set
                .iter()
                .find(|(id, _)| id.as_deref() == Some(kid.as_str())),
            None if self.key_set.len() == 1 => self.key_set.first(),
            None => None,
        };
        found.map(|(_, key)| key).ok_or_else(|| {
            JwtFailure::Invalid(format!("no key of the key set is {:?}", header.kid))
        })
    }

    /// Whether `password` looks like a JWT (three base64url parts, a JSON header).
    pub fn claims(password: &[u8]) -> bool {
        password.starts_with(b"eyJ") && password.iter().filter(|&&b| b == b'.').count() == 2
    }

    /// Checks a token; `username` is CONNECT's user name, which must be absent or match.
    pub fn verify(&self, token: &[u8], username: Option<&str>) -> Result<JwtIdentity, JwtFailure> {
        self.verify_with_claims(token, username)
            .map(|(identity, _)| identity)
    }

    /// As [`verify`](Self::verify), with the token's claims too, for callers that map others
    /// (the web console's scopes and owner).
    pub fn verify_with_claims(
        &self,
        token: &[u8],
        username: Option<&str>,
    ) -> Result<(JwtIdentity, Value), JwtFailure> {
        let token = std::str::from_utf8(token).map_err(|e| JwtFailure::Invalid(e.to_string()))?;
        let data = decode::<Value>(token, self.key_of(token)?, &self.validation)
            .map_err(|e| JwtFailure::Invalid(e.to_string()))?;
        let name = data
            .claims
            .get(&self.username_claim)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or(JwtFailure::NoUsername)?;
        if username.is_some_and(|u| !u.is_empty() && u != name) {
            return Err(JwtFailure::UsernameMismatch);
        }
        let topics = self.topics_claim.as_ref().and_then(|claim| {
            let list = data.claims.get(claim)?;
            // A claim that is present but not a list of strings allows nothing.
            Some(
                list.as_array()
                    .map(|items| {
                        items
                            .iter()
                            .filter_map(|v| v.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default(),
            )
        });
        // `exp` is present and numeric, or validation would have failed.
        let expires = data.claims.get("exp").and_then(Value::as_u64).unwrap_or(0);
        let identity = JwtIdentity {
            username: name.to_owned(),
            topics,
            valid_until_unix_secs: expires.saturating_add(self.validation.leeway),
        };
        Ok((identity, data.claims))
    }
}

/// What is checked of every token: the algorithm, the signature and `exp` (with `leeway`).
fn validation(algorithm: Algorithm, leeway_secs: u64) -> Validation {
    let mut validation = Validation::new(algorithm);
    validation.leeway = leeway_secs;
    validation.validate_aud = false;
    validation.set_required_spec_claims(&["exp"]);
    validation
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default()
    }

    fn token(claims: &Value, secret: &[u8]) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            claims,
            &EncodingKey::from_secret(secret),
        )
        .unwrap_or_default()
    }

    #[test]
    fn a_token_is_valid_until_its_expiry_plus_the_leeway() {
        let v = JwtVerifier::new("HS256", b"k", "sub", None, 30).expect("verifier");
        // Expired ten seconds ago, inside the leeway: accepted, for twenty more seconds.
        let exp = now() - 10;
        let late = token(&json!({"sub": "alice", "exp": exp}), b"k");
        let id = v.verify(late.as_bytes(), None).expect("inside the leeway");
        assert_eq!(id.valid_until_unix_secs, exp + 30);
    }

    #[test]
    fn hs256_tokens_checked_for_signature_expiry_and_claims() {
        let v = JwtVerifier::new("HS256", b"k", "sub", Some("topics"), 0).expect("verifier");
        let exp = now() + 600;
        let good = token(
            &json!({"sub": "alice", "exp": exp, "topics": ["a/#"]}),
            b"k",
        );
        assert!(JwtVerifier::claims(good.as_bytes()));
        let id = v.verify(good.as_bytes(), None).expect("valid");
        assert_eq!(id.username, "alice");
        assert_eq!(id.topics, Some(vec!["a/#".to_owned()]));
        assert_eq!(id.valid_until_unix_secs, exp);
        assert!(v.verify(good.as_bytes(), Some("alice")).is_ok());
        assert_eq!(
            v.verify(good.as_bytes(), Some("bob")),
            Err(JwtFailure::UsernameMismatch)
        );

        let expired = token(&json!({"sub": "alice", "exp": now() - 600}), b"k");
        assert!(matches!(
            v.verify(expired.as_bytes(), None),
            Err(JwtFailure::Invalid(_))
        ));
        let forged = token(&json!({"sub": "alice", "exp": now() + 600}), b"other");
        assert!(matches!(
            v.verify(forged.as_bytes(), None),
            Err(JwtFailure::Invalid(_))
        ));
        let no_exp = token(&json!({"sub": "alice"}), b"k");
        assert!(v.verify(no_exp.as_bytes(), None).is_err());
        let no_sub = token(&json!({"exp": now() + 600}), b"k");
        assert_eq!(
            v.verify(no_sub.as_bytes(), None),
            Err(JwtFailure::NoUsername)
        );
        assert!(JwtVerifier::new("none", b"", "sub", None, 0).is_err());
    }

    fn pem(label: &str, der: &[u8]) -> String {
        use base64::Engine as _;
        let body = base64::engine::general_purpose::STANDARD.encode(der);
        let lines: Vec<&str> = body
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap_or_default())
            .collect();
        format!(
            "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
            lines.join("\n")
        )
    }

    fn check_asymmetric(
        algorithm: &str,
        encoding: &EncodingKey,
        other: &EncodingKey,
        public_pem: &[u8],
    ) {
        let alg = match algorithm {
            "RS256" => Algorithm::RS256,
            _ => Algorithm::ES256,
        };
        let v = JwtVerifier::new(algorithm, public_pem, "user", None, 0).expect("verifier");
        let claims = json!({"user": "dev", "exp": now() + 600});
        let good = encode(&Header::new(alg), &claims, encoding).expect("sign");
        assert_eq!(
            v.verify(good.as_bytes(), None).map(|i| i.username),
            Ok("dev".to_owned())
        );
        let forged = encode(&Header::new(alg), &claims, other).expect("sign");
        assert!(
            v.verify(forged.as_bytes(), None).is_err(),
            "{algorithm}: other key"
        );
        let expired = encode(
            &Header::new(alg),
            &json!({"user": "dev", "exp": now() - 600}),
            encoding,
        )
        .expect("sign");
        assert!(
            v.verify(expired.as_bytes(), None).is_err(),
            "{algorithm}: expired"
        );
        // An HS256 token made with the public key as its secret is not accepted (algorithm
        // confusion).
        let confused = token(&claims, public_pem);
        assert!(
            v.verify(confused.as_bytes(), None).is_err(),
            "{algorithm}: HS256"
        );
    }

    /// P-256 keys: each signing key, its public key in PEM, and its point (`04 || x || y`).
    fn es256_keys(count: usize) -> Vec<(EncodingKey, Vec<u8>, Vec<u8>)> {
        use ring::rand::SystemRandom;
        use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
        let rng = SystemRandom::new();
        (0..count)
            .map(|_| {
                let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                    .expect("key");
                let pair = EcdsaKeyPair::from_pkcs8(
                    &ECDSA_P256_SHA256_FIXED_SIGNING,
                    pkcs8.as_ref(),
                    &rng,
                )
                .expect("key");
                // SubjectPublicKeyInfo for a P-256 key: a fixed prefix, then the point.
                let mut spki = vec![
                    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01,
                    0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
                ];
                spki.extend_from_slice(pair.public_key().as_ref());
                (
                    EncodingKey::from_ec_der(pkcs8.as_ref()),
                    pem("PUBLIC KEY", &spki).into_bytes(),
                    pair.public_key().as_ref().to_vec(),
                )
            })
            .collect()
    }

    #[test]
    fn es256_tokens_checked_against_the_public_key() {
        let keys = es256_keys(2);
        check_asymmetric("ES256", &keys[0].0, &keys[1].0, &keys[0].1);
    }

    #[test]
    fn a_key_sets_key_is_picked_by_the_tokens_kid() {
        use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
        use base64::Engine as _;
        let keys = es256_keys(3);
        let jwk = |kid: &str, point: &[u8]| {
            json!({"kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": kid,
                   "x": B64URL.encode(&point[1..33]), "y": B64URL.encode(&point[33..65])})
        };
        let set = json!({"keys": [jwk("a", &keys[0].2), jwk("b", &keys[1].2)]}).to_string();
        let v = JwtVerifier::with_key_set("ES256", set.as_bytes(), "sub", None, 0).expect("set");
        let claims = json!({"sub": "carol", "exp": now() + 600});
        let signed = |kid: Option<&str>, key: &EncodingKey| {
            let mut header = Header::new(Algorithm::ES256);
            header.kid = kid.map(str::to_owned);
            encode(&header, &claims, key).expect("sign")
        };
        let good = signed(Some("b"), &keys[1].0);
        assert_eq!(
            v.verify(good.as_bytes(), None).map(|i| i.username),
            Ok("carol".to_owned())
        );
        // Signed with one key and naming another, naming none of the set's, naming none of
        // two, or signed with a key outside the set: refused.
        for bad in [
            signed(Some("a"), &keys[1].0),
            signed(Some("c"), &keys[2].0),
            signed(None, &keys[0].0),
        ] {
            assert!(v.verify(bad.as_bytes(), None).is_err());
        }
        let one = json!({"keys": [jwk("a", &keys[0].2)]}).to_string();
        let v = JwtVerifier::with_key_set("ES256", one.as_bytes(), "sub", None, 0).expect("set");
        assert!(v.verify(signed(None, &keys[0].0).as_bytes(), None).is_ok());
        assert!(v.verify(signed(None, &keys[2].0).as_bytes(), None).is_err());
        assert!(JwtVerifier::with_key_set("HS256", one.as_bytes(), "sub", None, 0).is_err());
        assert!(JwtVerifier::with_key_set("ES256", b"{\"keys\": []}", "sub", None, 0).is_err());
    }

    #[test]
    fn rs256_tokens_checked_against_the_public_key() {
        // RSA keys are generated for the test with the openssl command (ring cannot).
        let dir = std::env::temp_dir().join(format!("tern-rs256-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mut private = Vec::new();
        for name in ["a", "b"] {
            let key = dir.join(format!("{name}.pem"));
            let status = std::process::Command::new("openssl")
                .args([
                    "genpkey",
                    "-algorithm",
                    "RSA",
                    "-pkeyopt",
                    "rsa_keygen_bits:2048",
                    "-out",
                ])
                .arg(&key)
                .stderr(std::process::Stdio::null())
                .status()
                .expect("openssl runs");
            assert!(status.success());
            private.push(key);
        }
        let public = std::process::Command::new("openssl")
            .args(["pkey", "-pubout", "-in"])
            .arg(&private[0])
            .output()
            .expect("openssl runs");
        assert!(public.status.success());
        let read = |p: &std::path::PathBuf| std::fs::read(p).expect("key file");
        let a = EncodingKey::from_rsa_pem(&read(&private[0])).expect("key a");
        let b = EncodingKey::from_rsa_pem(&read(&private[1])).expect("key b");
        let _ = std::fs::remove_dir_all(&dir);
        check_asymmetric("RS256", &a, &b, &public.stdout);
    }
}
