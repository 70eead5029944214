//! What both watchers share: the blocking-query loop (rate limit,
//! backoff, `Retry-After`), the events it reports, the catalog watch,
//! connecting, and the [`Reporter`] that publishes a watcher's state.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::{sleep, sleep_until, Instant};
use tokio_util::sync::CancellationToken;

use super::client::{next_index, Answer, Client, ConsulError};
use super::config::ConsulSdConfig;
use super::labels::{HealthCheck, ServiceEntry};
use super::ServicesState;
use crate::backoff::Backoff;
use crate::metrics::Metrics;
use crate::source::SourceError;
use crate::targetgroup::Fragment;

/// Shortest time between two calls of the same blocking watch.
pub const MIN_GAP: Duration = Duration::from_millis(250);
/// Token bucket of each blocking watch: burst...
pub const BURST: f64 = 3.0;
/// ...and refill rate (calls per second): when Consul churns, a watch
/// degrades to one call per second (plus the refreshes that churn needs),
/// which still serves every change within about 2 s.
pub const RATE: f64 = 1.0;
/// First retry delay after an error; doubles per consecutive error...
pub const BACKOFF_BASE: Duration = Duration::from_secs(1);
/// ...up to this (each delay is then jittered to 50-100%).
pub const BACKOFF_CAP: Duration = Duration::from_secs(30);
/// Errors kept for subscribers that have not read them yet.
const RECENT_ERRORS: usize = 64;
/// The backoff of every watch and refresh after errors.
pub(super) fn backoff() -> Backoff {
    Backoff::new(BACKOFF_BASE, BACKOFF_CAP)
}

/// Rate limit of one blocking watch: at least [`MIN_GAP`] between calls,
/// and a token bucket ([`BURST`], [`RATE`]) as Consul's docs recommend.
struct RateLimit {
    tokens: f64,
    refilled: Instant,
    last_call: Option<Instant>,
}

impl RateLimit {
    fn new() -> RateLimit {
        RateLimit {
            tokens: BURST,
            refilled: Instant::now(),
            last_call: None,
        }
    }

    async fn wait(&mut self) {
        if let Some(last) = self.last_call {
            sleep_until(last + MIN_GAP).await;
        }
        let now = Instant::now();
        self.tokens =
            (self.tokens + now.duration_since(self.refilled).as_secs_f64() * RATE).min(BURST);
        self.refilled = now;
        if self.tokens < 1.0 {
            sleep(Duration::from_secs_f64((1.0 - self.tokens) / RATE)).await;
            self.tokens = 1.0;
            self.refilled = Instant::now();
        }
        self.tokens -= 1.0;
        self.last_call = Some(Instant::now());
    }
}

/// What the blocking watches report to the evaluator.
#[derive(Debug)]
pub(super) enum Event {
    /// `/v1/catalog/services` answered with a new index.
    Catalog(u64, BTreeMap<String, Vec<String>>),
    /// `/v1/health/state/any` answered with a new index.
    Health(u64, Vec<HealthCheck>),
    /// A per-service watch (`/v1/health/service/<name>`) answered.
    Service(String, Vec<ServiceEntry>),
    /// A watch call failed (the component: `catalog_services`, ...).
    Failed(String, ConsulError),
}

/// Runs one blocking watch until `stop`: calls `fetch(index)`, reports
/// every answer, backs off on errors (honouring `Retry-After`).
pub(super) async fn blocking_loop<T, F, Fut, W>(
    name: String,
    fetch: F,
    wrap: W,
    tx: mpsc::Sender<Event>,
    stop: CancellationToken,
) where
    F: Fn(u64) -> Fut,
    Fut: std::future::Future<Output = Result<Answer<T>, ConsulError>>,
    W: Fn(u64, T) -> Event,
{
    let mut index = 0;
    let mut limit = RateLimit::new();
    let mut backoff = backoff();
    loop {
        let result = tokio::select! {
            _ = stop.cancelled() => return,
            result = async { limit.wait().await; fetch(index).await } => result,
        };
        let (event, delay) = match result {
            Ok(answer) => {
                backoff.reset();
                index = next_index(index, answer.index);
                // Reported even when the index did not move (a `wait` that
                // timed out): the evaluator diffs contents, which also
                // catches a change hidden behind a reused index (a snapshot
                // restore followed by as many writes as it rolled back).
                (wrap(answer.index, answer.body), None)
            }
            Err(e) => {
                let delay = backoff
                    .next_delay()
                    .max(e.retry_after().unwrap_or_default());
                (Event::Failed(name.clone(), e), Some(delay))
            }
        };
        if tx.send(event).await.is_err() {
            return;
        }
        if let Some(delay) = delay {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = sleep(delay) => {}
            }
        }
    }
}

/// The problems and errors a watcher publishes with its services.
pub(super) struct Reporter {
    server: String,
    tx: watch::Sender<Arc<ServicesState>>,
    /// Component (`catalog_services`, `service "web"`, ...) → problem.
    problems: BTreeMap<String, String>,
    error_seq: u64,
    recent_errors: VecDeque<(u64, SourceError)>,
}

impl Reporter {
    /// Continues the numbering of the `error_seq` errors already published.
    pub(super) fn new(
        server: &str,
        tx: watch::Sender<Arc<ServicesState>>,
        error_seq: u64,
    ) -> Reporter {
        Reporter {
            server: server.to_string(),
            tx,
            problems: BTreeMap::new(),
            error_seq,
            recent_errors: VecDeque::new(),
        }
    }

    pub(super) fn error(&mut self, component: &str, e: &ConsulError) {
        tracing::warn!(server = %self.server, component, error = %e, "consul request failed; last good targets stay served");
        self.problems.insert(component.to_string(), e.to_string());
        self.error_seq += 1;
        self.recent_errors.push_back((
            self.error_seq,
            SourceError {
                kind: e.kind(),
                message: e.to_string(),
            },
        ));
        while self.recent_errors.len() > RECENT_ERRORS {
            self.recent_errors.pop_front();
        }
    }

    /// `component` answered: its problem is over.
    pub(super) fn ok(&mut self, component: &str) {
        self.problems.remove(component);
    }

    pub(super) fn publish(&self, synced: bool, services: &BTreeMap<String, Arc<Fragment>>) {
        let problem = (!self.problems.is_empty()).then(|| {
            self.problems
                .iter()
                .map(|(c, p)| format!("consul {c}: {p}"))
                .collect::<Vec<_>>()
                .join("\n")
        });
        self.tx.send_replace(Arc::new(ServicesState {
            synced,
            problem,
            services: services.clone(),
            error_seq: self.error_seq,
            recent_errors: self.recent_errors.iter().cloned().collect(),
        }));
    }
}

/// Builds the client, retrying with backoff (bad TLS files may be fixed).
pub(super) async fn connect(
    config: &Arc<ConsulSdConfig>,
    metrics: &Option<Arc<Metrics>>,
    tx: &watch::Sender<Arc<ServicesState>>,
    stop: &CancellationToken,
) -> Option<(Arc<Client>, String, u64)> {
    let mut backoff = backoff();
    let mut errors = 0u64;
    let fail = |e: &ConsulError, errors: &mut u64| {
        tracing::warn!(server = %config.server, error = %e, "consul watcher cannot start yet");
        *errors += 1;
        tx.send_replace(Arc::new(ServicesState {
            problem: Some(format!("consul: {e}")),
            error_seq: *errors,
            recent_errors: vec![(
                *errors,
                SourceError {
                    kind: e.kind(),
                    message: e.to_string(),
                },
            )],
            ..ServicesState::default()
        }));
    };
    let client = loop {
        match Client::new(config.clone(), metrics.clone()) {
            Ok(c) => break Arc::new(c),
            Err(e) => fail(&e, &mut errors),
        }
        tokio::select! { _ = stop.cancelled() => return None, _ = sleep(backoff.next_delay()) => {} }
    };
    if !config.datacenter.is_empty() {
        return Some((client, config.datacenter.clone(), errors));
    }
    backoff.reset();
    loop {
        let result = tokio::select! {
            _ = stop.cancelled() => return None,
            r = client.agent_datacenter() => r,
        };
        match result {
            Ok(dc) => return Some((client, dc, errors)),
            Err(e) => {
                let delay = backoff
                    .next_delay()
                    .max(e.retry_after().unwrap_or_default());
                fail(&e, &mut errors);
                tokio::select! { _ = stop.cancelled() => return None, _ = sleep(delay) => {} }
            }
        }
    }
}

/// Starts the `/v1/catalog/services` watch, reporting to `tx` until
/// `stop`.
pub(super) fn spawn_catalog(
    client: &Arc<Client>,
    tx: mpsc::Sender<Event>,
    stop: CancellationToken,
) {
    let c = client.clone();
    tokio::spawn(blocking_loop(
        "catalog_services".to_string(),
        move |i| {
            let c = c.clone();
            async move {
                c.catalog_services(i).await.map(|a| Answer {
                    index: a.index,
                    body: a
                        .body
                        .into_iter()
                        .map(|(k, v)| (k, v.unwrap_or_default()))
                        .collect(),
                })
            }
        },
        Event::Catalog,
        tx,
        stop,
    ));
}
