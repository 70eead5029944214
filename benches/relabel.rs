//! Relabelling one source part: 10 Consul-like targets through 8 rules of
//! mixed actions (keep, replace with templates, labelmap, hashmod,
//! lowercase, labeldrop, drop).
//!
//! `cargo bench --bench relabel`; the number is recorded in
//! bench/README.md.

use std::hint::black_box;
use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sdbridge::config::Config;
use sdbridge::relabel::{process, Labels, Outcome, Rule};

const RULES: &str = r"
      - {source_labels: [__meta_consul_tags], regex: '.*,prometheus,.*', action: keep}
      - {source_labels: [__meta_consul_service], target_label: service}
      - {source_labels: [__address__], regex: '(.+):(\d+)', target_label: __address__, replacement: '${1}:9100'}
      - {regex: '__meta_consul_service_metadata_(.+)', replacement: 'meta_$1', action: labelmap}
      - {source_labels: [__address__], target_label: __tmp_hash, modulus: 4, action: hashmod}
      - {source_labels: [__meta_consul_dc], target_label: dc, action: lowercase}
      - {regex: '__tmp_.*', action: labeldrop}
      - {source_labels: [env], regex: staging, action: drop}
";

fn rules() -> Vec<Rule> {
    let text = format!(
        "jobs:\n  - job_name: bench\n    static_configs: [{{targets: ['127.0.0.1:1']}}]\n    relabel_configs:{RULES}"
    );
    let config = Config::parse(&text, Path::new("/tmp/sdbridge.yml")).expect("valid rules");
    config
        .jobs
        .into_iter()
        .next()
        .expect("a job")
        .relabel_configs
}

/// Ten targets of one part, labelled as Consul's are.
fn part() -> Vec<Labels> {
    (0..10)
        .map(|i| {
            Labels::from_pairs([
                (
                    "__address__".to_string(),
                    format!("127.0.0.{}:{}", i + 1, 8000 + i),
                ),
                ("__meta_consul_address".into(), format!("127.0.0.{}", i + 1)),
                ("__meta_consul_dc".into(), "DC1".into()),
                ("__meta_consul_node".into(), format!("node-{i}")),
                ("__meta_consul_service".into(), "web".into()),
                (
                    "__meta_consul_service_address".into(),
                    format!("127.0.0.{}", i + 1),
                ),
                ("__meta_consul_service_id".into(), format!("web-{i}")),
                (
                    "__meta_consul_service_metadata_team".into(),
                    "payments".into(),
                ),
                (
                    "__meta_consul_service_metadata_version".into(),
                    format!("1.{i}"),
                ),
                ("__meta_consul_service_port".into(), format!("{}", 8000 + i)),
                ("__meta_consul_tags".into(), ",prometheus,http,".into()),
                ("__meta_consul_health".into(), "passing".into()),
                ("env".into(), if i == 9 { "staging" } else { "prod" }.into()),
            ])
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let rules = rules();
    assert_eq!(rules.len(), 8);
    let input = part();
    // The part as the bench expects it: 9 kept, relabelled; 1 dropped.
    let kept = input
        .iter()
        .filter(|l| process(&mut (*l).clone(), &rules) == Outcome::Kept)
        .count();
    assert_eq!(kept, 9);

    let mut group = c.benchmark_group("relabel");
    group.throughput(Throughput::Elements(input.len() as u64));
    group.bench_function("part_10_targets_8_rules", |b| {
        b.iter_batched(
            || input.clone(),
            |mut targets| {
                for labels in &mut targets {
                    black_box(process(labels, &rules));
                }
                targets
            },
            criterion::BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
