//! Config parsing: strictness, positions, refusals, limits.

use std::time::Duration;

use super::*;

fn parse(text: &str) -> Result<Config, String> {
    Config::parse(text, Path::new("/etc/sdbridge/sdbridge.yml")).map_err(|e| e.to_string())
}

#[test]
fn defaults_and_path_resolution() {
    let c = parse(
        "jobs:\n  - job_name: mysql\n    file_sd_configs:\n      - files: [sd/*.json, /abs/x.yml, ../up/*.yaml]\n",
    )
    .unwrap();
    assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
    let f = &c.jobs[0].file_sd_configs[0];
    assert_eq!(
        f.files,
        ["/etc/sdbridge/sd/*.json", "/abs/x.yml", "/etc/up/*.yaml"]
    );
    assert_eq!(f.refresh_interval.0, Duration::from_secs(300));
    assert_eq!(c.state_dir, None);
    let s = parse("state_dir: state\n").unwrap();
    assert_eq!(s.state_dir, Some(PathBuf::from("/etc/sdbridge/state")));
    let s = parse("state_dir: /var/lib/sdbridge\n").unwrap();
    assert_eq!(s.state_dir, Some(PathBuf::from("/var/lib/sdbridge")));
}

#[test]
fn relative_config_path_gives_relative_patterns_like_prometheus() {
    let c = Config::parse(
        "jobs: [{job_name: a, file_sd_configs: [{files: [sd/*.json]}]}]",
        Path::new("examples/seed.yml"),
    )
    .unwrap();
    assert_eq!(c.jobs[0].file_sd_configs[0].files, ["examples/sd/*.json"]);
}

#[test]
fn errors_carry_file_line_column() {
    let cases = [
        (
            "jobs:\n  - job_name: a\n    bogus: 1\n",
            "/etc/sdbridge/sdbridge.yml:3:5: jobs[0]: unknown field `bogus`",
        ),
        (
            "jobs:\n  - job_name: a\n    static_configs: [{targets: [x]}, ~]\n",
            ":3:38: jobs[0].static_configs[1]: empty or null section",
        ),
        (
            "jobs:\n  - job_name: a\n    file_sd_configs:\n      -\n",
            ":4:8: jobs[0].file_sd_configs[0]: empty or null section",
        ),
        (
            "jobs:\n  - job_name: a\n    static_config: []\n",
            ":3:5: jobs[0]: unknown field `static_config`, did you mean `static_configs`?",
        ),
        (
            "jobs:\n  - job_name: a\n    file_sd_configs: [{files: [a.json], refresh_intervall: 1m}]\n",
            "jobs[0].file_sd_configs[0]: unknown field `refresh_intervall`, did you mean `refresh_interval`?",
        ),
        (
            "jobs:\n  - job_name: a\n    static_configs: [{targets: [x], <<: {labelz: {}}}]\n",
            ":3:42: jobs[0].static_configs[0]: unknown field `labelz`, did you mean `labels`?",
        ),
        (
            "jobs:\n  - job_name: a\n    static_configs:\n      - targets: [x]\n        labels: {ok: 1, bad-name: 2}\n",
            "/etc/sdbridge/sdbridge.yml:5:17: jobs[0].static_configs[0].labels: \"bad-name\" is not a valid label name",
        ),
        (
            "jobs:\n  - job_name: a\n  - job_name: b\n  - job_name: a\n",
            "/etc/sdbridge/sdbridge.yml:4:15: found multiple jobs with job_name \"a\"",
        ),
        (
            "jobs:\n  - job_name: a\n    file_sd_configs:\n      - files: ['sd/*/x.json']\n",
            "/etc/sdbridge/sdbridge.yml:4:17: jobs[0].file_sd_configs[0].files[0]: path name \"sd/*/x.json\" is not valid for file discovery",
        ),
        (
            "jobs:\n  - job_name: a\n    file_sd_configs:\n      - files: ['sd/x.txt']\n",
            "path name \"sd/x.txt\" is not valid for file discovery",
        ),
        (
            "jobs:\n  - job_name: a\n    file_sd_configs:\n      - files: ['sd/[x.json']\n",
            "syntax error in pattern",
        ),
        (
            "jobs:\n  - job_name: a\n    file_sd_configs:\n      - files: []\n",
            "must contain at least one path name",
        ),
        (
            "jobs:\n  - job_name: a\n    file_sd_configs:\n      - files: [a.json]\n        refresh_interval: 5x\n",
            "/etc/sdbridge/sdbridge.yml:5:27: jobs[0].file_sd_configs[0].refresh_interval: not a valid duration string",
        ),
        (
            "jobs:\n  - job_name: a\n    consul_sd_configs: [{server: 127.0.0.1:8500, x: 1}]\n",
            "jobs[0].consul_sd_configs[0]: unknown field `x`",
        ),
        (
            "jobs:\n  - job_name: a\n    metric_relabel_configs: []\n",
            "jobs[0].metric_relabel_configs: is a scrape setting",
        ),
        (
            "jobs:\n  - job_name: a\n    relabel_configs: [{action: drop, regex: '(?<n>x)'}]\n",
            ":3:45: jobs[0].relabel_configs[0].regex: error parsing regexp: invalid or unsupported Perl syntax: `(?<`",
        ),
        (
            "jobs:\n  - job_name: a\n    relabel_configs: [{action: drop, regex: x, source_labels: [a]}]\n",
            ":3:22: jobs[0].relabel_configs: the rules are valid, but sdbridge does not run them yet",
        ),
        ("jobs:\n  - job_name: [a]\n", ":2:15: jobs[0].job_name: invalid type"),
        ("listen: nope\n", ":1:9: listen: invalid socket address syntax"),
        ("jobs:\n  - job_name: ''\n", ":2:15: job_name is empty"),
        ("state_dir: ''\n", ":1:12: state_dir: must not be empty"),
        (
            "limits: {max_input_size: 5XB}\n",
            ":1:26: limits.max_input_size: \"5XB\": unknown unit",
        ),
        (
            "limits: {max_input: 1KB}\n",
            "limits: unknown field `max_input`",
        ),
        (
            "jobs:\n  - job_name: a\n    http_sd_configs: [{url: 'ftp://127.0.0.1/x'}]\n",
            ":3:29: jobs[0].http_sd_configs[0].url: URL scheme must be 'http' or 'https'",
        ),
        (
            "jobs:\n  - job_name: a\n    http_sd_configs: [{url: 'http://127.0.0.1/x', oauth2: {}}]\n",
            "jobs[0].http_sd_configs[0].oauth2: not supported by sdbridge yet",
        ),
        (
            "jobs:\n  - job_name: a\n    http_sd_configs: [{url: 'http://127.0.0.1/x', authorization: {type: Basic}}]\n",
            "use \"basic_auth\" instead",
        ),
    ];
    for (text, want) in cases {
        let err = parse(text).unwrap_err();
        assert!(
            err.contains(want),
            "config:\n{text}\nwant: {want}\ngot:  {err}"
        );
    }
}

#[test]
fn limits_reach_every_source_that_reads_input() {
    let c = parse(
        "limits: {max_input_size: 1KB}\njobs:\n  - job_name: a\n    file_sd_configs: [{files: [a.json]}]\n    consul_sd_configs: [{server: '127.0.0.1:8500'}]\n    http_sd_configs: [{url: 'http://127.0.0.1:1/sd'}]\n",
    )
    .unwrap();
    let job = &c.jobs[0];
    assert_eq!(job.file_sd_configs[0].max_input_size, 1024);
    assert_eq!(job.consul_sd_configs[0].max_input_size, 1024);
    assert_eq!(job.http_sd_configs[0].max_input_size, 1024);
    let d = parse("jobs:\n  - job_name: a\n    file_sd_configs: [{files: [a.json]}]\n").unwrap();
    assert_eq!(d.jobs[0].file_sd_configs[0].max_input_size, 64 << 20);
}

/// Issue 10: the duplicate's own `job_name`, found by the parser, not
/// by searching the text (an earlier label named `job_name`, flow
/// style and merge keys used to defeat the search).
#[test]
fn duplicate_job_names_point_at_the_duplicate() {
    let cases = [
        (
            "jobs:\n  - job_name: a\n    static_configs:\n      - targets: [x]\n        labels:\n          job_name: z\n  - job_name: a\n",
            ":7:15: found multiple jobs with job_name \"a\"",
        ),
        (
            "jobs: [{job_name: a}, {job_name: b},\n  {static_configs: [], job_name: a}]\n",
            ":2:34: found multiple jobs with job_name \"a\"",
        ),
        (
            "jobs:\n  - &j {job_name: a}\n  - <<: *j\n",
            ":3:5: found multiple jobs with job_name \"a\"",
        ),
    ];
    for (text, want) in cases {
        let err = parse(text).unwrap_err();
        assert!(
            err.ends_with(want),
            "config:\n{text}\nwant: {want}\ngot:  {err}"
        );
    }
}

/// Issue 10: promtool accepts merge keys in static_configs (checked
/// against Prometheus 2.42 in tests/cli.rs).
#[test]
fn merge_keys_in_static_configs() {
    let c = parse(
        "defaults: &d\n  labels: {env: prod}\njobs:\n  - job_name: a\n    static_configs:\n      - <<: *d\n        targets: ['127.0.0.1:1']\n",
    );
    // sdbridge has no `defaults` key: anchors live in the values.
    assert!(c.unwrap_err().contains("unknown field `defaults`"));
    let c = parse(
        "jobs:\n  - job_name: a\n    static_configs:\n      - &g {targets: ['127.0.0.1:1'], labels: {env: prod}}\n      - <<: *g\n        targets: ['127.0.0.1:2']\n",
    )
    .unwrap();
    let g = &c.jobs[0].static_configs;
    assert_eq!(g[1].targets, ["127.0.0.1:2"]);
    assert_eq!(g[1].labels.0["env"], "prod");
}

#[test]
fn check_finds_every_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.yml");
    std::fs::write(
        &path,
        "limits: {max_input_size: 1KB}\nlisten: nope\njobs:\n  - job_name: a\n    bogus: 1\n    static_configs: [{targets: [x]}, {targets: [y], labelz: {}}]\n    file_sd_configs: [{files: [x.txt]}]\n  - job_name: ok\n    file_sd_configs: [{files: [sd/*.json]}]\n  - job_name: a\n",
    )
    .unwrap();
    let (jobs, errors) = Config::check(&path);
    let errors: Vec<String> = errors
        .iter()
        .map(|e| e.to_string().replace(&path.display().to_string(), "c.yml"))
        .collect();
    assert_eq!(
        errors,
        [
            "c.yml:2:9: listen: invalid socket address syntax",
            "c.yml:5:5: jobs[0]: unknown field `bogus`",
            "c.yml:6:53: jobs[0].static_configs[1]: unknown field `labelz`, did you mean `labels`?",
            "c.yml:7:32: jobs[0].file_sd_configs[0].files[0]: path name \"x.txt\" is not valid for file discovery",
            "c.yml:10:15: found multiple jobs with job_name \"a\"",
        ]
    );
    // The valid jobs, resolved, with the limits.
    let names: Vec<&str> = jobs.iter().map(|j| j.job_name.as_str()).collect();
    assert_eq!(names, ["ok", "a"]);
    let f = &jobs[0].file_sd_configs[0];
    assert_eq!(f.files, [format!("{}/sd/*.json", dir.path().display())]);
    assert_eq!(f.max_input_size, 1024);
}

#[test]
fn static_configs_are_prometheus_groups() {
    let c = parse(
        "jobs:\n  - job_name: mysql\n    static_configs:\n      - targets: ['127.0.0.1:9104']\n        labels: {dbms: MySQL, service_name: \"My서비스\"}\n",
    )
    .unwrap();
    let g = &c.jobs[0].static_configs[0];
    assert_eq!(g.targets, ["127.0.0.1:9104"]);
    assert_eq!(g.labels.0["service_name"], "My서비스");
}
