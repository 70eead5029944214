//! The loop polling sources share, as Prometheus's `refresh.Discovery`:
//! one round at start, then one every `interval` or when woken (a
//! PostgreSQL `NOTIFY`, say). A round yields all the source's groups (or
//! `None`: unchanged, as an upstream's `304` says); the
//! first success replaces, later ones patch its one part, and a round that
//! changed nothing sends no part. A failed round keeps the last good groups,
//! reports the error, and is retried with backoff and jitter (never later
//! than the next regular round).
//!
//! A source can also have a problem beside its rounds (its `LISTEN`
//! connection is down): [`Between::problem`]. It is reported at once, with
//! the last round's, and cleared when it ends, without waiting for a
//! round.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify};
use tokio::time::{sleep_until, Instant};

use super::{Change, Part, SourceContext, SourceError, Update};
use crate::backoff::Backoff;
use crate::targetgroup::{Fragment, TargetGroup};

/// The key of the one part a polling source has.
pub const PART_KEY: &str = "";

/// First retry after a failed round; doubles up to the interval.
const FIRST_RETRY: Duration = Duration::from_secs(1);

/// What acts on a polling source between its rounds.
#[derive(Debug, Default)]
pub struct Between {
    /// Runs a round at once when notified (a PostgreSQL `NOTIFY`).
    pub wake: Option<Arc<Notify>>,
    /// A problem beside the rounds, `None` when there is none. Every value
    /// sent is reported (and its error counted) at once.
    pub problem: Option<watch::Receiver<Option<SourceError>>>,
}

/// The problem an update reports: the last round's and the one beside the
/// rounds.
fn problem(round: &Option<SourceError>, beside: &Option<SourceError>) -> Option<String> {
    match (round, beside) {
        (None, None) => None,
        (Some(e), None) | (None, Some(e)) => Some(e.message.clone()),
        (Some(a), Some(b)) => Some(format!("{}; {}", a.message, b.message)),
    }
}

/// Waits for the next value of `problem` (forever once its sender is gone
/// or when there is none).
async fn next_problem(
    problem: &mut Option<watch::Receiver<Option<SourceError>>>,
) -> Option<SourceError> {
    if let Some(rx) = problem {
        if rx.changed().await.is_ok() {
            return rx.borrow_and_update().clone();
        }
    }
    *problem = None;
    std::future::pending().await
}

/// Runs rounds of `refresh` until `ctx.shutdown` is cancelled or the
/// merger is gone.
pub async fn run<F, Fut>(ctx: &SourceContext, interval: Duration, between: Between, mut refresh: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<Vec<TargetGroup>>, SourceError>>,
{
    let interval = interval.max(Duration::from_millis(100));
    let mut backoff = Backoff::new(FIRST_RETRY, interval);
    let mut sent: Option<Arc<Fragment>> = None;
    let labels = ctx.out.labels();
    let Between {
        wake,
        problem: mut beside_rx,
    } = between;
    let mut beside: Option<SourceError> = beside_rx
        .as_mut()
        .and_then(|rx| rx.borrow_and_update().clone());
    // The last round's error, reported again with every change beside.
    let mut round: Option<SourceError>;
    loop {
        let started = Instant::now();
        let result = tokio::select! {
            _ = ctx.shutdown.cancelled() => return,
            r = refresh() => r,
        };
        if let Some(m) = ctx.out.metrics() {
            m.refresh_round(&labels, started.elapsed(), result.is_ok());
        }
        // The update of a round without error.
        let clean = |change, synced| Update {
            source: ctx.out.id,
            change,
            synced,
            problem: problem(&None, &beside),
            errors: Vec::new(),
        };
        let next = match result {
            Ok(None) => {
                // The upstream says nothing changed (a 304).
                backoff.reset();
                if ctx
                    .out
                    .send(clean(Change::None, sent.is_some()))
                    .await
                    .is_err()
                {
                    return;
                }
                round = None;
                started + interval
            }
            Ok(Some(groups)) => {
                backoff.reset();
                // Serializing 100,000 targets is CPU work: off the workers.
                let job = ctx.out.job.clone();
                let fragment = tokio::task::spawn_blocking(move || Fragment::new(&groups, &job))
                    .await
                    .map(Arc::new);
                let Ok(fragment) = fragment else { return };
                let change = match &sent {
                    None => Change::Replace(vec![Part::serialized(PART_KEY, fragment.clone())]),
                    Some(old) if **old == *fragment => Change::None,
                    Some(_) => Change::Patch(vec![Part::serialized(PART_KEY, fragment.clone())]),
                };
                sent = Some(fragment);
                if ctx.out.send(clean(change, true)).await.is_err() {
                    return;
                }
                round = None;
                started + interval
            }
            Err(e) => {
                tracing::warn!(
                    job = %ctx.out.job, source = %ctx.out.name, error = %e.message,
                    "refresh failed; the last good targets stay served"
                );
                let update = Update {
                    source: ctx.out.id,
                    change: Change::None,
                    synced: false,
                    problem: problem(&Some(e.clone()), &beside),
                    errors: vec![e.clone()],
                };
                if ctx.out.send(update).await.is_err() {
                    return;
                }
                round = Some(e);
                Instant::now() + backoff.next_delay()
            }
        };
        loop {
            // A wake-up during the round left a permit: it is not lost.
            let woken = async {
                match &wake {
                    Some(n) => n.notified().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = ctx.shutdown.cancelled() => return,
                _ = sleep_until(next) => break,
                _ = woken => break,
                now = next_problem(&mut beside_rx) => {
                    beside = now;
                    let update = Update {
                        source: ctx.out.id,
                        change: Change::None,
                        synced: sent.is_some(),
                        problem: problem(&round, &beside),
                        errors: beside.iter().cloned().collect(),
                    };
                    if ctx.out.send(update).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}
