//! Config reload (CONTRACT section 3): SIGHUP and `POST /-/reload`.

use std::process::Command;
use std::time::Duration;

use crate::fake_consul::FakeConsul;
use crate::util::{poll_until, Bridge, Dir};

const ONE_JOB: &str =
    "jobs:\n  - job_name: a\n    static_configs: [{targets: ['127.0.0.1:9100']}]\n";
const TWO_JOBS: &str = "jobs:\n  - job_name: a\n    static_configs: [{targets: ['127.0.0.1:9101']}]\n  - job_name: b\n    file_sd_configs: [{files: [sd/*.yml]}]\n";

#[test]
fn sighup_applies_a_valid_config() {
    let dir = Dir::new();
    dir.write("sd/b.yml", "- targets: ['127.0.0.2:9100']\n");
    let config = dir.write("sdbridge.yml", ONE_JOB);
    let bridge = Bridge::start(&config);
    assert_eq!(bridge.get("/http_sd/b").status, 404);
    dir.replace("sdbridge.yml", TWO_JOBS);
    let status = Command::new("kill")
        .args(["-HUP", &bridge.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    bridge.wait_body("/http_sd/b", "new job served", |b| {
        b.contains("127.0.0.2:9100")
    });
    bridge.wait_body("/http_sd/a", "changed job served", |b| {
        b.contains("127.0.0.1:9101")
    });
    assert_eq!(bridge.get("/-/ready").status, 200);
}

#[test]
fn post_reload_rejects_an_invalid_config_and_keeps_serving() {
    let dir = Dir::new();
    let config = dir.write("sdbridge.yml", ONE_JOB);
    let bridge = Bridge::start(&config);
    let before = bridge.get("/http_sd/a");
    dir.replace(
        "sdbridge.yml",
        "jobs:\n  - job_name: a\n    static_configz: []\n",
    );
    let r = bridge.request("POST", "/-/reload", &[]);
    assert_eq!(r.status, 500);
    let message = r.json()["error"].as_str().unwrap().to_string();
    assert!(
        message.contains(&format!(
            "{}:3:5: jobs[0]: unknown field `static_configz`",
            config.display()
        )),
        "{message}"
    );
    let after = bridge.get("/http_sd/a");
    assert_eq!((after.status, &after.body), (200, &before.body));
    // Logged before the answer was sent, but read from the pipe by a
    // thread of the test's: wait for it (it once lost the race).
    poll_until(Duration::from_secs(10), "the failed reload logged", || {
        bridge.log().contains("reload failed").then_some(())
    });

    dir.replace("sdbridge.yml", TWO_JOBS);
    dir.write("sd/b.yml", "- targets: ['127.0.0.3:9100']\n");
    let r = bridge.request("POST", "/-/reload", &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    bridge.wait_body("/http_sd/b", "job from reloaded config", |b| {
        b.contains("127.0.0.3:9100")
    });
    assert_eq!(bridge.request("GET", "/-/reload", &[]).status, 405);
}

/// Issue 8: a reload keeps every source whose config did not change: no
/// file re-read, no new Consul request, the same ETag and Last-Modified.
/// A job whose config changed restarts only its own sources.
#[test]
fn a_reload_keeps_unchanged_sources_running() {
    let dir = Dir::new();
    dir.write("sd/a.json", r#"[{"targets": ["127.0.0.1:9100"]}]"#);
    dir.write("sd/b.json", r#"[{"targets": ["127.0.0.2:9100"]}]"#);
    let consul = FakeConsul::start();
    let text = |b_pattern: &str| {
        format!(
            "jobs:\n  - job_name: files\n    file_sd_configs: [{{files: [sd/a.json]}}]\n  - job_name: other\n    file_sd_configs: [{{files: [{b_pattern}]}}]\n  - job_name: consul\n    consul_sd_configs: [{{server: '{}'}}]\n",
            consul.addr()
        )
    };
    let config = dir.write("sdbridge.yml", &text("sd/b.json"));
    let bridge = Bridge::start(&config);
    let reads = |job: &str| {
        bridge
            .metric("sdbridge_file_sd_reads_total", &[&format!("job=\"{job}\"")])
            .unwrap_or(0.0)
    };
    let (files_reads, other_reads) = (reads("files"), reads("other"));
    let before = bridge.get("/http_sd");
    // Let the blocking watches park, then count what Consul sees.
    poll_until(Duration::from_secs(20), "watches parked", || {
        (consul.stats().blocking_in_flight >= 2).then_some(())
    });
    consul.reset_stats();

    let r = bridge.request("POST", "/-/reload", &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    poll_until(Duration::from_secs(10), "reload logged", || {
        bridge.log().contains("\"kept\":3").then_some(())
    });
    let after = bridge.get("/http_sd");
    assert_eq!(after.body, before.body);
    assert_eq!(after.header("etag"), before.header("etag"));
    assert_eq!(
        after.header("last-modified"),
        before.header("last-modified")
    );
    assert_eq!(
        reads("files"),
        files_reads,
        "file re-read by a no-op reload"
    );
    assert_eq!(reads("other"), other_reads);
    assert_eq!(consul.stats().requests, 0, "Consul asked again");

    // Only job `other` changes: only its source restarts.
    dir.replace("sdbridge.yml", &text("sd/b*.json"));
    let r = bridge.request("POST", "/-/reload", &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    poll_until(Duration::from_secs(10), "second reload logged", || {
        bridge.log().contains("\"started\":1").then_some(())
    });
    bridge.wait_body("/http_sd/other", "changed job served", |b| {
        b.contains("127.0.0.2:9100")
    });
    assert_eq!(reads("files"), files_reads, "an unchanged job restarted");
    assert_eq!(
        consul.stats().requests,
        0,
        "an unchanged Consul source restarted"
    );
    // The replaced source's series are gone: one source left for `other`
    // once the new one has reported (its job was served from the held body
    // meanwhile).
    poll_until(Duration::from_secs(10), "one source_up for `other`", || {
        let text = bridge.get("/metrics").text();
        let other_up: Vec<String> = text
            .lines()
            .filter(|l| l.starts_with("sdbridge_source_up{job=\"other\""))
            .map(str::to_string)
            .collect();
        (other_up.len() == 1 && other_up[0].ends_with(" 1")).then_some(())
    });
    // Still nothing asked of Consul, and the other job never re-read.
    assert_eq!(reads("files"), files_reads);
    assert_eq!(consul.stats().requests, 0);
}

/// Regression: after one change of `listen`, every later reload warned
/// again (it compared with the config the process started with).
#[test]
fn a_listen_change_is_warned_about_once() {
    let dir = Dir::new();
    let at = |port: u16| format!("listen: 127.0.0.1:{port}\n{ONE_JOB}");
    let config = dir.write("sdbridge.yml", &at(crate::util::free_port()));
    let bridge = Bridge::start_at_config_listen(&config);
    let warnings = |b: &Bridge| {
        b.log()
            .matches("the listen address changes only on restart")
            .count()
    };
    let reloads = |b: &Bridge| b.log().matches("configuration reloaded").count();
    let hup = |b: &Bridge, n: usize| {
        Command::new("kill")
            .args(["-HUP", &b.pid().to_string()])
            .status()
            .expect("kill");
        poll_until(Duration::from_secs(10), "the reload", || {
            (reloads(b) >= n).then_some(())
        });
    };
    dir.replace("sdbridge.yml", &at(crate::util::free_port()));
    hup(&bridge, 1);
    assert_eq!(warnings(&bridge), 1, "{}", bridge.log());
    // The same changed config again, twice: nothing new to say.
    hup(&bridge, 2);
    hup(&bridge, 3);
    assert_eq!(warnings(&bridge), 1, "{}", bridge.log());
    // Still serving where it started.
    assert_eq!(bridge.get("/-/healthy").status, 200);
}
