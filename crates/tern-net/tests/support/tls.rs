//! TLS and WebSocket for the runtime's tests: a self-signed certificate made for each test (no
//! key is committed), and blocking TLS and WebSocket connections for [`super::Client`].

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use tern_net::TlsSettings;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message, WebSocket};

use super::WAIT;

/// A certificate for `localhost`, written as PEM files into `dir`.
pub(crate) struct TestCertificate {
    pub(crate) settings: TlsSettings,
    der: CertificateDer<'static>,
}

impl TestCertificate {
    pub(crate) fn new(dir: &Path) -> Self {
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let cert = dir.join("server.pem");
        let key = dir.join("server.key");
        std::fs::write(&cert, certified.cert.pem()).unwrap();
        std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
        Self {
            settings: TlsSettings {
                cert,
                key,
                client_ca: None,
                require_client_certificate: false,
            },
            der: certified.cert.der().clone(),
        }
    }

    /// A client configuration that trusts this certificate.
    pub(crate) fn client_config(&self) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots.add(self.der.clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        Arc::new(config)
    }

    /// A TLS connection to `addr`, handshake done.
    pub(crate) fn connect(&self, addr: SocketAddr) -> StreamOwned<ClientConnection, TcpStream> {
        let name = ServerName::try_from("localhost").unwrap();
        let connection = ClientConnection::new(self.client_config(), name).unwrap();
        let socket = TcpStream::connect(addr).unwrap();
        socket.set_read_timeout(Some(WAIT)).unwrap();
        let mut stream = StreamOwned::new(connection, socket);
        while stream.conn.is_handshaking() {
            stream.conn.complete_io(&mut stream.sock).unwrap();
        }
        stream
    }
}

/// A WebSocket connection as a byte stream: each write one binary message.
pub(crate) struct WsClient {
    socket: WebSocket<TcpStream>,
    pending: Vec<u8>,
}

impl WsClient {
    /// Upgrades a connection to `addr` at `path`, offering the `mqtt` subprotocol.
    pub(crate) fn connect(addr: SocketAddr, path: &str) -> Self {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        let mut request = format!("ws://{addr}{path}").into_client_request().unwrap();
        request
            .headers_mut()
            .insert("sec-websocket-protocol", "mqtt".parse().unwrap());
        let (socket, _) = tungstenite::client(request, stream).unwrap();
        Self {
            socket,
            pending: Vec::new(),
        }
    }
}

impl Read for WsClient {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.pending.is_empty() {
            match self.socket.read().map_err(std::io::Error::other)? {
                Message::Binary(data) => self.pending.extend_from_slice(&data),
                Message::Close(_) => return Ok(0),
                _ => {}
            }
        }
        let n = buf.len().min(self.pending.len());
        buf[..n].copy_from_slice(&self.pending[..n]);
        self.pending.drain(..n);
        Ok(n)
    }
}

impl Write for WsClient {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let message = Message::Binary(bytes::Bytes::copy_from_slice(buf));
        self.socket.send(message).map_err(std::io::Error::other)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.socket.flush().map_err(std::io::Error::other)
    }
}
