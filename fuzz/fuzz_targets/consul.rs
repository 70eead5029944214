//! Consul answer decoding: the body of each endpoint the watcher reads,
//! decoded as `Client` decodes it, then what the watcher makes of it. An
//! instance list must give groups with valid label names that parse back.
#![no_main]

mod common;

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use sdbridge::source::consul::client::{datacenter_of, decode, CatalogServices};
use sdbridge::source::consul::labels::{
    aggregated_status, service_groups, HealthCheck, LabelOptions, ServiceEntry,
};

fuzz_target!(|data: &[u8]| {
    // First byte: the endpoint (and, for instances, the label options).
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    match selector % 4 {
        0 => match decode::<serde_json::Value>("agent_self", body) {
            Ok(answer) => {
                let _ = datacenter_of(&answer).map_err(|e| e.to_string());
            }
            Err(e) => assert!(e.to_string().starts_with("agent_self: ")),
        },
        1 => {
            if let Ok(services) = decode::<CatalogServices>("catalog_services", body) {
                let n = services.len();
                let catalog: BTreeMap<String, Vec<String>> = services
                    .into_iter()
                    .map(|(k, v)| (k, v.unwrap_or_default()))
                    .collect();
                assert_eq!(catalog.len(), n);
            }
        }
        2 => {
            if let Ok(checks) = decode::<Vec<HealthCheck>>("health_state", body) {
                let status = aggregated_status(&checks);
                assert!(
                    ["", "passing", "warning", "critical", "maintenance"].contains(&status),
                    "{status}"
                );
            }
        }
        _ => {
            if let Ok(entries) = decode::<Vec<ServiceEntry>>("health_service", body) {
                let opts = LabelOptions {
                    datacenter: "dc1",
                    tag_separator: if selector & 4 == 0 { "," } else { "\"서\"" },
                    vm_tag_labels: selector & 8 != 0,
                };
                let groups = service_groups("web 서비스", &entries, opts);
                assert_eq!(groups.len(), entries.len());
                for g in &groups {
                    assert_eq!(g.targets.len(), 1);
                }
                common::assert_round_trip(&groups);
            }
        }
    }
});
