//! End-to-end parity for `dns_sd_configs`: Prometheus 2.42 with its own
//! `dns_sd_configs` and Prometheus reading sdbridge's HTTP SD for the same
//! blocks must discover the same targets and labels.
//!
//! Prometheus reads only `/etc/resolv.conf`, so the comparison runs inside
//! fresh network and mount namespaces (`unshare -n -m`, as root): `lo` up,
//! a resolv.conf naming 127.0.0.1 (with a search domain and `ndots`)
//! bind-mounted over `/etc/resolv.conf` in that mount namespace only, and
//! dnsmasq on 127.0.0.1:53 there. The test re-runs this test binary inside
//! the namespaces for [`inside_namespaces`], which refuses to run
//! anywhere else. Prometheus scrapes nothing (every target dropped) and is
//! stopped at the end, with everything else.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::dns_util::Dnsmasq;
use crate::e2e::{Consumer, Labels, DROP_ALL};
use crate::util::{poll_until, skip, Bridge, Dir};

/// Set for the inner run: the namespaces of the outer one, which the
/// inner one must not be in.
const INNER: &str = "SDBRIDGE_DNS_OUTER_NAMESPACES";

/// The resolv.conf inside: names with at most `ndots` dots go through the
/// search list first.
const RESOLV_CONF: &str =
    "nameserver 127.0.0.1\nsearch example.test\noptions ndots:2 timeout:1 attempts:1\n";

/// The blocks, identical for both sides.
const BLOCKS: &[&str] = &[
    // `_db._tcp` is found through the search list, `nope` nowhere
    // (NXDOMAIN: no targets); `_big` needs TCP.
    "names: [_db._tcp, _big._tcp.example.test., nope]",
    "names: [db1, db2.example.test], type: A, port: 9100",
    "names: [db1], type: AAAA, port: 9100",
    // Tried as example.test.example.test. first (2 labels, ndots:2).
    "names: [example.test], type: MX, port: 25",
];

/// Targets the blocks give: 2 + 300 SRV, 2 A, 1 AAAA, 1 MX.
const EXPECTED: usize = 306;

#[test]
fn prometheus_discovers_from_dns_what_sdbridge_serves() {
    for binary in ["prometheus", "dnsmasq", "unshare", "ip", "mount"] {
        if crate::util::require_binary(binary).is_none() {
            return;
        }
    }
    match Command::new("unshare").args(["-n", "-m", "true"]).output() {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            return skip(&format!(
                "cannot make network and mount namespaces (unshare -n -m: {}); run as root",
                String::from_utf8_lossy(&o.stderr).trim()
            ))
        }
        Err(e) => return skip(&format!("cannot run unshare: {e}")),
    }
    if !Path::new("/etc/resolv.conf").is_file() {
        return skip("/etc/resolv.conf is not a file to bind-mount over");
    }
    let exe = std::env::current_exe().expect("the test binary");
    let out = Command::new("unshare")
        .args(["-n", "-m", "--"])
        .arg(exe)
        .args([
            "--exact",
            "e2e_dns::inside_namespaces",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(INNER, outer_namespaces())
        .output()
        .expect("run the inner test");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && text.contains("1 passed"),
        "the test inside the namespaces failed:\n{text}"
    );
    eprintln!("{text}");
}

/// This process's mount and network namespaces.
fn outer_namespaces() -> String {
    ["mnt", "net"]
        .iter()
        .map(|kind| {
            std::fs::read_link(format!("/proc/self/ns/{kind}"))
                .map(|p| p.display().to_string())
                .unwrap_or_else(|e| panic!("/proc/self/ns/{kind}: {e}"))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn run(program: &str, args: &[&str]) {
    let out = Command::new(program).args(args).output().expect(program);
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn sd_blocks(indent: &str) -> String {
    BLOCKS
        .iter()
        .map(|b| format!("{indent}- {{{b}, refresh_interval: 1s}}\n"))
        .collect()
}

#[test]
#[ignore = "run by prometheus_discovers_from_dns_what_sdbridge_serves inside fresh namespaces"]
fn inside_namespaces() {
    let outer = std::env::var(INNER)
        .expect("run only by prometheus_discovers_from_dns_what_sdbridge_serves");
    // Never the machine's own /etc/resolv.conf or network.
    let (outer, own) = (outer.split(' ').collect::<Vec<_>>(), outer_namespaces());
    for (outer, own) in outer.iter().zip(own.split(' ')) {
        assert!(
            outer.starts_with("mnt:") || outer.starts_with("net:"),
            "{outer}"
        );
        assert_ne!(
            *outer, own,
            "not in namespaces of its own: refusing to go on"
        );
    }
    assert_eq!(outer.len(), 2);
    run("ip", &["link", "set", "lo", "up"]);
    run("mount", &["--make-rprivate", "/"]);
    let dir = Dir::new();
    let resolv = dir.write("resolv.conf", RESOLV_CONF);
    run(
        "mount",
        &["--bind", &resolv.display().to_string(), "/etc/resolv.conf"],
    );
    assert_eq!(
        std::fs::read_to_string("/etc/resolv.conf").unwrap(),
        RESOLV_CONF
    );

    let mut records: Vec<String> = vec![
        "--srv-host=_db._tcp.example.test,db1.example.test,9104,10,5".into(),
        "--srv-host=_db._tcp.example.test,db2.example.test,9105,20,5".into(),
        "--host-record=db1.example.test,127.0.0.11,::1".into(),
        "--host-record=db2.example.test,127.0.0.12".into(),
        "--mx-host=example.test,mail.example.test,10".into(),
    ];
    records.extend((0..300).map(|i| {
        format!(
            "--srv-host=_big._tcp.example.test,h{i}.example.test,{}",
            10000 + i
        )
    }));
    let dnsmasq = crate::util::require_binary("dnsmasq").expect("dnsmasq");
    let _dns = Dnsmasq::start(&dnsmasq, "127.0.0.1:53".parse().unwrap(), &records);

    let config = dir.write(
        "sdbridge.yml",
        &format!(
            "jobs:\n  - job_name: dns\n    dns_sd_configs:\n{}",
            sd_blocks("      ")
        ),
    );
    let bridge = Bridge::start(&config);
    let prometheus_yml = dir.write(
        "prometheus.yml",
        &format!(
            "global: {{scrape_interval: 1h}}\nscrape_configs:\n\
             \x20 - job_name: via_dns\n    dns_sd_configs:\n{}{DROP_ALL}\
             \x20 - job_name: via_http_sd\n    http_sd_configs:\n      - url: http://{}/http_sd/dns\n        refresh_interval: 1s\n{DROP_ALL}",
            sd_blocks("      "),
            bridge.addr
        ),
    );
    let prometheus = crate::util::require_binary("prometheus").expect("prometheus");
    let consumer = Consumer::prometheus(&prometheus, &prometheus_yml, &dir.path("data"));

    let normalize = |mut l: Labels| {
        for name in ["job", "__meta_url", "__meta_sdbridge_job"] {
            l.remove(name);
        }
        l
    };
    let mut seen = (usize::MAX, usize::MAX);
    let dns = poll_until(Duration::from_secs(60), "both jobs' targets", || {
        let mut jobs = consumer.dropped();
        let mut side = |job: &str| -> Vec<Labels> {
            let mut v: Vec<Labels> = jobs
                .remove(job)
                .unwrap_or_default()
                .into_iter()
                .map(normalize)
                .collect();
            v.sort();
            v
        };
        let (dns, http) = (side("via_dns"), side("via_http_sd"));
        if (dns.len(), http.len()) != seen {
            seen = (dns.len(), http.len());
            eprintln!("{} via dns_sd, {} via sdbridge", dns.len(), http.len());
        }
        (dns.len() == EXPECTED && dns == http).then_some(dns)
    });
    let find = |address: &str| -> &Labels {
        dns.iter()
            .find(|l| l["__address__"] == address)
            .unwrap_or_else(|| panic!("no {address} in {dns:?}"))
    };
    let db1 = find("db1.example.test:9104");
    assert_eq!(db1["__meta_dns_name"], "_db._tcp");
    assert_eq!(db1["__meta_dns_srv_record_target"], "db1.example.test.");
    assert_eq!(find("[::1]:9100")["__meta_dns_name"], "db1");
    assert_eq!(
        find("mail.example.test:25")["__meta_dns_mx_record_target"],
        "mail.example.test."
    );
    assert_eq!(
        find("h299.example.test:10299")["__meta_dns_srv_record_port"],
        "10299"
    );
    drop(consumer);
}
