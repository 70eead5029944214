//! Slots handed over between clients of one server (issue 17): a
//! connection idle in one client's pool is closed for another client's
//! request, and a connection carrying a request never is.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Response};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::client::HttpClient;
use super::config::TlsConfig;

/// Connections a server accepted, has open (accept to close, as Consul
/// counts them per client), and had open at most.
#[derive(Default)]
struct Counts {
    accepted: AtomicUsize,
    open: AtomicUsize,
    peak: AtomicUsize,
}

/// A server's socket that notices the client's close 200 ms late, as a
/// busy server does: a client that reconnects without waiting for the
/// server's close is then counted twice.
struct LateEof {
    inner: tokio::net::TcpStream,
    eof: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl AsyncRead for LateEof {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if let Some(late) = &mut self.eof {
            return late.as_mut().poll(cx).map(Ok);
        }
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) if buf.filled().len() == before && buf.remaining() > 0 => {
                self.eof = Some(Box::pin(tokio::time::sleep(Duration::from_millis(200))));
                self.poll_read(cx, buf)
            }
            other => other,
        }
    }
}

impl AsyncWrite for LateEof {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A keep-alive HTTP/1.1 server on loopback (connections stay open until
/// the client closes them, as Python's `ThreadingHTTPServer` keeps them);
/// `/slow` answers after a second. It notices closes late ([`LateEof`]).
async fn keep_alive_server() -> (SocketAddr, Arc<Counts>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    let counts = Arc::new(Counts::default());
    let count = counts.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            count.accepted.fetch_add(1, Ordering::SeqCst);
            let open = count.open.fetch_add(1, Ordering::SeqCst) + 1;
            count.peak.fetch_max(open, Ordering::SeqCst);
            let count = count.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|req: http::Request<_>| async move {
                    if req.uri().path() == "/slow" {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"[]"))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(
                        TokioIo::new(LateEof {
                            inner: stream,
                            eof: None,
                        }),
                        service,
                    )
                    .await;
                count.open.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    (addr, counts)
}

fn client(addr: SocketAddr) -> HttpClient {
    HttpClient::new(
        "http",
        &addr.to_string(),
        &TlsConfig::default(),
        true,
        1,
        Duration::from_secs(600),
    )
    .expect("client")
}

async fn get(client: &HttpClient, addr: SocketAddr, path: &str) -> Result<u16, String> {
    let uri = format!("http://{addr}{path}").parse().expect("URI");
    client
        .get(uri, HeaderMap::new(), &[], 1 << 20)
        .await
        .map(|f| f.status.as_u16())
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn an_idle_connection_of_another_client_gives_up_its_slot() {
    let (addr, counts) = keep_alive_server().await;
    let accepted = || counts.accepted.load(Ordering::SeqCst);
    // Two clients (two pools) of one server with one slot between them.
    let (a, b) = (client(addr), client(addr));
    assert_eq!(get(&a, addr, "/").await, Ok(200));
    assert_eq!(get(&a, addr, "/").await, Ok(200), "reused");
    assert_eq!(accepted(), 1);
    // A's connection stays open and idle in A's pool; B still gets through
    // (it used to wait 5 s for the slot, then fail: "no free connection
    // slot").
    let took = std::time::Instant::now();
    assert_eq!(get(&b, addr, "/").await, Ok(200));
    assert!(
        took.elapsed() < Duration::from_secs(4),
        "{:?}",
        took.elapsed()
    );
    // And back: B's idle connection is closed for A.
    assert_eq!(get(&a, addr, "/").await, Ok(200));
    assert_eq!(accepted(), 3);
    // An evicted connection waits for the server to close it before its
    // slot goes to the next: the server, slow to notice, never counted
    // two at once (Consul refuses a client over its limit with 429).
    assert_eq!(counts.peak.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_connection_carrying_a_request_is_never_closed_for_another() {
    let (addr, _) = keep_alive_server().await;
    let (a, b) = (Arc::new(client(addr)), client(addr));
    let slow = {
        let a = a.clone();
        tokio::spawn(async move { get(&a, addr, "/slow").await })
    };
    // B asks while A's request is out on the only slot: it waits for the
    // answer, then for the connection to be idle long enough.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(get(&b, addr, "/").await, Ok(200));
    assert_eq!(slow.await.expect("task"), Ok(200), "A's answer arrived");
}
