//! `dns_sd_configs` against a real DNS server (dnsmasq on loopback, asked
//! through `nameservers:`): SRV, A (through a CNAME), AAAA and MX targets
//! and labels, NXDOMAIN as no targets, a changed record, the server gone
//! and back, a truncated UDP answer read again over TCP, and servers
//! asked in turn.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use hickory_proto::rr::RecordType;

use crate::dns_util::{free_dns_addr, query, Dnsmasq};
use crate::util::{groups, poll_until, Bridge, Dir};

type Group = (Vec<String>, BTreeMap<String, String>);

/// The records most tests serve.
fn records(db2_port: u16) -> Vec<String> {
    [
        "--srv-host=_db._tcp.example.test,db1.example.test,9104,10,5".to_string(),
        format!("--srv-host=_db._tcp.example.test,db2.example.test,{db2_port},20,5"),
        "--host-record=db1.example.test,127.0.0.11,::1".into(),
        "--host-record=db2.example.test,127.0.0.12".into(),
        "--cname=alias.example.test,db2.example.test".into(),
        "--mx-host=example.test,mail.example.test,10".into(),
    ]
    .to_vec()
}

/// A config with one job `dns` of `blocks`, each asking `servers`.
fn config(dir: &Dir, blocks: &[&str], servers: &str) -> std::path::PathBuf {
    let mut text = String::from("jobs:\n  - job_name: dns\n    dns_sd_configs:\n");
    for b in blocks {
        text.push_str(&format!(
            "      - {{{b}, refresh_interval: 1s, nameservers: [{servers}]}}\n"
        ));
    }
    dir.write("sdbridge.yml", &text)
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .chain([("__meta_sdbridge_job".to_string(), "dns".to_string())])
        .collect()
}

fn srv(port: &str, target: &str) -> BTreeMap<String, String> {
    labels(&[
        ("__meta_dns_name", "_db._tcp.example.test"),
        ("__meta_dns_srv_record_port", port),
        ("__meta_dns_srv_record_target", target),
    ])
}

fn served(bridge: &Bridge) -> Vec<Group> {
    let r = bridge.get("/http_sd/dns");
    assert_eq!(r.status, 200, "{}", r.text());
    groups(&r.text())
}

fn dnsmasq(binary: &Path, records: &[String]) -> Dnsmasq {
    Dnsmasq::start(binary, free_dns_addr(), records)
}

#[test]
fn srv_a_aaaa_and_mx_targets_and_labels_are_prometheus_s() {
    let binary = require_binary!("dnsmasq");
    let server = dnsmasq(&binary, &records(9105));
    let dir = Dir::new();
    let bridge = Bridge::start(&config(
        &dir,
        &[
            "names: [_db._tcp.example.test, nope.example.test]",
            "names: [db1.example.test, alias.example.test], type: A, port: 9100",
            "names: [db1.example.test], type: aaaa, port: 9100",
            "names: [example.test], type: MX, port: 25",
        ],
        &format!("'{}'", server.addr),
    ));
    let name = |n: &str| labels(&[("__meta_dns_name", n)]);
    assert_eq!(
        served(&bridge),
        [
            (
                vec!["db1.example.test:9104".into()],
                srv("9104", "db1.example.test.")
            ),
            (
                vec!["db2.example.test:9105".into()],
                srv("9105", "db2.example.test.")
            ),
            (vec!["127.0.0.11:9100".into()], name("db1.example.test")),
            // The CNAME is skipped, the address it leads to is the target.
            (vec!["127.0.0.12:9100".into()], name("alias.example.test")),
            (vec!["[::1]:9100".into()], name("db1.example.test")),
            (
                vec!["mail.example.test:25".into()],
                labels(&[
                    ("__meta_dns_name", "example.test"),
                    ("__meta_dns_mx_record_target", "mail.example.test."),
                ])
            ),
        ],
        "NXDOMAIN (nope.example.test) is no targets"
    );
    assert_eq!(
        bridge.metric("sdbridge_source_up", &["kind=\"dns_sd\""]),
        Some(4.0)
    );
    let page = bridge.get("/").text();
    assert!(
        page.contains("dns_sd_configs SRV _db._tcp.example.test"),
        "{page}"
    );
}

/// A changed record is served after a few refresh intervals (1 s here;
/// the 30 s bound is generous), and a server that is gone keeps the last
/// good targets served while `up` is 0 and the error is counted, shown
/// and logged.
#[test]
fn a_changed_record_is_served_and_a_gone_server_keeps_the_last_good_targets() {
    let binary = require_binary!("dnsmasq");
    let server = dnsmasq(&binary, &records(9105));
    let dir = Dir::new();
    let bridge = Bridge::start(&config(
        &dir,
        &["names: [_db._tcp.example.test]"],
        &format!("'{}'", server.addr),
    ));
    assert!(bridge
        .get("/http_sd/dns")
        .text()
        .contains("db2.example.test:9105"));

    let server = server.restart(&records(9106));
    let changed = Instant::now();
    let body = poll_until(Duration::from_secs(30), "the new port", || {
        let body = bridge.get("/http_sd/dns").text();
        body.contains("db2.example.test:9106").then_some(body)
    });
    eprintln!("changed record served after {:?}", changed.elapsed());
    assert!(!body.contains(":9105"), "{body}");

    let addr = server.addr;
    drop(server);
    let up = || bridge.metric("sdbridge_source_up", &["kind=\"dns_sd\""]);
    poll_until(Duration::from_secs(30), "source down", || {
        (up() == Some(0.0)).then_some(())
    });
    assert_eq!(
        bridge.get("/http_sd/dns").text(),
        body,
        "the last good targets"
    );
    assert_eq!(bridge.get("/-/ready").status, 200);
    let errors = bridge
        .metric(
            "sdbridge_source_errors_total",
            &["kind=\"dns_sd\"", "error=\"dns_network\""],
        )
        .unwrap_or(0.0);
    assert!(errors >= 1.0, "{}", bridge.get("/metrics").text());
    let page = bridge.get("/").text();
    assert!(
        page.contains("could not resolve") && page.contains("_db._tcp.example.test"),
        "the status page shows why:\n{page}"
    );
    assert!(
        bridge.log().contains("DNS lookup failed"),
        "{}",
        bridge.log()
    );

    // Back: up again, and what it serves now is served.
    let _back = Dnsmasq::start(&binary, addr, &records(9107));
    poll_until(Duration::from_secs(30), "source up again", || {
        (up() == Some(1.0)).then_some(())
    });
    poll_until(
        Duration::from_secs(30),
        "the record changed while down",
        || {
            bridge
                .get("/http_sd/dns")
                .text()
                .contains("db2.example.test:9107")
                .then_some(())
        },
    );
}

#[test]
fn a_truncated_udp_answer_is_read_again_over_tcp() {
    let binary = require_binary!("dnsmasq");
    let records: Vec<String> = (0..300)
        .map(|i| {
            format!(
                "--srv-host=_big._tcp.example.test,host{i}.example.test,{}",
                10000 + i
            )
        })
        .collect();
    let server = dnsmasq(&binary, &records);
    // The premise: over UDP, at Prometheus's 4096 bytes, it is truncated.
    let udp = query(
        server.addr,
        "_big._tcp.example.test.",
        RecordType::SRV,
        true,
    )
    .unwrap();
    assert!(
        udp.metadata.truncation,
        "dnsmasq truncates a 300-record answer"
    );
    assert!(udp.answers.len() < 300);
    let dir = Dir::new();
    let bridge = Bridge::start(&config(
        &dir,
        &["names: [_big._tcp.example.test]"],
        &format!("'{}'", server.addr),
    ));
    let served = served(&bridge);
    assert_eq!(served.len(), 300, "every record, from the TCP answer");
    assert!(served
        .iter()
        .any(|(t, l)| t == &["host299.example.test:10299"]
            && l["__meta_dns_srv_record_port"] == "10299"));
}

/// `nameservers:` replaces the system's servers; they are asked in turn
/// (one that refuses the connection, then another dnsmasq with other
/// records than the first).
#[test]
fn nameservers_are_asked_in_turn() {
    let binary = require_binary!("dnsmasq");
    let first = dnsmasq(
        &binary,
        &["--host-record=db.example.test,127.0.0.11".into()],
    );
    let second = dnsmasq(
        &binary,
        &["--host-record=db.example.test,127.0.0.21".into()],
    );
    let gone = free_dns_addr();
    let dir = Dir::new();
    let text = format!(
        "jobs:\n  - job_name: dns\n    dns_sd_configs:\n\
         \x20     - {{names: [db.example.test], type: A, port: 9100, nameservers: ['{gone}', '{}']}}\n\
         \x20     - {{names: [db.example.test], type: A, port: 9101, nameservers: ['{}']}}\n",
        second.addr, first.addr
    );
    let bridge = Bridge::start(&dir.write("sdbridge.yml", &text));
    let targets: Vec<Vec<String>> = served(&bridge).into_iter().map(|g| g.0).collect();
    assert_eq!(targets, [["127.0.0.21:9100"], ["127.0.0.11:9101"]]);
}

/// `check` takes `dns_sd_configs` (it used to say "not supported") and
/// reports every bad block at its place.
#[test]
fn check_accepts_dns_sd_configs_and_reports_their_errors() {
    let dir = Dir::new();
    let ok = dir.write(
        "ok.yml",
        "jobs:\n  - job_name: d\n    dns_sd_configs:\n      - names: [_x._tcp.example.test]\n      - {names: [db.example.test], type: A, port: 9100, nameservers: ['127.0.0.1:8600']}\n",
    );
    let out = crate::util::run_cli(None, ["check".as_ref(), ok.as_os_str()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let bad = dir.write(
        "bad.yml",
        "jobs:\n  - job_name: d\n    dns_sd_configs:\n      - {names: [a], type: A}\n      - {names: [a], nameservers: [consul:8600]}\n",
    );
    let out = crate::util::run_cli(None, ["check".as_ref(), bad.as_os_str()]);
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let at = |place: &str| format!("{}:{place}", bad.display());
    assert!(
        stdout.contains(&at("4:9: jobs[0].dns_sd_configs[0]: a port is required in DNS-SD configs for all record types except SRV")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&at(
            "5:36: jobs[0].dns_sd_configs[1].nameservers[0]: \"consul:8600\" is not IP:PORT"
        )),
        "{stdout}"
    );
}

/// A reload keeps an unchanged block running (no new query: it asked once
/// in an hour-long interval) and restarts a changed one, which asks again.
#[test]
fn a_reload_keeps_an_unchanged_block_and_its_answers() {
    let binary = require_binary!("dnsmasq");
    let mut args = records(9105);
    args.push("--log-queries".into());
    let server = dnsmasq(&binary, &args);
    let dir = Dir::new();
    let block = |name: &str, port: u16| {
        format!(
            "      - {{names: [{name}], type: A, port: {port}, refresh_interval: 1h, nameservers: ['{}']}}\n",
            server.addr
        )
    };
    let text = |second_port: u16| {
        format!(
            "jobs:\n  - job_name: dns\n    dns_sd_configs:\n{}{}",
            block("db1.example.test", 9100),
            block("db2.example.test", second_port)
        )
    };
    let config = dir.write("sdbridge.yml", &text(9100));
    let bridge = Bridge::start(&config);
    let asked = |name: &str| server.log().matches(&format!("query[A] {name} ")).count();
    assert_eq!(
        (asked("db1.example.test"), asked("db2.example.test")),
        (1, 1),
        "{}",
        server.log()
    );

    dir.replace("sdbridge.yml", &text(9200));
    let r = bridge.request("POST", "/-/reload", &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    bridge.wait_body("/http_sd/dns", "the changed block", |b| {
        b.contains("127.0.0.12:9200")
    });
    assert!(bridge
        .get("/http_sd/dns")
        .text()
        .contains("127.0.0.11:9100"));
    poll_until(
        Duration::from_secs(10),
        "the changed block's query logged",
        || (asked("db2.example.test") == 2).then_some(()),
    );
    assert_eq!(
        asked("db1.example.test"),
        1,
        "the unchanged block asked nothing more"
    );
}
