//! End-to-end parity with the real consumers: Prometheus (Debian
//! `prometheus`) and VictoriaMetrics (Debian `victoria-metrics`) read the
//! fixture directory with `file_sd_configs` in one job and sdbridge's HTTP
//! SD in another; the discovered labels of every target must be identical.
//! Both scrape nothing (every target is dropped by relabelling, which keeps
//! discovered labels visible under dropped targets) and are stopped at the
//! end.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::util::{free_port, poll_until, request, Bridge, Dir};

pub(crate) type Labels = BTreeMap<String, String>;

/// Drops every target: consumers must scrape nothing (CONTRACT section 7).
pub(crate) const DROP_ALL: &str =
    "    relabel_configs: [{action: drop, source_labels: [__address__], regex: \".*\"}]\n";

/// A consumer process on a loopback port, killed on drop.
pub(crate) struct Consumer {
    child: Child,
    pub(crate) port: u16,
    pub(crate) name: &'static str,
}

impl Consumer {
    pub(crate) fn prometheus(binary: &Path, config: &Path, data: &Path) -> Consumer {
        let port = free_port();
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg(format!("--storage.tsdb.path={}", data.display()))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus");
        Consumer::ready(child, port, "prometheus", "/-/ready")
    }

    pub(crate) fn victoria_metrics(binary: &Path, config: &Path, data: &Path) -> Consumer {
        Consumer::victoria_metrics_with(binary, config, data, &[])
    }

    /// VictoriaMetrics with extra command-line flags.
    pub(crate) fn victoria_metrics_with(
        binary: &Path,
        config: &Path,
        data: &Path,
        flags: &[&str],
    ) -> Consumer {
        let port = free_port();
        let child = Command::new(binary)
            .arg(format!("-promscrape.config={}", config.display()))
            .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
            .arg(format!("-storageDataPath={}", data.display()))
            .arg("-promscrape.fileSDCheckInterval=1s")
            .arg("-promscrape.httpSDCheckInterval=1s")
            .arg("-loggerLevel=WARN")
            .args(flags)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start victoria-metrics");
        Consumer::ready(child, port, "victoria-metrics", "/health")
    }

    fn ready(child: Child, port: u16, name: &'static str, path: &str) -> Consumer {
        let consumer = Consumer { child, port, name };
        let addr = format!("127.0.0.1:{port}").parse().expect("addr");
        poll_until(Duration::from_secs(30), &format!("{name} ready"), || {
            std::net::TcpStream::connect(addr).ok()?;
            (request(addr, "GET", path, &[]).status == 200).then_some(())
        });
        consumer
    }

    /// Discovered labels of the dropped targets, per scrape job.
    pub(crate) fn dropped(&self) -> BTreeMap<String, Vec<Labels>> {
        let addr = format!("127.0.0.1:{}", self.port).parse().expect("addr");
        let r = request(addr, "GET", "/api/v1/targets?state=dropped", &[]);
        assert_eq!(r.status, 200, "{} targets API: {}", self.name, r.text());
        let mut by_job: BTreeMap<String, Vec<Labels>> = BTreeMap::new();
        for target in r.json()["data"]["droppedTargets"]
            .as_array()
            .expect("droppedTargets")
        {
            let labels: Labels =
                serde_json::from_value(target["discoveredLabels"].clone()).expect("labels");
            by_job
                .entry(labels["job"].clone())
                .or_default()
                .push(labels);
        }
        by_job
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A temp dir holding a copy of `fixtures/file_sd` under `sd/`, an
/// sdbridge config that serves it with relative patterns, and the bridge.
fn fixture_setup() -> (Dir, Bridge) {
    fixture_setup_from("fixtures/file_sd")
}

/// [`fixture_setup`] for another fixture directory (copied byte for byte:
/// some fixtures are not UTF-8 on purpose).
fn fixture_setup_from(fixtures: &str) -> (Dir, Bridge) {
    let dir = Dir::new();
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(fixtures);
    std::fs::create_dir_all(dir.path("sd")).expect("sd dir");
    for entry in std::fs::read_dir(fixtures).expect("fixtures") {
        let path = entry.expect("entry").path();
        let name = path.file_name().expect("name");
        std::fs::copy(&path, dir.path("sd").join(name)).expect("copy fixture");
    }
    let config = dir.write(
        "sdbridge.yml",
        &format!(
            "jobs:\n  - job_name: fixtures\n    file_sd_configs:\n      - files: [{PATTERNS}]\n"
        ),
    );
    let bridge = Bridge::start(&config);
    (dir, bridge)
}

/// The same patterns for sdbridge and the consumer's own file_sd job, both
/// relative to their config file in the same directory.
const PATTERNS: &str = "sd/*.json, sd/*.yml, sd/*.yaml";

/// The consumer's scrape config; `refresh` is Prometheus's per-SD
/// `refresh_interval` line (VictoriaMetrics rejects it: it takes flags).
fn scrape_config(bridge: &Bridge, refresh: &str) -> String {
    format!(
        "global: {{scrape_interval: 1h}}\nscrape_configs:\n\
         \x20 - job_name: via_file_sd\n    file_sd_configs:\n      - files: [{PATTERNS}]\n{refresh}{DROP_ALL}\
         \x20 - job_name: via_http_sd\n    http_sd_configs:\n      - url: http://{}/http_sd/fixtures\n{refresh}{DROP_ALL}",
        bridge.addr
    )
}

/// Labels that differ by construction: the scrape job's name, the HTTP SD
/// URL, and sdbridge's own job label.
fn normalize(mut labels: Labels) -> Labels {
    for name in ["job", "__meta_url", "__meta_sdbridge_job"] {
        labels.remove(name);
    }
    labels
}

/// Waits until both jobs show the same targets, `expected` of them if
/// given (VictoriaMetrics lists removed targets as dropped for a while, so
/// after a change only equality is checked), and `until` holds.
fn both_sides(
    consumer: &Consumer,
    expected: Option<usize>,
    file_side: impl Fn(Labels) -> Option<Labels>,
    until: impl Fn(&[Labels]) -> bool,
) -> (Vec<Labels>, Vec<Labels>) {
    poll_until(
        Duration::from_secs(60),
        &format!("{} discovery", consumer.name),
        || {
            let mut jobs = consumer.dropped();
            let mut file: Vec<Labels> = jobs
                .remove("via_file_sd")
                .unwrap_or_default()
                .into_iter()
                .filter_map(&file_side)
                .map(normalize)
                .collect();
            let mut http: Vec<Labels> = jobs
                .remove("via_http_sd")
                .unwrap_or_default()
                .into_iter()
                .map(normalize)
                .collect();
            file.sort();
            http.sort();
            if std::env::var_os("SDBRIDGE_E2E_DEBUG").is_some() {
                let only_file: Vec<_> = file.iter().filter(|l| !http.contains(l)).collect();
                let only_http: Vec<_> = http.iter().filter(|l| !file.contains(l)).collect();
                eprintln!(
                    "{} file, {} http; only file: {only_file:?}; only http: {only_http:?}",
                    file.len(),
                    http.len()
                );
            }
            (expected.is_none_or(|n| file.len() == n) && file == http && until(&file))
                .then_some((file, http))
        },
    )
}

fn served_targets(bridge: &Bridge) -> usize {
    crate::util::groups(&bridge.get("/http_sd/fixtures").text())
        .iter()
        .map(|g| g.0.len())
        .sum()
}

fn assert_parity_and_follow_changes(
    refresh: &str,
    consumer_start: impl FnOnce(&Path, &Path) -> Consumer,
    file_side: impl Fn(Labels) -> Option<Labels> + Copy,
) {
    let (dir, bridge) = fixture_setup();
    let expected = served_targets(&bridge);
    assert_eq!(expected, 10, "fixture targets served");
    let config = dir.write("consumer.yml", &scrape_config(&bridge, refresh));
    let consumer = consumer_start(&config, &dir.path("data"));
    let (file, _) = both_sides(&consumer, Some(expected), file_side, |_| true);
    // The fixtures' labels made it through, non-ASCII included.
    assert!(file
        .iter()
        .any(|l| l.get("db_name").map(String::as_str) == Some("세컨더리B")));
    assert!(file.iter().any(|l| l["__address__"] == "[::1]:9100"));

    // A change reaches both sides the same way.
    dir.replace(
        "sd/mysql-primary.json",
        r#"[{"targets": ["127.0.0.1:9100"], "labels": {"db_name": "프라이머리", "role": "demoted"}}]"#,
    );
    dir.write(
        "sd/new.yml",
        "- targets: ['127.0.0.8:9100']\n  labels: {added: 'yes'}\n",
    );
    let changed = |labels: &[Labels]| {
        labels
            .iter()
            .any(|l| l.get("role").map(String::as_str) == Some("demoted"))
            && labels.iter().any(|l| l["__address__"] == "127.0.0.8:9100")
    };
    both_sides(&consumer, None, file_side, changed);
}

#[test]
fn prometheus_sees_the_same_labels_via_http_sd_as_via_file_sd() {
    let binary = require_binary!("prometheus");
    assert_parity_and_follow_changes(
        "        refresh_interval: 1s\n",
        |config, data| Consumer::prometheus(&binary, config, data),
        Some,
    );
}

/// VictoriaMetrics differs from Prometheus in two documented ways, both on
/// its file_sd side: `__meta_filepath` is relative to its config directory
/// (the absolute one is in `__vm_filepath`), and it does not reject files
/// with invalid label names. sdbridge follows Prometheus (CONTRACT 5).
fn victoria_file_side(mut labels: Labels) -> Option<Labels> {
    let absolute = labels.remove("__vm_filepath")?;
    if absolute.ends_with("/invalid.json") {
        return None;
    }
    let relative = labels.insert("__meta_filepath".to_string(), absolute.clone())?;
    assert!(
        absolute.ends_with(&format!("/{relative}")),
        "{absolute} vs {relative}"
    );
    Some(labels)
}

#[test]
fn victoria_metrics_sees_the_same_labels_via_http_sd_as_via_file_sd() {
    let binary = require_binary!("victoria-metrics");
    assert_parity_and_follow_changes(
        "",
        |config, data| Consumer::victoria_metrics(&binary, config, data),
        victoria_file_side,
    );
}

/// Issue 10: the edge cases of `fixtures/file_sd_parity` (merge keys, byte-
/// order marks, UTF-16, YAML 1.1 scalars, `!!binary`, Go's JSON UTF-8
/// repair; and files both must reject) give Prometheus 2.42 reading the
/// files and Prometheus reading sdbridge the same targets and labels.
#[test]
fn prometheus_reads_edge_case_files_as_sdbridge_does() {
    let binary = require_binary!("prometheus");
    let (dir, bridge) = fixture_setup_from("fixtures/file_sd_parity");
    let served = served_targets(&bridge);
    assert_eq!(served, 14, "{}", bridge.get("/http_sd/fixtures").text());
    let config = dir.write(
        "consumer.yml",
        &scrape_config(&bridge, "        refresh_interval: 1s\n"),
    );
    let consumer = Consumer::prometheus(&binary, &config, &dir.path("data"));
    let (file, _) = both_sides(&consumer, Some(served), Some, |_| true);
    let by_address = |address: &str| -> Vec<&Labels> {
        file.iter()
            .filter(|l| l["__address__"] == address)
            .collect()
    };
    // What yaml.v2 made of them, as Prometheus saw it.
    let merged = by_address("127.0.0.2:9100");
    assert_eq!(merged.len(), 2, "{file:?}");
    let explicit = by_address("127.0.0.3:9100")[0];
    assert_eq!(
        (explicit["team"].as_str(), explicit["rack"].as_str()),
        ("db", "r1")
    );
    let listed = by_address("127.0.0.1:9100");
    assert!(listed
        .iter()
        .any(|l| l.get("zone").map(String::as_str) == Some("z1")));
    assert_eq!(by_address("127.0.0.11:9100")[0]["lines"], "서비스");
    let repaired = by_address("127.0.0.13:9100")[0];
    assert_eq!(repaired["truncated"], "\u{fffd}\u{fffd}");
    assert_eq!(repaired["two_highs"], "\u{fffd}\u{10000}");
    let go_keys = by_address("127.0.0.19:9100")[0];
    assert_eq!((go_keys.get("x"), go_keys["y"].as_str()), (None, "2"));
    assert_eq!(by_address("127.0.0.20:9100")[0]["a"], "2");
    let yaml11 = by_address("127.0.0.10:9100")[0];
    assert_eq!(
        (yaml11["bool_yes"].as_str(), yaml11["octal"].as_str()),
        ("yes", "0777")
    );
    // `~` is "" (Prometheus then drops the empty label, on both sides).
    assert!(yaml11.get("tilde").is_none_or(String::is_empty));
}
