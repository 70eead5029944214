//! `sdbridge migrate` on `examples/migrate/`: what it writes and reports,
//! and that `promtool` and `sdbridge check` accept the result. The end to
//! end comparisons are in `tests/e2e_migrate.rs`.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::{require_binary, run_cli, Dir};

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/migrate")
}

/// Copies `examples/migrate` to `dir/etc`.
pub(crate) fn copy_example(dir: &Dir) {
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

pub(crate) fn migrate<A: AsRef<std::ffi::OsStr>>(
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

pub(crate) fn read(dir: &Dir, rel: &str) -> String {
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

/// `etc/prometheus.yml` migrated into `out` (with `extra` arguments).
fn migrate_into_out(dir: &Dir, extra: &[&str]) -> (bool, String, String) {
    let mut args = vec![
        "etc/prometheus.yml",
        "--out-dir",
        "out",
        "--url",
        "http://127.0.0.1:9412",
    ];
    args.extend_from_slice(extra);
    migrate(dir, args)
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// Issue 17: a `0600` input holding a Consul token gave two `0644`
/// outputs with the token in `sdbridge.yml`. The outputs take the input's
/// mode, whatever the umask.
#[test]
fn migrate_outputs_take_the_inputs_mode() {
    use std::os::unix::fs::PermissionsExt;
    for (input_mode, out) in [(0o600, "out"), (0o640, "out2")] {
        let dir = Dir::new();
        copy_example(&dir);
        let input = dir.path("etc/prometheus.yml");
        std::fs::set_permissions(&input, std::fs::Permissions::from_mode(input_mode)).unwrap();
        let (ok, _, stderr) = migrate(
            &dir,
            [
                "etc/prometheus.yml",
                "--out-dir",
                out,
                "--url",
                "http://127.0.0.1:9412",
            ],
        );
        assert!(ok, "{stderr}");
        for file in ["sdbridge.yml", "prometheus.yml"] {
            let path = dir.path(&format!("{out}/{file}"));
            assert_eq!(mode(&path), input_mode, "{}", path.display());
        }
    }
}

/// Issue 17: an existing `DIR/<input name>` that is not the input and
/// differs is replaced only with `--force`; an identical one is fine.
#[test]
fn migrate_does_not_replace_a_different_scrape_config_without_force() {
    let dir = Dir::new();
    copy_example(&dir);
    let theirs = "# an operator's own file\nscrape_configs: []\n";
    dir.write("out/prometheus.yml", theirs);
    let (ok, _, stderr) = migrate_into_out(&dir, &[]);
    assert!(!ok);
    assert!(
        stderr.contains(
            "out/prometheus.yml exists and differs from the one this run would write; pass --force"
        ),
        "{stderr}"
    );
    assert_eq!(read(&dir, "out/prometheus.yml"), theirs);
    assert!(!dir.path("out/sdbridge.yml").exists(), "nothing written");

    let (ok, _, stderr) = migrate_into_out(&dir, &["--force"]);
    assert!(ok, "{stderr}");
    let migrated = read(&dir, "out/prometheus.yml");
    assert!(migrated.contains("http_sd/node"), "{migrated}");
    // The same outputs again: nothing differs, no --force needed.
    let (ok, _, stderr) = migrate_into_out(&dir, &[]);
    assert!(ok, "{stderr}");
    assert_eq!(read(&dir, "out/prometheus.yml"), migrated);
}

/// Issue 17: writing would replace a symlink with a regular file (not
/// write through it), so a symlink output needs `--force`; its target is
/// never touched.
#[test]
fn migrate_refuses_a_symlink_output_without_force() {
    let dir = Dir::new();
    copy_example(&dir);
    let target = "# the link's target\n";
    dir.write("elsewhere/prometheus.yml", target);
    std::fs::create_dir_all(dir.path("out")).unwrap();
    std::os::unix::fs::symlink(
        dir.path("elsewhere/prometheus.yml"),
        dir.path("out/prometheus.yml"),
    )
    .unwrap();
    let (ok, _, stderr) = migrate_into_out(&dir, &[]);
    assert!(!ok);
    assert!(
        stderr.contains("out/prometheus.yml is a symbolic link; pass --force"),
        "{stderr}"
    );
    assert!(!dir.path("out/sdbridge.yml").exists(), "nothing written");

    let (ok, _, stderr) = migrate_into_out(&dir, &["--force"]);
    assert!(ok, "{stderr}");
    let link = std::fs::symlink_metadata(dir.path("out/prometheus.yml")).unwrap();
    assert!(link.file_type().is_file(), "the link is replaced");
    assert!(read(&dir, "out/prometheus.yml").contains("http_sd/node"));
    assert_eq!(read(&dir, "elsewhere/prometheus.yml"), target);
}
