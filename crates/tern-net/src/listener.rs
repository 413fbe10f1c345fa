//! Accepting connections: admission limits, then the TLS and WebSocket handshakes (cut off at
//! the CONNECT deadline), then the connection task over whichever byte stream resulted.

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use tern_core::ConnectionInfo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio_rustls::server::TlsStream;
use tracing::{debug, warn};

use crate::gate::Admitted;
use crate::handshake::TlsHandshakes;
use crate::shared::Shared;
use crate::tcp::SharedTcp;
use crate::tls::{certificate_identity, ReloadableTls, TlsError};
use crate::{connection, ws, AuthReload, ListenerConfig, Transport};

/// Room a WebSocket message may take beyond the largest MQTT packet (framing, a few packets
/// batched into one message).
const WS_MESSAGE_SLACK_BYTES: usize = 64 * 1024;

/// Connections the kernel may complete and queue on a listener before the broker accepts
/// them; the kernel caps it at `net.core.somaxconn` (4,096 by default since Linux 5.4). With
/// Tokio's 128, a flood of connects from one address kept the queue full, and a client from
/// elsewhere whose SYN met a full queue was dropped and tried again a second later.
const LISTEN_BACKLOG: u32 = 65_535;

/// Binds a listening socket on `address`, reusing the address as `TcpListener::bind` does.
pub(crate) fn listen(address: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if address.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(LISTEN_BACKLOG)
}

/// A bound listener as the accept loop uses it.
#[derive(Debug)]
pub(crate) struct Listener {
    local: SocketAddr,
    tls: Option<ReloadableTls>,
    /// The WebSocket path, for WebSocket listeners.
    ws_path: Option<String>,
    use_identity_as_username: bool,
    /// The authentication profile its clients are checked against.
    pub(crate) auth_profile: usize,
    /// Connections accepted and not yet closed (handshakes included).
    open: Cell<u64>,
}

/// One listener's open connections, for the metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerConnections {
    /// `mqtt`, `mqtts`, `ws` or `wss`.
    pub protocol: &'static str,
    /// The address it is bound to.
    pub address: SocketAddr,
    /// Connections accepted and not yet closed, their handshakes included.
    pub open: u64,
}

/// Counts a connection as open on its listener until it is dropped.
struct OpenOn(Rc<Listener>);

impl OpenOn {
    fn new(listener: Rc<Listener>) -> Self {
        listener.open.set(listener.open.get() + 1);
        Self(listener)
    }
}

impl Drop for OpenOn {
    fn drop(&mut self) {
        self.0.open.set(self.0.open.get().saturating_sub(1));
    }
}

impl Listener {
    pub(crate) fn new(config: &ListenerConfig, local: SocketAddr) -> Result<Self, TlsError> {
        let (tls, ws_path) = match &config.transport {
            Transport::Tcp => (None, None),
            Transport::Tls(settings) => (Some(ReloadableTls::load(settings.clone())?), None),
            Transport::WebSocket { path } => (None, Some(path.clone())),
            Transport::SecureWebSocket { tls, path } => {
                (Some(ReloadableTls::load(tls.clone())?), Some(path.clone()))
            }
        };
        Ok(Self {
            local,
            tls,
            ws_path,
            use_identity_as_username: config.use_identity_as_username,
            auth_profile: 0,
            open: Cell::new(0),
        })
    }

    /// Whether its clients speak TLS.
    pub(crate) fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Its open connections now.
    pub(crate) fn connections(&self) -> ListenerConnections {
        ListenerConnections {
            protocol: self.scheme(),
            address: self.local,
            open: self.open.get(),
        }
    }

    fn scheme(&self) -> &'static str {
        match (self.tls.is_some(), self.ws_path.is_some()) {
            (false, false) => "mqtt",
            (true, false) => "mqtts",
            (false, true) => "ws",
            (true, true) => "wss",
        }
    }

    /// For the log: address, then scheme and what a client must know (path, client
    /// certificates).
    pub(crate) fn describe(&self) -> String {
        let mut text = format!("{} ({}", self.local, self.scheme());
        if let Some(path) = &self.ws_path {
            text.push_str(&format!(", path {path}"));
        }
        if let Some(tls) = &self.tls {
            let settings = tls.settings();
            if settings.client_ca.is_some() {
                text.push_str(if settings.require_client_certificate {
                    ", client certificate required"
                } else {
                    ", client certificate optional"
                });
            }
            if self.use_identity_as_username {
                text.push_str(", certificate identity as user name");
            }
        }
        text.push(')');
        text
    }
}

/// Accepts connections; `handshakes` runs the TLS handshakes of a TLS listener.
pub(crate) async fn accept_loop(
    socket: TcpListener,
    listener: Rc<Listener>,
    shared: Rc<Shared>,
    handshakes: Option<Rc<TlsHandshakes>>,
) {
    loop {
        match socket.accept().await {
            Ok((stream, peer)) => {
                let admitted = match shared.gate.admit(peer.ip(), Instant::now()) {
                    Ok(admitted) => admitted,
                    Err(reason) => {
                        if shared.log_refusal() {
                            warn!(
                                "refused connection from {peer} on {}: {reason}",
                                listener.local
                            );
                        }
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                tokio::task::spawn_local(handshake_and_serve(
                    stream,
                    peer,
                    Rc::clone(&listener),
                    Rc::clone(&shared),
                    handshakes.clone(),
                    admitted,
                ));
            }
            Err(error) => {
                // Typically out of file descriptors: back off briefly rather than spin.
                warn!("accept on {} failed: {error}", listener.local);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Runs the handshakes the listener needs, then the connection. A handshake gets the same
/// deadline as CONNECT: a client that never finishes one is cut off.
async fn handshake_and_serve(
    stream: TcpStream,
    peer: SocketAddr,
    listener: Rc<Listener>,
    shared: Rc<Shared>,
    handshakes: Option<Rc<TlsHandshakes>>,
    admitted: Admitted,
) {
    let _open = OpenOn::new(Rc::clone(&listener));
    let deadline = Duration::from_millis(shared.connect_timeout_millis().max(1));
    let message_max = shared.packet_size_max() as usize + WS_MESSAGE_SLACK_BYTES;
    let profile = listener.auth_profile;
    // The task's size is that of its largest state: plain TCP is served inline, the TLS and
    // WebSocket arms (whose streams and handshakes take kilobytes) are boxed, so a plain idle
    // connection does not pay for them.
    let tls = listener.tls.as_ref().zip(handshakes.as_deref());
    match (tls, &listener.ws_path) {
        (None, None) => serve_plain(stream, peer, profile, shared, admitted).await,
        (tls, ws_path) => {
            Box::pin(handshake_and_serve_wrapped(
                stream,
                peer,
                &listener,
                shared,
                tls,
                ws_path,
                deadline,
                message_max,
                profile,
                admitted,
            ))
            .await;
        }
    }
}

/// Serves a plain TCP connection, whose write half the broker thread shares for direct writes.
async fn serve_plain(
    stream: TcpStream,
    peer: SocketAddr,
    profile: usize,
    shared: Rc<Shared>,
    admitted: Admitted,
) {
    let stream = SharedTcp::new(stream);
    let direct = Some(stream.writer());
    let info = ConnectionInfo::default();
    connection::run(stream, peer, info, profile, shared, direct, admitted).await;
}

/// The TLS and WebSocket arms of [`handshake_and_serve`].
#[allow(clippy::too_many_arguments)]
async fn handshake_and_serve_wrapped(
    stream: TcpStream,
    peer: SocketAddr,
    listener: &Listener,
    shared: Rc<Shared>,
    tls: Option<(&ReloadableTls, &TlsHandshakes)>,
    ws_path: &Option<String>,
    deadline: Duration,
    message_max: usize,
    profile: usize,
    admitted: Admitted,
) {
    let refuse = |reason: &str| {
        if shared.log_refusal() {
            warn!(
                "refused connection from {peer} on {}: {reason}",
                listener.local
            );
        }
    };
    match (tls, ws_path) {
        (None, None) => serve_plain(stream, peer, profile, shared, admitted).await,
        (Some((tls, handshakes)), None) => {
            match handshakes.accept(stream, tls.config(), deadline).await {
                Ok(stream) => {
                    let info = tls_info(&stream, listener);
                    connection::run(stream, peer, info, profile, shared, None, admitted).await;
                }
                Err(reason) => refuse(&reason),
            }
        }
        (None, Some(path)) => {
            match tokio::time::timeout(deadline, ws::accept(stream, path, message_max)).await {
                Ok(Ok(stream)) => {
                    connection::run(
                        stream,
                        peer,
                        ConnectionInfo::default(),
                        profile,
                        shared,
                        None,
                        admitted,
                    )
                    .await;
                }
                Ok(Err(reason)) => refuse(&reason),
                Err(_) => refuse(&format!(
                    "WebSocket upgrade not finished within {deadline:?}"
                )),
            }
        }
        (Some((tls, handshakes)), Some(path)) => {
            // Both handshakes share the deadline: the WebSocket upgrade gets what TLS left.
            let at = tokio::time::Instant::now() + deadline;
            let stream = match handshakes.accept(stream, tls.config(), deadline).await {
                Ok(stream) => stream,
                Err(reason) => return refuse(&reason),
            };
            let info = tls_info(&stream, listener);
            match tokio::time::timeout_at(at, ws::accept(stream, path, message_max)).await {
                Ok(Ok(stream)) => {
                    connection::run(stream, peer, info, profile, shared, None, admitted).await;
                }
                Ok(Err(reason)) => refuse(&reason),
                Err(_) => refuse(&format!(
                    "TLS and WebSocket handshakes not finished within {deadline:?}"
                )),
            }
        }
    }
}

fn tls_info<S>(stream: &TlsStream<S>, listener: &Listener) -> ConnectionInfo
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let certificate_identity = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(certificate_identity);
    ConnectionInfo {
        certificate_identity,
        use_identity_as_username: listener.use_identity_as_username,
        peer_address: None,
    }
}

/// SIGHUP reloads every TLS listener's certificate and key (connections already open keep
/// theirs) and, with an [`AuthReload`], the authentication and authorisation hooks. A reload
/// that fails leaves what it would have replaced in force.
#[cfg(unix)]
pub(crate) async fn reload_on_hangup(
    listeners: Vec<Rc<Listener>>,
    shared: Rc<Shared>,
    mut auth_reload: Option<AuthReload>,
) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangup = match signal(SignalKind::hangup()) {
        Ok(hangup) => hangup,
        Err(error) => {
            warn!("cannot watch SIGHUP, certificates will not be reloaded: {error}");
            return;
        }
    };
    while hangup.recv().await.is_some() {
        for listener in &listeners {
            let Some(tls) = &listener.tls else { continue };
            match tls.reload() {
                Ok(()) => tracing::info!("reloaded the TLS certificate of {}", listener.local),
                Err(error) => warn!(
                    "cannot reload the TLS certificate of {}, keeping the previous one: {error}",
                    listener.local
                ),
            }
        }
        if let Some(auth_reload) = auth_reload.as_mut() {
            match auth_reload.reload() {
                Ok((authenticator, authorizer)) => {
                    let now = shared.now();
                    let dropped = {
                        let mut broker = shared.broker.borrow_mut();
                        broker.set_authenticator(authenticator);
                        broker.replace_authorizer(authorizer, now)
                    };
                    // Logs the denials and wakes whoever the change concerns.
                    shared.after_input();
                    tracing::info!(
                        "reloaded authentication and ACL rules; {dropped} subscription(s) they \
                         no longer allow were dropped"
                    );
                }
                Err(error) => warn!(
                    "cannot reload authentication and ACL rules, keeping the previous ones: \
                     {error}"
                ),
            }
        }
        debug!("SIGHUP handled");
    }
}
