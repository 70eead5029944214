//! `consul_sd_configs` end to end: the real `sdbridge serve` against the
//! fake Consul agent (`fake_consul.rs`) on loopback. Labels are written out
//! as Prometheus's `discovery/consul` (and, with `vm_tag_labels`,
//! VictoriaMetrics) would produce them.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::fake_consul::{FakeConsul, Fault, Node, Options, ServiceInstance, TlsFiles};
use crate::util::{groups, poll_until, Bridge, Dir};

/// A config with one job per `(name, consul, extra lines of the
/// consul_sd_configs entry)`.
pub(crate) fn config(dir: &Dir, jobs: &[(&str, &FakeConsul, &[&str])]) -> PathBuf {
    let mut yaml = String::from("jobs:\n");
    for (name, consul, extra) in jobs {
        yaml.push_str(&format!(
            "  - job_name: {name}\n    consul_sd_configs:\n      - server: \"{}\"\n",
            consul.addr()
        ));
        for line in *extra {
            yaml.push_str(&format!("        {line}\n"));
        }
    }
    dir.write("sdbridge.yml", &yaml)
}

/// A label set from literal pairs.
fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// (service, service ID, health) of every served group, in served order.
pub(crate) fn instances(body: &str) -> Vec<(String, String, String)> {
    groups(body)
        .into_iter()
        .map(|(_, l)| {
            (
                l["__meta_consul_service"].clone(),
                l["__meta_consul_service_id"].clone(),
                l["__meta_consul_health"].clone(),
            )
        })
        .collect()
}

/// (service, service ID) of every served group, in served order.
fn ids(body: &str) -> Vec<(String, String)> {
    instances(body)
        .into_iter()
        .map(|(s, id, _)| (s, id))
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

/// Waits until both of the bridge's blocking watches are parked in the
/// fake (so a change wakes them at once, whatever happened before).
pub(crate) fn wait_armed(consul: &FakeConsul, watches: usize) {
    poll_until(Duration::from_secs(20), "blocking watches armed", || {
        (consul.stats().blocking_in_flight >= watches).then_some(())
    });
}

/// Waits until `path` is served with 200 and satisfies `pred`.
pub(crate) fn wait_served(
    bridge: &Bridge,
    path: &str,
    timeout: Duration,
    what: &str,
    pred: impl Fn(&str) -> bool,
) -> String {
    poll_until(timeout, what, || {
        let r = bridge.get(path);
        (r.status == 200 && pred(&r.text())).then(|| r.text())
    })
}

/// A node with a passing `serfHealth` check, as every real node has.
pub(crate) fn node_with_serf(consul: &FakeConsul, name: &str) {
    consul.set_node(Node::new(name, "127.0.0.1"));
    consul.set_check_status(name, "serfHealth", "passing");
}

/// Node `n1` with one instance, `web-1` of `web` on port 9100, passing.
fn web_1_passing(consul: &FakeConsul) {
    node_with_serf(consul, "n1");
    consul.register(ServiceInstance::new("n1", "web", 9100).id("web-1"));
    consul.set_check_status("n1", "service:web-1", "passing");
}

// ---------------------------------------------------------------------------
// 1. Labels

/// Three nodes (one IPv6), four health states, an instance without
/// address, tagged addresses, metadata keys needing sanitising.
fn label_catalog() -> FakeConsul {
    let c = FakeConsul::start();
    c.set_node(
        Node::new("node-a", "127.0.0.1")
            .meta("rack.name", "r1")
            .meta("서비스.이름", "결제")
            .meta("env-type", "prod")
            .tagged_address("lan", "127.0.0.1")
            .tagged_address("wan-ipv4", "127.0.0.2"),
    );
    c.set_node(Node::new("node-b", "::1").tagged_address("lan_ipv6", "::1"));
    c.set_node(Node::new("node-c", "127.0.0.3"));
    // Registered out of served order on purpose.
    c.register(
        ServiceInstance::new("node-c", "web", 9100)
            .id("web-3")
            .address("127.0.0.30")
            .tags(&["canary"]),
    );
    c.set_check_status("node-c", "service:web-3", "critical");
    c.register(ServiceInstance::new("node-b", "web", 9100).id("web-2"));
    c.set_check_status("node-b", "serfHealth", "passing");
    c.set_check_status("node-b", "service:web-2", "warning");
    c.register(
        ServiceInstance::new("node-a", "web", 9100)
            .id("web-1")
            .tags(&["primary", "v=1", "zone.name=a-1"])
            .meta("version.major", "2")
            .meta("팀-이름", "플랫폼")
            // Service tagged addresses are not labels in Prometheus.
            .tagged_address("lan", "127.0.0.10", 9100),
    );
    c.set_check_status("node-a", "service:web-1", "passing");
    c.register(
        ServiceInstance::new("node-a", "web", 9101)
            .id("web-4")
            .tags(&["primary"]),
    );
    c.set_check_status("node-a", "service:web-4", "passing");
    c.set_service_maintenance("node-a", "web-4", true);
    c.register(
        ServiceInstance::new("node-b", "db", 3306)
            .id("db-1")
            .address("::1")
            .tags(&["mysql", "primary"])
            // Both sanitise to `a_b`: the key sorting last ("a.b") wins
            // (docs/consul_sd.md; Prometheus picks at random).
            .meta("a-b", "dash")
            .meta("a.b", "dot"),
    );
    // No checks at all: "passing" (consul/api AggregatedStatus).
    c.register(ServiceInstance::new("node-c", "cache", 6379).id("cache-1"));
    c
}

/// What Prometheus would discover (default `tag_separator`), for job `job`.
fn expected_prometheus(job: &str) -> Vec<(Vec<String>, BTreeMap<String, String>)> {
    // "서비스.이름" is six characters, each invalid in a label name: six `_`.
    let node_a_korean = format!("__meta_consul_metadata_{}", "______");
    // "팀-이름" is four characters: four `_`.
    let web1_korean = format!("__meta_consul_service_metadata_{}", "____");
    let node_a = |extra: &[(&str, &str)]| {
        let mut l = labels(&[
            ("__meta_consul_address", "127.0.0.1"),
            ("__meta_consul_dc", "dc1"),
            ("__meta_consul_metadata_env_type", "prod"),
            ("__meta_consul_metadata_rack_name", "r1"),
            (&node_a_korean, "결제"),
            ("__meta_consul_node", "node-a"),
            ("__meta_consul_tagged_address_lan", "127.0.0.1"),
            ("__meta_consul_tagged_address_wan_ipv4", "127.0.0.2"),
            ("__meta_sdbridge_job", job),
        ]);
        l.extend(labels(extra));
        l
    };
    vec![
        (
            vec!["127.0.0.3:6379".into()],
            labels(&[
                ("__meta_consul_address", "127.0.0.3"),
                ("__meta_consul_dc", "dc1"),
                ("__meta_consul_health", "passing"),
                ("__meta_consul_node", "node-c"),
                ("__meta_consul_service", "cache"),
                ("__meta_consul_service_address", ""),
                ("__meta_consul_service_id", "cache-1"),
                ("__meta_consul_service_port", "6379"),
                ("__meta_consul_tags", ",,"),
                ("__meta_sdbridge_job", job),
            ]),
        ),
        (
            vec!["[::1]:3306".into()],
            labels(&[
                ("__meta_consul_address", "::1"),
                ("__meta_consul_dc", "dc1"),
                ("__meta_consul_health", "passing"),
                ("__meta_consul_node", "node-b"),
                ("__meta_consul_service", "db"),
                ("__meta_consul_service_address", "::1"),
                ("__meta_consul_service_id", "db-1"),
                ("__meta_consul_service_metadata_a_b", "dot"),
                ("__meta_consul_service_port", "3306"),
                ("__meta_consul_tagged_address_lan_ipv6", "::1"),
                ("__meta_consul_tags", ",mysql,primary,"),
                ("__meta_sdbridge_job", job),
            ]),
        ),
        (
            // Empty service address: the node's address.
            vec!["127.0.0.1:9100".into()],
            node_a(&[
                ("__meta_consul_health", "passing"),
                ("__meta_consul_service", "web"),
                ("__meta_consul_service_address", ""),
                ("__meta_consul_service_id", "web-1"),
                ("__meta_consul_service_metadata_version_major", "2"),
                (&web1_korean, "플랫폼"),
                ("__meta_consul_service_port", "9100"),
                ("__meta_consul_tags", ",primary,v=1,zone.name=a-1,"),
            ]),
        ),
        (
            vec!["127.0.0.1:9101".into()],
            node_a(&[
                ("__meta_consul_health", "maintenance"),
                ("__meta_consul_service", "web"),
                ("__meta_consul_service_address", ""),
                ("__meta_consul_service_id", "web-4"),
                ("__meta_consul_service_port", "9101"),
                ("__meta_consul_tags", ",primary,"),
            ]),
        ),
        (
            // IPv6 node address, bracketed.
            vec!["[::1]:9100".into()],
            labels(&[
                ("__meta_consul_address", "::1"),
                ("__meta_consul_dc", "dc1"),
                ("__meta_consul_health", "warning"),
                ("__meta_consul_node", "node-b"),
                ("__meta_consul_service", "web"),
                ("__meta_consul_service_address", ""),
                ("__meta_consul_service_id", "web-2"),
                ("__meta_consul_service_port", "9100"),
                ("__meta_consul_tagged_address_lan_ipv6", "::1"),
                ("__meta_consul_tags", ",,"),
                ("__meta_sdbridge_job", job),
            ]),
        ),
        (
            vec!["127.0.0.30:9100".into()],
            labels(&[
                ("__meta_consul_address", "127.0.0.3"),
                ("__meta_consul_dc", "dc1"),
                ("__meta_consul_health", "critical"),
                ("__meta_consul_node", "node-c"),
                ("__meta_consul_service", "web"),
                ("__meta_consul_service_address", "127.0.0.30"),
                ("__meta_consul_service_id", "web-3"),
                ("__meta_consul_service_port", "9100"),
                ("__meta_consul_tags", ",canary,"),
                ("__meta_sdbridge_job", job),
            ]),
        ),
    ]
}

#[test]
fn consul_labels_are_prometheus_labels() {
    let c = label_catalog();
    let dir = Dir::new();
    let bridge = Bridge::start(&config(
        &dir,
        &[
            ("prom", &c, &[]),
            ("pipe", &c, &["tag_separator: \"|\""]),
            ("vm", &c, &["vm_tag_labels: true"]),
        ],
    ));

    let r = bridge.get("/http_sd/prom");
    assert_eq!(r.status, 200);
    let text = r.text();
    // UTF-8 passes through unescaped.
    assert!(text.contains("\"결제\"") && !text.contains("\\u"), "{text}");
    assert_eq!(groups(&text), expected_prometheus("prom"));

    // A custom separator wraps and joins the tags.
    let mut expected = expected_prometheus("pipe");
    let pipe_tags = [
        "||",
        "|mysql|primary|",
        "|primary|v=1|zone.name=a-1|",
        "|primary|",
        "||",
        "|canary|",
    ];
    for ((_, l), tags) in expected.iter_mut().zip(pipe_tags) {
        l.insert("__meta_consul_tags".into(), tags.into());
    }
    assert_eq!(groups(&bridge.get("/http_sd/pipe").text()), expected);

    // VictoriaMetrics's extra tag labels: the name before the first `=`
    // (sanitised), the value after it or empty.
    let mut expected = expected_prometheus("vm");
    let vm_extra: [&[(&str, &str)]; 6] = [
        &[],
        &[
            ("__meta_consul_tag_mysql", ""),
            ("__meta_consul_tagpresent_mysql", "true"),
            ("__meta_consul_tag_primary", ""),
            ("__meta_consul_tagpresent_primary", "true"),
        ],
        &[
            ("__meta_consul_tag_primary", ""),
            ("__meta_consul_tagpresent_primary", "true"),
            ("__meta_consul_tag_v", "1"),
            ("__meta_consul_tagpresent_v", "true"),
            ("__meta_consul_tag_zone_name", "a-1"),
            ("__meta_consul_tagpresent_zone_name", "true"),
        ],
        &[
            ("__meta_consul_tag_primary", ""),
            ("__meta_consul_tagpresent_primary", "true"),
        ],
        &[],
        &[
            ("__meta_consul_tag_canary", ""),
            ("__meta_consul_tagpresent_canary", "true"),
        ],
    ];
    for ((_, l), extra) in expected.iter_mut().zip(vm_extra) {
        l.extend(labels(extra));
    }
    assert_eq!(groups(&bridge.get("/http_sd/vm").text()), expected);

    // The merged endpoint carries all three, told apart by job.
    let all = groups(&bridge.get("/http_sd").text());
    assert_eq!(all.len(), 18);
}

// ---------------------------------------------------------------------------
// 2. Selection

#[test]
fn consul_services_tags_node_meta_and_filters_select_what_is_served() {
    let c = FakeConsul::start();
    c.set_node(Node::new("n1", "127.0.0.1").meta("rack", "r1"));
    c.set_node(Node::new("n2", "127.0.0.2").meta("rack", "r2"));
    c.register(
        ServiceInstance::new("n1", "web", 9100)
            .id("web-1")
            .tags(&["prod"]),
    );
    c.register(
        ServiceInstance::new("n2", "web", 9100)
            .id("web-2")
            .tags(&["canary"]),
    );
    c.register(
        ServiceInstance::new("n2", "db", 3306)
            .id("db-1")
            .tags(&["prod"]),
    );
    c.register(ServiceInstance::new("n1", "cache", 6379).id("cache-1"));
    c.set_check_status("n2", "service:db-1", "critical");
    let dir = Dir::new();
    let bridge = Bridge::start(&config(
        &dir,
        &[
            ("all", &c, &[]),
            ("services", &c, &["services: [web, cache, absent]"]),
            // Every listed tag on the instance (tag= on the health call).
            ("tags", &c, &["tags: [prod]"]),
            ("node_meta", &c, &["node_meta: {rack: r2}"]),
            // Catalog filter: picks services; all their instances served
            // (filter is not sent to the health API, Prometheus >= 3.11.2).
            ("filter", &c, &["filter: '\"canary\" in ServiceTags'"]),
            // Health filter: picks instances.
            (
                "health_filter",
                &c,
                &["health_filter: 'Service.Port == 9100 and Node.Meta.rack == \"r2\"'"],
            ),
        ],
    ));
    let served = |job: &str| ids(&bridge.get(&format!("/http_sd/{job}")).text());
    assert_eq!(
        served("all"),
        pairs(&[
            ("cache", "cache-1"),
            ("db", "db-1"),
            ("web", "web-1"),
            ("web", "web-2")
        ])
    );
    assert_eq!(
        served("services"),
        pairs(&[("cache", "cache-1"), ("web", "web-1"), ("web", "web-2")])
    );
    assert_eq!(served("tags"), pairs(&[("db", "db-1"), ("web", "web-1")]));
    assert_eq!(
        served("node_meta"),
        pairs(&[("db", "db-1"), ("web", "web-2")])
    );
    assert_eq!(
        served("filter"),
        pairs(&[("web", "web-1"), ("web", "web-2")])
    );
    assert_eq!(served("health_filter"), pairs(&[("web", "web-2")]));
    // The critical instance is served, with its health (Prometheus serves
    // every instance; relabelling decides).
    let db = instances(&bridge.get("/http_sd/tags").text());
    assert_eq!(db[0].2, "critical");
}

// ---------------------------------------------------------------------------
// 3. Changes served promptly (the times are in bench/consul_load.rs and
// the README; here a generous bound, since some paths legitimately wait
// the 1 s EXPLAIN_GRACE)

#[test]
fn consul_changes_are_served_promptly() {
    let c = FakeConsul::start();
    c.set_node(Node::new("n1", "127.0.0.1"));
    c.set_node(Node::new("n2", "127.0.0.2"));
    c.set_check_status("n1", "serfHealth", "passing");
    c.set_check_status("n2", "serfHealth", "passing");
    c.register(ServiceInstance::new("n1", "web", 9100).id("web-1"));
    c.set_check_status("n1", "service:web-1", "passing");
    let dir = Dir::new();
    let bridge = Bridge::start(&config(&dir, &[("j", &c, &[])]));
    let path = "/http_sd/j";

    let timed = |what: &str, change: &dyn Fn(), expect: &[(&str, &str, &str)]| {
        wait_armed(&c, 2);
        let expect: Vec<(String, String, String)> = expect
            .iter()
            .map(|(a, b, h)| (a.to_string(), b.to_string(), h.to_string()))
            .collect();
        let started = Instant::now();
        change();
        wait_served(&bridge, path, Duration::from_secs(10), what, |b| {
            instances(b) == expect
        });
        // wait_served's 10 s is the bound; the time is printed for a look.
        eprintln!("{what}: served after {:?}", started.elapsed());
    };

    timed(
        "instance added (with its check)",
        &|| {
            c.register(ServiceInstance::new("n2", "web", 9100).id("web-2"));
            c.set_check_status("n2", "service:web-2", "passing");
        },
        &[("web", "web-1", "passing"), ("web", "web-2", "passing")],
    );
    timed(
        "instance added (no service check)",
        &|| {
            c.register(ServiceInstance::new("n2", "web", 9101).id("web-3"));
        },
        &[
            ("web", "web-1", "passing"),
            ("web", "web-2", "passing"),
            ("web", "web-3", "passing"),
        ],
    );
    timed(
        "health flip",
        &|| {
            c.set_check_status("n2", "service:web-2", "critical");
        },
        &[
            ("web", "web-1", "passing"),
            ("web", "web-2", "critical"),
            ("web", "web-3", "passing"),
        ],
    );
    timed(
        "node maintenance",
        &|| {
            c.set_node_maintenance("n1", true);
        },
        &[
            ("web", "web-1", "maintenance"),
            ("web", "web-2", "critical"),
            ("web", "web-3", "passing"),
        ],
    );
    timed(
        "instance removed (with its check)",
        &|| {
            c.deregister("n1", "web-1");
        },
        &[("web", "web-2", "critical"), ("web", "web-3", "passing")],
    );
    timed(
        "instance removed (no service check)",
        &|| {
            c.deregister("n2", "web-3");
        },
        &[("web", "web-2", "critical")],
    );
    timed(
        "new service",
        &|| {
            c.register(ServiceInstance::new("n1", "api", 8080).id("api-1"));
        },
        &[
            ("api", "api-1", "maintenance"),
            ("web", "web-2", "critical"),
        ],
    );
    timed(
        "service removed entirely",
        &|| {
            c.deregister("n1", "api-1");
        },
        &[("web", "web-2", "critical")],
    );
}

// ---------------------------------------------------------------------------
// 4. Many clients, one set of watches

#[test]
fn consul_many_http_sd_clients_cost_consul_nothing_more() {
    let c = FakeConsul::start();
    for i in 0..5 {
        c.register(ServiceInstance::new("n1", &format!("svc-{i}"), 9100 + i));
    }
    let dir = Dir::new();
    let bridge = Bridge::start(&config(&dir, &[("j", &c, &[])]));
    let etag = bridge
        .get("/http_sd/j")
        .header("etag")
        .expect("etag")
        .to_string();

    let window = |clients: usize| -> u64 {
        wait_armed(&c, 2);
        c.reset_stats();
        let until = Instant::now() + Duration::from_secs(2);
        std::thread::scope(|s| {
            for _ in 0..clients {
                s.spawn(|| {
                    let mut n = 0;
                    while Instant::now() < until && n < 10_000 {
                        let r = bridge.get("/http_sd/j");
                        assert_eq!(r.status, 200);
                        assert_eq!(r.header("etag"), Some(etag.as_str()));
                        n += 1;
                    }
                    assert!(n > 0);
                });
            }
        });
        c.stats().requests
    };
    let one = window(1);
    let many = window(20);
    assert!(
        many <= one,
        "20 clients: {many} Consul requests, 1 client: {one}"
    );
    assert_eq!(many, 0, "nothing changed, the watches stay parked");
}

// ---------------------------------------------------------------------------
// 5. Faults keep the last good body

/// Injects `fault`, makes a change the bridge cannot read while it lasts,
/// checks the last good body keeps being served byte-identical, then
/// clears the fault and waits for the change.
fn last_good_survives(fault: Fault, error_kind: Option<&str>) {
    let c = FakeConsul::start();
    web_1_passing(&c);
    let dir = Dir::new();
    let bridge = Bridge::start(&config(&dir, &[("j", &c, &[])]));
    let good = bridge.get("/http_sd/j");
    let etag = good.header("etag").expect("etag").to_string();
    assert_eq!(ids(&good.text()), pairs(&[("web", "web-1")]));
    let up = |b: &Bridge| b.metric("sdbridge_source_up", &["job=\"j\"", "kind=\"consul_sd\""]);
    assert_eq!(up(&bridge), Some(1.0));
    let errors = |b: &Bridge| {
        b.metric(
            "sdbridge_source_errors_total",
            &["job=\"j\"", "kind=\"consul_sd\""],
        )
        .unwrap_or(0.0)
    };
    let errors_before = errors(&bridge);

    wait_armed(&c, 2);
    c.inject("", fault.clone());
    c.reset_stats();
    // The parked watches answer this change; every request after it meets
    // the fault.
    c.register(ServiceInstance::new("n1", "web", 9101).id("web-2"));
    c.set_check_status("n1", "service:web-2", "passing");
    // Until the bridge has met the fault (and, where it is visible, shown
    // it), the last good body is served byte-identical.
    let check_last_good = || {
        let r = bridge.get("/http_sd/j");
        assert_eq!(r.status, 200, "{fault:?}");
        assert_eq!(r.header("etag"), Some(etag.as_str()), "{fault:?}");
        assert_eq!(r.body, good.body, "{fault:?}");
    };
    poll_until(
        Duration::from_secs(20),
        "a request meeting the fault",
        || {
            check_last_good();
            let s = c.stats();
            (s.by_endpoint.get("health/service").copied().unwrap_or(0) > 0).then_some(())
        },
    );
    if let Some(kind) = error_kind {
        poll_until(Duration::from_secs(20), "the fault in /metrics", || {
            check_last_good();
            let shown = up(&bridge) == Some(0.0)
                && bridge
                    .metric(
                        "sdbridge_source_errors_total",
                        &["job=\"j\"", &format!("error=\"{kind}\"")],
                    )
                    .unwrap_or(0.0)
                    > 0.0;
            shown.then_some(())
        });
        assert!(errors(&bridge) > errors_before);
    }
    // Still the last good body after the fault was seen.
    for _ in 0..5 {
        check_last_good();
    }

    c.clear_faults();
    wait_served(
        &bridge,
        "/http_sd/j",
        Duration::from_secs(40),
        "recovery after the fault",
        |b| ids(b) == pairs(&[("web", "web-1"), ("web", "web-2")]),
    );
    poll_until(Duration::from_secs(40), "source up again", || {
        (up(&bridge) == Some(1.0)).then_some(())
    });
    // And the watches work again: a later change is served.
    c.deregister("n1", "web-1");
    wait_served(
        &bridge,
        "/http_sd/j",
        Duration::from_secs(10),
        "a change after recovery",
        |b| ids(b) == pairs(&[("web", "web-2")]),
    );
}

#[test]
fn consul_fault_500_keeps_last_good() {
    last_good_survives(Fault::Status500, Some("consul_http"));
}

#[test]
fn consul_fault_hang_keeps_last_good() {
    // A hung request shows no error before its timeout (30 s), longer
    // than the test waits.
    last_good_survives(Fault::Hang, None);
}

#[test]
fn consul_fault_garbage_keeps_last_good() {
    last_good_survives(Fault::Garbage, Some("consul_decode"));
}

#[test]
fn consul_fault_429_keeps_last_good() {
    last_good_survives(
        Fault::TooManyRequests {
            retry_after_secs: 1,
        },
        Some("consul_http"),
    );
}

/// Issue 8: `Retry-After: 18446744073709551615` made the watcher panic
/// ("overflow when adding duration to instant") while `/metrics` still
/// said up and no change was served again. The delay is now clamped: the
/// source reports the error, keeps its last good body and lives on.
#[test]
fn consul_retry_after_overflow_is_clamped() {
    let c = FakeConsul::start();
    web_1_passing(&c);
    let dir = Dir::new();
    let bridge = Bridge::start(&config(&dir, &[("j", &c, &[])]));
    let good = bridge.get("/http_sd/j");
    wait_armed(&c, 2);
    c.inject(
        "/v1/health/service/",
        Fault::TooManyRequests {
            retry_after_secs: u64::MAX,
        },
    );
    c.register(ServiceInstance::new("n1", "web", 9101).id("web-2"));
    c.set_check_status("n1", "service:web-2", "passing");
    poll_until(Duration::from_secs(20), "the 429 reported", || {
        let errors = bridge
            .metric("sdbridge_source_errors_total", &["job=\"j\""])
            .unwrap_or(0.0);
        let up = bridge.metric("sdbridge_source_up", &["job=\"j\""]);
        (errors > 0.0 && up == Some(0.0)).then_some(())
    });
    let r = bridge.get("/http_sd/j");
    assert_eq!((r.status, &r.body), (200, &good.body));
    let log = bridge.log();
    assert!(
        !log.contains("panicked") && !log.contains("overflow"),
        "{log}"
    );
    // The watches still work: a catalog change that needs no service
    // read (a service vanishing) is still seen by the blocking queries.
    assert_eq!(bridge.get("/-/healthy").status, 200);
}

/// Issue 18: after a `429` with `Retry-After: 18446744073709551615` on
/// `/v1/health/service/<name>`, the change was served 598 s later (two
/// 5-minute clamps). A server-given delay is now at most a minute: once
/// the 429s stop, the change is served within about a minute.
#[test]
fn consul_a_hostile_retry_after_costs_at_most_a_minute() {
    let c = FakeConsul::start();
    web_1_passing(&c);
    let dir = Dir::new();
    let bridge = Bridge::start(&config(&dir, &[("j", &c, &[])]));
    wait_armed(&c, 2);
    c.inject(
        "/v1/health/service/",
        Fault::TooManyRequests {
            retry_after_secs: u64::MAX,
        },
    );
    c.register(ServiceInstance::new("n1", "web", 9101).id("web-2"));
    c.set_check_status("n1", "service:web-2", "passing");
    poll_until(Duration::from_secs(20), "the 429 reported", || {
        let errors = bridge
            .metric("sdbridge_source_errors_total", &["job=\"j\""])
            .unwrap_or(0.0);
        (errors > 0.0).then_some(())
    });
    // Both writes have met their 429 (they wake the watches within a
    // second); from now on only the retry can serve web-2.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        ids(&bridge.get("/http_sd/j").text()),
        pairs(&[("web", "web-1")])
    );
    c.clear_faults();
    // Generous: the clamp is 60 s; it was 300 s.
    wait_served(
        &bridge,
        "/http_sd/j",
        Duration::from_secs(100),
        "the change served after the 429s",
        |b| ids(b) == pairs(&[("web", "web-1"), ("web", "web-2")]),
    );
}

#[test]
fn consul_index_reset_is_handled() {
    let c = FakeConsul::start();
    web_1_passing(&c);
    let dir = Dir::new();
    let bridge = Bridge::start(&config(&dir, &[("j", &c, &[])]));
    let good = bridge.get("/http_sd/j");
    wait_armed(&c, 2);
    // A snapshot restore: every index goes down (but stays above 1 so
    // that later changes move it).
    c.reset_index(c.index() - 2);
    // The watches see the index go backwards, read afresh and park again.
    wait_armed(&c, 2);
    assert_eq!(bridge.get("/http_sd/j").body, good.body);
    c.register(ServiceInstance::new("n1", "web", 9101).id("web-2"));
    c.set_check_status("n1", "service:web-2", "passing");
    wait_served(
        &bridge,
        "/http_sd/j",
        Duration::from_secs(10),
        "a change after the index reset",
        |b| ids(b) == pairs(&[("web", "web-1"), ("web", "web-2")]),
    );
    c.deregister("n1", "web-1");
    wait_served(
        &bridge,
        "/http_sd/j",
        Duration::from_secs(10),
        "a second change after the index reset",
        |b| ids(b) == pairs(&[("web", "web-2")]),
    );
}

// ---------------------------------------------------------------------------
// 6. 503 until the first sync

#[test]
fn consul_job_answers_503_until_first_sync() {
    let c = FakeConsul::start();
    c.register(ServiceInstance::new("n1", "web", 9100).id("web-1"));
    c.inject("", Fault::Status500);
    let dir = Dir::new();
    let bridge = Bridge::start_unready(&config(&dir, &[("j", &c, &[])]));
    // The bridge has tried (and failed) at least once.
    poll_until(Duration::from_secs(20), "a request to consul", || {
        (c.stats().requests > 0).then_some(())
    });
    for _ in 0..3 {
        let r = bridge.get("/http_sd/j");
        assert_eq!(r.status, 503, "{}", r.text());
        assert!(r.header("retry-after").is_some(), "{:?}", r.headers);
        assert_eq!(bridge.get("/-/ready").status, 503);
    }
    c.clear_faults();
    let body = wait_served(
        &bridge,
        "/http_sd/j",
        Duration::from_secs(40),
        "200 after the first sync",
        |_| true,
    );
    assert_eq!(ids(&body), pairs(&[("web", "web-1")]));
    assert_eq!(bridge.get("/-/ready").status, 200);
}

// ---------------------------------------------------------------------------
// 7. Identical blocks share one watcher

#[test]
fn consul_identical_blocks_share_one_watcher() {
    let catalog = || {
        let c = FakeConsul::start();
        for i in 0..4 {
            c.register(ServiceInstance::new("n1", &format!("svc-{i}"), 9100 + i));
        }
        c
    };
    let (single, double) = (catalog(), catalog());
    let (d1, d2) = (Dir::new(), Dir::new());
    let extra: &[&str] = &["services: [svc-0, svc-1, svc-2, svc-3]"];
    let b1 = Bridge::start(&config(&d1, &[("a", &single, extra)]));
    let b2 = Bridge::start(&config(
        &d2,
        &[("a", &double, extra), ("b", &double, extra)],
    ));
    wait_armed(&single, 2);
    wait_armed(&double, 2);
    let (s1, s2) = (single.stats(), double.stats());
    assert_eq!(s2.by_endpoint, s1.by_endpoint, "requests by endpoint");
    assert_eq!(s2.requests, s1.requests);
    assert_eq!((s1.peak_blocking, s2.peak_blocking), (2, 2));
    assert_eq!(s2.blocking_in_flight, 2);
    // Both jobs serve the same instances.
    let a = b2.get("/http_sd/a").text();
    let b = b2.get("/http_sd/b").text();
    assert_eq!(ids(&a), ids(&b));
    assert_eq!(ids(&a).len(), 4);
    assert_eq!(b1.get("/http_sd/a").body, b2.get("/http_sd/a").body);
    // A change reaches both jobs through the one watcher.
    double.register(ServiceInstance::new("n2", "svc-0", 9100).id("svc-0b"));
    for job in ["a", "b"] {
        wait_served(
            &b2,
            &format!("/http_sd/{job}"),
            Duration::from_secs(10),
            "the change in both jobs",
            |t| ids(t).len() == 5,
        );
    }
    wait_armed(&double, 2);
    assert_eq!(double.stats().peak_blocking, 2);
}

// ---------------------------------------------------------------------------
// 8. Bounded connections

/// Issue 8: the bound is per Consul server, not per `consul_sd_configs`
/// entry. Two different entries (one filters by tag) against one agent,
/// each `max_connections: 5`, share five connection slots: two blocking
/// watches each, and one for reads.
#[test]
fn two_configs_against_one_server_share_its_connection_slots() {
    let c = FakeConsul::start_with(Options {
        jitter: false,
        ..Options::default()
    });
    node_with_serf(&c, "n1");
    for i in 0..30 {
        let name = format!("svc-{i:02}");
        c.register(
            ServiceInstance::new("n1", &name, 9000 + i)
                .id(&name)
                .tags(&["t"]),
        );
        c.set_check_status("n1", &format!("service:{name}"), "passing");
    }
    let dir = Dir::new();
    let bridge = Bridge::start(&config(
        &dir,
        &[
            ("a", &c, &["max_connections: 5"]),
            ("b", &c, &["max_connections: 5", "tags: [t]"]),
        ],
    ));
    assert_eq!(groups(&bridge.get("/http_sd/a").text()).len(), 30);
    assert_eq!(groups(&bridge.get("/http_sd/b").text()).len(), 30);
    wait_armed(&c, 4);
    c.set_check_status("n1", "serfHealth", "critical");
    for job in ["/http_sd/a", "/http_sd/b"] {
        wait_served(
            &bridge,
            job,
            Duration::from_secs(30),
            "every service critical",
            |b| {
                let i = instances(b);
                i.len() == 30 && i.iter().all(|(_, _, h)| h == "critical")
            },
        );
    }
    let s = c.stats();
    assert!(
        s.peak_connections <= 5,
        "peak {} connections, shared bound 5",
        s.peak_connections
    );
    assert_eq!(s.rejected_connections, 0);
}

#[test]
fn consul_connections_stay_within_max_connections() {
    let c = FakeConsul::start_with(Options {
        jitter: false,
        ..Options::default()
    });
    node_with_serf(&c, "n1");
    for i in 0..50 {
        let name = format!("svc-{i:02}");
        c.register(ServiceInstance::new("n1", &name, 9000 + i).id(&name));
        c.set_check_status("n1", &format!("service:{name}"), "passing");
    }
    let dir = Dir::new();
    let bridge = Bridge::start(&config(&dir, &[("j", &c, &["max_connections: 4"])]));
    assert_eq!(groups(&bridge.get("/http_sd/j").text()).len(), 50);
    // Every open connection holds one of max_connections slots, whatever
    // the pool races (as counted by the fake, from accept to close).
    let bound = 4;
    let s = c.stats();
    // The 50 first reads run in parallel: the cap is reached, not passed.
    assert_eq!(
        s.peak_connections, bound,
        "peak connections with max_connections 4"
    );
    assert_eq!(s.rejected_connections, 0);
    // A node check change dirties all 50 services at once.
    wait_armed(&c, 2);
    c.set_check_status("n1", "serfHealth", "critical");
    wait_served(
        &bridge,
        "/http_sd/j",
        Duration::from_secs(20),
        "every service critical",
        |b| {
            let i = instances(b);
            i.len() == 50 && i.iter().all(|(_, _, h)| h == "critical")
        },
    );
    let s = c.stats();
    assert!(
        s.peak_connections <= bound,
        "peak {} connections after a 50-service refresh, max_connections 4",
        s.peak_connections
    );
}

// ---------------------------------------------------------------------------
// 9. TLS

/// A file of `fixtures/tls/` (test-only CA, server and client certificates).
fn tls_fixture(name: &str) -> String {
    format!("{}/fixtures/tls/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// A fake agent serving HTTPS with a certificate for `consul.test` only,
/// requiring client certificates signed by the test CA.
fn tls_consul() -> FakeConsul {
    let read = |name: &str| std::fs::read(tls_fixture(name)).expect("TLS fixture");
    let c = FakeConsul::start_with(Options {
        tls: Some(TlsFiles {
            cert: read("server.pem"),
            key: read("server.key"),
            client_ca: Some(read("ca.pem")),
        }),
        ..Options::default()
    });
    web_1_passing(&c);
    c
}

/// `tls_config` with the given fields (file names are fixture names).
fn tls_config_line(fields: &[(&str, &str)]) -> String {
    let fields: Vec<String> = fields
        .iter()
        .map(|(k, v)| match *k {
            "server_name" | "insecure_skip_verify" => format!("{k}: {v}"),
            _ => format!("{k}: '{}'", tls_fixture(v)),
        })
        .collect();
    format!("tls_config: {{{}}}", fields.join(", "))
}

#[test]
fn consul_over_tls_checks_the_certificate_name_and_presents_a_client_certificate() {
    let c = tls_consul();
    let dir = Dir::new();
    let full = tls_config_line(&[
        ("ca_file", "ca.pem"),
        ("server_name", "consul.test"),
        ("cert_file", "client.pem"),
        ("key_file", "client.key"),
    ]);
    let bridge = Bridge::start(&config(&dir, &[("j", &c, &["scheme: https", &full])]));
    assert_eq!(
        instances(&bridge.get("/http_sd/j").text()),
        [("web".into(), "web-1".into(), "passing".into())]
    );
    assert_eq!(c.stats().tls_failures, 0);
}

#[test]
fn consul_over_tls_refuses_a_certificate_for_another_name() {
    let c = tls_consul();
    let dir = Dir::new();
    // The certificate is for consul.test; 127.0.0.1 is what is dialled.
    let no_name = tls_config_line(&[
        ("ca_file", "ca.pem"),
        ("cert_file", "client.pem"),
        ("key_file", "client.key"),
    ]);
    let bridge = Bridge::start_unready(&config(&dir, &[("j", &c, &["scheme: https", &no_name])]));
    poll_until(Duration::from_secs(20), "the name mismatch logged", || {
        bridge.log().contains("not valid for name").then_some(())
    });
    assert_eq!(bridge.get("/http_sd/j").status, 503);
    assert_eq!(
        c.stats().requests,
        0,
        "no request over an unverified connection"
    );
    // insecure_skip_verify accepts it (as Go's InsecureSkipVerify does).
    let dir = Dir::new();
    let insecure = tls_config_line(&[
        ("insecure_skip_verify", "true"),
        ("cert_file", "client.pem"),
        ("key_file", "client.key"),
    ]);
    let bridge = Bridge::start(&config(&dir, &[("j", &c, &["scheme: https", &insecure])]));
    assert_eq!(instances(&bridge.get("/http_sd/j").text()).len(), 1);
}

#[test]
fn consul_over_tls_without_the_required_client_certificate_is_refused() {
    let c = tls_consul();
    let dir = Dir::new();
    let no_cert = tls_config_line(&[("ca_file", "ca.pem"), ("server_name", "consul.test")]);
    let bridge = Bridge::start_unready(&config(&dir, &[("j", &c, &["scheme: https", &no_cert])]));
    poll_until(Duration::from_secs(20), "a refused handshake", || {
        (c.stats().tls_failures > 0).then_some(())
    });
    assert_eq!(bridge.get("/http_sd/j").status, 503);
    assert_eq!(c.stats().requests, 0);
}
