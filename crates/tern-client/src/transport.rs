//! The link under MQTT: a small trait that opens a byte stream, with TCP provided here, TLS in
//! [`crate::tls`] and WebSocket in [`crate::ws`]. Any `AsyncRead + AsyncWrite` (a serial line,
//! a radio modem, an in-memory duplex in tests) plugs in through [`FnTransport`].

use std::fmt;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpSocket, TcpStream};

use crate::socks::Socks5Proxy;

/// A connected byte stream of any kind.
pub trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

/// A boxed connected stream, as every transport returns it.
pub type BoxStream = Box<dyn Stream>;

/// The future a transport's `connect` returns.
pub type ConnectFuture<'a> = Pin<Box<dyn Future<Output = io::Result<BoxStream>> + Send + 'a>>;

/// Opens a fresh link to the broker; called once per connection attempt.
pub trait Transport: Send + Sync + 'static {
    /// Opens the link. The client closes it by dropping the stream.
    fn connect(&self) -> ConnectFuture<'_>;
}

/// How the TCP leg under every socket transport is opened: from which local address, and
/// whether through a SOCKS5 proxy. Nagle is always off (MQTT packets are small and latency
/// matters).
#[derive(Debug, Clone, Default)]
pub struct Dialer {
    /// Local address to bind the outgoing socket to (any port).
    pub local_address: Option<IpAddr>,
    /// SOCKS5 proxy to reach the broker through; the proxy resolves the broker's name.
    pub socks5: Option<Socks5Proxy>,
}

impl Dialer {
    /// Opens a TCP connection to `host:port` as configured.
    pub async fn dial(&self, host: &str, port: u16) -> io::Result<TcpStream> {
        let stream = match &self.socks5 {
            Some(proxy) => {
                let mut stream = self.direct(&proxy.host, proxy.port).await?;
                proxy.handshake(&mut stream, host, port).await?;
                stream
            }
            None => self.direct(host, port).await?,
        };
        stream.set_nodelay(true)?;
        Ok(stream)
    }

    async fn direct(&self, host: &str, port: u16) -> io::Result<TcpStream> {
        let Some(local) = self.local_address else {
            return TcpStream::connect((host, port)).await;
        };
        let mut last_error = None;
        for address in tokio::net::lookup_host((host, port)).await? {
            // Only addresses of the local address's family can be reached from it.
            if address.is_ipv4() != local.is_ipv4() {
                continue;
            }
            let socket = if address.is_ipv4() {
                TcpSocket::new_v4()?
            } else {
                TcpSocket::new_v6()?
            };
            socket.bind(SocketAddr::new(local, 0))?;
            match socket.connect(address).await {
                Ok(stream) => return Ok(stream),
                Err(error) => last_error = Some(error),
            }
        }
        Err(last_error.unwrap_or_else(|| {
            io::Error::new(
                io::ErrorKind::AddrNotAvailable,
                format!("{host} has no address reachable from {local}"),
            )
        }))
    }
}

/// Splits `"host:port"` (or `"[v6]:port"`) into its host and port.
fn split_address(address: &str) -> io::Result<(&str, u16)> {
    let invalid = || {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bad address {address}"),
        )
    };
    let (host, port) = address.rsplit_once(':').ok_or_else(invalid)?;
    let port = port.parse().map_err(|_| invalid())?;
    Ok((host.trim_start_matches('[').trim_end_matches(']'), port))
}

/// Plain TCP to `host:port`.
#[derive(Debug, Clone)]
pub struct TcpTransport {
    address: String,
    dialer: Dialer,
}

impl TcpTransport {
    /// Connects to `address`, e.g. `"127.0.0.1:1883"` or `"broker.example:1883"`.
    pub fn new(address: impl Into<String>) -> Self {
        Self {
            address: address.into(),
            dialer: Dialer::default(),
        }
    }

    /// Opens the connection with `dialer` (local address, SOCKS5 proxy).
    pub fn with_dialer(mut self, dialer: Dialer) -> Self {
        self.dialer = dialer;
        self
    }
}

impl Transport for TcpTransport {
    fn connect(&self) -> ConnectFuture<'_> {
        Box::pin(async move {
            let (host, port) = split_address(&self.address)?;
            let stream = self.dialer.dial(host, port).await?;
            Ok(Box::new(stream) as BoxStream)
        })
    }
}

/// A Unix domain socket, for a broker listening on one (Mosquitto's `socket_domain`).
#[cfg(unix)]
#[derive(Debug, Clone)]
pub struct UnixTransport {
    path: std::path::PathBuf,
}

#[cfg(unix)]
impl UnixTransport {
    /// Connects to the socket at `path`.
    pub fn new(path: impl Into<std::path::PathBuf>) -> Self {
        Self { path: path.into() }
    }
}

#[cfg(unix)]
impl Transport for UnixTransport {
    fn connect(&self) -> ConnectFuture<'_> {
        Box::pin(async move {
            let stream = tokio::net::UnixStream::connect(&self.path).await?;
            Ok(Box::new(stream) as BoxStream)
        })
    }
}

type ConnectFn = dyn Fn() -> ConnectFuture<'static> + Send + Sync;

/// A transport made from a closure that opens any stream: the seam for links other than
/// sockets, and for in-memory links in tests.
#[derive(Clone)]
pub struct FnTransport {
    connect: Arc<ConnectFn>,
}

impl FnTransport {
    /// Wraps `connect`, called once per connection attempt.
    pub fn new<F, Fut, S>(connect: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = io::Result<S>> + Send + 'static,
        S: Stream + 'static,
    {
        Self {
            connect: Arc::new(move || {
                let future = connect();
                Box::pin(async move { Ok(Box::new(future.await?) as BoxStream) })
            }),
        }
    }
}

impl fmt::Debug for FnTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FnTransport")
    }
}

impl Transport for FnTransport {
    fn connect(&self) -> ConnectFuture<'_> {
        (self.connect)()
    }
}
