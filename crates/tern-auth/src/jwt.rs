//! JWT bearer tokens in the CONNECT password: HS256 with a shared secret, or RS256/ES256 with
//! a public key (PEM). The signature and `exp` are checked (a token without `exp` is refused);
//! one claim names the user, and an optional claim lists the topic filters the connection is
//! restricted to, on top of the ACL rules.

use jsonwebtoken::{decode, Algorithm, DecodingKey, Validation};
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
}

/// How tokens are checked.
#[derive(Clone)]
pub struct JwtVerifier {
    key: DecodingKey,
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
        let mut validation = Validation::new(algorithm);
        validation.leeway = leeway_secs;
        validation.validate_aud = false;
        validation.set_required_spec_claims(&["exp"]);
        Ok(Self {
            key,
            validation,
            username_claim: username_claim.to_owned(),
            topics_claim: topics_claim.map(str::to_owned),
        })
    }

    /// Whether `password` looks like a JWT (three base64url parts, a JSON header).
    pub fn claims(password: &[u8]) -> bool {
        password.starts_with(b"eyJ") && password.iter().filter(|&&b| b == b'.').count() == 2
    }

    /// Checks a token; `username` is CONNECT's user name, which must be absent or match.
    pub fn verify(&self, token: &[u8], username: Option<&str>) -> Result<JwtIdentity, JwtFailure> {
        let token = std::str::from_utf8(token).map_err(|e| JwtFailure::Invalid(e.to_string()))?;
        let data = decode::<Value>(token, &self.key, &self.validation)
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
        Ok(JwtIdentity {
            username: name.to_owned(),
            topics,
        })
    }
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
    fn hs256_tokens_checked_for_signature_expiry_and_claims() {
        let v = JwtVerifier::new("HS256", b"k", "sub", Some("topics"), 0).expect("verifier");
        let good = token(
            &json!({"sub": "alice", "exp": now() + 600, "topics": ["a/#"]}),
            b"k",
        );
        assert!(JwtVerifier::claims(good.as_bytes()));
        let id = v.verify(good.as_bytes(), None).expect("valid");
        assert_eq!(id.username, "alice");
        assert_eq!(id.topics, Some(vec!["a/#".to_owned()]));
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
}
