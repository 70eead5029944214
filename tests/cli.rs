//! `sdbridge check` and `sdbridge dump`.

use std::path::Path;

use crate::util::{run_cli, Bridge, Dir};

#[test]
fn check_accepts_the_examples() {
    for example in [
        "examples/seed.yml",
        "examples/seed-file-sd.yml",
        "examples/consul.yml",
    ] {
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
        let out = run_cli(Some(manifest), ["check", example]);
        assert!(
            out.status.success(),
            "{example}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

#[test]
fn check_reports_config_errors_with_position() {
    let dir = Dir::new();
    let config = dir.write(
        "bad.yml",
        "jobs:\n  - job_name: a\n    static_configs:\n      - targets: [x]\n        labelz: {}\n",
    );
    let out = run_cli(None, ["check".as_ref(), config.as_os_str()]);
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!(
            "{}:5:9: jobs[0].static_configs[0]: unknown field `labelz`",
            config.display()
        )),
        "{stdout}"
    );
}

#[test]
fn check_reports_invalid_file_sd_files() {
    let dir = Dir::new();
    dir.write("sd/good.yml", "- targets: [a]\n");
    dir.write("sd/bad.yml", "- targets: [a]\n  labels:\n    9bad: x\n");
    let config = dir.write(
        "c.yml",
        "jobs:\n  - job_name: a\n    file_sd_configs: [{files: [sd/*.yml]}]\n",
    );
    let out = run_cli(None, ["check".as_ref(), config.as_os_str()]);
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!(
            "{}/sd/bad.yml:3:5: [0].labels: \"9bad\" is not a valid label name",
            dir.root()
        )),
        "{stdout}"
    );
    assert!(!stdout.contains("good.yml"), "{stdout}");
}

#[test]
fn dump_prints_what_serve_serves() {
    let manifest = env!("CARGO_MANIFEST_DIR");
    for example in ["examples/seed.yml", "examples/seed-file-sd.yml"] {
        let out = run_cli(Some(Path::new(manifest)), ["dump", "--config", example]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let dumped = String::from_utf8(out.stdout).unwrap();
        // Same relative config path, same working directory: same bytes.
        let served = {
            let bridge = Bridge::start_in(Path::new(manifest), Path::new(example));
            bridge.get("/http_sd").text()
        };
        assert_eq!(dumped.trim_end(), served, "{example}");
        assert_eq!(crate::util::groups(&served).len(), 6);
    }
    let out = run_cli(
        Some(Path::new(manifest)),
        ["dump", "--config", "examples/seed.yml", "--job", "nope"],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no job named \"nope\""));
}

#[test]
fn missing_config_is_a_clear_error() {
    let out = run_cli(None, ["serve", "--config", "/nonexistent/sdbridge.yml"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("/nonexistent/sdbridge.yml: No such file")
    );
}

#[test]
fn dump_gives_up_on_a_source_that_never_syncs() {
    let dir = Dir::new();
    let consul = crate::fake_consul::FakeConsul::start();
    consul.inject("", crate::fake_consul::Fault::Status500);
    let config = dir.write(
        "c.yml",
        &format!(
            "jobs:\n  - job_name: slow\n    consul_sd_configs: [{{server: '{}'}}]\n",
            consul.addr()
        ),
    );
    let out = run_cli(
        None,
        [
            "dump".as_ref(),
            "--timeout".as_ref(),
            "1".as_ref(),
            "--config".as_ref(),
            config.as_os_str(),
        ],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("not synced after 1s: job \"slow\" consul_sd#"),
        "{stderr}"
    );
}

/// Issue 10: every error in one run, each `file:line:col`, config errors
/// in several jobs and blocks and every invalid file_sd file of the jobs
/// that are valid.
#[test]
fn check_reports_every_error_in_one_run() {
    let dir = Dir::new();
    dir.write("sd/bad.json", "[{\"targets\": [\"a\"],\n  \"labelz\": {}}]");
    dir.write("sd/null.yml", "- targets: [a]\n- ~\n");
    dir.write("sd/good.yml", "- targets: [a]\n");
    let config = dir.write(
        "c.yml",
        "jobs:\n  - job_name: a\n    static_config: []\n    file_sd_configs: [{files: [sd/*.txt]}]\n  - job_name: files\n    file_sd_configs: [{files: [sd/*.json, sd/*.yml]}]\n  - {job_name: a, consul_sd_configs: [{server: 127.0.0.1:8500, tags: x}]}\n",
    );
    let out = run_cli(None, ["check".as_ref(), config.as_os_str()]);
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout).replace(&dir.root(), "D");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "D/c.yml:3:5: jobs[0]: unknown field `static_config`, did you mean `static_configs`?",
            "D/c.yml:4:32: jobs[0].file_sd_configs[0].files[0]: path name \"sd/*.txt\" is not valid for file discovery",
            "D/c.yml:7:16: found multiple jobs with job_name \"a\"",
            "D/c.yml:7:70: jobs[2].consul_sd_configs[0].tags: invalid type: string \"x\", expected a sequence",
            "D/sd/bad.json:2:10: unknown field `labelz`, expected `targets` or `labels`",
            "D/sd/null.yml:2:3: [1]: nil target group item found",
            "D/c.yml: 4 error(s) in the config, 2 invalid file_sd file(s)",
        ],
        "{stdout}"
    );
}

/// Issue 10: `sdbridge check` accepts and rejects what `promtool check
/// config` (Prometheus 2.42) does for the same static_configs: merge keys,
/// a byte-order mark, `!!binary`, YAML 1.1 booleans, repeated keys.
#[test]
fn check_agrees_with_promtool_on_static_configs() {
    let Some(promtool) = crate::util::require_binary("promtool") else {
        return;
    };
    let cases: [(&str, &[u8]); 9] = [
        (
            "merge keys",
            b"  - job_name: a\n    static_configs:\n      - &g {targets: ['127.0.0.1:1'], labels: {env: prod}}\n      - <<: *g\n        targets: ['127.0.0.1:2']\n      - <<: [*g, {labels: {x: y}}]\n",
        ),
        (
            "a label both merged and explicit",
            b"  - job_name: a\n    static_configs:\n      - targets: ['127.0.0.1:1']\n        labels: {<<: {env: prod}, env: dev}\n",
        ),
        (
            "a merged label map added to",
            b"  - job_name: a\n    static_configs:\n      - &g {targets: ['127.0.0.1:1'], labels: {env: prod}}\n      - <<: *g\n        labels: {zone: z}\n",
        ),
        (
            "a merged label map repeated",
            b"  - job_name: a\n    static_configs:\n      - &g {targets: ['127.0.0.1:1'], labels: {env: prod}}\n      - <<: *g\n        labels: {env: z}\n",
        ),
        (
            "targets twice",
            b"  - job_name: a\n    static_configs:\n      - targets: ['127.0.0.1:1']\n        targets: ['127.0.0.1:2']\n",
        ),
        (
            "!!binary",
            b"  - job_name: a\n    static_configs: [{targets: ['127.0.0.1:1'], labels: {v: !!binary aGVsbG8=}}]\n",
        ),
        (
            "invalid !!binary",
            b"  - job_name: a\n    static_configs: [{targets: ['127.0.0.1:1'], labels: {v: !!binary aGVsbG8}}]\n",
        ),
        (
            "a merge of a scalar",
            b"  - job_name: a\n    static_configs: [{<<: 1, targets: ['127.0.0.1:1']}]\n",
        ),
        (
            "duplicate job_name in flow style",
            b"  - {job_name: a, static_configs: [{targets: ['127.0.0.1:1']}]}\n  - {static_configs: [], job_name: a}\n",
        ),
    ];
    let dir = Dir::new();
    for (bom, (what, jobs)) in [false, true]
        .into_iter()
        .flat_map(|b| cases.iter().map(move |c| (b, c)))
    {
        let bom: &[u8] = if bom { b"\xef\xbb\xbf" } else { b"" };
        let prometheus = dir.path("prometheus.yml");
        std::fs::write(&prometheus, [bom, b"scrape_configs:\n", jobs].concat()).unwrap();
        let sdbridge = dir.path("sdbridge.yml");
        std::fs::write(&sdbridge, [bom, b"jobs:\n", jobs].concat()).unwrap();
        let promtool_ok = std::process::Command::new(&promtool)
            .args(["check", "config"])
            .arg(&prometheus)
            .output()
            .expect("run promtool")
            .status
            .success();
        let out = run_cli(None, ["check".as_ref(), sdbridge.as_os_str()]);
        assert_eq!(
            out.status.success(),
            promtool_ok,
            "{what} (BOM: {}): promtool says {}, sdbridge says:\n{}",
            !bom.is_empty(),
            if promtool_ok { "valid" } else { "invalid" },
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

/// `fixtures/file_sd_parity`: the files Prometheus 2.42 rejects (see its
/// README and the e2e test) are the ones check reports, each with a place.
#[test]
fn check_reports_the_parity_files_prometheus_rejects() {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = Dir::new();
    let config = dir.write(
        "c.yml",
        &format!(
            "jobs:\n  - job_name: p\n    file_sd_configs: [{{files: ['{0}/*.yml', '{0}/*.json']}}]\n",
            manifest.join("fixtures/file_sd_parity").display()
        ),
    );
    let out = run_cli(None, ["check".as_ref(), config.as_os_str()]);
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let rejected: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.split_once("file_sd_parity/"))
        .map(|(_, rest)| rest.split(':').next().unwrap_or(""))
        .collect();
    assert_eq!(
        rejected,
        [
            "binary-invalid.yml",
            "bom.json",
            "merge-list-repeated-label.yml",
            "merge-repeated-label.yml",
            "null-item.yml",
            "tab.yml"
        ],
        "{stdout}"
    );
    assert!(stdout.contains("6 invalid file_sd file(s)"), "{stdout}");
}

/// Issue 10: a config nested too deep, an alias bomb or invalid UTF-8 is
/// refused at once with the file (and place); nothing is expanded.
#[test]
fn check_refuses_hostile_configs_with_their_place() {
    let dir = Dir::new();
    let deep = dir.write("deep.yml", &format!("jobs: {}", "[".repeat(100_000)));
    let bomb = dir.write(
        "bomb.yml",
        &format!(
            "jobs:\n  - job_name: a\n    static_configs:\n      - labels:\n{}        targets: *i\n",
            crate::file_sd::alias_bomb("          ")
        ),
    );
    let utf8 = dir.path("utf8.yml");
    std::fs::write(&utf8, b"jobs:\n  - job_name: \"\xff\"\n").unwrap();
    for (config, want) in [
        (
            &deep,
            format!("{}:1:135: nested more than 128 levels deep", deep.display()),
        ),
        (
            &bomb,
            format!(
                "{}:5:14: jobs[0].static_configs[0].labels.a: invalid type: sequence",
                bomb.display()
            ),
        ),
        (&utf8, format!("{}:2:16: invalid UTF-8", utf8.display())),
    ] {
        let out = run_cli(None, ["check".as_ref(), config.as_os_str()]);
        assert!(!out.status.success());
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.starts_with(&want), "{stdout}");
    }
}
