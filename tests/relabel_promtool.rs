//! `relabel_configs` against real Prometheus 2.42 (Debian's `promtool`):
//! the same rules accepted and refused (`promtool check config` against
//! `sdbridge check`), and the same targets and labels after relabelling
//! (`promtool check service-discovery` against `relabel::process`).

use std::collections::BTreeMap;
use std::process::Command;

use sdbridge::config::Config;
use sdbridge::relabel::{process, Labels, Outcome};

use crate::util::{run_cli, Dir};

/// Rules (YAML flow style), each alone in a job's `relabel_configs`: every
/// action valid and invalid, missing and extra fields, bad target labels,
/// and regexes Go's RE2 and the Rust `regex` crate read differently.
const RULES: &[&str] = &[
    // Valid: every action.
    "{source_labels: [env], target_label: e}",
    "{action: keep, source_labels: [env], regex: 'prod|dev'}",
    "{action: drop, source_labels: [env], regex: never}",
    "{action: keepequal, source_labels: [env], target_label: env}",
    "{action: dropequal, source_labels: [env], target_label: other}",
    "{action: hashmod, source_labels: [__address__], target_label: h, modulus: 8}",
    "{action: labelmap, regex: 'e(n)v', replacement: 'x_$1'}",
    "{action: labeldrop, regex: foo}",
    "{action: labelkeep, regex: '.*'}",
    "{action: lowercase, source_labels: [env], target_label: l}",
    "{action: uppercase, source_labels: [env], target_label: u}",
    // Valid: defaults written out, case, templates, nulls, yaml.v2 floats.
    "{action: Replace, target_label: t}",
    "{target_label: '${1}x', source_labels: [env], regex: '(.*)'}",
    "{action: lowercase, source_labels: [env], target_label: '${1}'}",
    "{action: labeldrop, regex: foo, source_labels: ~, separator: ';'}",
    "{action: keepequal, source_labels: [env], target_label: env, separator: ';', replacement: $1}",
    "{target_label: t, regex: ~}",
    "{target_label: t, source_labels: [a, ~], separator: ~}",
    "{action: hashmod, source_labels: [a], target_label: h, modulus: 2.5}",
    "{action: hashmod, source_labels: [a], target_label: h, modulus: -1.5}",
    // Valid in Go, read differently or refused by the regex crate.
    r"{target_label: t, regex: '\Qa.b\E|\012|x{,2}|y{01}|\pL|[[:alpha:]]'}",
    "{target_label: t, regex: '(?i-i)a(?)(?ii)b'}",
    "{target_label: t, regex: '[a&&b][[]|[a~~b]'}",
    r"{target_label: t, regex: '\x{D800}|a'}",
    "{target_label: t, regex: '(?P<1x>a)(?P<n>b)(?P<n>c)'}",
    r"{target_label: t, regex: '\b{start}\<\>\_'}",
    r"{target_label: t, regex: '\p{Greek}\PL\p{^Han}\pC'}",
    "{target_label: t, regex: 'a{1000}'}",
    "{target_label: t, regex: 'a)|(b'}",
    // Invalid: missing and extra fields.
    "{}",
    "{action: hashmod, source_labels: [a], target_label: h}",
    "{action: hashmod, source_labels: [a], target_label: h, modulus: -0.5}",
    "{action: hashmod, modulus: 2}",
    "{action: lowercase, source_labels: [a]}",
    "{action: keepequal, source_labels: [a]}",
    "{action: dropequal, source_labels: [a], target_label: ''}",
    "{action: uppercase, source_labels: [a], target_label: a, replacement: ''}",
    "{action: keep, source_labels: [a], regex: '(a'}",
    "{action: drop, source_labels: [a], regex: 'a**'}",
    "{action: lowercase, target_label: a, replacement: x}",
    "{action: keepequal, source_labels: [a], target_label: b, regex: '(.*)'}",
    "{action: dropequal, source_labels: [a], target_label: b, replacement: ~}",
    "{action: labeldrop, source_labels: []}",
    "{action: labelkeep, regex: x, target_label: y}",
    "{target_label: a, regexp: x}",
    "{target_label: a, modulus: '3'}",
    // Invalid: target labels and replacements.
    "{action: hashmod, modulus: 2, target_label: '$1'}",
    "{target_label: '-x'}",
    "{target_label: 'a b'}",
    "{action: labelmap, replacement: 'a-$1'}",
    "{target_label: a, source_labels: [bad-name]}",
    // Invalid: actions.
    "{action: foo}",
    "{action: '', target_label: a}",
    "{action: ~, target_label: a}",
    // Invalid in Go (some accepted by the regex crate).
    "{target_label: a, regex: '(?<n>a)'}",
    "{target_label: a, regex: 'a**'}",
    "{target_label: a, regex: 'a*+'}",
    r"{target_label: a, regex: '\p{greek}'}",
    r"{target_label: a, regex: '\p{Letter}'}",
    "{target_label: a, regex: '(a'}",
    "{target_label: a, regex: 'a)'}",
    "{target_label: a, regex: 'a{1001}'}",
    "{target_label: a, regex: '(a{100}){100}'}",
    r"{target_label: a, regex: '\Z'}",
    r"{target_label: a, regex: '\e'}",
    r"{target_label: a, regex: '\1'}",
    "{target_label: a, regex: '(?x)a'}",
    "{target_label: a, regex: '(?=a)'}",
    "{target_label: a, regex: '[z-a]'}",
    "~",
];

/// Issue 20: `sdbridge check` accepts exactly the rules `promtool check
/// config` accepts.
#[test]
fn rules_accepted_and_refused_as_promtool_does() {
    let promtool = require_binary!("promtool");
    let dir = Dir::new();
    let (mut accepted, mut refused) = (0, 0);
    let mut disagree = Vec::new();
    for rule in RULES {
        let job = format!(
            "  - job_name: x\n    static_configs: [{{targets: ['127.0.0.1:1']}}]\n    relabel_configs:\n      - {rule}\n"
        );
        let prometheus = dir.write("prometheus.yml", &format!("scrape_configs:\n{job}"));
        let sdbridge = dir.write("sdbridge.yml", &format!("jobs:\n{job}"));
        let theirs = Command::new(&promtool)
            .args(["check", "config"])
            .arg(&prometheus)
            .output()
            .expect("run promtool");
        let ours = run_cli(None, ["check".as_ref(), sdbridge.as_os_str()]);
        let promtool_ok = theirs.status.success();
        if promtool_ok {
            accepted += 1;
        } else {
            refused += 1;
        }
        // Until the bridge runs rules (contract section 5a), valid rules
        // get exactly one error: that they are not run yet.
        let stdout = String::from_utf8_lossy(&ours.stdout);
        let ours_ok = ours.status.success()
            || (stdout.contains("the rules are valid, but sdbridge does not run them yet")
                && stdout.contains(" 1 error(s) in the config"));
        if ours_ok != promtool_ok {
            disagree.push(format!(
                "{rule}\n  promtool: {}  sdbridge: {}",
                String::from_utf8_lossy(&theirs.stdout).trim(),
                String::from_utf8_lossy(&ours.stdout).trim()
            ));
        }
    }
    assert!(disagree.is_empty(), "{}", disagree.join("\n"));
    assert!(
        accepted >= 25 && refused >= 25,
        "{accepted} accepted, {refused} refused"
    );
}

/// Static targets and their labels, for every scenario below.
const TARGETS: &str = r#"      - targets: ['127.0.0.1:9100', '127.0.0.2:9100']
        labels: {env: prod, digits: "١٢٣", word: "é_x", space: "a\vb", kelvin: "\u212A", svc: "Straße", path: /a/b, __meta_tags: ",web,db,", port: "9100", multi: "a\nb"}
      - targets: ['127.0.0.3:8080']
        labels: {env: dev, digits: "123", word: "abc", space: "a b", kelvin: K, svc: "ΟΔΟΣ", path: /c, __meta_tags: ",db,", port: "9100", multi: ab}
      - targets: ['[::1]:9100']
        labels: {env: test, svc: "İx", __meta_tags: ",,"}
"#;

/// Rule lists, each run by Prometheus on `TARGETS` and by sdbridge on the
/// labels Prometheus discovered.
const SCENARIOS: &[&str] = &[
    r"[{source_labels: [env, __address__], separator: '@', regex: '(.*)@(.*):(\d+)', target_label: hostport, replacement: '${2}-$3-$1'}]",
    r"[{source_labels: [digits], regex: '\d+', target_label: d_ascii, replacement: yes}, {source_labels: [digits], regex: '\pN+', target_label: d_unicode, replacement: yes}]",
    r"[{source_labels: [word], regex: '\w+', target_label: w, replacement: m}, {source_labels: [space], regex: 'a\sb', target_label: s, replacement: m}, {source_labels: [word], regex: '(.*?)\b(.*)', target_label: b, replacement: '$1|$2'}]",
    r"[{source_labels: [kelvin], regex: '(?i)k', target_label: k, replacement: m}, {source_labels: [svc], regex: '(?i)straSSe|\pL+', target_label: l, replacement: m}, {source_labels: [svc], regex: '[[:alpha:]]+', target_label: a, replacement: m}]",
    r"[{source_labels: [path], regex: '\Q/a/\Eb', target_label: q, replacement: ok}, {source_labels: [path], regex: '\057a\057b', target_label: o, replacement: ok}, {source_labels: [env], regex: 'prod{,2}|dev', target_label: br, replacement: ok}]",
    "[{regex: '__meta_(.+)', replacement: 'meta_$1', action: labelmap}, {regex: 'e(n)v', replacement: 'x_${1}', action: labelmap}]",
    "[{regex: 'digits|word', action: labeldrop}, {regex: '__.*|env|job|svc', action: labelkeep}]",
    r"[{source_labels: [__address__], target_label: __tmp_h, modulus: 3, action: hashmod}, {source_labels: [__tmp_h], target_label: h}, {source_labels: [__tmp_h], regex: '0|1', action: keep}]",
    "[{source_labels: [svc], target_label: up, action: uppercase}, {source_labels: [kelvin, svc], target_label: low, action: lowercase}]",
    r"[{source_labels: [__address__], regex: '.*:(\d+)', target_label: __tmp_port}, {source_labels: [__tmp_port], action: keepequal, target_label: port}]",
    "[{source_labels: [env], action: dropequal, target_label: __meta_x}, {source_labels: [env, port], separator: ':', regex: 'dev:.*', action: drop}]",
    "[{source_labels: [__meta_tags], regex: ',([a-z]+),.*', target_label: 'tag_${1}', replacement: first}, {source_labels: [env], regex: '(p)?.*', target_label: '${1}', replacement: v}, {source_labels: [env], regex: dev, target_label: env, replacement: ''}]",
    r"[{source_labels: [__address__], regex: '(?P<host>[^:]+):(?P<port>\d+)', target_label: hp, replacement: '${port}/${host}/$1x'}, {source_labels: [__address__], regex: 'x)|(127', target_label: pre, replacement: '<$1>'}]",
    r"[{source_labels: [multi], regex: 'a.b', target_label: dot, replacement: m}, {source_labels: [multi], regex: '(?s)a.b', target_label: sdot, replacement: m}, {source_labels: [multi], regex: '(?m)a$\n^b', target_label: ml, replacement: m}]",
    r"[{source_labels: [svc], regex: '(?i)(ς|σ)+.*|.*(\x{3c3})', target_label: sigma, replacement: '[$1$2]'}, {source_labels: [env], regex: 'p(r)?(x)?od', target_label: opt, replacement: '$1-$2-$3'}]",
    // Names that are not label names, made as Prometheus makes them.
    "[{regex: 'env(.*)', replacement: '$1', action: labelmap}, {source_labels: [env], target_label: '${1}', action: lowercase}]",
];

/// Prometheus's `PopulateLabels` after relabelling, for targets with a
/// port: dropped (or without an address) is no labels; `__meta_*` go;
/// `instance` defaults to the address.
fn as_prometheus_serves(labels: Labels, outcome: Outcome) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = labels.into_pairs().into_iter().collect();
    if outcome != Outcome::Kept || !out.contains_key("__address__") {
        return BTreeMap::new();
    }
    out.retain(|name, _| !name.starts_with("__meta_"));
    if !out.contains_key("instance") {
        let address = out["__address__"].clone();
        out.insert("instance".into(), address);
    }
    out
}

/// Issue 20: the targets Prometheus keeps, with the labels it gives them,
/// are the ones `relabel::process` keeps, with the same labels.
#[test]
fn targets_relabelled_as_prometheus_does() {
    let promtool = require_binary!("promtool");
    let dir = Dir::new();
    let mut jobs = String::new();
    for (i, rules) in SCENARIOS.iter().enumerate() {
        jobs.push_str(&format!(
            "  - job_name: j{i}\n    static_configs:\n{TARGETS}    relabel_configs: {rules}\n"
        ));
    }
    let prometheus = dir.write("prometheus.yml", &format!("scrape_configs:\n{jobs}"));
    let config = Config::parse_with_rules(&format!("jobs:\n{jobs}"), &dir.path("sdbridge.yml"))
        .expect("the scenarios are valid sdbridge config");
    let mut kept = 0;
    for (i, job) in config.jobs.iter().enumerate() {
        let out = Command::new(&promtool)
            .args(["check", "service-discovery", "--timeout=2s"])
            .arg(&prometheus)
            .arg(format!("j{i}"))
            .output()
            .expect("run promtool");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{}: {stdout}", SCENARIOS[i]);
        let targets: Vec<serde_json::Value> =
            serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
        assert_eq!(targets.len(), 4, "{stdout}");
        for target in targets {
            let discovered: BTreeMap<String, String> =
                serde_json::from_value(target["discoveredLabels"].clone()).expect("labels");
            let theirs: BTreeMap<String, String> =
                serde_json::from_value(target["labels"].clone()).expect("labels");
            let mut labels = Labels::from_pairs(discovered.clone());
            let outcome = process(&mut labels, &job.relabel_configs);
            let ours = as_prometheus_serves(labels, outcome);
            assert_eq!(
                ours, theirs,
                "rules {}\non {discovered:?}\n(ours, Prometheus's)",
                SCENARIOS[i]
            );
            kept += usize::from(!ours.is_empty());
        }
    }
    // Most targets survive the scenarios, some do not.
    assert!(
        kept > SCENARIOS.len() * 2 && kept < SCENARIOS.len() * 4,
        "{kept}"
    );
}
