//! `http_sd_configs` against a test upstream: Prometheus's validation,
//! `__meta_url`, `If-None-Match` and gzip, and answers that never wait for
//! a slow or failing upstream.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::util::{groups, poll_until, Bridge, Dir};

/// What the test upstream answers.
#[derive(Clone)]
struct Answer {
    status: u16,
    content_type: String,
    body: String,
    etag: Option<String>,
    delay: Duration,
    /// Every n-th call answers 500 (0: never).
    fail_every: usize,
}

impl Default for Answer {
    fn default() -> Self {
        Answer {
            status: 200,
            content_type: "application/json".into(),
            body: "[]".into(),
            etag: None,
            delay: Duration::ZERO,
            fail_every: 0,
        }
    }
}

/// An HTTP SD server on loopback, one thread per connection.
struct Upstream {
    addr: SocketAddr,
    answer: Arc<Mutex<Answer>>,
    calls: Arc<AtomicUsize>,
    in_flight: Arc<AtomicUsize>,
    conditional: Arc<AtomicUsize>,
    gzip: Arc<AtomicUsize>,
}

impl Upstream {
    fn start(answer: Answer) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let up = Upstream {
            addr: listener.local_addr().unwrap(),
            answer: Arc::new(Mutex::new(answer)),
            calls: Arc::default(),
            in_flight: Arc::default(),
            conditional: Arc::default(),
            gzip: Arc::default(),
        };
        let (answer, calls, in_flight, conditional, gzip) = (
            up.answer.clone(),
            up.calls.clone(),
            up.in_flight.clone(),
            up.conditional.clone(),
            up.gzip.clone(),
        );
        std::thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                let (answer, calls, in_flight, conditional, gzip) = (
                    answer.clone(),
                    calls.clone(),
                    in_flight.clone(),
                    conditional.clone(),
                    gzip.clone(),
                );
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    let mut head = Vec::new();
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                            break;
                        }
                        head.push(line.to_ascii_lowercase());
                    }
                    if head.is_empty() {
                        return;
                    }
                    let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
                    in_flight.fetch_add(1, Ordering::SeqCst);
                    let a = answer.lock().unwrap().clone();
                    std::thread::sleep(a.delay);
                    let if_none_match = head.iter().find_map(|l| l.strip_prefix("if-none-match:"));
                    let wants_gzip = head
                        .iter()
                        .any(|l| l.starts_with("accept-encoding:") && l.contains("gzip"));
                    let mut out = stream;
                    let (status, mut body, mut extra) = if a.fail_every > 0 && n % a.fail_every == 0
                    {
                        (500, b"fail".to_vec(), String::new())
                    } else if if_none_match.is_some()
                        && a.etag.as_deref().map(str::to_ascii_lowercase).as_deref()
                            == if_none_match.map(str::trim)
                    {
                        conditional.fetch_add(1, Ordering::SeqCst);
                        (304, Vec::new(), String::new())
                    } else {
                        let mut extra = format!("Content-Type: {}\r\n", a.content_type);
                        if let Some(tag) = &a.etag {
                            extra.push_str(&format!("ETag: {tag}\r\n"));
                        }
                        (a.status, a.body.clone().into_bytes(), extra)
                    };
                    if wants_gzip && !body.is_empty() {
                        gzip.fetch_add(1, Ordering::SeqCst);
                        let mut e =
                            flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                        e.write_all(&body).unwrap();
                        body = e.finish().unwrap();
                        extra.push_str("Content-Encoding: gzip\r\n");
                    }
                    let _ = write!(
                        out,
                        "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n",
                        body.len()
                    );
                    let _ = out.write_all(&body);
                    in_flight.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        up
    }

    fn url(&self) -> String {
        format!("http://{}/sd", self.addr)
    }

    fn set(&self, f: impl FnOnce(&mut Answer)) {
        f(&mut self.answer.lock().unwrap());
    }
}

fn start(dir: &Dir, up: &Upstream) -> Bridge {
    start_every(dir, up, "1s")
}

/// `refresh_interval` is also the request timeout, as in Prometheus.
fn start_every(dir: &Dir, up: &Upstream, interval: &str) -> Bridge {
    let config = dir.write(
        "sdbridge.yml",
        &format!(
            "jobs:\n  - job_name: up\n    http_sd_configs: [{{url: '{}', refresh_interval: {interval}}}]\n",
            up.url()
        ),
    );
    Bridge::start_unready(&config)
}

const GROUPS: &str = r#"[{"targets": ["127.0.0.1:9104"], "labels": {"dbms": "MySQL", "service_name": "My서비스", "unknown_key_ok": "1"}, "extra": true}]"#;

#[test]
fn upstream_groups_get_meta_url_and_are_polled_conditionally_with_gzip() {
    let up = Upstream::start(Answer {
        body: GROUPS.into(),
        etag: Some("\"v1\"".into()),
        ..Answer::default()
    });
    let dir = Dir::new();
    let bridge = start(&dir, &up);
    let body = bridge.wait_body("/http_sd/up", "upstream groups", |b| {
        b.contains("127.0.0.1:9104")
    });
    let g = groups(&body);
    assert_eq!(g[0].1["__meta_url"], up.url());
    assert_eq!(g[0].1["__meta_sdbridge_job"], "up");
    assert_eq!(g[0].1["service_name"], "My서비스");
    poll_until(Duration::from_secs(10), "a 304 to If-None-Match", || {
        (up.conditional.load(Ordering::SeqCst) > 0).then_some(())
    });
    assert!(up.gzip.load(Ordering::SeqCst) > 0, "gzip was asked for");
    assert_eq!(
        bridge.get("/http_sd/up").text(),
        body,
        "a 304 keeps the body"
    );
    up.set(|a| {
        a.body = r#"[{"targets": ["127.0.0.2:9104"]}]"#.into();
        a.etag = Some("\"v2\"".into());
    });
    bridge.wait_body("/http_sd/up", "the new answer", |b| {
        b.contains("127.0.0.2:9104")
    });
}

/// The upstream takes 3 s per answer and fails every third call: the
/// bridge keeps answering from its snapshot, at once and unchanged.
#[test]
fn a_slow_failing_upstream_never_slows_or_empties_answers() {
    let up = Upstream::start(Answer {
        body: GROUPS.into(),
        delay: Duration::from_secs(3),
        fail_every: 3,
        ..Answer::default()
    });
    let dir = Dir::new();
    let bridge = start_every(&dir, &up, "4s");
    let good = bridge.wait_body("/http_sd/up", "first answer", |b| {
        b.contains("127.0.0.1:9104")
    });
    let mut during_upstream_call = 0;
    let until = Instant::now() + Duration::from_secs(12);
    while Instant::now() < until {
        let busy = up.in_flight.load(Ordering::SeqCst) > 0;
        let asked = Instant::now();
        let r = bridge.get("/http_sd/up");
        let took = asked.elapsed();
        assert_eq!((r.status, r.text()), (200, good.clone()));
        // Generous (a loaded CI machine): the upstream needs 3 s; the
        // snapshot answers in microseconds.
        assert!(took < Duration::from_millis(1500), "answer took {took:?}");
        if busy && up.in_flight.load(Ordering::SeqCst) > 0 {
            during_upstream_call += 1;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        during_upstream_call > 0,
        "never asked while the upstream was busy"
    );
    poll_until(Duration::from_secs(30), "the 500 counted", || {
        (bridge
            .metric("sdbridge_source_errors_total", &["error=\"http_status\""])
            .unwrap_or(0.0)
            > 0.0)
            .then_some(())
    });
    assert!(bridge
        .metric("sdbridge_http_sd_requests_total", &["outcome=\"500\""])
        .is_some());
}

#[test]
fn invalid_answers_keep_the_last_good_groups() {
    let up = Upstream::start(Answer {
        body: GROUPS.into(),
        ..Answer::default()
    });
    let dir = Dir::new();
    let bridge = start(&dir, &up);
    let good = bridge.wait_body("/http_sd/up", "first answer", |b| {
        b.contains("127.0.0.1:9104")
    });
    let source = ["job=\"up\""];
    let bad: [(&str, &str, &str); 3] = [
        (
            "text/plain",
            GROUPS,
            "unsupported content type \\\"text/plain\\\"",
        ),
        (
            "application/json",
            r#"[{"targets": [], "labels": {"bad-name": "x"}}]"#,
            "is not a valid label name",
        ),
        ("application/json", "[null]", "nil target group item found"),
    ];
    for (content_type, body, message) in bad {
        up.set(|a| {
            a.content_type = content_type.into();
            a.body = body.into();
        });
        poll_until(Duration::from_secs(10), message, || {
            (bridge.metric("sdbridge_source_up", &source) == Some(0.0)
                && bridge
                    .get("/")
                    .text()
                    .contains(&message.replace("\\\"", "&quot;")))
            .then_some(())
        });
        assert_eq!(bridge.get("/http_sd/up").text(), good, "{message}");
        // Back to good, so the next bad answer is a new problem.
        up.set(|a| {
            a.content_type = "application/json".into();
            a.body = GROUPS.into();
        });
        poll_until(Duration::from_secs(10), "up again", || {
            (bridge.metric("sdbridge_source_up", &source) == Some(1.0)).then_some(())
        });
    }
    assert!(bridge.log().contains("refresh failed"));
}

/// Issue 10: an upstream answer over `limits.max_input_size` (after gzip
/// decoding) is an error; the last good groups stay served.
#[test]
fn an_answer_over_the_limit_keeps_the_last_good_groups() {
    let up = Upstream::start(Answer {
        body: GROUPS.into(),
        ..Answer::default()
    });
    let dir = Dir::new();
    let config = dir.write(
        "sdbridge.yml",
        &format!(
            "limits: {{max_input_size: 1KB}}\njobs:\n  - job_name: up\n    http_sd_configs: [{{url: '{}', refresh_interval: 1s}}]\n",
            up.url()
        ),
    );
    let bridge = Bridge::start_unready(&config);
    let good = bridge.wait_body("/http_sd/up", "first answer", |b| {
        b.contains("127.0.0.1:9104")
    });
    // Highly compressible: small on the wire, over the limit decoded.
    up.set(|a| a.body = format!(r#"[{{"targets": ["{}"]}}]"#, "1".repeat(4096)));
    poll_until(Duration::from_secs(10), "the limit reported", || {
        (bridge
            .metric(
                "sdbridge_source_errors_total",
                &["error=\"http_too_large\""],
            )
            .unwrap_or(0.0)
            > 0.0)
            .then_some(())
    });
    assert_eq!(bridge.get("/http_sd/up").text(), good);
    assert!(up.gzip.load(Ordering::SeqCst) > 0);
}
