//! Sources: where targets come from. Each source runs as one tokio task,
//! `async fn run(config, id, out, shutdown)`, and sends full-replacement
//! [`Update`]s to the merger. A source never talks to HTTP clients; one set
//! of watches serves every client.

pub mod consul;
pub mod file;
pub mod sql;
pub mod r#static;

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::{ConsulSdConfig, FileSdConfig, JobConfig};
use crate::metrics::Metrics;
use crate::targetgroup::{Fragment, TargetGroup};

/// Which source of which job an update comes from: indexes into the
/// config's job list and into [`sources_of`] for that job.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SourceId {
    /// Index of the job in the config.
    pub job: usize,
    /// Index of the source within the job, in serving order.
    pub index: usize,
}

/// A configured source of one job.
#[derive(Debug, Clone)]
pub enum SourceConfig {
    /// All `static_configs` of a job, as one source (as in Prometheus).
    Static(Vec<TargetGroup>),
    /// One `file_sd_configs` entry.
    File(FileSdConfig),
    /// One `consul_sd_configs` entry (boxed: it is much larger than the
    /// others).
    Consul(Box<ConsulSdConfig>),
}

impl SourceConfig {
    /// Short name of the mechanism, used as a metric label.
    pub fn kind(&self) -> &'static str {
        match self {
            SourceConfig::Static(_) => "static",
            SourceConfig::File(_) => "file_sd",
            SourceConfig::Consul(_) => "consul_sd",
        }
    }

    /// Human description for the status page and logs.
    pub fn describe(&self) -> String {
        match self {
            SourceConfig::Static(groups) => format!("static_configs ({} groups)", groups.len()),
            SourceConfig::File(f) => format!("file_sd_configs {}", f.files.join(", ")),
            SourceConfig::Consul(c) => c.describe(),
        }
    }
}

/// The sources of a job in serving order: `static_configs` first, then each
/// `file_sd_configs` entry, then each `consul_sd_configs` entry, in config
/// order.
pub fn sources_of(job: &JobConfig) -> Vec<SourceConfig> {
    let mut sources = Vec::new();
    if !job.static_configs.is_empty() {
        sources.push(SourceConfig::Static(job.static_configs.clone()));
    }
    sources.extend(job.file_sd_configs.iter().cloned().map(SourceConfig::File));
    sources.extend(
        job.consul_sd_configs
            .iter()
            .cloned()
            .map(|c| SourceConfig::Consul(Box::new(c))),
    );
    sources
}

/// A named slice of a source's groups that is replaced as a whole: one file
/// for file_sd, one service for Consul, the whole list for static. Parts are
/// served in key order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// Stable sort key (the file path for file_sd, the service for Consul).
    pub key: String,
    /// The groups, serialized by the source; empty removes the part.
    /// Shared, not copied, between a source that keeps it (Consul's
    /// watcher) and the merger.
    pub fragment: Arc<Fragment>,
}

impl Part {
    /// A part holding `groups`.
    pub fn new(key: impl Into<String>, groups: &[TargetGroup]) -> Part {
        Part::serialized(key, Arc::new(Fragment::new(groups)))
    }

    /// A part holding groups already serialized.
    pub fn serialized(key: impl Into<String>, fragment: Arc<Fragment>) -> Part {
        Part {
            key: key.into(),
            fragment,
        }
    }

    /// The update that removes part `key`.
    pub fn removed(key: impl Into<String>) -> Part {
        Part::new(key, &[])
    }
}

/// How an update changes a source's parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Nothing changed (the round still counts for health and age).
    None,
    /// These parts are all the source has now.
    Replace(Vec<Part>),
    /// Only these parts changed; others stay as they are.
    Patch(Vec<Part>),
}

/// An error met during one discovery round, counted once in metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceError {
    /// Error class, a metric label: `read`, `parse`, `watch`, ...
    pub kind: &'static str,
    /// Full message, with file:line:col where there is one.
    pub message: String,
}

/// What a source reports after each discovery round.
#[derive(Debug, Clone)]
pub struct Update {
    /// Who sends it.
    pub source: SourceId,
    /// The change to its groups.
    pub change: Change,
    /// Whether the source has completed a full round, so its job may be
    /// served (before that the job answers 503).
    pub synced: bool,
    /// The problem the source has now, if any (its last good groups keep
    /// being served meanwhile).
    pub problem: Option<String>,
    /// Errors met in this round.
    pub errors: Vec<SourceError>,
}

/// Where a source sends its updates, and who it is (for logs).
#[derive(Debug, Clone)]
pub struct Outbox {
    /// The source's identity in the merger.
    pub id: SourceId,
    /// The job's name, for logs.
    pub job: Arc<str>,
    tx: mpsc::Sender<Update>,
    /// Metrics for sources that record their own (Consul requests).
    metrics: Option<Arc<Metrics>>,
}

/// The merger is gone: the source should stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closed;

impl Outbox {
    /// An outbox for source `id` of job `job`.
    pub fn new(id: SourceId, job: &str, tx: mpsc::Sender<Update>) -> Outbox {
        Outbox {
            id,
            job: job.into(),
            tx,
            metrics: None,
        }
    }

    /// The same outbox, giving sources `metrics` to record into.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Outbox {
        self.metrics = Some(metrics);
        self
    }

    /// The metrics sources record into, if any.
    pub fn metrics(&self) -> Option<&Arc<Metrics>> {
        self.metrics.as_ref()
    }

    /// Sends one round's outcome (its `source` is filled in).
    pub async fn send(&self, mut update: Update) -> Result<(), Closed> {
        update.source = self.id;
        self.tx.send(update).await.map_err(|_| Closed)
    }
}

/// Runs `config` until `shutdown` is cancelled or the merger is gone.
pub async fn run(config: SourceConfig, out: Outbox, shutdown: CancellationToken) {
    match config {
        SourceConfig::Static(groups) => r#static::run(groups, out, shutdown).await,
        SourceConfig::File(file_sd) => file::run(file_sd, out, shutdown).await,
        SourceConfig::Consul(consul_sd) => consul::run(*consul_sd, out, shutdown).await,
    }
}
