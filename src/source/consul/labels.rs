//! Consul's API objects (the fields discovery needs) and the label set
//! Prometheus's `discovery/consul` builds from them, one group per service
//! instance.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer};

use crate::targetgroup::{LabelSet, TargetGroup};

/// Decodes `null` as the type's default, as Go's `encoding/json` leaves a
/// zero value.
fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// `api.Node` (from `/v1/health/service/<name>`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Node {
    /// Node name.
    #[serde(deserialize_with = "nullable")]
    pub node: String,
    /// Node address.
    #[serde(deserialize_with = "nullable")]
    pub address: String,
    /// Node's tagged addresses (`lan`, `wan`, ...).
    #[serde(deserialize_with = "nullable")]
    pub tagged_addresses: BTreeMap<String, String>,
    /// Node metadata.
    #[serde(deserialize_with = "nullable")]
    pub meta: BTreeMap<String, String>,
}

/// `api.AgentService`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Service {
    /// Service instance ID.
    #[serde(rename = "ID", deserialize_with = "nullable")]
    pub id: String,
    /// Service name.
    #[serde(deserialize_with = "nullable")]
    pub service: String,
    /// Tags, in registration order.
    #[serde(deserialize_with = "nullable")]
    pub tags: Vec<String>,
    /// Service address; empty means "the node's address".
    #[serde(deserialize_with = "nullable")]
    pub address: String,
    /// Port (Go `int`).
    #[serde(deserialize_with = "nullable")]
    pub port: i64,
    /// Service metadata.
    #[serde(deserialize_with = "nullable")]
    pub meta: BTreeMap<String, String>,
    /// Enterprise namespace.
    #[serde(deserialize_with = "nullable")]
    pub namespace: String,
    /// Enterprise admin partition.
    #[serde(deserialize_with = "nullable")]
    pub partition: String,
}

/// `api.HealthCheck`, as in `/v1/health/service/<name>` entries and
/// `/v1/health/state/any`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct HealthCheck {
    /// Node the check runs on.
    #[serde(deserialize_with = "nullable")]
    pub node: String,
    /// Check ID (`serfHealth`, `service:web-1`, `_node_maintenance`, ...).
    #[serde(rename = "CheckID", deserialize_with = "nullable")]
    pub check_id: String,
    /// `passing`, `warning`, `critical` or `maintenance`.
    #[serde(deserialize_with = "nullable")]
    pub status: String,
    /// Instance the check belongs to; empty for node checks.
    #[serde(rename = "ServiceID", deserialize_with = "nullable")]
    pub service_id: String,
    /// Service the check belongs to; empty for node checks.
    #[serde(deserialize_with = "nullable")]
    pub service_name: String,
    /// Raft index of the check's last change.
    #[serde(deserialize_with = "nullable")]
    pub modify_index: u64,
}

/// `api.ServiceEntry`: one instance with its node and checks.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ServiceEntry {
    /// The node.
    #[serde(deserialize_with = "nullable")]
    pub node: Node,
    /// The instance.
    #[serde(deserialize_with = "nullable")]
    pub service: Service,
    /// Node and service checks.
    #[serde(deserialize_with = "nullable")]
    pub checks: Vec<HealthCheck>,
}

/// `HealthChecks.AggregatedStatus` of Consul's Go client: maintenance wins,
/// then critical, warning, passing; an unknown status gives `""`; no checks
/// gives `passing`.
pub fn aggregated_status(checks: &[HealthCheck]) -> &'static str {
    let (mut passing, mut warning, mut critical, mut maintenance) = (false, false, false, false);
    for check in checks {
        if check.check_id == "_node_maintenance"
            || check.check_id.starts_with("_service_maintenance:")
        {
            maintenance = true;
            continue;
        }
        match check.status.as_str() {
            "passing" => passing = true,
            "warning" => warning = true,
            "critical" => critical = true,
            _ => return "",
        }
    }
    if maintenance {
        "maintenance"
    } else if critical {
        "critical"
    } else if warning {
        "warning"
    } else {
        let _ = passing;
        "passing"
    }
}

/// Prometheus's `strutil.SanitizeLabelName`: every character outside
/// `[a-zA-Z0-9_]` becomes one `_` (Go's regexp works on runes, so `서` is
/// one `_`, not three).
pub fn sanitize_label_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Go's `net.JoinHostPort`: brackets a host containing `:`.
pub fn join_host_port(host: &str, port: &str) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// What shapes the labels besides the instance itself.
#[derive(Debug, Clone, Copy)]
pub struct LabelOptions<'a> {
    /// `__meta_consul_dc`: the configured datacenter, else the agent's.
    pub datacenter: &'a str,
    /// `tag_separator`.
    pub tag_separator: &'a str,
    /// Add VictoriaMetrics's `__meta_consul_tag_*`/`tagpresent_*`.
    pub vm_tag_labels: bool,
}

/// The group for one instance of `service` (the watched name): its one
/// target and Prometheus's group labels (`__meta_consul_service`,
/// `__meta_consul_dc`) merged with its per-target labels.
///
/// Namespace and partition are emitted only when non-empty: Prometheus sets
/// them to `""` for Consul OSS, which Prometheus treats as absent.
pub fn instance_group(service: &str, entry: &ServiceEntry, opts: LabelOptions) -> TargetGroup {
    let svc = &entry.service;
    let node = &entry.node;
    let port = svc.port.to_string();
    let host = if svc.address.is_empty() {
        &node.address
    } else {
        &svc.address
    };
    let address = join_host_port(host, &port);
    let sep = opts.tag_separator;
    let tags = format!("{sep}{}{sep}", svc.tags.join(sep));
    let mut l: BTreeMap<String, String> = BTreeMap::new();
    let mut set = |k: &str, v: &str| {
        l.insert(k.to_string(), v.to_string());
    };
    set("__address__", &address);
    set("__meta_consul_service", service);
    set("__meta_consul_dc", opts.datacenter);
    set("__meta_consul_address", &node.address);
    set("__meta_consul_node", &node.node);
    set("__meta_consul_tags", &tags);
    set("__meta_consul_service_address", &svc.address);
    set("__meta_consul_service_port", &port);
    set("__meta_consul_service_id", &svc.id);
    set("__meta_consul_health", aggregated_status(&entry.checks));
    if !svc.namespace.is_empty() {
        set("__meta_consul_namespace", &svc.namespace);
    }
    if !svc.partition.is_empty() {
        set("__meta_consul_partition", &svc.partition);
    }
    // Maps are walked in key order so that, when two keys sanitise to the
    // same name, the result is deterministic (Go's map order is random).
    for (k, v) in &node.meta {
        set(
            &format!("__meta_consul_metadata_{}", sanitize_label_name(k)),
            v,
        );
    }
    for (k, v) in &svc.meta {
        set(
            &format!("__meta_consul_service_metadata_{}", sanitize_label_name(k)),
            v,
        );
    }
    for (k, v) in &node.tagged_addresses {
        set(
            &format!("__meta_consul_tagged_address_{}", sanitize_label_name(k)),
            v,
        );
    }
    if opts.vm_tag_labels {
        for tag in &svc.tags {
            let (k, v) = tag.split_once('=').unwrap_or((tag, ""));
            set(&sanitize_label_name(&format!("__meta_consul_tag_{k}")), v);
            set(
                &sanitize_label_name(&format!("__meta_consul_tagpresent_{k}")),
                "true",
            );
        }
    }
    // `__address__` is the target, not a group label.
    let target = l.remove("__address__").unwrap_or(address);
    TargetGroup {
        targets: vec![target],
        labels: LabelSet(l),
    }
}

/// The groups of one service, one per instance, ordered by node name then
/// service ID (then address, so duplicates are ordered too).
pub fn service_groups(
    service: &str,
    entries: &[ServiceEntry],
    opts: LabelOptions,
) -> Vec<TargetGroup> {
    let mut sorted: Vec<&ServiceEntry> = entries.iter().collect();
    sorted.sort_by(|a, b| {
        (&a.node.node, &a.service.id, &a.node.address).cmp(&(
            &b.node.node,
            &b.service.id,
            &b.node.address,
        ))
    });
    sorted
        .into_iter()
        .map(|e| instance_group(service, e, opts))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPTS: LabelOptions = LabelOptions {
        datacenter: "dc1",
        tag_separator: ",",
        vm_tag_labels: false,
    };

    fn check(id: &str, status: &str) -> HealthCheck {
        HealthCheck {
            check_id: id.to_string(),
            status: status.to_string(),
            ..HealthCheck::default()
        }
    }

    /// Three instances as Consul returns them (not in the served order).
    fn entries() -> Vec<ServiceEntry> {
        serde_json::from_str(
            r#"[
            {"Node": {"ID": "n2", "Node": "node-b", "Address": "::1", "Datacenter": "dc1",
                      "TaggedAddresses": null, "Meta": null},
             "Service": {"ID": "web-2", "Service": "web", "Tags": null, "Address": "", "Port": 9100,
                         "Meta": null, "Weights": {"Passing": 1, "Warning": 1}},
             "Checks": [{"Node": "node-b", "CheckID": "serfHealth", "Status": "warning"}]},
            {"Node": {"Node": "node-a", "Address": "127.0.0.1",
                      "TaggedAddresses": {"lan": "127.0.0.1", "lan_ipv4": "127.0.0.1", "wan-v6": "::1"},
                      "Meta": {"rack.name": "r1", "consul-network-segment": "", "랙": "k"}},
             "Service": {"ID": "web-1", "Service": "web", "Tags": ["prod", "v=2", "a.b"],
                         "Address": "127.0.0.2", "Port": 80,
                         "Meta": {"version": "1.2", "build-id": "x", "서비스": "My서비스"},
                         "Namespace": "default", "Partition": "part"},
             "Checks": [{"CheckID": "serfHealth", "Status": "passing"},
                        {"CheckID": "service:web-1", "Status": "critical", "ServiceID": "web-1"}]},
            {"Node": {"Node": "node-a", "Address": "127.0.0.1"},
             "Service": {"ID": "web-0", "Service": "web", "Tags": [], "Address": "", "Port": 81},
             "Checks": null}
        ]"#,
        )
        .unwrap()
    }

    fn labels(g: &TargetGroup) -> Vec<(&str, &str)> {
        g.labels
            .0
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }

    #[test]
    fn one_group_per_instance_ordered_by_node_then_id() {
        let groups = service_groups("web", &entries(), OPTS);
        let order: Vec<(&str, &str)> = groups
            .iter()
            .map(|g| {
                (
                    g.labels.0["__meta_consul_node"].as_str(),
                    g.labels.0["__meta_consul_service_id"].as_str(),
                )
            })
            .collect();
        assert_eq!(
            order,
            [
                ("node-a", "web-0"),
                ("node-a", "web-1"),
                ("node-b", "web-2")
            ]
        );
        assert_eq!(
            groups[0].targets,
            ["127.0.0.1:81"],
            "empty Service.Address: node address"
        );
        assert_eq!(groups[1].targets, ["127.0.0.2:80"]);
        assert_eq!(groups[2].targets, ["[::1]:9100"], "IPv6 bracketed");
    }

    #[test]
    fn full_prometheus_label_set() {
        let groups = service_groups("web", &entries(), OPTS);
        assert_eq!(
            labels(&groups[1]),
            [
                ("__meta_consul_address", "127.0.0.1"),
                ("__meta_consul_dc", "dc1"),
                ("__meta_consul_health", "critical"),
                ("__meta_consul_metadata__", "k"),
                ("__meta_consul_metadata_consul_network_segment", ""),
                ("__meta_consul_metadata_rack_name", "r1"),
                ("__meta_consul_namespace", "default"),
                ("__meta_consul_node", "node-a"),
                ("__meta_consul_partition", "part"),
                ("__meta_consul_service", "web"),
                ("__meta_consul_service_address", "127.0.0.2"),
                ("__meta_consul_service_id", "web-1"),
                ("__meta_consul_service_metadata____", "My서비스"),
                ("__meta_consul_service_metadata_build_id", "x"),
                ("__meta_consul_service_metadata_version", "1.2"),
                ("__meta_consul_service_port", "80"),
                ("__meta_consul_tagged_address_lan", "127.0.0.1"),
                ("__meta_consul_tagged_address_lan_ipv4", "127.0.0.1"),
                ("__meta_consul_tagged_address_wan_v6", "::1"),
                ("__meta_consul_tags", ",prod,v=2,a.b,"),
            ]
        );
        // Nulls decode as empty; no namespace/partition when Consul has none.
        assert_eq!(
            labels(&groups[2]),
            [
                ("__meta_consul_address", "::1"),
                ("__meta_consul_dc", "dc1"),
                ("__meta_consul_health", "warning"),
                ("__meta_consul_node", "node-b"),
                ("__meta_consul_service", "web"),
                ("__meta_consul_service_address", ""),
                ("__meta_consul_service_id", "web-2"),
                ("__meta_consul_service_port", "9100"),
                ("__meta_consul_tags", ",,"),
            ]
        );
        assert_eq!(
            groups[0].labels.0["__meta_consul_health"], "passing",
            "no checks: passing"
        );
        for g in &groups {
            assert!(g
                .labels
                .0
                .keys()
                .all(|k| crate::targetgroup::is_valid_label_name(k)));
        }
    }

    #[test]
    fn tag_separator_wraps_and_joins() {
        let opts = LabelOptions {
            tag_separator: "|",
            ..OPTS
        };
        let groups = service_groups("web", &entries(), opts);
        assert_eq!(groups[1].labels.0["__meta_consul_tags"], "|prod|v=2|a.b|");
        assert_eq!(groups[0].labels.0["__meta_consul_tags"], "||");
    }

    #[test]
    fn vm_tag_labels_on_and_off() {
        let off = service_groups("web", &entries(), OPTS);
        assert!(!off[1]
            .labels
            .0
            .keys()
            .any(|k| k.starts_with("__meta_consul_tag_")));
        let on = service_groups(
            "web",
            &entries(),
            LabelOptions {
                vm_tag_labels: true,
                ..OPTS
            },
        );
        let l = &on[1].labels.0;
        assert_eq!(l["__meta_consul_tag_prod"], "");
        assert_eq!(l["__meta_consul_tagpresent_prod"], "true");
        assert_eq!(l["__meta_consul_tag_v"], "2");
        assert_eq!(l["__meta_consul_tagpresent_v"], "true");
        assert_eq!(l["__meta_consul_tag_a_b"], "");
        assert_eq!(l["__meta_consul_tags"], ",prod,v=2,a.b,");
    }

    #[test]
    fn health_aggregation_like_consul_api() {
        let agg = |checks: &[HealthCheck]| aggregated_status(checks);
        assert_eq!(agg(&[]), "passing");
        assert_eq!(agg(&[check("a", "passing")]), "passing");
        assert_eq!(
            agg(&[check("a", "passing"), check("b", "warning")]),
            "warning"
        );
        assert_eq!(
            agg(&[check("a", "warning"), check("b", "critical")]),
            "critical"
        );
        assert_eq!(
            agg(&[
                check("a", "critical"),
                check("_node_maintenance", "critical")
            ]),
            "maintenance"
        );
        assert_eq!(
            agg(&[
                check("_service_maintenance:web-1", "critical"),
                check("a", "passing")
            ]),
            "maintenance"
        );
        assert_eq!(agg(&[check("a", "passing"), check("b", "bogus")]), "");
        // Maintenance is only checked before an unknown status is met.
        assert_eq!(
            agg(&[check("a", "bogus"), check("_node_maintenance", "critical")]),
            ""
        );
    }

    #[test]
    fn sanitizing_is_per_character() {
        assert_eq!(sanitize_label_name("rack.name"), "rack_name");
        assert_eq!(sanitize_label_name("a-b c"), "a_b_c");
        assert_eq!(sanitize_label_name("서비스"), "___");
        assert_eq!(sanitize_label_name("ok_09"), "ok_09");
        assert_eq!(join_host_port("fe80::1%eth0", "80"), "[fe80::1%eth0]:80");
        assert_eq!(join_host_port("", "80"), ":80");
    }
}
