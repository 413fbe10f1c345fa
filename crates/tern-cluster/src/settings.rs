//! How a node joins NATS: the servers, its name, credentials and TLS, and the stream's shape.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::ConnectOptions;
use tern_core::ClusterInput;
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::Counters;

/// Credentials for NATS.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum NatsAuth {
    /// None.
    #[default]
    None,
    /// A user name and password.
    UserPassword {
        /// The user.
        user: String,
        /// The password.
        password: String,
    },
    /// A token.
    Token(String),
}

/// TLS towards NATS.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NatsTls {
    /// CA certificates (PEM) that sign the servers' certificates; the system's roots otherwise.
    pub ca_file: Option<PathBuf>,
    /// A client certificate and its key (PEM), for servers that verify clients.
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

/// Everything a node needs to join.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// NATS server URLs (`nats://127.0.0.1:4222`); the client may learn more from them.
    pub nats: Vec<String>,
    /// This node's name: stable, unique in the cluster.
    pub node_id: String,
    /// Credentials.
    pub auth: NatsAuth,
    /// TLS, if the servers require it.
    pub tls: Option<NatsTls>,
    /// Replicas of the message stream (1 on one server; 3 in a cluster of three or more).
    pub replicas: usize,
    /// How long the stream keeps messages.
    pub offline_horizon: Duration,
    /// How long joining may take before the node gives up.
    pub connect_timeout: Duration,
    /// How long a node's lease lasts without renewal: a node whose lease lapsed is not waited
    /// for when another takes its sessions. One value for the whole cluster (the bucket of
    /// leases keeps it); the first node to create the bucket sets it.
    pub lease: Duration,
}

/// Why a node could not join.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// No NATS server could be reached (or it refused the credentials).
    #[error("cannot connect to NATS at {0}: {1}")]
    Connect(String, String),
    /// The credentials or certificates could not be used.
    #[error("NATS credentials: {0}")]
    Credentials(String),
    /// The message stream could not be found or created.
    #[error("cannot set up the JetStream stream: {0}")]
    Stream(String),
    /// The node's thread could not start or stopped while joining.
    #[error("the cluster thread: {0}")]
    Thread(String),
}

/// How often the connection is checked: a server that stops answering (SIGSTOP keeps its
/// sockets open) is noticed after two missed pings, not the client's default two minutes.
const PING_INTERVAL: Duration = Duration::from_secs(2);

impl Settings {
    /// How the node connects; what the connection goes through is counted, and whether NATS
    /// is within reach goes to the broker thread on `inputs`.
    pub(crate) fn connect_options(
        &self,
        counters: Arc<Counters>,
        inputs: mpsc::Sender<ClusterInput>,
    ) -> Result<ConnectOptions, ClusterError> {
        // Whether the connection was lost since it was last up.
        let lost = Arc::new(AtomicBool::new(false));
        let mut options = ConnectOptions::new()
            .name(format!("tern {}", self.node_id))
            .ping_interval(PING_INTERVAL)
            .connection_timeout(self.connect_timeout)
            .event_callback(move |event| {
                let counters = Arc::clone(&counters);
                let inputs = inputs.clone();
                let lost = Arc::clone(&lost);
                async move {
                    match event {
                        async_nats::Event::Connected if lost.swap(false, Ordering::Relaxed) => {
                            // The broker thread says when it takes connections again.
                            let _ = inputs.send(ClusterInput::Reachable(true)).await;
                        }
                        async_nats::Event::Connected => info!("NATS connected"),
                        async_nats::Event::Disconnected => {
                            lost.store(true, Ordering::Relaxed);
                            warn!(
                                "NATS unreachable: new connections are refused with Server \
                                 unavailable until it is back (strict partition mode)"
                            );
                            let _ = inputs.send(ClusterInput::Reachable(false)).await;
                        }
                        async_nats::Event::SlowConsumer(sid) => {
                            counters.count_slow_consumer();
                            warn!("NATS dropped messages for subscription {sid}: this node reads too slowly");
                        }
                        other => warn!("NATS: {other}"),
                    }
                }
            });
        options = match &self.auth {
            NatsAuth::None => options,
            NatsAuth::UserPassword { user, password } => {
                options.user_and_password(user.clone(), password.clone())
            }
            NatsAuth::Token(token) => options.token(token.clone()),
        };
        if let Some(tls) = &self.tls {
            options = options.require_tls(true);
            if let Some(ca) = &tls.ca_file {
                if !ca.is_file() {
                    return Err(ClusterError::Credentials(format!(
                        "no CA file at {}",
                        ca.display()
                    )));
                }
                options = options.add_root_certificates(ca.clone());
            }
            if let Some((cert, key)) = &tls.client_cert {
                options = options.add_client_certificate(cert.clone(), key.clone());
            }
        }
        Ok(options)
    }
}
