//! TLS handshakes off the broker thread. A handshake's cryptography (key exchange, the
//! server's signature, verifying a client certificate) costs about 250 µs of CPU, which on the
//! broker thread delays every delivery behind it; a reconnect storm of thousands of TLS devices
//! would stall routing for seconds. So the accepted socket is handed to a small pool of
//! handshake threads (a multi-threaded tokio runtime of its own), which runs the rustls
//! handshake and hands the established stream back: the socket moves between the two
//! runtimes' reactors (`into_std`, `from_std`), the rustls state inside the stream with it.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::runtime::{Handle, Runtime};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// Handshakes in progress at once (waiting for the client or computing). Each holds a socket
/// and a rustls connection of some kilobytes; a socket waiting for a place counts against the
/// handshake deadline like one in progress.
pub(crate) const TLS_HANDSHAKES_IN_PROGRESS_MAX: usize = 1024;

/// Threads that run handshakes: one core is left to the broker thread, at most four.
const HANDSHAKE_THREADS_MAX: usize = 4;

/// A TCP socket that can move from one runtime's reactor to another's: registered with the
/// runtime polling it, detached while it travels.
#[derive(Debug)]
pub(crate) enum MovableTcp {
    /// Registered with the reactor of the runtime it was made on.
    Registered(TcpStream),
    /// On its way to another runtime.
    Detached(std::net::TcpStream),
    /// Lost in a move that failed.
    Gone,
}

impl MovableTcp {
    /// Leaves the current runtime's reactor.
    fn detach(&mut self) -> io::Result<()> {
        match std::mem::replace(self, Self::Gone) {
            Self::Registered(stream) => *self = Self::Detached(stream.into_std()?),
            other => *self = other,
        }
        Ok(())
    }

    /// Joins the reactor of the runtime this is called on.
    fn attach(&mut self) -> io::Result<()> {
        match std::mem::replace(self, Self::Gone) {
            Self::Detached(stream) => *self = Self::Registered(TcpStream::from_std(stream)?),
            other => *self = other,
        }
        Ok(())
    }

    fn registered(&mut self) -> io::Result<&mut TcpStream> {
        match self {
            Self::Registered(stream) => Ok(stream),
            Self::Detached(_) | Self::Gone => {
                Err(io::Error::other("socket used while between runtimes"))
            }
        }
    }
}

impl AsyncRead for MovableTcp {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(self.get_mut().registered()?).poll_read(cx, buf)
    }
}

impl AsyncWrite for MovableTcp {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(self.get_mut().registered()?).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.get_mut().registered()?).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.get_mut().registered()?).poll_shutdown(cx)
    }
}

/// The handshake threads, and the places for handshakes in progress.
pub(crate) struct TlsHandshakes {
    /// `None` once dropped (a runtime must not be dropped where it may block).
    runtime: Option<Runtime>,
    handle: Handle,
    places: Semaphore,
}

impl std::fmt::Debug for TlsHandshakes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsHandshakes")
            .field("places", &self.places.available_permits())
            .finish_non_exhaustive()
    }
}

impl TlsHandshakes {
    /// Starts the handshake threads.
    pub(crate) fn start() -> io::Result<Self> {
        Self::start_with(TLS_HANDSHAKES_IN_PROGRESS_MAX)
    }

    /// Starts the handshake threads, with `places` handshakes in progress at most.
    fn start_with(places: usize) -> io::Result<Self> {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let threads = cores.saturating_sub(1).clamp(1, HANDSHAKE_THREADS_MAX);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("tern-tls")
            .enable_all()
            .build()?;
        Ok(Self {
            handle: runtime.handle().clone(),
            runtime: Some(runtime),
            places: Semaphore::new(places),
        })
    }

    /// Runs the TLS handshake of `stream` with `config` on the handshake threads and returns
    /// the established stream, registered with the calling (broker) runtime; `Err` carries a
    /// reason fit for the log. It must finish within `limit`, waiting for a place included.
    pub(crate) async fn accept(
        &self,
        stream: TcpStream,
        config: Arc<ServerConfig>,
        limit: Duration,
    ) -> Result<TlsStream<MovableTcp>, String> {
        let deadline = Instant::now() + limit;
        let timed_out = || format!("TLS handshake not finished within {limit:?}");
        // The semaphore is never closed, so acquiring only waits.
        let place = tokio::time::timeout_at(deadline, self.places.acquire())
            .await
            .map_err(|_| timed_out())?;
        let mut socket = MovableTcp::Registered(stream);
        socket
            .detach()
            .map_err(|e| format!("cannot hand the socket over: {e}"))?;
        let handshake = self.handle.spawn(async move {
            socket.attach()?;
            let accept = TlsAcceptor::from(config).accept(socket);
            let mut stream = tokio::time::timeout_at(deadline, accept)
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "not finished in time"))??;
            stream.get_mut().0.detach()?;
            Ok::<_, io::Error>(stream)
        });
        let result = handshake.await;
        drop(place);
        let mut stream = match result {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) if error.kind() == io::ErrorKind::TimedOut => return Err(timed_out()),
            Ok(Err(error)) => return Err(format!("TLS handshake failed: {error}")),
            Err(error) => return Err(format!("TLS handshake thread failed: {error}")),
        };
        stream
            .get_mut()
            .0
            .attach()
            .map_err(|e| format!("cannot take the socket back: {e}"))?;
        Ok(stream)
    }
}

impl Drop for TlsHandshakes {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests fail loudly.
mod tests {
    use std::sync::Mutex;

    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
    use rustls::server::{ClientHello, ResolvesServerCert};
    use rustls::sign::CertifiedKey;
    use rustls::{ClientConfig, RootCertStore};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tokio_rustls::TlsConnector;

    use super::*;

    /// Serves one certificate and notes the thread each handshake chose it on.
    #[derive(Debug)]
    struct NotingThread {
        key: Arc<CertifiedKey>,
        threads: Mutex<Vec<Option<String>>>,
    }

    impl ResolvesServerCert for NotingThread {
        fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
            let name = std::thread::current().name().map(str::to_owned);
            self.threads.lock().unwrap().push(name);
            Some(Arc::clone(&self.key))
        }
    }

    /// A server configuration whose resolver notes threads, and a client that trusts it.
    fn configs() -> (Arc<NotingThread>, Arc<ServerConfig>, TlsConnector) {
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let cert = CertificateDer::from(certified.cert.der().to_vec());
        let key = PrivatePkcs8KeyDer::from(certified.signing_key.serialize_der());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = CertifiedKey::from_der(vec![cert.clone()], PrivateKeyDer::Pkcs8(key), &provider);
        let resolver = Arc::new(NotingThread {
            key: Arc::new(key.unwrap()),
            threads: Mutex::new(Vec::new()),
        });
        let server = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(&resolver) as Arc<dyn ResolvesServerCert>);
        let mut roots = RootCertStore::empty();
        roots.add(cert).unwrap();
        let client = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        (
            resolver,
            Arc::new(server),
            TlsConnector::from(Arc::new(client)),
        )
    }

    fn runtime() -> Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    /// The handshake's work happens on a handshake thread, and the stream that comes back
    /// carries data both ways on the calling runtime.
    #[test]
    fn the_handshake_runs_on_a_handshake_thread_and_the_stream_comes_back() {
        runtime().block_on(async {
            let (resolver, server, connector) = configs();
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let client = tokio::spawn(async move {
                let socket = TcpStream::connect(addr).await.unwrap();
                let name = ServerName::try_from("localhost").unwrap();
                let mut stream = connector.connect(name, socket).await.unwrap();
                stream.write_all(b"ping").await.unwrap();
                stream.flush().await.unwrap();
                let mut answer = [0_u8; 4];
                stream.read_exact(&mut answer).await.unwrap();
                answer
            });
            let (socket, _) = listener.accept().await.unwrap();
            let handshakes = TlsHandshakes::start().unwrap();
            let limit = Duration::from_secs(10);
            let mut stream = handshakes.accept(socket, server, limit).await.unwrap();
            let mut question = [0_u8; 4];
            stream.read_exact(&mut question).await.unwrap();
            assert_eq!(&question, b"ping");
            stream.write_all(b"pong").await.unwrap();
            stream.flush().await.unwrap();
            assert_eq!(&client.await.unwrap(), b"pong");
            let threads = resolver.threads.lock().unwrap().clone();
            assert_eq!(threads, [Some("tern-tls".to_owned())]);
        });
    }

    /// With every place taken by a client that never speaks, the next handshake waits for a
    /// place and is cut at its deadline, like one that never finishes.
    #[test]
    fn handshakes_past_the_places_wait_within_the_deadline() {
        runtime().block_on(async {
            let (_, server, _) = configs();
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let handshakes = Arc::new(TlsHandshakes::start_with(1).unwrap());
            let _silent = TcpStream::connect(addr).await.unwrap();
            let (socket, _) = listener.accept().await.unwrap();
            let holder = {
                let (handshakes, server) = (Arc::clone(&handshakes), Arc::clone(&server));
                tokio::spawn(async move {
                    let limit = Duration::from_secs(10);
                    handshakes.accept(socket, server, limit).await.map(drop)
                })
            };
            // The holder takes the only place before anything else runs.
            tokio::task::yield_now().await;
            assert_eq!(handshakes.places.available_permits(), 0);
            let _waiting = TcpStream::connect(addr).await.unwrap();
            let (socket, _) = listener.accept().await.unwrap();
            let limit = Duration::from_millis(100);
            let refused = handshakes.accept(socket, server, limit).await;
            assert_eq!(
                refused.map(drop),
                Err("TLS handshake not finished within 100ms".to_owned())
            );
            holder.abort();
        });
    }
}
