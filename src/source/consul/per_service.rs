//! Per-service mode: with `services` naming one service, a blocking query
//! on `/v1/health/service/<name>` (as Prometheus runs one per service)
//! next to the catalog watch, instead of the health-state watch and the
//! reads it triggers.
//!
//! Consul's index for `/v1/health/service/<name>` moves only with that
//! service: its instances, their checks, and the node checks and node
//! records of the nodes hosting it. A change elsewhere in the datacenter
//! therefore costs no request at all (the filtered health-state watch
//! still answers once per check change anywhere, with every node check),
//! and a change of the service is served from the answer that reports it:
//! one request instead of two, no debounce. Nothing about the service is
//! invisible to it either (check-less instances, a node's address), so the
//! unexplained-move grace and the periodic full re-read are not needed.
//!
//! The catalog watch still decides which of the services are served
//! (`filter`, `node_meta`, `tags` apply to it, as in Prometheus).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::blocking::{blocking_loop, spawn_catalog, Event, Reporter};
use super::client::Client;
use super::config::ConsulSdConfig;
use super::labels::{service_groups, LabelOptions, ServiceEntry};
use crate::targetgroup::Fragment;

/// Most services watched one by one: one, so that the watcher holds two
/// connections, as in health-state mode. Each parked watch holds one of
/// the server's connection slots, which every `consul_sd_configs` block
/// naming that server shares (the smallest `max_connections` wins,
/// [`crate::http_client::slots`]): a watch per service of a list of 8
/// would hold 9, and a few such blocks would leave no slot for the reads
/// of the others. Longer lists use the health-state watch filtered to
/// their checks, still two connections.
pub const MAX_WATCHED: usize = 1;

/// The services to watch one by one, when `config` is for per-service
/// mode: an explicit list of at most [`MAX_WATCHED`] names (whose watches
/// and the catalog watch leave a connection of `max_connections` free).
pub fn watched(config: &ConsulSdConfig) -> Option<BTreeSet<String>> {
    let names: BTreeSet<String> = config.services.iter().cloned().collect();
    (!names.is_empty() && names.len() <= MAX_WATCHED && names.len() + 2 <= config.max_connections)
        .then_some(names)
}

/// What the per-service evaluator knows.
struct State {
    /// Served services and their tags, as last read from the catalog.
    catalog: Option<BTreeMap<String, Vec<String>>>,
    /// Each watched service's groups as last answered (`None`: no answer
    /// yet); an unchanged answer keeps the same `Arc`.
    latest: BTreeMap<String, Option<Arc<Fragment>>>,
    services: BTreeMap<String, Arc<Fragment>>,
    synced: bool,
}

impl State {
    fn apply(
        &mut self,
        event: Event,
        config: &ConsulSdConfig,
        datacenter: &str,
        report: &mut Reporter,
    ) {
        match event {
            Event::Failed(component, e) => report.error(&component, &e),
            Event::Catalog(_, all) => {
                report.ok("catalog_services");
                self.catalog = Some(
                    all.into_iter()
                        .filter(|(name, tags)| config.should_watch(name, tags))
                        .collect(),
                );
            }
            Event::Service(name, entries) => {
                report.ok(&format!("service {name:?}"));
                let opts = LabelOptions {
                    datacenter,
                    tag_separator: &config.tag_separator,
                    vm_tag_labels: config.vm_tag_labels,
                };
                let fragment = fragment_of(&name, &entries, opts);
                if let Some(slot) = self.latest.get_mut(&name) {
                    if slot.as_deref() != Some(&fragment) {
                        *slot = Some(Arc::new(fragment));
                    }
                }
            }
            // Not started in this mode.
            Event::Health(..) => {}
        }
    }

    /// Serves the watched services the catalog lists; synced once the
    /// catalog and every service watch have answered.
    fn serve(&mut self) {
        let Some(catalog) = &self.catalog else {
            return;
        };
        self.services = self
            .latest
            .iter()
            .filter(|(name, _)| catalog.contains_key(*name))
            .filter_map(|(name, f)| {
                f.as_ref()
                    .filter(|f| !f.is_empty())
                    .map(|f| (name.clone(), f.clone()))
            })
            .collect();
        self.synced = self.synced || self.latest.values().all(Option::is_some);
    }
}

fn fragment_of(name: &str, entries: &[ServiceEntry], opts: LabelOptions<'_>) -> Fragment {
    Fragment::job_free(&service_groups(name, entries, opts))
}

/// Runs the per-service watches of `names` until `stop`.
pub(super) async fn run(
    config: Arc<ConsulSdConfig>,
    client: Arc<Client>,
    datacenter: String,
    mut report: Reporter,
    names: BTreeSet<String>,
    stop: CancellationToken,
) {
    let (tx, mut events) = mpsc::channel(64);
    let watches = stop.child_token();
    let _guard = watches.clone().drop_guard();
    spawn_catalog(&client, tx.clone(), watches.clone());
    for name in &names {
        let (c, n, label) = (client.clone(), name.clone(), name.clone());
        tokio::spawn(blocking_loop(
            format!("service {name:?}"),
            move |index| {
                let (c, n) = (c.clone(), n.clone());
                async move { c.health_service_blocking(&n, index).await }
            },
            move |_, entries| Event::Service(label.clone(), entries),
            tx.clone(),
            watches.clone(),
        ));
    }
    drop(tx);
    let mut state = State {
        catalog: None,
        latest: names.iter().map(|n| (n.clone(), None)).collect(),
        services: BTreeMap::new(),
        synced: false,
    };
    loop {
        let event = tokio::select! {
            _ = stop.cancelled() => return,
            event = events.recv() => event,
        };
        let Some(event) = event else { return };
        // Whatever else already arrived is published with it.
        let mut batch = vec![event];
        while let Ok(e) = events.try_recv() {
            batch.push(e);
        }
        let was_synced = state.synced;
        for event in batch {
            state.apply(event, &config, &datacenter, &mut report);
        }
        state.serve();
        if state.synced && !was_synced {
            tracing::info!(server = %config.server, services = state.services.len(), "consul watcher synced (one watch per service)");
        }
        report.publish(state.synced, &state.services);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::path::Path;

    fn parse(fields: &str) -> ConsulSdConfig {
        let text =
            format!("jobs:\n  - job_name: a\n    consul_sd_configs:\n      - {{{fields}}}\n");
        Config::parse(&text, Path::new("/etc/sdbridge/sdbridge.yml"))
            .map(|mut c| c.jobs.remove(0).consul_sd_configs.remove(0))
            .expect("valid config")
    }

    #[test]
    fn one_explicit_service_is_watched_alone() {
        assert_eq!(watched(&parse("")), None, "every service: health-state");
        assert_eq!(
            watched(&parse("services: [a, a], max_connections: 3")),
            Some(BTreeSet::from(["a".to_string()]))
        );
        assert_eq!(watched(&parse("services: [b, a]")), None);
    }

    #[test]
    fn served_once_every_watch_answered_and_only_what_the_catalog_lists() {
        let config = parse("services: [web, db, absent], tags: [prod]");
        let (tx, _rx) = tokio::sync::watch::channel(Arc::default());
        let mut report = Reporter::new("127.0.0.1:8500", tx, 0);
        // (`run` gets one name; the evaluator takes any number.)
        let names: BTreeSet<String> = config.services.iter().cloned().collect();
        let mut state = State {
            catalog: None,
            latest: names.iter().map(|n| (n.clone(), None)).collect(),
            services: BTreeMap::new(),
            synced: false,
        };
        let entry: ServiceEntry = serde_json::from_value(serde_json::json!({
            "Node": {"Node": "n1", "Address": "127.0.0.1"},
            "Service": {"ID": "web-1", "Service": "web", "Port": 9100},
            "Checks": []
        }))
        .expect("entry");
        let mut apply = |state: &mut State, e: Event| {
            state.apply(e, &config, "dc1", &mut report);
            state.serve();
        };
        apply(
            &mut state,
            Event::Service("web".into(), vec![entry.clone()]),
        );
        assert!(!state.synced && state.services.is_empty(), "no catalog yet");
        let catalog = BTreeMap::from([
            ("web".to_string(), vec!["prod".to_string()]),
            ("db".to_string(), vec![]),
            ("other".to_string(), vec!["prod".to_string()]),
        ]);
        apply(&mut state, Event::Catalog(5, catalog));
        assert!(!state.synced, "db and absent have not answered");
        assert_eq!(state.services.keys().collect::<Vec<_>>(), ["web"]);
        apply(&mut state, Event::Service("db".into(), vec![]));
        apply(&mut state, Event::Service("absent".into(), vec![]));
        assert!(state.synced);
        let web = state.services["web"].clone();
        // The same answer again keeps the same Arc: subscribers see no
        // change.
        apply(&mut state, Event::Service("web".into(), vec![entry]));
        assert!(Arc::ptr_eq(&web, &state.services["web"]));
        // Tags no longer match: not served, whatever its watch says.
        apply(
            &mut state,
            Event::Catalog(6, BTreeMap::from([("web".to_string(), vec![])])),
        );
        assert!(state.services.is_empty() && state.synced);
    }
}
