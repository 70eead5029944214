//! `state_dir` (issue 10): the real binary persists each job's last good
//! body and, restarted while its sources are unreachable, serves it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::fake_consul::{FakeConsul, Node, Options, ServiceInstance};
use crate::util::{bin, free_port, poll_until, run_cli, Bridge, Dir};

/// A config with `state_dir: state` (relative: next to the config) and one
/// Consul job per `(name, extra lines of its consul_sd_configs entry)`, all
/// against `127.0.0.1:port`.
fn config(dir: &Dir, port: u16, jobs: &[(&str, &[&str])]) -> PathBuf {
    let mut yaml = String::from("state_dir: state\njobs:\n");
    for (name, extra) in jobs {
        yaml.push_str(&format!(
            "  - job_name: {name}\n    consul_sd_configs:\n      - server: \"127.0.0.1:{port}\"\n        services: [{name}]\n"
        ));
        for line in *extra {
            yaml.push_str(&format!("        {line}\n"));
        }
    }
    dir.write("sdbridge.yml", &yaml)
}

/// A fake Consul (on `port`, 0 for any) with one passing instance
/// `<service>-<n>` of each service.
fn consul(port: u16, services: &[&str], n: u16) -> FakeConsul {
    let c = FakeConsul::start_on(port, Options::default());
    c.set_node(Node::new("n1", "127.0.0.1"));
    for service in services {
        c.register(ServiceInstance::new("n1", service, 9100 + n).id(&format!("{service}-{n}")));
    }
    c
}

fn state_file(dir: &Dir, job: &str) -> PathBuf {
    dir.path(&format!("state/{job}.state"))
}

/// The body a state file holds (after its header), if it is a regular
/// file that can be read (never opening a FIFO, which would block).
fn persisted_body(path: &Path) -> Option<Vec<u8>> {
    if !std::fs::symlink_metadata(path).ok()?.is_file() {
        return None;
    }
    let bytes = std::fs::read(path).ok()?;
    let at = bytes.windows(2).position(|w| w == b"\n\n")?;
    Some(bytes[at + 2..].to_vec())
}

/// Waits until `job`'s state file holds `body`.
fn wait_persisted(dir: &Dir, job: &str, body: &[u8]) {
    poll_until(Duration::from_secs(20), "the body persisted", || {
        (persisted_body(&state_file(dir, job)).as_deref() == Some(body)).then_some(())
    });
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

#[test]
fn a_restart_during_a_consul_outage_serves_the_last_good_targets() {
    let dir = Dir::new();
    let c = consul(0, &["web"], 1);
    let port = c.addr().port();
    let path = config(&dir, port, &[("web", &[])]);
    let bridge = Bridge::start(&path);
    let before = bridge.get("/http_sd/web");
    assert_eq!(before.status, 200);
    assert!(before.text().contains("web-1"), "{}", before.text());
    wait_persisted(&dir, "web", &before.body);
    assert_eq!(
        bridge.metric("sdbridge_job_from_state", &["job=\"web\""]),
        Some(0.0)
    );
    assert!(bridge.terminate().success());

    // The outage: Consul is gone, and sdbridge restarts.
    drop(c);
    // So that a data age counted from the restart would be visibly wrong.
    std::thread::sleep(Duration::from_secs(2));
    let restarted = Instant::now();
    let bridge = Bridge::start(&path);
    let after = bridge.get("/http_sd/web");
    assert_eq!(after.status, 200, "{}", after.text());
    assert_eq!(after.body, before.body);
    assert_eq!(after.header("etag"), before.header("etag"));
    assert_eq!(
        after.header("last-modified"),
        before.header("last-modified")
    );
    assert_eq!(bridge.get("/-/ready").status, 200);
    assert_eq!(
        bridge.get("/http_sd").body,
        before.body,
        "one job: /http_sd is it"
    );
    let metrics = bridge.get("/metrics").text();
    let m = |name: &str| crate::util::metric(&metrics, name, &["job=\"web\""]);
    assert_eq!(m("sdbridge_job_from_state"), Some(1.0));
    assert_eq!(m("sdbridge_job_ready"), Some(1.0));
    let age = m("sdbridge_source_data_age_seconds").expect("data age of the restored body");
    let built = httpdate::parse_http_date(before.header("last-modified").unwrap()).unwrap();
    let built = built.duration_since(UNIX_EPOCH).unwrap().as_secs_f64();
    assert!(
        age >= unix_now() - built - 1.0,
        "age {age} counts from the build"
    );
    assert!(
        age > restarted.elapsed().as_secs_f64() + 1.0,
        "age {age} does not count from the restart"
    );
    let page = bridge.get("/").text();
    assert!(page.contains("served from state_dir"), "{page}");
    assert_eq!(
        m("sdbridge_state_writes_total"),
        None,
        "nothing new to write"
    );

    // Consul is back, with other targets: they replace the restored body.
    let _c = consul(port, &["web"], 2);
    let live = bridge.wait_body("/http_sd/web", "the live body", |b| b.contains("web-2"));
    assert!(!live.contains("web-1"));
    assert_eq!(
        bridge.metric("sdbridge_job_from_state", &["job=\"web\""]),
        Some(0.0)
    );
    assert!(!bridge.get("/").text().contains("served from state_dir"));
    wait_persisted(&dir, "web", live.as_bytes());
}

#[test]
fn a_corrupt_state_file_is_ignored_and_the_job_waits_for_its_sources() {
    let dir = Dir::new();
    let port = free_port();
    let path = config(&dir, port, &[("web", &[])]);
    // Cut short in the header, as a crash without atomic writes would.
    dir.write("state/web.state", "sdbridge state v1\njob \"web\"\nkey 0");
    dir.write("state/notes.txt", "not sdbridge's");
    let bridge = Bridge::start_unready(&path);
    poll_until(Duration::from_secs(10), "the warning", || {
        let log = bridge.log();
        (log.contains("ignoring the state file") && log.contains("not an sdbridge state file"))
            .then_some(())
    });
    let r = bridge.get("/http_sd/web");
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(bridge.get("/-/ready").status, 503);
    assert_eq!(
        bridge.metric("sdbridge_job_from_state", &["job=\"web\""]),
        Some(0.0)
    );

    let _c = consul(port, &["web"], 1);
    let live = bridge.wait_body("/http_sd/web", "synced", |b| b.contains("web-1"));
    assert_eq!(bridge.get("/-/ready").status, 200);
    wait_persisted(&dir, "web", live.as_bytes());
    assert!(
        dir.path("state/notes.txt").exists(),
        "foreign files are left alone"
    );
}

#[test]
fn a_changed_job_config_does_not_serve_the_persisted_body() {
    let dir = Dir::new();
    let c = consul(0, &["web", "db"], 1);
    let port = c.addr().port();
    let path = config(&dir, port, &[("web", &[]), ("db", &[])]);
    let bridge = Bridge::start(&path);
    let web = bridge.get("/http_sd/web");
    let db = bridge.get("/http_sd/db");
    wait_persisted(&dir, "web", &web.body);
    wait_persisted(&dir, "db", &db.body);
    assert!(bridge.terminate().success());
    drop(c);

    // Only web's source changes.
    config(&dir, port, &[("web", &["tag_separator: ';'"]), ("db", &[])]);
    let bridge = Bridge::start_unready(&path);
    poll_until(Duration::from_secs(10), "db served from state", || {
        (bridge.get("/http_sd/db").status == 200).then_some(())
    });
    assert_eq!(bridge.get("/http_sd/db").body, db.body);
    let r = bridge.get("/http_sd/web");
    assert_eq!(r.status, 503, "web's config changed: {}", r.text());
    assert_eq!(bridge.get("/-/ready").status, 503);
    assert!(bridge
        .log()
        .contains("configuration changed since its state was written"));
    assert_eq!(
        bridge.metric("sdbridge_job_from_state", &["job=\"db\""]),
        Some(1.0)
    );
    assert_eq!(
        bridge.metric("sdbridge_job_from_state", &["job=\"web\""]),
        Some(0.0)
    );
}

#[test]
fn writes_are_coalesced_and_the_file_holds_the_last_served_body() {
    let dir = Dir::new();
    dir.write("sd/a.json", r#"[{"targets": ["127.0.0.1:0"]}]"#);
    let path = dir.write(
        "sdbridge.yml",
        "state_dir: state\njobs:\n  - job_name: files\n    file_sd_configs: [{files: [sd/*.json]}]\n",
    );
    let bridge = Bridge::start(&path);
    let started = Instant::now();
    let bodies = 50;
    let mut last = String::new();
    for i in 1..=bodies {
        dir.replace(
            "sd/a.json",
            &format!(r#"[{{"targets": ["127.0.0.1:{i}"]}}]"#),
        );
        let want = format!("\"127.0.0.1:{i}\"");
        last = bridge.wait_body("/http_sd/files", "the new body", |b| b.contains(&want));
    }
    // The last body lands within a second or so; then nothing moves.
    wait_persisted(&dir, "files", last.as_bytes());
    let elapsed = started.elapsed().as_secs_f64();
    let writes = bridge
        .metric("sdbridge_state_writes_total", &["job=\"files\""])
        .expect("writes counted");
    eprintln!("{bodies} bodies served, {writes} state writes in {elapsed:.2}s");
    // At most one a second, plus the first one and the start's.
    assert!(writes >= 1.0);
    assert!(
        writes <= elapsed.floor() + 2.0,
        "{writes} writes in {elapsed:.2}s for {bodies} bodies"
    );
    // The error counter exists from a job's first write (so increase()
    // sees the first failure), and stayed at 0.
    assert_eq!(
        bridge.metric("sdbridge_state_write_errors_total", &["job=\"files\""]),
        Some(0.0)
    );
}

#[test]
fn an_unusable_state_dir_stops_the_start_and_check_reports_it() {
    let dir = Dir::new();
    dir.write("file", "a regular file");
    let path = dir.write(
        "sdbridge.yml",
        "state_dir: file/state\njobs:\n  - job_name: s\n    static_configs: [{targets: ['127.0.0.1:1']}]\n",
    );
    let mut child = Command::new(bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&path)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn sdbridge");
    let status = poll_until(Duration::from_secs(20), "serve to refuse", || {
        child.try_wait().ok().flatten()
    });
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success());
    let want = format!("{}/file is not a directory", dir.root());
    assert!(
        stderr.contains("state_dir") && stderr.contains(&want),
        "{stderr}"
    );

    let check = run_cli(None, [std::ffi::OsStr::new("check"), path.as_os_str()]);
    let text = String::from_utf8_lossy(&check.stdout);
    assert!(!check.status.success());
    assert!(text.contains("state_dir") && text.contains(&want), "{text}");
}

#[test]
fn a_reload_to_another_state_dir_writes_every_body_there() {
    let dir = Dir::new();
    dir.write("sd/a.json", r#"[{"targets": ["127.0.0.1:1"]}]"#);
    let yaml = |state: &str| {
        format!("state_dir: {state}\njobs:\n  - job_name: files\n    file_sd_configs: [{{files: [sd/*.json]}}]\n")
    };
    let path = dir.write("sdbridge.yml", &yaml("state"));
    let bridge = Bridge::start(&path);
    let body = bridge.get("/http_sd/files").body;
    wait_persisted(&dir, "files", &body);

    // Unusable: the reload fails as a whole and the old one keeps serving.
    dir.write("file", "a regular file");
    dir.write("sdbridge.yml", &yaml("file/state"));
    let r = bridge.request("POST", "/-/reload", &[]);
    assert_eq!(r.status, 500, "{}", r.text());
    assert!(r.text().contains("is not a directory"), "{}", r.text());

    // A usable one gets the unchanged body at once, not at its next change.
    dir.write("sdbridge.yml", &yaml("moved"));
    assert_eq!(bridge.request("POST", "/-/reload", &[]).status, 200);
    poll_until(
        Duration::from_secs(20),
        "the body in the new state_dir",
        || {
            (persisted_body(&dir.path("moved/files.state")).as_deref() == Some(&body[..]))
                .then_some(())
        },
    );
    assert_eq!(bridge.get("/http_sd/files").body, body);
}

#[test]
fn sigterm_writes_the_body_still_waiting() {
    let dir = Dir::new();
    dir.write("sd/a.json", r#"[{"targets": ["127.0.0.1:1"]}]"#);
    let path = dir.write(
        "sdbridge.yml",
        "state_dir: state\njobs:\n  - job_name: files\n    file_sd_configs: [{files: [sd/*.json]}]\n",
    );
    let bridge = Bridge::start(&path);
    let first = bridge.get("/http_sd/files").body;
    wait_persisted(&dir, "files", &first);
    // Within a second of that write, so this one waits in the writer.
    dir.replace("sd/a.json", r#"[{"targets": ["127.0.0.1:2"]}]"#);
    let last = bridge.wait_body("/http_sd/files", "the new body", |b| {
        b.contains("127.0.0.1:2")
    });
    assert!(bridge.terminate().success());
    assert_eq!(
        persisted_body(&state_file(&dir, "files")).as_deref(),
        Some(last.as_bytes())
    );
}

/// `file` (a state file's bytes) with its `built` line set to `built` and
/// the checksum recomputed, as anyone who can write the file can do.
fn with_built(file: &[u8], built: &str) -> Vec<u8> {
    let text = std::str::from_utf8(file).expect("UTF-8 state file");
    let (head, body) = text.split_once("\n\n").expect("a header");
    let mut covered = String::new();
    for line in head.lines().filter(|l| !l.starts_with("xxh3 ")) {
        match line.strip_prefix("built ") {
            Some(_) => covered.push_str(&format!("built {built}\n")),
            None => covered.push_str(&format!("{line}\n")),
        }
    }
    let sum = xxhash_rust::xxh3::xxh3_128(format!("{covered}{body}").as_bytes());
    format!("{covered}xxh3 {sum:032x}\n\n{body}").into_bytes()
}

/// Issue 17: a state file with a valid checksum and a `built` past year
/// 9999, at its last second or more than a day ahead of the clock made
/// every start exit 101, panicked the merger on the first sync, or pinned
/// `Last-Modified` in the future. Each is ignored with a warning; the
/// daemon starts, serves its live body with a sane date and persists that.
#[test]
fn a_state_file_built_outside_the_window_never_stops_the_daemon() {
    let dir = Dir::new();
    dir.write("sd/a.json", r#"[{"targets": ["127.0.0.1:1"]}]"#);
    let path = dir.write(
        "sdbridge.yml",
        "state_dir: state\njobs:\n  - job_name: files\n    file_sd_configs: [{files: [sd/*.json]}]\n",
    );
    let bridge = Bridge::start(&path);
    let first = bridge.get("/http_sd/files").body;
    wait_persisted(&dir, "files", &first);
    assert!(bridge.terminate().success());
    let good = std::fs::read(state_file(&dir, "files")).unwrap();

    let ahead = (unix_now() as u64 + 2 * 86_400).to_string();
    for (i, built) in [
        "253402300800",
        "18446744073709551615",
        "253402300799",
        &ahead,
    ]
    .into_iter()
    .enumerate()
    {
        std::fs::write(state_file(&dir, "files"), with_built(&good, built)).unwrap();
        // A body other than the persisted one, so it is dated anew.
        let target = format!("127.0.0.1:{}", 10 + i);
        dir.replace("sd/a.json", &format!(r#"[{{"targets": ["{target}"]}}]"#));
        let bridge = Bridge::start(&path);
        let live = bridge.wait_body("/http_sd/files", "the live body", |b| b.contains(&target));
        let r = bridge.get("/http_sd/files");
        let modified = httpdate::parse_http_date(r.header("last-modified").unwrap()).unwrap();
        let modified = modified.duration_since(UNIX_EPOCH).unwrap().as_secs_f64();
        assert!(
            modified <= unix_now() + 60.0,
            "built {built}: Last-Modified {modified} is in the future"
        );
        assert!(
            bridge
                .log()
                .contains(&format!("built {built} is more than a day ahead")),
            "built {built}: {}",
            bridge.log()
        );
        wait_persisted(&dir, "files", live.as_bytes());
        let text = String::from_utf8(std::fs::read(state_file(&dir, "files")).unwrap()).unwrap();
        let persisted: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("built "))
            .and_then(|b| b.parse().ok())
            .expect("a built line");
        assert!(
            persisted <= unix_now() + 60.0,
            "built {built}: persisted {persisted}"
        );
        assert_eq!(bridge.get("/-/healthy").status, 200, "built {built}");
        assert!(bridge.terminate().success(), "built {built}");
    }
}

/// Resident memory of process `pid`, in bytes.
fn resident(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmRSS")
        * 1024
}

/// Issue 17: a FIFO named like a state file kept `serve` from binding and
/// from handling SIGTERM; a symlink to `/dev/zero` or a sparse 8 GiB file
/// took gigabytes. Only regular files within `limits.max_input_size` are
/// read: the daemon starts, serves its live bodies and stops on SIGTERM.
#[test]
fn special_files_in_state_dir_neither_hang_the_start_nor_bloat_it() {
    let dir = Dir::new();
    let mut yaml = String::from("state_dir: state\njobs:\n");
    for job in ["fifo", "zero", "sparse"] {
        dir.write(
            &format!("sd/{job}.json"),
            &format!(r#"[{{"targets": ["127.0.0.1:1"], "labels": {{"j": "{job}"}}}}]"#),
        );
        yaml.push_str(&format!(
            "  - job_name: {job}\n    file_sd_configs: [{{files: [sd/{job}.json]}}]\n"
        ));
    }
    let path = dir.write("sdbridge.yml", &yaml);
    std::fs::create_dir_all(dir.path("state")).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        state_file(&dir, "fifo"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    std::os::unix::fs::symlink("/dev/zero", state_file(&dir, "zero")).unwrap();
    std::fs::File::create(state_file(&dir, "sparse"))
        .and_then(|f| f.set_len(8 << 30))
        .unwrap();

    let bridge = Bridge::start(&path);
    for job in ["fifo", "zero", "sparse"] {
        let body = bridge.wait_body(&format!("/http_sd/{job}"), "the live body", |b| {
            b.contains(&format!("\"j\":\"{job}\""))
        });
        wait_persisted(&dir, job, body.as_bytes());
    }
    let log = bridge.log();
    for want in [
        "not a regular file (a FIFO)",
        "a symbolic link: only regular files are read",
        "8589934592 bytes, more than a header and limits.max_input_size",
    ] {
        assert!(log.contains(want), "{want:?} not in:\n{log}");
    }
    let rss = resident(bridge.pid());
    assert!(rss < 512 << 20, "{rss} bytes resident");
    assert!(bridge.terminate().success());
}
