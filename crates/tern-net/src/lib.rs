//! Tern's network runtime: listeners (TCP, TLS, WebSocket, secure WebSocket) and one task per
//! connection around the broker core.
//!
//! The whole broker runs on one thread: connection tasks call the core directly through a
//! `RefCell`, so routing takes no lock at all, and after every batch of input the tasks of the
//! connections with new output are woken once. See ARCHITECTURE.md for why one thread.

mod connection;
mod gate;
mod listener;
mod shared;
mod tls;
mod ws;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use tern_core::{Authenticator, Authorizer};
use tokio::net::TcpListener;
use tokio::task::LocalSet;
use tracing::info;

pub use gate::AdmissionLimits;
pub use tls::{TlsError, TlsSettings};

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
}

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
}

/// A server whose listeners are bound but not yet accepting.
#[derive(Debug)]
pub struct Server {
    config: ServerConfig,
    listeners: Vec<(TcpListener, Listener)>,
    authenticator: Option<Box<dyn Authenticator>>,
    authorizer: Option<Box<dyn Authorizer>>,
}

impl Server {
    /// Binds every listener and loads its certificates; nothing is accepted until
    /// [`Server::run`].
    pub async fn bind(config: ServerConfig) -> Result<Self, NetError> {
        let mut listeners = Vec::new();
        for listener_config in &config.listeners {
            let address = listener_config.bind;
            let socket = TcpListener::bind(address)
                .await
                .map_err(|source| NetError::Bind { address, source })?;
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
        })
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

    /// The addresses actually bound (port 0 resolved), in configuration order.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .filter_map(|(socket, _)| socket.local_addr().ok())
            .collect()
    }

    /// Accepts and serves connections until `shutdown` completes, then tells every client the
    /// server is going away and waits (up to the grace period) for them to flush. On Unix,
    /// SIGHUP reloads the certificates of TLS listeners.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let local = LocalSet::new();
        local.run_until(self.serve(shutdown)).await;
    }

    async fn serve(self, shutdown: impl Future<Output = ()>) {
        let shared = Rc::new(Shared::new(self.config.core.clone(), self.config.admission));
        {
            let mut broker = shared.broker.borrow_mut();
            if let Some(authenticator) = self.authenticator {
                broker.set_authenticator(authenticator);
            }
            if let Some(authorizer) = self.authorizer {
                broker.set_authorizer(authorizer);
            }
        }
        tokio::task::spawn_local(Rc::clone(&shared).run_auth_checks());
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
            tokio::task::spawn_local(listener::accept_loop(socket, listener, Rc::clone(&shared)));
        }
        tokio::task::spawn_local(timer_loop(Rc::clone(&shared), self.config.sys_interval));
        #[cfg(unix)]
        tokio::task::spawn_local(listener::reload_on_hangup(all));
        shutdown.await;
        info!(
            "shutting down: disconnecting {} connection(s)",
            shared.connection_count()
        );
        shared.shutdown();
        let deadline = tokio::time::Instant::now() + self.config.shutdown_grace;
        while shared.connection_count() > 0 && tokio::time::Instant::now() < deadline {
            shared.closed.notified().await;
        }
    }
}

async fn timer_loop(shared: Rc<Shared>, sys_interval: Option<Duration>) {
    // Sleeps until the core's next deadline (a tree view's delta window is a few milliseconds),
    // but at least every 250 ms, which the connection deadlines rely on.
    let cap = Duration::from_millis(250);
    let mut last_sys = tokio::time::Instant::now();
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
        // A deadline that is already due (a large tree snapshot built in chunks) must not keep
        // the connection tasks waiting: let them run between two rounds.
        tokio::task::yield_now().await;
    }
}
