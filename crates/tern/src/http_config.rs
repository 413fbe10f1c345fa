//! The HTTP bridge's part of the configuration: `[[listener]]`s with protocol "http" or
//! "https", the `[http]` section, and how `--http-port` overrides them. With no listeners in
//! the file and no listener flags, the broker serves HTTP on port 8080 beside MQTT on 1883.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::bail;
use serde::Deserialize;
use tern_http::{HttpConfig, HttpListener};

use crate::config::FileConfig;

/// The port HTTP is served on by default.
pub(crate) const DEFAULT_HTTP_PORT: u16 = 8080;

/// `[http]`: limits and windows of the HTTP bridge; every field has a default.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HttpSection {
    /// How far a request's Tern-Time may be from the broker's clock (300).
    window_secs: Option<u64>,
    /// How long the answer to an exactly-once request is kept for its retries (86400).
    idempotency_secs: Option<u64>,
    /// Largest request body (262144).
    body_max_bytes: Option<usize>,
    /// Largest firmware file uploaded to the operator API (67108864).
    firmware_file_max_bytes: Option<u64>,
    /// Largest batch of messages (1000).
    batch_items_max: Option<usize>,
    /// Time a client has to send a request's headers (10).
    header_timeout_secs: Option<u64>,
    /// Time a client has to send a request's body (30).
    body_timeout_secs: Option<u64>,
    /// HTTP connections at once (10000).
    connections_max: Option<usize>,
    /// How long a mailbox made over HTTP outlives its last request, seconds (604800).
    mailbox_expiry_secs: Option<u32>,
    /// Hand-outs of a message without an acknowledgement before it is a dead letter (10).
    mailbox_deliveries_max: Option<u32>,
    /// Dead letters kept per mailbox (1000).
    mailbox_dead_letters_max: Option<usize>,
    /// Seconds between samples of the overview's history (10).
    metrics_history_secs: Option<u64>,
    /// `[[http.mailbox_class]]`: queue limits of mailboxes by client identifier prefix.
    #[serde(default)]
    mailbox_class: Vec<MailboxClassEntry>,
    /// Operator tokens, hashed (`tern token add --config` prints an entry).
    #[serde(default)]
    token: Vec<tern_http::tokens::TokenRecord>,
    /// The password file of the console's operator users (`tern passwd FILE USER`).
    operators_file: Option<PathBuf>,
    /// `[http.operator.USER]`: what each operator user may do.
    #[serde(default)]
    operator: std::collections::BTreeMap<String, tern_http::console_login::OperatorGrant>,
    /// `[http.operator_jwt]`: console logins with an identity provider's JWT.
    operator_jwt: Option<OperatorJwtSection>,
}

/// `[http.operator_jwt]`: the key as `[auth.NAME.jwt]` takes it, and the claims that name an
/// operator's scopes and owner.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct OperatorJwtSection {
    algorithm: String,
    secret: Option<String>,
    secret_file: Option<PathBuf>,
    public_key_file: Option<PathBuf>,
    /// The identity provider's JSON Web Key Set (RS256/ES256; a token's `kid` picks the key),
    /// instead of one key. Read at start.
    jwks_file: Option<PathBuf>,
    /// The claim naming the operator (`sub`).
    #[serde(default = "default_username_claim")]
    username_claim: String,
    /// The claim listing the topic filters the operator sees (all without).
    topics_claim: Option<String>,
    /// The claim of the scopes: a list, or names separated by spaces (`scope`).
    #[serde(default = "default_scopes_claim")]
    scopes_claim: String,
    /// The claim of the owner of the device fleet the operator is confined to (`owner`).
    #[serde(default = "default_owner_claim")]
    owner_claim: String,
    #[serde(default)]
    leeway_secs: u64,
}

fn default_username_claim() -> String {
    "sub".to_owned()
}

fn default_scopes_claim() -> String {
    "scope".to_owned()
}

fn default_owner_claim() -> String {
    "owner".to_owned()
}

/// `[[http.mailbox_class]]`: the queue limits of the mailboxes of clients whose identifier
/// begins with `clients` (the longest such prefix wins).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MailboxClassEntry {
    clients: String,
    queued_count_max: usize,
    queued_bytes_max: usize,
}

/// `[[history]]`: messages on topics matching `filter` are kept, the last `max_messages` of
/// each topic, for `max_age_secs`, in at most `max_topics` topics.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HistoryEntry {
    filter: String,
    max_messages: usize,
    max_age_secs: u64,
    #[serde(default = "default_history_topics")]
    max_topics: usize,
}

fn default_history_topics() -> usize {
    10_000
}

impl HttpSection {
    /// The core's mailbox classes.
    pub(crate) fn mailbox_classes(&self) -> Vec<tern_core::mailbox::MailboxClass> {
        self.mailbox_class
            .iter()
            .map(|class| tern_core::mailbox::MailboxClass {
                prefix: class.clients.clone(),
                queued_count_max: class.queued_count_max,
                queued_bytes_max: class.queued_bytes_max,
            })
            .collect()
    }
}

/// The core's history configuration; a filter that does not parse, a shared subscription or
/// a `$` filter is refused.
pub(crate) fn history(
    entries: &[HistoryEntry],
) -> anyhow::Result<Vec<tern_core::history::HistoryConfig>> {
    entries
        .iter()
        .map(|entry| {
            let filter: tern_codec::TopicFilter = match entry.filter.parse() {
                Ok(filter) => filter,
                Err(_) => bail!(
                    "[[history]] filter {:?} is not a topic filter",
                    entry.filter
                ),
            };
            if filter.is_shared() || filter.starts_with('$') {
                bail!(
                    "[[history]] filter {:?}: not a shared or $ filter",
                    entry.filter
                );
            }
            Ok(tern_core::history::HistoryConfig {
                filter,
                max_messages: entry.max_messages.max(1),
                max_age_millis: entry.max_age_secs.saturating_mul(1000),
                max_topics: entry.max_topics,
            })
        })
        .collect()
}

/// The bridge's configuration, or `None` when no HTTP listener is wanted: `--http-port` gives
/// one (on `--bind`'s address); other listener flags leave HTTP out unless it is given; else
/// the file's HTTP listeners; with no listener in the file, port 8080.
pub(crate) fn http_config(
    file: &FileConfig,
    base: &Path,
    bind: Option<IpAddr>,
    port: Option<u16>,
    http_port: Option<u16>,
    data_dir: PathBuf,
) -> anyhow::Result<Option<HttpConfig>> {
    let ip = bind.unwrap_or(IpAddr::from([0, 0, 0, 0]));
    let listeners = match http_port {
        Some(http_port) => vec![plain(SocketAddr::new(ip, http_port))],
        None if bind.is_some() || port.is_some() => Vec::new(),
        None if file.listener.is_empty() => vec![plain(SocketAddr::new(ip, DEFAULT_HTTP_PORT))],
        None => file
            .listener
            .iter()
            .filter(|l| l.is_http())
            .map(|l| {
                if l.auth.is_some() {
                    bail!(
                        "listener {}: HTTP requests are signed with keys (tern key), not an \
                         [auth] profile",
                        l.bind
                    );
                }
                Ok(HttpListener {
                    bind: l.bind,
                    tls: l.tls_settings(base)?,
                })
            })
            .collect::<anyhow::Result<_>>()?,
    };
    if listeners.is_empty() {
        return Ok(None);
    }
    let section = &file.http;
    let mut config = HttpConfig::new(listeners, data_dir);
    let secs = |value: Option<u64>, default: Duration| value.map_or(default, Duration::from_secs);
    config.window = secs(section.window_secs, config.window);
    config.idempotency = secs(section.idempotency_secs, config.idempotency);
    config.header_timeout = secs(section.header_timeout_secs, config.header_timeout);
    config.body_timeout = secs(section.body_timeout_secs, config.body_timeout);
    config.body_max_bytes = section.body_max_bytes.unwrap_or(config.body_max_bytes);
    config.firmware_file_max_bytes = section
        .firmware_file_max_bytes
        .unwrap_or(config.firmware_file_max_bytes);
    config.batch_items_max = section.batch_items_max.unwrap_or(config.batch_items_max);
    config.connections_max = section.connections_max.unwrap_or(config.connections_max);
    config.metrics_history_every = secs(section.metrics_history_secs, config.metrics_history_every);
    let mailboxes = &mut config.mailboxes;
    mailboxes.expiry_secs = section.mailbox_expiry_secs.unwrap_or(mailboxes.expiry_secs);
    mailboxes.deliveries_max = section
        .mailbox_deliveries_max
        .unwrap_or(mailboxes.deliveries_max)
        .max(1);
    mailboxes.dead_letters_max = section
        .mailbox_dead_letters_max
        .unwrap_or(mailboxes.dead_letters_max);
    tern_http::tokens::check_configured(&section.token)
        .map_err(|e| anyhow::anyhow!("[[http.token]]: {e}"))?;
    config.tokens = section.token.clone();
    for (user, grant) in &section.operator {
        let record = tern_http::console_login::grant_record(user, grant);
        tern_http::tokens::check_realm(&record)
            .map_err(|e| anyhow::anyhow!("[http.operator.{user}]: {e}"))?;
    }
    config.operator_users = match (&section.operators_file, section.operator.is_empty()) {
        (Some(file), _) => Some(tern_http::console_login::OperatorUsers {
            file: base.join(file),
            grants: section.operator.clone(),
        }),
        (None, true) => None,
        (None, false) => bail!("[http.operator.USER] needs [http] operators_file"),
    };
    config.operator_jwt = match &section.operator_jwt {
        Some(jwt) => Some(tern_http::console_login::OperatorJwt {
            verifier: operator_jwt_verifier(jwt, base)?,
            scopes_claim: jwt.scopes_claim.clone(),
            owner_claim: jwt.owner_claim.clone(),
        }),
        None => None,
    };
    Ok(Some(config))
}

/// The verifier of `[http.operator_jwt]`: a key set's, or one key's as `[auth.NAME.jwt]` has.
fn operator_jwt_verifier(
    jwt: &OperatorJwtSection,
    base: &Path,
) -> anyhow::Result<tern_auth::JwtVerifier> {
    let Some(path) = &jwt.jwks_file else {
        let key = crate::auth_config::JwtConfig {
            algorithm: jwt.algorithm.clone(),
            secret: jwt.secret.clone(),
            secret_file: jwt.secret_file.clone(),
            public_key_file: jwt.public_key_file.clone(),
            username_claim: jwt.username_claim.clone(),
            topics_claim: jwt.topics_claim.clone(),
            leeway_secs: jwt.leeway_secs,
        };
        return crate::auth_config::jwt_verifier("http.operator_jwt", &key, base);
    };
    if jwt.secret.is_some() || jwt.secret_file.is_some() || jwt.public_key_file.is_some() {
        bail!(
            "[http.operator_jwt] jwks_file is instead of secret, secret_file and public_key_file"
        );
    }
    let path = base.join(path);
    let set =
        std::fs::read(&path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    tern_auth::JwtVerifier::with_key_set(
        &jwt.algorithm,
        &set,
        &jwt.username_claim,
        jwt.topics_claim.as_deref(),
        jwt.leeway_secs,
    )
    .map_err(|e| anyhow::anyhow!("[http.operator_jwt] {}: {e}", path.display()))
}

fn plain(bind: SocketAddr) -> HttpListener {
    HttpListener { bind, tls: None }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly.
    use super::*;

    fn file(text: &str) -> FileConfig {
        toml::from_str(text).expect("valid configuration")
    }

    fn ports(config: Option<HttpConfig>) -> Vec<u16> {
        config
            .map(|c| c.listeners.iter().map(|l| l.bind.port()).collect())
            .unwrap_or_default()
    }

    #[test]
    fn http_is_served_on_8080_unless_listeners_are_chosen() {
        let none = FileConfig::default();
        let dir = PathBuf::from("d");
        let at = |f: &FileConfig, port, http| {
            ports(http_config(f, Path::new("/"), None, port, http, dir.clone()).unwrap())
        };
        assert_eq!(at(&none, None, None), [8080]);
        assert_eq!(at(&none, None, Some(0)), [0]);
        // --port alone replaces every listener with one MQTT listener, as it always did.
        assert_eq!(at(&none, Some(1884), None), Vec::<u16>::new());
        assert_eq!(at(&none, Some(1884), Some(9000)), [9000]);
        let mqtt_only = file("[[listener]]\nbind = \"127.0.0.1:1883\"\n");
        assert_eq!(at(&mqtt_only, None, None), Vec::<u16>::new());
        let both = file(
            "[[listener]]\nbind = \"127.0.0.1:1883\"\n\
             [[listener]]\nbind = \"127.0.0.1:8081\"\nprotocol = \"http\"\n\
             [http]\nwindow_secs = 60\n",
        );
        let config = http_config(&both, Path::new("/"), None, None, None, dir.clone())
            .unwrap()
            .unwrap();
        assert_eq!(config.window, Duration::from_secs(60));
        assert_eq!(ports(Some(config)), [8081]);
        let net = crate::config::listeners(&both, Path::new("/"), None, None).unwrap();
        assert_eq!(net.len(), 1, "the HTTP listener is not an MQTT one");
    }

    #[test]
    fn tokens_are_given_by_their_hashes_and_checked() {
        let (text, record) = tern_http::tokens::new_token(
            "prometheus",
            vec![tern_http::tokens::Scope::Metrics],
            String::new(),
            Vec::new(),
            0,
            None,
        )
        .unwrap();
        let entry = tern_http::tokens::config_entry(&record);
        assert!(
            !entry.contains(text.rsplit('.').next().unwrap()),
            "no secret in it"
        );
        let with = |entry: &str| {
            let f = file(&format!(
                "[[listener]]\nbind = \"127.0.0.1:0\"\nprotocol = \"http\"\n{entry}"
            ));
            http_config(&f, Path::new("/"), None, None, None, "d".into())
        };
        let config = with(&entry).unwrap().unwrap();
        assert_eq!(config.tokens, [record]);
        let short = entry.replace(&config.tokens[0].sha256, "abc");
        assert!(with(&short).is_err());
        let twice = format!("{entry}{entry}");
        assert!(with(&twice).is_err(), "one id, once");
    }

    #[test]
    fn the_example_file_gives_the_defaults() {
        let example = file(include_str!("../../../tern.example.toml"));
        let config = http_config(&example, Path::new("/"), None, None, None, "d".into())
            .unwrap()
            .unwrap();
        let defaults = HttpConfig::new(config.listeners.clone(), "d".into());
        assert_eq!(format!("{config:?}"), format!("{defaults:?}"));
        assert_eq!(ports(Some(config)), [DEFAULT_HTTP_PORT]);
    }

    #[test]
    fn https_takes_the_tls_settings_of_mqtts() {
        let https = file(
            "[[listener]]\nbind = \"127.0.0.1:8443\"\nprotocol = \"https\"\n\
             cert = \"s.pem\"\nkey = \"s.key\"\n",
        );
        let config = http_config(&https, Path::new("/etc/tern"), None, None, None, "d".into())
            .unwrap()
            .unwrap();
        let tls = config.listeners[0].tls.as_ref().expect("TLS settings");
        assert_eq!(tls.cert, Path::new("/etc/tern/s.pem"));
        let bad = [
            "protocol = \"https\"\ncert = \"s.pem\"",
            "protocol = \"http\"\ncert = \"s.pem\"\nkey = \"s.key\"",
            "protocol = \"http\"\nauth = \"default\"",
        ];
        for extra in bad {
            let f = file(&format!("[[listener]]\nbind = \"127.0.0.1:0\"\n{extra}\n"));
            assert!(
                http_config(&f, Path::new("/"), None, None, None, "d".into()).is_err(),
                "accepted: {extra}"
            );
        }
    }

    #[test]
    fn history_and_mailbox_classes_are_read_and_bad_filters_refused() {
        let read = file(
            "[[http.mailbox_class]]\nclients = \"ESP32-\"\nqueued_count_max = 5\n\
             queued_bytes_max = 100\n\
             [[history]]\nfilter = \"c/#\"\nmax_messages = 0\nmax_age_secs = 2\n",
        );
        let classes = read.http.mailbox_classes();
        assert_eq!(classes.len(), 1);
        assert_eq!(classes[0].prefix, "ESP32-");
        assert_eq!(
            (classes[0].queued_count_max, classes[0].queued_bytes_max),
            (5, 100)
        );
        let kept = history(&read.history).unwrap();
        assert_eq!(kept[0].filter.as_str(), "c/#");
        // At least one message per topic; seconds as milliseconds; 10,000 topics by default.
        assert_eq!((kept[0].max_messages, kept[0].max_age_millis), (1, 2000));
        assert_eq!(kept[0].max_topics, 10_000);
        for bad in ["a/#/b", "$share/g/a", "$SYS/#"] {
            let text =
                format!("[[history]]\nfilter = {bad:?}\nmax_messages = 1\nmax_age_secs = 1\n");
            assert!(history(&file(&text).history).is_err(), "accepted {bad}");
        }
    }

    #[test]
    fn operator_users_and_the_jwt_login_are_read_and_checked() {
        let with = |extra: &str| {
            let f = file(&format!(
                "[[listener]]\nbind = \"127.0.0.1:0\"\nprotocol = \"http\"\n[http]\n{extra}"
            ));
            http_config(&f, Path::new("/etc/tern"), None, None, None, "d".into())
        };
        let config = with(
            "operators_file = \"operators\"\n\
             [http.operator.alice]\nscopes = [\"read\", \"metrics\"]\n\
             [http.operator.bob]\nscopes = [\"read\"]\nowner = \"acme\"\n\
             [http.operator_jwt]\nalgorithm = \"HS256\"\nsecret = \"s\"\n",
        )
        .unwrap()
        .unwrap();
        let users = config.operator_users.expect("operator users");
        assert_eq!(users.file, Path::new("/etc/tern/operators"));
        assert_eq!(users.grants["bob"].owner.as_deref(), Some("acme"));
        assert_eq!(users.grants["alice"].topics, ["#"]);
        let jwt = config.operator_jwt.expect("a JWT login");
        assert_eq!(
            (jwt.scopes_claim.as_str(), jwt.owner_claim.as_str()),
            ("scope", "owner")
        );
        let bad = [
            // A user's entry without the file it logs in with.
            "[http.operator.alice]\nscopes = [\"read\"]\n",
            // An owner's operator has no metrics.
            "operators_file = \"o\"\n[http.operator.a]\nscopes = [\"metrics\"]\nowner = \"acme\"\n",
            "operators_file = \"o\"\n[http.operator.a]\nscopes = [\"read\"]\ntopics = [\"a/#/b\"]\n",
            "[http.operator_jwt]\nalgorithm = \"HS256\"\n",
            "[http.operator_jwt]\nalgorithm = \"ES256\"\njwks_file = \"no-such-file\"\n",
            "[http.operator_jwt]\nalgorithm = \"ES256\"\njwks_file = \"j\"\nsecret = \"s\"\n",
        ];
        for extra in bad {
            assert!(with(extra).is_err(), "accepted: {extra}");
        }
        // An identity provider's key set, beside the configuration file.
        let dir = tempfile::tempdir().unwrap();
        let set = r#"{"keys": [{"kty": "RSA", "kid": "k1", "n": "sXch", "e": "AQAB"}]}"#;
        std::fs::write(dir.path().join("jwks.json"), set).unwrap();
        let f = file(
            "[[listener]]\nbind = \"127.0.0.1:0\"\nprotocol = \"http\"\n\
             [http.operator_jwt]\nalgorithm = \"RS256\"\njwks_file = \"jwks.json\"\n",
        );
        let config = http_config(&f, dir.path(), None, None, None, "d".into()).unwrap();
        assert!(config.unwrap().operator_jwt.is_some());
    }
}
