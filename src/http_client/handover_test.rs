//! Slots handed over between clients of one server (issue 17): a
//! connection idle in one client's pool is closed for another client's
//! request, and a connection carrying a request never is.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Response};
use http_body_util::Full;
use hyper_util::rt::TokioIo;

use super::client::HttpClient;
use super::config::TlsConfig;

/// A keep-alive HTTP/1.1 server on loopback (connections stay open until
/// the client closes them, as Python's `ThreadingHTTPServer` keeps them);
/// `/slow` answers after a second. Counts the connections it accepted.
async fn keep_alive_server() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|req: http::Request<_>| async move {
                    if req.uri().path() == "/slow" {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"[]"))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, accepted)
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
    let (addr, accepted) = keep_alive_server().await;
    // Two clients (two pools) of one server with one slot between them.
    let (a, b) = (client(addr), client(addr));
    assert_eq!(get(&a, addr, "/").await, Ok(200));
    assert_eq!(get(&a, addr, "/").await, Ok(200), "reused");
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
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
    assert_eq!(accepted.load(Ordering::SeqCst), 3);
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
