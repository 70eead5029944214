//! `http_sd_configs` sharing one upstream (issue 17): many sources of one
//! server all sync and take turns on its slots, a source that waits says
//! so, and `user:password@` in the URL is sent as basic auth and shown
//! nowhere.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

use crate::util::{poll_until, run_cli, Bridge, Dir};

/// What the keep-alive upstream saw.
#[derive(Default)]
struct Seen {
    /// Requests per query string.
    by_query: Mutex<BTreeMap<String, usize>>,
    /// `Authorization` headers received.
    authorization: Mutex<Vec<String>>,
    /// Connections accepted.
    connections: AtomicUsize,
}

/// An HTTP SD upstream on loopback that keeps every connection open until
/// the client closes it, as Python's `ThreadingHTTPServer` (HTTP/1.1)
/// does: hyper's HTTP/1.1 server, no idle timeout. Each answer is one
/// group labelled with the query string, after `delay`.
struct KeepAliveUpstream {
    addr: SocketAddr,
    seen: Arc<Seen>,
    _runtime: tokio::runtime::Runtime,
}

impl KeepAliveUpstream {
    fn start(delay: Duration) -> KeepAliveUpstream {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let seen = Arc::new(Seen::default());
        let shared = seen.clone();
        runtime.spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                shared.connections.fetch_add(1, Ordering::SeqCst);
                let seen = shared.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<_>| {
                        let seen = seen.clone();
                        async move { Ok::<_, Infallible>(answer(&seen, &req, delay).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .keep_alive(true)
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        KeepAliveUpstream {
            addr,
            seen,
            _runtime: runtime,
        }
    }

    /// Requests seen for query `q`.
    fn requests(&self, q: &str) -> usize {
        self.seen
            .by_query
            .lock()
            .unwrap()
            .get(q)
            .copied()
            .unwrap_or(0)
    }
}

async fn answer<B>(seen: &Seen, req: &Request<B>, delay: Duration) -> Response<Full<Bytes>> {
    let query = req.uri().query().unwrap_or("").to_string();
    *seen
        .by_query
        .lock()
        .unwrap()
        .entry(query.clone())
        .or_default() += 1;
    if let Some(auth) = req.headers().get("authorization") {
        let auth = auth.to_str().unwrap_or("").to_string();
        seen.authorization.lock().unwrap().push(auth);
    }
    tokio::time::sleep(delay).await;
    let body = format!(r#"[{{"targets": ["127.0.0.1:9100"], "labels": {{"q": "{query}"}}}}]"#);
    let mut r = Response::new(Full::new(Bytes::from(body)));
    r.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    r
}

/// A config with `jobs` jobs, job `jN` polling `http://UPSTREAM/ok?a=N`.
fn jobs_config(dir: &Dir, up: &KeepAliveUpstream, jobs: usize, interval: &str) -> String {
    let mut text = String::from("jobs:\n");
    for n in 1..=jobs {
        text.push_str(&format!(
            "  - job_name: j{n}\n    http_sd_configs: [{{url: 'http://{}/ok?a={n}', refresh_interval: {interval}}}]\n",
            up.addr
        ));
    }
    dir.write("sdbridge.yml", &text).display().to_string()
}

/// Issue 17: with 12 jobs on one keep-alive upstream, only 4 synced (each
/// kept one of the server's 4 connection slots in its own idle pooled
/// connection); the other 8 never reached the upstream, logging "no free
/// connection slot", and `/-/ready` stayed 503. Now a connect that finds
/// every slot taken closes an idle connection: every source syncs and
/// keeps taking its turn.
#[test]
fn twelve_jobs_on_one_keep_alive_upstream_all_sync() {
    let up = KeepAliveUpstream::start(Duration::ZERO);
    let dir = Dir::new();
    let config = jobs_config(&dir, &up, 12, "1s");
    let bridge = Bridge::start_unready(std::path::Path::new(&config));
    poll_until(Duration::from_secs(60), "/-/ready with 12 jobs", || {
        (bridge.get("/-/ready").status == 200).then_some(())
    });
    let all = bridge.get("/http_sd").text();
    for n in 1..=12 {
        assert!(all.contains(&format!("\"q\":\"a={n}\"")), "a={n} in {all}");
        assert_eq!(bridge.get(&format!("/http_sd/j{n}")).status, 200);
    }
    // Every source keeps polling (not only its first round).
    let before: Vec<usize> = (1..=12).map(|n| up.requests(&format!("a={n}"))).collect();
    poll_until(
        Duration::from_secs(60),
        "a later round of every source",
        || {
            (1..=12)
                .all(|n| up.requests(&format!("a={n}")) > before[n - 1])
                .then_some(())
        },
    );
    assert!(
        !bridge.log().contains("no free connection slot"),
        "{}",
        bridge.log()
    );
    let dumped = run_cli(None, ["dump", "--config", &config, "--timeout", "30"]);
    assert!(dumped.status.success(), "{dumped:?}");
}
