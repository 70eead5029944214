//! Sources: where targets come from.
//!
//! Each configured source is one [`Source`]: a kind (`file_sd`, ...), a
//! description, and a `run` that sends full-replacement [`Update`]s of
//! pre-serialized parts to the merger through its [`SourceContext`]. A
//! source never talks to HTTP clients; one set of watches serves every
//! client. Adding a kind means implementing [`Source`] in its own module
//! and listing its config in [`sources_of`].
//!
//! [`supervise`] runs a source: a task that ends unexpectedly or panics is
//! reported (its last good groups stay served) and restarted with backoff.
//! [`refresh`] is the loop polling sources share.

pub mod consul;
pub mod dns;
pub mod file;
pub mod http_sd;
pub mod refresh;
pub mod registry;
pub mod sql;
pub mod r#static;
mod supervise;

use std::any::Any;
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::JobConfig;
use crate::metrics::{Metrics, SourceLabels};
pub use crate::pipeline::{Change, Message, Part, SlotId, SourceError, Update};
pub use supervise::supervise;

/// A future a source runs as.
pub type SourceFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// One kind of source, as configured: Prometheus's discoverer `Config`.
/// A kind implements this and `PartialEq` (for [`Configured::same`]).
pub trait Source: fmt::Debug + Send + Sync + 'static {
    /// Short name of the mechanism, a metric label (`file_sd`).
    fn kind(&self) -> &'static str;
    /// Human description for the status page and logs (no secrets).
    fn describe(&self) -> String;
    /// What selects the data this source reads, printed: the fields whose
    /// change could change the targets (server or DSN target, files,
    /// query, services, filters, ...), and no tuning field (intervals,
    /// timeouts, limits) and no credential. `state_dir` serves a persisted
    /// body only to a job whose sources select the same data.
    fn selects(&self) -> String;
    /// Runs until `ctx.shutdown` is cancelled or the merger is gone. A
    /// return before that counts as a failure and the source is restarted.
    fn run(self: Arc<Self>, ctx: SourceContext) -> SourceFuture;
}

/// A source as the runtime holds it: comparable with another of any kind.
pub trait Configured: Source {
    /// The config as `Any`, for [`Configured::same`].
    fn as_any(&self) -> &dyn Any;
    /// Whether `other` has exactly this configuration, secrets included:
    /// a reload keeps such a source running.
    fn same(&self, other: &dyn Configured) -> bool;
}

impl<T: Source + PartialEq> Configured for T {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn same(&self, other: &dyn Configured) -> bool {
        other.as_any().downcast_ref::<T>() == Some(self)
    }
}

/// A configured source of one job.
pub type SourceConfig = Arc<dyn Configured>;

/// What [`crate::state::job_key`] needs of `sources`: each one's kind and
/// what selects its data.
pub fn key_parts(sources: &[SourceConfig]) -> Vec<(&'static str, String)> {
    sources.iter().map(|s| (s.kind(), s.selects())).collect()
}

/// The sources of a job in serving order: `static_configs` first (all as
/// one source, as Prometheus treats them), then each `file_sd_configs`,
/// `consul_sd_configs`, `dns_sd_configs`, `sql_sd_configs`,
/// `http_sd_configs` entry, in config
/// order (contract section 5).
pub fn sources_of(job: &JobConfig) -> Vec<SourceConfig> {
    registry::KINDS
        .iter()
        .flat_map(|kind| (kind.sources)(job))
        .collect()
}

/// Each source's name within its job, its `source` metric label: the kind
/// and a hash of its configuration as `Debug` prints it (secrets
/// redacted), so it stays the same when other entries are reordered and
/// reveals nothing. Identical entries get `.1`, `.2`, ... after the first.
pub fn source_names(sources: &[SourceConfig]) -> Vec<String> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    sources
        .iter()
        .map(|s| {
            let hash = xxhash_rust::xxh3::xxh3_64(format!("{s:?}").as_bytes());
            let base = format!("{}#{:08x}", s.kind(), hash >> 32);
            let n = seen.entry(base.clone()).or_default();
            *n += 1;
            if *n == 1 {
                base
            } else {
                format!("{base}.{}", *n - 1)
            }
        })
        .collect()
}

/// What a running source gets: who it is, where to send, when to stop.
/// (Vector's `SourceContext`.)
#[derive(Debug, Clone)]
pub struct SourceContext {
    /// Where its updates go, and its identity for logs and metrics.
    pub out: Outbox,
    /// What sources of the runtime share (Consul's watchers).
    pub shared: Arc<Shared>,
    /// Cancelled when the source is removed by a reload or on shutdown.
    pub shutdown: CancellationToken,
}

/// What the sources of one runtime share, kept across reloads: one set of
/// Consul watches however many jobs use the same settings.
#[derive(Debug, Default)]
pub struct Shared {
    /// The running Consul watchers, by settings.
    pub consul: consul::Watchers,
}

/// Where a source sends its updates, and who it is (for logs and metrics).
#[derive(Debug, Clone)]
pub struct Outbox {
    /// The source's slot in the merger.
    pub id: SlotId,
    /// The job's name, for logs.
    pub job: Arc<str>,
    /// The source's name within the job ([`source_names`]), its metric
    /// label.
    pub name: Arc<str>,
    /// The source's mechanism, a metric label.
    pub kind: &'static str,
    tx: mpsc::Sender<Message>,
    /// Metrics for sources that record their own (Consul requests).
    metrics: Option<Arc<Metrics>>,
}

/// The merger is gone: the source should stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closed;

impl Outbox {
    /// An outbox for the source in slot `id`, named `name` (see
    /// [`source_names`]), of job `job`.
    pub fn new(
        id: SlotId,
        job: &str,
        (name, kind): (&str, &'static str),
        tx: mpsc::Sender<Message>,
    ) -> Outbox {
        Outbox {
            id,
            job: job.into(),
            name: name.into(),
            kind,
            tx,
            metrics: None,
        }
    }

    /// The source's metric labels.
    pub fn labels(&self) -> SourceLabels {
        SourceLabels {
            job: self.job.to_string(),
            source: self.name.to_string(),
            kind: self.kind.to_string(),
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

    /// Says what the source waits for (`None`: nothing any more).
    pub async fn waiting(&self, what: Option<String>) -> Result<(), Closed> {
        self.tx
            .send(Message::Waiting(self.id, what))
            .await
            .map_err(|_| Closed)
    }

    /// Sends one round's outcome (its `source` is filled in).
    pub async fn send(&self, mut update: Update) -> Result<(), Closed> {
        update.source = self.id;
        self.tx
            .send(Message::Update(update))
            .await
            .map_err(|_| Closed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn names(text: &str) -> Vec<String> {
        let config = Config::parse(text, std::path::Path::new("/etc/s.yml")).unwrap();
        source_names(&sources_of(&config.jobs[0]))
    }

    #[test]
    fn a_source_keeps_its_name_when_others_are_reordered() {
        let ab = names(
            "jobs:\n  - job_name: j\n    file_sd_configs: [{files: [a.json]}, {files: [b.json]}]\n",
        );
        let ba = names(
            "jobs:\n  - job_name: j\n    file_sd_configs: [{files: [b.json]}, {files: [a.json]}]\n",
        );
        assert_eq!((&ab[0], &ab[1]), (&ba[1], &ba[0]));
        assert_ne!(ab[0], ab[1]);
        assert!(ab[0].starts_with("file_sd#"), "{ab:?}");
        let twice = names(
            "jobs:\n  - job_name: j\n    file_sd_configs: [{files: [a.json]}, {files: [a.json]}]\n",
        );
        assert_eq!(twice[1], format!("{}.1", twice[0]));
    }

    /// Contract section 5's source order, whatever order the blocks are
    /// written in.
    #[test]
    fn sources_are_in_the_contract_s_order() {
        let config = Config::parse(
            "jobs:\n  - job_name: j\n    http_sd_configs: [{url: 'http://127.0.0.1:1/'}]\n    sql_sd_configs: [{dsn: 'sqlite://inv.db', query: q}]\n    dns_sd_configs: [{names: [a]}, {names: [b]}]\n    consul_sd_configs: [{server: '127.0.0.1:8500'}]\n    file_sd_configs: [{files: [a.json]}]\n    static_configs: [{targets: ['127.0.0.1:1']}]\n",
            std::path::Path::new("/etc/s.yml"),
        )
        .unwrap();
        let sources = sources_of(&config.jobs[0]);
        let kinds: Vec<&str> = sources.iter().map(|s| s.kind()).collect();
        assert_eq!(
            kinds,
            [
                "static",
                "file_sd",
                "consul_sd",
                "dns_sd",
                "dns_sd",
                "sql_sd",
                "http_sd"
            ]
        );
        assert!(sources[3].describe().ends_with(" a via /etc/resolv.conf"));
    }

    #[test]
    fn names_reveal_no_secret_but_configs_compare_secrets() {
        let config = |token: &str| {
            let text = format!("jobs:\n  - job_name: j\n    consul_sd_configs: [{{server: '127.0.0.1:8500', token: {token}}}]\n");
            let c = Config::parse(&text, std::path::Path::new("/etc/s.yml")).unwrap();
            sources_of(&c.jobs[0])
        };
        let (a, b) = (config("s3cret-one"), config("s3cret-two"));
        assert_eq!(
            source_names(&a),
            source_names(&b),
            "the label hides the token"
        );
        assert!(!format!("{:?}", a[0]).contains("s3cret"));
        assert!(!a[0].same(&*b[0]), "a changed token restarts the source");
        assert!(a[0].same(&*config("s3cret-one")[0]));
    }
}
