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

use crate::util::{free_port, poll_until, run_cli, Bridge, Dir};

/// What the keep-alive upstream saw.
#[derive(Default)]
struct Seen {
    /// Requests per query string.
    by_query: Mutex<BTreeMap<String, usize>>,
    /// `Authorization` headers received.
    authorization: Mutex<Vec<String>>,
    /// Connections accepted.
    connections: AtomicUsize,
    /// How to answer: 0 the group, 1 a 500, 2 the group as `text/plain`.
    mode: AtomicUsize,
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

    /// Answers from now on: 0 the group, 1 a 500, 2 the wrong content type.
    fn answer_with(&self, mode: usize) {
        self.seen.mode.store(mode, Ordering::SeqCst);
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
    let mode = seen.mode.load(Ordering::SeqCst);
    let mut r = Response::new(Full::new(Bytes::from(body)));
    let content_type = if mode == 2 {
        "text/plain"
    } else {
        "application/json"
    };
    r.headers_mut()
        .insert("content-type", content_type.parse().unwrap());
    if mode == 1 {
        *r.status_mut() = hyper::StatusCode::INTERNAL_SERVER_ERROR;
    }
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

/// Issue 17: a source waiting for one of its server's request slots says
/// so on the status page and in `/metrics`. 12 jobs on an upstream that
/// takes 1.5 s per answer, with 4 request slots: rounds queue.
#[test]
fn a_source_waiting_for_a_request_slot_says_so() {
    let up = KeepAliveUpstream::start(Duration::from_millis(1500));
    let dir = Dir::new();
    let config = jobs_config(&dir, &up, 12, "2s");
    let bridge = Bridge::start_unready(std::path::Path::new(&config));
    let shown = format!("waiting: a request slot of {}", up.addr);
    poll_until(Duration::from_secs(60), "a wait on the status page", || {
        bridge.get("/").text().contains(&shown).then_some(())
    });
    poll_until(Duration::from_secs(60), "a wait in /metrics", || {
        (bridge.metric("sdbridge_source_waiting", &["kind=\"http_sd\""])? >= 1.0).then_some(())
    });
    // Waiting, not failing: every source gets its turn.
    poll_until(Duration::from_secs(60), "/-/ready with 12 jobs", || {
        (bridge.get("/-/ready").status == 200).then_some(())
    });
    assert!(!bridge.log().contains("no free connection slot"));
}

/// Issue 17 (secrets): `url: http://user:password@...` sent no
/// credentials and showed the password on `/`, `/targets/<job>`, in the
/// log and in `__meta_url`. Now it is basic auth, as Go's client sends it,
/// and the URL is shown as `user:xxxxx@` everywhere.
#[test]
fn url_credentials_are_sent_as_basic_auth_and_shown_nowhere() {
    let up = KeepAliveUpstream::start(Duration::ZERO);
    up.answer_with(1);
    let dir = Dir::new();
    let closed = free_port();
    let config = dir.write(
        "sdbridge.yml",
        &format!(
            "jobs:\n  - job_name: up\n    http_sd_configs: [{{url: 'http://alice:s3cr%40t-pw@{}/ok?a=1', refresh_interval: 1s}}]\n  - job_name: down\n    http_sd_configs: [{{url: 'http://alice:s3cr%40t-pw@127.0.0.1:{closed}/sd', refresh_interval: 1s}}]\n",
            up.addr
        ),
    );
    let bridge = Bridge::start_unready(&config);
    // Every kind of failure logs and shows the URL.
    poll_until(Duration::from_secs(20), "the 500 logged", || {
        bridge
            .log()
            .contains("server returned HTTP status 500")
            .then_some(())
    });
    up.answer_with(2);
    poll_until(Duration::from_secs(20), "the content type logged", || {
        bridge
            .log()
            .contains("unsupported content type")
            .then_some(())
    });
    up.answer_with(0);
    let body = bridge.wait_body("/http_sd/up", "the upstream's group", |b| b.contains("a=1"));
    let shown = format!("http://alice:xxxxx@{}/ok?a=1", up.addr);
    assert_eq!(crate::util::groups(&body)[0].1["__meta_url"], shown);
    // Basic auth of alice and the decoded password (`%40` is `@`).
    let sent = up.seen.authorization.lock().unwrap().clone();
    assert!(!sent.is_empty(), "no Authorization header sent");
    assert!(
        sent.iter().all(|a| a == "Basic YWxpY2U6czNjckB0LXB3"),
        "{sent:?}"
    );
    poll_until(
        Duration::from_secs(20),
        "the refused connection shown",
        || {
            bridge
                .get("/")
                .text()
                .contains("alice:xxxxx@127.0.0.1")
                .then_some(())
        },
    );
    let dumped = run_cli(
        None,
        ["dump", "--config", config.to_str().unwrap(), "--job", "up"],
    );
    assert!(dumped.status.success(), "{dumped:?}");
    let failed = run_cli(
        None,
        [
            "dump",
            "--config",
            config.to_str().unwrap(),
            "--job",
            "down",
            "--timeout",
            "3",
        ],
    );
    assert!(!failed.status.success());
    let texts = [
        ("/http_sd/up", bridge.get("/http_sd/up").text()),
        ("/http_sd", bridge.get("/http_sd").text()),
        ("/", bridge.get("/").text()),
        ("/targets/up", bridge.get("/targets/up").text()),
        ("/targets/down", bridge.get("/targets/down").text()),
        ("/metrics", bridge.get("/metrics").text()),
        ("dump", String::from_utf8_lossy(&dumped.stdout).to_string()),
        (
            "dump's errors",
            String::from_utf8_lossy(&failed.stderr).to_string(),
        ),
        ("the log", bridge.log()),
    ];
    for (what, text) in texts {
        assert!(
            !text.contains("s3cr") && !text.contains("t-pw"),
            "the password in {what}:\n{text}"
        );
    }
    assert!(String::from_utf8_lossy(&dumped.stdout).contains(&shown));
    assert!(
        String::from_utf8_lossy(&failed.stderr).contains("alice:xxxxx@"),
        "{failed:?}"
    );
}
