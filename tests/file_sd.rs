//! file_sd watching against the running binary: every way files change in
//! real life shows up in the served body, by polling, never fixed sleeps.

use crate::util::{groups, Bridge, Dir};

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
        metrics.contains("sdbridge_source_up{job=\"db\",source=\"file_sd#0\",kind=\"file_sd\"} 0"),
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
    assert!(
        metrics.contains("sdbridge_source_up{job=\"db\",source=\"file_sd#0\",kind=\"file_sd\"} 1")
    );
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
    dir.write("sd/a.json", r#"[{"targets": ["127.0.0.1:9100"]}]"#);
    // A directory the watcher cannot see into changes is still re-read by
    // the refresh: simulate by a short interval and a same-size rewrite
    // that keeps mtime (touch -r) so only the refresh notices.
    let config = dir.write(
        "sdbridge.yml",
        "jobs:\n  - job_name: db\n    file_sd_configs:\n      - files: [sd/*.json]\n        refresh_interval: 1s\n",
    );
    let bridge = Bridge::start(&config);
    bridge.wait_body("/http_sd/db", "initial", |b| b.contains("127.0.0.1:9100"));
    dir.write("sd/a.json", r#"[{"targets": ["127.0.0.2:9100"]}]"#);
    bridge.wait_body("/http_sd/db", "refresh or event", |b| {
        b.contains("127.0.0.2:9100")
    });
}
