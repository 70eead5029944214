//! How HTTP-speaking sources reach their servers: a hyper-util connector
//! that opens TCP (and TLS, with rustls) connections, each holding one of
//! its server's connection slots ([`super::slots`]) for as long as it is
//! open.
//!
//! Why not a request semaphore over a ready-made client: a pooled client
//! races a new connection against an idle one being returned, so capping
//! requests does not cap connections (5 seen with a cap of 4, 43 with 32).
//! Here a connection cannot exist without a slot, so Consul never sees more
//! than `max_connections` from one watcher, and the pool reuses them. A
//! connect that finds every slot taken closes the connection of that server
//! idle longest, in whatever pool ([`super::slots`]), and takes its slot.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::slots::{Lease, ServerSlots};

/// How long a connect may wait for a free slot. A request holds one of the
/// server's request slots, as many as connection slots, so a connect only
/// waits while an idle connection (its own pool's, or evicted from another)
/// is being closed or handed back; connects the pool started speculatively
/// give up after this instead of opening idle connections later.
const SLOT_WAIT: Duration = Duration::from_secs(5);
/// While waiting for a slot, how often to look for an idle connection to
/// close again (one may have passed [`super::slots::IDLE_GRACE`]).
const EVICT_AGAIN: Duration = Duration::from_millis(100);
/// How long an evicted connection waits for the server to close its end
/// before it is dropped anyway.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// TLS material, already read from the config's files or inline values.
#[derive(Debug, Default, Clone)]
pub struct TlsMaterial {
    /// PEM CA bundle; replaces the system roots when set (as in Go).
    pub ca: Option<Vec<u8>>,
    /// PEM client certificate chain and its PEM private key.
    pub client: Option<(Vec<u8>, Vec<u8>)>,
    /// Accept any certificate (signatures are still checked), as Go's
    /// `InsecureSkipVerify`.
    pub insecure_skip_verify: bool,
}

/// Builds the rustls client configuration; errors name what is wrong.
pub fn tls_config(tls: &TlsMaterial) -> Result<ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?;
    let builder = if tls.insecure_skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
    } else {
        let mut roots = RootCertStore::empty();
        match &tls.ca {
            Some(pem) => {
                for cert in CertificateDer::pem_slice_iter(pem) {
                    let cert =
                        cert.map_err(|e| format!("unable to use specified CA certificate: {e}"))?;
                    roots
                        .add(cert)
                        .map_err(|e| format!("unable to use specified CA certificate: {e}"))?;
                }
                if roots.is_empty() {
                    return Err(
                        "unable to use specified CA certificate: no certificate found".into(),
                    );
                }
            }
            None => {
                // Unreadable system roots only matter for https, where the
                // handshake then fails with "unknown issuer".
                let native = rustls_native_certs::load_native_certs();
                roots.add_parsable_certificates(native.certs);
            }
        }
        builder.with_root_certificates(roots)
    };
    match &tls.client {
        None => Ok(builder.with_no_client_auth()),
        Some((cert, key)) => {
            let chain = CertificateDer::pem_slice_iter(cert)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("unable to use client certificate: {e}"))?;
            if chain.is_empty() {
                return Err("unable to use client certificate: no certificate found".into());
            }
            let key = PrivateKeyDer::from_pem_slice(key)
                .map_err(|e| format!("unable to use client key: {e}"))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("unable to use client certificate: {e}"))
        }
    }
}

/// `insecure_skip_verify`: any certificate chain and name, but the
/// handshake signatures are still verified.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Opens connections for hyper-util's pool, at most the server's
/// connection slots at a time.
#[derive(Clone)]
pub struct Connector {
    /// The server's slots: one connection permit per open connection.
    slots: Arc<ServerSlots>,
    /// Used for `https` URIs.
    tls: TlsConnector,
    /// `tls_config.server_name`, if set.
    server_name: Option<Arc<str>>,
    connect_timeout: Duration,
}

impl Connector {
    /// A connector whose connections each hold one of `slots`' connection
    /// permits.
    pub fn new(
        slots: Arc<ServerSlots>,
        tls: ClientConfig,
        server_name: Option<String>,
        connect_timeout: Duration,
    ) -> Connector {
        Connector {
            slots,
            tls: TlsConnector::from(Arc::new(tls)),
            server_name: server_name.map(Into::into),
            connect_timeout,
        }
    }

    /// A connection slot: a free one, else the one an idle connection
    /// gives up when closed for this connect.
    async fn slot(&self) -> io::Result<OwnedSemaphorePermit> {
        let deadline = tokio::time::Instant::now() + SLOT_WAIT;
        let permits = &self.slots.connections;
        loop {
            if let Ok(permit) = permits.clone().try_acquire_owned() {
                return Ok(permit);
            }
            self.slots.evict_idle();
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    "no free connection slot",
                ));
            }
            match tokio::time::timeout(left.min(EVICT_AGAIN), permits.clone().acquire_owned()).await
            {
                Ok(Ok(permit)) => return Ok(permit),
                Ok(Err(_)) => return Err(io::Error::other("client closed")),
                Err(_) => continue,
            }
        }
    }

    async fn connect(self, uri: Uri) -> io::Result<Conn> {
        let slot = self.slot().await?;
        let https = uri.scheme_str() == Some("https");
        let host = uri
            .host()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no host in URI"))?;
        // `[::1]` in a URI is `::1` to connect to.
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let tcp = tokio::time::timeout(
            self.connect_timeout,
            TcpStream::connect((host.as_str(), port)),
        )
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
        let _ = tcp.set_nodelay(true);
        let stream = if https {
            let name = self.server_name.as_deref().unwrap_or(&host);
            let name = ServerName::try_from(name.to_string())
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
            let tls = tokio::time::timeout(self.connect_timeout, self.tls.connect(name, tcp))
                .await
                .map_err(|_| {
                    io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out")
                })??;
            Stream::Tls(Box::new(tls))
        } else {
            Stream::Plain(tcp)
        };
        Ok(Conn {
            io: TokioIo::new(stream),
            lease: self.slots.opened(),
            closing: None,
            _slot: slot,
        })
    }
}

impl tower_service::Service<Uri> for Connector {
    type Response = Conn;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Conn>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        Box::pin(self.clone().connect(uri))
    }
}

/// A plain or TLS connection.
pub enum Stream {
    /// `http`.
    Plain(TcpStream),
    /// `https`.
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// An open connection and the slot it holds until it is dropped (closed).
pub struct Conn {
    io: TokioIo<Stream>,
    /// Its state as the server's slots see it.
    lease: Arc<Lease>,
    /// Set once evicted: sdbridge's end is shut and the server's close is
    /// awaited until then.
    closing: Option<Pin<Box<tokio::time::Sleep>>>,
    _slot: OwnedSemaphorePermit,
}

impl Conn {
    /// An evicted connection closes gracefully: it shuts its end, then
    /// reads until the server closes its end (or [`CLOSE_WAIT`]), and only
    /// then ends, giving up its slot. A server counting connections per
    /// client (Consul's 200) has then counted this one out before the
    /// connection taking its slot arrives.
    fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let stream = self.io.inner_mut();
        if self.closing.is_none() {
            match Pin::new(&mut *stream).poll_shutdown(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(_)) => return Poll::Ready(Err(evicted())),
                Poll::Ready(Ok(())) => {}
            }
            self.closing = Some(Box::pin(tokio::time::sleep(CLOSE_WAIT)));
        }
        if let Some(deadline) = &mut self.closing {
            if deadline.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Err(evicted()));
            }
        }
        let mut scratch = [0u8; 512];
        loop {
            let mut buf = ReadBuf::new(&mut scratch);
            match Pin::new(&mut *stream).poll_read(cx, &mut buf) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(())) if buf.filled().is_empty() => {
                    return Poll::Ready(Err(evicted()))
                }
                // Whatever the server still sends is of no use.
                Poll::Ready(Ok(())) => continue,
                Poll::Ready(Err(_)) => return Poll::Ready(Err(evicted())),
            }
        }
    }
}

/// The [`Lease`] of the connection an answer came on, in the answer's
/// extensions (hyper-util copies it there): the client marks the
/// connection idle once it has read the answer.
#[derive(Clone, Debug)]
pub struct Leased(pub Arc<Lease>);

fn evicted() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "closed to free a connection slot for another request",
    )
}

impl Connection for Conn {
    fn connected(&self) -> Connected {
        Connected::new().extra(Leased(self.lease.clone()))
    }
}

impl hyper::rt::Read for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // An idle connection is read too (hyper watches for the server
        // closing it), so an eviction wakes it and it ends here.
        if this.lease.evicted(cx.waker()) {
            return this.poll_close(cx);
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.lease.busy();
        if this.lease.is_evicted() {
            return Poll::Ready(Err(evicted()));
        }
        Pin::new(&mut this.io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(format!(
            "{}/fixtures/tls/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .expect("TLS fixture")
    }

    #[test]
    fn tls_material_is_checked_when_the_client_is_built() {
        let good = TlsMaterial {
            ca: Some(fixture("ca.pem")),
            client: Some((fixture("client.pem"), fixture("client.key"))),
            insecure_skip_verify: false,
        };
        assert!(tls_config(&good).is_ok());
        assert!(tls_config(&TlsMaterial::default()).is_ok(), "system roots");
        let cases = [
            (
                TlsMaterial {
                    ca: Some(b"not a certificate".to_vec()),
                    ..good.clone()
                },
                "unable to use specified CA certificate: no certificate found",
            ),
            (
                TlsMaterial {
                    client: Some((fixture("client.pem"), b"no key here".to_vec())),
                    ..good.clone()
                },
                "unable to use client key",
            ),
            (
                TlsMaterial {
                    client: Some((Vec::new(), fixture("client.key"))),
                    ..good.clone()
                },
                "unable to use client certificate: no certificate found",
            ),
            (
                TlsMaterial {
                    client: Some((fixture("client.pem"), fixture("server.key"))),
                    ..good
                },
                "unable to use client certificate",
            ),
        ];
        for (material, want) in cases {
            let err = tls_config(&material).expect_err(want);
            assert!(err.contains(want), "{err:?} should contain {want:?}");
        }
    }
}
