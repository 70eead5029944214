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
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_input_size: default_max_input(),
        }
    }
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
    #[serde(default)]
    pub static_configs: Vec<TargetGroup>,
    /// Prometheus's `file_sd_configs`.
    #[serde(default)]
    pub file_sd_configs: Vec<FileSdConfig>,
    /// Prometheus's `consul_sd_configs`.
    #[serde(default)]
    pub consul_sd_configs: Vec<ConsulSdConfig>,
    /// sdbridge's `sql_sd_configs`: targets from an inventory database.
    #[serde(default)]
    pub sql_sd_configs: Vec<SqlSdConfig>,
    /// Prometheus's `http_sd_configs`: other HTTP SD servers, cached.
    #[serde(default)]
    pub http_sd_configs: Vec<HttpSdConfig>,

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
    relabel_configs: Option<ScrapeSetting>,
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
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(&text, path)
    }

    /// Parses `text` as the config file at `path` (used for messages and
    /// for resolving relative paths).
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let invalid = |line, column, message| ConfigError::Invalid {
            path: path.to_path_buf(),
            line,
            column,
            message,
        };
        let mut config: Config =
            yaml::from_str(text).map_err(|e| invalid(e.line, e.column, e.message))?;
        for (i, job) in config.jobs.iter().enumerate() {
            let (line, column) = locate_job_name(text, i);
            if job.job_name.is_empty() {
                return Err(invalid(line, column, "job_name is empty".to_string()));
            }
            if config.jobs[..i].iter().any(|j| j.job_name == job.job_name) {
                return Err(invalid(
                    line,
                    column,
                    format!("found multiple jobs with job_name {:?}", job.job_name),
                ));
            }
        }
        config.base_dir = gopath::dir(&path.to_string_lossy());
        config.web.set_directory(&config.base_dir);
        if let Some(dir) = &mut config.state_dir {
            *dir = PathBuf::from(gopath::join_dir(&config.base_dir, &dir.to_string_lossy()));
        }
        for job in &mut config.jobs {
            let max_input = config.limits.max_input_size.bytes();
            for file_sd in &mut job.file_sd_configs {
                for file in &mut file_sd.files {
                    *file = gopath::join_dir(&config.base_dir, file);
                }
                file_sd.max_input_size = max_input;
            }
            for consul in &mut job.consul_sd_configs {
                consul.set_directory(&config.base_dir);
                consul.max_input_size = max_input;
            }
            for sql in &mut job.sql_sd_configs {
                sql.set_directory(&config.base_dir);
            }
            for http in &mut job.http_sd_configs {
                http.set_directory(&config.base_dir);
                http.max_input_size = max_input;
            }
        }
        Ok(config)
    }
}

/// Line and column of the `n`th `job_name` key in the file, for errors
/// about a job as a whole; (0, 0) if it cannot be found (flow style).
fn locate_job_name(text: &str, n: usize) -> (usize, usize) {
    text.lines()
        .enumerate()
        .filter_map(|(i, line)| {
            let trimmed = line.trim_start_matches([' ', '-', '\t']);
            trimmed
                .starts_with("job_name:")
                .then(|| (i + 1, line.len() - trimmed.len() + 1))
        })
        .nth(n)
        .unwrap_or((0, 0))
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
                "jobs:\n  - job_name: a\n    static_configs:\n      - targets: [x]\n        labels: {ok: 1, bad-name: 2}\n",
                "/etc/sdbridge/sdbridge.yml:5:17: jobs[0].static_configs[0].labels: \"bad-name\" is not a valid label name",
            ),
            (
                "jobs:\n  - job_name: a\n  - job_name: b\n  - job_name: a\n",
                "/etc/sdbridge/sdbridge.yml:4:5: found multiple jobs with job_name \"a\"",
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
                "jobs:\n  - job_name: a\n    relabel_configs: []\n",
                "jobs[0].relabel_configs: is a scrape setting",
            ),
            ("jobs:\n  - job_name: [a]\n", ":2:15: jobs[0].job_name: invalid type"),
            ("listen: nope\n", ":1:9: listen: invalid socket address syntax"),
            ("jobs:\n  - job_name: ''\n", ":2:5: job_name is empty"),
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
