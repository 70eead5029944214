//! The watcher shared by every job with the same Consul settings: two
//! blocking watches, the dirty-set computation, bounded per-service
//! refreshes, and the published [`ServicesState`]. See the module doc of
//! [`crate::source::consul`] for the strategy.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;

use super::blocking::{backoff, blocking_loop, spawn_catalog, Event, Reporter};
use super::client::{Client, ConsulError};
use super::config::ConsulSdConfig;
use super::labels::{service_groups, HealthCheck, LabelOptions};
use crate::backoff::Backoff;
use crate::targetgroup::Fragment;

/// Quiet time after a wake-up, so the catalog and health watches, which
/// wake on the same Raft write, are evaluated together.
pub const DEBOUNCE: Duration = Duration::from_millis(50);
/// How long a catalog index move that no catalog or check change explains
/// waits for the health watch to explain it, before every service is
/// refreshed.
pub const EXPLAIN_GRACE: Duration = Duration::from_secs(1);
/// ...or this long, when the health watch had a call out at Consul as the
/// move arrived: a write that touched a check wakes that call at once, so
/// its silence means no check changed (a check-less instance registered
/// or deregistered), and waiting the full grace would only delay serving it.
pub const PARKED_GRACE: Duration = Duration::from_millis(250);
/// Safety net: every service is re-read this often, for changes the two
/// watches cannot see (a node's address or metadata changing alone).
pub const FULL_RESYNC: Duration = Duration::from_secs(600);
/// Check indexes kept to explain catalog index moves.
const TOUCHED: usize = 1024;

/// What is known of one check, to tell what changed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct CheckInfo {
    service: String,
    modify_index: u64,
}

/// The checks of `/v1/health/state/any`, keyed by (node, check ID).
type Checks = HashMap<(String, String), CheckInfo>;

fn checks_of(list: Vec<HealthCheck>) -> Checks {
    list.into_iter()
        .map(|c| {
            (
                (c.node, c.check_id),
                CheckInfo {
                    service: c.service_name,
                    modify_index: c.modify_index,
                },
            )
        })
        .collect()
}

/// What a health-state answer changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct HealthDiff {
    /// Services with a new, removed or modified check, or on a node whose
    /// node check changed.
    pub dirty: BTreeSet<String>,
    /// A node check appeared or vanished on a node none of the served
    /// instances runs on: anything may have changed.
    pub all: bool,
    /// Raft indexes of the changes, to explain catalog index moves.
    pub touched: BTreeSet<u64>,
}

/// Compares two health-state answers (`index` is the new answer's).
fn health_diff(
    old: &Checks,
    new: &Checks,
    index: u64,
    nodes: &BTreeMap<String, BTreeSet<String>>,
) -> HealthDiff {
    let mut diff = HealthDiff::default();
    let mark = |node: &str, info: &CheckInfo, added_or_removed: bool, diff: &mut HealthDiff| {
        if !info.service.is_empty() {
            diff.dirty.insert(info.service.clone());
        } else if let Some(services) = nodes.get(node) {
            diff.dirty.extend(services.iter().cloned());
        } else if added_or_removed {
            diff.all = true;
        }
    };
    for (key, info) in new {
        match old.get(key) {
            Some(previous) if previous == info => {}
            Some(previous) => {
                diff.touched.insert(info.modify_index);
                mark(&key.0, info, false, &mut diff);
                if previous.service != info.service {
                    mark(&key.0, previous, false, &mut diff);
                }
            }
            None => {
                diff.touched.insert(info.modify_index);
                mark(&key.0, info, true, &mut diff);
            }
        }
    }
    for (key, info) in old {
        if !new.contains_key(key) {
            // Deleted with its service in one write: that write is the
            // answer's index.
            diff.touched.insert(index);
            mark(&key.0, info, true, &mut diff);
        }
    }
    diff
}

/// What a catalog answer changed (both maps already filtered by the
/// config's `services`/`tags`).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct CatalogDiff {
    /// New services and services whose tag list changed.
    pub dirty: BTreeSet<String>,
    /// Services gone from the catalog (or no longer matching).
    pub removed: BTreeSet<String>,
}

fn catalog_diff(
    old: &BTreeMap<String, Vec<String>>,
    new: &BTreeMap<String, Vec<String>>,
) -> CatalogDiff {
    let mut diff = CatalogDiff::default();
    for (name, tags) in new {
        if old.get(name) != Some(tags) {
            diff.dirty.insert(name.clone());
        }
    }
    for name in old.keys() {
        if !new.contains_key(name) {
            diff.removed.insert(name.clone());
        }
    }
    diff
}

/// A catalog index move no catalog or check change explained yet.
#[derive(Debug, Clone, Copy)]
struct Unexplained {
    /// The catalog index.
    index: u64,
    /// When to give up waiting for the health watch to explain it.
    until: Instant,
    /// The health watch's call that was out when the move arrived, and
    /// when its silence confirms the move is unexplained.
    probe: Option<(u64, Instant)>,
}

/// The evaluator's state.
struct Watcher {
    config: Arc<ConsulSdConfig>,
    client: Arc<Client>,
    datacenter: String,
    report: Reporter,
    /// Served services and their tags, as last read from the catalog.
    catalog: Option<BTreeMap<String, Vec<String>>>,
    catalog_index: u64,
    checks: Option<Checks>,
    /// Index of the last health-state answer.
    health_index: u64,
    /// Check indexes recently seen changing.
    touched: VecDeque<u64>,
    /// A catalog index move not explained yet.
    unexplained: Option<Unexplained>,
    /// Served services with at least one instance, serialized.
    services: BTreeMap<String, Arc<Fragment>>,
    /// Nodes → served services with an instance there.
    nodes: BTreeMap<String, BTreeSet<String>>,
    /// Services whose last refresh failed, retried after `retry_at`.
    retry: BTreeSet<String>,
    retry_at: Instant,
    retry_backoff: Backoff,
    /// Whether the first full read has been started.
    initial_read: bool,
    synced: bool,
}

impl Watcher {
    fn error(&mut self, component: &str, e: &ConsulError) {
        self.report.error(component, e);
    }

    fn publish(&self) {
        self.report.publish(self.synced, &self.services);
    }

    fn remember_touched(&mut self, indexes: impl IntoIterator<Item = u64>) {
        self.touched.extend(indexes);
        while self.touched.len() > TOUCHED {
            self.touched.pop_front();
        }
    }

    /// Applies a batch of events; returns the services to refresh.
    fn apply(&mut self, events: Vec<Event>, dirty: &mut BTreeSet<String>) {
        for event in events {
            match event {
                Event::Failed(component, e) => self.error(&component, &e),
                // Only in per-service mode, which has its own evaluator.
                Event::Service(..) => {}
                Event::Catalog(index, all) => {
                    self.report.ok("catalog_services");
                    let new: BTreeMap<String, Vec<String>> = all
                        .into_iter()
                        .filter(|(name, tags)| self.config.should_watch(name, tags))
                        .collect();
                    if let Some(old) = &self.catalog {
                        let diff = catalog_diff(old, &new);
                        let explained = !diff.dirty.is_empty() || !diff.removed.is_empty();
                        dirty.extend(diff.dirty);
                        for name in diff.removed {
                            self.services.remove(&name);
                            self.retry.remove(&name);
                            for services in self.nodes.values_mut() {
                                services.remove(&name);
                            }
                        }
                        if index != self.catalog_index
                            && !explained
                            && !self.touched.contains(&index)
                        {
                            let now = Instant::now();
                            self.unexplained = Some(Unexplained {
                                index,
                                until: now + EXPLAIN_GRACE,
                                probe: self
                                    .client
                                    .health_state_progress
                                    .outstanding()
                                    .map(|call| (call, now + PARKED_GRACE)),
                            });
                        }
                    }
                    self.catalog_index = index;
                    self.catalog = Some(new);
                }
                Event::Health(index, list) => {
                    self.report.ok("health_state");
                    let new = checks_of(list);
                    if let Some(old) = &self.checks {
                        let diff = health_diff(old, &new, index, &self.nodes);
                        if diff.all {
                            if let Some(catalog) = &self.catalog {
                                dirty.extend(catalog.keys().cloned());
                            }
                        }
                        dirty.extend(diff.dirty);
                        self.remember_touched(diff.touched);
                        // A filtered answer hides other services' checks,
                        // but its index still moves with the checks table:
                        // the move says a write at that index touched a
                        // check, as an unfiltered answer would show, so a
                        // catalog move at the same index (another
                        // service's registration) is explained. Not with
                        // `node_meta`: that index also moves with nodes.
                        if self.client.checks_filter.is_some()
                            && self.config.node_meta.is_empty()
                            && index != self.health_index
                        {
                            self.remember_touched([index]);
                        }
                    }
                    self.health_index = index;
                    self.checks = Some(new);
                }
            }
        }
        if let Some(u) = self.unexplained {
            if self.touched.contains(&u.index) {
                self.unexplained = None;
            }
        }
        // Only served services are fetched.
        if let Some(catalog) = &self.catalog {
            dirty.retain(|s| catalog.contains_key(s));
        }
    }

    /// When an unexplained move's deadline passes: whether to refresh
    /// every service now (the grace is over, or the health call that was
    /// out when the move arrived is still out, so no check changed).
    fn unexplained_due(&mut self) -> bool {
        let Some(u) = &mut self.unexplained else {
            return false;
        };
        let now = Instant::now();
        let progress = &self.client.health_state_progress;
        let silent = u
            .probe
            .is_some_and(|(call, at)| at <= now && !progress.finished(call));
        if silent || u.until <= now {
            self.unexplained = None;
            return true;
        }
        // The health call answered: its event explains the move, or the
        // full grace applies.
        u.probe = None;
        false
    }

    /// Fetches `names` concurrently (the client's semaphore bounds it) and
    /// stores the results; failures keep the previous groups and are
    /// retried with backoff. Returns whether all succeeded.
    async fn refresh(&mut self, names: BTreeSet<String>, stop: &CancellationToken) -> bool {
        if names.is_empty() {
            return self.retry.is_empty();
        }
        // Labels are built, serialized and compared with what is served in
        // the tasks: in parallel, and an unchanged service (most of a full
        // re-read) is dropped there, so only the serialized form of what
        // changed is ever held.
        let datacenter: Arc<str> = self.datacenter.as_str().into();
        let mut tasks = JoinSet::new();
        for name in names {
            let client = self.client.clone();
            let config = self.config.clone();
            let datacenter = datacenter.clone();
            let served = self.services.get(&name).cloned();
            tasks.spawn(async move {
                let result = client.health_service(&name).await.map(|entries| {
                    let opts = LabelOptions {
                        datacenter: &datacenter,
                        tag_separator: &config.tag_separator,
                        vm_tag_labels: config.vm_tag_labels,
                    };
                    let nodes: BTreeSet<String> =
                        entries.iter().map(|e| e.node.node.clone()).collect();
                    let fragment = Fragment::job_free(&service_groups(&name, &entries, opts));
                    let changed = served.as_deref() != Some(&fragment);
                    (changed.then_some(fragment), nodes)
                });
                (name, result)
            });
        }
        let mut results = Vec::new();
        loop {
            let next = tokio::select! {
                _ = stop.cancelled() => return false,
                next = tasks.join_next() => next,
            };
            match next {
                None => break,
                Some(Ok(result)) => results.push(result),
                Some(Err(e)) => tracing::error!(error = %e, "consul refresh task failed"),
            }
        }
        let mut ok = true;
        let mut retry_after = Duration::ZERO;
        for (name, result) in results {
            match result {
                Ok((fragment, nodes)) => {
                    self.retry.remove(&name);
                    self.report.ok(&format!("service {name:?}"));
                    for services in self.nodes.values_mut() {
                        services.remove(&name);
                    }
                    for node in nodes {
                        self.nodes.entry(node).or_default().insert(name.clone());
                    }
                    self.nodes.retain(|_, s| !s.is_empty());
                    match fragment {
                        None => {}
                        Some(f) if f.is_empty() => {
                            self.services.remove(&name);
                        }
                        Some(f) => {
                            self.services.insert(name, Arc::new(f));
                        }
                    }
                }
                Err(e) => {
                    ok = false;
                    retry_after = retry_after.max(e.retry_after().unwrap_or_default());
                    self.error(&format!("service {name:?}"), &e);
                    self.retry.insert(name);
                }
            }
        }
        if ok {
            self.retry_backoff.reset();
        } else {
            self.retry_at = Instant::now() + self.retry_backoff.next_delay().max(retry_after);
        }
        ok && self.retry.is_empty()
    }
}

/// Runs the watcher for `config` (all services, or those its filters
/// let through) until `stop`, publishing through `report`.
pub(super) async fn run(
    config: Arc<ConsulSdConfig>,
    client: Arc<Client>,
    datacenter: String,
    report: Reporter,
    stop: CancellationToken,
) {
    let (events_tx, mut events) = mpsc::channel(64);
    let watches = stop.child_token();
    let _guard = watches.clone().drop_guard();
    spawn_catalog(&client, events_tx.clone(), watches.clone());
    let c = client.clone();
    tokio::spawn(blocking_loop(
        "health_state".to_string(),
        move |i| {
            let c = c.clone();
            async move { c.health_state(i).await }
        },
        Event::Health,
        events_tx,
        watches.clone(),
    ));
    let mut w = Watcher {
        config: config.clone(),
        client,
        datacenter,
        report,
        catalog: None,
        catalog_index: 0,
        checks: None,
        health_index: 0,
        touched: VecDeque::new(),
        unexplained: None,
        services: BTreeMap::new(),
        nodes: BTreeMap::new(),
        retry: BTreeSet::new(),
        retry_at: Instant::now(),
        retry_backoff: backoff(),
        initial_read: false,
        synced: false,
    };
    let far = || Instant::now() + Duration::from_secs(86400 * 365);
    let mut next_resync = Instant::now() + FULL_RESYNC;
    loop {
        let mut batch = Vec::new();
        let mut dirty = BTreeSet::new();
        let retry_at = if w.retry.is_empty() {
            far()
        } else {
            w.retry_at
        };
        let explain_at = w
            .unexplained
            .map(|u| u.probe.map_or(u.until, |(_, at)| at.min(u.until)))
            .unwrap_or_else(far);
        tokio::select! {
            _ = stop.cancelled() => return,
            event = events.recv() => match event {
                Some(e) => batch.push(e),
                None => return,
            },
            _ = sleep_until(retry_at) => dirty.extend(w.retry.iter().cloned()),
            _ = sleep_until(explain_at) => {
                if w.unexplained_due() {
                    tracing::debug!("catalog index moved without a visible cause: refreshing every service");
                    dirty.extend(w.catalog.iter().flat_map(|c| c.keys().cloned()));
                }
            }
            _ = sleep_until(next_resync) => {
                next_resync = Instant::now() + FULL_RESYNC;
                dirty.extend(w.catalog.iter().flat_map(|c| c.keys().cloned()));
            }
        }
        if !batch.is_empty() {
            let deadline = Instant::now() + DEBOUNCE;
            loop {
                tokio::select! {
                    event = events.recv() => match event {
                        Some(e) => batch.push(e),
                        None => return,
                    },
                    _ = sleep_until(deadline) => break,
                }
            }
        }
        w.apply(batch, &mut dirty);
        if w.catalog.is_none() || w.checks.is_none() {
            // Not both watches have answered yet: nothing to fetch against.
            w.publish();
            continue;
        }
        if !w.initial_read {
            // Both watches have answered: read every selected service once
            // (whatever batch the first answers came in).
            w.initial_read = true;
            dirty.extend(w.catalog.iter().flat_map(|c| c.keys().cloned()));
        }
        let all_ok = w.refresh(dirty, &stop).await;
        if stop.is_cancelled() {
            return;
        }
        if all_ok && !w.synced {
            w.synced = true;
            tracing::info!(server = %config.server, services = w.services.len(), "consul watcher synced");
        }
        w.publish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::consul::client::Answer;
    use tokio::time::sleep;

    fn check(node: &str, id: &str, service: &str, index: u64) -> HealthCheck {
        HealthCheck {
            node: node.into(),
            check_id: id.into(),
            service_name: service.into(),
            modify_index: index,
            ..HealthCheck::default()
        }
    }

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn health_diff_finds_changed_services() {
        let old = checks_of(vec![
            check("n1", "serfHealth", "", 5),
            check("n1", "service:web-1", "web", 10),
            check("n2", "service:db-1", "db", 11),
            check("n2", "serfHealth", "", 5),
        ]);
        let nodes = BTreeMap::from([
            ("n1".to_string(), set(&["web", "cache"])),
            ("n2".to_string(), set(&["db"])),
        ]);
        // Nothing changed.
        assert_eq!(health_diff(&old, &old, 20, &nodes), HealthDiff::default());
        // A service check changed status; a node check changed on n1.
        let new = checks_of(vec![
            check("n1", "serfHealth", "", 21),
            check("n1", "service:web-1", "web", 10),
            check("n2", "service:db-1", "db", 22),
            check("n2", "serfHealth", "", 5),
        ]);
        let d = health_diff(&old, &new, 22, &nodes);
        assert_eq!(d.dirty, set(&["cache", "db", "web"]));
        assert!(!d.all);
        assert_eq!(d.touched, BTreeSet::from([21, 22]));
        // A new instance with its check; a check removed with its instance.
        let new = checks_of(vec![
            check("n1", "serfHealth", "", 5),
            check("n1", "service:web-1", "web", 10),
            check("n2", "serfHealth", "", 5),
            check("n3", "service:api-1", "api", 30),
        ]);
        let d = health_diff(&old, &new, 31, &nodes);
        assert_eq!(d.dirty, set(&["api", "db"]));
        assert_eq!(d.touched, BTreeSet::from([30, 31]));
        assert!(!d.all);
        // A node check appears on an unknown node: everything is suspect;
        // a status flap there is not.
        let mut new = old.clone();
        new.extend(checks_of(vec![check("n9", "serfHealth", "", 40)]));
        assert!(health_diff(&old, &new, 40, &nodes).all);
        let flap_old = checks_of(vec![check("n9", "serfHealth", "", 40)]);
        let flap_new = checks_of(vec![check("n9", "serfHealth", "", 41)]);
        let d = health_diff(&flap_old, &flap_new, 41, &nodes);
        assert!(!d.all && d.dirty.is_empty());
    }

    #[test]
    fn catalog_diff_finds_new_changed_and_removed() {
        let old = BTreeMap::from([
            ("a".to_string(), vec!["x".to_string()]),
            ("b".to_string(), vec![]),
            ("c".to_string(), vec![]),
        ]);
        let new = BTreeMap::from([
            ("a".to_string(), vec!["x".to_string(), "y".to_string()]),
            ("b".to_string(), vec![]),
            ("d".to_string(), vec![]),
        ]);
        let d = catalog_diff(&old, &new);
        assert_eq!(d.dirty, set(&["a", "d"]));
        assert_eq!(d.removed, set(&["c"]));
        assert_eq!(catalog_diff(&new, &new), CatalogDiff::default());
    }

    /// Regression: an answer whose index equals the one sent used to be
    /// dropped as "the wait timed out", hiding a change made after a
    /// snapshot restore once the index climbed back to the same number.
    #[tokio::test]
    async fn blocking_loop_reports_answers_whose_index_did_not_move() {
        let answers = Arc::new(std::sync::Mutex::new(VecDeque::from([
            (5, "before"),
            (5, "after"),
            (4, "restored"),
        ])));
        let sent = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (tx, mut rx) = mpsc::channel(8);
        let stop = CancellationToken::new();
        let (a, s) = (answers.clone(), sent.clone());
        tokio::spawn(blocking_loop(
            "health_state".to_string(),
            move |index| {
                s.lock().unwrap().push(index);
                let next = a.lock().unwrap().pop_front();
                async move {
                    match next {
                        Some((index, node)) => Ok(Answer {
                            index,
                            body: vec![check(node, "serfHealth", "", index)],
                        }),
                        None => std::future::pending().await,
                    }
                }
            },
            Event::Health,
            tx,
            stop.clone(),
        ));
        let mut seen = Vec::new();
        for _ in 0..3 {
            match tokio::time::timeout(Duration::from_secs(5), rx.recv()).await {
                Ok(Some(Event::Health(index, checks))) => {
                    seen.push((index, checks[0].node.clone()))
                }
                other => panic!("{other:?} after {seen:?}"),
            }
        }
        // The call after the last answer (sent after the minimum gap).
        for _ in 0..100 {
            if sent.lock().unwrap().len() >= 4 {
                break;
            }
            sleep(Duration::from_millis(20)).await;
        }
        stop.cancel();
        assert_eq!(
            seen,
            [
                (5, "before".to_string()),
                (5, "after".into()),
                (4, "restored".into())
            ]
        );
        // Blocking on the last index; a fresh read (no index) after it went
        // backwards.
        assert_eq!(sent.lock().unwrap()[..4], [0, 5, 5, 0]);
    }
}
