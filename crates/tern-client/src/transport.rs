//! The link under MQTT: a small trait that opens a byte stream, with TCP provided here, TLS in
//! [`crate::tls`] and WebSocket in [`crate::ws`]. Any `AsyncRead + AsyncWrite` (a serial line,
//! a radio modem, an in-memory duplex in tests) plugs in through [`FnTransport`].

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

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

/// Plain TCP to `host:port`, with Nagle off (MQTT packets are small and latency matters).
#[derive(Debug, Clone)]
pub struct TcpTransport {
    address: String,
}

impl TcpTransport {
    /// Connects to `address`, e.g. `"127.0.0.1:1883"` or `"broker.example:1883"`.
    pub fn new(address: impl Into<String>) -> Self {
        Self {
            address: address.into(),
        }
    }
}

impl Transport for TcpTransport {
    fn connect(&self) -> ConnectFuture<'_> {
        Box::pin(async move {
            let stream = TcpStream::connect(&self.address).await?;
            stream.set_nodelay(true)?;
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
