//! `[cluster]`: joining other Tern nodes through NATS JetStream (see docs/cluster.md). Without
//! the section nothing NATS-related runs.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use serde::Deserialize;
use tern_cluster::{ClusterNode, Link, NatsAuth, NatsTls, Settings};
use tracing::info;

/// The section as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ClusterConfig {
    /// NATS server URLs.
    nats: Vec<String>,
    /// This node's name, unique in the cluster.
    node_id: String,
    /// NATS user name and password.
    user: Option<String>,
    password: Option<String>,
    /// NATS token.
    token: Option<String>,
    /// A NATS credentials file (JWT and NKey seed): planned, refused.
    credentials_file: Option<PathBuf>,
    /// TLS towards NATS.
    tls: Option<ClusterTlsConfig>,
    /// Replicas of the message stream: 1 on a single NATS server, 3 in a cluster of three.
    #[serde(default = "default_replicas")]
    replicas: usize,
    /// Seconds the stream keeps messages.
    #[serde(default = "default_offline_horizon")]
    offline_horizon_secs: u64,
    /// What a node does while NATS is unreachable: `strict` (the default and, for now, the
    /// only mode) refuses new connections.
    partition_mode: Option<String>,
    /// Seconds a node's lease lasts without renewal (one value for the whole cluster).
    #[serde(default = "default_lease")]
    lease_secs: u64,
}

/// `[cluster.tls]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClusterTlsConfig {
    /// CA certificates that sign the NATS servers' certificates.
    ca_file: Option<PathBuf>,
    /// A client certificate and its key, for servers that verify clients.
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
}

fn default_replicas() -> usize {
    1
}

fn default_offline_horizon() -> u64 {
    24 * 60 * 60
}

fn default_lease() -> u64 {
    15
}

/// How long joining NATS may take at start-up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Room the cluster's envelope takes beside an MQTT message in a NATS message: its header and
/// the publisher's client identifier (at most 65,535 bytes), rounded up.
const ENVELOPE_ROOM: u32 = 70 * 1024;

impl ClusterConfig {
    /// The section of a node that `tern serve --nodes` starts: the one NATS server it started
    /// beside them, every other setting at its default.
    pub(crate) fn local(nats_url: String, node_id: String) -> Self {
        Self {
            nats: vec![nats_url],
            node_id,
            user: None,
            password: None,
            token: None,
            credentials_file: None,
            tls: None,
            replicas: default_replicas(),
            offline_horizon_secs: default_offline_horizon(),
            partition_mode: None,
            lease_secs: default_lease(),
        }
    }

    /// The node's settings, or why the section cannot be used. `base` is the directory
    /// relative paths start from.
    pub(crate) fn to_settings(&self, base: &Path) -> anyhow::Result<Settings> {
        if self.nats.is_empty() {
            bail!("cluster.nats must name at least one NATS server");
        }
        let valid_id = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
        if self.node_id.is_empty() || !self.node_id.chars().all(valid_id) {
            bail!("cluster.node_id must be letters, digits, '-' or '_'");
        }
        if self.credentials_file.is_some() {
            bail!("cluster.credentials_file is planned, not yet available: use user/password or token");
        }
        match self.partition_mode.as_deref() {
            None | Some("strict") => {}
            Some("island") => bail!(
                "cluster.partition_mode = \"island\" is planned, not yet available: use \
                 \"strict\" (see docs/cluster.md for what a node does while NATS is \
                 unreachable)"
            ),
            Some(mode) => bail!("cluster.partition_mode must be \"strict\", not {mode:?}"),
        }
        if !(1..=5).contains(&self.replicas) {
            bail!("cluster.replicas must be 1 to 5 (JetStream's range)");
        }
        if !(1..=3600).contains(&self.lease_secs) {
            bail!("cluster.lease_secs must be 1 to 3600");
        }
        let auth = match (&self.user, &self.password, &self.token) {
            (None, None, None) => NatsAuth::None,
            (Some(user), Some(password), None) => NatsAuth::UserPassword {
                user: user.clone(),
                password: password.clone(),
            },
            (None, None, Some(token)) => NatsAuth::Token(token.clone()),
            _ => bail!("cluster: give user and password together, or a token, not both"),
        };
        let tls = match &self.tls {
            None => None,
            Some(tls) => Some(NatsTls {
                ca_file: tls.ca_file.as_ref().map(|p| base.join(p)),
                client_cert: match (&tls.cert_file, &tls.key_file) {
                    (Some(cert), Some(key)) => Some((base.join(cert), base.join(key))),
                    (None, None) => None,
                    _ => bail!("cluster.tls: give cert_file and key_file together"),
                },
            }),
        };
        Ok(Settings {
            nats: self.nats.clone(),
            node_id: self.node_id.clone(),
            auth,
            tls,
            replicas: self.replicas,
            offline_horizon: Duration::from_secs(self.offline_horizon_secs),
            connect_timeout: CONNECT_TIMEOUT,
            lease: Duration::from_secs(self.lease_secs),
        })
    }
}

/// Joins NATS and fits the core's configuration to what a cluster node offers in this
/// release: no MQTT packet may be larger than a NATS message can carry.
pub(crate) fn join(
    section: &ClusterConfig,
    base: &Path,
    core: &mut tern_core::Config,
) -> anyhow::Result<(ClusterNode, Link)> {
    let settings = section.to_settings(base)?;
    let (node, link) = ClusterNode::start(settings).context("cannot join the cluster")?;
    core.cluster = true;
    let nats_max = u32::try_from(node.max_payload).unwrap_or(u32::MAX);
    let fits = nats_max.saturating_sub(ENVELOPE_ROOM);
    if core.limits.packet_size_max_bytes > fits {
        info!(
            "cluster: MQTT packets are limited to {fits} bytes (NATS max_payload {nats_max}, \
             less room for the envelope)"
        );
        core.limits.packet_size_max_bytes = fits;
    }
    Ok((node, link))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly.
    use super::*;

    fn section(text: &str) -> anyhow::Result<Settings> {
        let parsed: ClusterConfig = toml::from_str(text).expect("parses");
        parsed.to_settings(Path::new("/etc/tern"))
    }

    #[test]
    fn the_example_section_is_valid_once_uncommented() {
        let text = include_str!("../../../tern.example.toml");
        let start = text
            .find("# [cluster]")
            .expect("the example has a cluster section");
        let block: String = text[start..]
            .lines()
            .take_while(|line| line.starts_with('#'))
            .filter_map(|line| line.strip_prefix("# "))
            .filter(|line| !line.starts_with(' '))
            .map(|line| format!("{line}\n"))
            .collect();
        let file: crate::config::FileConfig = toml::from_str(&block).expect("parses");
        let settings = file
            .cluster
            .expect("a cluster section")
            .to_settings(Path::new("/etc/tern"))
            .unwrap();
        assert_eq!(settings.nats, ["nats://127.0.0.1:4222"]);
        assert_eq!(settings.replicas, 1);
        assert_eq!(settings.offline_horizon, Duration::from_secs(86_400));
        assert_eq!(settings.lease, Duration::from_secs(15));
    }

    #[test]
    fn what_is_planned_is_refused_not_ignored() {
        let base = "nats = [\"nats://127.0.0.1:4222\"]\nnode_id = \"n1\"\n";
        assert!(section(base).is_ok());
        assert!(section(&format!("{base}partition_mode = \"strict\"\n")).is_ok());
        for extra in [
            "partition_mode = \"island\"",
            "partition_mode = \"loose\"",
            "credentials_file = \"n1.creds\"",
            "replicas = 0",
            "lease_secs = 0",
            "user = \"u\"",
            "user = \"u\"\npassword = \"p\"\ntoken = \"t\"",
        ] {
            assert!(
                section(&format!("{base}{extra}\n")).is_err(),
                "accepted: {extra}"
            );
        }
        assert!(section("nats = []\nnode_id = \"n1\"\n").is_err());
        assert!(section("nats = [\"nats://h\"]\nnode_id = \"n.1\"\n").is_err());
        assert!(toml::from_str::<ClusterConfig>(&format!("{base}retained = true\n")).is_err());
    }

    #[test]
    fn credentials_and_tls_paths_are_read() {
        let settings = section(
            "nats = [\"tls://a:4222\", \"tls://b:4222\"]\nnode_id = \"n2\"\nuser = \"u\"\n\
             password = \"p\"\n[tls]\nca_file = \"ca.pem\"\ncert_file = \"c.pem\"\n\
             key_file = \"/k.pem\"\n",
        )
        .unwrap();
        assert_eq!(
            settings.auth,
            NatsAuth::UserPassword {
                user: "u".to_owned(),
                password: "p".to_owned()
            }
        );
        let tls = settings.tls.unwrap();
        assert_eq!(tls.ca_file, Some(PathBuf::from("/etc/tern/ca.pem")));
        assert_eq!(
            tls.client_cert,
            Some((PathBuf::from("/etc/tern/c.pem"), PathBuf::from("/k.pem")))
        );
    }
}
