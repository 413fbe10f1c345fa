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

/// How long one attempt to connect to a server may take, greeting and handshake included: a
/// server that accepts the connection and then says nothing (stopped, SIGSTOP) is given up
/// after this, and the next one tried.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);

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
            .connection_timeout(HANDSHAKE_TIMEOUT)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A stopped server (SIGSTOP) still completes TCP connects in its kernel, then says
    /// nothing: a connection attempt to it must give up within [`HANDSHAKE_TIMEOUT`], so that
    /// the client moves on to another server instead of waiting until this one wakes.
    #[test]
    fn a_server_that_accepts_but_never_greets_is_given_up() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("nats://{}", silent.local_addr().unwrap());
            // Accepted connections are held open, unanswered, as a stopped server's are.
            let held = tokio::spawn(async move {
                let mut open = Vec::new();
                while let Ok((socket, _)) = silent.accept().await {
                    open.push(socket);
                }
            });
            let settings = Settings {
                nats: vec![url.clone()],
                node_id: "n1".to_owned(),
                auth: NatsAuth::None,
                tls: None,
                replicas: 1,
                offline_horizon: Duration::from_secs(60),
                connect_timeout: Duration::from_secs(60),
                lease: Duration::from_secs(15),
            };
            let (inputs, _outputs) = mpsc::channel(8);
            let options = settings
                .connect_options(Arc::new(Counters::default()), inputs)
                .unwrap();
            let started = tokio::time::Instant::now();
            // The bound only limits how long the test waits for an answer that should come.
            let attempt = tokio::time::timeout(Duration::from_secs(30), options.connect(url)).await;
            let attempt = attempt.expect("the attempt was given up, not left waiting");
            assert!(attempt.is_err(), "a silent server is no server");
            assert!(
                started.elapsed() < HANDSHAKE_TIMEOUT * 2,
                "given up after {:?}",
                started.elapsed()
            );
            held.abort();
        });
    }
}
