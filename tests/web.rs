//! The `web:` block (CONTRACT section 3): credentials on every path but
//! the probes, token and certificate rotation, mutual TLS, reloads, and
//! real Prometheus and VictoriaMetrics discovering over HTTPS with
//! credentials.

use std::time::Duration;

use base64::Engine;

use crate::e2e::{Consumer, DROP_ALL};
use crate::tls_util::{Pki, TlsClient};
use crate::util::{poll_until, Bridge, Dir, Response};

/// Cost 4, the lowest, so the tests spend no time hashing.
fn hash(password: &str) -> String {
    bcrypt::hash(password, 4).expect("bcrypt")
}

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

const JOB: &str = "  - job_name: app\n    static_configs: [{targets: ['127.0.0.1:1', '127.0.0.1:2'], labels: {team: 데이터}}]\n";

/// Starts a bridge with TLS and waits until `/-/ready` answers over it.
fn start_tls(config: &std::path::Path, client: &TlsClient) -> Bridge {
    let bridge = Bridge::start_unready(config);
    poll_until(Duration::from_secs(10), "/-/ready over TLS", || {
        let r = client.request(bridge.addr, "GET", "/-/ready", &[]).ok()?;
        (r.status == 200).then_some(())
    });
    bridge
}

fn assert_refused(r: &Response, what: &str) {
    assert_eq!(r.status, 401, "{what}: {}", r.text());
    let challenge = r.header("www-authenticate").unwrap_or("");
    assert!(
        challenge.starts_with("Basic") || challenge.starts_with("Bearer"),
        "{what}: {challenge:?}"
    );
    assert!(!r.text().contains("127.0.0.1"), "{what} leaked targets");
}

#[test]
fn without_good_credentials_every_path_but_the_probes_answers_401() {
    let dir = Dir::new();
    let tokens = dir.write("tokens", "tok-1\n");
    let config = dir.write(
        "sdbridge.yml",
        &format!(
            "web:\n  basic_auth_users: {{alice: '{}'}}\n  bearer_tokens_file: {}\njobs:\n{JOB}",
            hash("wonderland"),
            tokens.display()
        ),
    );
    let bridge = Bridge::start(&config);
    let good = basic("alice", "wonderland");
    let bad = [
        vec![],
        vec![("Authorization", basic("alice", "wonderlan"))],
        vec![("Authorization", basic("bob", "wonderland"))],
        vec![("Authorization", "Bearer tok-2".to_string())],
        vec![("Authorization", "Bearer wonderland".to_string())],
        vec![("Authorization", "wonderland".to_string())],
        vec![("Authorization", "tok-2".to_string())],
        vec![("Authorization", good.replace("Basic", "Digest"))],
    ];
    for path in [
        "/",
        "/metrics",
        "/http_sd",
        "/http_sd/app",
        "/http_sd/nope",
        "/nope",
        "/-/reload",
    ] {
        for method in ["GET", "HEAD", "POST", "DELETE"] {
            for headers in &bad {
                let headers: Vec<(&str, &str)> =
                    headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
                let r = bridge.request(method, path, &headers);
                assert_refused(&r, &format!("{method} {path} {headers:?}"));
            }
        }
    }
    for path in ["/-/healthy", "/-/ready"] {
        assert_eq!(bridge.get(path).status, 200, "{path}");
    }
    let r = bridge.request("GET", "/http_sd/app", &[("Authorization", &good)]);
    assert_eq!(r.status, 200);
    assert!(r.text().contains("데이터"), "{}", r.text());
    let r = bridge.request("GET", "/http_sd/app", &[("Authorization", "Bearer tok-1")]);
    assert_eq!(r.status, 200);
    // A 401 tells an unknown path from a known one by nothing.
    let r = bridge.request("GET", "/nope", &[("Authorization", "Bearer tok-1")]);
    assert_eq!(r.status, 404);
    let metrics = bridge
        .request("GET", "/metrics", &[("Authorization", &good)])
        .text();
    let refused = crate::util::metric(
        &metrics,
        "sdbridge_http_requests_total",
        &["path=\"/http_sd/app\"", "code=\"401\""],
    );
    assert_eq!(refused, Some((4 * bad.len()) as f64), "{metrics}");
    assert!(
        !bridge.log().contains("wonderland"),
        "the password reached the log"
    );
}

#[test]
fn a_rotated_token_file_is_read_without_a_reload() {
    let dir = Dir::new();
    let tokens = dir.write("tokens", "tok-1\n");
    let config = dir.write(
        "sdbridge.yml",
        &format!(
            "web:\n  bearer_tokens_file: {}\njobs:\n{JOB}",
            tokens.display()
        ),
    );
    let bridge = Bridge::start(&config);
    let status = |token: &str| {
        bridge
            .request(
                "GET",
                "/http_sd/app",
                &[("Authorization", &format!("Bearer {token}"))],
            )
            .status
    };
    assert_eq!(status("tok-1"), 200);
    assert_eq!(status("tok-2"), 401);
    // Rename-over, as a secret manager writes it.
    dir.replace("tokens", "# rotated\ntok-2\n");
    poll_until(Duration::from_secs(10), "the new token", || {
        (status("tok-2") == 200).then_some(())
    });
    assert_eq!(status("tok-1"), 401);
    // A file that vanishes keeps the last tokens.
    dir.remove("tokens");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(status("tok-2"), 200);
}

#[test]
fn a_reload_applies_new_users_and_a_bad_web_block_keeps_the_old_one() {
    let dir = Dir::new();
    let write = |password: &str| {
        dir.write(
            "sdbridge.yml",
            &format!(
                "web:\n  basic_auth_users: {{alice: '{}'}}\njobs:\n{JOB}",
                hash(password)
            ),
        )
    };
    let config = write("one");
    let bridge = Bridge::start(&config);
    let status = |password: &str| {
        bridge
            .request(
                "GET",
                "/http_sd/app",
                &[("Authorization", &basic("alice", password))],
            )
            .status
    };
    assert_eq!(status("one"), 200);
    write("two");
    let r = bridge.request(
        "POST",
        "/-/reload",
        &[("Authorization", &basic("alice", "one"))],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(status("two"), 200);
    assert_eq!(status("one"), 401);
    // A token file that does not exist fails the reload; alice still works.
    dir.write(
        "sdbridge.yml",
        &format!("web:\n  bearer_tokens_file: /nonexistent/tokens\njobs:\n{JOB}"),
    );
    let r = bridge.request(
        "POST",
        "/-/reload",
        &[("Authorization", &basic("alice", "two"))],
    );
    assert_eq!(r.status, 500, "{}", r.text());
    assert!(r.text().contains("/nonexistent/tokens"), "{}", r.text());
    assert_eq!(status("two"), 200);
}

/// Writes a CA-signed server certificate as `server.pem`/`server.key`.
fn write_server_cert(dir: &Dir, pki: &Pki, cn: &str) -> Vec<u8> {
    let leaf = pki.server(cn);
    dir.write("server.key.new", &leaf.key);
    dir.write("server.pem.new", &leaf.cert);
    // Key first, then certificate: in between, the pair does not match,
    // and the old one must stay in use.
    std::fs::rename(dir.path("server.key.new"), dir.path("server.key")).expect("key");
    std::fs::rename(dir.path("server.pem.new"), dir.path("server.pem")).expect("cert");
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::from_pem_slice(leaf.cert.as_bytes())
        .expect("pem")
        .to_vec()
}

#[test]
fn https_serves_and_a_renewed_certificate_is_picked_up_without_a_restart() {
    let dir = Dir::new();
    let pki = Pki::new("server");
    let first = write_server_cert(&dir, &pki, "first");
    let config = dir.write(
        "sdbridge.yml",
        &format!("web:\n  tls_server_config: {{cert_file: server.pem, key_file: server.key}}\njobs:\n{JOB}"),
    );
    let client = TlsClient::trusting(&pki.ca);
    let bridge = start_tls(&config, &client);
    let (peer, r) = client
        .request_with_peer(bridge.addr, "GET", "/http_sd/app", &[])
        .expect("https");
    assert_eq!(r.status, 200);
    assert!(r.text().contains("127.0.0.1:2"));
    assert_eq!(peer, first);
    // Plain HTTP on a TLS port gets no answer that carries targets.
    let plain = std::net::TcpStream::connect(bridge.addr).and_then(|mut s| {
        use std::io::{Read, Write};
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(b"GET /http_sd/app HTTP/1.1\r\nHost: x\r\n\r\n")?;
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
        Ok(buf)
    });
    assert!(!String::from_utf8_lossy(&plain.unwrap_or_default()).contains("127.0.0.1:2"));

    let second = write_server_cert(&dir, &pki, "second");
    poll_until(Duration::from_secs(10), "the renewed certificate", || {
        let (peer, _) = client
            .request_with_peer(bridge.addr, "GET", "/-/healthy", &[])
            .ok()?;
        (peer == second).then_some(())
    });
    // A certificate file that turns to garbage keeps the last good pair.
    dir.replace("server.pem", "not a certificate");
    std::thread::sleep(Duration::from_millis(1500));
    let (peer, r) = client
        .request_with_peer(bridge.addr, "GET", "/http_sd/app", &[])
        .expect("https after a bad certificate");
    assert_eq!((peer == second, r.status), (true, 200));
    assert!(bridge.log().contains("does not load"), "{}", bridge.log());
}

#[test]
fn mutual_tls_requires_a_client_certificate_from_the_client_ca() {
    let dir = Dir::new();
    let server_pki = Pki::new("server");
    write_server_cert(&dir, &server_pki, "server");
    let clients = Pki::new("clients");
    let strangers = Pki::new("strangers");
    dir.write("clients.pem", &clients.ca);
    let config = dir.write(
        "sdbridge.yml",
        &format!(
            "web:\n  tls_server_config:\n    cert_file: server.pem\n    key_file: server.key\n    client_ca_file: clients.pem\n    client_auth_type: RequireAndVerifyClientCert\njobs:\n{JOB}"
        ),
    );
    let with_identity = |pki: &Pki| {
        let leaf = pki.client("scraper");
        TlsClient {
            ca: server_pki.ca.clone(),
            identity: Some((leaf.cert, leaf.key)),
        }
    };
    let member = with_identity(&clients);
    let bridge = start_tls(&config, &member);
    let r = member
        .request(bridge.addr, "GET", "/http_sd/app", &[])
        .expect("member");
    assert_eq!(r.status, 200);
    let anonymous = TlsClient::trusting(&server_pki.ca);
    let refused = anonymous.request(bridge.addr, "GET", "/http_sd/app", &[]);
    assert!(
        refused.is_err(),
        "no client certificate: {:?}",
        refused.map(|r| r.status)
    );
    let refused = with_identity(&strangers).request(bridge.addr, "GET", "/http_sd/app", &[]);
    assert!(
        refused.is_err(),
        "a stranger's certificate: {:?}",
        refused.map(|r| r.status)
    );
}

#[test]
fn bad_web_settings_stop_the_start_naming_what_is_wrong() {
    let dir = Dir::new();
    let pki = Pki::new("server");
    write_server_cert(&dir, &pki, "server");
    let other = pki.server("other");
    dir.write("other.key", &other.key);
    for (web, want) in [
        ("tls_server_config: {cert_file: missing.pem, key_file: server.key}", "missing.pem"),
        ("tls_server_config: {cert_file: server.pem, key_file: other.key}", "key pair"),
        ("tls_server_config: {cert_file: server.pem}", "missing key_file"),
        (
            "tls_server_config: {cert_file: server.pem, key_file: server.key, client_ca_file: server.pem}",
            "without a Client Auth Policy",
        ),
        ("basic_auth_users: {alice: plain}", "not a bcrypt hash"),
    ] {
        let config = dir.write("sdbridge.yml", &format!("web:\n  {web}\njobs:\n{JOB}"));
        let out = crate::util::run_cli(Some(dir.tmp.path()), ["check".as_ref(), config.as_os_str()]);
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(!out.status.success(), "{web}: check passed");
        assert!(text.contains(want), "{web}: {text}");
        assert!(text.contains("sdbridge.yml"), "{web}: {text}");
    }
}

/// A scrape job of a consumer that discovers `app` over HTTPS.
fn https_job(name: &str, bridge: &Bridge, ca: &std::path::Path, auth: &str) -> String {
    format!(
        "  - job_name: {name}\n    http_sd_configs:\n      - url: https://localhost:{port}/http_sd/app\n        tls_config: {{ca_file: {ca}}}\n{auth}{DROP_ALL}",
        port = bridge.addr.port(),
        ca = ca.display(),
    )
}

fn consumers_discover_over_https(
    start: impl Fn(&std::path::Path, &std::path::Path) -> Consumer,
    refresh: &str,
) {
    let dir = Dir::new();
    let pki = Pki::new("server");
    write_server_cert(&dir, &pki, "server");
    let ca = dir.write("ca.pem", &pki.ca);
    let tokens = dir.write("tokens", "tok-for-consumers\n");
    let config = dir.write(
        "sdbridge.yml",
        &format!(
            "web:\n  tls_server_config: {{cert_file: server.pem, key_file: server.key}}\n  basic_auth_users: {{prom: '{}'}}\n  bearer_tokens_file: {}\njobs:\n{JOB}",
            hash("scrape-secret"),
            tokens.display()
        ),
    );
    let bridge = start_tls(&config, &TlsClient::trusting(&pki.ca));
    let consumer_config = dir.write(
        "consumer.yml",
        &format!(
            "global: {{scrape_interval: 1h}}\nscrape_configs:\n{}{}{}",
            https_job(
                "with_basic_auth",
                &bridge,
                &ca,
                &format!(
                    "        basic_auth: {{username: prom, password: scrape-secret}}\n{refresh}"
                )
            ),
            https_job(
                "with_token",
                &bridge,
                &ca,
                &format!("        authorization: {{credentials: tok-for-consumers}}\n{refresh}")
            ),
            https_job("without_credentials", &bridge, &ca, refresh),
        ),
    );
    let consumer = start(&consumer_config, &dir.path("data"));
    let by_job = poll_until(Duration::from_secs(60), "targets over https", || {
        let by_job = consumer.dropped();
        (by_job.get("with_basic_auth").map(Vec::len) == Some(2)
            && by_job.get("with_token").map(Vec::len) == Some(2))
        .then_some(by_job)
    });
    for job in ["with_basic_auth", "with_token"] {
        let mut addresses: Vec<&str> = by_job[job]
            .iter()
            .map(|l| l["__address__"].as_str())
            .collect();
        addresses.sort();
        assert_eq!(
            addresses,
            ["127.0.0.1:1", "127.0.0.1:2"],
            "{}: {job}",
            consumer.name
        );
        assert!(
            by_job[job].iter().all(|l| l["team"] == "데이터"),
            "{job}: {:?}",
            by_job[job]
        );
    }
    assert!(
        !by_job.contains_key("without_credentials"),
        "{}: discovered without credentials",
        consumer.name
    );
}

#[test]
fn prometheus_discovers_over_https_with_basic_auth_and_a_bearer_token() {
    let binary = require_binary!("prometheus");
    consumers_discover_over_https(
        |config, data| Consumer::prometheus(&binary, config, data),
        "        refresh_interval: 1s\n",
    );
}

#[test]
fn victoria_metrics_discovers_over_https_with_basic_auth_and_a_bearer_token() {
    let binary = require_binary!("victoria-metrics");
    consumers_discover_over_https(
        |config, data| Consumer::victoria_metrics(&binary, config, data),
        "",
    );
}

#[test]
fn a_flood_of_wrong_passwords_does_not_stall_other_answers() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let dir = Dir::new();
    let config = dir.write(
        "sdbridge.yml",
        &format!(
            "web:\n  basic_auth_users: {{alice: '{}'}}\njobs:\n{JOB}",
            bcrypt::hash("right", 10).expect("bcrypt")
        ),
    );
    let bridge = Arc::new(Bridge::start(&config));
    let good = basic("alice", "right");
    // The first check pays bcrypt; later ones hit the cache.
    let r = bridge.request("GET", "/http_sd/app", &[("Authorization", &good)]);
    assert_eq!(r.status, 200);
    let pid = bridge.pid();
    let threads = move || -> usize {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .expect("/proc status")
            .lines()
            .find_map(|l| l.strip_prefix("Threads:"))
            .and_then(|n| n.trim().parse().ok())
            .expect("Threads: line")
    };
    let before = threads();
    let sampling = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let sampling = sampling.clone();
        std::thread::spawn(move || {
            let mut most = 0;
            while sampling.load(Ordering::SeqCst) {
                most = most.max(threads());
                std::thread::sleep(Duration::from_millis(2));
            }
            most
        })
    };
    // Clients that send a wrong password and hang up at once, again and
    // again: each must wait for a bcrypt slot, not start a check of its own
    // while the checks of those who left still run.
    const CLIENTS: usize = 16;
    const ROUNDS: usize = 12;
    const FLOOD: usize = CLIENTS * ROUNDS;
    let hung_up = Arc::new(AtomicUsize::new(0));
    let flood: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (addr, hung_up) = (bridge.addr, hung_up.clone());
            std::thread::spawn(move || {
                use std::io::Write;
                for round in 0..ROUNDS {
                    let wrong = basic("alice", &format!("wrong-{c}-{round}"));
                    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
                    let request = format!(
                        "GET /http_sd/app HTTP/1.1\r\nHost: x\r\nAuthorization: {wrong}\r\n\r\n"
                    );
                    stream.write_all(request.as_bytes()).expect("write");
                    std::thread::sleep(Duration::from_millis(5));
                    drop(stream);
                    hung_up.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();
    for handle in flood {
        handle.join().expect("flood thread");
    }
    assert_eq!(hung_up.load(Ordering::SeqCst), FLOOD);
    // Probes and cached credentials answer while the checks drain.
    assert_eq!(bridge.get("/-/healthy").status, 200);
    let r = bridge.request("GET", "/http_sd/app", &[("Authorization", &good)]);
    assert_eq!(r.status, 200);
    std::thread::sleep(Duration::from_millis(500));
    sampling.store(false, Ordering::SeqCst);
    let most = sampler.join().expect("sampler");
    let slots = std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1));
    assert!(
        most <= before + slots + 4,
        "{FLOOD} requests that hung up grew the bridge from {before} to {most} threads \
         (bcrypt slots: {slots})"
    );
}
