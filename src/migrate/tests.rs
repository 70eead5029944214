//! `plan` on texts that exercise the locator's edges; every case also
//! goes through the parse-back check inside `plan`.

use std::path::Path;

use super::paths::Rebase;
use super::*;

fn client() -> Client {
    Client {
        url: "http://127.0.0.1:9412".into(),
        refresh_interval: Some("15s".into()),
        ..Client::default()
    }
}

fn run(text: &str) -> Plan {
    let rebase = Rebase {
        from: "/etc/prometheus".into(),
        to: "/etc/prometheus/out".into(),
    };
    plan(
        text,
        Path::new("/etc/prometheus/prometheus.yml"),
        &rebase,
        &client(),
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn a_moved_block_on_the_items_first_line_keeps_the_dash() {
    let p = run("scrape_configs:\n- static_configs: [{targets: ['127.0.0.1:9100']}]\n  job_name: a # the name\n");
    assert_eq!(
        p.scrape_config,
        "scrape_configs:\n- http_sd_configs:\n    - url: http://127.0.0.1:9412/http_sd/a\n      refresh_interval: 15s\n  job_name: a # the name\n"
    );
}

#[test]
fn flow_style_jobs_are_left_in_place_and_block_ones_still_move() {
    let p = run("scrape_configs:\n  - {job_name: a, static_configs: [{targets: [x]}]}\n  - job_name: b\n    static_configs: [{targets: [y]}]\n");
    assert!(p
        .scrape_config
        .contains("  - {job_name: a, static_configs: [{targets: [x]}]}\n"));
    assert!(p.scrape_config.contains("http_sd/b"));
    assert!(
        matches!(&p.outcomes[0], Outcome::Left { reason, .. } if reason.contains("move it by hand")),
        "{:?}",
        p.outcomes
    );
    assert!(matches!(&p.outcomes[1], Outcome::Moved { .. }));
    let p = run("scrape_configs: [{job_name: a, static_configs: [{targets: [x]}]}]\n");
    assert!(matches!(&p.outcomes[0], Outcome::Left { .. }));
    assert!(
        p.notes.iter().any(|n| n.contains("not a block-style list")),
        "{:?}",
        p.notes
    );
}

#[test]
fn crlf_files_stay_crlf_and_vmagent_fields_stay() {
    let p = run("scrape_configs:\r\n  - job_name: a\r\n    stream_parse: true\r\n    file_sd_configs:\r\n      - files: [sd/*.json]\r\n    scrape_align_interval: 1m\r\n");
    assert_eq!(
        p.scrape_config,
        "scrape_configs:\r\n  - job_name: a\r\n    stream_parse: true\r\n    http_sd_configs:\r\n      - url: http://127.0.0.1:9412/http_sd/a\r\n        refresh_interval: 15s\r\n    scrape_align_interval: 1m\r\n"
    );
    assert!(
        p.sdbridge.contains("/etc/prometheus/sd/*.json"),
        "{}",
        p.sdbridge
    );
}

#[test]
fn what_sdbridge_cannot_take_is_left_with_the_reason() {
    let p = run("scrape_configs:\n  - job_name: a\n    consul_sd_configs:\n      - server: 127.0.0.1:8500\n        oauth2: {client_id: x, token_url: 'http://127.0.0.1:1/'}\n");
    assert!(
        matches!(&p.outcomes[0], Outcome::Left { reason, .. } if reason.contains("oauth2: not supported")),
        "{:?}",
        p.outcomes
    );
    assert!(p.scrape_config.contains("consul_sd_configs"));
}

#[test]
fn consul_paths_are_rebased_into_sdbridge_yml() {
    let p = run("scrape_configs:\n  - job_name: c\n    consul_sd_configs:\n      - server: 127.0.0.1:8500\n        tls_config: {ca_file: consul-ca.pem}\n");
    assert!(
        p.sdbridge.contains("ca_file: ../consul-ca.pem"),
        "{}",
        p.sdbridge
    );
}

#[test]
fn aliases_into_a_moved_block_are_refused_not_broken() {
    let rebase = Rebase {
        from: "/p".into(),
        to: "/p/out".into(),
    };
    let text = "scrape_configs:\n  - job_name: a\n    static_configs: &t [{targets: [x]}]\n  - job_name: b\n    metrics_path: /m\n    params: {t: *t}\n";
    let p = plan(text, Path::new("/p/prometheus.yml"), &rebase, &client())
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        matches!(&p.outcomes[0], Outcome::Left { reason, .. } if reason.contains("anchors")),
        "{:?}",
        p.outcomes
    );
    assert_eq!(p.scrape_config, text);
}

#[test]
fn auth_settings_are_written_for_a_bridge_with_web_auth() {
    let rebase = Rebase {
        from: "/p".into(),
        to: "/p".into(),
    };
    let client = Client {
        basic_auth: Some(("prometheus".into(), "bridge-password".into())),
        ca_file: Some("bridge ca.pem".into()),
        refresh_interval: None,
        ..client()
    };
    let p = plan(
        "scrape_configs:\n  - job_name: 'a b'\n    static_configs: [{targets: [x]}]\n",
        Path::new("/p/prometheus.yml"),
        &rebase,
        &client,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        p.scrape_config,
        "scrape_configs:\n  - job_name: 'a b'\n    http_sd_configs:\n      - url: http://127.0.0.1:9412/http_sd/a%20b\n        basic_auth:\n          username: prometheus\n          password_file: bridge-password\n        tls_config:\n          ca_file: bridge ca.pem\n"
    );
}

#[test]
fn alerting_file_sd_and_scrape_config_files_paths_are_rebased() {
    let p = run("alerting:\n  alertmanagers:\n    - file_sd_configs:\n        - files:\n            - am/*.json # here\nscrape_config_files:\n  - jobs/*.yml\nscrape_configs:\n  - job_name: a\n    static_configs: [{targets: [x]}]\n  - job_name: a\n    static_configs: [{targets: [y]}]\n");
    assert!(p.scrape_config.starts_with("alerting:\n  alertmanagers:\n    - file_sd_configs:\n        - files:\n            - ../am/*.json # here\nscrape_config_files:\n  - ../jobs/*.yml\n"), "{}", p.scrape_config);
    assert!(
        p.notes.iter().any(|n| n.contains("scrape_config_files")),
        "{:?}",
        p.notes
    );
    assert!(
        matches!(&p.outcomes[1], Outcome::Left { reason, .. } if reason.contains("same job_name")),
        "{:?}",
        p.outcomes
    );
    assert!(p.scrape_config.contains("static_configs: [{targets: [y]}]"));
}

/// Regression: a job that overrides a key it merged (valid for
/// Prometheus, whose structs let it) aborted the whole run with "key
/// already set in map".
#[test]
fn a_merged_job_that_overrides_a_key_is_left_and_the_others_move() {
    let p = run("scrape_configs:\n  - &base\n    job_name: base\n    static_configs: [{targets: ['127.0.0.9:19909']}]\n  - <<: *base\n    job_name: merged\n  - job_name: plain\n    static_configs: [{targets: ['127.0.0.9:19910']}]\n");
    let left: Vec<&str> = p
        .outcomes
        .iter()
        .filter_map(|o| match o {
            Outcome::Left { job, .. } => Some(job.as_str()),
            _ => None,
        })
        .collect();
    assert!(left.contains(&"merged"), "{:?}", p.outcomes);
    assert!(
        p.scrape_config.contains("http_sd/plain"),
        "{}",
        p.scrape_config
    );
}

/// Regression: vmagent's `%{ENV}` placeholders were copied verbatim into
/// sdbridge.yml, where they match nothing or are served literally.
#[test]
fn vmagent_environment_placeholders_leave_the_job_in_place() {
    for block in [
        "file_sd_configs: [{files: ['%{SD_DIR}/node/*.json']}]",
        "static_configs: [{targets: ['%{HOST}:9100']}]",
        "static_configs: [{targets: ['127.0.0.1:9100'], labels: {dc: '%{DC}'}}]",
    ] {
        let p = run(&format!(
            "scrape_configs:\n  - job_name: env\n    {block}\n  - job_name: ok\n    static_configs: [{{targets: ['127.0.0.1:9101']}}]\n"
        ));
        assert!(
            matches!(&p.outcomes[0], Outcome::Left { reason, .. } if reason.contains("%{")),
            "{block}: {:?}",
            p.outcomes
        );
        assert!(!p.sdbridge.contains("%{"), "{}", p.sdbridge);
        assert!(p.scrape_config.contains("http_sd/ok"));
    }
}

/// Regression: unreserved characters were percent-encoded in job URLs
/// (`uses_alias` became `uses%5Falias`), which RFC 3986 says not to do.
#[test]
fn job_urls_keep_unreserved_characters() {
    let p = run("scrape_configs:\n  - job_name: a.b-c~d_e\n    static_configs: [{targets: ['127.0.0.1:9100']}]\n  - job_name: 'x y/서'\n    static_configs: [{targets: ['127.0.0.1:9101']}]\n");
    assert!(
        p.scrape_config.contains("/http_sd/a.b-c~d_e\n"),
        "{}",
        p.scrape_config
    );
    assert!(
        p.scrape_config.contains("/http_sd/x%20y%2F%EC%84%9C"),
        "{}",
        p.scrape_config
    );
}

/// Issue 21: `dns_sd_configs` moves like the other blocks, and a block
/// sdbridge (like Prometheus) refuses stays, with Prometheus's reason.
#[test]
fn dns_sd_configs_move_like_the_other_blocks() {
    let p = run("scrape_configs:\n  - job_name: d\n    dns_sd_configs:\n      - names: [_node._tcp.example.internal]\n        refresh_interval: 1m\n    static_configs: [{targets: ['127.0.0.1:9100']}]\n");
    assert!(
        matches!(&p.outcomes[0], Outcome::Moved { moved, .. } if moved == &["dns_sd_configs", "static_configs"]),
        "{:?}",
        p.outcomes
    );
    assert!(
        !p.scrape_config.contains("dns_sd_configs"),
        "{}",
        p.scrape_config
    );
    let config =
        crate::config::Config::parse(&p.sdbridge, Path::new("/etc/prometheus/out/sdbridge.yml"))
            .unwrap();
    let dns = &config.jobs[0].dns_sd_configs[0];
    assert_eq!(dns.names, ["_node._tcp.example.internal"]);
    assert_eq!(dns.refresh_interval.0, std::time::Duration::from_secs(60));

    let p = run("scrape_configs:\n  - job_name: d\n    dns_sd_configs:\n      - names: [x.example.internal]\n        type: TXT\n");
    assert!(
        matches!(&p.outcomes[0], Outcome::Left { reason, .. } if reason.contains("invalid DNS-SD records type TXT")),
        "{:?}",
        p.outcomes
    );
    assert!(p.scrape_config.contains("type: TXT"));
}
