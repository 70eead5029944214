//! file_sd watching against the running binary: every way files change in
//! real life shows up in the served body, by polling, never fixed sleeps.

use std::time::Duration;

use crate::util::{groups, poll_until, Bridge, Dir, KeepAlive};

const CONFIG: &str =
    "jobs:\n  - job_name: db\n    file_sd_configs:\n      - files: [sd/*.json, sd/*.yml]\n";

fn start(dir: &Dir) -> Bridge {
    let config = dir.write("sdbridge.yml", CONFIG);
    Bridge::start(&config)
}

fn targets(body: &str) -> Vec<String> {
    groups(body).into_iter().flat_map(|g| g.0).collect()
}

#[test]
fn write_modify_rename_over_and_delete() {
    let dir = Dir::new();
    dir.write(
        "sd/a.json",
        r#"[{"targets": ["127.0.0.1:9100"], "labels": {"db_name": "프라이머리"}}]"#,
    );
    let bridge = start(&dir);
    let body = bridge.wait_body("/http_sd/db", "initial file", |b| {
        b.contains("127.0.0.1:9100")
    });
    let g = groups(&body);
    assert_eq!(
        g[0].1["__meta_filepath"],
        format!("{}/sd/a.json", dir.root())
    );
    assert_eq!(g[0].1["db_name"], "프라이머리");

    // A new file appears.
    dir.write("sd/b.yml", "- targets: ['127.0.0.2:9100']\n");
    let body = bridge.wait_body("/http_sd/db", "new file", |b| b.contains("127.0.0.2:9100"));
    assert_eq!(targets(&body), ["127.0.0.1:9100", "127.0.0.2:9100"]);

    // In-place modification.
    dir.write("sd/a.json", r#"[{"targets": ["127.0.0.3:9100"]}]"#);
    bridge.wait_body("/http_sd/db", "in-place write", |b| {
        targets(b) == ["127.0.0.3:9100", "127.0.0.2:9100"]
    });

    // Rename-over, as editors and config management write.
    dir.replace("sd/a.json", r#"[{"targets": ["127.0.0.4:9100"]}]"#);
    bridge.wait_body("/http_sd/db", "rename-over", |b| {
        targets(b) == ["127.0.0.4:9100", "127.0.0.2:9100"]
    });

    // Deletion removes the file's groups.
    dir.remove("sd/a.json");
    bridge.wait_body("/http_sd/db", "deletion", |b| {
        targets(b) == ["127.0.0.2:9100"]
    });

    // A file that parses to an empty list removes its groups.
    dir.write("sd/b.yml", "[]\n");
    bridge.wait_body("/http_sd/db", "empty list", |b| b == "[]");
}

#[test]
fn invalid_file_keeps_previous_groups_and_logs_file_and_line() {
    let dir = Dir::new();
    dir.write("sd/a.json", r#"[{"targets": ["127.0.0.1:9100"]}]"#);
    dir.write("sd/b.json", r#"[{"targets": ["127.0.0.2:9100"]}]"#);
    let bridge = start(&dir);
    bridge.wait_body("/http_sd/db", "initial", |b| targets(b).len() == 2);
    dir.replace(
        "sd/a.json",
        "[{\"targets\": [\"127.0.0.9:9100\"],\n  \"labelz\": {}}]",
    );
    // The change to b proves the bad write to a was seen and skipped.
    dir.write("sd/b.json", r#"[{"targets": ["127.0.0.3:9100"]}]"#);
    bridge.wait_body("/http_sd/db", "a kept, b updated", |b| {
        targets(b) == ["127.0.0.1:9100", "127.0.0.3:9100"]
    });
    let path = format!("{}/sd/a.json:2:10: unknown field `labelz`", dir.root());
    crate::util::poll_until(std::time::Duration::from_secs(5), "error logged", || {
        let log = bridge.log();
        if !log.contains(&path) {
            eprintln!("{log}");
        }
        log.contains(&path).then_some(())
    });
    let metrics = bridge.get("/metrics").text();
    assert!(
        crate::util::metric(&metrics, "sdbridge_source_up", SOURCE) == Some(0.0),
        "{metrics}"
    );
    assert!(metrics.contains("error=\"parse\"} 1"), "{metrics}");
    let page = bridge.get("/").text();
    assert!(page.contains("unknown field `labelz`"), "{page}");
    // Fixing the file serves its new content and clears the problem.
    dir.write("sd/a.json", r#"[{"targets": ["127.0.0.5:9100"]}]"#);
    bridge.wait_body("/http_sd/db", "fixed file", |b| {
        b.contains("127.0.0.5:9100")
    });
    let metrics = bridge.get("/metrics").text();
    assert!(crate::util::metric(&metrics, "sdbridge_source_up", SOURCE) == Some(1.0));
}

/// Kubernetes mounts a ConfigMap as `name -> ..data/name`, `..data ->
/// ..<timestamp>`, and updates it by swapping the `..data` symlink.
#[test]
fn kubernetes_configmap_symlink_swap() {
    let dir = Dir::new();
    dir.write("sd/..v1/db.json", r#"[{"targets": ["127.0.0.1:9104"]}]"#);
    std::os::unix::fs::symlink("..v1", dir.path("sd/..data")).unwrap();
    std::os::unix::fs::symlink("..data/db.json", dir.path("sd/db.json")).unwrap();
    let bridge = start(&dir);
    let body = bridge.wait_body("/http_sd/db", "v1", |b| b.contains("127.0.0.1:9104"));
    // __meta_filepath is the symlink's path, as Prometheus's glob gives it.
    assert_eq!(
        groups(&body)[0].1["__meta_filepath"],
        format!("{}/sd/db.json", dir.root())
    );
    dir.write("sd/..v2/db.json", r#"[{"targets": ["127.0.0.2:9104"]}]"#);
    std::os::unix::fs::symlink("..v2", dir.path("sd/..data_tmp")).unwrap();
    std::fs::rename(dir.path("sd/..data_tmp"), dir.path("sd/..data")).unwrap();
    std::fs::remove_dir_all(dir.path("sd/..v1")).unwrap();
    bridge.wait_body("/http_sd/db", "v2 after swap", |b| {
        targets(b) == ["127.0.0.2:9104"]
    });
}

#[test]
fn directory_created_after_start_is_picked_up() {
    let dir = Dir::new();
    let config = dir.write(
        "sdbridge.yml",
        "jobs:\n  - job_name: db\n    file_sd_configs:\n      - files: [later/deeper/*.yml]\n",
    );
    let bridge = Bridge::start(&config);
    // Synced with nothing: an empty list is the truth here, not a 503.
    bridge.wait_body("/http_sd/db", "empty job", |b| b == "[]");
    dir.write("later/deeper/x.yml", "- targets: ['127.0.0.7:9100']\n");
    bridge.wait_body("/http_sd/db", "file in new directory", |b| {
        b.contains("127.0.0.7:9100")
    });
}

#[test]
fn refresh_interval_rereads_everything() {
    let dir = Dir::new();
    // The watched directory holds a symlink to a file elsewhere, as a
    // mount or a share would: a write to the file there makes no event in
    // the watched directory, so only the periodic re-read finds it.
    dir.write("real/a.json", r#"[{"targets": ["127.0.0.1:9100"]}]"#);
    std::fs::create_dir_all(dir.path("sd")).expect("sd");
    std::os::unix::fs::symlink(dir.path("real/a.json"), dir.path("sd/a.json")).expect("symlink");
    // Two jobs on the same file: one re-reads every second, one hourly.
    let config = dir.write(
        "sdbridge.yml",
        "jobs:\n  - job_name: db\n    file_sd_configs:\n      - files: [sd/*.json]\n        refresh_interval: 1s\n  - job_name: hourly\n    file_sd_configs:\n      - files: [sd/*.json]\n        refresh_interval: 1h\n",
    );
    let bridge = Bridge::start(&config);
    bridge.wait_body("/http_sd/db", "initial", |b| b.contains("127.0.0.1:9100"));
    std::fs::write(
        dir.path("real/a.json"),
        r#"[{"targets": ["127.0.0.2:9100"]}]"#,
    )
    .expect("rewrite in place");
    bridge.wait_body("/http_sd/db", "the periodic re-read", |b| {
        b.contains("127.0.0.2:9100")
    });
    // The hourly job got no event either and still serves the old file:
    // the change was invisible to everything but the re-read.
    let hourly = bridge.get("/http_sd/hourly").text();
    assert!(hourly.contains("127.0.0.1:9100"), "{hourly}");
}

const SOURCE: &[&str] = &["job=\"db\"", "source=\"file_sd#"];

fn scans(bridge: &Bridge) -> f64 {
    bridge
        .metric("sdbridge_file_sd_scans_total", SOURCE)
        .unwrap_or(0.0)
}

/// Issue 7, defect 1: listing a directory is itself an access that inotify
/// reports; acting on it made every scan schedule the next one, forever.
/// Counts scans; the idle stretch is a window to count in, not a timing.
#[test]
fn idle_means_no_rescans_and_one_change_costs_a_few() {
    let dir = Dir::new();
    for i in 0..20 {
        dir.write(
            &format!("sd/f{i:02}.json"),
            &format!(r#"[{{"targets": ["127.0.0.{}:9100"]}}]"#, i + 1),
        );
    }
    let bridge = start(&dir);
    // The first scan, then one more once the watch is set.
    poll_until(Duration::from_secs(10), "the first two scans", || {
        (scans(&bridge) >= 2.0).then_some(())
    });
    let settled = scans(&bridge);
    let reads = bridge.metric("sdbridge_file_sd_reads_total", SOURCE);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(scans(&bridge), settled, "rescans while nothing changed");
    assert_eq!(
        bridge.metric("sdbridge_file_sd_reads_total", SOURCE),
        reads,
        "re-reads while nothing changed"
    );
    dir.replace("sd/f00.json", r#"[{"targets": ["127.0.0.99:9100"]}]"#);
    bridge.wait_body("/http_sd/db", "the change", |b| {
        b.contains("127.0.0.99:9100")
    });
    std::thread::sleep(Duration::from_secs(2));
    let after = scans(&bridge);
    assert!(
        (1.0..=3.0).contains(&(after - settled)),
        "one change cost {} scans",
        after - settled
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(scans(&bridge), after, "rescans after the change settled");
}

/// Issue 7, defect 2: a directory deleted and recreated (on ext4 often with
/// the same inode number) must be watched again, every time.
#[test]
fn recreated_directory_is_watched_again() {
    let dir = Dir::new();
    dir.write("sd/a.json", r#"[{"targets": ["127.0.0.1:9100"]}]"#);
    let bridge = start(&dir);
    bridge.wait_body("/http_sd/db", "initial", |b| b.contains("127.0.0.1:9100"));
    for round in 2..5 {
        // The new directory appears right after the old one is gone, so
        // the bridge cannot see the gap (`rm -rf sd && mkdir sd` in a
        // script is almost as quick).
        let a = format!("127.0.0.{round}:9100");
        dir.write("sd.next/a.json", &format!(r#"[{{"targets": ["{a}"]}}]"#));
        std::fs::remove_dir_all(dir.path("sd")).unwrap();
        std::fs::rename(dir.path("sd.next"), dir.path("sd")).unwrap();
        bridge.wait_body("/http_sd/db", "file in the recreated directory", |b| {
            targets(b) == [a.as_str()]
        });
        // A file added later proves the new directory itself is watched
        // (refresh_interval is 5m).
        let c = format!("127.0.1.{round}:9100");
        dir.write("sd/c.json", &format!(r#"[{{"targets": ["{c}"]}}]"#));
        bridge.wait_body(
            "/http_sd/db",
            "later file in the recreated directory",
            |b| targets(b) == [a.as_str(), c.as_str()],
        );
    }
}

/// Issue 7, defect 3: out of file descriptors, a listing fails; that is
/// not an empty directory. Also checks that the accept loop, out of
/// descriptors too, backs off instead of spinning.
#[test]
fn failed_listing_keeps_groups_and_accept_backs_off() {
    let Some(prlimit) = crate::util::require_binary("prlimit") else {
        return;
    };
    let dir = Dir::new();
    dir.write("sd/a.json", r#"[{"targets": ["127.0.0.1:9100"]}]"#);
    let config = dir.write("sdbridge.yml", CONFIG);
    let prlimit = prlimit.to_string_lossy().to_string();
    let bridge = Bridge::start_wrapped(&config, &[&prlimit, "--nofile=64:64"]);
    let mut conn = KeepAlive::open(bridge.addr);
    poll_until(Duration::from_secs(10), "initial body", || {
        conn.get("/http_sd/db")
            .text()
            .contains("127.0.0.1:9100")
            .then_some(())
    });
    // Use up every descriptor: some connections are accepted, the rest
    // wait in the backlog while accept fails with EMFILE.
    let held: Vec<std::net::TcpStream> = (0..100)
        .map(|_| std::net::TcpStream::connect(bridge.addr).expect("connect"))
        .collect();
    poll_until(Duration::from_secs(10), "accept failing", || {
        bridge.log().contains("accept failed").then_some(())
    });
    let cpu = bridge.cpu_seconds();
    std::thread::sleep(Duration::from_secs(3));
    let spent = bridge.cpu_seconds() - cpu;
    assert!(spent < 1.0, "{spent} CPU seconds in 3 s out of descriptors");

    dir.write("sd/b.json", r#"[{"targets": ["127.0.0.2:9100"]}]"#);
    poll_until(Duration::from_secs(10), "listing error logged", || {
        bridge.log().contains("cannot list").then_some(())
    });
    let body = conn.get("/http_sd/db").text();
    assert!(body.contains("127.0.0.1:9100"), "groups lost: {body}");
    let metrics = conn.get("/metrics").text();
    let up = crate::util::metric(&metrics, "sdbridge_source_up", SOURCE);
    assert_eq!(up, Some(0.0), "{metrics}");
    let errors = crate::util::metric(
        &metrics,
        "sdbridge_source_errors_total",
        &["error=\"list\""],
    );
    assert!(errors >= Some(1.0), "{metrics}");

    // Descriptors back: the retry serves the change and the source is up.
    drop(held);
    bridge.wait_body("/http_sd/db", "retry after descriptors are back", |b| {
        targets(b) == ["127.0.0.1:9100", "127.0.0.2:9100"]
    });
    poll_until(Duration::from_secs(10), "source up again", || {
        (bridge.metric("sdbridge_source_up", SOURCE) == Some(1.0)).then_some(())
    });
}

/// Issue 8: a FIFO matched by a glob would block a reader forever. It is
/// reported as a read error and never opened; answers go on.
#[test]
fn a_fifo_is_an_error_not_a_stall() {
    let dir = Dir::new();
    dir.write("sd/a.json", r#"[{"targets": ["127.0.0.1:9100"]}]"#);
    let made = std::process::Command::new("mkfifo")
        .arg(dir.path("sd/pipe.json"))
        .status()
        .unwrap();
    assert!(made.success());
    let bridge = start(&dir);
    bridge.wait_body("/http_sd/db", "the regular file", |b| {
        b.contains("127.0.0.1:9100")
    });
    poll_until(Duration::from_secs(10), "the FIFO reported", || {
        bridge
            .get("/")
            .text()
            .contains("pipe.json: not a regular file")
            .then_some(())
    });
    assert_eq!(bridge.metric("sdbridge_source_up", SOURCE), Some(0.0));
    dir.write("sd/b.json", r#"[{"targets": ["127.0.0.2:9100"]}]"#);
    bridge.wait_body("/http_sd/db", "later changes", |b| {
        b.contains("127.0.0.2:9100")
    });
}

/// Issue 10: with no watch to be had (the inotify watch limit; forced
/// here by a test hook, never by changing the machine's limits) the source
/// polls every 5 s, says so, and still serves changes.
#[test]
fn without_watches_the_source_polls() {
    let dir = Dir::new();
    dir.write("sd/a.json", r#"[{"targets": ["127.0.0.1:9100"]}]"#);
    let config = dir.write("sdbridge.yml", CONFIG);
    let bridge = Bridge::start_wrapped(&config, &["env", "SDBRIDGE_TEST_NO_WATCHES=1"]);
    bridge.wait_body("/http_sd/db", "initial", |b| b.contains("127.0.0.1:9100"));
    assert_eq!(bridge.metric("sdbridge_file_sd_polling", SOURCE), Some(1.0));
    assert!(bridge.log().contains("polling it instead"));
    dir.write("sd/b.json", r#"[{"targets": ["127.0.0.2:9100"]}]"#);
    poll_until(Duration::from_secs(15), "a change found by polling", || {
        let r = bridge.get("/http_sd/db");
        r.text().contains("127.0.0.2:9100").then_some(())
    });
}

/// Issue 10: the parity fixtures served by the running binary (the e2e
/// test compares the same files with a real Prometheus): what yaml.v2 and
/// Go's encoding/json make of them, and an invalid edit keeping the last
/// good groups of a merge-key file.
#[test]
fn parity_fixtures_are_served_as_prometheus_reads_them() {
    let dir = Dir::new();
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/file_sd_parity");
    std::fs::create_dir_all(dir.path("sd")).unwrap();
    for entry in std::fs::read_dir(fixtures).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.path("sd").join(path.file_name().unwrap())).unwrap();
    }
    let config = dir.write(
        "sdbridge.yml",
        "jobs:\n  - job_name: db\n    file_sd_configs:\n      - files: [sd/*.json, sd/*.yml, sd/*.yaml]\n",
    );
    let bridge = Bridge::start(&config);
    let body = bridge.get("/http_sd/db").text();
    let served = groups(&body);
    assert_eq!(
        served.iter().map(|g| g.0.len()).sum::<usize>(),
        14,
        "{body}"
    );
    let labels_of = |address: &str| {
        served
            .iter()
            .find(|g| g.0.iter().any(|t| t == address))
            .map(|g| g.1.clone())
            .unwrap_or_else(|| panic!("{address} not served: {body}"))
    };
    assert_eq!(labels_of("127.0.0.3:9100")["rack"], "r1");
    assert_eq!(labels_of("127.0.0.3:9100")["team"], "db");
    assert_eq!(labels_of("127.0.0.9:9100")["name"], "서비스");
    assert_eq!(labels_of("127.0.0.11:9100")["plain"], "hello");
    assert_eq!(labels_of("127.0.0.13:9100")["byte"], "a\u{fffd}b");
    assert_eq!(labels_of("127.0.0.10:9100")["hex"], "0x1F");
    assert_eq!(labels_of("127.0.0.10:9100")["literal"], "a\nb\n");

    // An edit that repeats a merged label is refused; the groups stay.
    dir.replace(
        "sd/merge.yml",
        "- &a {targets: ['127.0.0.1:9100'], labels: {env: prod}}\n- <<: *a\n  labels: {env: dev}\n",
    );
    let log = poll_until(Duration::from_secs(30), "the parse error", || {
        let log = bridge.log();
        log.contains("sd/merge.yml:").then_some(log)
    });
    assert!(
        log.contains("merge.yml:3:12: [1].labels: key \\\"env\\\" already set in map"),
        "{log}"
    );
    assert_eq!(bridge.get("/http_sd/db").text(), body);
}

/// A YAML "billion laughs": nine levels of nine aliases each.
pub fn alias_bomb(prefix: &str) -> String {
    let mut text = format!(
        "{prefix}a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n"
    );
    for level in b'b'..=b'i' {
        let (name, prev) = (level as char, (level - 1) as char);
        let refs = vec![format!("*{prev}"); 9].join(",");
        text.push_str(&format!("{prefix}{name}: &{name} [{refs}]\n"));
    }
    text
}

/// Issue 10: hostile files (deep nesting, an alias bomb, invalid UTF-8)
/// are refused one by one with their names; the process stays up, its
/// memory stays small, and the good file is served. Deep YAML flow
/// nesting used to keep the parser busy for minutes (fuzzing found it),
/// so the job never became ready.
#[test]
fn hostile_files_are_refused_and_the_rest_served() {
    let dir = Dir::new();
    dir.write("sd/good.json", r#"[{"targets": ["127.0.0.1:9100"]}]"#);
    dir.write("sd/deep.json", &"[".repeat(1_000_000));
    dir.write("sd/deep.yml", &"{a: ".repeat(100_000));
    dir.write("sd/deep-list.yml", &"- ".repeat(100_000));
    let bomb = format!("- targets: []\n  labels:\n{}", alias_bomb("    "));
    dir.write("sd/bomb.yml", &bomb);
    std::fs::write(dir.path("sd/utf8.json"), b"[{\"targets\": [\"\xff\xfe\"]}]").unwrap();
    std::fs::write(dir.path("sd/utf8.yml"), b"- targets: ['\xc3\x28']\n").unwrap();
    let bridge = start(&dir);
    let body = bridge.wait_body("/http_sd/db", "the good file", |b| {
        b.contains("127.0.0.1:9100")
    });
    // Invalid UTF-8 in JSON becomes U+FFFD, as Go's encoding/json reads
    // it: that file is served, as Prometheus would read it.
    let mut served = targets(&body);
    served.sort();
    assert_eq!(served, ["127.0.0.1:9100", "\u{fffd}\u{fffd}"]);
    for (file, message) in [
        ("deep.json", "deep.json:1:"),
        (
            "deep.yml",
            "deep.yml:1:513: nested more than 128 levels deep",
        ),
        ("deep-list.yml", "deep-list.yml:"),
        ("bomb.yml", "bomb.yml:"),
        ("utf8.yml", "utf8.yml:1:"),
    ] {
        let want = format!("{}/sd/{message}", dir.root());
        poll_until(Duration::from_secs(10), file, || {
            bridge.log().contains(&want).then_some(())
        });
    }
    assert_eq!(bridge.get("/-/healthy").status, 200);
    let status = std::fs::read_to_string(format!("/proc/{}/status", bridge.pid())).unwrap();
    let peak_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/PID/status");
    eprintln!("peak RSS {peak_kib} KiB");
    // Generous: it measured 49 MiB; a bomb expanded would be GiBs.
    assert!(peak_kib < 512 * 1024, "peak RSS {peak_kib} KiB");
}
