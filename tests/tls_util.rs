//! Certificates made in the test (rcgen) and a blocking HTTPS client for
//! the web tests.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use crate::util::{exchange, Response};

/// A test CA and what it signed, as PEM.
pub struct Pki {
    /// The CA certificate, for clients' `ca_file` and `client_ca_file`.
    pub ca: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A certificate and its key, as PEM.
pub struct Leaf {
    pub cert: String,
    pub key: String,
}

impl Pki {
    pub fn new(name: &str) -> Pki {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = params.self_signed(&key).expect("CA cert").pem();
        Pki {
            ca,
            issuer: Issuer::new(params, key),
        }
    }

    /// A server certificate for `localhost` and 127.0.0.1, named `cn`.
    pub fn server(&self, cn: &str) -> Leaf {
        self.leaf(cn, ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// A client certificate named `cn`.
    pub fn client(&self, cn: &str) -> Leaf {
        self.leaf(cn, ExtendedKeyUsagePurpose::ClientAuth)
    }

    fn leaf(&self, cn: &str, usage: ExtendedKeyUsagePurpose) -> Leaf {
        let key = KeyPair::generate().expect("leaf key");
        let mut params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                .expect("leaf params");
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, &self.issuer).expect("leaf cert");
        Leaf {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }
}

/// How a test client reaches an HTTPS bridge.
#[derive(Clone, Default)]
pub struct TlsClient {
    /// PEM CA the server's certificate must chain to.
    pub ca: String,
    /// PEM certificate and key to present, for mutual TLS.
    pub identity: Option<(String, String)>,
}

impl TlsClient {
    pub fn trusting(ca: &str) -> TlsClient {
        TlsClient {
            ca: ca.to_string(),
            identity: None,
        }
    }

    fn config(&self) -> rustls::ClientConfig {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(self.ca.as_bytes()) {
            roots.add(cert.expect("CA pem")).expect("CA");
        }
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots);
        match &self.identity {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => builder
                .with_client_auth_cert(
                    CertificateDer::pem_slice_iter(cert.as_bytes())
                        .collect::<Result<Vec<_>, _>>()
                        .expect("client pem"),
                    PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("client key"),
                )
                .expect("client identity"),
        }
    }

    /// One request over a fresh TLS connection; `Err` when the handshake
    /// or the connection fails (as mutual TLS refusals do).
    pub fn request(
        &self,
        addr: SocketAddr,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<Response, String> {
        let (_, response) = self.request_with_peer(addr, method, path, headers)?;
        Ok(response)
    }

    /// Like [`TlsClient::request`], also giving the server's leaf
    /// certificate (DER), to tell which certificate was served.
    pub fn request_with_peer(
        &self,
        addr: SocketAddr,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<(Vec<u8>, Response), String> {
        let name = ServerName::try_from("localhost").expect("name");
        let connection = rustls::ClientConnection::new(Arc::new(self.config()), name)
            .map_err(|e| e.to_string())?;
        let tcp = TcpStream::connect(addr).map_err(|e| e.to_string())?;
        tcp.set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(|e| e.to_string())?;
        let mut stream = rustls::StreamOwned::new(connection, tcp);
        // Finish the handshake first, so a refused one is an error here.
        stream.flush().map_err(|e| e.to_string())?;
        while stream.conn.is_handshaking() {
            stream
                .conn
                .complete_io(&mut stream.sock)
                .map_err(|e| e.to_string())?;
        }
        let peer = stream
            .conn
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.to_vec())
            .unwrap_or_default();
        let response = exchange(&mut ReadAll(&mut stream), addr, method, path, headers)?;
        Ok((peer, response))
    }
}

/// Reads a TLS stream to its end, taking a peer's missing close_notify
/// (hyper closes after `Connection: close`) as the end.
struct ReadAll<'a, S>(&'a mut S);

impl<S: Read> Read for ReadAll<'_, S> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self.0.read(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(0),
            other => other,
        }
    }
}

impl<S: Write> Write for ReadAll<'_, S> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}
