//! The `tern serve` configuration file (TOML) and how command-line flags override it.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use serde::Deserialize;
use tern_codec::QoS;
use tern_core::{Limits, Overload, StalledSubscriber};
use tern_net::{AdmissionLimits, ListenerConfig as NetListener, TlsSettings, Transport};

use crate::auth_config::AuthProfileConfig;

/// The whole file. Every field has a default, so an empty file is a valid configuration.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileConfig {
    #[serde(default)]
    pub(crate) listener: Vec<ListenerConfig>,
    #[serde(default)]
    pub(crate) limits: LimitsConfig,
    /// Seconds between `$SYS` updates; 0 turns them off.
    pub(crate) sys_interval_secs: Option<u64>,
    /// Microseconds the broker thread keeps polling after input while inputs come close
    /// together; 0 turns busy polling off.
    pub(crate) busy_poll_micros: Option<u64>,
    /// Authentication profiles by name (`[auth.<name>]`).
    #[serde(default)]
    pub(crate) auth: BTreeMap<String, AuthProfileConfig>,
    /// ACL rules (`[[acl]]`), before those of `acl_file`.
    #[serde(default)]
    pub(crate) acl: Vec<tern_auth::Rule>,
    /// A file of further `[[acl]]` rules.
    pub(crate) acl_file: Option<PathBuf>,
    #[serde(default)]
    pub(crate) trees: TreesConfig,
    #[serde(default)]
    pub(crate) store: StoreConfig,
    #[serde(default)]
    pub(crate) sessions: SessionsConfig,
    /// `[http]`: the HTTP bridge (its listeners are `[[listener]]`s with protocol "http").
    #[serde(default)]
    pub(crate) http: crate::http_config::HttpSection,
    /// `[[history]]`: topics whose last messages are kept for mailboxes to replay.
    #[serde(default)]
    pub(crate) history: Vec<crate::http_config::HistoryEntry>,
    /// `[cluster]`: join other nodes through NATS; absent, the broker is a single node.
    pub(crate) cluster: Option<crate::cluster_config::ClusterConfig>,
    /// `[fleet]`: where the device fleet's topics live (docs/fleet.md).
    #[serde(default)]
    pub(crate) fleet: FleetConfig,
}

/// `[fleet]`: the device fleet.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FleetConfig {
    /// What comes before `<owner>/<udid>` in the fleet's topics: "/" (THiNX, the default), ""
    /// for `owner/udid/...`, or levels ending in "/".
    topic_prefix: Option<String>,
}

impl FleetConfig {
    pub(crate) fn to_core(&self) -> anyhow::Result<tern_core::fleet::FleetTopics> {
        match &self.topic_prefix {
            Some(prefix) => Ok(tern_core::fleet::FleetTopics::new(prefix)?),
            None => Ok(tern_core::fleet::FleetTopics::default()),
        }
    }
}

/// `[sessions]`: who may have a session.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SessionsConfig {
    /// A client whose client identifier names another identity's session: "refuse" (default)
    /// or "fresh".
    #[serde(default)]
    other_identity: OtherIdentityConfig,
}

#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum OtherIdentityConfig {
    #[default]
    Refuse,
    Fresh,
}

impl SessionsConfig {
    pub(crate) fn to_core(&self) -> tern_core::OtherIdentity {
        match self.other_identity {
            OtherIdentityConfig::Refuse => tern_core::OtherIdentity::Refuse,
            OtherIdentityConfig::Fresh => tern_core::OtherIdentity::Fresh,
        }
    }
}

/// Where and how durably the broker keeps its state.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StoreConfig {
    /// The data directory; `./tern-data` by default.
    pub(crate) dir: Option<PathBuf>,
    /// How durable an acknowledged message is; `fsync` by default.
    pub(crate) durability: Option<Durability>,
    /// Start on a damaged store with what reads back, logging what was lost (`--recover`).
    #[serde(default)]
    pub(crate) recover: bool,
}

/// How durable an acknowledged message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Durability {
    /// Synced to disk before it is acknowledged: survives a crash and a power loss.
    Fsync,
    /// Written to the operating system before it is acknowledged: survives the broker being
    /// killed, not an operating-system crash or a power loss.
    Os,
    /// Kept in memory only: lost when the broker stops.
    None,
}

/// The data directory: the flag wins over the file; with neither, `./tern-data`.
pub(crate) fn data_dir(file: &FileConfig, flag: Option<PathBuf>) -> PathBuf {
    flag.or_else(|| file.store.dir.clone())
        .unwrap_or_else(|| PathBuf::from("tern-data"))
}

/// The durability: the flag wins over the file; with neither, `fsync`.
pub(crate) fn durability(file: &FileConfig, flag: Option<Durability>) -> Durability {
    flag.or(file.store.durability).unwrap_or(Durability::Fsync)
}

/// Mirrors [`tern_core::TreeConfig`]: how `$tree/` subscriptions batch their deltas.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TreesConfig {
    window_millis: Option<u64>,
}

impl TreesConfig {
    pub(crate) fn to_core(&self) -> tern_core::TreeConfig {
        let mut trees = tern_core::TreeConfig::default();
        if let Some(window) = self.window_millis {
            trees.window_millis = window;
        }
        trees
    }
}

/// How a listener speaks MQTT.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Protocol {
    /// Plain TCP.
    #[default]
    Mqtt,
    /// TLS.
    Mqtts,
    /// WebSocket.
    Ws,
    /// WebSocket over TLS.
    Wss,
    /// The HTTP bridge (`docs/http.md`).
    Http,
    /// The HTTP bridge over TLS.
    Https,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListenerConfig {
    pub(crate) bind: SocketAddr,
    #[serde(default)]
    protocol: Protocol,
    /// PEM certificate chain (mqtts, wss).
    cert: Option<PathBuf>,
    /// PEM private key (mqtts, wss).
    key: Option<PathBuf>,
    /// PEM CA certificates that client certificates must chain to (mutual TLS).
    client_ca: Option<PathBuf>,
    /// With `client_ca`: refuse clients without a certificate (default true).
    require_client_certificate: Option<bool>,
    /// The client certificate's CN (or first SAN) becomes the user name.
    #[serde(default)]
    use_identity_as_username: bool,
    /// WebSocket upgrade path (ws, wss); default `/mqtt`.
    path: Option<String>,
    /// The `[auth.<name>]` profile for clients of this listener (default: "default").
    pub(crate) auth: Option<String>,
}

impl ListenerConfig {
    /// The network runtime's view; relative file names are taken from `base` (the directory of
    /// the configuration file).
    fn to_net(&self, base: &Path) -> anyhow::Result<NetListener> {
        let at = |what: &str| format!("listener {}: {what}", self.bind);
        let ws = matches!(self.protocol, Protocol::Ws | Protocol::Wss);
        let settings = self.tls_settings(base)?;
        if !ws && self.path.is_some() {
            bail!(at("path is for protocol = \"ws\" or \"wss\""));
        }
        if self.use_identity_as_username && self.client_ca.is_none() {
            bail!(at("use_identity_as_username needs client_ca"));
        }
        let path = self.path.clone().unwrap_or_else(|| "/mqtt".to_owned());
        if !path.starts_with('/') {
            bail!(at("path must start with '/'"));
        }
        let transport = match (self.protocol, settings) {
            (Protocol::Mqtts, Some(tls)) => Transport::Tls(tls),
            (Protocol::Wss, Some(tls)) => Transport::SecureWebSocket { tls, path },
            (Protocol::Ws, _) => Transport::WebSocket { path },
            _ => Transport::Tcp,
        };
        Ok(NetListener {
            bind: self.bind,
            transport,
            use_identity_as_username: self.use_identity_as_username,
        })
    }

    /// Whether it is a listener of the HTTP bridge.
    pub(crate) fn is_http(&self) -> bool {
        matches!(self.protocol, Protocol::Http | Protocol::Https)
    }

    /// The TLS settings of a TLS listener (mqtts, wss, https); `None` for the others, which
    /// must then have no certificate settings.
    pub(crate) fn tls_settings(&self, base: &Path) -> anyhow::Result<Option<TlsSettings>> {
        let at = |what: &str| format!("listener {}: {what}", self.bind);
        let tls = matches!(
            self.protocol,
            Protocol::Mqtts | Protocol::Wss | Protocol::Https
        );
        if !tls {
            if self.cert.is_some()
                || self.key.is_some()
                || self.client_ca.is_some()
                || self.require_client_certificate.is_some()
                || self.use_identity_as_username
            {
                bail!(at(
                    "certificate settings need protocol = \"mqtts\", \"wss\" or \"https\""
                ));
            }
            return Ok(None);
        }
        let (Some(cert), Some(key)) = (&self.cert, &self.key) else {
            bail!(at("TLS needs both cert and key"));
        };
        Ok(Some(TlsSettings {
            cert: base.join(cert),
            key: base.join(key),
            client_ca: self.client_ca.as_ref().map(|ca| base.join(ca)),
            require_client_certificate: self.require_client_certificate.unwrap_or(true),
        }))
    }
}

/// Mirrors [`Limits`]; names carry their unit last.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LimitsConfig {
    packet_size_max_bytes: Option<u32>,
    receive_maximum: Option<u16>,
    inflight_count_max: Option<u16>,
    inflight_bytes_max: Option<usize>,
    queued_count_max: Option<usize>,
    queued_bytes_max: Option<usize>,
    overload: Option<OverloadConfig>,
    overload_low_water_percent: Option<u8>,
    stall_timeout_secs: Option<u64>,
    stalled_subscriber: Option<StalledSubscriberConfig>,
    outbox_qos0_count_max: Option<usize>,
    outbox_qos0_bytes_max: Option<usize>,
    memory_max_bytes: Option<usize>,
    topic_alias_max: Option<u16>,
    topic_alias_out_max: Option<u16>,
    session_expiry_max_secs: Option<u32>,
    keep_alive_max_secs: Option<u16>,
    qos_max: Option<u8>,
    retain_available: Option<bool>,
    retained_count_max: Option<usize>,
    retained_bytes_max: Option<usize>,
    retained_per_subscription_max: Option<usize>,
    subscriptions_per_session_max: Option<usize>,
    topic_length_max_bytes: Option<usize>,
    topic_levels_max: Option<usize>,
    connect_timeout_secs: Option<u64>,
    publish_rate_per_client_max: Option<u32>,
    connections_max: Option<usize>,
    connections_per_address_max: Option<usize>,
    connection_rate_per_address_max: Option<u32>,
    auth_checks_queued_max: Option<usize>,
    login_failures_per_address_max: Option<u32>,
    login_failures_per_user_max: Option<u32>,
    login_cache_entries_max: Option<usize>,
}

/// `limits.overload`: what a subscriber that falls behind does to its publishers.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum OverloadConfig {
    Backpressure,
    Drop,
}

/// `limits.stalled_subscriber`: what happens to a subscriber cut loose.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum StalledSubscriberConfig {
    Disconnect,
    Drop,
}

impl LimitsConfig {
    pub(crate) fn to_limits(&self) -> anyhow::Result<Limits> {
        let defaults = Limits::default();
        let qos_max = match self.qos_max {
            None => defaults.qos_max,
            Some(value) => QoS::from_u8(value)
                .with_context(|| format!("limits.qos_max must be 0, 1 or 2, not {value}"))?,
        };
        if self.receive_maximum == Some(0) || self.inflight_count_max == Some(0) {
            bail!("limits.receive_maximum and limits.inflight_count_max must be at least 1");
        }
        if self.packet_size_max_bytes.is_some_and(|v| v < 64) {
            bail!("limits.packet_size_max_bytes must be at least 64");
        }
        if self.overload_low_water_percent.is_some_and(|v| v > 100) {
            bail!("limits.overload_low_water_percent must be at most 100");
        }
        if self.stall_timeout_secs == Some(0) {
            bail!("limits.stall_timeout_secs must be at least 1");
        }
        let overload = match self.overload {
            None => defaults.overload,
            Some(OverloadConfig::Backpressure) => Overload::Backpressure,
            Some(OverloadConfig::Drop) => Overload::Drop,
        };
        let stalled_subscriber = match self.stalled_subscriber {
            None => defaults.stalled_subscriber,
            Some(StalledSubscriberConfig::Disconnect) => StalledSubscriber::Disconnect,
            Some(StalledSubscriberConfig::Drop) => StalledSubscriber::Drop,
        };
        Ok(Limits {
            packet_size_max_bytes: self
                .packet_size_max_bytes
                .unwrap_or(defaults.packet_size_max_bytes),
            receive_maximum: self.receive_maximum.unwrap_or(defaults.receive_maximum),
            inflight_count_max: self
                .inflight_count_max
                .unwrap_or(defaults.inflight_count_max),
            inflight_bytes_max: self
                .inflight_bytes_max
                .unwrap_or(defaults.inflight_bytes_max),
            queued_count_max: self.queued_count_max.unwrap_or(defaults.queued_count_max),
            queued_bytes_max: self.queued_bytes_max.unwrap_or(defaults.queued_bytes_max),
            overload,
            overload_low_water_percent: self
                .overload_low_water_percent
                .unwrap_or(defaults.overload_low_water_percent),
            stall_timeout_millis: self
                .stall_timeout_secs
                .map_or(defaults.stall_timeout_millis, |secs| {
                    secs.saturating_mul(1000)
                }),
            stalled_subscriber,
            outbox_qos0_count_max: self
                .outbox_qos0_count_max
                .unwrap_or(defaults.outbox_qos0_count_max),
            outbox_qos0_bytes_max: self
                .outbox_qos0_bytes_max
                .unwrap_or(defaults.outbox_qos0_bytes_max),
            memory_max_bytes: self.memory_max_bytes.unwrap_or(defaults.memory_max_bytes),
            topic_alias_max: self.topic_alias_max.unwrap_or(defaults.topic_alias_max),
            topic_alias_out_max: self
                .topic_alias_out_max
                .unwrap_or(defaults.topic_alias_out_max),
            session_expiry_max_secs: self
                .session_expiry_max_secs
                .unwrap_or(defaults.session_expiry_max_secs),
            keep_alive_max_secs: self
                .keep_alive_max_secs
                .unwrap_or(defaults.keep_alive_max_secs),
            qos_max,
            retain_available: self.retain_available.unwrap_or(defaults.retain_available),
            retained_count_max: self
                .retained_count_max
                .unwrap_or(defaults.retained_count_max),
            retained_bytes_max: self
                .retained_bytes_max
                .unwrap_or(defaults.retained_bytes_max),
            retained_per_subscription_max: self
                .retained_per_subscription_max
                .unwrap_or(defaults.retained_per_subscription_max),
            subscriptions_per_session_max: self
                .subscriptions_per_session_max
                .unwrap_or(defaults.subscriptions_per_session_max),
            topic_length_max_bytes: self
                .topic_length_max_bytes
                .unwrap_or(defaults.topic_length_max_bytes),
            topic_levels_max: self.topic_levels_max.unwrap_or(defaults.topic_levels_max),
            connect_timeout_millis: self
                .connect_timeout_secs
                .map_or(defaults.connect_timeout_millis, |secs| {
                    secs.saturating_mul(1000)
                }),
            publish_rate_per_client_max: self
                .publish_rate_per_client_max
                .unwrap_or(defaults.publish_rate_per_client_max),
            auth_checks_queued_max: self
                .auth_checks_queued_max
                .unwrap_or(defaults.auth_checks_queued_max),
            login_failures_per_address_max: self
                .login_failures_per_address_max
                .unwrap_or(defaults.login_failures_per_address_max),
            login_failures_per_user_max: self
                .login_failures_per_user_max
                .unwrap_or(defaults.login_failures_per_user_max),
        })
    }

    /// Successful password checks remembered, so a client logging in again is not hashed again.
    pub(crate) fn login_cache_entries_max(&self) -> usize {
        self.login_cache_entries_max
            .unwrap_or(tern_auth::LOGIN_CACHE_ENTRIES_MAX)
    }

    /// `connections_max` if the file sets it; by default it is derived from the open-file
    /// limit (`process::connections_max`).
    pub(crate) fn connections_max(&self) -> Option<usize> {
        self.connections_max
    }

    /// The caps applied when a connection is accepted, with `connections_max` in force.
    pub(crate) fn to_admission(&self, connections_max: usize) -> AdmissionLimits {
        let defaults = AdmissionLimits::default();
        AdmissionLimits {
            connections_max,
            connections_per_address_max: self
                .connections_per_address_max
                .unwrap_or(defaults.connections_per_address_max),
            connection_rate_per_address_max: self
                .connection_rate_per_address_max
                .unwrap_or(defaults.connection_rate_per_address_max),
        }
    }
}

/// Reads and checks a configuration file.
pub(crate) fn load(path: &Path) -> anyhow::Result<FileConfig> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("invalid configuration in {}", path.display()))
}

/// The listeners: flags win over the file (one plain TCP listener); with neither, all
/// interfaces on 1883. `base` is the directory relative certificate paths start from.
pub(crate) fn listeners(
    file: &FileConfig,
    base: &Path,
    bind: Option<IpAddr>,
    port: Option<u16>,
) -> anyhow::Result<Vec<NetListener>> {
    if bind.is_some() || port.is_some() || file.listener.is_empty() {
        let ip = bind.unwrap_or(IpAddr::from([0, 0, 0, 0]));
        return Ok(vec![NetListener::tcp(SocketAddr::new(
            ip,
            port.unwrap_or(1883),
        ))]);
    }
    file.listener
        .iter()
        .filter(|l| !l.is_http())
        .map(|l| l.to_net(base))
        .collect()
}

/// The auth profile each listener names, in the order of [`listeners`].
pub(crate) fn listener_auth_names(
    file: &FileConfig,
    bind: Option<IpAddr>,
    port: Option<u16>,
) -> Vec<Option<String>> {
    if bind.is_some() || port.is_some() || file.listener.is_empty() {
        return vec![None];
    }
    file.listener
        .iter()
        .filter(|l| !l.is_http())
        .map(|l| l.auth.clone())
        .collect()
}

/// `$SYS` interval: 10 seconds unless the file says otherwise.
pub(crate) fn sys_interval(file: &FileConfig) -> Option<Duration> {
    match file.sys_interval_secs {
        Some(0) => None,
        Some(secs) => Some(Duration::from_secs(secs)),
        None => Some(Duration::from_secs(10)),
    }
}

/// Busy polling window after input: 100 microseconds unless the file says otherwise.
pub(crate) fn busy_poll(file: &FileConfig) -> Duration {
    Duration::from_micros(file.busy_poll_micros.unwrap_or(100))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly.
    use super::*;

    fn parse(text: &str) -> FileConfig {
        toml::from_str(text).expect("valid configuration")
    }

    #[test]
    fn the_example_file_is_valid() {
        let text = include_str!("../../../tern.example.toml");
        let file = parse(text);
        file.limits.to_limits().expect("limits");
        listeners(&file, Path::new("/etc/tern"), None, None).expect("listeners");
        // The commented-out ACL rules are valid once uncommented.
        let section = &text[text.find("# ---- Authorisation").expect("ACL section")..];
        let rules: String = section
            .lines()
            .take_while(|line| !line.starts_with('['))
            .skip_while(|line| !line.starts_with("# [[acl]]"))
            .filter_map(|line| line.strip_prefix("# "))
            .map(|line| format!("{line}\n"))
            .collect();
        let rules = parse(&rules).acl;
        assert!(rules.len() >= 4, "{rules:?}");
        tern_auth::Acl::new(rules).expect("the example's rules are valid");
    }

    #[test]
    fn the_readme_secure_config_is_valid() {
        let readme = include_str!("../../../README.md");
        let start = readme
            .find("```toml\n# Devices")
            .expect("README has the secure configuration");
        let block = &readme[start + "```toml\n".len()..];
        let block = &block[..block.find("```").expect("closing fence")];
        let file = parse(block);
        let net = listeners(&file, Path::new("/"), None, None).expect("listeners");
        assert!(matches!(&net[0].transport, Transport::Tls(tls)
            if tls.client_ca.is_some() && tls.require_client_certificate));
        assert!(net[0].use_identity_as_username);
        assert_eq!(file.listener[0].auth.as_deref(), Some("devices"));
        assert!(file.auth.contains_key("devices") && file.auth.contains_key("default"));
        assert_eq!(file.acl.len(), 2);
        tern_auth::Acl::new(file.acl.clone()).expect("the README's rules are valid");
        assert!(
            matches!(&net[1].transport, Transport::SecureWebSocket { path, .. } if path == "/mqtt")
        );
        assert_eq!(
            file.limits.to_limits().unwrap().publish_rate_per_client_max,
            100
        );
        assert_eq!(file.limits.to_admission(0).connections_per_address_max, 100);
    }

    #[test]
    fn relative_certificate_paths_start_at_the_config_directory() {
        let file = parse(
            "[[listener]]\nbind = \"127.0.0.1:0\"\nprotocol = \"mqtts\"\n\
             cert = \"s.pem\"\nkey = \"/abs/s.key\"\n",
        );
        let net = listeners(&file, Path::new("/etc/tern"), None, None).unwrap();
        let Transport::Tls(tls) = &net[0].transport else {
            panic!("not TLS: {:?}", net[0]);
        };
        assert_eq!(tls.cert, Path::new("/etc/tern/s.pem"));
        assert_eq!(tls.key, Path::new("/abs/s.key"));
    }

    #[test]
    fn inconsistent_listeners_are_refused() {
        let bad = [
            "protocol = \"mqtts\"\ncert = \"s.pem\"",
            "cert = \"s.pem\"\nkey = \"s.key\"",
            "protocol = \"mqtt\"\npath = \"/mqtt\"",
            "protocol = \"ws\"\npath = \"mqtt\"",
            "protocol = \"mqtts\"\ncert = \"s.pem\"\nkey = \"s.key\"\nuse_identity_as_username = true",
        ];
        for extra in bad {
            let file = parse(&format!("[[listener]]\nbind = \"127.0.0.1:0\"\n{extra}\n"));
            assert!(
                listeners(&file, Path::new("/"), None, None).is_err(),
                "accepted: {extra}"
            );
        }
    }

    #[test]
    fn the_example_file_parses_and_gives_the_defaults() {
        let file: FileConfig = toml::from_str(include_str!("../../../tern.example.toml")).unwrap();
        assert_eq!(durability(&file, None), Durability::Fsync);
        assert_eq!(data_dir(&file, None), PathBuf::from("tern-data"));
        assert_eq!(file.limits.to_limits().unwrap(), Limits::default());
        // connections_max is derived from the open-file limit, so the example leaves it unset.
        assert_eq!(file.limits.connections_max(), None);
        assert_eq!(
            file.limits.to_admission(12_345),
            AdmissionLimits {
                connections_max: 12_345,
                ..AdmissionLimits::default()
            }
        );
    }

    #[test]
    fn overload_settings_are_read_and_checked() {
        let file = parse(
            "[limits]\noverload = \"drop\"\noverload_low_water_percent = 20\n\
             stall_timeout_secs = 5\nstalled_subscriber = \"drop\"\n",
        );
        let limits = file.limits.to_limits().unwrap();
        assert_eq!(limits.overload, Overload::Drop);
        assert_eq!(limits.overload_low_water_percent, 20);
        assert_eq!(limits.stall_timeout_millis, 5_000);
        assert_eq!(limits.stalled_subscriber, StalledSubscriber::Drop);
        let defaults = FileConfig::default().limits.to_limits().unwrap();
        assert_eq!(defaults.overload, Overload::Backpressure);
        assert_eq!(defaults.stalled_subscriber, StalledSubscriber::Disconnect);
        for bad in ["overload_low_water_percent = 101", "stall_timeout_secs = 0"] {
            let file = parse(&format!("[limits]\n{bad}\n"));
            assert!(file.limits.to_limits().is_err(), "accepted: {bad}");
        }
        for bad in ["overload = \"block\"", "stalled_subscriber = \"ignore\""] {
            assert!(
                toml::from_str::<FileConfig>(&format!("[limits]\n{bad}\n")).is_err(),
                "accepted: {bad}"
            );
        }
    }

    #[test]
    fn flags_win_over_the_store_section() {
        let file: FileConfig =
            toml::from_str("[store]\ndir = \"/var/lib/tern\"\ndurability = \"os\"\n").unwrap();
        assert_eq!(durability(&file, None), Durability::Os);
        assert_eq!(data_dir(&file, None), PathBuf::from("/var/lib/tern"));
        assert_eq!(durability(&file, Some(Durability::None)), Durability::None);
        assert_eq!(
            data_dir(&file, Some(PathBuf::from("d"))),
            PathBuf::from("d")
        );
        assert!(toml::from_str::<FileConfig>("[store]\ndurability = \"sometimes\"\n").is_err());
        assert!(FileConfig::default().store.durability.is_none());
    }
}
