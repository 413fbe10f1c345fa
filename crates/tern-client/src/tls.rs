//! TLS over TCP with rustls: the web PKI roots by default, or the certificate authorities of a
//! PEM file or directory (`--cafile`, `--capath`), the system's (`--tls-use-os-certs`), a
//! client certificate, ALPN, a pinned TLS version, and a check of the chain without the host
//! name (`--insecure`).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
    SupportedProtocolVersion,
};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::transport::{BoxStream, ConnectFuture, Dialer, Transport};

/// A TLS version to pin the connection to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsVersion {
    /// TLS 1.2.
    V1_2,
    /// TLS 1.3.
    V1_3,
}

/// What the client trusts and presents; the default trusts the web PKI roots.
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    /// Trust the certificate authorities in this PEM file.
    pub ca_file: Option<PathBuf>,
    /// Trust the certificate authorities in every PEM file of this directory.
    pub ca_dir: Option<PathBuf>,
    /// Trust the operating system's certificate authorities.
    pub system_roots: bool,
    /// Client certificate chain (PEM), presented when the broker asks for one.
    pub client_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    pub client_key: Option<PathBuf>,
    /// Accept a certificate whose chain is valid but which names another host.
    pub skip_hostname_check: bool,
    /// Only this TLS version; both 1.2 and 1.3 when `None`.
    pub version: Option<TlsVersion>,
    /// ALPN protocols to offer.
    pub alpn: Vec<Vec<u8>>,
}

fn invalid(error: impl ToString) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, error.to_string())
}

fn add_pem_file(roots: &mut RootCertStore, path: &Path) -> io::Result<usize> {
    let mut added = 0;
    let certs = CertificateDer::pem_file_iter(path).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{}: {e}", path.display()),
        )
    })?;
    for cert in certs {
        roots.add(cert.map_err(invalid)?).map_err(invalid)?;
        added += 1;
    }
    Ok(added)
}

/// Builds a rustls client configuration trusting the web PKI roots, or only the certificates
/// in `ca_file` when given.
pub fn client_config(ca_file: Option<&Path>) -> io::Result<Arc<ClientConfig>> {
    client_config_with(&TlsOptions {
        ca_file: ca_file.map(Path::to_path_buf),
        ..TlsOptions::default()
    })
}

/// Builds a rustls client configuration from `options`.
pub fn client_config_with(options: &TlsOptions) -> io::Result<Arc<ClientConfig>> {
    let mut roots = RootCertStore::empty();
    if let Some(path) = &options.ca_file {
        add_pem_file(&mut roots, path)?;
    }
    if let Some(dir) = &options.ca_dir {
        let mut added = 0;
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            // Files that hold no certificate (hash links to them, keys, notes) are skipped.
            if path.is_file() {
                added += add_pem_file(&mut roots, &path).unwrap_or(0);
            }
        }
        if added == 0 {
            return Err(invalid(format!("no certificate in {}", dir.display())));
        }
    }
    if options.system_roots {
        let found = rustls_native_certs::load_native_certs();
        if found.certs.is_empty() {
            return Err(invalid("no system certificate authority found"));
        }
        roots.add_parsable_certificates(found.certs);
    }
    if options.ca_file.is_none() && options.ca_dir.is_none() && !options.system_roots {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: &[&SupportedProtocolVersion] = match options.version {
        None => rustls::DEFAULT_VERSIONS,
        Some(TlsVersion::V1_2) => &[&rustls::version::TLS12],
        Some(TlsVersion::V1_3) => &[&rustls::version::TLS13],
    };
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(io::Error::other)?;
    let builder = if options.skip_hostname_check {
        let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(io::Error::other)?;
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyHostName(verifier)))
    } else {
        builder.with_root_certificates(roots)
    };
    let mut config = match (&options.client_cert, &options.client_key) {
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .map_err(invalid)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(invalid)?;
            let key = PrivateKeyDer::from_pem_file(key).map_err(invalid)?;
            builder.with_client_auth_cert(chain, key).map_err(invalid)?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a client certificate needs both the certificate and its key",
            ))
        }
    };
    config.alpn_protocols = options.alpn.clone();
    Ok(Arc::new(config))
}

/// Verifies the chain as usual but accepts any host name in the certificate.
#[derive(Debug)]
struct AnyHostName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyHostName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
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
    dialer: Dialer,
}

impl TlsTransport {
    /// Connects to `host:port`, verifying the broker's certificate for `host`.
    pub fn new(host: impl Into<String>, port: u16, config: Arc<ClientConfig>) -> Self {
        Self {
            host: host.into(),
            port,
            config,
            dialer: Dialer::default(),
        }
    }

    /// Opens the TCP connection with `dialer` (local address, SOCKS5 proxy).
    pub fn with_dialer(mut self, dialer: Dialer) -> Self {
        self.dialer = dialer;
        self
    }
}

impl Transport for TlsTransport {
    fn connect(&self) -> ConnectFuture<'_> {
        Box::pin(async move {
            let tcp = self.dialer.dial(&self.host, self.port).await?;
            let tls = wrap(self.config.clone(), &self.host, tcp).await?;
            Ok(Box::new(tls) as BoxStream)
        })
    }
}
