//! The sdbridge configuration file (CONTRACT section 3).
//!
//! The SD blocks under a job use Prometheus's field names, defaults and
//! semantics so they can be pasted from `prometheus.yml` unchanged. Parsing
//! is strict: unknown keys, wrong types, duplicate job names, bad globs and
//! invalid label names are errors with `file:line:column`.

mod job;
pub mod refuse;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::de::Deserializer;
use serde::Deserialize;

use crate::duration::PromDuration;
use crate::gopath;
use crate::size::ByteSize;
pub use crate::source::consul::config::ConsulSdConfig;
pub use crate::source::dns::DnsSdConfig;
pub use crate::source::file::config::{check_file_pattern, FileSdConfig};
pub use crate::source::http_sd::HttpSdConfig;
pub use crate::source::sql::SqlSdConfig;
use crate::web::WebConfig;
use crate::yaml;
pub use job::JobConfig;

/// Address the daemon listens on when neither the config nor `--listen`
/// says otherwise: loopback, so nothing is exposed by accident.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9412";

/// A configuration error, always naming the file and, where the error is
/// tied to a place in it, the line and column.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The config file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The file is not a valid configuration.
    #[error("{path}:{line}:{column}: {message}")]
    Invalid {
        /// The config file.
        path: PathBuf,
        /// 1-based line (0 when unknown).
        line: usize,
        /// 1-based column (0 when unknown).
        column: usize,
        /// What is wrong.
        message: String,
    },
}

/// The whole configuration file.
// `NotSupported` fields are rejected while parsing and never hold a value.
#[allow(dead_code)]
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where to serve HTTP SD. Default `127.0.0.1:9412`; `--listen`
    /// overrides it.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Web server settings: TLS, basic auth, bearer tokens, headers
    /// (exporter-toolkit's web-config schema, inline). Default: plain HTTP,
    /// no credentials.
    #[serde(default)]
    pub web: WebConfig,
    /// The jobs, served at `/http_sd/<job_name>` and, concatenated in this
    /// order, at `/http_sd`.
    #[serde(default)]
    pub jobs: Vec<JobConfig>,
    /// Bounds on input (CONTRACT section 3).
    #[serde(default)]
    pub limits: Limits,
    /// Where each job's last good body is persisted, to be served at start
    /// until its sources sync ([`crate::state`]). Default: none, nothing
    /// is persisted. Relative to the config file's directory.
    #[serde(default, deserialize_with = "deserialize_state_dir")]
    pub state_dir: Option<PathBuf>,
    /// Directory relative paths are resolved against: Go's
    /// `filepath.Dir` of the config path as given, exactly as Prometheus
    /// does, so `__meta_filepath` comes out the same.
    #[serde(skip)]
    pub base_dir: String,
}

fn deserialize_state_dir<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    yaml::parse_str(d, |s| match s {
        "" => Err("must not be empty".to_string()),
        s => Ok(Some(PathBuf::from(s))),
    })
}

fn default_listen() -> SocketAddr {
    // A constant that always parses.
    DEFAULT_LISTEN
        .parse()
        .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 9412)))
}

/// `limits:`, bounds on what sdbridge reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Largest file_sd file, Consul answer or upstream HTTP SD answer
    /// (after gzip decoding). Default `64MiB`. Over it: an error for that
    /// input, whose last good groups stay served.
    #[serde(default = "default_max_input")]
    pub max_input_size: ByteSize,
    /// Client connections served at once (default 4096); past it, up to
    /// [`crate::http::PROBE_CONNECTIONS`] more answer the probes only, so
    /// a full server still tells its orchestrator it is alive. Read at
    /// start, like `listen`.
    #[serde(
        default = "default_max_connections",
        deserialize_with = "max_connections"
    )]
    pub max_connections: usize,
    /// How long a client connection may go without a request in progress
    /// (from accept, and between requests) before it is closed (default
    /// 30s), so silent connections cannot hold every place. Read at start.
    #[serde(default = "default_idle_timeout", deserialize_with = "idle_timeout")]
    pub idle_timeout: PromDuration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_input_size: default_max_input(),
            max_connections: default_max_connections(),
            idle_timeout: default_idle_timeout(),
        }
    }
}

fn default_max_connections() -> usize {
    crate::http::MAX_CONNECTIONS
}

fn default_idle_timeout() -> PromDuration {
    PromDuration(crate::http::IDLE_TIMEOUT)
}

fn max_connections<'de, D: serde::Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    let n = usize::deserialize(d)?;
    if !(1..=1 << 20).contains(&n) {
        return Err(serde::de::Error::custom(format!(
            "max_connections must be between 1 and {}, got {n}",
            1 << 20
        )));
    }
    Ok(n)
}

fn idle_timeout<'de, D: serde::Deserializer<'de>>(d: D) -> Result<PromDuration, D::Error> {
    let t = PromDuration::deserialize(d)?;
    if t.0.is_zero() {
        return Err(serde::de::Error::custom(
            "idle_timeout must be greater than 0",
        ));
    }
    Ok(t)
}

fn default_max_input() -> ByteSize {
    ByteSize(crate::http_client::DEFAULT_MAX_INPUT as u64)
}

impl Config {
    /// Reads and validates the config at `path`, resolving relative paths
    /// against its directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let bytes = read(path)?;
        Config::parse_bytes(&bytes, path)
    }

    /// Parses `text` as the config file at `path` (used for messages and
    /// for resolving relative paths).
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        Config::parse_bytes(text.as_bytes(), path)
    }

    /// [`Config::parse`] for the file's bytes (a byte-order mark or UTF-16
    /// is read as Prometheus's yaml.v2 reads it). The first error only;
    /// [`Config::check`] finds them all.
    pub fn parse_bytes(bytes: &[u8], path: &Path) -> Result<Config, ConfigError> {
        Config::parse_inner(bytes, path, true)
    }

    /// [`Config::parse`] that keeps a job's `relabel_configs` instead of
    /// refusing them as not run yet: for the rule engine's own tests and
    /// benches, which run the rules themselves.
    pub fn parse_with_rules(text: &str, path: &Path) -> Result<Config, ConfigError> {
        Config::parse_inner(text.as_bytes(), path, false)
    }

    fn parse_inner(bytes: &[u8], path: &Path, refuse_rules: bool) -> Result<Config, ConfigError> {
        let invalid = |e: yaml::YamlError| invalid(path, e.line, e.column, e.message);
        let doc = yaml::Document::parse(bytes).map_err(invalid)?;
        let mut config: Config = doc.deserialize().map_err(invalid)?;
        let names: Vec<(usize, &str)> = config
            .jobs
            .iter()
            .map(|j| j.job_name.as_str())
            .enumerate()
            .collect();
        let with_rules: Vec<usize> = (0..config.jobs.len())
            .filter(|&i| refuse_rules && !config.jobs[i].relabel_configs.is_empty())
            .collect();
        let first = job_name_errors(&doc, &names)
            .into_iter()
            .chain(unrun_rules(&doc, &with_rules))
            .min_by_key(|(mark, _)| (mark.line, mark.column));
        if let Some((mark, message)) = first {
            return Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                line: mark.line,
                column: mark.column,
                message,
            });
        }
        config.resolve(path);
        Ok(config)
    }

    /// Every error in the config at `path` (one bad job or block does not
    /// hide the next), sorted by position, and the jobs that are valid on
    /// their own, resolved as [`Config::load`] resolves them, so their
    /// file_sd files can be checked too.
    pub fn check(path: &Path) -> (Vec<JobConfig>, Vec<ConfigError>) {
        let bytes = match read(path) {
            Ok(b) => b,
            Err(e) => return (Vec::new(), vec![e]),
        };
        let doc = match yaml::Document::parse(&bytes) {
            Ok(doc) => doc,
            Err(e) => return (Vec::new(), vec![invalid(path, e.line, e.column, e.message)]),
        };
        let mut errors = Vec::new();
        collect_errors(&doc, &mut Vec::new(), doc.root(), &mut errors);
        let part = |steps: &[yaml::Step]| doc.deserialize_part::<Config>(steps).ok();
        let jobs_key = yaml::Step::Entries {
            keep: Vec::new(),
            into: "jobs".into(),
        };
        let job_nodes = doc
            .root()
            .get("jobs")
            .and_then(|j| j.items())
            .unwrap_or_default();
        let jobs: Vec<(usize, JobConfig)> = (0..job_nodes.len())
            .filter_map(|i| {
                let config = part(&[jobs_key.clone(), yaml::Step::Item(i)])?;
                Some((i, config.jobs.into_iter().next()?))
            })
            .collect();
        // Names of every job whose name is valid, the job or not.
        let names: Vec<(usize, String)> = (0..job_nodes.len())
            .filter_map(|i| {
                let name_only = yaml::Step::Entries {
                    keep: Vec::new(),
                    into: "job_name".into(),
                };
                let config = part(&[jobs_key.clone(), yaml::Step::Item(i), name_only])?;
                Some((i, config.jobs.into_iter().next()?.job_name))
            })
            .collect();
        let names: Vec<(usize, &str)> = names.iter().map(|(i, n)| (*i, n.as_str())).collect();
        let with_rules: Vec<usize> = jobs
            .iter()
            .filter(|(_, job)| !job.relabel_configs.is_empty())
            .map(|(i, _)| *i)
            .collect();
        for (mark, message) in job_name_errors(&doc, &names)
            .into_iter()
            .chain(unrun_rules(&doc, &with_rules))
        {
            errors.push(yaml::YamlError {
                line: mark.line,
                column: mark.column,
                message,
            });
        }
        errors.sort_by_key(|e| (e.line, e.column));
        errors.dedup();
        // The valid jobs, with the limits (if valid) that apply to them:
        // the config read from `limits` alone, or from nothing at all.
        let limits = yaml::Step::Entries {
            keep: Vec::new(),
            into: "limits".into(),
        };
        let errors: Vec<ConfigError> = errors
            .into_iter()
            .map(|e| invalid(path, e.line, e.column, e.message))
            .collect();
        let Some(mut config) =
            part(&[limits]).or_else(|| part(&[jobs_key, yaml::Step::Item(usize::MAX)]))
        else {
            return (Vec::new(), errors);
        };
        config.jobs = jobs.into_iter().map(|(_, j)| j).collect();
        config.resolve(path);
        (config.jobs, errors)
    }

    /// Resolves relative paths against the config's directory and hands
    /// the limits to the sources that read input.
    fn resolve(&mut self, path: &Path) {
        self.base_dir = gopath::dir(&path.to_string_lossy());
        self.web.set_directory(&self.base_dir);
        if let Some(dir) = &mut self.state_dir {
            *dir = PathBuf::from(gopath::join_dir(&self.base_dir, &dir.to_string_lossy()));
        }
        let max_input = self.limits.max_input_size.bytes();
        for job in &mut self.jobs {
            for file_sd in &mut job.file_sd_configs {
                for file in &mut file_sd.files {
                    *file = gopath::join_dir(&self.base_dir, file);
                }
                file_sd.max_input_size = max_input;
            }
            for consul in &mut job.consul_sd_configs {
                consul.set_directory(&self.base_dir);
                consul.max_input_size = max_input;
            }
            for sql in &mut job.sql_sd_configs {
                sql.set_directory(&self.base_dir);
            }
            for http in &mut job.http_sd_configs {
                http.set_directory(&self.base_dir);
                http.max_input_size = max_input;
            }
        }
    }
}

fn read(path: &Path) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn invalid(path: &Path, line: usize, column: usize, message: String) -> ConfigError {
    ConfigError::Invalid {
        path: path.to_path_buf(),
        line,
        column,
        message,
    }
}

/// Empty and repeated job names, at the `job_name` value the parser read
/// for that job (merge keys and flow style included). `names` are the
/// parsed names with their job's index in the `jobs` list.
fn job_name_errors(doc: &yaml::Document, names: &[(usize, &str)]) -> Vec<(yaml::Mark, String)> {
    let nodes = doc
        .root()
        .get("jobs")
        .and_then(|j| j.items())
        .unwrap_or_default();
    // The name's value, or the job itself when its name was merged in
    // from an anchor written earlier.
    let mark = |i: usize| {
        let Some(job) = nodes.get(i) else {
            return yaml::Mark::default();
        };
        let at = |n: yaml::NodeRef| (n.mark().line, n.mark().column);
        match job.get("job_name") {
            Some(name) if at(name) >= at(*job) => name.mark(),
            _ => job.mark(),
        }
    };
    let mut errors = Vec::new();
    for (n, (i, name)) in names.iter().enumerate() {
        if name.is_empty() {
            errors.push((mark(*i), "job_name is empty".to_string()));
        } else if names[..n].iter().any(|(_, earlier)| earlier == name) {
            errors.push((
                mark(*i),
                format!("found multiple jobs with job_name {name:?}"),
            ));
        }
    }
    errors
}

/// What a job's `relabel_configs` gets until the bridge runs it (contract
/// section 5a): its rules are checked as Prometheus checks them, and then
/// refused, so a pasted rule is never silently ignored.
pub const RELABEL_NOT_RUN: &str = "relabel_configs: the rules are valid, but sdbridge does not run them yet; keep them in the scrape config for now";

/// [`RELABEL_NOT_RUN`] at the `relabel_configs` key of each job (by its
/// index in `jobs`) of `with_rules`.
fn unrun_rules(doc: &yaml::Document, with_rules: &[usize]) -> Vec<(yaml::Mark, String)> {
    let nodes = doc
        .root()
        .get("jobs")
        .and_then(|j| j.items())
        .unwrap_or_default();
    with_rules
        .iter()
        .filter_map(|&i| {
            let job = nodes.get(i)?;
            let mark = job.get("relabel_configs").map_or(job.mark(), |r| r.mark());
            Some((mark, format!("jobs[{i}].{RELABEL_NOT_RUN}")))
        })
        .collect()
}

/// Finds the errors in the part of `doc` that `steps` select, narrowing
/// further where an error is found: the root's entries, each item of a
/// list, each entry of a job (with its `job_name`). A part whose pieces
/// are all valid on their own reports its own error.
fn collect_errors(
    doc: &yaml::Document,
    steps: &mut Vec<yaml::Step>,
    node: yaml::NodeRef<'_>,
    out: &mut Vec<yaml::YamlError>,
) {
    let Err(error) = doc.deserialize_part::<Config>(steps) else {
        return;
    };
    let before = out.len();
    let in_jobs = matches!(steps.first(), Some(yaml::Step::Entries { into, .. }) if into == "jobs");
    match (steps.len(), node.items()) {
        // The job list (1) and a job's block lists (3): each item alone.
        (1 | 3, Some(items)) if in_jobs => {
            for (i, item) in items.into_iter().enumerate() {
                steps.push(yaml::Step::Item(i));
                collect_errors(doc, steps, item, out);
                steps.pop();
            }
        }
        // The root (0) and a job (2, keeping its name): each entry alone.
        (0, None) | (2, None) => {
            let keep: Vec<String> = if steps.is_empty() {
                Vec::new()
            } else {
                vec!["job_name".into()]
            };
            for (key, value) in node.entries() {
                if !steps.is_empty() && (key == "job_name" || !in_jobs) {
                    continue;
                }
                steps.push(yaml::Step::Entries {
                    keep: keep.clone(),
                    into: key.to_string(),
                });
                collect_errors(doc, steps, value, out);
                steps.pop();
            }
        }
        _ => {}
    }
    if out.len() == before {
        out.push(error);
    }
}

#[cfg(test)]
mod tests;
