//! A panic in a thread sdbridge cannot run without (the merger, its gzip
//! thread, the state writer) ends the process with exit code 70 and a log
//! line naming the thread, so a service manager restarts it instead of a
//! frozen snapshot being served while `/-/healthy` says 200.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::util::{bin, Dir};

/// Runs `serve` with `SDBRIDGE_TEST_PANIC=thread` until it exits; its
/// exit code and its log.
fn serve_until_exit(config: &std::path::Path, thread: &str) -> (Option<i32>, String) {
    let mut child = Command::new(bin())
        .args([
            "--log-format",
            "json",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--config",
        ])
        .arg(config)
        .env("SDBRIDGE_TEST_PANIC", thread)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sdbridge");
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if start.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("SDBRIDGE_TEST_PANIC={thread}: still running after 30 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut log = String::new();
    if let Some(mut stderr) = child.stderr.take() {
        let _ = stderr.read_to_string(&mut log);
    }
    (status.code(), log)
}

#[test]
fn a_panic_in_a_fatal_thread_ends_the_process() {
    for thread in ["merger", "gzip", "state"] {
        // A state_dir of its own: a body already persisted is not written
        // again.
        let dir = Dir::new();
        let config = dir.write(
            "sdbridge.yml",
            &format!(
                "state_dir: {}\njobs:\n  - job_name: app\n    static_configs: [{{targets: ['127.0.0.1:1']}}]\n",
                dir.path("state").display()
            ),
        );
        std::fs::create_dir_all(dir.path("state")).expect("state dir");
        let (code, log) = serve_until_exit(&config, thread);
        assert_eq!(code, Some(70), "{thread}: {log}");
        let line = log
            .lines()
            .find(|l| l.contains("exiting so the service manager restarts it"))
            .unwrap_or_else(|| panic!("{thread}: no fatal log line:\n{log}"));
        assert!(line.contains(&format!("\"thread\":\"{thread}\"")), "{line}");
    }
}
