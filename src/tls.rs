//! The TLS material of the gRPC and admin ports, turned into a rustls server configuration (ring,
//! as tonic's `tls-ring`): the certificate chain, its private key and, for mTLS, the CA whose
//! client certificates are required. Errors say which file is wrong, never what is in it.

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::secrets::Redacted;

/// The TLS material of the gRPC and admin ports, PEM-encoded.
#[derive(Clone, Debug)]
pub struct TlsConfig {
    pub cert: Vec<u8>,
    pub key: Redacted<Vec<u8>>,
    /// Clients must present a certificate this CA signed (mTLS).
    pub client_ca: Option<Vec<u8>>,
}

/// How long a client may take over a TLS handshake, on either port.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the TLS material cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("the TLS certificate file holds no PEM certificate")]
    NoCertificate,
    #[error("the TLS key file holds no PEM private key (PKCS#8, PKCS#1 or SEC1)")]
    NoKey,
    #[error("the client CA file holds no usable PEM certificate")]
    NoClientCa,
    /// rustls refused the combination (a key that does not match the certificate, say); its
    /// messages name the problem, never key material.
    #[error("the TLS certificate, key or client CA was refused: {0}")]
    Refused(String),
}

/// A rustls server configuration for `tls`, offering `alpn` (e.g. `http/1.1`).
pub fn server_config(tls: &TlsConfig, alpn: &[&[u8]]) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let certs = certificates(&tls.cert).ok_or(TlsError::NoCertificate)?;
    // The PEM parser's error could quote the file; only say that it failed.
    let key = PrivateKeyDer::from_pem_slice(&tls.key.0).map_err(|_| TlsError::NoKey)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Refused(e.to_string()))?;
    let builder = match &tls.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            let (added, _) = roots.add_parsable_certificates(certificates(ca).ok_or(TlsError::NoClientCa)?);
            if added == 0 {
                return Err(TlsError::NoClientCa);
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| TlsError::Refused(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Refused(e.to_string()))?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// Every certificate in a PEM file; `None` when there is none or one does not parse.
fn certificates(pem: &[u8]) -> Option<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .ok()?;
    (!certs.is_empty()).then_some(certs)
}
