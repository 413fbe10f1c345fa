//! Tern's authentication and authorisation methods, behind the core's hooks
//! ([`tern_core::Authenticator`], [`tern_core::Authorizer`]): password files with argon2id
//! hashes, JWT bearer tokens, per-owner device keys, SCRAM-SHA-256 enhanced authentication, and
//! ACL rules. No I/O beyond reading files, no runtime: the broker's runtime runs the slow checks
//! ([`tern_core::AuthDecision::Pending`]) on its blocking threads.
//!
//! # Layout
//! - [`service`]: the authenticator, with one [`Profile`] of methods per listener.
//! - [`passwd`], [`jwt`], [`device`], [`scram`]: the methods.
//! - [`directory`]: users and topics kept in a directory outside the broker (mosquitto-go-auth's
//!   Redis layout).
//! - [`cache`]: successful password checks, remembered for the next login.
//! - [`keyring`]: the keys of the HTTP bridge, sealed at rest; [`key_login`]: MQTT logins with
//!   them.
//! - [`acl`]: the rules and the authorizer; [`scope`]: which identities a rule applies to.

pub mod acl;
pub mod cache;
pub mod device;
pub mod directory;
mod fleet;
pub mod jwt;
pub mod key_login;
pub mod keyring;
pub mod passwd;
pub mod scope;
pub mod scram;
pub mod service;

pub use acl::{Acl, AclError, Action, CompiledAcl, Rule, RuleAccess};
pub use cache::{LoginCache, LOGIN_CACHE_ENTRIES_MAX};
pub use device::{device_password, DeviceKeys};
pub use directory::{
    verify_directory_hash, DirectoryError, DirectoryUser, SaltEncoding, UserDirectory,
};
pub use jwt::JwtVerifier;
pub use key_login::{key_password, KeyLogins};
pub use keyring::{Credential, Grant, HttpKey, KeyError, KeyRing, MasterKey};
pub use passwd::PasswordFile;
pub use scope::{RuleError, RuleMethod, RuleMethods};
pub use scram::{FakeSaltKey, ScramCredential};
pub use service::{AuthService, ClientIds, Profile};
pub use tern_core::DirectoryTopics;

/// Errors loading or changing authentication data.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A password file line is wrong.
    #[error("password file line {line}: {reason}")]
    PasswordFile {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// A user name cannot be stored (empty, or with `:` or control characters).
    #[error("invalid user name {0:?}")]
    BadUserName(String),
    /// Hashing failed.
    #[error("cannot hash password: {0}")]
    Hash(String),
    /// The JWT configuration is wrong.
    #[error("JWT: {0}")]
    Jwt(String),
}
