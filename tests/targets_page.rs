//! `GET /targets/<job>`: bounded pages and a server-side filter over HTTP,
//! and the pages in a real headless Chromium: the job, a Korean label
//! value and an injected `<script>` in an error are shown as text.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::util::{poll_until, Bridge, Dir};

/// Rows of the targets table (the header row excluded).
fn rows(html: &str) -> usize {
    html.matches("<tr><td>").count()
}

#[test]
fn pages_are_bounded_and_the_filter_runs_on_the_server() {
    let dir = Dir::new();
    let groups: Vec<serde_json::Value> = (0..1000)
        .map(|i| {
            serde_json::json!({
                "targets": [format!("127.0.{}.{}:9104", i / 250, i % 250 + 1)],
                "labels": {"db_name": if i % 10 == 0 { "프라이머리" } else { "세컨더리" }, "n": i.to_string()},
            })
        })
        .collect();
    dir.write("sd/db.json", &serde_json::Value::Array(groups).to_string());
    let config = dir.write(
        "sdbridge.yml",
        "jobs:\n  - job_name: mysqld\n    file_sd_configs: [{files: ['sd/*.json']}]\n",
    );
    let bridge = Bridge::start(&config);
    let first = bridge.get("/targets/mysqld");
    assert_eq!(first.status, 200);
    assert_eq!(
        first.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let html = first.text();
    assert_eq!(rows(&html), 100, "a page carries at most 100 targets");
    assert!(html.contains("1000 of 1000 targets"), "{html}");
    assert!(html.contains("page 1 of 10"));
    assert!(html.contains("127.0.0.1:9104"));
    assert!(html.contains("file_sd#"), "the source is named");
    let last = bridge.get("/targets/mysqld?page=10").text();
    assert_eq!(rows(&last), 100);
    assert!(last.contains("127.0.3.250:9104"));
    assert_eq!(rows(&bridge.get("/targets/mysqld?page=11").text()), 0);
    // Korean, URL-encoded as a browser's form sends it.
    let filtered = bridge
        .get("/targets/mysqld?q=%ED%94%84%EB%9D%BC%EC%9D%B4%EB%A8%B8%EB%A6%AC")
        .text();
    assert_eq!(rows(&filtered), 100);
    assert!(filtered.contains("100 of 1000 targets match"), "{filtered}");
    assert!(!filtered.contains("세컨더리"));
    let one = bridge.get("/targets/mysqld?q=n%3D%22999%22").text();
    assert_eq!(rows(&one), 1, "{one}");
    assert_eq!(bridge.get("/targets/nope").status, 404);
    // The status page links to it.
    assert!(bridge.get("/").text().contains("href=\"/targets/mysqld\""));
}

const INJECTED: &str = "<script>document.title='pwned'</script>";

/// A bridge whose file_sd file turned invalid with `INJECTED` in its
/// error, beside a static job with Korean labels.
fn injected(dir: &Dir) -> Bridge {
    dir.write(
        "sd/db.json",
        r#"[{"targets": ["127.0.0.1:9104"], "labels": {"service_name": "My서비스"}}]"#,
    );
    let config = dir.write(
        "sdbridge.yml",
        "jobs:\n  - job_name: mysqld\n    static_configs: [{targets: ['127.0.0.2:9104'], labels: {db_name: 세컨더리A}}]\n    file_sd_configs: [{files: ['sd/*.json']}]\n",
    );
    let bridge = Bridge::start(&config);
    dir.replace(
        "sd/db.json",
        &format!(r#"[{{"targets": ["127.0.0.1:9104"], "labels": {{}}, "{INJECTED}": 1}}]"#),
    );
    poll_until(Duration::from_secs(10), "the file's error", || {
        bridge
            .get("/targets/mysqld")
            .text()
            .contains("&lt;script&gt;")
            .then_some(())
    });
    bridge
}

#[test]
fn values_are_escaped_in_the_html() {
    let dir = Dir::new();
    let bridge = injected(&dir);
    for path in ["/", "/targets/mysqld"] {
        let html = bridge.get(path).text();
        assert!(
            !html.contains("<script"),
            "{path}: unescaped script:\n{html}"
        );
        assert!(
            html.contains("&lt;script&gt;document.title="),
            "{path}:\n{html}"
        );
    }
    let page = bridge.get("/targets/mysqld").text();
    assert!(page.contains("My서비스"), "the last good labels stay shown");
    assert!(page.contains("error (serving last good)"));
}

/// Chromium as root on these machines (see the machine notes).
fn chromium(binary: &Path, profile: &Path, args: &[String]) -> std::process::Output {
    Command::new(binary)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .output()
        .expect("run chromium")
}

/// Screenshots go where a person can look at them after the run.
fn screenshot_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
    std::fs::create_dir_all(&dir).expect("target/screenshots");
    dir
}

#[test]
fn chromium_shows_the_job_korean_labels_and_the_injected_error_as_text() {
    let binary = require_binary!("chromium");
    let dir = Dir::new();
    let bridge = injected(&dir);
    for (path, shot) in [("/", "status.png"), ("/targets/mysqld", "targets.png")] {
        let url = format!("http://{}{path}", bridge.addr);
        let dom = chromium(
            &binary,
            &dir.path(&format!("profile-dom-{shot}")),
            &["--dump-dom".into(), url.clone()],
        );
        let dom = String::from_utf8_lossy(&dom.stdout);
        // The page's own title, not one a script set.
        assert!(dom.contains("<title>sdbridge"), "{path}: {dom}");
        assert!(
            !dom.contains("pwned</title>"),
            "{path}: the injected script ran"
        );
        assert!(dom.contains("mysqld"), "{path}: {dom}");
        // The error text is text: the DOM holds no script element.
        assert!(!dom.contains("<script"), "{path}: {dom}");
        assert!(
            dom.contains("&lt;script&gt;document.title="),
            "{path}: {dom}"
        );
        if path != "/" {
            assert!(
                dom.contains("My서비스") && dom.contains("세컨더리A"),
                "{path}: {dom}"
            );
        }
        let png = screenshot_dir().join(shot);
        let _ = std::fs::remove_file(&png);
        let out = chromium(
            &binary,
            &dir.path(&format!("profile-shot-{shot}")),
            &[
                "--window-size=1280,800".into(),
                format!("--screenshot={}", png.display()),
                url,
            ],
        );
        let size = std::fs::metadata(&png).map(|m| m.len()).unwrap_or(0);
        assert!(
            size > 10_000,
            "{path}: no screenshot ({size} bytes): {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Regression: the targets page read the whole body on an async worker,
/// so clients asking for it stalled every answer, probes included.
#[test]
fn probes_answer_while_clients_read_the_targets_page() {
    let (_dir, bridge) = crate::util::big_fleet();
    let bridge = std::sync::Arc::new(bridge);
    // What one page costs here (a debug build is slow).
    let started = std::time::Instant::now();
    assert_eq!(bridge.get("/targets/big?q=127.3.").status, 200);
    let page = started.elapsed();
    let slowest =
        crate::util::slowest_probe_while(&bridge, page, |c, _| format!("/targets/big?q=127.{c}."));
    assert!(
        slowest < page / 4,
        "a probe took {slowest:?} while clients read the targets page (one page: {page:?})"
    );
}
