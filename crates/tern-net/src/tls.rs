//! TLS for listeners (rustls): certificate and key loaded from PEM files, reloadable without
//! touching open connections, optional client-certificate verification (mutual TLS), and the
//! identity a verified client certificate names.

use std::cell::RefCell;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;

/// Where a TLS listener finds its certificate, key and client CA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// PEM file with the server certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM file with the private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM file with the CA certificates that client certificates must chain to; `None`:
    /// client certificates are not asked for.
    pub client_ca: Option<PathBuf>,
    /// With `client_ca`: refuse clients that present no certificate (otherwise a certificate
    /// is optional, but verified when presented).
    pub require_client_certificate: bool,
}

/// Why a TLS configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A PEM file held nothing usable.
    #[error("{path}: {what}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        what: String,
    },
    /// rustls refused the combination (key does not match the certificate, bad CA, ...).
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client CA could not be used for verification.
    #[error("client CA: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

/// A listener's TLS acceptor, replaced as a whole on reload: handshakes in progress and open
/// connections keep the configuration they started with.
#[derive(Debug)]
pub(crate) struct ReloadableTls {
    settings: TlsSettings,
    current: RefCell<Arc<ServerConfig>>,
}

impl ReloadableTls {
    pub(crate) fn load(settings: TlsSettings) -> Result<Self, TlsError> {
        let config = build_config(&settings)?;
        Ok(Self {
            settings,
            current: RefCell::new(config),
        })
    }

    /// The configuration for a new connection's handshake.
    pub(crate) fn config(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.current.borrow())
    }

    /// Reads the files again; on failure the previous configuration stays in force.
    pub(crate) fn reload(&self) -> Result<(), TlsError> {
        let config = build_config(&self.settings)?;
        *self.current.borrow_mut() = config;
        Ok(())
    }

    pub(crate) fn settings(&self) -> &TlsSettings {
        &self.settings
    }
}

/// The rustls server configuration of `settings` (what a TLS listener uses), for other edges
/// that take the same settings.
pub fn server_config(settings: &TlsSettings) -> Result<Arc<ServerConfig>, TlsError> {
    build_config(settings)
}

fn build_config(settings: &TlsSettings) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs = read_certs(&settings.cert)?;
    let key = read_key(&settings.key)?;
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()?;
    let builder = match &settings.client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for cert in read_certs(path)? {
                roots.add(cert)?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if settings.require_client_certificate {
                verifier.build()?
            } else {
                verifier.allow_unauthenticated().build()?
            };
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder.with_single_cert(certs, key)?;
    Ok(Arc::new(config))
}

fn open(path: &Path) -> Result<BufReader<File>, TlsError> {
    File::open(path)
        .map(BufReader::new)
        .map_err(|source| TlsError::Read {
            path: path.to_owned(),
            source,
        })
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem_error = |what: String| TlsError::Pem {
        path: path.to_owned(),
        what,
    };
    let certs = CertificateDer::pem_reader_iter(open(path)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(e.to_string()))?;
    if certs.is_empty() {
        return Err(pem_error("no certificate found".to_owned()));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_reader(open(path)?).map_err(|e| TlsError::Pem {
        path: path.to_owned(),
        what: format!("no private key: {e}"),
    })
}

/// The identity a client certificate names: its subject Common Name, or failing that its
/// first Subject Alternative Name (DNS name, e-mail address or URI).
pub(crate) fn certificate_identity(cert: &CertificateDer<'_>) -> Option<String> {
    use x509_parser::extensions::GeneralName;
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let common_name = parsed
        .subject()
        .iter_common_name()
        .find_map(|cn| cn.as_str().ok())
        .filter(|cn| !cn.is_empty());
    if let Some(cn) = common_name {
        return Some(cn.to_owned());
    }
    let san = parsed.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|name| match name {
        GeneralName::DNSName(s) | GeneralName::RFC822Name(s) | GeneralName::URI(s) => {
            Some((*s).to_owned())
        }
        _ => None,
    })
}
