//! The HTTP interface (CONTRACT section 4) against the running binary.

use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

use crate::util::{groups, poll_until, Bridge, Dir, Response};

fn seed() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/seed.yml")
}

#[test]
fn serves_the_seed_example_as_http_sd() {
    let bridge = Bridge::start(&seed());
    let r = bridge.get("/http_sd/mysqld");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let text = r.text();
    // UTF-8 passes through unescaped.
    assert!(text.contains("\"service_name\":\"My서비스\""), "{text}");
    assert!(!text.contains("\\u"), "{text}");
    let groups = groups(&text);
    assert_eq!(groups.len(), 3);
    let targets: Vec<&str> = groups.iter().map(|g| g.0[0].as_str()).collect();
    assert_eq!(
        targets,
        ["127.0.0.1:9104", "127.0.0.2:9104", "127.0.0.3:9104"]
    );
    let names: Vec<&str> = groups.iter().map(|g| g.1["db_name"].as_str()).collect();
    assert_eq!(names, ["프라이머리", "세컨더리A", "세컨더리B"]);
    for (_, labels) in &groups {
        assert_eq!(labels["__meta_sdbridge_job"], "mysqld");
        assert_eq!(labels["dbms"], "MySQL");
    }
    // Exactly the two keys per group, nothing else, no nulls.
    let raw: Vec<serde_json::Map<String, serde_json::Value>> = serde_json::from_str(&text).unwrap();
    for g in raw {
        assert_eq!(g.keys().collect::<Vec<_>>(), ["labels", "targets"]);
    }
}

#[test]
fn all_jobs_are_concatenated_in_config_order() {
    let bridge = Bridge::start(&seed());
    let all = groups(&bridge.get("/http_sd").text());
    let jobs: Vec<&str> = all
        .iter()
        .map(|g| g.1["__meta_sdbridge_job"].as_str())
        .collect();
    assert_eq!(jobs, ["node", "node", "node", "mysqld", "mysqld", "mysqld"]);
    let node = bridge.get("/http_sd/node").text();
    let mysqld = bridge.get("/http_sd/mysqld").text();
    assert_eq!(
        bridge.get("/http_sd").text(),
        format!(
            "[{},{}]",
            &node[1..node.len() - 1],
            &mysqld[1..mysqld.len() - 1]
        )
    );
}

#[test]
fn head_has_the_headers_and_no_body() {
    let bridge = Bridge::start(&seed());
    let get = bridge.get("/http_sd/node");
    let head = bridge.request("HEAD", "/http_sd/node", &[]);
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    assert_eq!(head.header("etag"), get.header("etag"));
    assert_eq!(
        head.header("content-length"),
        Some(get.body.len().to_string().as_str())
    );
    assert_eq!(head.header("content-type"), Some("application/json"));
}

#[test]
fn etag_and_conditional_requests() {
    let bridge = Bridge::start(&seed());
    let r = bridge.get("/http_sd/node");
    let etag = r.header("etag").expect("etag").to_string();
    assert!(
        etag.starts_with('"') && etag.ends_with('"'),
        "strong ETag: {etag}"
    );
    let lm = r
        .header("last-modified")
        .expect("last-modified")
        .to_string();
    let weak = format!("W/{etag}");
    let list = format!("\"nope\", {etag}");
    for inm in [etag.as_str(), weak.as_str(), list.as_str(), "*"] {
        let r = bridge.request("GET", "/http_sd/node", &[("If-None-Match", inm)]);
        assert_eq!(r.status, 304, "If-None-Match: {inm}");
        assert!(r.body.is_empty());
        assert_eq!(r.header("etag"), Some(etag.as_str()));
    }
    let r = bridge.request("GET", "/http_sd/node", &[("If-None-Match", "\"nope\"")]);
    assert_eq!(r.status, 200);
    let r = bridge.request("GET", "/http_sd/node", &[("If-Modified-Since", &lm)]);
    assert_eq!(r.status, 304);
    let r = bridge.request(
        "GET",
        "/http_sd/node",
        &[("If-Modified-Since", "Thu, 01 Jan 1970 00:00:00 GMT")],
    );
    assert_eq!(r.status, 200);
    // Another job has different content, so a different ETag.
    assert_ne!(
        bridge.get("/http_sd/mysqld").header("etag"),
        Some(etag.as_str())
    );
}

/// A gzip request once the body's gzip variant exists: it is compressed
/// off the publish path, so for a moment after a change (longer on a busy
/// machine) the identity body is what a gzip request gets.
fn get_gzip(bridge: &Bridge, path: &str, accept: &str) -> Response {
    poll_until(Duration::from_secs(10), "the gzip variant", || {
        let r = bridge.request("GET", path, &[("Accept-Encoding", accept)]);
        (r.header("content-encoding") == Some("gzip")).then_some(r)
    })
}

#[test]
fn gzip_only_when_asked_with_its_own_etag() {
    let bridge = Bridge::start(&seed());
    let plain = bridge.get("/http_sd/node");
    assert_eq!(plain.header("content-encoding"), None);
    assert_eq!(plain.header("vary"), Some("Accept-Encoding"));
    let gz = get_gzip(&bridge, "/http_sd/node", "gzip, deflate");
    assert_eq!(gz.status, 200);
    assert_eq!(gz.header("vary"), Some("Accept-Encoding"));
    assert_ne!(gz.header("etag"), plain.header("etag"));
    let mut decoded = Vec::new();
    flate2::read::GzDecoder::new(&gz.body[..])
        .read_to_end(&mut decoded)
        .unwrap();
    assert_eq!(decoded, plain.body);
    let gz_etag = gz.header("etag").unwrap();
    let r = bridge.request(
        "GET",
        "/http_sd/node",
        &[("Accept-Encoding", "gzip"), ("If-None-Match", gz_etag)],
    );
    assert_eq!(r.status, 304);
    // The identity ETag does not validate the gzip representation.
    let r = bridge.request(
        "GET",
        "/http_sd/node",
        &[
            ("Accept-Encoding", "gzip"),
            ("If-None-Match", plain.header("etag").unwrap()),
        ],
    );
    assert_eq!(r.status, 200);
    let r = bridge.request("GET", "/http_sd/node", &[("Accept-Encoding", "gzip;q=0")]);
    assert_eq!(r.header("content-encoding"), None);
}

#[test]
fn unknown_job_and_wrong_method_get_json_errors() {
    let bridge = Bridge::start(&seed());
    let r = bridge.get("/http_sd/nope");
    assert_eq!(r.status, 404);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert!(r.json()["error"].as_str().unwrap().contains("nope"));
    let r = bridge.request("POST", "/http_sd/node", &[]);
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, HEAD"));
    assert!(r.json()["error"].is_string());
    assert_eq!(bridge.get("/nothing/here").status, 404);
}

#[test]
fn health_readiness_metrics_and_status_page() {
    let bridge = Bridge::start(&seed());
    assert_eq!(bridge.get("/-/healthy").status, 200);
    assert_eq!(bridge.get("/-/ready").status, 200);
    bridge.get("/http_sd/node");
    let metrics = bridge.get("/metrics").text();
    for needle in [
        "sdbridge_source_up{job=\"node\",source=\"static#",
        "sdbridge_job_targets{job=\"mysqld\"} 3",
        "sdbridge_http_requests_total{path=\"/http_sd/node\",code=\"200\"}",
        "sdbridge_snapshot_rebuilds_total",
        "sdbridge_source_data_age_seconds",
    ] {
        assert!(metrics.contains(needle), "missing {needle} in\n{metrics}");
    }
    let page = bridge.get("/").text();
    assert!(
        page.contains("<a href=\"/http_sd/mysqld\">mysqld</a>"),
        "{page}"
    );
    assert!(page.contains("synced"));
}

#[test]
fn replicas_serve_identical_bytes_and_etags() {
    let a = Bridge::start(&seed());
    let b = Bridge::start(&seed());
    for path in ["/http_sd", "/http_sd/node"] {
        let (ra, rb) = (a.get(path), b.get(path));
        assert_eq!(ra.body, rb.body, "{path}");
        assert_eq!(ra.header("etag"), rb.header("etag"), "{path}");
        let (ga, gb) = (get_gzip(&a, path, "gzip"), get_gzip(&b, path, "gzip"));
        assert_eq!(ga.header("etag"), gb.header("etag"), "{path} gzip");
    }
}

/// A job is 503 (never an empty list) until its first sync. A Consul
/// that answers 500 holds the first sync until it recovers.
#[test]
fn not_synced_job_answers_503_with_retry_after() {
    let dir = Dir::new();
    dir.write("sd/ready.json", r#"[{"targets": ["127.0.0.1:9100"]}]"#);
    let consul = crate::fake_consul::FakeConsul::start();
    consul.inject("", crate::fake_consul::Fault::Status500);
    let config = dir.write(
        "sdbridge.yml",
        &format!(
            "jobs:\n  - job_name: ready\n    file_sd_configs: [{{files: [sd/*.json]}}]\n  - job_name: slow\n    consul_sd_configs: [{{server: '{}'}}]\n",
            consul.addr()
        ),
    );
    let bridge = Bridge::start_unready(&config);
    bridge.wait_body("/http_sd/ready", "ready job served", |b| {
        b.contains("127.0.0.1:9100")
    });
    for path in ["/http_sd/slow", "/http_sd"] {
        let r = bridge.get(path);
        assert_eq!(r.status, 503, "{path}");
        assert_eq!(r.header("retry-after"), Some("5"));
        let message = r.json()["error"].as_str().unwrap_or_default().to_string();
        assert!(
            message.contains("consul_sd#"),
            "{path}: names the source: {message}"
        );
    }
    assert_eq!(bridge.get("/-/ready").status, 503);
    // Consul recovers: the job syncs and is served (an empty catalog is
    // an empty list, now that it is the truth).
    consul.clear_faults();
    bridge.wait_body("/http_sd/slow", "slow job served after sync", |b| b == "[]");
    assert_eq!(bridge.get("/-/ready").status, 200);
}

#[test]
fn sigterm_stops_cleanly() {
    let bridge = Bridge::start(&seed());
    assert_eq!(bridge.get("/-/healthy").status, 200);
    let status = bridge.terminate();
    assert!(status.success(), "{status:?}");
}

/// Issue 10: a path that does not exist is 404 whatever the method, and a
/// request head over 64 KiB gets 431.
#[test]
fn unknown_paths_are_404_for_every_method_and_huge_heads_431() {
    let dir = Dir::new();
    let config = dir.write(
        "sdbridge.yml",
        "jobs:\n  - job_name: a\n    static_configs: [{targets: ['127.0.0.1:9100']}]\n",
    );
    let bridge = Bridge::start(&config);
    for method in ["GET", "POST", "DELETE"] {
        assert_eq!(bridge.request(method, "/nope", &[]).status, 404, "{method}");
        assert_eq!(
            bridge.request(method, "/http_sd/nope", &[]).status,
            404,
            "{method}"
        );
    }
    assert_eq!(bridge.request("POST", "/http_sd/a", &[]).status, 405);
    let big = "x".repeat(200 * 1024);
    assert_eq!(
        bridge
            .request("GET", "/http_sd/a", &[("X-Big", &big)])
            .status,
        431
    );
    let fine = "x".repeat(8 * 1024);
    assert_eq!(
        bridge
            .request("GET", "/http_sd/a", &[("X-Fine", &fine)])
            .status,
        200
    );
}

/// Issue 11: `/metrics` is the text format 0.0.4 by default, which
/// `promtool check metrics` (2.42 reads only that) accepts, and
/// OpenMetrics when `Accept` asks for it.
#[test]
fn metrics_are_text_004_for_promtool_and_openmetrics_on_request() {
    let promtool = require_binary!("promtool");
    let dir = Dir::new();
    dir.write("sd/a.json", r#"[{"targets": ["127.0.0.1:9100"]}]"#);
    let config = dir.write(
        "sdbridge.yml",
        "jobs:\n  - job_name: a\n    file_sd_configs: [{files: [sd/*.json]}]\n",
    );
    let bridge = Bridge::start(&config);
    bridge.get("/http_sd/a");
    let r = bridge.get("/metrics");
    assert_eq!(
        r.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let text = r.text();
    assert!(!text.contains("# EOF"));
    assert!(
        text.contains("# TYPE sdbridge_http_requests_total counter"),
        "{text}"
    );
    let mut check = std::process::Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    check
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = check.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics:\n{}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let om = bridge.request(
        "GET",
        "/metrics",
        &[(
            "Accept",
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
        )],
    );
    assert!(om
        .header("content-type")
        .unwrap_or("")
        .starts_with("application/openmetrics-text"));
    assert!(om.text().ends_with("# EOF\n"));
}

/// Issue 11: a real Prometheus scraping `/metrics` (it negotiates
/// OpenMetrics) ingests every metric family sdbridge exposes, with no
/// scrape error. The only target is the bridge itself, on loopback.
#[test]
fn prometheus_ingests_every_metric_family() {
    let binary = require_binary!("prometheus");
    let dir = Dir::new();
    dir.write(
        "sd/a.json",
        r#"[{"targets": ["127.0.0.1:9100"], "labels": {"team": "데이터"}}]"#,
    );
    dir.write("sd/bad.json", "[{");
    let config = dir.write(
        "sdbridge.yml",
        "jobs:\n  - job_name: a\n    file_sd_configs: [{files: [sd/*.json]}]\n",
    );
    let bridge = Bridge::start(&config);
    bridge.get("/http_sd/a");
    let scrape = dir.write(
        "prometheus.yml",
        &format!(
            "global: {{scrape_interval: 1s}}\nscrape_configs:\n  - job_name: sdbridge\n    static_configs: [{{targets: ['{}']}}]\n",
            bridge.addr
        ),
    );
    let prometheus = crate::e2e::Consumer::prometheus(&binary, &scrape, &dir.path("data"));
    let addr = format!("127.0.0.1:{}", prometheus.port)
        .parse()
        .expect("addr");
    let target = poll_until(Duration::from_secs(60), "a scrape of /metrics", || {
        let r = crate::util::request(addr, "GET", "/api/v1/targets?state=active", &[]);
        let target = r.json()["data"]["activeTargets"].get(0)?.clone();
        (target["health"] == "up").then_some(target)
    });
    assert_eq!(target["lastError"], "", "{target}");
    // Every family of the text exposition is in Prometheus.
    let families: std::collections::BTreeSet<String> = bridge
        .get("/metrics")
        .text()
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect();
    assert!(families.len() > 10, "{families:?}");
    let query = "/api/v1/query?query=group%20by%20(__name__)%20(%7Bjob%3D%22sdbridge%22%2C__name__%3D~%22sdbridge_.*%22%7D)";
    poll_until(Duration::from_secs(30), "every family ingested", || {
        let r = crate::util::request(addr, "GET", query, &[]);
        let names: std::collections::BTreeSet<String> = r.json()["data"]["result"]
            .as_array()?
            .iter()
            .filter_map(|s| s["metric"]["__name__"].as_str().map(str::to_string))
            .collect();
        // A counter family `x` is stored as `x_total`; a histogram as
        // `x_bucket`, `x_sum`, `x_count`.
        let missing: Vec<&String> = families
            .iter()
            .filter(|f| {
                !names.contains(*f)
                    && !names.contains(&format!("{f}_total"))
                    && !names.contains(&format!("{f}_count"))
            })
            .collect();
        missing.is_empty().then_some(())
    });
}
