//! `sql_sd_configs` entries (sdbridge's own; CONTRACT section 5).

use std::fmt;
use std::time::Duration;

use serde::Deserialize;

use super::dsn::{Backend, Dsn};
use super::SqlError;
use crate::duration::{Positive, PromDuration};
use crate::gopath;
use crate::source::consul::config::Secret;
use crate::yaml;

/// Default `refresh_interval`.
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(30);
/// Default `query_timeout`.
pub const DEFAULT_QUERY_TIMEOUT: Duration = Duration::from_secs(10);

/// A `dsn` value, checked where it is written (the secret stays out of the
/// message).
#[derive(Clone)]
struct CheckedDsn(Secret, Backend);

impl<'de> Deserialize<'de> for CheckedDsn {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        yaml::parse_str(d, |s| {
            let dsn = Dsn::parse(s).map_err(|e| e.message)?;
            Ok(CheckedDsn(Secret(s.to_string()), dsn.backend()))
        })
    }
}

/// A string that must not be empty, checked where it is written.
#[derive(Debug, Clone)]
struct NonEmpty(String);

impl<'de> Deserialize<'de> for NonEmpty {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        yaml::parse_str(d, |s| {
            if s.trim().is_empty() {
                return Err("must not be empty".to_string());
            }
            Ok(NonEmpty(s.to_string()))
        })
    }
}

/// The entry as written; validated into [`SqlSdConfig`].
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSqlSdConfig {
    #[serde(default)]
    dsn: Option<CheckedDsn>,
    #[serde(default)]
    dsn_file: Option<NonEmpty>,
    query: NonEmpty,
    #[serde(default = "default_refresh")]
    refresh_interval: Positive,
    #[serde(default = "default_query_timeout")]
    query_timeout: Positive,
    #[serde(default)]
    notify_channel: Option<NonEmpty>,
}

fn default_refresh() -> Positive {
    Positive(PromDuration(DEFAULT_REFRESH))
}

fn default_query_timeout() -> Positive {
    Positive(PromDuration(DEFAULT_QUERY_TIMEOUT))
}

/// One `sql_sd_configs` entry, validated. Its `Debug` and `Display` never
/// show the DSN's password.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(try_from = "RawSqlSdConfig")]
pub struct SqlSdConfig {
    /// The database URL (`mysql://`, `mariadb://`, `postgres://`,
    /// `postgresql://`, `sqlite://PATH`). Exactly one of `dsn` and
    /// `dsn_file` is set.
    pub dsn: Option<Secret>,
    /// A file whose trimmed content is the DSN, re-read on every connect so
    /// rotated credentials are picked up (relative to the config's
    /// directory).
    pub dsn_file: Option<String>,
    /// The query: one statement, one row per target (see
    /// [`crate::source::sql`]).
    pub query: String,
    /// How often the query runs. Default `30s`; above zero.
    pub refresh_interval: PromDuration,
    /// Bound on connecting and on each query, enforced by the server and
    /// by the client. Default `10s`; above zero.
    pub query_timeout: PromDuration,
    /// PostgreSQL only: `LISTEN` on this channel and refresh at once on a
    /// `NOTIFY` (exact name, as `pg_notify` takes it). Default: none.
    pub notify_channel: Option<String>,
    /// The config file's directory, for a relative SQLite path read from
    /// `dsn_file`.
    base_dir: String,
}

impl TryFrom<RawSqlSdConfig> for SqlSdConfig {
    type Error = String;

    fn try_from(raw: RawSqlSdConfig) -> Result<Self, String> {
        let backend = match (&raw.dsn, &raw.dsn_file) {
            (Some(dsn), None) => Some(dsn.1),
            (None, Some(_)) => None,
            _ => return Err("exactly one of dsn and dsn_file must be set".to_string()),
        };
        if let (Some(backend), Some(_)) = (backend, &raw.notify_channel) {
            check_notify(backend)?;
        }
        Ok(SqlSdConfig {
            dsn: raw.dsn.map(|d| d.0),
            dsn_file: raw.dsn_file.map(|f| f.0),
            query: raw.query.0,
            refresh_interval: raw.refresh_interval.0,
            query_timeout: raw.query_timeout.0,
            notify_channel: raw.notify_channel.map(|c| c.0),
            base_dir: String::new(),
        })
    }
}

/// `notify_channel` needs PostgreSQL's LISTEN/NOTIFY.
fn check_notify(backend: Backend) -> Result<(), String> {
    match backend {
        Backend::Postgres => Ok(()),
        other => Err(format!(
            "notify_channel needs PostgreSQL (LISTEN/NOTIFY), but the dsn is {}",
            other.name()
        )),
    }
}

impl SqlSdConfig {
    /// Resolves `dsn_file` and a relative `sqlite://` path against
    /// `base_dir`, the config file's directory (as Prometheus resolves
    /// file paths).
    pub fn set_directory(&mut self, base_dir: &str) {
        self.base_dir = base_dir.to_string();
        if let Some(file) = &mut self.dsn_file {
            *file = gopath::join_dir(base_dir, file);
        }
        if let Some(secret) = &mut self.dsn {
            if let Ok(dsn) = Dsn::parse(&secret.0) {
                if dsn.backend() == Backend::Sqlite {
                    secret.0 = dsn.resolve(base_dir).url().to_string();
                }
            }
        }
    }

    /// The DSN to connect with: `dsn`, or the trimmed content of
    /// `dsn_file` read now (so each reconnect sees rotated credentials).
    /// Also refuses `notify_channel` for a non-PostgreSQL `dsn_file`.
    pub fn dsn(&self) -> Result<Dsn, SqlError> {
        let dsn = match (&self.dsn, &self.dsn_file) {
            (Some(secret), _) => Dsn::parse(&secret.0)?,
            (None, Some(file)) => {
                let text = std::fs::read_to_string(file)
                    .map_err(|e| SqlError::new("dsn", format!("dsn_file {file}: {e}")))?;
                Dsn::parse(text.trim())
                    .map_err(|e| SqlError::new("dsn", format!("dsn_file {file}: {e}")))?
            }
            (None, None) => return Err(SqlError::new("dsn", "no dsn or dsn_file")),
        };
        let dsn = dsn.resolve(&self.base_dir);
        if self.notify_channel.is_some() {
            check_notify(dsn.backend()).map_err(|e| SqlError::new("dsn", e))?;
        }
        Ok(dsn)
    }

    /// Short description for the status page and logs (no secrets).
    pub fn describe(&self) -> String {
        let mut s = match (&self.dsn, &self.dsn_file) {
            (Some(secret), _) => match Dsn::parse(&secret.0) {
                Ok(dsn) => format!("sql_sd_configs {}", dsn.redacted()),
                Err(_) => "sql_sd_configs (invalid dsn)".to_string(),
            },
            (None, Some(file)) => format!("sql_sd_configs dsn_file={file}"),
            (None, None) => "sql_sd_configs".to_string(),
        };
        if let Some(channel) = &self.notify_channel {
            s.push_str(&format!(" notify_channel={channel}"));
        }
        s
    }
}

impl fmt::Display for SqlSdConfig {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::Config;

    fn parse(block: &str) -> Result<SqlSdConfig, String> {
        let text = format!("jobs:\n  - job_name: a\n    sql_sd_configs:\n{block}");
        Config::parse(&text, Path::new("/etc/sdbridge/sdbridge.yml"))
            .map(|mut c| c.jobs.remove(0).sql_sd_configs.remove(0))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_and_paths() {
        let c =
            parse("      - {dsn: 'mysql://u:hunter2@127.0.0.1/inv', query: 'SELECT 1'}\n").unwrap();
        assert_eq!(c.refresh_interval.0, DEFAULT_REFRESH);
        assert_eq!(c.query_timeout.0, DEFAULT_QUERY_TIMEOUT);
        assert!(c.notify_channel.is_none() && c.dsn_file.is_none());
        assert_eq!(c.describe(), "sql_sd_configs mysql://u:***@127.0.0.1/inv");
        for shown in [format!("{c:?}"), c.to_string()] {
            assert!(!shown.contains("hunter2"), "{shown}");
        }
        let c = parse("      - {dsn: 'sqlite://inv.db', query: q}\n").unwrap();
        assert_eq!(c.dsn.as_ref().unwrap().0, "sqlite:///etc/sdbridge/inv.db");
        assert_eq!(c.dsn().unwrap().url(), "sqlite:///etc/sdbridge/inv.db");
        let c = parse(
            "      - {dsn_file: secrets/dsn, query: q, refresh_interval: 1m, query_timeout: 500ms, notify_channel: inv}\n",
        )
        .unwrap();
        assert_eq!(c.dsn_file.as_deref(), Some("/etc/sdbridge/secrets/dsn"));
        assert_eq!(c.refresh_interval.0, Duration::from_secs(60));
        assert_eq!(c.query_timeout.0, Duration::from_millis(500));
        assert_eq!(
            c.describe(),
            "sql_sd_configs dsn_file=/etc/sdbridge/secrets/dsn notify_channel=inv"
        );
    }

    #[test]
    fn dsn_file_is_read_trimmed_on_each_call() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("dsn");
        std::fs::write(&file, "postgres://u:one@127.0.0.1/inv\n").unwrap();
        let c = Config::parse(
            "jobs:\n  - job_name: a\n    sql_sd_configs:\n      - {dsn_file: dsn, query: q, notify_channel: inv}\n",
            &dir.path().join("sdbridge.yml"),
        )
        .map(|mut c| c.jobs.remove(0).sql_sd_configs.remove(0))
        .unwrap();
        assert_eq!(c.dsn().unwrap().url(), "postgres://u:one@127.0.0.1/inv");
        std::fs::write(&file, "  postgres://u:two@127.0.0.1/inv  ").unwrap();
        assert_eq!(c.dsn().unwrap().url(), "postgres://u:two@127.0.0.1/inv");
        std::fs::write(&file, "mysql://u:three@127.0.0.1/inv").unwrap();
        let err = c.dsn().unwrap_err();
        assert_eq!(err.kind, "dsn");
        assert!(
            err.message.contains("notify_channel needs PostgreSQL"),
            "{err}"
        );
        std::fs::write(&file, "nope:three@127.0.0.1").unwrap();
        let err = c.dsn().unwrap_err();
        assert!(err.message.contains("expected a URL") && !err.message.contains("three"));
        std::fs::remove_file(&file).unwrap();
        assert!(c.dsn().unwrap_err().message.contains("dsn_file"));
    }

    #[test]
    fn errors_with_positions() {
        let cases = [
            ("      - {query: q}\n", ":4:9: jobs[0].sql_sd_configs[0]: exactly one of dsn and dsn_file must be set"),
            ("      - {dsn: 'sqlite://a.db', dsn_file: f, query: q}\n", "exactly one of dsn and dsn_file must be set"),
            ("      - dsn: 'oracle://u:hunter2@h/db'\n        query: q\n", ":4:14: jobs[0].sql_sd_configs[0].dsn: invalid dsn: unsupported scheme \"oracle\""),
            ("      - dsn: 'sqlite://a.db'\n        query: ''\n", ":5:16: jobs[0].sql_sd_configs[0].query: must not be empty"),
            ("      - dsn: 'sqlite://a.db'\n", "missing field `query`"),
            ("      - dsn: 'sqlite://a.db'\n        query: q\n        query_timeout: 0s\n", ":6:24: jobs[0].sql_sd_configs[0].query_timeout: must be greater than 0"),
            ("      - dsn: 'sqlite://a.db'\n        query: q\n        refresh_interval: 5x\n", ":6:27: jobs[0].sql_sd_configs[0].refresh_interval: not a valid duration string"),
            ("      - dsn: 'mysql://u:hunter2@h/db'\n        query: q\n        notify_channel: inv\n", ":4:9: jobs[0].sql_sd_configs[0]: notify_channel needs PostgreSQL (LISTEN/NOTIFY), but the dsn is MySQL/MariaDB"),
            ("      - dsn: 'sqlite://a.db'\n        query: q\n        notify_channel: ''\n", ":6:25: jobs[0].sql_sd_configs[0].notify_channel: must not be empty"),
            ("      - {dsn: 'sqlite://a.db', query: q, bogus: 1}\n", "jobs[0].sql_sd_configs[0]: unknown field `bogus`"),
        ];
        for (block, want) in cases {
            let err = parse(block).unwrap_err();
            assert!(
                err.contains(want),
                "block:\n{block}\nwant: {want}\ngot:  {err}"
            );
            assert!(!err.contains("hunter2"), "{err}");
        }
    }
}
