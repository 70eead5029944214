//! The sdbridge configuration file (CONTRACT section 3).
//!
//! The SD blocks under a job use Prometheus's field names, defaults and
//! semantics so they can be pasted from `prometheus.yml` unchanged. Parsing
//! is strict: unknown keys, wrong types, duplicate job names, bad globs and
//! invalid label names are errors with `file:line:column`.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::{self, Deserializer};
use serde::Deserialize;

use crate::duration::PromDuration;
use crate::gopath;
use crate::size::ByteSize;
pub use crate::source::consul::config::ConsulSdConfig;
pub use crate::source::http_sd::HttpSdConfig;
pub use crate::source::sql::SqlSdConfig;
use crate::targetgroup::TargetGroup;
use crate::web::WebConfig;
use crate::yaml;

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

/// One job: the sources whose groups are served together.
// `NotSupported`/`ScrapeSetting` fields are rejected while parsing and never
// hold a value.
#[allow(dead_code)]
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobConfig {
    /// The job's name, its URL path segment and its `__meta_sdbridge_job`.
    pub job_name: String,
    /// Prometheus's `static_configs`: served as given.
    #[serde(default, deserialize_with = "sections")]
    pub static_configs: Vec<TargetGroup>,
    /// Prometheus's `file_sd_configs`.
    #[serde(default, deserialize_with = "sections")]
    pub file_sd_configs: Vec<FileSdConfig>,
    /// Prometheus's `consul_sd_configs`.
    #[serde(default, deserialize_with = "sections")]
    pub consul_sd_configs: Vec<ConsulSdConfig>,
    /// sdbridge's `sql_sd_configs`: targets from an inventory database.
    #[serde(default, deserialize_with = "sections")]
    pub sql_sd_configs: Vec<SqlSdConfig>,
    /// Prometheus's `http_sd_configs`: other HTTP SD servers, cached.
    #[serde(default, deserialize_with = "sections")]
    pub http_sd_configs: Vec<HttpSdConfig>,
    /// Prometheus's `relabel_configs`, run by the bridge on every
    /// discovered target of the job (CONTRACT section 5a), checked as
    /// Prometheus 2.42 checks them, regexes compiled here.
    #[serde(default, deserialize_with = "crate::relabel::deserialize_rules")]
    pub relabel_configs: Vec<crate::relabel::Rule>,

    // Prometheus service discovery mechanisms sdbridge does not bridge (yet):
    // named so that pasting them gives "not supported", not "unknown field".
    #[serde(default)]
    azure_sd_configs: Option<NotSupported>,
    #[serde(default)]
    digitalocean_sd_configs: Option<NotSupported>,
    #[serde(default)]
    docker_sd_configs: Option<NotSupported>,
    #[serde(default)]
    dockerswarm_sd_configs: Option<NotSupported>,
    #[serde(default)]
    dns_sd_configs: Option<NotSupported>,
    #[serde(default)]
    ec2_sd_configs: Option<NotSupported>,
    #[serde(default)]
    eureka_sd_configs: Option<NotSupported>,
    #[serde(default)]
    gce_sd_configs: Option<NotSupported>,
    #[serde(default)]
    hetzner_sd_configs: Option<NotSupported>,
    #[serde(default)]
    kubernetes_sd_configs: Option<NotSupported>,
    #[serde(default)]
    marathon_sd_configs: Option<NotSupported>,
    #[serde(default)]
    nomad_sd_configs: Option<NotSupported>,
    #[serde(default)]
    openstack_sd_configs: Option<NotSupported>,
    #[serde(default)]
    puppetdb_sd_configs: Option<NotSupported>,

    // Scrape settings: they stay in prometheus.yml.
    #[serde(default)]
    scrape_interval: Option<ScrapeSetting>,
    #[serde(default)]
    scrape_timeout: Option<ScrapeSetting>,
    #[serde(default)]
    metrics_path: Option<ScrapeSetting>,
    #[serde(default)]
    scheme: Option<ScrapeSetting>,
    #[serde(default)]
    params: Option<ScrapeSetting>,
    #[serde(default)]
    honor_labels: Option<ScrapeSetting>,
    #[serde(default)]
    honor_timestamps: Option<ScrapeSetting>,
    #[serde(default)]
    metric_relabel_configs: Option<ScrapeSetting>,
    #[serde(default)]
    basic_auth: Option<ScrapeSetting>,
    #[serde(default)]
    authorization: Option<ScrapeSetting>,
    #[serde(default)]
    tls_config: Option<ScrapeSetting>,
    #[serde(default)]
    sample_limit: Option<ScrapeSetting>,
}

/// A job's block list, whose `null` items Prometheus refuses ("empty or
/// null section in static_configs"); refused inside the parser, so the
/// error names the item.
fn sections<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct Section<T>(T);

    impl<'de, T: Deserialize<'de>> Deserialize<'de> for Section<T> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct SectionVisitor<T>(std::marker::PhantomData<T>);

            impl<'de, T: Deserialize<'de>> de::Visitor<'de> for SectionVisitor<T> {
                type Value = Section<T>;

                fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                    f.write_str("a section")
                }

                fn visit_none<E: de::Error>(self) -> Result<Section<T>, E> {
                    Err(E::custom("empty or null section"))
                }

                fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Section<T>, D::Error> {
                    T::deserialize(d).map(Section)
                }
            }

            d.deserialize_option(SectionVisitor(std::marker::PhantomData))
        }
    }

    let sections = Vec::<Section<T>>::deserialize(d)?;
    Ok(sections.into_iter().map(|s| s.0).collect())
}

/// Prometheus's `file_sd_configs` entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSdConfig {
    /// Glob patterns; after loading, resolved against the config directory
    /// (Prometheus's `JoinDir`).
    #[serde(deserialize_with = "deserialize_files")]
    pub files: Vec<String>,
    /// Full re-read period, a fallback for missed notifications.
    /// Default `5m`, as in Prometheus.
    #[serde(default = "default_file_refresh")]
    pub refresh_interval: PromDuration,
    /// `limits.max_input_size`, set after parsing: a larger file is an
    /// error and keeps its previous groups.
    #[serde(skip, default = "default_max_input_bytes")]
    pub max_input_size: usize,
}

fn default_max_input_bytes() -> usize {
    crate::http_client::DEFAULT_MAX_INPUT
}

fn default_file_refresh() -> PromDuration {
    PromDuration(Duration::from_secs(300))
}

/// A Prometheus field sdbridge recognises but does not support yet.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct NotSupported;

impl<'de> Deserialize<'de> for NotSupported {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(Reject("not supported by sdbridge yet"))
            .map(|()| NotSupported)
    }
}

/// A scrape-level field of Prometheus's that has no meaning for discovery.
#[derive(Debug, Clone)]
struct ScrapeSetting;

impl<'de> Deserialize<'de> for ScrapeSetting {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(Reject(
            "is a scrape setting: keep it in the Prometheus/vmagent scrape config, sdbridge only serves targets",
        ))
        .map(|()| ScrapeSetting)
    }
}

/// Fails on whatever value it is given, from inside the deserializer so the
/// error carries the field's path and position.
struct Reject(&'static str);

impl<'de> de::Visitor<'de> for Reject {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.0)
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(de::Error::custom(self.0))
    }

    fn visit_map<A: de::MapAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(de::Error::custom(self.0))
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Err(E::custom(self.0))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Err(E::custom(self.0))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Err(E::custom(self.0))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Err(E::custom(self.0))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Err(E::custom(self.0))
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Err(E::custom(self.0))
    }
}

/// Prometheus's check on `files` entries (`patFileSDName`), plus the rule
/// that the directory part is literal (globs only in the file name).
fn deserialize_files<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    /// One checked entry, so an error points at the entry itself.
    struct Checked(String);

    impl<'de> Deserialize<'de> for Checked {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            yaml::parse_str(d, |name| {
                check_file_pattern(name)?;
                Ok(Checked(name.to_string()))
            })
        }
    }

    let files = Vec::<Checked>::deserialize(d)?;
    if files.is_empty() {
        return Err(de::Error::custom(
            "file service discovery config must contain at least one path name",
        ));
    }
    Ok(files.into_iter().map(|c| c.0).collect())
}

/// Validates one `files` entry; the messages quote Prometheus's where it
/// has one.
pub fn check_file_pattern(name: &str) -> Result<(), String> {
    let has_ext = ["json", "yml", "yaml", "JSON", "YML", "YAML"]
        .iter()
        .any(|ext| {
            name.len() > ext.len() && name.ends_with(ext) && {
                name.as_bytes()[name.len() - ext.len() - 1] == b'.'
            }
        });
    let star_ok = match name.find('*') {
        Some(i) => !name[i..].contains('/'),
        None => true,
    };
    if !has_ext || !star_ok {
        return Err(format!(
            "path name {name:?} is not valid for file discovery"
        ));
    }
    let (dir, file) = gopath::split(name);
    if gopath::has_meta(dir) {
        return Err(format!(
            "path name {name:?}: glob characters in directory names are not supported, only in the file name"
        ));
    }
    if gopath::glob_match(file, "").is_err() {
        return Err(format!("path name {name:?}: syntax error in pattern"));
    }
    Ok(())
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
        let invalid = |e: yaml::YamlError| invalid(path, e.line, e.column, e.message);
        let doc = yaml::Document::parse(bytes).map_err(invalid)?;
        let mut config: Config = doc.deserialize().map_err(invalid)?;
        let names: Vec<(usize, &str)> = config
            .jobs
            .iter()
            .map(|j| j.job_name.as_str())
            .enumerate()
            .collect();
        if let Some((mark, message)) = job_name_errors(&doc, &names).into_iter().next() {
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
        for (mark, message) in job_name_errors(&doc, &names) {
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

impl fmt::Display for JobConfig {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&self.job_name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(text, Path::new("/etc/sdbridge/sdbridge.yml")).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_and_path_resolution() {
        let c = parse(
            "jobs:\n  - job_name: mysql\n    file_sd_configs:\n      - files: [sd/*.json, /abs/x.yml, ../up/*.yaml]\n",
        )
        .unwrap();
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        let f = &c.jobs[0].file_sd_configs[0];
        assert_eq!(
            f.files,
            ["/etc/sdbridge/sd/*.json", "/abs/x.yml", "/etc/up/*.yaml"]
        );
        assert_eq!(f.refresh_interval.0, Duration::from_secs(300));
        assert_eq!(c.state_dir, None);
        let s = parse("state_dir: state\n").unwrap();
        assert_eq!(s.state_dir, Some(PathBuf::from("/etc/sdbridge/state")));
        let s = parse("state_dir: /var/lib/sdbridge\n").unwrap();
        assert_eq!(s.state_dir, Some(PathBuf::from("/var/lib/sdbridge")));
    }

    #[test]
    fn relative_config_path_gives_relative_patterns_like_prometheus() {
        let c = Config::parse(
            "jobs: [{job_name: a, file_sd_configs: [{files: [sd/*.json]}]}]",
            Path::new("examples/seed.yml"),
        )
        .unwrap();
        assert_eq!(c.jobs[0].file_sd_configs[0].files, ["examples/sd/*.json"]);
    }

    #[test]
    fn errors_carry_file_line_column() {
        let cases = [
            (
                "jobs:\n  - job_name: a\n    bogus: 1\n",
                "/etc/sdbridge/sdbridge.yml:3:5: jobs[0]: unknown field `bogus`",
            ),
            (
                "jobs:\n  - job_name: a\n    static_configs: [{targets: [x]}, ~]\n",
                ":3:38: jobs[0].static_configs[1]: empty or null section",
            ),
            (
                "jobs:\n  - job_name: a\n    file_sd_configs:\n      -\n",
                ":4:8: jobs[0].file_sd_configs[0]: empty or null section",
            ),
            (
                "jobs:\n  - job_name: a\n    static_config: []\n",
                ":3:5: jobs[0]: unknown field `static_config`, did you mean `static_configs`?",
            ),
            (
                "jobs:\n  - job_name: a\n    file_sd_configs: [{files: [a.json], refresh_intervall: 1m}]\n",
                "jobs[0].file_sd_configs[0]: unknown field `refresh_intervall`, did you mean `refresh_interval`?",
            ),
            (
                "jobs:\n  - job_name: a\n    static_configs: [{targets: [x], <<: {labelz: {}}}]\n",
                ":3:42: jobs[0].static_configs[0]: unknown field `labelz`, did you mean `labels`?",
            ),
            (
                "jobs:\n  - job_name: a\n    static_configs:\n      - targets: [x]\n        labels: {ok: 1, bad-name: 2}\n",
                "/etc/sdbridge/sdbridge.yml:5:17: jobs[0].static_configs[0].labels: \"bad-name\" is not a valid label name",
            ),
            (
                "jobs:\n  - job_name: a\n  - job_name: b\n  - job_name: a\n",
                "/etc/sdbridge/sdbridge.yml:4:15: found multiple jobs with job_name \"a\"",
            ),
            (
                "jobs:\n  - job_name: a\n    file_sd_configs:\n      - files: ['sd/*/x.json']\n",
                "/etc/sdbridge/sdbridge.yml:4:17: jobs[0].file_sd_configs[0].files[0]: path name \"sd/*/x.json\" is not valid for file discovery",
            ),
            (
                "jobs:\n  - job_name: a\n    file_sd_configs:\n      - files: ['sd/x.txt']\n",
                "path name \"sd/x.txt\" is not valid for file discovery",
            ),
            (
                "jobs:\n  - job_name: a\n    file_sd_configs:\n      - files: ['sd/[x.json']\n",
                "syntax error in pattern",
            ),
            (
                "jobs:\n  - job_name: a\n    file_sd_configs:\n      - files: []\n",
                "must contain at least one path name",
            ),
            (
                "jobs:\n  - job_name: a\n    file_sd_configs:\n      - files: [a.json]\n        refresh_interval: 5x\n",
                "/etc/sdbridge/sdbridge.yml:5:27: jobs[0].file_sd_configs[0].refresh_interval: not a valid duration string",
            ),
            (
                "jobs:\n  - job_name: a\n    consul_sd_configs: [{server: 127.0.0.1:8500, x: 1}]\n",
                "jobs[0].consul_sd_configs[0]: unknown field `x`",
            ),
            (
                "jobs:\n  - job_name: a\n    metric_relabel_configs: []\n",
                "jobs[0].metric_relabel_configs: is a scrape setting",
            ),
            (
                "jobs:\n  - job_name: a\n    relabel_configs: [{action: drop, regex: '(?<n>x)'}]\n",
                ":3:45: jobs[0].relabel_configs[0].regex: error parsing regexp: invalid or unsupported Perl syntax: `(?<`",
            ),
            ("jobs:\n  - job_name: [a]\n", ":2:15: jobs[0].job_name: invalid type"),
            ("listen: nope\n", ":1:9: listen: invalid socket address syntax"),
            ("jobs:\n  - job_name: ''\n", ":2:15: job_name is empty"),
            ("state_dir: ''\n", ":1:12: state_dir: must not be empty"),
            (
                "limits: {max_input_size: 5XB}\n",
                ":1:26: limits.max_input_size: \"5XB\": unknown unit",
            ),
            (
                "limits: {max_input: 1KB}\n",
                "limits: unknown field `max_input`",
            ),
            (
                "jobs:\n  - job_name: a\n    http_sd_configs: [{url: 'ftp://127.0.0.1/x'}]\n",
                ":3:29: jobs[0].http_sd_configs[0].url: URL scheme must be 'http' or 'https'",
            ),
            (
                "jobs:\n  - job_name: a\n    http_sd_configs: [{url: 'http://127.0.0.1/x', oauth2: {}}]\n",
                "jobs[0].http_sd_configs[0].oauth2: not supported by sdbridge yet",
            ),
            (
                "jobs:\n  - job_name: a\n    http_sd_configs: [{url: 'http://127.0.0.1/x', authorization: {type: Basic}}]\n",
                "use \"basic_auth\" instead",
            ),
        ];
        for (text, want) in cases {
            let err = parse(text).unwrap_err();
            assert!(
                err.contains(want),
                "config:\n{text}\nwant: {want}\ngot:  {err}"
            );
        }
    }

    #[test]
    fn limits_reach_every_source_that_reads_input() {
        let c = parse(
            "limits: {max_input_size: 1KB}\njobs:\n  - job_name: a\n    file_sd_configs: [{files: [a.json]}]\n    consul_sd_configs: [{server: '127.0.0.1:8500'}]\n    http_sd_configs: [{url: 'http://127.0.0.1:1/sd'}]\n",
        )
        .unwrap();
        let job = &c.jobs[0];
        assert_eq!(job.file_sd_configs[0].max_input_size, 1024);
        assert_eq!(job.consul_sd_configs[0].max_input_size, 1024);
        assert_eq!(job.http_sd_configs[0].max_input_size, 1024);
        let d =
            parse("jobs:\n  - job_name: a\n    file_sd_configs: [{files: [a.json]}]\n").unwrap();
        assert_eq!(d.jobs[0].file_sd_configs[0].max_input_size, 64 << 20);
    }

    /// Issue 10: the duplicate's own `job_name`, found by the parser, not
    /// by searching the text (an earlier label named `job_name`, flow
    /// style and merge keys used to defeat the search).
    #[test]
    fn duplicate_job_names_point_at_the_duplicate() {
        let cases = [
            (
                "jobs:\n  - job_name: a\n    static_configs:\n      - targets: [x]\n        labels:\n          job_name: z\n  - job_name: a\n",
                ":7:15: found multiple jobs with job_name \"a\"",
            ),
            (
                "jobs: [{job_name: a}, {job_name: b},\n  {static_configs: [], job_name: a}]\n",
                ":2:34: found multiple jobs with job_name \"a\"",
            ),
            (
                "jobs:\n  - &j {job_name: a}\n  - <<: *j\n",
                ":3:5: found multiple jobs with job_name \"a\"",
            ),
        ];
        for (text, want) in cases {
            let err = parse(text).unwrap_err();
            assert!(
                err.ends_with(want),
                "config:\n{text}\nwant: {want}\ngot:  {err}"
            );
        }
    }

    /// Issue 10: promtool accepts merge keys in static_configs (checked
    /// against Prometheus 2.42 in tests/cli.rs).
    #[test]
    fn merge_keys_in_static_configs() {
        let c = parse(
            "defaults: &d\n  labels: {env: prod}\njobs:\n  - job_name: a\n    static_configs:\n      - <<: *d\n        targets: ['127.0.0.1:1']\n",
        );
        // sdbridge has no `defaults` key: anchors live in the values.
        assert!(c.unwrap_err().contains("unknown field `defaults`"));
        let c = parse(
            "jobs:\n  - job_name: a\n    static_configs:\n      - &g {targets: ['127.0.0.1:1'], labels: {env: prod}}\n      - <<: *g\n        targets: ['127.0.0.1:2']\n",
        )
        .unwrap();
        let g = &c.jobs[0].static_configs;
        assert_eq!(g[1].targets, ["127.0.0.1:2"]);
        assert_eq!(g[1].labels.0["env"], "prod");
    }

    #[test]
    fn check_finds_every_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yml");
        std::fs::write(
            &path,
            "limits: {max_input_size: 1KB}\nlisten: nope\njobs:\n  - job_name: a\n    bogus: 1\n    static_configs: [{targets: [x]}, {targets: [y], labelz: {}}]\n    file_sd_configs: [{files: [x.txt]}]\n  - job_name: ok\n    file_sd_configs: [{files: [sd/*.json]}]\n  - job_name: a\n",
        )
        .unwrap();
        let (jobs, errors) = Config::check(&path);
        let errors: Vec<String> = errors
            .iter()
            .map(|e| e.to_string().replace(&path.display().to_string(), "c.yml"))
            .collect();
        assert_eq!(
            errors,
            [
                "c.yml:2:9: listen: invalid socket address syntax",
                "c.yml:5:5: jobs[0]: unknown field `bogus`",
                "c.yml:6:53: jobs[0].static_configs[1]: unknown field `labelz`, did you mean `labels`?",
                "c.yml:7:32: jobs[0].file_sd_configs[0].files[0]: path name \"x.txt\" is not valid for file discovery",
                "c.yml:10:15: found multiple jobs with job_name \"a\"",
            ]
        );
        // The valid jobs, resolved, with the limits.
        let names: Vec<&str> = jobs.iter().map(|j| j.job_name.as_str()).collect();
        assert_eq!(names, ["ok", "a"]);
        let f = &jobs[0].file_sd_configs[0];
        assert_eq!(f.files, [format!("{}/sd/*.json", dir.path().display())]);
        assert_eq!(f.max_input_size, 1024);
    }

    #[test]
    fn static_configs_are_prometheus_groups() {
        let c = parse(
            "jobs:\n  - job_name: mysql\n    static_configs:\n      - targets: ['127.0.0.1:9104']\n        labels: {dbms: MySQL, service_name: \"My서비스\"}\n",
        )
        .unwrap();
        let g = &c.jobs[0].static_configs[0];
        assert_eq!(g.targets, ["127.0.0.1:9104"]);
        assert_eq!(g.labels.0["service_name"], "My서비스");
    }
}
