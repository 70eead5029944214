//! `consul_sd_configs` with Prometheus's labels (`discovery/consul`), built
//! to be a good Consul citizen with large catalogs.
//!
//! # Output
//!
//! One part per service (key: the service name), holding one group per
//! service instance ordered by node name then service ID: the HTTP SD
//! format cannot carry per-target labels, so each instance's group carries
//! Prometheus's group labels (`__meta_consul_service`, `__meta_consul_dc`)
//! and its per-target labels ([`labels::instance_group`]).
//!
//! # Strategy
//!
//! Prometheus runs one blocking query per service: at 1,000 services that
//! is 1,000 open connections per scraper, and Consul agents refuse more than
//! 200 per client address (429). sdbridge instead keeps **two** long-lived
//! blocking queries per watcher:
//!
//! - `/v1/catalog/services` (with `filter`, `node-meta`): services appearing,
//!   vanishing or changing tags;
//! - `/v1/health/state/any`: every check with its `ModifyIndex`, so a
//!   changed, new or removed check names the service it belongs to (a node
//!   check names the node, hence the served services with instances there).
//!   With an explicit `services` list it asks only for those services'
//!   checks and the node checks (`filter=ServiceName == "" or ServiceName
//!   == "a" ...`, [`client::checks_filter`]): Consul still wakes it on
//!   every check change (its index is the checks table's), but a change
//!   elsewhere costs one small answer and no service read.
//!
//! When `services` names a single service, the watcher instead runs
//! Prometheus's own query for it, a blocking `/v1/health/service/<name>`,
//! next to the catalog watch ([`per_service`]): still two connections,
//! and Consul's index for that query moves only with that service, so a
//! change elsewhere in the datacenter costs nothing.
//!
//! On a wake-up (debounced by [`watch::DEBOUNCE`]) it computes the dirty
//! set: new services, services whose tags changed, services with a changed
//! check, services on a node whose node check changed; a node check
//! appearing or vanishing on a node with no known instance, or a catalog
//! index move that neither watch explains (a check-less instance
//! registered, say), marks every service dirty: after
//! [`watch::PARKED_GRACE`] if the health watch had a call parked at Consul
//! when the move arrived (a check change would have woken it), else after
//! [`watch::EXPLAIN_GRACE`]. Only
//! the dirty services are then read, non-blocking, from
//! `/v1/health/service/<name>` (with `tag=`, `health_filter`), over at
//! most `max_connections` connections, counting the two watches (each
//! connection holds a slot while open: [`crate::http_client::transport`]). When
//! nothing changes Consul sees two requests every [`client::WAIT`] (2 min,
//! Prometheus's value); a change is served within about
//! `DEBOUNCE` + one request.
//!
//! Blocking queries follow Consul's rules: the index is reset to 0 when it
//! goes backwards, is never below 1 otherwise, and is not sent when 0 (a
//! fresh read). Every answer is diffed, even one whose index did not move
//! (after a snapshot restore the index can climb back to the number held,
//! with other contents). Each watch waits at least [`blocking::MIN_GAP`] between calls
//! and draws from a token bucket ([`blocking::BURST`], [`blocking::RATE`]/s), so
//! a churning catalog degrades to about one call per second per watch.
//! Errors back off exponentially with jitter ([`blocking::BACKOFF_BASE`]
//! doubling up to [`blocking::BACKOFF_CAP`]), and `Retry-After` (429) is
//! honoured, clamped to [`crate::backoff::MAX_SERVER_DELAY`].
//!
//! `refresh_interval` is accepted but not polled on: changes arrive through
//! the blocking queries. As a safety net for what neither watch sees (a
//! node's address or metadata changing alone), every service is re-read
//! every [`watch::FULL_RESYNC`] (10 min). Datacenter: `datacenter` if set
//! (then also sent as `dc=`), else `/v1/agent/self`'s `Config.Datacenter`,
//! only for `__meta_consul_dc`, as in Prometheus.
//!
//! # Sharing
//!
//! Jobs whose `consul_sd_configs` entries are identical share one watcher:
//! a process-wide registry maps the entry to the watcher's `watch` channel
//! of [`ServicesState`]; the first source with that entry starts it and it
//! stops when the last subscriber is gone. Each subscribing source turns
//! state changes into [`Update`]s for its job (a `Replace` once synced,
//! then `Patch`es of the services whose groups changed).
//!
//! # Errors
//!
//! A failed request keeps the last good groups; the source reports the
//! problem and counts the error (`consul_http`, `consul_timeout`,
//! `consul_decode`, `consul_config`). The source stays unsynced until one
//! complete sync (both watches answered and every selected service read).

pub mod client;
pub mod config;
pub mod labels;

mod blocking;
pub mod per_service;
pub mod watch;

#[cfg(test)]
mod live_test;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::watch as channel;
use tokio_util::sync::CancellationToken;

pub use config::ConsulSdConfig;

use super::{Change, Outbox, Part, Source, SourceContext, SourceError, SourceFuture, Update};
use crate::metrics::Metrics;
use crate::targetgroup::Fragment;

/// What a watcher publishes after each round.
#[derive(Debug, Default)]
pub struct ServicesState {
    /// Whether one complete sync has happened.
    pub synced: bool,
    /// The problems the watcher has now, if any.
    pub problem: Option<String>,
    /// Groups of every served service with at least one instance,
    /// serialized once for every subscriber.
    pub services: BTreeMap<String, Arc<Fragment>>,
    /// Sequence number of the last error.
    pub error_seq: u64,
    /// The last errors with their sequence numbers, so each subscriber
    /// counts every error once.
    pub recent_errors: Vec<(u64, SourceError)>,
}

/// A running watcher; stopped when the last subscriber drops it.
struct Shared {
    rx: channel::Receiver<Arc<ServicesState>>,
    stop: CancellationToken,
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The running watchers, by settings: every job whose
/// `consul_sd_configs` entry has the same settings shares one. Held by
/// the source runtime ([`crate::source::Shared`]) and handed to each
/// Consul source, so the sharing is visible and a test can have its own.
#[derive(Debug, Default)]
pub struct Watchers(Mutex<HashMap<ConsulSdConfig, Weak<Shared>>>);

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

impl Watchers {
    /// How many watchers run now.
    pub fn running(&self) -> usize {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.values().filter(|w| w.strong_count() > 0).count()
    }
}

/// The watcher for `config`, started if none runs.
fn subscribe(
    watchers: &Watchers,
    config: &ConsulSdConfig,
    metrics: Option<Arc<Metrics>>,
) -> Arc<Shared> {
    // A poisoned lock only means another source panicked mid-insert; the
    // map itself is still consistent.
    let mut map = watchers.0.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(shared) = map.get(config).and_then(Weak::upgrade) {
        return shared;
    }
    map.retain(|_, w| w.strong_count() > 0);
    let (tx, rx) = channel::channel(Arc::new(ServicesState::default()));
    let stop = CancellationToken::new();
    tokio::spawn(start(Arc::new(config.clone()), metrics, tx, stop.clone()));
    let shared = Arc::new(Shared { rx, stop });
    map.insert(config.clone(), Arc::downgrade(&shared));
    shared
}

/// Connects, then runs the watcher `config` needs until `stop`: one
/// blocking watch per service when its services are few and explicit
/// ([`per_service`]), else the catalog and health watches ([`watch`]).
async fn start(
    config: Arc<ConsulSdConfig>,
    metrics: Option<Arc<Metrics>>,
    tx: channel::Sender<Arc<ServicesState>>,
    stop: CancellationToken,
) {
    let Some((client, datacenter, error_seq)) =
        blocking::connect(&config, &metrics, &tx, &stop).await
    else {
        return;
    };
    let report = blocking::Reporter::new(&config.server, tx, error_seq);
    match per_service::watched(&config) {
        Some(names) => per_service::run(config, client, datacenter, report, names, stop).await,
        None => watch::run(config, client, datacenter, report, stop).await,
    }
}

/// What one subscriber has sent so far.
#[derive(Debug, Default)]
pub struct Subscriber {
    /// The services sent, `None` before the first `Replace`.
    sent: Option<BTreeMap<String, Arc<Fragment>>>,
    /// Errors up to this sequence number are already reported.
    seen_errors: u64,
}

impl Subscriber {
    /// A subscriber joining when errors up to `seen_errors` happened.
    pub fn new(seen_errors: u64) -> Subscriber {
        Subscriber {
            sent: None,
            seen_errors,
        }
    }

    /// The update that brings the job from what was sent to `state`.
    pub fn update(&mut self, state: &ServicesState) -> Update {
        let errors = state
            .recent_errors
            .iter()
            .filter(|(seq, _)| *seq > self.seen_errors)
            .map(|(_, e)| e.clone())
            .collect();
        self.seen_errors = self.seen_errors.max(state.error_seq);
        let change = match (&self.sent, state.synced) {
            (_, false) => Change::None,
            (None, true) => Change::Replace(
                state
                    .services
                    .iter()
                    .map(|(name, groups)| Part::serialized(name.clone(), groups.clone()))
                    .collect(),
            ),
            (Some(sent), true) => {
                let mut parts: Vec<Part> = state
                    .services
                    .iter()
                    .filter(|(name, groups)| {
                        !sent.get(*name).is_some_and(|g| Arc::ptr_eq(g, groups))
                    })
                    .map(|(name, groups)| Part::serialized(name.clone(), groups.clone()))
                    .collect();
                parts.extend(
                    sent.keys()
                        .filter(|name| !state.services.contains_key(*name))
                        .map(Part::removed),
                );
                if parts.is_empty() {
                    Change::None
                } else {
                    Change::Patch(parts)
                }
            }
        };
        if state.synced {
            self.sent = Some(state.services.clone());
        }
        Update {
            source: Default::default(),
            change,
            synced: state.synced,
            problem: state.problem.clone(),
            errors,
        }
    }
}

impl Source for ConsulSdConfig {
    fn kind(&self) -> &'static str {
        "consul_sd"
    }

    fn describe(&self) -> String {
        ConsulSdConfig::describe(self)
    }

    fn selects(&self) -> String {
        let c = self;
        format!(
            "{}://{}{} dc={:?} ns={:?} partition={:?} services={:?} tags={:?} node_meta={:?} filter={:?} health_filter={:?} tag_separator={:?} vm_tag_labels={}",
            c.scheme.as_str(),
            c.server,
            c.path_prefix,
            c.datacenter,
            c.namespace,
            c.partition,
            c.services,
            c.tags,
            c.node_meta,
            c.filter,
            c.health_filter,
            c.tag_separator,
            c.vm_tag_labels,
        )
    }

    fn run(self: Arc<Self>, ctx: SourceContext) -> SourceFuture {
        Box::pin(
            async move { run(&ctx.shared.consul, (*self).clone(), ctx.out, ctx.shutdown).await },
        )
    }
}

/// Runs one `consul_sd_configs` entry for one job until `shutdown`: joins
/// (or starts) the watcher for these settings and forwards its changes.
pub async fn run(
    watchers: &Watchers,
    config: ConsulSdConfig,
    out: Outbox,
    shutdown: CancellationToken,
) {
    let shared = subscribe(watchers, &config, out.metrics().cloned());
    let mut rx = shared.rx.clone();
    let mut subscriber = Subscriber::new(rx.borrow().error_seq);
    loop {
        let state = rx.borrow_and_update().clone();
        if out.send(subscriber.update(&state)).await.is_err() {
            return;
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = rx.changed() => if changed.is_err() { return },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::targetgroup::{LabelSet, TargetGroup};

    fn groups(target: &str) -> Arc<Fragment> {
        Arc::new(Fragment::job_free(&[TargetGroup::new(
            [target],
            LabelSet::default(),
        )]))
    }

    fn keys(change: &Change) -> Vec<(String, usize)> {
        let parts = match change {
            Change::Replace(p) | Change::Patch(p) => p,
            Change::None => return Vec::new(),
        };
        parts
            .iter()
            .map(|p| (p.key.clone(), p.fragment.groups()))
            .collect()
    }

    #[test]
    fn replace_once_synced_then_patches_of_what_changed() {
        let mut sub = Subscriber::new(0);
        let error = SourceError {
            kind: "consul_http",
            message: "down".into(),
        };
        let mut state = ServicesState {
            problem: Some("down".into()),
            error_seq: 1,
            recent_errors: vec![(1, error.clone())],
            ..ServicesState::default()
        };
        let u = sub.update(&state);
        assert_eq!(
            (u.change.clone(), u.synced, u.errors.len()),
            (Change::None, false, 1)
        );
        assert_eq!(
            sub.update(&state).errors.len(),
            0,
            "each error counted once"
        );

        let (a, b) = (groups("127.0.0.1:1"), groups("127.0.0.1:2"));
        state = ServicesState {
            synced: true,
            services: BTreeMap::from([("a".to_string(), a.clone()), ("b".to_string(), b.clone())]),
            error_seq: 1,
            recent_errors: vec![(1, error)],
            ..ServicesState::default()
        };
        let u = sub.update(&state);
        assert!(matches!(u.change, Change::Replace(_)));
        assert_eq!(
            keys(&u.change),
            [("a".to_string(), 1), ("b".to_string(), 1)]
        );
        assert!(u.synced && u.problem.is_none() && u.errors.is_empty());

        // Same Arcs: nothing to send.
        assert_eq!(sub.update(&state).change, Change::None);

        // b changed, a vanished, c appeared.
        state.services = BTreeMap::from([
            ("b".to_string(), groups("127.0.0.1:3")),
            ("c".to_string(), groups("127.0.0.1:4")),
        ]);
        let u = sub.update(&state);
        assert!(matches!(u.change, Change::Patch(_)));
        assert_eq!(
            keys(&u.change),
            [
                ("b".to_string(), 1),
                ("c".to_string(), 1),
                ("a".to_string(), 0)
            ]
        );
    }
}
