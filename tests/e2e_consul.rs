//! End-to-end parity for `consul_sd_configs`: VictoriaMetrics (Debian
//! `victoria-metrics`) discovers a fake Consul ([`crate::fake_consul`])
//! natively in one scrape job (`via_consul_sd`) and through sdbridge's HTTP
//! SD, fed by the same `consul_sd_configs` block, in another
//! (`via_http_sd`); the discovered labels of every target must be
//! identical, apart from the labels explained in [`normalize`]. Then a
//! change in the catalog must reach both sides the same way.
//!
//! VictoriaMetrics scrapes nothing (every target is dropped by relabelling,
//! which keeps the discovered labels visible under dropped targets) and is
//! stopped at the end (CONTRACT section 7).

use std::time::Duration;

use crate::e2e::{Consumer, Labels, DROP_ALL};
use crate::fake_consul::{FakeConsul, Node, ServiceInstance};
use crate::util::{poll_until, Bridge, Dir};

/// A catalog exercising every label Prometheus derives: IPv4 and IPv6
/// (`::1`) node addresses, an IPv6 service address, instances with an empty
/// `Service.Address` (target = node address), tags (none, several, with
/// `=` and characters to sanitise), node meta, service meta whose keys need
/// sanitising (`.`, `-`, `/`, non-ASCII), node tagged addresses, service
/// tagged addresses (not labelled by Prometheus), node and service checks in
/// every status, a check-less instance and one in maintenance.
fn populate(consul: &FakeConsul) {
    consul.set_node(
        Node::new("node-a", "127.0.0.1")
            .meta("rack", "r1")
            .meta("instance-type", "m5.large")
            .meta("kubernetes.io/zone", "zone-a")
            .tagged_address("lan", "127.0.0.1")
            .tagged_address("lan_ipv4", "127.0.0.1")
            .tagged_address("wan", "127.0.0.2"),
    );
    consul.set_node(
        Node::new("node-b", "::1")
            .meta("rack", "r2")
            .tagged_address("lan", "::1")
            .tagged_address("wan-ipv6", "::1"),
    );
    consul.set_node(Node::new("node-c", "127.0.0.3"));

    consul.register(
        ServiceInstance::new("node-a", "web", 8080)
            .id("web-1")
            .tags(&["prod", "version=1.2", "team:db", "a b"])
            .meta("app.version", "1.2")
            .meta("owner-team", "db")
            .meta("서비스", "웹")
            .tagged_address("lan_ipv4", "127.0.0.1", 8080),
    );
    consul.register(
        ServiceInstance::new("node-b", "web", 8080)
            .id("web-2")
            .tags(&["canary"]),
    );
    consul.register(
        ServiceInstance::new("node-c", "mysql", 3306)
            .id("mysql-primary")
            .address("127.0.0.10")
            .tags(&["primary", "role=primary"])
            .meta("db_name", "프라이머리"),
    );
    consul.register(
        ServiceInstance::new("node-a", "mysql", 3307)
            .id("mysql-replica")
            .address("::1")
            .meta("db_name", "세컨더리"),
    );
    // No checks at all: Consul's AggregatedStatus says "passing".
    consul.register(ServiceInstance::new("node-c", "cache", 6379).id("cache-1"));
    consul.register(
        ServiceInstance::new("node-b", "node-exporter", 9100)
            .id("node-exporter-b")
            .tags(&["infra"]),
    );
    consul.register(
        ServiceInstance::new("node-c", "node-exporter", 9100)
            .id("node-exporter-c")
            .tags(&["infra"]),
    );

    consul.set_check_status("node-a", "serfHealth", "passing");
    consul.set_check_status("node-b", "serfHealth", "warning");
    consul.set_check_status("node-c", "serfHealth", "passing");
    consul.set_check_status("node-a", "service:web-1", "passing");
    consul.set_check_status("node-b", "service:web-2", "passing");
    consul.set_check_status("node-c", "service:mysql-primary", "critical");
    consul.set_check_status("node-a", "service:mysql-replica", "passing");
    consul.set_check_status("node-b", "service:node-exporter-b", "passing");
    consul.set_service_maintenance("node-c", "node-exporter-c", true);
}

/// Targets in [`populate`]'s catalog.
const TARGETS: usize = 7;

/// Labels that differ by construction or by VictoriaMetrics deviating from
/// Prometheus, whose `discovery/consul/consul.go` is the spec (CONTRACT 5):
///
/// - `job`: the two scrape jobs' names;
/// - `__meta_url`: added by `http_sd_configs` only;
/// - `__meta_sdbridge_job`: sdbridge's own label (CONTRACT 5);
/// - `__meta_consul_tag_<k>` / `__meta_consul_tagpresent_<k>` (unless
///   `vm_tags`): VictoriaMetrics's `discoveryutil.AddTagsToLabels` adds
///   them for every tag since v1.85.2; Prometheus has only
///   `__meta_consul_tags`. sdbridge emits them only with
///   `vm_tag_labels: true`, which the second test turns on and then
///   compares them too (see [`vm_tag_labels_of`] for VictoriaMetrics
///   releases that predate them).
///
/// - `__meta_consul_namespace` when empty: Prometheus's `consul.go` sets it
///   to `Service.Namespace`, `""` on Consul OSS, and Prometheus's
///   `labels.Builder.Set` deletes a label whose value is `""`, so it never
///   shows among Prometheus's discovered labels (nor can relabelling tell
///   `""` from absent). VictoriaMetrics 1.79.5 keeps the empty label;
///   sdbridge omits it (docs/consul_sd.md). A non-empty namespace is still
///   compared.
///
/// Nothing else is ignored. VictoriaMetrics 1.79.5 does not emit
/// `__meta_consul_partition` at all (Prometheus: `""` on Consul OSS, i.e.
/// absent, and sdbridge omits it, so both sides agree), and its
/// `__meta_consul_dc` (taken from each `Node.Datacenter`) equals
/// Prometheus's (the agent's `Config.Datacenter`) in a one-datacenter
/// catalog.
/// VictoriaMetrics's tag labels for a target of its native `consul_sd`:
/// as it reports them, or, for releases before v1.85.2 (Debian's 1.79.5
/// has none), derived from `__meta_consul_tags` exactly as
/// `discoveryutil.AddTagsToLabels` of later releases does: for each tag,
/// `__meta_consul_tag_<k>` = the value after the first `=` (or `""`) and
/// `__meta_consul_tagpresent_<k>` = `"true"`, the whole name sanitised
/// (`[^a-zA-Z0-9_]` → `_`). No tag in [`populate`] contains the separator,
/// so splitting the joined list is exact.
fn vm_tag_labels_of(mut labels: Labels) -> Labels {
    if labels
        .keys()
        .any(|k| k.starts_with("__meta_consul_tagpresent_"))
    {
        return labels;
    }
    let sanitize = |name: String| -> String {
        name.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    };
    let joined = labels
        .get("__meta_consul_tags")
        .cloned()
        .unwrap_or_default();
    let inner = joined
        .strip_prefix(',')
        .and_then(|t| t.strip_suffix(','))
        .unwrap_or("");
    for tag in inner.split(',').filter(|t| !t.is_empty()) {
        let (k, v) = tag.split_once('=').unwrap_or((tag, ""));
        labels.insert(sanitize(format!("__meta_consul_tag_{k}")), v.to_string());
        labels.insert(
            sanitize(format!("__meta_consul_tagpresent_{k}")),
            "true".to_string(),
        );
    }
    labels
}

fn normalize(mut labels: Labels, vm_tags: bool) -> Labels {
    for name in ["job", "__meta_url", "__meta_sdbridge_job"] {
        labels.remove(name);
    }
    if labels
        .get("__meta_consul_namespace")
        .is_some_and(String::is_empty)
    {
        labels.remove("__meta_consul_namespace");
    }
    if !vm_tags {
        labels.retain(|k, _| {
            !k.starts_with("__meta_consul_tag_") && !k.starts_with("__meta_consul_tagpresent_")
        });
    }
    labels
}

/// Waits until both jobs show the same targets, `expected` of them if
/// given (VictoriaMetrics lists removed targets as dropped for several
/// minutes, so after a change only equality is checked), and `until` holds.
fn both_sides(
    consumer: &Consumer,
    vm_tags: bool,
    expected: Option<usize>,
    until: impl Fn(&[Labels]) -> bool,
) -> Vec<Labels> {
    poll_until(
        Duration::from_secs(60),
        "consul discovery on both sides",
        || {
            let mut jobs = consumer.dropped();
            let mut side = |job: &str| {
                let mut v: Vec<Labels> = jobs
                    .remove(job)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|l| normalize(l, vm_tags))
                    .collect();
                v.sort();
                v
            };
            let mut native = side("via_consul_sd");
            if vm_tags {
                native = native.into_iter().map(vm_tag_labels_of).collect();
                native.sort();
            }
            let http = side("via_http_sd");
            if std::env::var_os("SDBRIDGE_E2E_DEBUG").is_some() {
                let only_native: Vec<_> = native.iter().filter(|l| !http.contains(l)).collect();
                let only_http: Vec<_> = http.iter().filter(|l| !native.contains(l)).collect();
                eprintln!(
                    "{} native, {} http; only native: {only_native:#?}; only http: {only_http:#?}",
                    native.len(),
                    http.len()
                );
            }
            (expected.is_none_or(|n| native.len() == n) && native == http && until(&native))
                .then_some(native)
        },
    )
}

fn find<'a>(labels: &'a [Labels], address: &str) -> Option<&'a Labels> {
    labels.iter().find(|l| l["__address__"] == address)
}

fn label<'a>(labels: &'a [Labels], address: &str, name: &str) -> Option<&'a str> {
    find(labels, address)
        .and_then(|l| l.get(name))
        .map(String::as_str)
}

fn parity(vm_tag_labels: bool) {
    let binary = require_binary!("victoria-metrics");
    let consul = FakeConsul::start();
    populate(&consul);
    let server = consul.addr();

    let dir = Dir::new();
    let config = dir.write(
        "sdbridge.yml",
        &format!(
            "jobs:\n  - job_name: consul\n    consul_sd_configs:\n      - server: {server}\n        vm_tag_labels: {vm_tag_labels}\n"
        ),
    );
    let bridge = Bridge::start(&config);
    let served = crate::util::groups(&bridge.get("/http_sd/consul").text());
    assert_eq!(served.len(), TARGETS, "groups served by sdbridge");

    let scrape = format!(
        "global: {{scrape_interval: 1h}}\nscrape_configs:\n\
         \x20 - job_name: via_consul_sd\n    consul_sd_configs:\n      - server: {server}\n{DROP_ALL}\
         \x20 - job_name: via_http_sd\n    http_sd_configs:\n      - url: http://{}/http_sd/consul\n{DROP_ALL}",
        bridge.addr
    );
    let consumer_config = dir.write("vm.yml", &scrape);
    let vm = Consumer::victoria_metrics_with(
        &binary,
        &consumer_config,
        &dir.path("data"),
        &["-promscrape.consulSDCheckInterval=1s"],
    );

    let labels = both_sides(&vm, vm_tag_labels, Some(TARGETS), |_| true);
    // The catalog's interesting cases made it through, identically.
    assert_eq!(
        label(&labels, "[::1]:8080", "__meta_consul_address"),
        Some("::1"),
        "IPv6 node address, empty Service.Address"
    );
    assert_eq!(
        label(&labels, "[::1]:3307", "__meta_consul_service_address"),
        Some("::1")
    );
    assert_eq!(
        label(
            &labels,
            "127.0.0.1:8080",
            "__meta_consul_service_metadata_app_version"
        ),
        Some("1.2")
    );
    assert_eq!(
        label(
            &labels,
            "127.0.0.1:8080",
            "__meta_consul_metadata_kubernetes_io_zone"
        ),
        Some("zone-a")
    );
    assert_eq!(
        label(&labels, "127.0.0.1:8080", "__meta_consul_tags"),
        Some(",prod,version=1.2,team:db,a b,")
    );
    assert_eq!(
        label(&labels, "127.0.0.10:3306", "__meta_consul_health"),
        Some("critical")
    );
    assert_eq!(
        label(&labels, "[::1]:8080", "__meta_consul_health"),
        Some("warning")
    );
    assert_eq!(
        label(&labels, "127.0.0.3:9100", "__meta_consul_health"),
        Some("maintenance")
    );
    assert_eq!(
        label(&labels, "127.0.0.3:6379", "__meta_consul_health"),
        Some("passing")
    );
    if vm_tag_labels {
        assert_eq!(
            label(&labels, "127.0.0.1:8080", "__meta_consul_tag_version"),
            Some("1.2")
        );
        assert_eq!(
            label(
                &labels,
                "127.0.0.1:8080",
                "__meta_consul_tagpresent_team_db"
            ),
            Some("true")
        );
    }

    // A new instance (no checks, so it appears in its final state at once)
    // and a health flip reach both sides the same way.
    consul.register(
        ServiceInstance::new("node-c", "web", 8081)
            .id("web-3")
            .tags(&["prod", "version=1.3"]),
    );
    consul.set_check_status("node-c", "service:mysql-primary", "passing");
    both_sides(&vm, vm_tag_labels, None, |labels| {
        find(labels, "127.0.0.3:8081").is_some()
            && labels.iter().any(|l| {
                l["__address__"] == "127.0.0.10:3306" && l["__meta_consul_health"] == "passing"
            })
    });
    drop(vm);
}

#[test]
fn victoria_metrics_consul_sd_matches_http_sd_from_the_same_block() {
    parity(false);
}

#[test]
fn victoria_metrics_consul_sd_matches_http_sd_with_vm_tag_labels() {
    parity(true);
}
