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
        (
            &utf8,
            format!("{}: stream did not contain valid UTF-8", utf8.display()),
        ),
    ] {
        let out = run_cli(None, ["check".as_ref(), config.as_os_str()]);
        assert!(!out.status.success());
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.starts_with(&want), "{stdout}");
    }
}
