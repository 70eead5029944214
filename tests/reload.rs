//! Config reload (CONTRACT section 3): SIGHUP and `POST /-/reload`.

use std::process::Command;

use crate::util::{Bridge, Dir};

const ONE_JOB: &str =
    "jobs:\n  - job_name: a\n    static_configs: [{targets: ['127.0.0.1:9100']}]\n";
const TWO_JOBS: &str = "jobs:\n  - job_name: a\n    static_configs: [{targets: ['127.0.0.1:9101']}]\n  - job_name: b\n    file_sd_configs: [{files: [sd/*.yml]}]\n";

#[test]
fn sighup_applies_a_valid_config() {
    let dir = Dir::new();
    dir.write("sd/b.yml", "- targets: ['127.0.0.2:9100']\n");
    let config = dir.write("sdbridge.yml", ONE_JOB);
    let bridge = Bridge::start(&config);
    assert_eq!(bridge.get("/http_sd/b").status, 404);
    dir.replace("sdbridge.yml", TWO_JOBS);
    let status = Command::new("kill")
        .args(["-HUP", &bridge.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    bridge.wait_body("/http_sd/b", "new job served", |b| {
        b.contains("127.0.0.2:9100")
    });
    bridge.wait_body("/http_sd/a", "changed job served", |b| {
        b.contains("127.0.0.1:9101")
    });
    assert_eq!(bridge.get("/-/ready").status, 200);
}

#[test]
fn post_reload_rejects_an_invalid_config_and_keeps_serving() {
    let dir = Dir::new();
    let config = dir.write("sdbridge.yml", ONE_JOB);
    let bridge = Bridge::start(&config);
    let before = bridge.get("/http_sd/a");
    dir.replace(
        "sdbridge.yml",
        "jobs:\n  - job_name: a\n    static_configz: []\n",
    );
    let r = bridge.request("POST", "/-/reload", &[]);
    assert_eq!(r.status, 500);
    let message = r.json()["error"].as_str().unwrap().to_string();
    assert!(
        message.contains(&format!(
            "{}:3:5: jobs[0]: unknown field `static_configz`",
            config.display()
        )),
        "{message}"
    );
    let after = bridge.get("/http_sd/a");
    assert_eq!((after.status, &after.body), (200, &before.body));
    assert!(bridge.log().contains("reload failed"));

    dir.replace("sdbridge.yml", TWO_JOBS);
    dir.write("sd/b.yml", "- targets: ['127.0.0.3:9100']\n");
    let r = bridge.request("POST", "/-/reload", &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    bridge.wait_body("/http_sd/b", "job from reloaded config", |b| {
        b.contains("127.0.0.3:9100")
    });
    assert_eq!(bridge.request("GET", "/-/reload", &[]).status, 405);
}
