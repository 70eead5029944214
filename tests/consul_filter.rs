//! `consul_sd_configs` with an explicit `services:` list. One service is
//! watched alone (a blocking `/v1/health/service/<name>`): a check change
//! elsewhere in the datacenter costs nothing. Several are watched through
//! `/v1/health/state/any` filtered to their checks and the node checks: a
//! change elsewhere costs one small answer and no service read.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::consul::{config, instances, wait_armed, wait_served};
use crate::fake_consul::{FakeConsul, ServiceInstance};
use crate::util::{groups, poll_until, Bridge, Dir};

/// `n1` hosts `web-1` and `db-1`, `n2` hosts `web-2`; every instance and
/// node has a passing check.
fn two_services(c: &FakeConsul) {
    for node in ["n1", "n2"] {
        crate::consul::node_with_serf(c, node);
    }
    for (node, service, id) in [
        ("n1", "web", "web-1"),
        ("n2", "web", "web-2"),
        ("n1", "db", "db-1"),
    ] {
        c.register(ServiceInstance::new(node, service, 9100).id(id));
        c.set_check_status(node, &format!("service:{id}"), "passing");
    }
}

/// The decoded `filter` of the bridge's health-state calls.
fn health_state_filters(c: &FakeConsul) -> Vec<String> {
    c.requests()
        .into_iter()
        .filter(|r| r.path == "/v1/health/state/any")
        .map(|r| {
            r.query
                .split('&')
                .find_map(|kv| kv.strip_prefix("filter="))
                .map(|f| {
                    percent_encoding::percent_decode_str(&f.replace('+', " "))
                        .decode_utf8_lossy()
                        .into_owned()
                })
                .unwrap_or_default()
        })
        .collect()
}

/// How an explicit list is watched: one service alone, or several through
/// the filtered health-state watch.
#[derive(Clone, Copy, Debug)]
enum Mode {
    PerService,
    Filtered,
}

impl Mode {
    /// The entry's lines selecting `web` in this mode.
    fn lines(self) -> &'static [&'static str] {
        match self {
            Mode::PerService => &["services: [web]"],
            Mode::Filtered => &["services: [web, absent]"],
        }
    }
}

fn ignores_other_services_checks(mode: Mode) {
    let c = FakeConsul::start();
    two_services(&c);
    let dir = Dir::new();
    let bridge = Bridge::start(&config(&dir, &[("j", &c, mode.lines())]));
    let path = "/http_sd/j";
    let passing = |b: &str| {
        instances(b)
            == [
                ("web".into(), "web-1".into(), "passing".into()),
                ("web".into(), "web-2".into(), "passing".into()),
            ]
    };
    wait_served(
        &bridge,
        path,
        Duration::from_secs(10),
        "web served",
        passing,
    );
    let filters = health_state_filters(&c);
    match mode {
        Mode::PerService => assert!(filters.is_empty(), "{filters:?}"),
        Mode::Filtered => {
            assert!(!filters.is_empty());
            assert!(
                filters.iter().all(|f| f
                    == r#"ServiceName == "" or ServiceName == "absent" or ServiceName == "web""#),
                "{filters:?}"
            );
        }
    }

    // A check of the unselected service flips.
    wait_armed(&c, 2);
    let before = bridge.get(path);
    c.reset_stats();
    c.set_check_status("n1", "service:db-1", "critical");
    match mode {
        Mode::PerService => {
            // Consul's index for health/service/web does not move: no
            // watch wakes.
            std::thread::sleep(Duration::from_millis(600));
            let stats = c.stats();
            assert_eq!(stats.requests, 0, "{stats:?}");
        }
        Mode::Filtered => {
            // The health watch answers (Consul's index for health/state is
            // the whole checks table's) and is re-armed; nothing else is
            // asked for.
            poll_until(Duration::from_secs(10), "health watch re-armed", || {
                let s = c.stats();
                (s.by_endpoint.get("health/state").copied().unwrap_or(0) >= 1
                    && s.blocking_in_flight >= 2)
                    .then_some(())
            });
            std::thread::sleep(Duration::from_millis(300));
            let stats = c.stats();
            assert_eq!(stats.by_endpoint.get("health/service"), None, "{stats:?}");
            assert_eq!(stats.requests, 1, "{stats:?}");
            // What came back is the web and node checks, not db's.
            let filtered = stats.bytes_by_endpoint["health/state"];
            let everything = crate::util::request(c.addr(), "GET", "/v1/health/state/any", &[]);
            assert!(
                (filtered as usize) < everything.body.len(),
                "{filtered} bytes, unfiltered {}",
                everything.body.len()
            );
        }
    }
    let after = bridge.get(path);
    assert_eq!(after.header("etag"), before.header("etag"));
    assert_eq!(after.text(), before.text());

    // Another service's instance registers with its check: the catalog
    // watch wakes, and in filtered mode the health answer, whose index
    // moved with that check, explains the catalog move (regression: the
    // filtered answer hid the check, so after the 1 s grace every selected
    // service was re-read).
    wait_armed(&c, 2);
    c.reset_stats();
    c.register_with_check(ServiceInstance::new("n2", "db", 9100).id("db-2"), "passing");
    poll_until(Duration::from_secs(10), "catalog watch re-armed", || {
        let s = c.stats();
        (s.by_endpoint.get("catalog/services").copied().unwrap_or(0) >= 1).then_some(())
    });
    std::thread::sleep(Duration::from_millis(1500));
    let stats = c.stats();
    assert_eq!(
        stats.by_endpoint.get("health/service"),
        None,
        "{mode:?}: {stats:?}"
    );
    assert_eq!(bridge.get(path).text(), before.text());

    // A check of a selected instance still reaches the body; db is never
    // read.
    c.set_check_status("n2", "service:web-2", "warning");
    wait_served(
        &bridge,
        path,
        Duration::from_secs(10),
        "web-2 warning",
        |b| instances(b)[1].2 == "warning",
    );
    let log = c.requests();
    assert!(log.iter().any(|r| r.path == "/v1/health/service/web"));
    assert!(!log
        .iter()
        .any(|r| r.path.starts_with("/v1/health/service/db")));
}

#[test]
fn consul_one_watch_per_service_ignores_other_services_checks() {
    ignores_other_services_checks(Mode::PerService);
}

#[test]
fn consul_filtered_health_watch_ignores_other_services_checks() {
    ignores_other_services_checks(Mode::Filtered);
}

#[test]
fn consul_explicit_services_follow_node_checks() {
    for mode in [Mode::PerService, Mode::Filtered] {
        let c = FakeConsul::start();
        two_services(&c);
        let dir = Dir::new();
        let bridge = Bridge::start(&config(&dir, &[("j", &c, mode.lines())]));
        let path = "/http_sd/j";
        let health = |b: &str| {
            instances(b)
                .into_iter()
                .map(|(_, _, h)| h)
                .collect::<Vec<_>>()
        };
        let wait = |what: &str, want: [&str; 2]| {
            wait_served(
                &bridge,
                path,
                Duration::from_secs(10),
                &format!("{mode:?}: {what}"),
                |b| health(b) == want,
            )
        };
        wait("synced", ["passing", "passing"]);
        wait_armed(&c, 2);
        c.set_check_status("n2", "serfHealth", "critical");
        wait("n2 down", ["passing", "critical"]);
        c.set_node_maintenance("n1", true);
        wait("n1 in maintenance", ["maintenance", "critical"]);
        c.set_check_status("n2", "serfHealth", "passing");
        c.set_node_maintenance("n1", false);
        wait("both back", ["passing", "passing"]);
    }
}

/// The groups of `body` whose service is in `services`, without the job
/// label.
fn selected(body: &str, services: &[&str]) -> Vec<(Vec<String>, BTreeMap<String, String>)> {
    groups(body)
        .into_iter()
        .filter(|(_, l)| services.contains(&l["__meta_consul_service"].as_str()))
        .map(|(t, mut l)| {
            l.remove("__meta_sdbridge_job");
            (t, l)
        })
        .collect()
}

/// The filtered health watch and the per-service watch serve what the
/// unfiltered watcher serves for the same services, through service
/// check, node check and catalog changes; a name holding `"` (a raw bexpr
/// string in the filter, `%22` in the path) included.
#[test]
fn consul_explicit_services_serve_what_the_full_watch_serves() {
    let c = FakeConsul::start();
    two_services(&c);
    let odd = r#"odd"name\x"#;
    c.register(ServiceInstance::new("n2", odd, 9200).id("odd-1"));
    c.set_check_status("n2", "service:odd-1", "warning");
    c.register(ServiceInstance::new("n2", "other", 9300).id("other-1"));
    let dir = Dir::new();
    let bridge = Bridge::start(&config(
        &dir,
        &[
            ("all", &c, &[]),
            ("filtered", &c, &["services: [web, 'odd\"name\\x', absent]"]),
            ("web", &c, &["services: [web]"]),
            ("odd", &c, &["services: ['odd\"name\\x']"]),
        ],
    ));
    type Groups = Vec<(Vec<String>, BTreeMap<String, String>)>;
    let health = |g: &Groups, id: &str| {
        g.iter()
            .find(|(_, l)| l["__meta_consul_service_id"] == id)
            .map(|(_, l)| l["__meta_consul_health"].clone())
    };
    // Every job serves what `all` serves of its services, once `done`
    // holds for `all`.
    let same = |what: &str, done: &dyn Fn(&Groups) -> bool| {
        poll_until(Duration::from_secs(10), what, || {
            let job = |j: &str, services: &[&str]| {
                selected(&bridge.get(&format!("/http_sd/{j}")).text(), services)
            };
            let all = job("all", &["web", odd]);
            let agree = all == job("filtered", &["web", odd])
                && job("all", &["web"]) == job("web", &["web"])
                && job("all", &[odd]) == job("odd", &[odd]);
            (agree && done(&all)).then_some(all)
        })
    };
    let first = same("first sync", &|g| g.len() == 3);
    assert_eq!(health(&first, "odd-1").as_deref(), Some("warning"));
    let filters = health_state_filters(&c);
    let want = r#"ServiceName == "" or ServiceName == "absent" or ServiceName == `odd"name\x` or ServiceName == "web""#;
    assert!(filters.iter().any(|f| f == want), "{filters:?}");
    assert!(
        filters.iter().all(|f| f == want || f.is_empty()),
        "only the 3-service job watches health/state with a filter: {filters:?}"
    );
    c.set_check_status("n2", "service:odd-1", "passing");
    same("odd check flipped", &|g| {
        health(g, "odd-1").as_deref() == Some("passing")
    });
    c.set_check_status("n1", "serfHealth", "critical");
    same("node check flipped", &|g| {
        health(g, "web-1").as_deref() == Some("critical")
    });
    c.register(ServiceInstance::new("n1", "web", 9101).id("web-3"));
    same("check-less instance registered", &|g| g.len() == 4);
    c.deregister("n2", "web-2");
    same("instance removed", &|g| {
        g.len() == 3 && health(g, "web-2").is_none()
    });
}
