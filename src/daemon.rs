//! Wiring: starts the merger and one task per source, serves HTTP, and
//! runs the one-shot `dump`.

use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::Bytes;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::http::{self, AppState};
use crate::merge::Merger;
use crate::metrics::Metrics;
use crate::snapshot::Snapshot;
use crate::source::{self, Outbox, SourceId};

/// Queue depth between sources and the merger; sources wait when it is full.
const UPDATE_QUEUE: usize = 1024;

/// Errors that stop the daemon or a one-shot command.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The server loop failed.
    #[error("server: {0}")]
    Serve(std::io::Error),
    /// `dump --job` named a job the config does not have.
    #[error("no job named {0:?} in the config")]
    UnknownJob(String),
    /// `dump` gave up waiting for sources to complete a round.
    #[error("not synced after {seconds}s: {waiting}")]
    NotSynced {
        /// How long it waited.
        seconds: u64,
        /// The sources still syncing, with their problems.
        waiting: String,
    },
}

/// Discovery running in the background: the merger and its sources.
pub struct Discovery {
    /// The snapshot the merger publishes.
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    /// Metrics the merger and HTTP share.
    pub metrics: Arc<Metrics>,
    /// Cancels every source.
    pub shutdown: CancellationToken,
}

/// Starts the merger and every source of `config`.
pub fn start(config: &Config) -> Discovery {
    let metrics = Arc::new(Metrics::new());
    let shutdown = CancellationToken::new();
    let (tx, rx) = mpsc::channel(UPDATE_QUEUE);
    let placeholder = Snapshot {
        jobs: Vec::new(),
        by_name: Default::default(),
        all: crate::snapshot::Rendered::new(Bytes::from_static(b"[]"), 0, 0, None),
        all_ready: false,
        generation: 0,
    };
    let snapshot = Arc::new(ArcSwap::from_pointee(placeholder));
    let merger = Merger::new(config, snapshot.clone(), metrics.clone());
    tokio::spawn(merger.run(rx));
    for (j, job) in config.jobs.iter().enumerate() {
        for (index, source_config) in source::sources_of(job).into_iter().enumerate() {
            let out = Outbox::new(SourceId { job: j, index }, &job.job_name, tx.clone())
                .with_metrics(metrics.clone());
            tokio::spawn(source::run(source_config, out, shutdown.child_token()));
        }
    }
    Discovery {
        snapshot,
        metrics,
        shutdown,
    }
}

/// `sdbridge serve`: runs until SIGINT or SIGTERM.
pub async fn serve(config: Config, listen: Option<SocketAddr>) -> Result<(), RunError> {
    let addr = listen.unwrap_or(config.listen);
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| RunError::Bind { addr, source })?;
    let local = listener.local_addr().unwrap_or(addr);
    let discovery = start(&config);
    tracing::info!(addr = %local, jobs = config.jobs.len(), "listening");
    let state = Arc::new(AppState {
        snapshot: discovery.snapshot.clone(),
        metrics: discovery.metrics.clone(),
    });
    let result = http::run(listener, state, shutdown_signal()).await;
    discovery.shutdown.cancel();
    tracing::info!("stopped");
    result.map_err(RunError::Serve)
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
                _ = int.recv() => tracing::info!("SIGINT: shutting down"),
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// `sdbridge dump`: one discovery round of every source, then the body
/// that would be served (for `job`, or for all jobs).
pub async fn dump(
    config: Config,
    job: Option<&str>,
    timeout: std::time::Duration,
) -> Result<Bytes, RunError> {
    if let Some(name) = job {
        if !config.jobs.iter().any(|j| j.job_name == name) {
            return Err(RunError::UnknownJob(name.to_string()));
        }
    }
    let discovery = start(&config);
    let mut ticker = tokio::time::interval(std::time::Duration::from_millis(10));
    let deadline = tokio::time::Instant::now() + timeout;
    let body = loop {
        ticker.tick().await;
        let snapshot = discovery.snapshot.load();
        if tokio::time::Instant::now() > deadline {
            discovery.shutdown.cancel();
            let waiting: Vec<String> = snapshot
                .jobs
                .iter()
                .filter(|j| job.is_none_or(|name| j.name == name))
                .flat_map(|j| {
                    j.sources.iter().filter(|s| !s.synced).map(move |s| {
                        let problem = s.problem.as_deref().unwrap_or("no answer yet");
                        format!("job {:?} {}: {problem}", j.name, s.name)
                    })
                })
                .collect();
            return Err(RunError::NotSynced {
                seconds: timeout.as_secs(),
                waiting: waiting.join("; "),
            });
        }
        let rendered = match job {
            Some(name) => snapshot.job(name).filter(|j| j.ready).map(|j| &j.rendered),
            None => snapshot.all_ready.then_some(&snapshot.all),
        };
        if let Some(rendered) = rendered {
            break rendered.body.clone();
        }
    };
    discovery.shutdown.cancel();
    Ok(body)
}
