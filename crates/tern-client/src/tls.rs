//! TLS over TCP with rustls: the web PKI roots by default, or the certificate authorities of a
//! PEM file, as `--cafile` asks for.

use std::io;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::transport::{BoxStream, ConnectFuture, Transport};

/// Builds a rustls client configuration trusting the web PKI roots, or only the certificates
/// in `ca_file` when given.
pub fn client_config(ca_file: Option<&Path>) -> io::Result<Arc<ClientConfig>> {
    let mut roots = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
            for cert in certs {
                let cert =
                    cert.map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
                roots
                    .add(cert)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| io::Error::other(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Wraps a connected TCP stream in TLS, checking the certificate against `server_name`.
pub(crate) async fn wrap(
    config: Arc<ClientConfig>,
    server_name: &str,
    tcp: TcpStream,
) -> io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let name = ServerName::try_from(server_name.to_owned())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    TlsConnector::from(config).connect(name, tcp).await
}

/// MQTT over TLS (usually port 8883).
#[derive(Debug, Clone)]
pub struct TlsTransport {
    host: String,
    port: u16,
    config: Arc<ClientConfig>,
}

impl TlsTransport {
    /// Connects to `host:port`, verifying the broker's certificate for `host`.
    pub fn new(host: impl Into<String>, port: u16, config: Arc<ClientConfig>) -> Self {
        Self {
            host: host.into(),
            port,
            config,
        }
    }
}

impl Transport for TlsTransport {
    fn connect(&self) -> ConnectFuture<'_> {
        Box::pin(async move {
            let tcp = TcpStream::connect((self.host.as_str(), self.port)).await?;
            tcp.set_nodelay(true)?;
            let tls = wrap(self.config.clone(), &self.host, tcp).await?;
            Ok(Box::new(tls) as BoxStream)
        })
    }
}
