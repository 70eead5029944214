//! End to end, `sdbridge migrate` on `examples/migrate/`: Prometheus and
//! VictoriaMetrics on the migrated config (with sdbridge serving the
//! generated one) see the same active targets, labels after relabelling
//! and scrape URLs as on the original, per job. Every target is on
//! loopback where nothing listens, scraped once an hour; the consumers are
//! stopped at the end.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use crate::e2e::{Consumer, Labels};
use crate::fake_consul::{FakeConsul, Node, ServiceInstance};
use crate::migrate::{copy_example, migrate, read};
use crate::util::{poll_until, request, Bridge, Dir};

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
    // then replaces: the running bridge keeps it.
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
    // The first run's outputs differ from this one's (another URL, and
    // maybe `web`): replacing them takes --force.
    let mut second = args(&format!("http://{}", bridge.addr));
    second.push("--force".into());
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
