//! `/metrics` (CONTRACT section 6), all names prefixed `sdbridge_`.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::snapshot::{Rendered, Snapshot, SourceStatus};

/// Identifies one source of one job.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    /// Job name.
    pub job: String,
    /// Source name within the job (`file_sd#0`).
    pub source: String,
    /// Mechanism (`static`, `file_sd`).
    pub kind: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    job: String,
    source: String,
    kind: String,
    error: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
    /// The commit built, `unknown` outside a git checkout.
    revision: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AnswerLabels {
    /// `shard` or `targets_page`.
    what: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobLabels {
    job: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    path: String,
    code: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConsulRequestLabels {
    endpoint: String,
    code: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConsulEndpointLabels {
    endpoint: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefreshLabels {
    job: String,
    source: String,
    kind: String,
    /// `success` or `error`.
    outcome: String,
}

fn refresh_histogram() -> Histogram {
    // 1 ms .. ~4.4 min.
    Histogram::new(exponential_buckets(0.001, 4.0, 10))
}

fn answer_build_histogram() -> Histogram {
    // 0.1 ms .. ~26 s, as snapshot rebuilds.
    Histogram::new(exponential_buckets(0.0001, 4.0, 10))
}

fn consul_duration_histogram() -> Histogram {
    // 1 ms .. ~4.4 min: blocking queries last up to wait + wait/16.
    Histogram::new(exponential_buckets(0.001, 4.0, 10))
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// Every metric sdbridge exports, registered once.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    source_up: Family<SourceLabels, Gauge>,
    source_last_success: Family<SourceLabels, FloatGauge>,
    source_data_age: Family<SourceLabels, FloatGauge>,
    source_errors: Family<ErrorLabels, Counter>,
    source_groups: Family<SourceLabels, Gauge>,
    source_targets: Family<SourceLabels, Gauge>,
    job_ready: Family<JobLabels, Gauge>,
    job_groups: Family<JobLabels, Gauge>,
    job_targets: Family<JobLabels, Gauge>,
    job_body_bytes: Family<JobLabels, Gauge>,
    job_from_state: Family<JobLabels, Gauge>,
    state_writes: Family<JobLabels, Counter>,
    state_write_errors: Family<JobLabels, Counter>,
    rebuilds: Counter,
    rebuild_seconds: Histogram,
    requests: Family<RequestLabels, Counter>,
    consul_requests: Family<ConsulRequestLabels, Counter>,
    consul_request_seconds: Family<ConsulEndpointLabels, Histogram, fn() -> Histogram>,
    file_sd_scans: Family<SourceLabels, Counter>,
    refresh_seconds: Family<RefreshLabels, Histogram, fn() -> Histogram>,
    upstream_requests: Family<RefreshLabels, Counter>,
    sql_rows: Family<SourceLabels, Gauge>,
    upstream_seconds: Family<SourceLabels, Histogram, fn() -> Histogram>,
    file_sd_reads: Family<SourceLabels, Counter>,
    file_sd_polling: Family<SourceLabels, Gauge>,
    source_waiting: Family<SourceLabels, Gauge>,
    /// Work on the blocking pool to answer one request (a shard's cut, a
    /// targets page), so an alert can tell when it grows long.
    answer_build_seconds: Family<AnswerLabels, Histogram, fn() -> Histogram>,
    /// 0 while the last reload failed (the previous config still serves).
    reload_ok: Gauge,
    /// When the running config was loaded, at start or by a reload.
    reload_ok_time: FloatGauge,
    /// Label values seen per source, so a removed source's series can be
    /// removed too (a `Family` cannot be listed).
    seen: Mutex<HashMap<SourceLabels, Seen>>,
}

/// The per-source label values of a source's series beyond its own labels.
#[derive(Debug, Default)]
struct Seen {
    /// `error` values of `source_errors_total`.
    errors: HashSet<String>,
    /// `outcome` values of `http_sd_requests_total`.
    outcomes: HashSet<String>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Creates and registers all metrics.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("sdbridge");
        let m = Metrics {
            source_up: Family::default(),
            source_last_success: Family::default(),
            source_data_age: Family::default(),
            source_errors: Family::default(),
            source_groups: Family::default(),
            source_targets: Family::default(),
            job_ready: Family::default(),
            job_groups: Family::default(),
            job_targets: Family::default(),
            job_body_bytes: Family::default(),
            job_from_state: Family::default(),
            state_writes: Family::default(),
            state_write_errors: Family::default(),
            rebuilds: Counter::default(),
            rebuild_seconds: Histogram::new(exponential_buckets(0.0001, 4.0, 10)),
            requests: Family::default(),
            consul_requests: Family::default(),
            consul_request_seconds: Family::new_with_constructor(
                consul_duration_histogram as fn() -> Histogram,
            ),
            file_sd_scans: Family::default(),
            refresh_seconds: Family::new_with_constructor(refresh_histogram as fn() -> Histogram),
            upstream_requests: Family::default(),
            sql_rows: Family::default(),
            upstream_seconds: Family::new_with_constructor(refresh_histogram as fn() -> Histogram),
            file_sd_reads: Family::default(),
            file_sd_polling: Family::default(),
            source_waiting: Family::default(),
            answer_build_seconds: Family::new_with_constructor(
                answer_build_histogram as fn() -> Histogram,
            ),
            reload_ok: Gauge::default(),
            reload_ok_time: FloatGauge::default(),
            seen: Mutex::default(),
            registry: Registry::default(),
        };
        registry.register(
            "source_up",
            "1 if the source's last discovery round had no problem, else 0 (its last good targets are still served)",
            m.source_up.clone(),
        );
        registry.register(
            "source_last_success_timestamp_seconds",
            "Unix time of the source's last round without a problem",
            m.source_last_success.clone(),
        );
        registry.register(
            "source_data_age_seconds",
            "Seconds since the source's data last came from a round without a problem",
            m.source_data_age.clone(),
        );
        registry.register(
            "source_errors",
            "Errors met by a source, by error kind (parse errors of file_sd files are kind=\"parse\")",
            m.source_errors.clone(),
        );
        registry.register(
            "source_groups",
            "Target groups served from the source",
            m.source_groups.clone(),
        );
        registry.register(
            "source_targets",
            "Targets served from the source",
            m.source_targets.clone(),
        );
        registry.register(
            "job_ready",
            "1 once every source of the job has synced (before that the job answers 503)",
            m.job_ready.clone(),
        );
        registry.register(
            "job_groups",
            "Target groups served for the job",
            m.job_groups.clone(),
        );
        registry.register(
            "job_targets",
            "Targets served for the job",
            m.job_targets.clone(),
        );
        registry.register(
            "job_body_bytes",
            "Size of the job's uncompressed HTTP SD body",
            m.job_body_bytes.clone(),
        );
        registry.register(
            "job_from_state",
            "1 while the job serves the body read from state_dir at start (ready; its sources have not all synced yet)",
            m.job_from_state.clone(),
        );
        registry.register(
            "state_writes",
            "Bodies of the job written to state_dir (at most one a second per job)",
            m.state_writes.clone(),
        );
        registry.register(
            "state_write_errors",
            "Failed writes of the job's body to state_dir",
            m.state_write_errors.clone(),
        );
        registry.register(
            "snapshot_rebuilds",
            "Snapshots published by the merger",
            m.rebuilds.clone(),
        );
        registry.register(
            "snapshot_rebuild_duration_seconds",
            "Time to re-render changed bodies and publish a snapshot",
            m.rebuild_seconds.clone(),
        );
        registry.register(
            "http_requests",
            "HTTP requests by path and status code",
            m.requests.clone(),
        );
        registry.register(
            "consul_requests",
            "Requests to Consul by endpoint and HTTP status code (\"error\" or \"timeout\" when there was no response)",
            m.consul_requests.clone(),
        );
        registry.register(
            "consul_request_duration_seconds",
            "Duration of requests to Consul by endpoint (blocking queries last up to their wait time)",
            m.consul_request_seconds.clone(),
        );
        registry.register(
            "file_sd_scans",
            "Rescans of a file_sd source's directory listings (at idle this does not move)",
            m.file_sd_scans.clone(),
        );
        registry.register(
            "file_sd_reads",
            "file_sd files read and parsed (only files that changed, and all of them every refresh_interval)",
            m.file_sd_reads.clone(),
        );
        registry.register(
            "sql_rows",
            "Rows the last successful query of an sql_sd source returned",
            m.sql_rows.clone(),
        );
        registry.register(
            "http_sd_requests",
            "Requests of http_sd sources to their upstream, by HTTP status code (outcome; \"error\" or \"timeout\" without a response)",
            m.upstream_requests.clone(),
        );
        registry.register(
            "http_sd_request_duration_seconds",
            "Duration of requests of http_sd sources to their upstream",
            m.upstream_seconds.clone(),
        );
        registry.register(
            "file_sd_polling",
            "1 while a file_sd source polls (every 5 s) because a directory could not be watched, e.g. at the inotify watch limit",
            m.file_sd_polling.clone(),
        );
        registry.register(
            "source_waiting",
            "1 while the source waits for one of the request slots it shares with every other source of its server (http_sd), else 0",
            m.source_waiting.clone(),
        );
        registry.register(
            "source_refresh_duration_seconds",
            "Duration of the refresh rounds of polling sources (sql_sd, http_sd, dns_sd), by outcome",
            m.refresh_seconds.clone(),
        );
        registry.register(
            "answer_build_duration_seconds",
            "Work to build one answer off the async workers: a shard's cut (what=\"shard\") or a targets page (what=\"targets_page\")",
            m.answer_build_seconds.clone(),
        );
        // As Prometheus's `prometheus_config_last_reload_*`.
        m.reload_ok.set(1);
        m.reload_ok_time.set(unix_seconds(SystemTime::now()));
        registry.register(
            "config_last_reload_successful",
            "1 if the last reload (SIGHUP, POST /-/reload) loaded the config, 0 if it failed and the previous config still serves",
            m.reload_ok.clone(),
        );
        registry.register(
            "config_last_reload_success_timestamp_seconds",
            "Unix time the running config was loaded (at start or by a reload)",
            m.reload_ok_time.clone(),
        );
        // Set once: a change of it is a restart (alerts count them).
        let start_time = FloatGauge::default();
        start_time.set(unix_seconds(SystemTime::now()));
        registry.register(
            "start_time_seconds",
            "Unix time the process started",
            start_time,
        );
        // Constant 1, its labels saying which build runs (as Prometheus's
        // own `prometheus_build_info`).
        let build_info: Family<BuildLabels, Gauge> = Family::default();
        build_info
            .get_or_create(&BuildLabels {
                version: crate::version::VERSION.to_string(),
                revision: crate::version::REVISION.to_string(),
            })
            .set(1);
        registry.register(
            "build_info",
            "A metric with a constant '1' value labeled by the version of sdbridge and the commit it was built from",
            build_info,
        );
        Metrics { registry, ..m }
    }

    /// The labels of `status` under `job`.
    pub fn source_labels(&self, job: &str, status: &SourceStatus) -> SourceLabels {
        SourceLabels {
            job: job.to_string(),
            source: status.name.clone(),
            kind: status.kind.to_string(),
        }
    }

    /// Runs `f` on the label values seen for `labels`.
    fn seen_of<T>(&self, labels: &SourceLabels, f: impl FnOnce(&mut Seen) -> T) -> T {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        f(seen.entry(labels.clone()).or_default())
    }

    /// Removes every series of a source a reload removed.
    pub fn forget_source(&self, labels: &SourceLabels) {
        self.source_up.remove(labels);
        self.source_last_success.remove(labels);
        self.source_data_age.remove(labels);
        self.source_groups.remove(labels);
        self.source_targets.remove(labels);
        self.file_sd_scans.remove(labels);
        self.file_sd_reads.remove(labels);
        self.file_sd_polling.remove(labels);
        self.source_waiting.remove(labels);
        let seen = self
            .seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(labels)
            .unwrap_or_default();
        self.upstream_seconds.remove(labels);
        self.sql_rows.remove(labels);
        let with = |value: String| RefreshLabels {
            job: labels.job.clone(),
            source: labels.source.clone(),
            kind: labels.kind.clone(),
            outcome: value,
        };
        for outcome in seen.outcomes {
            self.upstream_requests.remove(&with(outcome));
        }
        for error in seen.errors {
            self.source_errors.remove(&ErrorLabels {
                job: labels.job.clone(),
                source: labels.source.clone(),
                kind: labels.kind.clone(),
                error,
            });
        }
        for outcome in ["success", "error"] {
            self.refresh_seconds.remove(&with(outcome.to_string()));
        }
    }

    /// Removes every series of a job a reload removed.
    pub fn forget_job(&self, job: &str) {
        let labels = JobLabels {
            job: job.to_string(),
        };
        self.job_ready.remove(&labels);
        self.job_groups.remove(&labels);
        self.job_targets.remove(&labels);
        self.job_body_bytes.remove(&labels);
        self.job_from_state.remove(&labels);
        self.state_writes.remove(&labels);
        self.state_write_errors.remove(&labels);
    }

    /// Counts one error of `kind`.
    pub fn source_error(&self, labels: &SourceLabels, kind: &str) {
        self.seen_of(labels, |seen| seen.errors.insert(kind.to_string()));
        self.source_errors
            .get_or_create(&ErrorLabels {
                job: labels.job.clone(),
                source: labels.source.clone(),
                kind: labels.kind.clone(),
                error: kind.to_string(),
            })
            .inc();
    }

    /// Records a source's state after an update.
    pub fn source_state(&self, labels: &SourceLabels, status: &SourceStatus) {
        self.source_up
            .get_or_create(labels)
            .set(i64::from(status.problem.is_none() && status.synced));
        self.source_waiting
            .get_or_create(labels)
            .set(i64::from(status.waiting.is_some()));
        if let Some(t) = status.last_success {
            self.source_last_success
                .get_or_create(labels)
                .set(unix_seconds(t));
        }
        self.source_groups
            .get_or_create(labels)
            .set(status.groups as i64);
        self.source_targets
            .get_or_create(labels)
            .set(status.targets as i64);
    }

    /// Records a job's state after a publish.
    pub fn job_state(&self, job: &str, ready: bool, from_state: bool, rendered: &Rendered) {
        let labels = JobLabels {
            job: job.to_string(),
        };
        self.job_ready.get_or_create(&labels).set(i64::from(ready));
        self.job_from_state
            .get_or_create(&labels)
            .set(i64::from(from_state));
        self.job_groups
            .get_or_create(&labels)
            .set(rendered.groups as i64);
        self.job_targets
            .get_or_create(&labels)
            .set(rendered.targets as i64);
        self.job_body_bytes
            .get_or_create(&labels)
            .set(rendered.body.len() as i64);
    }

    /// Counts one write of a job's state file, or one failed write.
    pub fn state_written(&self, job: &str, ok: bool) {
        let labels = JobLabels {
            job: job.to_string(),
        };
        if ok {
            self.state_writes.get_or_create(&labels).inc();
            // At 0 from the first write on, so `increase()` sees the
            // first failure (a series born at 1 shows no increase).
            let _ = self.state_write_errors.get_or_create(&labels);
        } else {
            self.state_write_errors.get_or_create(&labels).inc();
        }
    }

    /// Counts one snapshot publish.
    pub fn rebuilt(&self, took: Duration) {
        self.rebuilds.inc();
        self.rebuild_seconds.observe(took.as_secs_f64());
    }

    /// Counts one file_sd rescan that read `reads` files.
    pub fn file_sd_scan(&self, labels: &SourceLabels, reads: u64) {
        self.file_sd_scans.get_or_create(labels).inc();
        self.file_sd_reads.get_or_create(labels).inc_by(reads);
    }

    /// Counts one request of an http_sd source to its upstream.
    pub fn upstream_request(&self, labels: &SourceLabels, code: &str, took: Duration) {
        self.seen_of(labels, |seen| seen.outcomes.insert(code.to_string()));
        self.upstream_requests
            .get_or_create(&RefreshLabels {
                job: labels.job.clone(),
                source: labels.source.clone(),
                kind: labels.kind.clone(),
                outcome: code.to_string(),
            })
            .inc();
        self.upstream_seconds
            .get_or_create(labels)
            .observe(took.as_secs_f64());
    }

    /// Records the rows of an sql_sd source's last successful query.
    pub fn sql_rows(&self, labels: &SourceLabels, rows: usize) {
        self.sql_rows.get_or_create(labels).set(rows as i64);
    }

    /// Records one refresh round of a polling source.
    pub fn refresh_round(&self, labels: &SourceLabels, took: Duration, ok: bool) {
        self.refresh_seconds
            .get_or_create(&RefreshLabels {
                job: labels.job.clone(),
                source: labels.source.clone(),
                kind: labels.kind.clone(),
                outcome: if ok { "success" } else { "error" }.to_string(),
            })
            .observe(took.as_secs_f64());
    }

    /// Whether a file_sd source polls for lack of watches.
    pub fn file_sd_polling(&self, labels: &SourceLabels, polling: bool) {
        self.file_sd_polling
            .get_or_create(labels)
            .set(i64::from(polling));
    }

    /// Records the outcome of a reload.
    pub fn reloaded(&self, ok: bool) {
        self.reload_ok.set(i64::from(ok));
        if ok {
            self.reload_ok_time.set(unix_seconds(SystemTime::now()));
        }
    }

    /// Records the work of building one answer off the async workers;
    /// `what` is `shard` or `targets_page`.
    pub fn answer_built(&self, what: &str, took: Duration) {
        self.answer_build_seconds
            .get_or_create(&AnswerLabels {
                what: what.to_string(),
            })
            .observe(took.as_secs_f64());
    }

    /// Counts one HTTP request.
    pub fn request(&self, path: &str, code: u16) {
        self.requests
            .get_or_create(&RequestLabels {
                path: path.to_string(),
                code: code.to_string(),
            })
            .inc();
    }

    /// Counts one request to Consul's `endpoint` that ended with `code`
    /// (an HTTP status, or `error`/`timeout`) after `took`.
    pub fn consul_request(&self, endpoint: &str, code: &str, took: Duration) {
        self.consul_requests
            .get_or_create(&ConsulRequestLabels {
                endpoint: endpoint.to_string(),
                code: code.to_string(),
            })
            .inc();
        self.consul_request_seconds
            .get_or_create(&ConsulEndpointLabels {
                endpoint: endpoint.to_string(),
            })
            .observe(took.as_secs_f64());
    }

    /// The exposition in the format `accept` asks for (as Prometheus's
    /// client libraries negotiate it): OpenMetrics when it names
    /// `application/openmetrics-text`, else the text format 0.0.4. Returns
    /// the content type and the text.
    pub fn exposition(&self, snapshot: &Snapshot, accept: &str) -> (&'static str, String) {
        let openmetrics = self.encode(snapshot);
        if accept.contains("application/openmetrics-text") {
            (OPENMETRICS_TYPE, openmetrics)
        } else {
            (TEXT_004_TYPE, text_004(&openmetrics))
        }
    }

    /// The OpenMetrics exposition, with data ages computed from
    /// `snapshot` now. A job served from `state_dir` serves data as old as
    /// that body, whatever its sources did since the restart.
    pub fn encode(&self, snapshot: &Snapshot) -> String {
        let now = SystemTime::now();
        for job in &snapshot.jobs {
            let restored = job.from_state.then_some(job.rendered.last_modified);
            for source in &job.sources {
                let labels = self.source_labels(&job.name, source);
                match restored.or(source.last_success) {
                    Some(t) => {
                        let age = now.duration_since(t).unwrap_or_default().as_secs_f64();
                        self.source_data_age.get_or_create(&labels).set(age);
                    }
                    None => {
                        self.source_data_age.remove(&labels);
                    }
                }
            }
        }
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// Content type of the OpenMetrics exposition.
pub const OPENMETRICS_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Content type of the Prometheus text format 0.0.4.
pub const TEXT_004_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The Prometheus text format 0.0.4 of an OpenMetrics text from
/// prometheus-client (which writes only OpenMetrics): a counter family is
/// named with its `_total` in `# HELP` and `# TYPE`, as its samples are,
/// and `# UNIT` and `# EOF` go. Everything else is the same in both.
pub fn text_004(openmetrics: &str) -> String {
    let counters: HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = line
            .strip_prefix("# HELP ")
            .map(|rest| ("# HELP ", rest))
            .or_else(|| line.strip_prefix("# TYPE ").map(|rest| ("# TYPE ", rest)));
        if let Some((kind, rest)) = meta {
            let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            if counters.contains(name) {
                out.push_str(&format!("{kind}{name}_total {tail}\n"));
                continue;
            }
        }
        if counters.iter().any(|c| {
            line.strip_prefix(c)
                .is_some_and(|r| r.starts_with("_created"))
        }) {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_004_names_counters_with_total_and_has_no_eof() {
        let om = "# HELP a_requests Requests.\n# TYPE a_requests counter\na_requests_total{x=\"1\"} 2\na_requests_created 1.5\n# HELP b Up.\n# TYPE b gauge\n# UNIT b seconds\nb 1\n# EOF\n";
        assert_eq!(
            text_004(om),
            "# HELP a_requests_total Requests.\n# TYPE a_requests_total counter\na_requests_total{x=\"1\"} 2\n# HELP b Up.\n# TYPE b gauge\nb 1\n"
        );
    }
}
