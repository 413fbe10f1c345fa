//! Operator tokens: the `Authorization: Bearer` credentials of the operator API
//! (`/v1/admin/...`, `/v1/events`, `/metrics`). A token is `tot1.ID.SECRET` (SECRET: 64 hex
//! digits, random); the file `http-tokens.json` in the data directory keeps, per id, only the
//! SHA-256 of the whole token (a random 256-bit secret needs no slow hash), its scopes and its
//! realm, and is written by `tern token` (read again when it changes, as the key file is).
//! Checks take the same time whether the id exists or not, and compare in constant time.
//!
//! A token's **realm** is what it may see and change: client identifiers starting with its
//! `clients` prefix, and topics its `topics` filters cover (compiled by the ACL engine, as a
//! credential's own topic restriction is). A token bound to an `owner` of the device fleet
//! sees that owner's devices (as clients) and, of its topics, only those of the owner's
//! namespace (`<prefix><owner>/#`, `$events/<owner>/#`): see `realm.rs`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tern_core::fleet::FleetTopics;
use tern_core::{Access, Identity, Permissions};

use crate::realm::Realm;

/// The file the tokens are kept in, in the data directory.
pub const TOKENS_FILE: &str = "http-tokens.json";
/// How every token begins.
const PREFIX: &str = "tot1";

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Read clients, sessions, subscriptions, retained messages, bans, access requests.
    Read,
    /// Kick clients, delete sessions and retained messages, ban, decide access requests.
    Write,
    /// List, add, rotate and revoke HTTP keys.
    Keys,
    /// Read live messages and broker events (`GET /v1/events`).
    Events,
    /// Read the Prometheus metrics (`GET /metrics`).
    Metrics,
}

impl Scope {
    /// Its name, as written in the token file and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::Keys => "keys",
            Self::Events => "events",
            Self::Metrics => "metrics",
        }
    }

    /// The scope of a name.
    pub fn parse(name: &str) -> Option<Self> {
        [
            Self::Read,
            Self::Write,
            Self::Keys,
            Self::Events,
            Self::Metrics,
        ]
        .into_iter()
        .find(|scope| scope.name() == name)
    }
}

/// One token as kept in the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// Its id: 1-64 of `A-Z a-z 0-9 . _ -`.
    pub id: String,
    /// SHA-256 of the whole token, hex.
    pub sha256: String,
    /// What it may do.
    pub scopes: Vec<Scope>,
    /// The client identifiers it may see and act on: those starting with this.
    #[serde(default)]
    pub clients: String,
    /// The topics it may see (retained messages, live messages): filters; default `#`.
    #[serde(default = "every_topic")]
    pub topics: Vec<String>,
    /// When it was made (Unix seconds).
    #[serde(default)]
    pub created: u64,
    /// When it stops working (Unix seconds); never without.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<u64>,
    /// The owner of the device fleet it is bound to: it sees that owner's devices and topics
    /// only (and `clients` is then empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

/// The topics of a token or operator that names none: all of them.
pub(crate) fn every_topic() -> Vec<String> {
    vec!["#".to_owned()]
}

#[derive(Serialize, Deserialize)]
struct FileForm {
    format: u32,
    tokens: Vec<TokenRecord>,
}

/// Every token, by id.
#[derive(Debug, Clone, Default)]
pub struct TokenSet {
    tokens: BTreeMap<String, TokenRecord>,
}

/// Why a token was refused (the answer is the same for all: `token_invalid`; the log says).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenRefusal {
    /// Not the form of a token.
    Malformed,
    /// No token has its id, or its secret is wrong (revoked tokens are gone from the file).
    Unknown,
    /// It expired.
    Expired,
}

impl TokenRefusal {
    pub(crate) fn describe(self) -> &'static str {
        match self {
            Self::Malformed => "not an operator token",
            Self::Unknown => "unknown or revoked token, or a wrong secret",
            Self::Expired => "the token expired",
        }
    }
}

/// A token that verified: who and what it may do.
#[derive(Debug, Clone)]
pub(crate) struct Operator {
    pub(crate) id: String,
    scopes: Vec<Scope>,
    realm: Realm,
    topics: Arc<dyn Permissions + Send + Sync>,
    /// For a token of an owner: the owner's namespace, which its topics must also be in.
    owner_topics: Option<Arc<dyn Permissions + Send + Sync>>,
    /// Its topic filters as written (`topics`), for the console's topic tree.
    filters: Vec<String>,
}

impl Operator {
    pub(crate) fn has(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }

    /// Whether the token's realm holds this client identifier, as far as the HTTP side can
    /// tell: a token of an owner holds none here (which clients are its devices is known on
    /// the broker thread, through [`Realm::holds_client`]).
    pub(crate) fn sees_client(&self, client_id: &str) -> bool {
        match &self.realm {
            Realm::Clients(prefix) => client_id.starts_with(prefix.as_str()),
            Realm::Owner(_) => false,
        }
    }

    /// Whether the whole broker is its realm (for keys of groups and apps, bans of any id).
    pub(crate) fn sees_all_clients(&self) -> bool {
        self.realm.is_whole_broker()
    }

    /// Whether the token's realm covers a topic name or filter, as a subscription is checked.
    pub(crate) fn sees_topic(&self, topic: &str) -> bool {
        self.topics.allows(Access::Subscribe, topic)
            && self
                .owner_topics
                .as_ref()
                .is_none_or(|own| own.allows(Access::Subscribe, topic))
    }

    /// The realm, for what the broker thread filters by.
    pub(crate) fn realm(&self) -> &Realm {
        &self.realm
    }

    /// Its topic filters as written.
    pub(crate) fn filters(&self) -> &[String] {
        &self.filters
    }
}

/// Makes a new token's text and record (its text is shown once, only its hash is kept).
pub fn new_token(
    id: &str,
    scopes: Vec<Scope>,
    clients: String,
    topics: Vec<String>,
    now: u64,
    expires: Option<u64>,
) -> Result<(String, TokenRecord), String> {
    if !tern_auth::keyring::valid_name(id) {
        return Err(format!(
            "token id {id:?}: 1-64 of A-Z a-z 0-9 . _ - are allowed"
        ));
    }
    let topics = if topics.is_empty() {
        every_topic()
    } else {
        topics
    };
    compile_topics(&topics)?;
    let secret: [u8; 32] = rand_bytes();
    let text = format!("{PREFIX}.{id}.{}", crate::signing::hex(&secret));
    let record = TokenRecord {
        id: id.to_owned(),
        sha256: crate::signing::hex(&Sha256::digest(text.as_bytes())),
        scopes,
        clients,
        topics,
        created: now,
        expires,
        owner: None,
    };
    Ok((text, record))
}

/// What the owner may see of the topics, as its own MQTT login may subscribe: its fleet's
/// topics and `$events/<owner>/#` (the fleet's rules in the ACL engine, not a copy).
fn owner_namespace(fleet: &FleetTopics, owner: &str) -> Arc<dyn Permissions + Send + Sync> {
    let identity = Identity {
        method: tern_core::Method::FleetOwner,
        username: Some(owner.to_owned()),
        owner: Some(owner.to_owned()),
        ..Identity::default()
    };
    let acl = tern_auth::Acl::allow_all().with_fleet_topics(fleet.clone());
    Arc::new(acl.compile("", &identity))
}

/// Binds a token record to an owner of the device fleet (its realm is then that owner's).
pub fn bind_owner(record: &mut TokenRecord, owner: &str) -> Result<(), String> {
    check_owner(record, Some(owner))?;
    record.owner = Some(owner.to_owned());
    Ok(())
}

/// Checks what a record beside the token file allows (an operator user's of the
/// configuration, or one a login made): topic filters that parse, an owner's realm.
pub fn check_realm(record: &TokenRecord) -> Result<(), String> {
    compile_topics(&record.topics)?;
    check_owner(record, record.owner.as_deref())
}

/// An owner that names one, and no client prefix beside it.
fn check_owner(record: &TokenRecord, owner: Option<&str>) -> Result<(), String> {
    let Some(owner) = owner else {
        return Ok(());
    };
    tern_core::fleet::check_name("owner", owner).map_err(|e| e.to_string())?;
    if !record.clients.is_empty() {
        return Err("a token of an owner has no client prefix: its clients are its devices".into());
    }
    // The metrics and the key file are the whole broker's.
    if let Some(scope) = record
        .scopes
        .iter()
        .find(|s| matches!(s, Scope::Keys | Scope::Metrics))
    {
        return Err(format!(
            "a token of an owner has the scopes read, write and events, not {}",
            scope.name()
        ));
    }
    Ok(())
}

fn rand_bytes() -> [u8; 32] {
    let master = tern_auth::MasterKey::random();
    master.to_bytes()
}

/// The topic filters compiled by the ACL engine, as a credential's restriction.
fn compile_topics(topics: &[String]) -> Result<Arc<dyn Permissions + Send + Sync>, String> {
    for topic in topics {
        topic
            .parse::<tern_codec::TopicFilter>()
            .map_err(|e| format!("topic filter {topic:?}: {e}"))?;
    }
    let identity = Identity {
        topics: Some(topics.to_vec()),
        ..Identity::default()
    };
    Ok(Arc::new(tern_auth::Acl::allow_all().compile("", &identity)))
}

impl TokenSet {
    /// Reads a token file's text.
    pub fn parse(text: &str) -> Result<Self, String> {
        let form: FileForm = serde_json::from_str(text).map_err(|e| e.to_string())?;
        if form.format != 1 {
            return Err(format!("unknown format {}", form.format));
        }
        let mut set = Self::default();
        for record in form.tokens {
            compile_topics(&record.topics)?;
            check_owner(&record, record.owner.as_deref())?;
            set.tokens.insert(record.id.clone(), record);
        }
        Ok(set)
    }

    /// The file's text.
    pub fn render(&self) -> String {
        let form = FileForm {
            format: 1,
            tokens: self.tokens.values().cloned().collect(),
        };
        serde_json::to_string_pretty(&form).unwrap_or_default()
    }

    /// Adds a token record; an id in use is refused.
    pub fn add(&mut self, record: TokenRecord) -> Result<(), String> {
        if self.tokens.contains_key(&record.id) {
            return Err(format!("token {} exists", record.id));
        }
        self.tokens.insert(record.id.clone(), record);
        Ok(())
    }

    /// Removes a token; whether it was there.
    pub fn revoke(&mut self, id: &str) -> bool {
        self.tokens.remove(id).is_some()
    }

    /// Every token, by id.
    pub fn tokens(&self) -> impl Iterator<Item = &TokenRecord> {
        self.tokens.values()
    }

    /// Checks a bearer token at `now`: the same work whether its id exists or not. `fleet`
    /// says where an owner's topics are.
    pub(crate) fn verify(
        &self,
        text: &str,
        now: u64,
        fleet: &FleetTopics,
    ) -> Result<Operator, TokenRefusal> {
        let mut parts = text.splitn(3, '.');
        let (Some(PREFIX), Some(id), Some(secret)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenRefusal::Malformed);
        };
        if secret.len() != 64 || !secret.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(TokenRefusal::Malformed);
        }
        let presented = crate::signing::hex(&Sha256::digest(text.as_bytes()));
        let record = self.tokens.get(id);
        // An unknown id is compared with a hash no token has, so it costs the same.
        let expected = record.map_or("0".repeat(64), |r| r.sha256.to_ascii_lowercase());
        let same: bool = presented.as_bytes().ct_eq(expected.as_bytes()).into();
        let Some(record) = record.filter(|_| same) else {
            return Err(TokenRefusal::Unknown);
        };
        if record.expires.is_some_and(|at| at <= now) {
            return Err(TokenRefusal::Expired);
        }
        operator_of(record, fleet).map_err(|_| TokenRefusal::Unknown)
    }
}

/// What a record allows, as a verified operator: its scopes, realm and topics. A token's
/// record, or one made for a console login of an operator user or an identity provider's JWT.
pub(crate) fn operator_of(record: &TokenRecord, fleet: &FleetTopics) -> Result<Operator, String> {
    let topics = compile_topics(&record.topics)?;
    let (realm, topics, owner_topics) = match &record.owner {
        Some(owner) => {
            let own = owner_namespace(fleet, owner);
            // Its topics by default are its namespace (`#` would leave out `$events/`).
            match record.topics == every_topic() {
                true => (Realm::Owner(owner.clone()), own, None),
                false => (Realm::Owner(owner.clone()), topics, Some(own)),
            }
        }
        None => (Realm::Clients(record.clients.clone()), topics, None),
    };
    Ok(Operator {
        id: record.id.clone(),
        scopes: record.scopes.clone(),
        realm,
        topics,
        owner_topics,
        filters: record.topics.clone(),
    })
}

/// The `[[http.token]]` entry of the configuration file for a token: its hash, not the token.
pub fn config_entry(record: &TokenRecord) -> String {
    let quoted = |text: &str| serde_json::to_string(text).unwrap_or_default();
    let scopes: Vec<String> = record.scopes.iter().map(|s| quoted(s.name())).collect();
    let topics: Vec<String> = record.topics.iter().map(|t| quoted(t)).collect();
    let mut entry = format!(
        "[[http.token]]\nid = {}\nsha256 = {}\nscopes = [{}]\n",
        quoted(&record.id),
        quoted(&record.sha256),
        scopes.join(", ")
    );
    if !record.clients.is_empty() {
        entry.push_str(&format!("clients = {}\n", quoted(&record.clients)));
    }
    entry.push_str(&format!("topics = [{}]\n", topics.join(", ")));
    if let Some(expires) = record.expires {
        entry.push_str(&format!("expires = {expires}\n"));
    }
    if let Some(owner) = &record.owner {
        entry.push_str(&format!("owner = {}\n", quoted(owner)));
    }
    entry
}

/// Checks tokens given in the configuration file (`[[http.token]]`).
pub fn check_configured(records: &[TokenRecord]) -> Result<(), String> {
    let mut set = TokenSet::default();
    for record in records {
        if !tern_auth::keyring::valid_name(&record.id) {
            return Err(format!(
                "token id {:?}: 1-64 of A-Z a-z 0-9 . _ -",
                record.id
            ));
        }
        let hash = &record.sha256;
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("token {}: sha256 is 64 hex digits", record.id));
        }
        compile_topics(&record.topics).map_err(|e| format!("token {}: {e}", record.id))?;
        check_owner(record, record.owner.as_deref())
            .map_err(|e| format!("token {}: {e}", record.id))?;
        set.add(record.clone())?;
    }
    Ok(())
}

/// The tokens in force, read again when the file changes.
#[derive(Debug)]
pub(crate) struct Tokens {
    /// Those of the configuration file, in force beside (and over) the file's.
    configured: Vec<TokenRecord>,
    dir: PathBuf,
    set: RwLock<Arc<TokenSet>>,
    stamp: RwLock<Option<(SystemTime, u64)>>,
}

impl Tokens {
    pub(crate) fn load(dir: &Path, configured: Vec<TokenRecord>) -> Result<Self, String> {
        check_configured(&configured)?;
        let set = with_configured(read(dir)?, &configured);
        Ok(Self {
            configured,
            dir: dir.to_owned(),
            stamp: RwLock::new(crate::keys::file_stamp(&dir.join(TOKENS_FILE))),
            set: RwLock::new(Arc::new(set)),
        })
    }

    pub(crate) fn current(&self) -> Arc<TokenSet> {
        match self.set.read() {
            Ok(set) => Arc::clone(&set),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Reads the file again if it changed; one that does not read leaves the tokens in force.
    pub(crate) fn reload_if_changed(&self) {
        let path = self.dir.join(TOKENS_FILE);
        if !crate::keys::stamp_changed(&self.stamp, &path) {
            return;
        }
        match read(&self.dir) {
            Ok(set) => {
                let set = with_configured(set, &self.configured);
                let count = set.tokens.len();
                if let Ok(mut current) = self.set.write() {
                    *current = Arc::new(set);
                }
                tracing::info!("operator tokens reloaded: {count} token(s)");
            }
            Err(error) => {
                tracing::warn!(
                    "cannot reload the operator tokens, keeping those in force: {error}"
                );
            }
        }
    }
}

/// The file's tokens and the configuration's, which take the place of a file token of the
/// same id (logged).
fn with_configured(mut set: TokenSet, configured: &[TokenRecord]) -> TokenSet {
    for record in configured {
        if set.revoke(&record.id) {
            tracing::warn!(
                "token {} is in the configuration file and {TOKENS_FILE}: the configuration's is in force",
                record.id
            );
        }
        set.tokens.insert(record.id.clone(), record.clone());
    }
    set
}

/// The tokens in `dir` (none without a file).
pub fn read(dir: &Path) -> Result<TokenSet, String> {
    let path = dir.join(TOKENS_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => TokenSet::parse(&text).map_err(|e| format!("{}: {e}", path.display())),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(TokenSet::default()),
        Err(error) => Err(format!("cannot read {}: {error}", path.display())),
    }
}

/// Writes the tokens to `dir` (mode 0600, replaced in one step).
pub fn write(dir: &Path, set: &TokenSet) -> Result<(), String> {
    crate::keys::write_private(dir, TOKENS_FILE, set.render().as_bytes())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn set_with(
        scopes: Vec<Scope>,
        clients: &str,
        topics: &[&str],
        expires: Option<u64>,
    ) -> (String, TokenSet) {
        let topics = topics.iter().map(|t| (*t).to_owned()).collect();
        let (text, record) =
            new_token("ops", scopes, clients.to_owned(), topics, 100, expires).unwrap();
        let mut set = TokenSet::default();
        set.add(record).unwrap();
        (text, TokenSet::parse(&set.render()).unwrap())
    }

    #[test]
    fn a_token_verifies_only_whole_and_unexpired_and_the_file_keeps_no_secret() {
        let (text, set) = set_with(vec![Scope::Read], "", &[], Some(200));
        assert!(!set.render().contains(text.rsplit('.').next().unwrap()));
        let operator = set.verify(&text, 150, &FleetTopics::default()).unwrap();
        assert!(operator.has(Scope::Read) && !operator.has(Scope::Write));
        assert_eq!(
            set.verify(&text, 200, &FleetTopics::default()).unwrap_err(),
            TokenRefusal::Expired
        );
        let mut altered = text.clone();
        altered.pop();
        altered.push(if text.ends_with('0') { '1' } else { '0' });
        assert_eq!(
            set.verify(&altered, 150, &FleetTopics::default())
                .unwrap_err(),
            TokenRefusal::Unknown
        );
        let other_id = text.replacen(".ops.", ".opz.", 1);
        assert_eq!(
            set.verify(&other_id, 150, &FleetTopics::default())
                .unwrap_err(),
            TokenRefusal::Unknown
        );
        assert_eq!(
            set.verify("Bearer x", 150, &FleetTopics::default())
                .unwrap_err(),
            TokenRefusal::Malformed
        );
        let mut revoked = set.clone();
        assert!(revoked.revoke("ops"));
        assert_eq!(
            revoked
                .verify(&text, 150, &FleetTopics::default())
                .unwrap_err(),
            TokenRefusal::Unknown
        );
    }

    #[test]
    fn configured_tokens_verify_beside_the_files_and_take_the_place_of_one_of_their_id() {
        let (file_text, file_set) = set_with(vec![Scope::Read], "", &[], None);
        let (text, record) = new_token(
            "ops",
            vec![Scope::Metrics],
            String::new(),
            Vec::new(),
            5,
            None,
        )
        .unwrap();
        let (other_text, other) = new_token(
            "prom",
            vec![Scope::Metrics],
            String::new(),
            Vec::new(),
            5,
            None,
        )
        .unwrap();
        let set = with_configured(file_set, &[record, other]);
        assert!(set
            .verify(&text, 0, &FleetTopics::default())
            .unwrap()
            .has(Scope::Metrics));
        assert!(set.verify(&other_text, 0, &FleetTopics::default()).is_ok());
        assert_eq!(
            set.verify(&file_text, 0, &FleetTopics::default())
                .unwrap_err(),
            TokenRefusal::Unknown
        );
    }

    #[test]
    fn the_realm_limits_clients_and_topics_as_subscriptions_are_checked() {
        let (text, set) = set_with(vec![Scope::Events], "acme-", &["acme/#"], None);
        let operator = set.verify(&text, 0, &FleetTopics::default()).unwrap();
        assert!(operator.sees_client("acme-1") && !operator.sees_client("other-1"));
        assert!(!operator.sees_all_clients());
        assert!(operator.sees_topic("acme/a/b") && operator.sees_topic("acme/+/t"));
        for outside in [
            "#",
            "+/a",
            "other/a",
            "$SYS/#",
            "$share/g/acme/#",
            "$tree/acme/#",
        ] {
            assert!(!operator.sees_topic(outside), "{outside}");
        }
        let (text, set) = set_with(vec![Scope::Events], "", &[], None);
        let everything = set.verify(&text, 0, &FleetTopics::default()).unwrap();
        assert!(everything.sees_topic("a/b") && everything.sees_topic("#"));
        assert!(
            !everything.sees_topic("$SYS/broker/uptime"),
            "# does not cover $ topics"
        );
    }

    #[test]
    fn a_token_of_an_owner_sees_its_fleets_topics_within_its_own_and_no_client_by_prefix() {
        let (text, mut record) = new_token(
            "acme-console",
            vec![Scope::Read, Scope::Events],
            String::new(),
            Vec::new(),
            0,
            None,
        )
        .unwrap();
        bind_owner(&mut record, "acme").unwrap();
        let mut set = TokenSet::default();
        set.add(record.clone()).unwrap();
        let set = TokenSet::parse(&set.render()).unwrap();
        let operator = set.verify(&text, 0, &FleetTopics::default()).unwrap();
        assert_eq!(operator.realm(), &Realm::Owner("acme".to_owned()));
        assert!(!operator.sees_all_clients() && !operator.sees_client("acme"));
        for inside in ["/acme/d1/status", "/acme/#", "$events/acme/d1/online"] {
            assert!(operator.sees_topic(inside), "{inside}");
        }
        for outside in [
            "#",
            "/#",
            "/globex/g1",
            "/+/d1/status",
            "$events/#",
            "$events/globex/g1/online",
            "acme/d1",
            "$SYS/#",
            "$share/g//acme/#",
            "$tree//acme/#",
        ] {
            assert!(!operator.sees_topic(outside), "{outside}");
        }
        // Another layout moves its namespace; topics of its own narrow it further.
        let flat = FleetTopics::new("").unwrap();
        let operator = set.verify(&text, 0, &flat).unwrap();
        assert!(operator.sees_topic("acme/d1") && !operator.sees_topic("/acme/d1"));
        let (narrow_text, mut narrow) = new_token(
            "acme-d1",
            vec![Scope::Read],
            String::new(),
            vec!["/acme/d1/#".to_owned(), "/globex/#".to_owned()],
            0,
            None,
        )
        .unwrap();
        bind_owner(&mut narrow, "acme").unwrap();
        let mut narrow_set = TokenSet::default();
        narrow_set.add(narrow).unwrap();
        let operator = narrow_set
            .verify(&narrow_text, 0, &FleetTopics::default())
            .unwrap();
        assert!(operator.sees_topic("/acme/d1/status"));
        for outside in ["/acme/d2", "/globex/g1", "$events/acme/d1/online"] {
            assert!(!operator.sees_topic(outside), "{outside}");
        }
        // In the configuration file too, and never with a client prefix beside it.
        assert!(config_entry(&record).contains("owner = \"acme\""));
        let mut both = record.clone();
        both.clients = "acme-".to_owned();
        assert!(check_configured(&[both]).is_err());
        assert!(bind_owner(&mut record.clone(), "a/b").is_err());
        let mut metrics = record.clone();
        metrics.scopes.push(Scope::Metrics);
        assert!(check_configured(&[metrics]).is_err());
    }
}
