//! `dns_sd_configs`: names looked up every `refresh_interval`, as
//! Prometheus's `discovery/dns` looks them up, through the system's
//! resolver configuration (`/etc/resolv.conf`, re-read every round, as
//! Prometheus re-reads it) or sdbridge's `nameservers:`.
//!
//! A round looks every name up (8 at a time, async: no worker waits on the
//! network) and serves, in `names` order, each name's groups
//! ([`labels`]). A name that fails keeps its last good groups, as in
//! Prometheus, whose discovery manager keeps a group no round replaced.
//! The failure is shown (`source_up` 0, the status page, the log,
//! `sdbridge_source_errors_total{error="dns_..."}`) as the polling loop's
//! problem beside the round, since the round itself served. Until every
//! name has resolved once the round fails instead, so the job answers
//! 503 rather than serve a partial list at start.

pub mod config;
pub mod labels;
pub mod lookup;
pub mod resolv;

use std::path::Path;
use std::sync::{Arc, Mutex};

use futures_util::stream::{self, StreamExt};
use tokio::sync::watch;

pub use config::{DnsSdConfig, RecordKind};
use lookup::{Failure, Kind, Resolver};
use resolv::ResolvConf;

use super::{refresh, Source, SourceContext, SourceError, SourceFuture};
use crate::targetgroup::TargetGroup;

/// Names looked up at once.
const PARALLEL: usize = 8;
/// Names shown in the source's description.
const NAMES_SHOWN: usize = 3;
/// Failed names whose messages make up the source's error.
const MESSAGES_SHOWN: usize = 5;

impl Source for DnsSdConfig {
    fn kind(&self) -> &'static str {
        "dns_sd"
    }

    fn describe(&self) -> String {
        let mut names = self
            .names
            .iter()
            .take(NAMES_SHOWN)
            .cloned()
            .collect::<Vec<_>>()
            .join(", ");
        if self.names.len() > NAMES_SHOWN {
            names.push_str(&format!(" and {} more", self.names.len() - NAMES_SHOWN));
        }
        let via = match &self.nameservers {
            Some(s) => s
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            None => resolv::RESOLV_CONF.to_string(),
        };
        format!("dns_sd_configs {} {names} via {via}", self.record_type)
    }

    fn selects(&self) -> String {
        format!(
            "names={:?} type={} port={} nameservers={:?}",
            self.names, self.record_type, self.port, self.nameservers
        )
    }

    fn run(self: Arc<Self>, ctx: SourceContext) -> SourceFuture {
        Box::pin(async move {
            let (problem_tx, problem_rx) = watch::channel(None);
            let between = refresh::Between {
                wake: None,
                problem: Some(problem_rx),
            };
            let names = Arc::new(Names::new(&self.names));
            let (problem_tx, who) = (Arc::new(problem_tx), Who::of(&ctx));
            refresh::run(&ctx, self.refresh_interval.0, between, || {
                let (config, names, problem, who) =
                    (self.clone(), names.clone(), problem_tx.clone(), who.clone());
                async move { round(&config, &names, &problem, &who).await.map(Some) }
            })
            .await;
        })
    }
}

/// The job and source, for log lines.
#[derive(Debug, Clone)]
struct Who {
    job: Arc<str>,
    source: Arc<str>,
}

impl Who {
    fn of(ctx: &SourceContext) -> Who {
        Who {
            job: ctx.out.job.clone(),
            source: ctx.out.name.clone(),
        }
    }
}

/// The names of a block, each once (Prometheus keys groups by name, so a
/// repeated name is one group), with their last good groups.
struct Names {
    names: Vec<String>,
    last_good: Mutex<Vec<Option<Vec<TargetGroup>>>>,
}

impl Names {
    fn new(configured: &[String]) -> Names {
        let mut seen = std::collections::HashSet::new();
        let names: Vec<String> = configured
            .iter()
            .filter(|n| seen.insert(n.as_str()))
            .cloned()
            .collect();
        let last_good = Mutex::new(vec![None; names.len()]);
        Names { names, last_good }
    }
}

/// The resolver for this round: `nameservers:`, or `/etc/resolv.conf`
/// read now, off the async workers.
async fn resolver(config: &DnsSdConfig) -> Result<Resolver, Failure> {
    if let Some(servers) = &config.nameservers {
        return Ok(Resolver::given(servers));
    }
    let read = tokio::task::spawn_blocking(|| ResolvConf::load(Path::new(resolv::RESOLV_CONF)))
        .await
        .unwrap_or_else(|e| Err(format!("could not load resolv.conf: {e}")));
    let conf = read.map_err(|message| Failure {
        kind: Kind::ResolvConf,
        message,
    })?;
    Resolver::system(conf)
}

/// One round: every name looked up; the groups to serve, or the error
/// while some name has never resolved.
async fn round(
    config: &DnsSdConfig,
    names: &Names,
    problem: &watch::Sender<Option<SourceError>>,
    who: &Who,
) -> Result<Vec<TargetGroup>, SourceError> {
    let qtype = lookup::query_type(config.record_type);
    let results: Vec<Result<Vec<TargetGroup>, Failure>> = match resolver(config).await {
        Err(f) => names.names.iter().map(|_| Err(f.clone())).collect(),
        Ok(resolver) => {
            let resolver = Arc::new(resolver);
            // Owned futures, collected first: a lazy map over borrowed
            // names trips rustc's `Send` inference for the task.
            let lookups: Vec<_> = names
                .names
                .iter()
                .map(|name| {
                    let (name, resolver, who) = (name.clone(), resolver.clone(), who.clone());
                    let port = config.port;
                    async move {
                        let answers = lookup::lookup(&name, qtype, &resolver).await?;
                        Ok(labels::groups(&name, port, &answers, |record| {
                            tracing::warn!(
                                job = %who.job, source = %who.source, name, record = %record,
                                "invalid record"
                            );
                        }))
                    }
                })
                .collect();
            stream::iter(lookups).buffered(PARALLEL).collect().await
        }
    };
    let mut failed: Vec<Failure> = Vec::new();
    let mut last_good = names.last_good.lock().unwrap_or_else(|e| e.into_inner());
    for (slot, result) in last_good.iter_mut().zip(results) {
        match result {
            Ok(groups) => *slot = Some(groups),
            Err(f) => failed.push(f),
        }
    }
    let error = combine(&failed);
    if let Some(e) = &error {
        tracing::warn!(
            job = %who.job, source = %who.source, error = %e.message,
            "DNS lookup failed; the name's last good targets stay served"
        );
    }
    if last_good.iter().any(Option::is_none) {
        // Not every name has resolved yet: the round fails (reported by
        // the loop), nothing is served.
        return Err(error.unwrap_or_else(|| SourceError {
            kind: "dns_lookup",
            message: "a name has not resolved yet".into(),
        }));
    }
    // Reported (and counted) at once by the loop; a change to "no
    // problem" only when there was one.
    match error {
        Some(e) => {
            problem.send_replace(Some(e));
        }
        None => {
            problem.send_if_modified(|p| p.take().is_some());
        }
    }
    Ok(last_good.iter().flatten().flatten().cloned().collect())
}

/// One error for the names that failed: the first one's kind, the first
/// few messages.
fn combine(failed: &[Failure]) -> Option<SourceError> {
    let first = failed.first()?;
    let mut messages: Vec<&str> = failed.iter().map(|f| f.message.as_str()).collect();
    // One unreadable resolv.conf fails every name the same way.
    messages.dedup();
    let mut message = messages[..messages.len().min(MESSAGES_SHOWN)].join("; ");
    if messages.len() > MESSAGES_SHOWN {
        message.push_str(&format!("; and {} more", messages.len() - MESSAGES_SHOWN));
    }
    if messages.len() > 1 {
        message = format!("{} names failed: {message}", failed.len());
    }
    Some(SourceError {
        kind: first.kind.label(),
        message,
    })
}

#[cfg(test)]
mod tests;
