//! `tls_server_config`: the listener's rustls configuration.
//!
//! The certificate and key are re-read when they change (checked at a
//! handshake, at most once a second), so a renewed certificate is served
//! without a reload or restart; exporter-toolkit re-reads them on every
//! handshake, which costs two file reads per connection. The client CA
//! pool, the client policy and the versions change on reload.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};

use super::config::{ClientAuthType, TlsServerConfig, TlsVersion};
use super::watched::Watched;

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The server's TLS settings; an error says which setting or file is
/// wrong.
pub fn server_config(tls: &TlsServerConfig, http2: bool) -> Result<Arc<ServerConfig>, String> {
    if tls.cert_file.is_empty() {
        return Err("tls_server_config: missing cert_file".into());
    }
    if tls.key_file.is_empty() {
        return Err("tls_server_config: missing key_file".into());
    }
    if tls.min_version > tls.max_version {
        return Err("tls_server_config: min_version is above max_version".into());
    }
    let provider = provider();
    let versions: Vec<&'static rustls::SupportedProtocolVersion> = [
        (TlsVersion::Tls12, &rustls::version::TLS12),
        (TlsVersion::Tls13, &rustls::version::TLS13),
    ]
    .into_iter()
    .filter(|(v, _)| (tls.min_version..=tls.max_version).contains(v))
    .map(|(_, p)| p)
    .collect();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| format!("tls_server_config: {e}"))?;
    let verifier = match tls.client_auth_type {
        ClientAuthType::NoClientCert if !tls.client_ca_file.is_empty() => {
            // Go's wording.
            return Err(
                "tls_server_config: client CA's have been configured without a Client Auth Policy"
                    .into(),
            );
        }
        ClientAuthType::NoClientCert => WebPkiClientVerifier::no_client_auth(),
        policy => {
            if tls.client_ca_file.is_empty() {
                return Err(format!(
                    "tls_server_config: client_auth_type {policy:?} needs client_ca_file"
                ));
            }
            let roots = client_roots(&tls.client_ca_file)?;
            let builder =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
            let builder = if policy == ClientAuthType::VerifyClientCertIfGiven {
                builder.allow_unauthenticated()
            } else {
                builder
            };
            builder
                .build()
                .map_err(|e| format!("tls_server_config: client_ca_file: {e}"))?
        }
    };
    let certificate = Watched::open(
        vec![PathBuf::from(&tls.cert_file), PathBuf::from(&tls.key_file)],
        certified_key,
    )
    .map_err(|e| format!("tls_server_config: {e}"))?;
    let mut config = builder
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(Certificate(certificate)));
    config.alpn_protocols = if http2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Ok(Arc::new(config))
}

fn client_roots(path: &str) -> Result<RootCertStore, String> {
    let pem = std::fs::read(path).map_err(|e| format!("client_ca_file {path}: {e}"))?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| format!("client_ca_file {path}: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("client_ca_file {path}: {e}"))?;
    }
    if roots.is_empty() {
        return Err(format!("client_ca_file {path}: no certificate found"));
    }
    Ok(roots)
}

/// Certificate chain and key from their PEM files, checked to belong
/// together (Go's `tls.X509KeyPair`).
fn certified_key(contents: &[Vec<u8>]) -> Result<Arc<CertifiedKey>, String> {
    let [cert, key] = contents else {
        return Err("expected a certificate and a key".into());
    };
    let chain = CertificateDer::pem_slice_iter(cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("cert_file: {e}"))?;
    if chain.is_empty() {
        return Err("cert_file: no certificate found".into());
    }
    let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| format!("key_file: {e}"))?;
    let certified = CertifiedKey::from_der(chain, key, &provider())
        .map_err(|e| format!("failed to load the key pair: {e}"))?;
    Ok(Arc::new(certified))
}

/// Hands every handshake the current certificate.
#[derive(Debug)]
struct Certificate(Watched<Arc<CertifiedKey>>);

impl ResolvesServerCert for Certificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0.get()))
    }
}
