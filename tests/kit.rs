//! The operator's kit: the alerting rules name only metrics the binary
//! exposes, the metrics they need move, `--version` names the commit,
//! and the completions and man page come from the same command line.
//! (deploy/check.sh runs promtool, kubernetes-validate, buildah and
//! dpkg on the rest.)

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::fake_consul::{FakeConsul, ServiceInstance};
use crate::util::{bin, metric, poll_until, run_cli, Bridge, Dir};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Every `sdbridge_*` name a scrape of `/metrics` can return: the sample
/// names, and each family's names from its `# TYPE` line (a family with
/// no series yet, such as a histogram nothing was observed in, is still
/// declared there): a histogram's `_bucket`, `_sum` and `_count`.
fn exposed_names(exposition: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in exposition.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut words = rest.split_whitespace();
            let (Some(name), Some(kind)) = (words.next(), words.next()) else {
                continue;
            };
            names.insert(name.to_string());
            if kind == "histogram" {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{suffix}"));
                }
            }
        } else if !line.starts_with('#') {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            names.insert(line[..end].to_string());
        }
    }
    names
}

/// Every `sdbridge_*` word in `text` (expressions and annotations alike).
fn sdbridge_names(text: &str) -> BTreeSet<String> {
    let re = regex::Regex::new(r"\bsdbridge_[a-zA-Z0-9_]+").expect("regex");
    re.find_iter(text).map(|m| m.as_str().to_string()).collect()
}

/// A config with one static and one file_sd job (so both kinds of
/// source's series exist, though families are declared regardless).
fn config(dir: &Dir) -> std::path::PathBuf {
    dir.write(
        "sd/a.yml",
        "- targets: ['127.0.0.1:9100', '127.0.0.2:9100']\n",
    );
    dir.write(
        "sdbridge.yml",
        "jobs:\n  - job_name: node\n    static_configs: [{targets: ['127.0.0.1:9100']}]\n  - job_name: files\n    file_sd_configs: [{files: [sd/*.yml]}]\n",
    )
}

#[test]
fn every_metric_the_alerting_rules_name_is_exposed() {
    let rules = std::fs::read_to_string(repo().join("deploy/prometheus/alerts.yml"))
        .expect("deploy/prometheus/alerts.yml");
    let used = sdbridge_names(&rules);
    assert!(used.len() >= 12, "only {used:?} used");
    // A family shows in /metrics once it has a series: give every kind
    // of series the rules read a reason to exist (Consul requests, a
    // file_sd parse error, state_dir writes, shard and page builds).
    let consul = FakeConsul::start();
    assert!(consul.register(ServiceInstance::new("node-1", "mysql", 9104).address("127.0.0.1")));
    let dir = Dir::new();
    dir.write("sd/bad.yml", "- targetz: []\n");
    config(&dir);
    let path = dir.write(
        "sdbridge.yml",
        &format!(
            "state_dir: state\njobs:\n  - job_name: files\n    file_sd_configs: [{{files: [sd/*.yml]}}]\n  - job_name: consul\n    consul_sd_configs: [{{server: '{}'}}]\n",
            consul.addr()
        ),
    );
    let bridge = Bridge::start(&path);
    assert_eq!(bridge.get("/http_sd/files?shard=0&of=2").status, 200);
    assert_eq!(bridge.get("/targets/files").status, 200);
    poll_until(
        Duration::from_secs(10),
        "both jobs written to state_dir",
        || {
            let text = bridge.get("/metrics").text();
            ["files", "consul"]
                .iter()
                .all(|job| {
                    metric(
                        &text,
                        "sdbridge_state_writes_total",
                        &[&format!("job=\"{job}\"")],
                    )
                    .is_some()
                })
                .then_some(())
        },
    );
    let exposed = exposed_names(&bridge.get("/metrics").text());
    let missing: Vec<_> = used.difference(&exposed).collect();
    assert!(
        missing.is_empty(),
        "alerts.yml names {missing:?}, which /metrics does not expose; it exposes {exposed:?}"
    );
}

#[test]
fn exposed_names_reads_types_and_samples() {
    let names = exposed_names(
        "# HELP sdbridge_x_seconds X.\n# TYPE sdbridge_x_seconds histogram\n# TYPE sdbridge_n_total counter\nsdbridge_n_total 3\nsdbridge_up{job=\"a\"} 1\n",
    );
    let expected: BTreeSet<String> = [
        "sdbridge_x_seconds",
        "sdbridge_x_seconds_bucket",
        "sdbridge_x_seconds_sum",
        "sdbridge_x_seconds_count",
        "sdbridge_n_total",
        "sdbridge_up",
    ]
    .map(String::from)
    .into();
    assert_eq!(names, expected);
    assert_eq!(
        sdbridge_names("expr: rate(sdbridge_a_total[5m]) > sdbridge_b\n# sdbridge-alerts.yml"),
        ["sdbridge_a_total", "sdbridge_b"].map(String::from).into()
    );
}

#[test]
fn reload_outcome_is_a_metric() {
    let dir = Dir::new();
    let path = config(&dir);
    let good = std::fs::read_to_string(&path).expect("config");
    let bridge = Bridge::start(&path);
    let ok = |bridge: &Bridge| bridge.metric("sdbridge_config_last_reload_successful", &[]);
    let loaded_at = |bridge: &Bridge| {
        bridge
            .metric("sdbridge_config_last_reload_success_timestamp_seconds", &[])
            .expect("reload timestamp")
    };
    assert_eq!(ok(&bridge), Some(1.0));
    let started = loaded_at(&bridge);
    assert!(
        bridge
            .metric("sdbridge_start_time_seconds", &[])
            .is_some_and(|t| t > 1.6e9),
        "start time"
    );
    dir.replace(
        "sdbridge.yml",
        "jobs: [{job_name: a, static_configz: []}]\n",
    );
    assert_eq!(bridge.request("POST", "/-/reload", &[]).status, 500);
    assert_eq!(ok(&bridge), Some(0.0));
    assert_eq!(loaded_at(&bridge), started, "no new config was loaded");
    std::thread::sleep(std::time::Duration::from_millis(20));
    dir.replace("sdbridge.yml", &good);
    assert_eq!(bridge.request("POST", "/-/reload", &[]).status, 200);
    assert_eq!(ok(&bridge), Some(1.0));
    assert!(loaded_at(&bridge) > started);
}

#[test]
fn shard_and_targets_page_builds_are_timed() {
    let dir = Dir::new();
    let bridge = Bridge::start(&config(&dir));
    let count = |what: &str| {
        bridge
            .metric(
                "sdbridge_answer_build_duration_seconds_count",
                &[&format!("what=\"{what}\"")],
            )
            .unwrap_or(0.0)
    };
    assert_eq!((count("shard"), count("targets_page")), (0.0, 0.0));
    assert_eq!(bridge.get("/http_sd/files?shard=0&of=2").status, 200);
    assert_eq!(bridge.get("/targets/files").status, 200);
    assert_eq!((count("shard"), count("targets_page")), (1.0, 1.0));
    // A cut already built is served from the snapshot: no new work.
    assert_eq!(bridge.get("/http_sd/files?shard=0&of=2").status, 200);
    assert_eq!(count("shard"), 1.0);
}

/// The commit the tests were built from, as build.rs finds it.
fn revision() -> String {
    Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(repo())
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .filter(|rev| !rev.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

#[test]
fn version_names_the_commit_as_prometheus_does() {
    let revision = revision();
    for flag in ["--version", "-V"] {
        let out = run_cli(None, [flag]);
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout);
        let first = text.lines().next().unwrap_or("");
        assert_eq!(
            first,
            format!(
                "sdbridge, version {} (revision: {revision})",
                env!("CARGO_PKG_VERSION")
            ),
            "{text}"
        );
        assert!(text.contains("\n  rustc version:    rustc "), "{text}");
    }
    let dir = Dir::new();
    let bridge = Bridge::start(&config(&dir));
    let labels = format!(
        "version=\"{}\",revision=\"{revision}\"",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(
        bridge.metric("sdbridge_build_info", &[&labels]),
        Some(1.0),
        "{}",
        bridge.get("/metrics").text()
    );
}

#[test]
fn help_names_every_source() {
    let out = run_cli(None, ["--help"]);
    let help = String::from_utf8_lossy(&out.stdout);
    let about = help.lines().next().unwrap_or("");
    for source in [
        "static",
        "file_sd",
        "consul_sd",
        "dns_sd",
        "sql_sd",
        "http_sd",
    ] {
        assert!(about.contains(source), "{source} missing from {about:?}");
    }
    let manifest = std::fs::read_to_string(repo().join("Cargo.toml")).expect("Cargo.toml");
    let description = manifest
        .lines()
        .find(|l| l.starts_with("description = "))
        .expect("description");
    assert!(description.contains(about), "{description} vs {about}");
}

/// The subcommands `--help` lists (but `help`).
fn commands() -> Vec<String> {
    let out = run_cli(None, ["--help"]);
    let help = String::from_utf8_lossy(&out.stdout).to_string();
    let listed = help
        .split("Commands:\n")
        .nth(1)
        .and_then(|rest| rest.split("\n\n").next())
        .expect("a Commands: section");
    let commands: Vec<String> = listed
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(String::from)
        .collect();
    assert!(commands.len() >= 6, "{commands:?}");
    commands
}

#[test]
fn bash_sources_the_completions_and_completes_commands() {
    // What bash offers after `sdbridge ` and after `sdbridge serve --c`.
    let script = format!(
        "source <('{bin}' completions bash) && complete -p sdbridge && \
         COMP_WORDS=(sdbridge ''); COMP_CWORD=1; _sdbridge sdbridge '' sdbridge; echo \"${{COMPREPLY[*]}}\"; \
         COMP_WORDS=(sdbridge serve --c); COMP_CWORD=2; _sdbridge sdbridge --c serve; echo \"${{COMPREPLY[*]}}\"",
        bin = bin()
    );
    let out = Command::new("bash")
        .args(["-c", &script])
        .output()
        .expect("bash");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].starts_with("complete ") && lines[0].ends_with(" sdbridge"));
    let offered: Vec<&str> = lines[1].split_whitespace().collect();
    for command in commands() {
        assert!(offered.contains(&command.as_str()), "{command}: {stdout}");
    }
    assert!(
        lines[2].split_whitespace().any(|w| w == "--config"),
        "{stdout}"
    );
    for shell in ["zsh", "fish"] {
        let out = run_cli(None, ["completions", shell]);
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && script.contains("serve"), "{shell}");
    }
    assert!(!run_cli(None, ["completions", "tcsh"]).status.success());
}

/// `man -l PAGE` as text: overstrike formatting removed, runs of
/// whitespace (justification, wrapping) made one space.
fn render(man: &Path, page: &Path) -> String {
    let out = Command::new(man)
        .arg("-l")
        .arg(page)
        .env("MANWIDTH", "200")
        .env("MANPAGER", "cat")
        .env("PAGER", "cat")
        .output()
        .expect("man");
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "man -l {}: {}",
        page.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let mut plain = String::new();
    for c in text.chars() {
        if c == '\u{8}' {
            plain.pop();
        } else {
            plain.push(c);
        }
    }
    plain.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[test]
fn the_man_page_renders_and_names_every_command() {
    let man = require_binary!("man");
    let dir = Dir::new();
    let out = run_cli(None, ["manpage"]);
    assert!(out.status.success());
    let page = dir.path("sdbridge.1");
    std::fs::write(&page, &out.stdout).expect("write page");
    let text = render(&man, &page);
    assert!(text.contains("sdbridge - Serves static lists"), "{text}");
    let commands = commands();
    for command in &commands {
        assert!(
            text.contains(&format!("sdbridge-{command}(1)")),
            "{command} missing:\n{text}"
        );
    }
    // --dir: the page of every command they refer to.
    let pages = dir.path("pages");
    let out = run_cli(
        None,
        ["manpage".as_ref(), "--dir".as_ref(), pages.as_os_str()],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read(pages.join("sdbridge.1")).expect("sdbridge.1"),
        std::fs::read(&page).expect("page")
    );
    for command in &commands {
        let text = render(&man, &pages.join(format!("sdbridge-{command}.1")));
        assert!(text.contains(&format!("sdbridge-{command}")), "{text}");
    }
    let serve = render(&man, &pages.join("sdbridge-serve.1"));
    assert!(serve.contains("--config"), "{serve}");
}
