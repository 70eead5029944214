//! `sdbridge migrate` on `examples/migrate/`: what it writes and reports,
//! that `promtool` and `sdbridge check` accept the result, and, end to end,
//! that Prometheus and VictoriaMetrics on the migrated config (with
//! sdbridge serving the generated one) see the same active targets, labels
//! after relabelling and scrape URLs as on the original, per job. Every
//! target is on loopback where nothing listens, scraped once an hour; the
//! consumers are stopped at the end.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::e2e::{Consumer, Labels};
use crate::fake_consul::{FakeConsul, Node, ServiceInstance};
use crate::util::{poll_until, request, require_binary, run_cli, Bridge, Dir};

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/migrate")
}

/// Copies `examples/migrate` to `dir/etc`.
fn copy_example(dir: &Dir) {
    fn copy(from: &Path, to: &str, dir: &Dir) {
        for entry in std::fs::read_dir(from).expect("read_dir") {
            let path = entry.expect("entry").path();
            let name = format!(
                "{to}/{}",
                path.file_name().and_then(|n| n.to_str()).expect("name")
            );
            if path.is_dir() {
                copy(&path, &name, dir);
            } else {
                dir.write(&name, &std::fs::read_to_string(&path).expect("read"));
            }
        }
    }
    copy(&example(), "etc", dir);
}

fn migrate<A: AsRef<std::ffi::OsStr>>(
    dir: &Dir,
    args: impl IntoIterator<Item = A>,
) -> (bool, String, String) {
    let mut all: Vec<std::ffi::OsString> = vec!["migrate".into()];
    all.extend(args.into_iter().map(|a| a.as_ref().to_os_string()));
    let out = run_cli(Some(dir.tmp.path()), all);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn read(dir: &Dir, rel: &str) -> String {
    std::fs::read_to_string(dir.path(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

#[test]
fn migrate_moves_the_blocks_keeps_the_rest_and_reports() {
    let dir = Dir::new();
    copy_example(&dir);
    // Relative paths on the command line, from the temp dir.
    let (ok, stdout, stderr) = migrate(
        &dir,
        [
            "etc/prometheus.yml",
            "--out-dir",
            "out",
            "--url",
            "http://127.0.0.1:9412/",
        ],
    );
    assert!(ok, "{stderr}");
    for line in [
        "moved: job \"node\": file_sd_configs -> http_sd_configs\n",
        "moved: job \"mysqld\": static_configs, file_sd_configs -> http_sd_configs\n",
        "moved: job \"apps\": file_sd_configs -> http_sd_configs (kept beside it: eureka_sd_configs)\n",
        "left in place: job \"legacy\": already on http_sd_configs\n",
    ] {
        assert!(stdout.contains(line), "{line:?} not in:\n{stdout}");
    }
    let input = read(&dir, "etc/prometheus.yml");
    let output = read(&dir, "out/prometheus.yml");
    // Comments and layout kept: every comment line, and the lines that
    // are neither moved nor paths, are there as written.
    for line in input.lines().filter(|l| {
        !l.contains("files")
            && !l.contains("targets")
            && !l.contains("_file")
            && !l.contains("rules/")
            && !l.contains("sd_configs")
            && !l.contains("static_configs")
            && !l.contains("labels:")
            && !l.contains("refresh_interval")
    }) {
        assert!(
            output.lines().any(|o| o == line),
            "{line:?} lost:\n{output}"
        );
    }
    assert!(output.contains("  - job_name: node\n    http_sd_configs:\n      - url: http://127.0.0.1:9412/http_sd/node\n        refresh_interval: 15s\n    relabel_configs:\n"), "{output}");
    assert!(
        output.contains("      password_file: ../etc/secrets/node-password\n"),
        "{output}"
    );
    assert!(
        output.contains("rule_files:\n  - ../etc/rules/*.yml\n"),
        "{output}"
    );
    assert!(output.contains("    eureka_sd_configs:\n      - server: http://127.0.0.1:8761/eureka\n    http_sd_configs:\n      - url: http://127.0.0.1:9412/http_sd/apps\n"), "{output}");
    assert!(
        output.contains("      - url: http://127.0.0.1:9413/targets\n"),
        "{output}"
    );
    assert!(
        !output.contains("file_sd_configs") && !output.contains("static_configs"),
        "{output}"
    );
    // sdbridge's patterns are absolute: `__meta_filepath` is what
    // Prometheus run with an absolute --config.file forms.
    let generated = read(&dir, "out/sdbridge.yml");
    assert!(
        generated.contains(&format!("- {}/etc/targets/node/*.json\n", dir.root())),
        "{generated}"
    );

    let check = run_cli(Some(dir.tmp.path()), ["check", "out/sdbridge.yml"]);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
    assert!(
        String::from_utf8_lossy(&check.stdout).contains("(3 jobs, 4 file_sd files)"),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
    if let Some(promtool) = require_binary("promtool") {
        let before = Command::new(&promtool)
            .args(["check", "config"])
            .arg(dir.path("etc/prometheus.yml"))
            .output()
            .expect("promtool");
        assert!(before.status.success(), "the example itself");
        // promtool also checks that the rule files resolve from out/.
        let out = Command::new(promtool)
            .args(["check", "config"])
            .arg(dir.path("out/prometheus.yml"))
            .output()
            .expect("promtool");
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("1 rule files found"));
    }
}

#[test]
fn migrate_refuses_to_overwrite_its_input_unless_forced() {
    let dir = Dir::new();
    copy_example(&dir);
    let input = read(&dir, "etc/prometheus.yml");
    dir.write("etc/prometheus.yml.orig", &input);
    let (ok, _, stderr) = migrate(
        &dir,
        [
            "etc/prometheus.yml",
            "--out-dir",
            "etc/.",
            "--url",
            "http://127.0.0.1:9412",
        ],
    );
    assert!(!ok);
    assert!(
        stderr.contains("is the input; choose another --out-dir or pass --force"),
        "{stderr}"
    );
    assert_eq!(read(&dir, "etc/prometheus.yml"), input);
    assert!(!dir.path("etc/sdbridge.yml").exists());

    let (ok, _, stderr) = migrate(
        &dir,
        [
            "etc/prometheus.yml",
            "--out-dir",
            "etc",
            "--url",
            "http://127.0.0.1:9412",
            "--force",
        ],
    );
    assert!(ok, "{stderr}");
    let first = read(&dir, "etc/sdbridge.yml");
    // Run again on the migrated file: nothing moves, and the sdbridge.yml
    // of the first run is kept.
    let migrated = read(&dir, "etc/prometheus.yml");
    let (ok, _, stderr) = migrate(
        &dir,
        [
            "etc/prometheus.yml",
            "--out-dir",
            "etc",
            "--url",
            "http://127.0.0.1:9412",
            "--force",
        ],
    );
    assert!(!ok, "{stderr}");
    assert!(
        stderr.contains("left in place: job \"node\": already on http_sd_configs"),
        "{stderr}"
    );
    assert!(
        stderr.contains("nothing to move (already migrated?): etc/sdbridge.yml left as it is"),
        "{stderr}"
    );
    assert_eq!(read(&dir, "etc/sdbridge.yml"), first);
    assert_eq!(read(&dir, "etc/prometheus.yml"), migrated);
    // Into another directory holding a different sdbridge.yml: only with
    // --force.
    dir.write("other/sdbridge.yml", "jobs: []\n");
    let (ok, _, stderr) = migrate(
        &dir,
        [
            "etc/prometheus.yml.orig",
            "--out-dir",
            "other",
            "--url",
            "http://127.0.0.1:9412",
        ],
    );
    assert!(
        !ok && stderr.contains("other/sdbridge.yml exists and differs"),
        "{stderr}"
    );
    let output = read(&dir, "etc/prometheus.yml");
    assert!(output.contains("http_sd/node"));
    // Same directory: relative paths stay as written.
    assert!(
        output.contains("      password_file: secrets/node-password\n"),
        "{output}"
    );
    let check = run_cli(Some(dir.tmp.path()), ["check", "etc/sdbridge.yml"]);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
}

#[test]
fn dry_run_prints_unified_diffs_and_writes_nothing() {
    let dir = Dir::new();
    copy_example(&dir);
    let (ok, stdout, stderr) = migrate(
        &dir,
        [
            "etc/prometheus.yml",
            "--out-dir",
            "out",
            "--url",
            "http://127.0.0.1:9412",
            "--dry-run",
        ],
    );
    assert!(ok, "{stderr}");
    assert!(!dir.path("out").exists());
    assert!(
        stdout.starts_with("--- etc/prometheus.yml\n+++ out/prometheus.yml\n@@ "),
        "{stdout}"
    );
    assert!(stdout.contains("\n-    file_sd_configs:\n"), "{stdout}");
    assert!(
        stdout.contains(
            "\n+    http_sd_configs:\n+      - url: http://127.0.0.1:9412/http_sd/node\n"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("\n--- /dev/null\n+++ out/sdbridge.yml\n@@ -0,0 +1,"),
        "{stdout}"
    );
    assert!(
        stderr.contains("moved: job \"node\"") && stderr.contains("(dry run: nothing written)"),
        "{stderr}"
    );
    // The diff is a real one: `patch` turns a copy of the input into the
    // written output.
    if let Some(patch) = require_binary("patch") {
        let write = migrate(
            &dir,
            [
                "etc/prometheus.yml",
                "--out-dir",
                "out",
                "--url",
                "http://127.0.0.1:9412",
            ],
        );
        assert!(write.0, "{}", write.2);
        let first = stdout.split("--- /dev/null\n").next().expect("first diff");
        dir.write("p.diff", first);
        let copy = dir.write("copy.yml", &read(&dir, "etc/prometheus.yml"));
        let out = Command::new(patch)
            .arg(&copy)
            .arg(dir.path("p.diff"))
            .output()
            .expect("patch");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert_eq!(read(&dir, "copy.yml"), read(&dir, "out/prometheus.yml"));
    }
}

#[test]
fn auth_options_give_the_settings_a_bridge_with_web_auth_needs() {
    let dir = Dir::new();
    copy_example(&dir);
    dir.write("bridge/password", "secret\n");
    dir.write("bridge/ca.pem", "");
    let (ok, _, stderr) = migrate(
        &dir,
        [
            "etc/prometheus.yml",
            "--out-dir",
            "out",
            "--url",
            "https://127.0.0.1:9412",
            "--basic-auth-user",
            "prometheus",
            "--basic-auth-password-file",
            "bridge/password",
            "--ca-file",
            "bridge/ca.pem",
            "--no-refresh-interval",
        ],
    );
    assert!(ok, "{stderr}");
    let output = read(&dir, "out/prometheus.yml");
    assert!(output.contains("    http_sd_configs:\n      - url: https://127.0.0.1:9412/http_sd/node\n        basic_auth:\n          username: prometheus\n          password_file: ../bridge/password\n        tls_config:\n          ca_file: ../bridge/ca.pem\n    relabel_configs:\n"), "{output}");

    let (ok, _, stderr) = migrate(
        &dir,
        [
            "etc/prometheus.yml",
            "--out-dir",
            "out",
            "--url",
            "http://127.0.0.1:9412",
            "--basic-auth-user",
            "u",
            "--bearer-token-file",
            "t",
        ],
    );
    assert!(!ok && stderr.contains("cannot be used with"), "{stderr}");
    let (ok, _, stderr) = migrate(
        &dir,
        [
            "etc/prometheus.yml",
            "--out-dir",
            "out",
            "--url",
            "127.0.0.1:9412",
        ],
    );
    assert!(
        !ok && stderr.contains("--url \"127.0.0.1:9412\": expected http://HOST:PORT"),
        "{stderr}"
    );
    let (ok, _, stderr) = migrate(
        &dir,
        [
            "etc/prometheus.yml",
            "--out-dir",
            "out",
            "--url",
            "http://127.0.0.1:9412",
            "--refresh-interval",
            "15x",
        ],
    );
    assert!(!ok && stderr.contains("--refresh-interval"), "{stderr}");
}

#[test]
fn a_broken_input_is_an_error_with_file_and_line() {
    let dir = Dir::new();
    dir.write(
        "etc/prometheus.yml",
        "scrape_configs:\n  - job_name: a\n    static_configs: [\n",
    );
    let (ok, _, stderr) = migrate(
        &dir,
        [
            "etc/prometheus.yml",
            "--out-dir",
            "out",
            "--url",
            "http://127.0.0.1:9412",
        ],
    );
    assert!(!ok);
    assert!(stderr.contains("etc/prometheus.yml:4:"), "{stderr}");
    assert!(!dir.path("out").exists());
}

/// One consumer's active targets: per scrape job, (discovered labels
/// without `drop`, labels after relabelling, scrape URL), sorted.
type Active = BTreeMap<String, Vec<(Labels, Labels, String)>>;

fn active(consumer: &Consumer, drop: &dyn Fn(&str) -> bool) -> Active {
    let addr = format!("127.0.0.1:{}", consumer.port)
        .parse()
        .expect("addr");
    let r = request(addr, "GET", "/api/v1/targets?state=active", &[]);
    assert_eq!(r.status, 200, "{} targets API: {}", consumer.name, r.text());
    let mut by_job: Active = BTreeMap::new();
    for t in r.json()["data"]["activeTargets"]
        .as_array()
        .expect("activeTargets")
    {
        let mut discovered: Labels =
            serde_json::from_value(t["discoveredLabels"].clone()).expect("discoveredLabels");
        discovered.retain(|k, _| !drop(k));
        let labels: Labels = serde_json::from_value(t["labels"].clone()).expect("labels");
        let url = t["scrapeUrl"].as_str().expect("scrapeUrl").to_string();
        by_job
            .entry(t["scrapePool"].as_str().expect("scrapePool").to_string())
            .or_default()
            .push((discovered, labels, url));
    }
    by_job.values_mut().for_each(|v| v.sort());
    by_job
}

/// Runs `start` on `etc/NAME` (the original) and `out/NAME` (migrated, a
/// bridge serving `out/sdbridge.yml`), all paths absolute, and waits until
/// both show `expected` active targets and the same ones.
fn compare(
    dir: &Dir,
    name: &str,
    extra: &[&str],
    web: &str,
    expected: usize,
    start: &dyn Fn(&Path, &Path) -> Consumer,
    drop: &dyn Fn(&str) -> bool,
) -> Active {
    let input = dir.path(&format!("etc/{name}"));
    let input = input.to_str().expect("utf-8");
    let out = dir.path("out");
    let out = out.to_str().expect("utf-8");
    // The bridge's port is known once it runs: migrate, start it, migrate
    // again with its URL (sdbridge.yml does not depend on the URL).
    let args = |url: &str| -> Vec<String> {
        let mut a: Vec<String> = [input, "--out-dir", out, "--url", url]
            .iter()
            .map(|s| s.to_string())
            .collect();
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let (ok, _, stderr) = migrate(dir, args("http://127.0.0.1:1"));
    assert!(ok, "{stderr}");
    // `web` (auth) goes into the bridge's config, which the second run
    // then replaces (with --force): the running bridge keeps it.
    if !web.is_empty() {
        let generated = read(dir, "out/sdbridge.yml");
        dir.write("out/sdbridge.yml", &format!("{generated}{web}"));
    }
    // A relative --config: the bridge's __meta_filepath must not depend
    // on how it was started.
    let bridge = Bridge::start_in(dir.tmp.path(), Path::new("out/sdbridge.yml"));
    if !web.is_empty() {
        assert_eq!(bridge.get("/http_sd/node").status, 401, "auth in force");
    }
    let mut second = args(&format!("http://{}", bridge.addr));
    if !web.is_empty() {
        second.push("--force".into());
    }
    let (ok, report, stderr) = migrate(dir, second);
    assert!(ok, "{stderr}");
    let before = start(Path::new(input), &dir.path("data-before"));
    let after = start(&dir.path(&format!("out/{name}")), &dir.path("data-after"));
    poll_until(
        Duration::from_secs(60),
        &format!("{} targets before and after migrate", before.name),
        || {
            let (b, a) = (active(&before, drop), active(&after, drop));
            let count = b.values().map(Vec::len).sum::<usize>();
            if std::env::var_os("SDBRIDGE_E2E_DEBUG").is_some() {
                for job in b.keys().chain(a.keys()) {
                    if b.get(job) != a.get(job) {
                        eprintln!(
                            "{report}{job}: before {:?}\nafter {:?}",
                            b.get(job),
                            a.get(job)
                        );
                    }
                }
            }
            (count == expected && a == b).then_some(b)
        },
    )
}

/// Prometheus 2.42 (Debian's) shows active targets' discovered labels
/// already altered by relabelling, differently from run to run (a `team`
/// label listed as `rack`), so they are not compared there; the labels
/// after relabelling are, `__meta_filepath` among them via a rule.
fn prometheus_discovered(_: &str) -> bool {
    true
}

/// Labels that differ by construction: `__meta_url` (HTTP SD's own) and
/// sdbridge's `__meta_sdbridge_job`.
fn by_construction(name: &str) -> bool {
    name == "__meta_url" || name == "__meta_sdbridge_job"
}

#[test]
fn prometheus_sees_the_same_targets_before_and_after_migrate() {
    let binary = require_binary!("prometheus");
    let dir = Dir::new();
    copy_example(&dir);
    // `__meta_filepath` copied into a target label, to compare it as is.
    let config = read(&dir, "etc/prometheus.yml").replace(
        "        target_label: rack\n",
        "        target_label: rack\n      - source_labels: [__meta_filepath]\n        target_label: sd_file\n",
    );
    dir.write("etc/prometheus.yml", &config);
    let start = |config: &Path, data: &Path| Consumer::prometheus(&binary, config, data);
    let targets = compare(
        &dir,
        "prometheus.yml",
        &[],
        "",
        8,
        &start,
        &prometheus_discovered,
    );
    assert_eq!(
        targets.keys().collect::<Vec<_>>(),
        ["apps", "mysqld", "node"]
    );
    let node = &targets["node"];
    let rack_a = format!("{}/etc/targets/node/rack-a.json", dir.root());
    assert!(
        node.iter()
            .all(|(_, l, _)| l.contains_key("rack") && l["sd_file"].starts_with(&dir.root())),
        "{node:?}"
    );
    assert!(
        node.iter().any(|(_, l, _)| l["sd_file"] == rack_a),
        "{node:?}"
    );
    assert!(targets["mysqld"]
        .iter()
        .any(|(_, l, _)| l.get("instance_name").map(String::as_str) == Some("세컨더리")));
}

/// VictoriaMetrics's file_sd gives `__meta_filepath` relative to its config
/// directory (the absolute one in `__vm_filepath`, see
/// `e2e::victoria_file_side`); sdbridge gives Prometheus's. Its Consul
/// SD adds tag labels and an empty namespace that sdbridge does not
/// (see `e2e_consul::normalize`). Everything else is compared.
fn vm_differs(name: &str) -> bool {
    by_construction(name)
        || name == "__meta_filepath"
        || name == "__vm_filepath"
        || name.starts_with("__meta_consul_tag_")
        || name.starts_with("__meta_consul_tagpresent_")
        || name == "__meta_consul_namespace"
}

#[test]
fn victoria_metrics_sees_the_same_targets_before_and_after_migrate() {
    let binary = require_binary!("victoria-metrics");
    let consul = FakeConsul::start();
    consul.set_node(Node::new("node-a", "127.0.0.1").meta("rack", "r1"));
    consul.set_node(Node::new("node-b", "127.0.0.2"));
    consul.register(
        ServiceInstance::new("node-a", "web", 18080)
            .id("web-1")
            .tags(&["prod"])
            .meta("서비스", "웹"),
    );
    consul.register(
        ServiceInstance::new("node-b", "web", 18080)
            .id("web-2")
            .address("127.0.0.3"),
    );
    let dir = Dir::new();
    copy_example(&dir);
    // vmagent takes no refresh_interval in file_sd_configs (it has
    // -promscrape.fileSDCheckInterval) and no rule settings; the consul
    // job is its own.
    let vm_config = read(&dir, "etc/prometheus.yml")
        .replace("        refresh_interval: 1m\n", "")
        .replace("  evaluation_interval: 1h\n", "")
        .replace("rule_files:\n  - rules/*.yml\n", "")
        + &format!(
            "  - job_name: consul\n    consul_sd_configs:\n      - server: {}\n        services: [web]\n    relabel_configs:\n      - source_labels: [__meta_consul_node]\n        target_label: node\n",
            consul.addr()
        );
    dir.write("etc/vmagent.yml", &vm_config);
    let start = |config: &Path, data: &Path| Consumer::victoria_metrics(&binary, config, data);
    let targets = compare(
        &dir,
        "vmagent.yml",
        &["--no-refresh-interval"],
        "",
        10,
        &start,
        &vm_differs,
    );
    assert_eq!(
        targets.keys().collect::<Vec<_>>(),
        ["apps", "consul", "mysqld", "node"]
    );
    assert!(targets["node"]
        .iter()
        .all(|(_, l, _)| l.contains_key("rack")));
    // Discovered labels were compared too.
    assert!(targets["consul"]
        .iter()
        .all(|(d, _, _)| d.get("__meta_consul_service").map(String::as_str) == Some("web")));
    assert!(targets["consul"]
        .iter()
        .any(|(_, l, _)| l.get("node").map(String::as_str) == Some("node-a")));
}

#[test]
fn prometheus_reaches_a_bridge_with_basic_auth_through_the_migrated_config() {
    let binary = require_binary!("prometheus");
    let dir = Dir::new();
    copy_example(&dir);
    dir.write("bridge/password", "s3cret");
    let hash = bcrypt::hash("s3cret", 4).expect("bcrypt");
    let web = format!("web:\n  basic_auth_users:\n    prometheus: '{hash}'\n");
    let start = |config: &Path, data: &Path| Consumer::prometheus(&binary, config, data);
    let options = [
        "--basic-auth-user",
        "prometheus",
        "--basic-auth-password-file",
        "bridge/password",
    ];
    let targets = compare(
        &dir,
        "prometheus.yml",
        &options,
        &web,
        8,
        &start,
        &prometheus_discovered,
    );
    assert_eq!(
        targets.keys().collect::<Vec<_>>(),
        ["apps", "mysqld", "node"]
    );
    // Written relative to out/, naming the file given relative to the
    // working directory.
    assert!(
        read(&dir, "out/prometheus.yml").contains("          password_file: ../bridge/password\n")
    );
}
