//! One GET as every HTTP-speaking source needs it: auth headers read now
//! (credential files rotate), redirects (credentials never sent to another
//! host), a bound on the body (also after gzip decoding), gzip decoding,
//! and `Retry-After` parsed and clamped.

use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{
    HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, CONTENT_ENCODING, LOCATION, RETRY_AFTER,
    USER_AGENT,
};
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client as Pool;
use hyper_util::rt::TokioExecutor;

use super::config::{Authorization, BasicAuth, TlsConfig};
use super::slots::{self, ServerKey, ServerSlots};
use super::transport::{tls_config, Connector, Leased, TlsMaterial};

/// Redirects followed before giving up (Go's limit).
pub const MAX_REDIRECTS: usize = 10;
/// Time to open a connection (TCP, then TLS).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The `User-Agent` sdbridge sends.
pub const USER_AGENT_VALUE: &str = concat!("sdbridge/", env!("CARGO_PKG_VERSION"));

/// Reads `path` for a setting named `what`; the error names both.
pub fn read_file(path: &str, what: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("unable to read {what} {path}: {e}"))
}

/// PEM material from `file` if set, else given `inline`, else none.
pub fn pem(file: &str, inline: &str, what: &str) -> Result<Option<Vec<u8>>, String> {
    if !file.is_empty() {
        read_file(file, what).map(Some)
    } else {
        Ok((!inline.is_empty()).then(|| inline.as_bytes().to_vec()))
    }
}

/// A secret given inline or in a file (read now, trimmed, as Prometheus's
/// `FileSecret` does on every request). Blocking: a file read.
pub fn secret(inline: &str, file: &str, what: &str) -> Result<String, String> {
    if file.is_empty() {
        return Ok(inline.to_string());
    }
    let bytes = read_file(file, what)?;
    Ok(String::from_utf8_lossy(&bytes).trim().to_string())
}

/// The rustls configuration and the TLS server name of `tls`.
pub fn tls(tls: &TlsConfig) -> Result<(rustls::ClientConfig, Option<String>), String> {
    let ca = pem(&tls.ca_file, &tls.ca, "CA certificate")?;
    let client = match pem(&tls.cert_file, &tls.cert, "client certificate")? {
        Some(cert) => {
            let key = pem(&tls.key_file, &tls.key.0, "client key")?.unwrap_or_default();
            Some((cert, key))
        }
        None => None,
    };
    let server_name = (!tls.server_name.is_empty()).then(|| tls.server_name.clone());
    let config = tls_config(&TlsMaterial {
        ca,
        client,
        insecure_skip_verify: tls.insecure_skip_verify,
    })?;
    Ok((config, server_name))
}

/// `Authorization` for `basic_auth` or `authorization`, credentials read
/// now. Blocking: credential files.
pub fn auth_header(
    basic_auth: Option<&BasicAuth>,
    authorization: Option<&Authorization>,
) -> Result<Option<HeaderValue>, String> {
    let value = |s: String| {
        HeaderValue::from_str(&s)
            .map_err(|_| "credentials contain characters not allowed in a header".to_string())
    };
    if let Some(b) = basic_auth {
        let user = secret(&b.username, &b.username_file, "username file")?;
        let pass = secret(&b.password.0, &b.password_file, "password file")?;
        let encoded = base64(format!("{user}:{pass}").as_bytes());
        return value(format!("Basic {encoded}")).map(Some);
    }
    if let Some(a) = authorization {
        let creds = secret(&a.credentials.0, &a.credentials_file, "credentials file")?;
        return value(format!("{} {creds}", a.kind)).map(Some);
    }
    Ok(None)
}

/// A pooled client for one server, over that server's shared slots.
pub struct HttpClient {
    pool: Pool<Connector, Empty<Bytes>>,
    slots: Arc<ServerSlots>,
    follow_redirects: bool,
}

/// A complete answer.
#[derive(Debug)]
pub struct Fetched {
    /// Its status.
    pub status: StatusCode,
    /// Its headers.
    pub headers: HeaderMap,
    /// Its body, gzip-decoded if it was gzipped.
    pub body: Bytes,
}

impl Fetched {
    /// `Retry-After`, clamped.
    pub fn retry_after(&self) -> Option<Duration> {
        self.headers
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after)
    }
}

/// Why a GET gave no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchError {
    /// No response: refused, reset, TLS failure, too many redirects...
    Transport(String),
    /// The body is larger than allowed.
    TooLarge(usize),
}

impl std::fmt::Display for FetchError {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            FetchError::Transport(m) => f.write_str(m),
            FetchError::TooLarge(limit) => {
                write!(f, "the answer is larger than the limit of {limit} bytes")
            }
        }
    }
}

impl HttpClient {
    /// A client for `scheme://authority`, with at most `max_connections`
    /// connections to it (shared with every other client of that server).
    pub fn new(
        scheme: &str,
        authority: &str,
        tls_settings: &TlsConfig,
        follow_redirects: bool,
        max_connections: usize,
        idle_timeout: Duration,
    ) -> Result<HttpClient, String> {
        let (rustls, server_name) = tls(tls_settings)?;
        let slots = slots::for_server(
            ServerKey {
                scheme: scheme.to_string(),
                authority: authority.to_string(),
                server_name: server_name.clone().unwrap_or_default(),
            },
            max_connections,
        );
        let connector = Connector::new(slots.clone(), rustls, server_name, CONNECT_TIMEOUT);
        let pool = Pool::builder(TokioExecutor::new())
            .pool_max_idle_per_host(max_connections)
            .pool_idle_timeout(idle_timeout)
            .build(connector);
        Ok(HttpClient {
            pool,
            slots,
            follow_redirects,
        })
    }

    /// This server's shared request slots: hold one per request, so a
    /// request never waits inside the pool.
    pub fn requests(&self) -> &Arc<tokio::sync::Semaphore> {
        &self.slots.requests
    }

    /// GETs `uri` and reads the whole answer (at most `max_body` bytes,
    /// after decoding), following redirects when configured; `secret`
    /// headers are not sent to another host.
    pub async fn get(
        &self,
        mut uri: Uri,
        mut headers: HeaderMap,
        secret: &[HeaderName],
        max_body: usize,
    ) -> Result<Fetched, FetchError> {
        headers
            .entry(USER_AGENT)
            .or_insert(HeaderValue::from_static(USER_AGENT_VALUE));
        let origin = uri.authority().cloned();
        let mut redirects = 0;
        loop {
            let mut request = Request::get(uri.clone())
                .body(Empty::new())
                .map_err(|e| FetchError::Transport(e.to_string()))?;
            *request.headers_mut() = headers.clone();
            let response = self
                .pool
                .request(request)
                .await
                .map_err(|e| FetchError::Transport(error_chain(&e)))?;
            // Once this answer is read (or given up), its connection may
            // be closed for another client of the server.
            let _done = Done(response.extensions().get::<Leased>().cloned());
            let status = response.status();
            let location = response
                .headers()
                .get(LOCATION)
                .and_then(|l| l.to_str().ok())
                .map(str::to_string);
            if let (true, true, Some(location)) =
                (self.follow_redirects, status.is_redirection(), location)
            {
                redirects += 1;
                if redirects > MAX_REDIRECTS {
                    return Err(FetchError::Transport(format!(
                        "stopped after {MAX_REDIRECTS} redirects"
                    )));
                }
                uri = resolve_location(&uri, &location).ok_or_else(|| {
                    FetchError::Transport(format!("invalid redirect location {location:?}"))
                })?;
                if uri.authority() != origin.as_ref() {
                    headers.remove(AUTHORIZATION);
                    for name in secret {
                        headers.remove(name);
                    }
                }
                continue;
            }
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, max_body)
                .collect()
                .await
                .map_err(|e| {
                    if e.downcast_ref::<http_body_util::LengthLimitError>()
                        .is_some()
                    {
                        FetchError::TooLarge(max_body)
                    } else {
                        FetchError::Transport(error_chain(&*e))
                    }
                })?
                .to_bytes();
            let gzipped = parts
                .headers
                .get(CONTENT_ENCODING)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"gzip"));
            let body = if gzipped {
                // Up to `max_input_size` (64 MiB) of inflating: CPU work,
                // off the async workers that answer HTTP.
                tokio::task::spawn_blocking(move || gunzip(&body, max_body))
                    .await
                    .map_err(|e| FetchError::Transport(format!("decoding gzip: {e}")))??
            } else {
                body
            };
            return Ok(Fetched {
                status: parts.status,
                headers: parts.headers,
                body,
            });
        }
    }
}

/// Marks the connection of an answer idle when dropped.
struct Done(Option<Leased>);

impl Drop for Done {
    fn drop(&mut self) {
        if let Some(Leased(lease)) = &self.0 {
            lease.idle();
        }
    }
}

/// Decodes a gzip body, refusing one that inflates beyond `max` (a gzip
/// bomb is a few kilobytes). Public for the fuzz targets.
pub fn gunzip(body: &[u8], max: usize) -> Result<Bytes, FetchError> {
    let mut out = Vec::new();
    let read = flate2::read::GzDecoder::new(body)
        .take(max as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| FetchError::Transport(format!("invalid gzip body: {e}")))?;
    if read > max {
        return Err(FetchError::TooLarge(max));
    }
    Ok(Bytes::from(out))
}

/// A redirect's `Location`, absolute or relative to `base`.
pub fn resolve_location(base: &Uri, location: &str) -> Option<Uri> {
    if location.contains("://") {
        return location.parse().ok();
    }
    let path = if location.starts_with('/') {
        location.to_string()
    } else {
        let dir = base.path().rsplit_once('/').map_or("", |(dir, _)| dir);
        format!("{dir}/{location}")
    };
    let mut parts = base.clone().into_parts();
    parts.path_and_query = Some(path.parse().ok()?);
    Uri::from_parts(parts).ok()
}

/// `Retry-After` as seconds or an HTTP date, clamped
/// ([`crate::backoff::clamp`]): a server cannot park a source for ages.
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    let delay = if let Ok(secs) = v.trim().parse::<u64>() {
        Duration::from_secs(secs)
    } else {
        let when = httpdate::parse_http_date(v).ok()?;
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or_default()
    };
    Some(crate::backoff::clamp(delay))
}

/// An error with its sources, deduplicated.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = s.source();
    }
    message
}

/// Standard base64 with padding, for the basic auth header.
pub fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: a gzipped answer (up to 64 MiB decoded) was inflated
    /// on the async worker that awaited it. On a one-worker runtime a
    /// ticker then stalls for as long as the inflating takes.
    #[tokio::test(flavor = "current_thread")]
    async fn gzip_answers_are_inflated_off_the_async_worker() {
        use std::io::{Read, Write};
        let decoded = vec![b' '; 48 << 20];
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&decoded).unwrap();
        let body = gz.finish().unwrap();
        // What inflating costs here (nothing below is an absolute time).
        let started = std::time::Instant::now();
        assert_eq!(gunzip(&body, 64 << 20).unwrap().len(), decoded.len());
        let inflate = started.elapsed();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut head = [0u8; 4096];
            let _ = stream.read(&mut head);
            let answer = format!(
                "HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            stream.write_all(answer.as_bytes()).unwrap();
            stream.write_all(&body).unwrap();
        });
        let client = HttpClient::new(
            "http",
            &addr.to_string(),
            &crate::http_client::config::TlsConfig::default(),
            false,
            1,
            Duration::from_secs(1),
        )
        .unwrap();
        let ticking = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let ticker = {
            let ticking = ticking.clone();
            tokio::spawn(async move {
                let mut longest = Duration::ZERO;
                let mut last = std::time::Instant::now();
                while ticking.load(std::sync::atomic::Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    longest = longest.max(last.elapsed());
                    last = std::time::Instant::now();
                }
                longest
            })
        };
        let uri: Uri = format!("http://{addr}/sd").parse().unwrap();
        let fetched = client
            .get(uri, HeaderMap::new(), &[], 64 << 20)
            .await
            .unwrap();
        assert_eq!(fetched.body.len(), decoded.len());
        ticking.store(false, std::sync::atomic::Ordering::SeqCst);
        let longest = ticker.await.unwrap();
        assert!(
            longest < inflate / 2,
            "the worker stalled {longest:?} while an answer was inflated (inflating: {inflate:?})"
        );
    }

    #[test]
    fn base64_and_retry_after() {
        assert_eq!(base64(b"alice:s3cret"), "YWxpY2U6czNjcmV0");
        assert_eq!(base64(b"a"), "YQ==");
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        // Issue 18: at most a minute, whatever the server says.
        let minute = Some(Duration::from_secs(60));
        assert_eq!(parse_retry_after("18446744073709551615"), minute);
        assert_eq!(parse_retry_after("600"), minute);
        assert_eq!(parse_retry_after("Fri, 31 Dec 9999 23:59:59 GMT"), minute);
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn gzip_bombs_are_refused() {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut e, &vec![b'['; 1 << 20]).unwrap();
        let bomb = e.finish().unwrap();
        assert_eq!(gunzip(&bomb, 1000), Err(FetchError::TooLarge(1000)));
        assert_eq!(gunzip(&bomb, 1 << 20).unwrap().len(), 1 << 20);
    }
}
