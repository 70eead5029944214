//! `?shard=I&of=N` (CONTRACT section 4): shards partition a job, each is
//! its own representation (ETag, 304, gzip), bad parameters get 400, and a
//! real Prometheus's `hashmod` + `keep` keeps exactly the shard sdbridge
//! serves.

use std::collections::BTreeSet;
use std::io::Read;
use std::time::Duration;

use crate::e2e::Consumer;
use crate::util::{groups, poll_until, request, Bridge, Dir};

/// 240 loopback targets in three files, nothing listening on them.
fn fleet(dir: &Dir) -> Vec<String> {
    let mut all = Vec::new();
    for file in 0..3 {
        let targets: Vec<String> = (0..80)
            .map(|i| format!("127.0.{}.{}:{}", file + 1, i + 1, 20_000 + i))
            .collect();
        dir.write(
            &format!("sd/f{file}.json"),
            &serde_json::json!([
                {"targets": targets[..50], "labels": {"rack": format!("r{file}"), "team": "데이터"}},
                {"targets": targets[50..], "labels": {"rack": format!("r{file}b")}},
            ])
            .to_string(),
        );
        all.extend(targets);
    }
    all
}

fn addresses(body: &str) -> Vec<String> {
    groups(body)
        .into_iter()
        .flat_map(|(targets, _)| targets)
        .collect()
}

#[test]
fn shards_partition_the_job_and_each_is_its_own_representation() {
    let dir = Dir::new();
    let all = fleet(&dir);
    let config = dir.write(
        "sdbridge.yml",
        "jobs:\n  - job_name: fleet\n    file_sd_configs: [{files: ['sd/*.json']}]\n",
    );
    let bridge = Bridge::start(&config);
    let whole = bridge.get("/http_sd/fleet");
    let whole_groups = groups(&whole.text());
    for of in [1, 3, 7] {
        let mut seen = Vec::new();
        let mut etags = BTreeSet::new();
        for shard in 0..of {
            let path = format!("/http_sd/fleet?shard={shard}&of={of}");
            let r = bridge.get(&path);
            assert_eq!(r.status, 200, "{path}: {}", r.text());
            assert_eq!(r.header("content-type"), Some("application/json"));
            for (targets, labels) in groups(&r.text()) {
                assert!(!targets.is_empty(), "{path}: an empty group");
                // Every group's labels are one of the job's groups' labels.
                assert!(
                    whole_groups
                        .iter()
                        .any(|(t, l)| *l == labels && targets.iter().all(|a| t.contains(a))),
                    "{path}: {labels:?}"
                );
            }
            seen.extend(addresses(&r.text()));
            let etag = r.header("etag").expect("etag").to_string();
            etags.insert(etag.clone());
            let again = bridge.request("GET", &path, &[("If-None-Match", &etag)]);
            assert_eq!(again.status, 304, "{path}");
            let gz = bridge.request("GET", &path, &[("Accept-Encoding", "gzip")]);
            assert_eq!(gz.header("content-encoding"), Some("gzip"), "{path}");
            assert_ne!(
                gz.header("etag"),
                Some(etag.as_str()),
                "{path}: the gzip ETag"
            );
            let mut unzipped = String::new();
            flate2::read::GzDecoder::new(&gz.body[..])
                .read_to_string(&mut unzipped)
                .expect("gunzip");
            assert_eq!(unzipped, r.text(), "{path}");
        }
        let mut sorted = seen.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), seen.len(), "of={of}: a target in two shards");
        let mut want = all.clone();
        want.sort();
        assert_eq!(sorted, want, "of={of}: the shards are not the job");
        if of > 1 {
            assert_eq!(etags.len(), of, "of={of}: shards share an ETag");
        }
    }
    // The merged endpoint shards too.
    let r = bridge.get("/http_sd?shard=0&of=2");
    assert_eq!(r.status, 200);
    assert_eq!(
        addresses(&r.text()),
        addresses(&bridge.get("/http_sd/fleet?shard=0&of=2").text())
    );
    // A changed file changes the shards.
    let before = bridge.get("/http_sd/fleet?shard=1&of=3").text();
    dir.replace("sd/f0.json", "[]");
    let after = bridge.wait_body("/http_sd/fleet?shard=1&of=3", "the change", |b| b != before);
    assert!(addresses(&after).iter().all(|a| !a.starts_with("127.0.1.")));
}

#[test]
fn bad_shard_parameters_get_a_400_naming_the_problem() {
    let dir = Dir::new();
    let config = dir.write(
        "sdbridge.yml",
        "jobs:\n  - job_name: app\n    static_configs: [{targets: ['127.0.0.1:1']}]\n",
    );
    let bridge = Bridge::start(&config);
    for (query, want) in [
        ("shard=2&of=2", "shard=2 is out of range"),
        ("shard=0&of=0", "of=0 is out of range"),
        ("shard=0&of=1025", "of=1025 is out of range"),
        ("shard=0", "shard needs of=N"),
        ("of=2", "of needs shard=I"),
        ("shard=x&of=2", "not a non-negative integer"),
        ("shard=1&shard=0&of=2", "more than once"),
    ] {
        for path in ["/http_sd/app", "/http_sd"] {
            let r = bridge.get(&format!("{path}?{query}"));
            assert_eq!(r.status, 400, "{path}?{query}");
            assert_eq!(r.json()["status"], "error");
            assert!(
                r.json()["error"].as_str().unwrap_or("").contains(want),
                "{query}: {}",
                r.text()
            );
        }
    }
    // Parameters mean nothing elsewhere.
    assert_eq!(bridge.get("/-/ready?shard=9&of=2").status, 200);
}

#[test]
fn prometheus_hashmod_keeps_exactly_the_shard_sdbridge_serves() {
    let binary = require_binary!("prometheus");
    let dir = Dir::new();
    fleet(&dir);
    let config = dir.write(
        "sdbridge.yml",
        "jobs:\n  - job_name: fleet\n    file_sd_configs: [{files: ['sd/*.json']}]\n",
    );
    let bridge = Bridge::start(&config);
    const OF: u64 = 3;
    // One scrape job per shard, each keeping its share of the files. The
    // hour-long interval and nothing listening on the targets' ports keep
    // them from scraping anything (CONTRACT section 7).
    let mut scrape = String::from("global: {scrape_interval: 1h}\nscrape_configs:\n");
    for shard in 0..OF {
        scrape.push_str(&format!(
            "  - job_name: shard{shard}\n    file_sd_configs: [{{files: ['{}/sd/*.json']}}]\n    relabel_configs:\n      - {{source_labels: [__address__], modulus: {OF}, target_label: __tmp_hash, action: hashmod}}\n      - {{source_labels: [__tmp_hash], regex: '{shard}', action: keep}}\n",
            dir.root()
        ));
    }
    let prom_config = dir.write("prometheus.yml", &scrape);
    let prometheus = Consumer::prometheus(&binary, &prom_config, &dir.path("data"));
    let addr = format!("127.0.0.1:{}", prometheus.port)
        .parse()
        .expect("addr");
    let kept = poll_until(
        Duration::from_secs(60),
        "prometheus's active targets",
        || {
            let r = request(addr, "GET", "/api/v1/targets?state=active", &[]);
            let active = r.json()["data"]["activeTargets"].as_array()?.clone();
            (active.len() == 240).then_some(active)
        },
    );
    for shard in 0..OF {
        let mut by_prometheus: Vec<String> = kept
            .iter()
            .filter(|t| t["labels"]["job"] == format!("shard{shard}"))
            .map(|t| {
                t["discoveredLabels"]["__address__"]
                    .as_str()
                    .unwrap_or("")
                    .to_string()
            })
            .collect();
        by_prometheus.sort();
        let mut by_sdbridge = addresses(
            &bridge
                .get(&format!("/http_sd/fleet?shard={shard}&of={OF}"))
                .text(),
        );
        by_sdbridge.sort();
        assert!(!by_sdbridge.is_empty());
        assert_eq!(by_prometheus, by_sdbridge, "shard {shard}");
    }
}

/// Regression: the first request for a modulus cut the body on an async
/// worker, so a client cycling through more moduli than are kept stalled
/// every answer, probes included, for the length of a cut.
#[test]
fn probes_answer_while_clients_cycle_through_moduli() {
    let (_dir, bridge) = crate::util::big_fleet();
    let bridge = std::sync::Arc::new(bridge);
    // What one cut costs here (a debug build is slow).
    let started = std::time::Instant::now();
    assert_eq!(bridge.get("/http_sd/big?shard=0&of=97").status, 200);
    let cut = started.elapsed();
    // Five moduli per client, more than are kept: every request cuts anew.
    let slowest = crate::util::slowest_probe_while(&bridge, cut, |c, n| {
        format!("/http_sd/big?shard=0&of={}", 2 + c * 5 + n % 5)
    });
    assert!(
        slowest < cut / 4,
        "a probe took {slowest:?} while clients cut shards (one cut: {cut:?})"
    );
}

/// `assign=jump`: the shards still partition the job, and going from N
/// to N+1 scrapers moves only targets into the new shard.
#[test]
fn jump_shards_partition_the_job_and_move_little_on_resharding() {
    let dir = Dir::new();
    let all = fleet(&dir);
    let config = dir.write(
        "sdbridge.yml",
        "jobs:\n  - job_name: db\n    file_sd_configs: [{files: [sd/*.json]}]\n",
    );
    let bridge = Bridge::start(&config);
    let owner = |n: u64| -> std::collections::HashMap<String, u64> {
        let mut owner = std::collections::HashMap::new();
        for i in 0..n {
            let r = bridge.get(&format!("/http_sd/db?shard={i}&of={n}&assign=jump"));
            assert_eq!(r.status, 200);
            for t in addresses(&r.text()) {
                assert!(owner.insert(t, i).is_none(), "a target in two shards");
            }
        }
        assert_eq!(owner.len(), all.len(), "every target in one shard");
        owner
    };
    let (four, five) = (owner(4), owner(5));
    let moved: Vec<&String> = all.iter().filter(|t| four[*t] != five[*t]).collect();
    for t in &moved {
        assert_eq!(five[*t], 4, "{t} moved to an old shard");
    }
    // About a fifth; hashmod moves about four fifths.
    assert!(
        moved.len() < all.len() / 3,
        "{} of {} moved",
        moved.len(),
        all.len()
    );
    let bad = bridge.get("/http_sd/db?shard=0&of=2&assign=ring");
    assert_eq!(bad.status, 400);
    assert!(bad.text().contains("assign"), "{}", bad.text());
}
