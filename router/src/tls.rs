//! TLS 1.3 with mutual authentication for inter-router and edge links (rustls, ring).
//!
//! Each side presents a certificate and verifies its peer against the CA bundle of its
//! TLS profile. There is no fallback to one-way TLS and no TLS 1.2.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

/// Where a TLS profile's CA bundle, certificate chain and key come from: files, or inline PEM.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct TlsProfile {
    pub name: String,
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// Inline PEM, used instead of the files when present (how config-sync hands over material).
    pub ca_pem: Option<String>,
    pub cert_pem: Option<String>,
    pub key_pem: Option<String>,
}

/// Why TLS material could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} {path}")]
    Read {
        what: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} holds no PEM {expect}")]
    Empty {
        what: &'static str,
        expect: &'static str,
    },
    #[error("{what} is not valid PEM: {reason}")]
    Pem { what: &'static str, reason: String },
    #[error("{0}")]
    Rustls(String),
}

/// Certificates and key of one TLS profile, parsed and checked to belong together.
#[derive(Debug, Clone)]
pub struct TlsMaterial {
    roots: Arc<RootCertStore>,
    chain: Vec<CertificateDer<'static>>,
    key: Arc<PrivateKeyDer<'static>>,
}

fn read(
    what: &'static str,
    file: &Option<std::path::PathBuf>,
    pem: &Option<String>,
) -> Result<Vec<u8>, TlsError> {
    if let Some(p) = pem {
        return Ok(p.as_bytes().to_vec());
    }
    let path = file.as_ref().expect("validated: file or pem present");
    crate::config::read_file(path, crate::config::MAX_CONFIG_FILE).map_err(|source| {
        TlsError::Read {
            what,
            path: path.display().to_string(),
            source,
        }
    })
}

fn certs(what: &'static str, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            what,
            reason: van_telemetry::pem_problem(&e),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Empty {
            what,
            expect: "CERTIFICATE",
        });
    }
    Ok(certs)
}

pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl TlsMaterial {
    pub fn load(p: &TlsProfile) -> Result<TlsMaterial, TlsError> {
        let ca = certs("ca", &read("ca", &p.ca_file, &p.ca_pem)?)?;
        let chain = certs(
            "certificate",
            &read("certificate", &p.cert_file, &p.cert_pem)?,
        )?;
        let key_pem = read("private key", &p.key_file, &p.key_pem)?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::Pem {
            what: "private key",
            reason: van_telemetry::pem_problem(&e),
        })?;
        let mut roots = RootCertStore::empty();
        for c in ca {
            roots
                .add(c)
                .map_err(|e| TlsError::Rustls(format!("ca: unusable certificate: {e}")))?;
        }
        let m = TlsMaterial {
            roots: Arc::new(roots),
            chain,
            key: Arc::new(key),
        };
        // Building both configs checks that the key matches the certificate.
        m.server_config()?;
        m.client_config()?;
        Ok(m)
    }

    /// Server side of a link: requires and verifies a client certificate.
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, TlsError> {
        let verifier = WebPkiClientVerifier::builder_with_provider(self.roots.clone(), provider())
            .build()
            .map_err(|e| TlsError::Rustls(format!("client verifier: {e}")))?;
        let cfg = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| TlsError::Rustls(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| TlsError::Rustls(format!("certificate and key: {e}")))?;
        Ok(Arc::new(cfg))
    }

    /// Client side of a link: verifies the server and presents our certificate.
    pub fn client_config(&self) -> Result<Arc<ClientConfig>, TlsError> {
        let cfg = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| TlsError::Rustls(e.to_string()))?
            .with_root_certificates(self.roots.clone())
            .with_client_auth_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| TlsError::Rustls(format!("certificate and key: {e}")))?;
        Ok(Arc::new(cfg))
    }
}

/// Turns a handshake failure into a line that says what the operator must fix, and whether a
/// certificate was rejected.
pub(crate) fn explain(err: &std::io::Error) -> (String, bool) {
    let Some(inner) = err
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
    else {
        return (err.to_string(), false);
    };
    use rustls::{AlertDescription as A, CertificateError as C, Error as E};
    let reason = match inner {
        E::NoCertificatesPresented => "peer presented no client certificate".into(),
        E::InvalidCertificate(C::UnknownIssuer) => {
            "peer certificate is not signed by a trusted CA (wrong CA?)".into()
        }
        E::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => {
            "peer certificate has expired".into()
        }
        E::InvalidCertificate(C::NotValidYet | C::NotValidYetContext { .. }) => {
            "peer certificate is not valid yet".into()
        }
        E::InvalidCertificate(C::NotValidForName | C::NotValidForNameContext { .. }) => {
            "peer certificate does not match the host name".into()
        }
        E::InvalidCertificate(c) => format!("peer certificate rejected: {c:?}"),
        E::AlertReceived(a) => format!("peer refused our certificate (alert {a:?})"),
        other => other.to_string(),
    };
    let certificate = match inner {
        E::NoCertificatesPresented | E::InvalidCertificate(_) => true,
        E::AlertReceived(a) => matches!(
            a,
            A::BadCertificate
                | A::UnsupportedCertificate
                | A::CertificateRevoked
                | A::CertificateExpired
                | A::CertificateUnknown
                | A::UnknownCA
                | A::CertificateRequired
                | A::AccessDenied
        ),
        _ => false,
    };
    (reason, certificate)
}
