//! The fake's own tests: it must follow Consul's documented behaviour.

use super::*;
use crate::util::{poll_until, request, Response};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Instant;

fn quiet() -> FakeConsul {
    FakeConsul::start_with(Options {
        jitter: false,
        ..Options::default()
    })
}

fn get(c: &FakeConsul, path: &str) -> Response {
    request(c.addr(), "GET", path, &[])
}

fn index_of(r: &Response) -> u64 {
    r.header("x-consul-index")
        .expect("X-Consul-Index")
        .parse()
        .expect("numeric index")
}

/// A GET in a background thread.
fn spawn_get(c: &FakeConsul, path: &str) -> std::thread::JoinHandle<(Response, Duration)> {
    let addr = c.addr();
    let path = path.to_string();
    std::thread::spawn(move || {
        let t = Instant::now();
        let r = request(addr, "GET", &path, &[]);
        (r, t.elapsed())
    })
}

fn fleet(c: &FakeConsul) {
    c.set_node(
        Node::new("node-a", "127.0.0.1")
            .meta("rack", "r1")
            .tagged_address("lan", "127.0.0.1"),
    );
    c.set_node(Node::new("node-b", "127.0.0.2").meta("rack", "r2"));
    c.register(
        ServiceInstance::new("node-b", "web", 8080)
            .tags(&["prod", "v2"])
            .meta("team", "a"),
    );
    c.register(
        ServiceInstance::new("node-a", "web", 8080)
            .id("web-1")
            .tags(&["prod"]),
    );
    c.register(
        ServiceInstance::new("node-a", "web", 8081)
            .id("web-0")
            .tags(&["canary"])
            .address("127.0.0.9"),
    );
    c.register(ServiceInstance::new("node-a", "db", 5432).tags(&["primary"]));
    c.set_check_status("node-a", "serfHealth", "passing");
    c.set_check_status("node-b", "serfHealth", "passing");
    c.set_check_status("node-a", "service:web-1", "passing");
    c.set_check_status("node-a", "service:web-0", "warning");
}

fn ids(r: &Response) -> Vec<String> {
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    r.json()
        .as_array()
        .expect("array")
        .iter()
        .map(|e| {
            format!(
                "{}/{}",
                e["Node"]["Node"].as_str().unwrap(),
                e["Service"]["ID"].as_str().unwrap()
            )
        })
        .collect()
}

#[test]
fn agent_self_and_headers() {
    let c = FakeConsul::start_with(Options {
        datacenter: "test-dc".into(),
        ..Options::default()
    });
    assert!(c.addr().ip().is_loopback());
    let r = get(&c, "/v1/agent/self");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["Config"]["Datacenter"], "test-dc");
    assert_eq!(r.json()["Config"]["NodeName"], "fake-agent");
    assert_eq!(r.json()["Member"]["Addr"], "127.0.0.1");
    // Empty catalog: index is never 0.
    for path in [
        "/v1/catalog/services",
        "/v1/health/service/nope",
        "/v1/health/state/any",
        "/v1/catalog/service/nope",
    ] {
        let r = get(&c, path);
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert!(index_of(&r) >= 1, "{path}");
        assert_eq!(r.header("x-consul-knownleader"), Some("true"));
        assert_eq!(r.header("x-consul-lastcontact"), Some("0"));
    }
    assert_eq!(get(&c, "/v1/catalog/services").json(), json!({}));
    assert_eq!(get(&c, "/v1/health/service/nope").json(), json!([]));
    assert_eq!(get(&c, "/v1/nope").status, 404);
    assert_eq!(
        request(c.addr(), "PUT", "/v1/catalog/services", &[]).status,
        405
    );
    assert_eq!(get(&c, "/v1/health/service/x?dc=dc9").status, 500);
    assert_eq!(
        get(&c, "/v1/health/service/x?dc=dc9").text(),
        "No path to datacenter"
    );
    assert_eq!(get(&c, "/v1/health/service/x?dc=test-dc").status, 200);
    assert_eq!(get(&c, "/v1/health/service/x?stale&consistent").status, 400);
    assert_eq!(get(&c, "/v1/health/service/x?index=abc").status, 400);
    assert_eq!(get(&c, "/v1/health/service/x?wait=10parsecs").status, 400);
    assert_eq!(get(&c, "/v1/health/state/sad").status, 400);
    let stats = c.stats();
    assert!(stats.requests >= 10);
    assert_eq!(stats.by_endpoint["agent/self"], 1);
}

#[test]
fn health_service_shapes_and_order() {
    let c = quiet();
    fleet(&c);
    let r = get(&c, "/v1/health/service/web");
    assert_eq!(ids(&r), ["node-a/web-0", "node-a/web-1", "node-b/web"]);
    let v = r.json();
    let e = &v[1];
    assert_eq!(e["Node"]["Address"], "127.0.0.1");
    assert_eq!(e["Node"]["Datacenter"], "dc1");
    assert_eq!(e["Node"]["Meta"], json!({"rack": "r1"}));
    assert_eq!(e["Node"]["TaggedAddresses"], json!({"lan": "127.0.0.1"}));
    assert!(e["Node"]["ID"].as_str().unwrap().len() == 36);
    assert_eq!(e["Service"]["Service"], "web");
    assert_eq!(e["Service"]["Tags"], json!(["prod"]));
    assert_eq!(e["Service"]["Port"], 8080);
    assert_eq!(e["Service"]["Address"], "");
    assert_eq!(e["Service"]["Weights"], json!({"Passing": 1, "Warning": 1}));
    assert!(e["Service"].get("Namespace").is_none());
    let checks: Vec<&str> = e["Checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["CheckID"].as_str().unwrap())
        .collect();
    assert_eq!(checks, ["serfHealth", "service:web-1"]);
    assert_eq!(e["Checks"][1]["ServiceName"], "web");
    assert_eq!(e["Checks"][1]["ServiceTags"], json!(["prod"]));
    assert_eq!(e["Checks"][0]["ServiceID"], "");
    assert_eq!(v[0]["Service"]["Address"], "127.0.0.9");
    // URL-decoded names.
    c.register(ServiceInstance::new("node-b", "my svc/x", 1));
    assert_eq!(
        ids(&get(&c, "/v1/health/service/my%20svc%2Fx")),
        ["node-b/my svc/x"]
    );
    // Tagged service addresses use {"Address","Port"}.
    c.register(ServiceInstance::new("node-b", "ta", 1).tagged_address("wan", "127.0.0.3", 80));
    let v = get(&c, "/v1/health/service/ta").json();
    assert_eq!(
        v[0]["Service"]["TaggedAddresses"],
        json!({"wan": {"Address": "127.0.0.3", "Port": 80}})
    );
    // catalog/service.
    let v = get(&c, "/v1/catalog/service/web?tag=prod").json();
    let got: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["ServiceID"].as_str().unwrap())
        .collect();
    assert_eq!(got, ["web-1", "web"]);
    assert_eq!(v[0]["NodeMeta"], json!({"rack": "r1"}));
}

#[test]
fn null_empty_collections_option() {
    let c = FakeConsul::start_with(Options {
        null_empty_collections: true,
        ..Options::default()
    });
    c.register(ServiceInstance::new("n", "s", 1));
    let v = get(&c, "/v1/health/service/s").json();
    assert_eq!(v[0]["Service"]["Tags"], Value::Null);
    assert_eq!(v[0]["Service"]["Meta"], Value::Null);
    assert_eq!(v[0]["Node"]["Meta"], Value::Null);
}

#[test]
fn tag_node_meta_passing_and_filter() {
    let c = quiet();
    fleet(&c);
    let q = |p: &str| ids(&get(&c, &format!("/v1/health/service/web?{p}")));
    assert_eq!(q("tag=prod"), ["node-a/web-1", "node-b/web"]);
    assert_eq!(q("tag=prod&tag=v2"), ["node-b/web"]);
    assert_eq!(
        q("tag=PROD&tag=V2"),
        ["node-b/web"],
        "tag match is case-insensitive"
    );
    assert_eq!(q("tag=nope").len(), 0);
    assert_eq!(q("node-meta=rack%3Ar1"), ["node-a/web-0", "node-a/web-1"]);
    assert_eq!(q("node-meta=rack:r1&node-meta=rack:r2").len(), 0);
    assert_eq!(q("passing"), ["node-a/web-1", "node-b/web"]);
    assert_eq!(q("passing=false").len(), 3);
    let f = |e: &str| {
        let mut s = String::from("filter=");
        for b in e.bytes() {
            s.push_str(&format!("%{b:02X}"));
        }
        q(&s)
    };
    assert_eq!(
        f(r#""prod" in Service.Tags"#),
        ["node-a/web-1", "node-b/web"]
    );
    assert_eq!(f(r#""prod" not in Service.Tags"#), ["node-a/web-0"]);
    assert_eq!(f(r#"Service.Tags contains "v2""#), ["node-b/web"]);
    assert_eq!(f(r#"Service.Tags not contains `prod`"#), ["node-a/web-0"]);
    assert_eq!(f(r#"Node.Meta.rack == "r2""#), ["node-b/web"]);
    assert_eq!(
        f(r#"Node.Meta["rack"] != "r2""#),
        ["node-a/web-0", "node-a/web-1"]
    );
    assert_eq!(f(r#"Service.Meta.team == "a""#), ["node-b/web"]);
    assert_eq!(f(r#"Service.Meta.missing == "a""#).len(), 0);
    assert_eq!(f(r#"Service.Meta.missing != "a""#).len(), 3);
    assert_eq!(
        f(r#"Service.Meta is empty"#),
        ["node-a/web-0", "node-a/web-1"]
    );
    assert_eq!(
        f(r#"Service.ID == "web-0" or Node.Node == "node-b""#),
        ["node-a/web-0", "node-b/web"]
    );
    assert_eq!(
        f(r#"not (Service.ID == "web-0" or Node.Node == "node-b")"#),
        ["node-a/web-1"]
    );
    assert_eq!(
        f(r#"Node.Node == "node-a" and not "canary" in Service.Tags"#),
        ["node-a/web-1"]
    );
    assert_eq!(f(r#"Service.Port == 8081"#), ["node-a/web-0"]);
    assert_eq!(
        f(r#"Service.Service == web and Service.EnableTagOverride == false"#).len(),
        3
    );
    assert_eq!(
        f(r#"Node.Datacenter == "dc1" and Service.Service == "web""#).len(),
        3
    );
    assert_eq!(f(r#"Checks.Status == "warning""#), ["node-a/web-0"]);
    assert_eq!(
        f(r#"Service.ID matches "^web-[0-9]$""#),
        ["node-a/web-0", "node-a/web-1"]
    );
    // Errors: syntax, and catalog selectors on the health endpoint.
    for bad in [
        r#"Service.Tags contains"#,
        r#"ServiceTags contains "x""#,
        r#"(Service.ID == "a""#,
        r#"Service.ID = "a""#,
        r#"Node.Node == node-b"#,
    ] {
        let mut s = String::from("/v1/health/service/web?filter=");
        for b in bad.bytes() {
            s.push_str(&format!("%{b:02X}"));
        }
        let r = get(&c, &s);
        assert_eq!(r.status, 400, "{bad}");
        assert!(
            r.text()
                .starts_with("Failed to create boolean expression evaluator"),
            "{}",
            r.text()
        );
    }
}

#[test]
fn catalog_services_and_health_state() {
    let c = quiet();
    fleet(&c);
    let v = get(&c, "/v1/catalog/services").json();
    assert_eq!(
        v,
        json!({"db": ["primary"], "web": ["canary", "prod", "v2"]})
    );
    let v = get(&c, "/v1/catalog/services?node-meta=rack:r2").json();
    assert_eq!(v, json!({"web": ["prod", "v2"]}));
    let v = get(
        &c,
        "/v1/catalog/services?filter=NodeMeta.rack+%3D%3D+%22r1%22",
    )
    .json();
    assert_eq!(v, json!({"db": ["primary"], "web": ["canary", "prod"]}));
    let v = get(&c, "/v1/catalog/services?filter=ServiceName+%3D%3D+db").json();
    assert_eq!(v, json!({"db": ["primary"]}));
    // Health selectors are not catalog selectors.
    assert_eq!(
        get(&c, "/v1/catalog/services?filter=Service.Service+%3D%3D+db").status,
        400
    );

    let st = |p: &str| -> Vec<String> {
        get(&c, p)
            .json()
            .as_array()
            .unwrap()
            .iter()
            .map(|ch| {
                format!(
                    "{}/{}",
                    ch["Node"].as_str().unwrap(),
                    ch["CheckID"].as_str().unwrap()
                )
            })
            .collect()
    };
    assert_eq!(
        st("/v1/health/state/any"),
        [
            "node-a/serfHealth",
            "node-a/service:web-0",
            "node-a/service:web-1",
            "node-b/serfHealth"
        ]
    );
    assert_eq!(st("/v1/health/state/warning"), ["node-a/service:web-0"]);
    assert_eq!(st("/v1/health/state/critical").len(), 0);
    assert_eq!(
        st("/v1/health/state/passing?node-meta=rack:r2"),
        ["node-b/serfHealth"]
    );
    assert_eq!(
        st("/v1/health/state/any?filter=ServiceName+%3D%3D+web"),
        ["node-a/service:web-0", "node-a/service:web-1"]
    );

    // Maintenance.
    c.set_node_maintenance("node-b", true);
    assert_eq!(
        st("/v1/health/state/critical"),
        ["node-b/_node_maintenance"]
    );
    let v = get(
        &c,
        "/v1/health/service/web?filter=Node.Node+%3D%3D+%22node-b%22",
    )
    .json();
    let checks: Vec<&str> = v[0]["Checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["CheckID"].as_str().unwrap())
        .collect();
    assert_eq!(checks, ["_node_maintenance", "serfHealth"]);
    c.set_service_maintenance("node-a", "web-1", true);
    assert_eq!(
        ids(&get(&c, "/v1/health/service/web?passing")),
        Vec::<String>::new()
    );
    c.set_node_maintenance("node-b", false);
    c.set_service_maintenance("node-a", "web-1", false);
    assert_eq!(
        ids(&get(&c, "/v1/health/service/web?passing")),
        ["node-a/web-1", "node-b/web"]
    );
    // Deregistering removes instance and its checks.
    c.deregister("node-a", "web-0");
    assert_eq!(st("/v1/health/state/warning").len(), 0);
    c.deregister_node("node-b");
    assert_eq!(ids(&get(&c, "/v1/health/service/web")), ["node-a/web-1"]);
}

#[test]
fn a_registration_with_its_check_is_one_write() {
    let c = quiet();
    c.set_node(Node::new("n", "127.0.0.1"));
    c.register_with_check(ServiceInstance::new("n", "s", 1).id("s-1"), "passing");
    let catalog = index_of(&get(&c, "/v1/catalog/services"));
    let state = get(&c, "/v1/health/state/any");
    assert_eq!(index_of(&state), catalog);
    assert_eq!(state.json()[0]["ModifyIndex"], json!(catalog));
    assert_eq!(c.service_index("s"), catalog);
    // Apart, they are two writes.
    c.register(ServiceInstance::new("n", "s", 1).id("s-2"));
    c.set_check_status("n", "service:s-2", "passing");
    let catalog = index_of(&get(&c, "/v1/catalog/services"));
    assert_eq!(index_of(&get(&c, "/v1/health/state/any")), catalog + 1);
}

/// `filter` on `/v1/health/state/:state` runs over HealthCheck
/// fields; the answer's index stays the checks table's (Consul filters
/// after the blocking query, so a change elsewhere still wakes it).
#[test]
fn health_state_filter_over_check_fields() {
    let c = quiet();
    fleet(&c);
    c.set_check_status("node-a", "service:db", "passing");
    let enc = |e: &str| {
        let mut s = String::from("/v1/health/state/any?filter=");
        for b in e.bytes() {
            s.push_str(&format!("%{b:02X}"));
        }
        s
    };
    let st = |e: &str| -> Vec<String> {
        let r = get(&c, &enc(e));
        assert_eq!(r.status, 200, "{e}: {}", r.text());
        r.json()
            .as_array()
            .unwrap()
            .iter()
            .map(|ch| {
                format!(
                    "{}/{}",
                    ch["Node"].as_str().unwrap(),
                    ch["CheckID"].as_str().unwrap()
                )
            })
            .collect()
    };
    assert_eq!(
        st(r#"ServiceName == "" or ServiceName == "db""#),
        [
            "node-a/serfHealth",
            "node-a/service:db",
            "node-b/serfHealth"
        ]
    );
    assert_eq!(
        st(r#"(ServiceName == "web" and Status != "passing") or CheckID == "service:db""#),
        ["node-a/service:db", "node-a/service:web-0"]
    );
    assert_eq!(
        st(r#"ServiceName == `db` and Node == "node-a""#),
        ["node-a/service:db"]
    );
    assert_eq!(st(r#"ServiceName == "d\x62""#), ["node-a/service:db"]);
    assert_eq!(st(r#""canary" in ServiceTags"#), ["node-a/service:web-0"]);
    // The index is the checks table's whatever the filter keeps.
    let before = index_of(&get(&c, &enc(r#"ServiceName == "db""#)));
    c.set_check_status("node-b", "serfHealth", "critical");
    let after = get(&c, &enc(r#"ServiceName == "db""#));
    assert!(index_of(&after) > before);
    assert_eq!(after.json().as_array().unwrap().len(), 1);
    // What bexpr refuses: a `"` ends a double-quoted literal even after
    // a backslash; invalid Go escapes; service-entry selectors.
    for bad in [
        r#"ServiceName == "a\"b""#,
        r#"ServiceName == "a\q""#,
        r#"ServiceName == "a"#,
        r#"Service.Service == "db""#,
        r#"ServiceName == "db" or"#,
        r#"(ServiceName == "db""#,
    ] {
        let r = get(&c, &enc(bad));
        assert_eq!(r.status, 400, "{bad}");
        assert!(
            r.text()
                .starts_with("Failed to create boolean expression evaluator"),
            "{bad}: {}",
            r.text()
        );
    }
}

#[test]
fn blocking_query_wakes_on_relevant_change_only() {
    let c = quiet();
    fleet(&c);
    let i = index_of(&get(&c, "/v1/health/service/web"));
    assert_eq!(i, c.service_index("web"));
    let catalog_i = index_of(&get(&c, "/v1/catalog/services"));
    let h = spawn_get(&c, &format!("/v1/health/service/web?index={i}&wait=8s"));
    let hc = spawn_get(
        &c,
        &format!("/v1/catalog/services?index={catalog_i}&wait=8s"),
    );
    poll_until(Duration::from_secs(5), "two blocking queries", || {
        (c.stats().blocking_in_flight == 2).then_some(())
    });
    // Unrelated: another service's instance and check, another node.
    c.register(ServiceInstance::new("node-a", "db", 5433).id("db-2"));
    c.set_check_status("node-a", "service:db", "critical");
    c.set_node(Node::new("node-c", "127.0.0.3"));
    std::thread::sleep(Duration::from_millis(300));
    assert!(!h.is_finished(), "woke on an unrelated change");
    // The catalog watcher woke on the db-2 registration.
    let (r, _) = hc.join().unwrap();
    assert!(index_of(&r) > catalog_i);
    assert_eq!(c.stats().blocking_in_flight, 1);
    // Relevant: a node-level check on a node hosting web.
    c.set_check_status("node-b", "serfHealth", "critical");
    let (r, took) = h.join().unwrap();
    assert!(took < Duration::from_secs(5), "{took:?}");
    let j = index_of(&r);
    assert!(j > i);
    assert_eq!(r.json()[2]["Checks"][0]["Status"], "critical");
    // Check changes do not wake catalog/services.
    let ci = index_of(&get(&c, "/v1/catalog/services"));
    let hc = spawn_get(&c, &format!("/v1/catalog/services?index={ci}&wait=600ms"));
    std::thread::sleep(Duration::from_millis(100));
    c.set_check_status("node-a", "service:web-1", "critical");
    let (r, took) = hc.join().unwrap();
    assert!(took >= Duration::from_millis(600), "{took:?}");
    assert_eq!(index_of(&r), ci);
    // A deleted service's index moves, so its watchers wake.
    let wi = index_of(&get(&c, "/v1/health/service/db"));
    let h = spawn_get(&c, &format!("/v1/health/service/db?index={wi}&wait=8s"));
    poll_until(Duration::from_secs(5), "blocking", || {
        (c.stats().blocking_in_flight == 1).then_some(())
    });
    c.deregister("node-a", "db");
    c.deregister("node-a", "db-2");
    let (r, took) = h.join().unwrap();
    assert!(took < Duration::from_secs(5));
    assert!(index_of(&r) > wi);
    assert_eq!(c.stats().peak_blocking, 2);
}

#[test]
fn wait_timeout_returns_the_same_index() {
    let c = quiet();
    fleet(&c);
    let i = index_of(&get(&c, "/v1/health/service/web"));
    let t = Instant::now();
    let r = get(&c, &format!("/v1/health/service/web?index={i}&wait=400ms"));
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_secs(3),
        "{took:?}"
    );
    assert_eq!(index_of(&r), i);
    assert_eq!(ids(&r).len(), 3);
    // An index below the current one answers at once.
    let t = Instant::now();
    let r = get(
        &c,
        &format!("/v1/health/service/web?index={}&wait=5s", i - 1),
    );
    assert!(t.elapsed() < Duration::from_secs(1));
    assert_eq!(index_of(&r), i);
    // Go durations.
    assert_eq!(
        parse_go_duration("120000ms"),
        Some(Duration::from_secs(120))
    );
    assert_eq!(parse_go_duration("5m"), Some(Duration::from_secs(300)));
    assert_eq!(parse_go_duration("1m30s"), Some(Duration::from_secs(90)));
    assert_eq!(parse_go_duration("1.5s"), Some(Duration::from_millis(1500)));
    assert_eq!(parse_go_duration("10"), None);
    assert_eq!(parse_go_duration(""), None);
}

#[test]
fn jitter_is_bounded() {
    let c = FakeConsul::start();
    c.register(ServiceInstance::new("n", "s", 1));
    let i = index_of(&get(&c, "/v1/health/service/s"));
    let t = Instant::now();
    get(&c, &format!("/v1/health/service/s?index={i}&wait=320ms"));
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(320) && took < Duration::from_millis(320 + 20 + 500),
        "{took:?}"
    );
}

#[test]
fn identical_writes_do_not_bump_the_index() {
    let c = quiet();
    fleet(&c);
    let i = c.index();
    assert!(!c.register(ServiceInstance::new("node-a", "db", 5432).tags(&["primary"])));
    assert!(!c.set_check_status("node-a", "serfHealth", "passing"));
    assert!(!c.set_node(Node::new("node-b", "127.0.0.2").meta("rack", "r2")));
    assert_eq!(c.index(), i);
    assert!(c.set_node(Node::new("node-b", "127.0.0.2").meta("rack", "r3")));
    assert_eq!(c.index(), i + 1);
    assert_eq!(c.service_index("web"), i + 1);
    assert_eq!(c.service_index("db"), c.service_index("db").min(i));
}

#[test]
fn namespaces_and_partitions() {
    let c = quiet();
    c.register(ServiceInstance::new("n", "s", 1).id("plain"));
    c.register(
        ServiceInstance::new("n", "s", 2)
            .id("in-ns")
            .namespace("team-a")
            .partition("p1"),
    );
    assert_eq!(ids(&get(&c, "/v1/health/service/s")), ["n/plain"]);
    assert_eq!(ids(&get(&c, "/v1/health/service/s?ns=team-a")).len(), 0);
    assert_eq!(
        ids(&get(&c, "/v1/health/service/s?ns=team-a&partition=p1")),
        ["n/in-ns"]
    );
    let v = get(&c, "/v1/health/service/s?ns=*&partition=*").json();
    assert_eq!(v.as_array().unwrap().len(), 2);
    assert_eq!(v[0]["Service"]["Namespace"], "team-a");
    assert_eq!(v[0]["Service"]["Partition"], "p1");
    let r = request(
        c.addr(),
        "GET",
        "/v1/health/service/s",
        &[
            ("X-Consul-Namespace", "team-a"),
            ("X-Consul-Partition", "p1"),
        ],
    );
    assert_eq!(ids(&r), ["n/in-ns"]);
}

#[test]
fn acl_token_and_path_prefix() {
    let c = FakeConsul::start_with(Options {
        acl_token: Some("s3cret".into()),
        path_prefix: "/consul".into(),
        ..Options::default()
    });
    c.register(ServiceInstance::new("n", "s", 1));
    assert_eq!(get(&c, "/v1/health/service/s").status, 404);
    let r = get(&c, "/consul/v1/health/service/s");
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), json!([]));
    assert_eq!(r.header("x-consul-results-filtered-by-acls"), Some("true"));
    let r = request(
        c.addr(),
        "GET",
        "/consul/v1/health/service/s",
        &[("X-Consul-Token", "s3cret")],
    );
    assert_eq!(ids(&r), ["n/s"]);
    let r = request(
        c.addr(),
        "GET",
        "/consul/v1/health/service/s",
        &[("Authorization", "Bearer s3cret")],
    );
    assert_eq!(ids(&r), ["n/s"]);
    assert_eq!(
        ids(&get(&c, "/consul/v1/health/service/s?token=s3cret")),
        ["n/s"]
    );
    let r = request(
        c.addr(),
        "GET",
        "/consul/v1/health/service/s",
        &[("X-Consul-Token", "wrong")],
    );
    assert_eq!(r.status, 403);
    let log = c.requests();
    assert_eq!(log[2].headers["x-consul-token"], "s3cret");
    assert_eq!(log[4].query, "token=s3cret");
}

#[test]
fn connection_limit_answers_429() {
    let c = FakeConsul::start_with(Options {
        max_conns_per_client: 3,
        ..Options::default()
    });
    let mut held: Vec<TcpStream> = (0..3)
        .map(|_| TcpStream::connect(c.addr()).unwrap())
        .collect();
    poll_until(Duration::from_secs(5), "3 open connections", || {
        (c.stats().open_connections == 3).then_some(())
    });
    let r = get(&c, "/v1/agent/self");
    assert_eq!(r.status, 429);
    assert_eq!(r.text(), TOO_MANY_CONNS);
    assert_eq!(r.header("connection"), Some("close"));
    assert_eq!(c.stats().rejected_connections, 1);
    assert_eq!(c.stats().peak_connections, 3);
    held.pop();
    poll_until(Duration::from_secs(5), "2 open connections", || {
        (c.stats().open_connections == 2).then_some(())
    });
    assert_eq!(get(&c, "/v1/agent/self").status, 200);
    // Held connections still work (keep-alive requests on them).
    let s = &mut held[0];
    s.write_all(b"GET /v1/agent/self HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).unwrap();
    assert!(buf.starts_with("HTTP/1.1 200"), "{buf}");
}

#[test]
fn client_disconnect_ends_a_blocking_query() {
    let c = quiet();
    c.register(ServiceInstance::new("n", "s", 1));
    let i = c.service_index("s");
    let mut s = TcpStream::connect(c.addr()).unwrap();
    write!(
        s,
        "GET /v1/health/service/s?index={i}&wait=60s HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    .unwrap();
    poll_until(Duration::from_secs(5), "blocking", || {
        (c.stats().blocking_in_flight == 1).then_some(())
    });
    drop(s);
    poll_until(Duration::from_secs(5), "blocking query cancelled", || {
        let st = c.stats();
        (st.blocking_in_flight == 0 && st.open_connections == 0).then_some(())
    });
}

#[test]
fn faults() {
    let c = quiet();
    fleet(&c);
    // 500 on a prefix only.
    c.inject("/v1/health/", Fault::Status500);
    assert_eq!(get(&c, "/v1/health/service/web").status, 500);
    assert_eq!(get(&c, "/v1/catalog/services").status, 200);
    c.clear_faults();
    assert_eq!(get(&c, "/v1/health/service/web").status, 200);
    // 429 with Retry-After.
    c.inject(
        "",
        Fault::TooManyRequests {
            retry_after_secs: 7,
        },
    );
    let r = get(&c, "/v1/catalog/services");
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after"), Some("7"));
    c.clear_faults();
    // Garbage.
    c.inject("/v1/catalog/services", Fault::Garbage);
    let r = get(&c, "/v1/catalog/services");
    assert_eq!(r.status, 200);
    assert!(r.header("x-consul-index").is_some());
    assert!(serde_json::from_slice::<Value>(&r.body).is_err());
    c.clear_faults();
    // Hang, until cleared.
    c.inject("", Fault::Hang);
    let h = spawn_get(&c, "/v1/catalog/services");
    std::thread::sleep(Duration::from_millis(300));
    assert!(!h.is_finished());
    c.clear_faults();
    let (r, _) = h.join().unwrap();
    assert_eq!(r.status, 200);
    // Index reset: an in-flight blocking query returns a lower index,
    // later ones report it.
    let i = index_of(&get(&c, "/v1/health/service/web"));
    let h = spawn_get(&c, &format!("/v1/health/service/web?index={i}&wait=8s"));
    poll_until(Duration::from_secs(5), "blocking", || {
        (c.stats().blocking_in_flight == 1).then_some(())
    });
    c.reset_index(5);
    let (r, took) = h.join().unwrap();
    assert!(took < Duration::from_secs(5));
    assert_eq!(index_of(&r), i - 5);
    assert_eq!(index_of(&get(&c, "/v1/health/service/web")), i - 5);
    c.reset_index(1_000_000);
    assert_eq!(index_of(&get(&c, "/v1/health/service/web")), 1);
    c.clear_faults();
    assert_eq!(index_of(&get(&c, "/v1/health/service/web")), i);
}

#[test]
fn hanging_requests_do_not_block_shutdown() {
    let c = quiet();
    c.inject("", Fault::Hang);
    let addr = c.addr();
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /v1/agent/self HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    poll_until(Duration::from_secs(5), "request seen", || {
        (c.stats().requests == 1).then_some(())
    });
    let t = Instant::now();
    drop(c);
    assert!(t.elapsed() < Duration::from_secs(2));
    let mut buf = Vec::new();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = s.read_to_end(&mut buf);
    assert!(TcpStream::connect(addr).is_err() || buf.is_empty());
}
