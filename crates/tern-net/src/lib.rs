//! Tern's network runtime: listeners (TCP, TLS, WebSocket, secure WebSocket) and one task per
//! connection around the broker core.
//!
//! The whole broker runs on one thread: connection tasks call the core directly through a
//! `RefCell`, so routing takes no lock at all, and after every batch of input the tasks of the
//! connections with new output are woken once. See ARCHITECTURE.md for why one thread.

mod busy_poll;
mod cluster;
mod connection;
mod durable;
mod edge;
mod encode;
mod event_log;
mod gate;
mod handshake;
mod hold;
mod latency;
mod listener;
mod shared;
mod tcp;
mod tls;
mod ws;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use tern_core::{Authenticator, Authorizer, Snapshot, Store};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::LocalSet;
use tracing::{error, info};

pub use cluster::{ClusterLink, CLUSTER_QOS0_BACKLOG_BYTES_MAX};
pub use edge::{Batch, BrokerHandle, EdgeTask};
pub use event_log::describe as describe_close;
pub use gate::{AdmissionLimits, PENDING_PER_ADDRESS_FLOOR};
pub use latency::{CommitLatencySnapshot, COMMIT_BUCKETS_SECS};
pub use listener::ListenerConnections;
pub use tls::{server_config as tls_server_config, TlsError, TlsSettings};

use durable::{Commit, Committer};
use listener::Listener;
use shared::Shared;

/// How one listener speaks MQTT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// Plain MQTT over TCP.
    Tcp,
    /// MQTT over TLS.
    Tls(TlsSettings),
    /// MQTT over WebSocket, upgraded at `path`.
    WebSocket {
        /// The HTTP path of the upgrade, e.g. `/mqtt`.
        path: String,
    },
    /// MQTT over WebSocket over TLS.
    SecureWebSocket {
        /// Certificate, key and client verification.
        tls: TlsSettings,
        /// The HTTP path of the upgrade, e.g. `/mqtt`.
        path: String,
    },
}

/// One address to accept connections on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerConfig {
    /// Address to bind; port 0 picks a free one.
    pub bind: SocketAddr,
    /// The protocol stack.
    pub transport: Transport,
    /// With mutual TLS: the client certificate's identity becomes the user name, and clients
    /// without a certificate are refused.
    pub use_identity_as_username: bool,
}

impl ListenerConfig {
    /// Plain MQTT over TCP on `bind`.
    pub fn tcp(bind: SocketAddr) -> Self {
        Self {
            bind,
            transport: Transport::Tcp,
            use_identity_as_username: false,
        }
    }
}

/// How the network runtime runs.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Where to accept connections, and how.
    pub listeners: Vec<ListenerConfig>,
    /// Caps applied when a connection is accepted.
    pub admission: AdmissionLimits,
    /// The broker core's configuration.
    pub core: tern_core::Config,
    /// How often `$SYS` statistics are published; `None` turns them off.
    pub sys_interval: Option<Duration>,
    /// How long shutdown waits for connections to flush before giving up.
    pub shutdown_grace: Duration,
    /// The authentication profile of each listener, by position in `listeners` (see
    /// `tern_core::AuthRequest::profile`); listeners past its end use profile 0.
    pub listener_auth_profiles: Vec<usize>,
    /// How long the broker thread keeps polling its sockets after input, while inputs arrive
    /// closer together than this, rather than sleeping between them; zero turns it off. See
    /// ARCHITECTURE.md (adaptive busy polling).
    pub busy_poll: Duration,
    /// A read that comes at least this long after the previous one finds the broker quiet:
    /// the reading task then writes the deliveries it produced to plain TCP connections itself,
    /// sparing each receiver's task a wake-up; under load receivers' tasks still gather many
    /// inputs into one write. [`DIRECT_WRITE_QUIET_GAP`] by default; zero writes directly after
    /// every read, [`Duration::MAX`] never.
    pub direct_write_quiet_gap: Duration,
    /// Called on the broker thread once it falls quiet after input (a quarter of a second with
    /// no connection opened, closed or read): the binary passes its allocator's
    /// collection here, so what a burst freed goes back to the system even when nothing
    /// allocates afterwards. Libraries do not choose the allocator; `None` does nothing.
    pub release_memory: Option<fn()>,
    /// How long one batch may take to write before its client is deemed stalled and the
    /// connection closed; [`WRITE_STALL_TIMEOUT`] by default.
    pub write_stall_timeout: Duration,
    /// How long closing a connection may wait for the peer to take what closing writes (TLS
    /// `close_notify`, a WebSocket Close frame, buffered output) before the socket is dropped,
    /// so that a peer that stopped reading cannot hold back the connection's will, its
    /// session's expiry and its connection slot; [`CLOSE_TIMEOUT`] by default.
    pub close_timeout: Duration,
}

/// The default [`ServerConfig::write_stall_timeout`].
pub const WRITE_STALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The default [`ServerConfig::close_timeout`]: a peer that reads takes a `close_notify` or a
/// Close frame in one write; one that does not is not waited for longer than this.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// The default [`ServerConfig::direct_write_quiet_gap`]: longer than the gaps between reads of
/// a busy broker, far shorter than those of one that handles a message every millisecond.
pub const DIRECT_WRITE_QUIET_GAP: Duration = Duration::from_micros(50);

/// Errors starting the server.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A listener could not bind its address.
    #[error("cannot listen on {address}: {source}")]
    Bind {
        /// The address.
        address: SocketAddr,
        /// Why.
        source: io::Error,
    },
    /// A TLS listener's certificate, key or client CA could not be loaded.
    #[error("listener {address}: {source}")]
    Tls {
        /// The address.
        address: SocketAddr,
        /// Why.
        source: TlsError,
    },
    /// The threads that run TLS handshakes could not be started.
    #[error("cannot start the TLS handshake threads: {0}")]
    HandshakeThreads(io::Error),
    /// The durable store failed while running; what was not yet durable was not acknowledged.
    #[error("the store failed: {0}")]
    Store(String),
    /// The cluster layer stopped; what was not yet replicated was not acknowledged.
    #[error("the cluster layer failed: {0}")]
    Cluster(String),
}

/// A server whose listeners are bound but not yet accepting.
#[derive(Debug)]
pub struct Server {
    config: ServerConfig,
    listeners: Vec<(TcpListener, Listener)>,
    authenticator: Option<Box<dyn Authenticator>>,
    authorizer: Option<Box<dyn Authorizer>>,
    auth_reload: Option<AuthReload>,
    durable: Option<Durable>,
    edges: Vec<Edge>,
    cluster: Option<ClusterLink>,
}

/// An [`EdgeTask`] waiting for the server to run.
struct Edge(EdgeTask);

impl std::fmt::Debug for Edge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Edge")
    }
}

/// Fresh authentication and authorisation hooks, built again from whatever they were built
/// from (files that may have changed); an error says why they could not be.
pub type AuthHooks = (Box<dyn Authenticator>, Box<dyn Authorizer>);

/// What [`Server::set_auth_reload`] calls on SIGHUP.
pub struct AuthReload(Box<dyn FnMut() -> Result<AuthHooks, String>>);

impl AuthReload {
    /// Wraps the function that builds the hooks again.
    pub fn new(reload: impl FnMut() -> Result<AuthHooks, String> + 'static) -> Self {
        Self(Box::new(reload))
    }

    pub(crate) fn reload(&mut self) -> Result<AuthHooks, String> {
        (self.0)()
    }
}

impl std::fmt::Debug for AuthReload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuthReload")
    }
}

/// A durable store attached to the server: its thread, and the state it held at start.
struct Durable {
    committer: Committer,
    commits: watch::Receiver<Commit>,
    snapshot: Snapshot,
    epoch: Instant,
}

impl std::fmt::Debug for Durable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Durable")
            .field("retained", &self.snapshot.retained.len())
            .field("sessions", &self.snapshot.sessions.len())
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Binds every listener and loads its certificates; nothing is accepted until
    /// [`Server::run`].
    pub async fn bind(config: ServerConfig) -> Result<Self, NetError> {
        let mut listeners = Vec::new();
        for listener_config in &config.listeners {
            let address = listener_config.bind;
            let socket =
                listener::listen(address).map_err(|source| NetError::Bind { address, source })?;
            let local = socket.local_addr().unwrap_or(address);
            let listener = Listener::new(listener_config, local)
                .map_err(|source| NetError::Tls { address, source })?;
            listeners.push((socket, listener));
        }
        Ok(Self {
            config,
            listeners,
            authenticator: None,
            authorizer: None,
            auth_reload: None,
            durable: None,
            edges: Vec::new(),
            cluster: None,
        })
    }

    /// Makes the server's state durable in `store`, starting from `snapshot` (what the store
    /// held). `epoch` is the instant the store's clock counts `Time` from. The core must run
    /// with `Config::persistence` on. Packets produced with store operations are written only
    /// once `store.apply` has returned for them.
    pub fn with_store<S>(mut self, store: S, snapshot: Snapshot, epoch: Instant) -> Self
    where
        S: Store + Send + 'static,
    {
        let (committer, commits) = Committer::start(store);
        self.durable = Some(Durable {
            committer,
            commits,
            snapshot,
            epoch,
        });
        self
    }

    /// Makes the server a cluster node: the core's cluster operations go to `link.batches`
    /// and what arrives on `link.inputs` is routed; acknowledgements of QoS 1/2 messages wait
    /// until the cluster layer reports them replicated. The core must run with
    /// `Config::cluster` on. If the cluster layer stops, so does the server.
    pub fn set_cluster(&mut self, link: ClusterLink) {
        self.cluster = Some(link);
    }

    /// Installs the authentication and authorisation hooks (the defaults let everyone in and
    /// allow everything).
    pub fn set_auth(
        &mut self,
        authenticator: Box<dyn Authenticator>,
        authorizer: Box<dyn Authorizer>,
    ) {
        self.authenticator = Some(authenticator);
        self.authorizer = Some(authorizer);
    }

    /// On SIGHUP (Unix), builds the authentication and authorisation hooks again with `reload`
    /// and installs them: new connections are authenticated by the new hooks, and clients
    /// already connected have their permissions compiled again under the new rules (the
    /// subscriptions those deny are dropped). A reload that fails leaves the hooks in force.
    pub fn set_auth_reload(&mut self, reload: AuthReload) {
        self.auth_reload = Some(reload);
    }

    /// Runs `task` on the broker thread once the server runs, with a [`BrokerHandle`]: another
    /// edge (the HTTP bridge) reaching the core as connections do.
    pub fn add_edge(&mut self, task: EdgeTask) {
        self.edges.push(Edge(task));
    }

    /// The addresses actually bound (port 0 resolved), in configuration order.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .filter_map(|(socket, _)| socket.local_addr().ok())
            .collect()
    }

    /// Accepts and serves connections until `shutdown` completes (or the store fails), then
    /// tells every client the server is going away and waits (up to the grace period) for them
    /// to flush. On Unix, SIGHUP reloads the certificates of TLS listeners.
    pub async fn run(self, shutdown: impl Future<Output = ()> + 'static) -> Result<(), NetError> {
        let local = LocalSet::new();
        local.run_until(self.serve(shutdown)).await
    }

    async fn serve(self, shutdown: impl Future<Output = ()> + 'static) -> Result<(), NetError> {
        let (epoch, snapshot, committer, commits) = match self.durable {
            Some(d) => (
                d.epoch,
                Some(d.snapshot),
                Some(d.committer),
                Some(d.commits),
            ),
            None => (Instant::now(), None, None, None),
        };
        let shared = Rc::new(Shared::new(
            self.config.core.clone(),
            self.config.admission,
            epoch,
            snapshot,
            committer,
            self.config.direct_write_quiet_gap,
            shared::ConnectionTimeouts {
                write_stall: self.config.write_stall_timeout,
                close: self.config.close_timeout,
            },
        ));
        {
            let mut broker = shared.broker.borrow_mut();
            if let Some(authenticator) = self.authenticator {
                broker.set_authenticator(authenticator);
            }
            if let Some(authorizer) = self.authorizer {
                broker.set_authorizer(authorizer);
            }
        }
        let cluster_inputs = self.cluster.map(|link| {
            let out = cluster::ClusterOut::new(link.batches, link.qos0_backlog_bytes_max);
            let _ = shared.cluster.set(out);
            link.inputs
        });
        // What the restored broker purged goes to the store before anything else (and the
        // interest of restored sessions to the cluster).
        shared.after_input();
        // Shutdown and store failure both end the wait below. The shutdown future (signal
        // listeners) runs as a task of its own: the future `run_until` drives is polled each
        // time a connection task is woken, and the listeners would be polled with it.
        let stop = Rc::new(tokio::sync::Notify::new());
        {
            let stop = Rc::clone(&stop);
            tokio::task::spawn_local(async move {
                shutdown.await;
                stop.notify_one();
            });
        }
        let failed = Rc::new(std::cell::RefCell::new(None));
        if let Some(commits) = commits {
            tokio::task::spawn_local(commit_loop(
                Rc::clone(&shared),
                commits,
                Rc::clone(&stop),
                Rc::clone(&failed),
            ));
        }
        if let Some(inputs) = cluster_inputs {
            let (shared, stop, failed) = (Rc::clone(&shared), Rc::clone(&stop), Rc::clone(&failed));
            tokio::task::spawn_local(async move {
                let message = cluster::input_loop(Rc::clone(&shared), inputs).await;
                error!("the cluster layer failed, stopping: {message}");
                *failed.borrow_mut() = Some(NetError::Cluster(message));
                stop.notify_one();
            });
        }
        tokio::task::spawn_local(Rc::clone(&shared).run_auth_checks());
        for Edge(task) in self.edges {
            tokio::task::spawn_local(task(BrokerHandle::new(Rc::clone(&shared))));
        }
        if !self.config.busy_poll.is_zero() {
            let busy_poll = Rc::clone(&shared.busy_poll);
            tokio::task::spawn_local(busy_poll.run(self.config.busy_poll));
        }
        // TLS handshakes run on threads of their own (see `handshake`), started only when a
        // listener needs them.
        let handshakes = match self.listeners.iter().any(|(_, l)| l.is_tls()) {
            true => Some(Rc::new(
                handshake::TlsHandshakes::start().map_err(NetError::HandshakeThreads)?,
            )),
            false => None,
        };
        let mut all = Vec::new();
        for (index, (socket, mut listener)) in self.listeners.into_iter().enumerate() {
            listener.auth_profile = self
                .config
                .listener_auth_profiles
                .get(index)
                .copied()
                .unwrap_or(0);
            info!("listening for MQTT on {}", listener.describe());
            let listener = Rc::new(listener);
            all.push(Rc::clone(&listener));
            shared.listeners.borrow_mut().push(Rc::clone(&listener));
            let handshakes = handshakes.clone().filter(|_| listener.is_tls());
            tokio::task::spawn_local(listener::accept_loop(
                socket,
                listener,
                Rc::clone(&shared),
                handshakes,
            ));
        }
        tokio::task::spawn_local(timer_loop(
            Rc::clone(&shared),
            self.config.sys_interval,
            self.config.release_memory,
        ));
        #[cfg(unix)]
        tokio::task::spawn_local(listener::reload_on_hangup(
            all,
            Rc::clone(&shared),
            self.auth_reload,
        ));
        stop.notified().await;
        info!(
            "shutting down: disconnecting {} connection(s)",
            shared.connection_count()
        );
        shared.shutdown();
        let deadline = tokio::time::Instant::now() + self.config.shutdown_grace;
        while shared.connection_count() > 0 && tokio::time::Instant::now() < deadline {
            // Also wakes on the deadline: a connection waiting on a failed store never closes.
            let _ = tokio::time::timeout_at(deadline, shared.closed.notified()).await;
        }
        if let Some(committer) = &shared.committer {
            committer.close();
        }
        let failure = failed.borrow_mut().take();
        match failure {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }
}

/// Hears from the store thread: wakes connections whose packets became durable, and stops
/// the server if the store fails.
async fn commit_loop(
    shared: Rc<Shared>,
    mut commits: watch::Receiver<Commit>,
    stop: Rc<tokio::sync::Notify>,
    failed: Rc<std::cell::RefCell<Option<NetError>>>,
) {
    while commits.changed().await.is_ok() {
        let commit = commits.borrow_and_update().clone();
        let message = match commit {
            Commit::Through(seq) => {
                shared.committed(seq);
                continue;
            }
            Commit::Failed(message) => message,
        };
        error!("the store failed, stopping: {message}");
        *failed.borrow_mut() = Some(NetError::Store(message));
        stop.notify_one();
        return;
    }
    // The store thread is gone without a word (it panicked) unless shutdown closed it.
    if shared.committer.as_ref().is_some_and(|c| !c.is_closing()) {
        let message = "the store thread stopped".to_owned();
        error!("{message}, stopping");
        *failed.borrow_mut() = Some(NetError::Store(message));
        stop.notify_one();
    }
}

async fn timer_loop(
    shared: Rc<Shared>,
    sys_interval: Option<Duration>,
    release_memory: Option<fn()>,
) {
    // Sleeps until the core's next deadline (a tree view's delta window is a few milliseconds),
    // but at least every 250 ms, which the connection deadlines rely on.
    let cap = Duration::from_millis(250);
    let mut last_sys = tokio::time::Instant::now();
    let mut quiet = QuietWatch::new(shared.activity());
    loop {
        let at = shared.plan_timer(cap);
        tokio::select! {
            () = tokio::time::sleep_until(at) => {}
            // Input moved the core's next deadline earlier: plan again.
            () = shared.timer_wake.notified() => continue,
        }
        shared.handle_timeout();
        if let Some(interval) = sys_interval {
            if last_sys.elapsed() >= interval {
                last_sys = tokio::time::Instant::now();
                shared.publish_sys();
            }
        }
        if quiet.fell_quiet(shared.activity(), tokio::time::Instant::now()) {
            if let Some(release) = release_memory {
                release();
            }
        }
        // A deadline that is already due (a large tree snapshot built in chunks) must not keep
        // the connection tasks waiting: let them run between two rounds.
        tokio::task::yield_now().await;
    }
}

/// How long the broker thread must go without input to count as quiet.
const QUIET_SPELL: Duration = Duration::from_millis(250);

/// Tells when the broker thread falls quiet: once per spell of input, when `QUIET_SPELL` has
/// passed since the last input the timer task saw.
#[derive(Debug)]
struct QuietWatch {
    seen: u64,
    /// When the timer task last saw input, while it has not yet reported the quiet after it.
    busy_at: Option<tokio::time::Instant>,
}

impl QuietWatch {
    fn new(activity: u64) -> Self {
        Self {
            seen: activity,
            busy_at: None,
        }
    }

    /// Given the activity counter at `now`, whether the broker has just fallen quiet.
    fn fell_quiet(&mut self, activity: u64, now: tokio::time::Instant) -> bool {
        if activity != self.seen {
            self.seen = activity;
            self.busy_at = Some(now);
            return false;
        }
        match self.busy_at {
            Some(at) if now.saturating_duration_since(at) >= QUIET_SPELL => {
                self.busy_at = None;
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod quiet_tests {
    use super::{QuietWatch, QUIET_SPELL};
    use std::time::Duration;

    #[test]
    fn falls_quiet_once_per_spell_of_input() {
        let start = tokio::time::Instant::now();
        let at = |millis: u64| start + Duration::from_millis(millis);
        let spell = QUIET_SPELL.as_millis() as u64;
        let mut watch = QuietWatch::new(0);
        assert!(!watch.fell_quiet(0, at(spell * 2)), "no input yet");
        assert!(!watch.fell_quiet(3, at(1000)), "input this round");
        assert!(
            !watch.fell_quiet(3, at(1000 + spell - 1)),
            "not quiet for long enough"
        );
        assert!(!watch.fell_quiet(5, at(1000 + spell)), "input again");
        assert!(
            watch.fell_quiet(5, at(1000 + spell * 2)),
            "quiet for a whole spell"
        );
        assert!(!watch.fell_quiet(5, at(1000 + spell * 4)), "only once");
        assert!(!watch.fell_quiet(6, at(5000)));
        assert!(watch.fell_quiet(6, at(5000 + spell)));
    }
}
