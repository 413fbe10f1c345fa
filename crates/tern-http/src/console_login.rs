//! The console's logins besides a token: an operator user's password (an argon2id password
//! file of `tern passwd`, each user's scopes and realm in the configuration) or a JWT of an
//! identity provider (checked by tern-auth's verifier, its claims naming the scopes and the
//! owner). Either gives a record, as a token's, that the session then acts as: the same
//! scopes, realm and topics checks as a token's at every request.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;
use serde_json::Value;

use crate::tokens::{self, Scope, TokenRecord};

/// What an operator user may do (`[http.operator.USER]`): a token's fields, without its hash.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperatorGrant {
    /// Its scopes.
    pub scopes: Vec<Scope>,
    /// Only the client identifiers starting with this.
    #[serde(default)]
    pub clients: String,
    /// Only the topics these filters cover (default `#`).
    #[serde(default = "tokens::every_topic")]
    pub topics: Vec<String>,
    /// Only this owner of the device fleet.
    #[serde(default)]
    pub owner: Option<String>,
}

/// Operator users who log in to the console with a password.
#[derive(Debug, Clone)]
pub struct OperatorUsers {
    /// Their password file (`tern passwd FILE USER`), read at each login, so a change needs
    /// no restart.
    pub file: PathBuf,
    /// What each may do; a user of the file without an entry here cannot log in.
    pub grants: BTreeMap<String, OperatorGrant>,
}

/// Logins with a JWT of an identity provider.
#[derive(Debug, Clone)]
pub struct OperatorJwt {
    /// Checks the signature and expiry; its username claim names the operator, its topics
    /// claim (if set) the topics.
    pub verifier: tern_auth::JwtVerifier,
    /// The claim listing the scopes: a list of names, or names separated by spaces (as
    /// OAuth's `scope`); names that are no scope of Tern's are passed over.
    pub scopes_claim: String,
    /// The claim naming the owner of the device fleet the operator is confined to.
    pub owner_claim: String,
}

/// An operator's record as the configuration grants it, for the checks of its fields.
pub fn grant_record(id: &str, grant: &OperatorGrant) -> TokenRecord {
    TokenRecord {
        id: id.to_owned(),
        sha256: String::new(),
        scopes: grant.scopes.clone(),
        clients: grant.clients.clone(),
        topics: grant.topics.clone(),
        created: 0,
        expires: None,
        owner: grant.owner.clone(),
    }
}

/// A hash no password matches, checked for an unknown user so that it costs as a known one.
const NO_USER_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$2e9aF2CIf1NKIl6Gvx1Ovw1r8IM7Vf4dgbZ1dM7fM5E";

/// Checks a user's password (slow on purpose: call it off the async threads). The record the
/// session acts as (`user:NAME`), or why not, for the log.
pub(crate) fn password_login(
    users: &OperatorUsers,
    user: &str,
    password: &str,
) -> Result<TokenRecord, String> {
    let file = tern_auth::PasswordFile::load(&users.file).map_err(|e| e.to_string())?;
    let entry = file.get(user);
    let hash = entry.map_or(NO_USER_HASH, |entry| entry.hash.as_str());
    let matches = tern_auth::passwd::verify_password(hash, password.as_bytes());
    match (entry, matches) {
        (None, _) => Err(format!("no operator user {user:?}")),
        (Some(_), false) => Err(format!("a wrong password for operator user {user:?}")),
        (Some(_), true) => {
            let grant = users.grants.get(user).ok_or_else(|| {
                format!("operator user {user:?} has no [http.operator.{user}] entry")
            })?;
            let record = grant_record(&format!("user:{user}"), grant);
            tokens::check_realm(&record)?;
            Ok(record)
        }
    }
}

/// Checks an identity provider's JWT at login: the record the session acts as (`jwt:NAME`)
/// and the last second it may (the token's expiry), or why not, for the log.
pub(crate) fn jwt_login(jwt: &OperatorJwt, token: &str) -> Result<(TokenRecord, u64), String> {
    let (identity, claims) = jwt
        .verifier
        .verify_with_claims(token.trim().as_bytes(), None)
        .map_err(|failure| match failure {
            tern_auth::jwt::JwtFailure::Invalid(why) => format!("a JWT not accepted: {why}"),
            tern_auth::jwt::JwtFailure::NoUsername => "a JWT naming no user".to_owned(),
            tern_auth::jwt::JwtFailure::UsernameMismatch => "a JWT of another user".to_owned(),
        })?;
    let scopes = scopes_of(claims.get(&jwt.scopes_claim));
    if scopes.is_empty() {
        return Err(format!(
            "the JWT of {:?} names no scope in its claim {:?}",
            identity.username, jwt.scopes_claim
        ));
    }
    let owner = match claims.get(&jwt.owner_claim) {
        None | Some(Value::Null) => None,
        Some(Value::String(owner)) => Some(owner.clone()),
        Some(_) => {
            return Err(format!(
                "the JWT's claim {:?} is not a string",
                jwt.owner_claim
            ))
        }
    };
    let grant = OperatorGrant {
        scopes,
        clients: String::new(),
        topics: identity.topics.unwrap_or_else(tokens::every_topic),
        owner,
    };
    let record = grant_record(&format!("jwt:{}", identity.username), &grant);
    tokens::check_realm(&record)
        .map_err(|why| format!("the JWT of {:?}: {why}", identity.username))?;
    Ok((record, identity.valid_until_unix_secs))
}

/// The scopes a claim names: a list of strings, or one string of names separated by spaces.
fn scopes_of(claim: Option<&Value>) -> Vec<Scope> {
    let names: Vec<&str> = match claim {
        Some(Value::String(text)) => text.split_whitespace().collect(),
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    let mut scopes: Vec<Scope> = names.into_iter().filter_map(Scope::parse).collect();
    scopes.sort();
    scopes.dedup();
    scopes
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn the_unknown_users_hash_parses_and_matches_nothing() {
        // A hash that did not parse would be refused at once, and tell unknown users apart.
        assert!(tern_auth::PasswordFile::parse(&format!("nobody:{NO_USER_HASH}")).is_ok());
        assert!(!tern_auth::passwd::verify_password(NO_USER_HASH, b""));
    }

    #[test]
    fn scopes_are_read_from_a_list_or_a_spaced_string() {
        assert_eq!(
            scopes_of(Some(&json!("openid read events read"))),
            [Scope::Read, Scope::Events]
        );
        assert_eq!(
            scopes_of(Some(&json!(["metrics", 3, "write"]))),
            [Scope::Write, Scope::Metrics]
        );
        assert!(scopes_of(Some(&json!(7))).is_empty());
        assert!(scopes_of(None).is_empty());
    }
}
