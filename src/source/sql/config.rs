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

/// Largest `dsn_file` read (a DSN is a line).
const MAX_DSN_FILE: u64 = 64 * 1024;

/// One `sql_sd_configs` entry, validated. Its `Debug` and `Display` never
/// show the DSN's password; they show the redacted DSN (from `dsn_file`
/// too), so the source's name and its job's state key
/// ([`crate::state::job_key`]) change with the database it reads, and
/// not with the password.
#[derive(Clone, PartialEq, Eq, Hash, Deserialize)]
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
    /// `NOTIFY` (exact name, as `pg_notify` takes it: an unquoted `NOTIFY`
    /// folds to lower case, see [`SqlSdConfig::warnings`]). Default: none.
    pub notify_channel: Option<String>,
    /// The config file's directory, for a relative SQLite path read from
    /// `dsn_file`.
    base_dir: String,
    /// What `dsn_file` held when the config was loaded (`None`: it could
    /// not be read then). Compared on reload, so a changed file restarts
    /// the source; the source reads that database until the next reload.
    loaded: Option<LoadedDsn>,
}

/// A `dsn_file`'s DSN as read at load.
#[derive(Clone, PartialEq, Eq, Hash)]
struct LoadedDsn {
    /// The DSN as read, password included: a changed password restarts
    /// (reconnects) the source on reload.
    secret: Secret,
    /// Its redacted form (scheme, user, host, port, database and
    /// parameters): what the source reads.
    redacted: String,
}

impl fmt::Debug for SqlSdConfig {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let dsn = self.dsn.as_ref().map(|s| match Dsn::parse(&s.0) {
            Ok(dsn) => dsn.redacted().to_string(),
            Err(_) => "(invalid)".to_string(),
        });
        f.debug_struct("SqlSdConfig")
            .field("dsn", &dsn)
            .field("dsn_file", &self.dsn_file)
            .field("dsn_file_names", &self.loaded.as_ref().map(|l| &l.redacted))
            .field("query", &self.query)
            .field("refresh_interval", &self.refresh_interval)
            .field("query_timeout", &self.query_timeout)
            .field("notify_channel", &self.notify_channel)
            .field("base_dir", &self.base_dir)
            .finish()
    }
}

/// The trimmed content of `file`: a regular file, at most
/// [`MAX_DSN_FILE`] bytes, UTF-8.
fn read_dsn_file(file: &str) -> Result<String, SqlError> {
    use std::io::Read;
    let fail = |why: String| SqlError::new("dsn", format!("dsn_file {file}: {why}"));
    let handle = std::fs::File::open(file).map_err(|e| fail(e.to_string()))?;
    let meta = handle.metadata().map_err(|e| fail(e.to_string()))?;
    if !meta.is_file() {
        return Err(fail("not a regular file".to_string()));
    }
    let mut bytes = Vec::new();
    handle
        .take(MAX_DSN_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| fail(e.to_string()))?;
    if bytes.len() as u64 > MAX_DSN_FILE {
        return Err(fail(format!("larger than {MAX_DSN_FILE} bytes")));
    }
    let text = String::from_utf8(bytes).map_err(|_| fail("not UTF-8".to_string()))?;
    Ok(text.trim().to_string())
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
            loaded: None,
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
    /// file paths), and reads `dsn_file` (a blocking read of one small
    /// file, as loading the config is): a reload sees what it names now.
    pub fn set_directory(&mut self, base_dir: &str) {
        self.base_dir = base_dir.to_string();
        if let Some(file) = &mut self.dsn_file {
            *file = gopath::join_dir(base_dir, file);
        }
        self.loaded = None;
        if let Some(file) = &self.dsn_file {
            self.loaded = read_dsn_file(file).ok().and_then(|text| {
                let dsn = Dsn::parse(&text).ok()?.resolve(base_dir);
                Some(LoadedDsn {
                    redacted: dsn.redacted().to_string(),
                    secret: Secret(text),
                })
            });
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
    /// A `dsn_file` that now names another database than when the config
    /// was loaded is refused until a reload (which restarts the source
    /// under that database's state key). Also refuses `notify_channel` for
    /// a non-PostgreSQL `dsn_file`. Blocking: a file read.
    pub fn dsn(&self) -> Result<Dsn, SqlError> {
        let dsn = match (&self.dsn, &self.dsn_file) {
            (Some(secret), _) => Dsn::parse(&secret.0)?.resolve(&self.base_dir),
            (None, Some(file)) => {
                let text = read_dsn_file(file)?;
                let dsn = Dsn::parse(&text)
                    .map_err(|e| SqlError::new("dsn", format!("dsn_file {file}: {e}")))?
                    .resolve(&self.base_dir);
                if let Some(loaded) = &self.loaded {
                    if dsn.redacted() != loaded.redacted {
                        return Err(SqlError::new(
                            "dsn",
                            format!(
                                "dsn_file {file} now names {}, not {} as when the configuration was loaded: reload (SIGHUP or POST /-/reload) to switch",
                                dsn.redacted(),
                                loaded.redacted
                            ),
                        ));
                    }
                }
                dsn
            }
            (None, None) => return Err(SqlError::new("dsn", "no dsn or dsn_file")),
        };
        if self.notify_channel.is_some() {
            check_notify(dsn.backend()).map_err(|e| SqlError::new("dsn", e))?;
        }
        Ok(dsn)
    }

    /// What is valid but likely not meant, for `check` and the log.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(channel) = &self.notify_channel {
            if channel.bytes().any(|b| b.is_ascii_uppercase()) {
                let quoted = channel.replace('"', "\"\"");
                let literal = channel.replace('\'', "''");
                out.push(format!(
                    "notify_channel {channel:?} has upper-case letters: sdbridge LISTENs on it exactly (quoted), so only NOTIFY \"{quoted}\" or SELECT pg_notify('{literal}', '') reach it; an unquoted NOTIFY {channel} is folded to {:?} and does not",
                    channel.to_ascii_lowercase()
                ));
            }
        }
        out
    }

    /// What selects the rows read ([`crate::source::Source::selects`]):
    /// the DSN's target, redacted (scheme, user, host, port, database and
    /// parameters), whether inline or in `dsn_file`, and the query.
    pub fn selects(&self) -> String {
        let target = match (&self.dsn, &self.loaded) {
            (Some(secret), _) => match Dsn::parse(&secret.0) {
                Ok(dsn) => dsn.redacted().to_string(),
                Err(_) => "(invalid dsn)".to_string(),
            },
            (None, Some(loaded)) => loaded.redacted.clone(),
            (None, None) => format!("dsn_file={:?}", self.dsn_file),
        };
        format!("dsn={target:?} query={:?}", self.query)
    }

    /// Short description for the status page and logs (no secrets).
    pub fn describe(&self) -> String {
        let mut s = match (&self.dsn, &self.dsn_file) {
            (Some(secret), _) => match Dsn::parse(&secret.0) {
                Ok(dsn) => format!("sql_sd_configs {}", dsn.redacted()),
                Err(_) => "sql_sd_configs (invalid dsn)".to_string(),
            },
            (None, Some(file)) => match &self.loaded {
                Some(loaded) => format!("sql_sd_configs dsn_file={file} ({})", loaded.redacted),
                None => format!("sql_sd_configs dsn_file={file} (unreadable at load)"),
            },
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
            "sql_sd_configs dsn_file=/etc/sdbridge/secrets/dsn (unreadable at load) notify_channel=inv"
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
        // Another database: refused until a reload, naming both.
        std::fs::write(&file, "postgres://u:three@127.0.0.1/other").unwrap();
        let err = c.dsn().unwrap_err();
        assert_eq!(err.kind, "dsn");
        assert!(
            err.message.contains(
                "now names postgres://u:***@127.0.0.1/other, not postgres://u:***@127.0.0.1/inv"
            ) && err.message.contains("reload"),
            "{err}"
        );
        assert!(
            !err.message.contains("three") && !err.message.contains("one"),
            "{err}"
        );
        std::fs::write(&file, "mysql://u:three@127.0.0.1/inv").unwrap();
        let err = c.dsn().unwrap_err();
        assert_eq!(err.kind, "dsn");
        // Loaded while unreadable: whatever it names is read.
        std::fs::remove_file(&file).unwrap();
        let mut c = c;
        c.set_directory(&dir.path().to_string_lossy());
        assert!(
            c.describe().contains("(unreadable at load)"),
            "{}",
            c.describe()
        );
        std::fs::write(&file, "mysql://u:three@127.0.0.1/inv").unwrap();
        let err = c.dsn().unwrap_err();
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

    /// Loads a one-job config whose sql_sd_configs entry reads `dsn_file`
    /// holding `dsn`.
    fn with_file(dir: &Path, dsn: &str) -> Vec<crate::source::SourceConfig> {
        std::fs::write(dir.join("dsn"), dsn).unwrap();
        let c = Config::parse(
            "jobs:\n  - job_name: a\n    sql_sd_configs:\n      - {dsn_file: dsn, query: q}\n",
            &dir.join("sdbridge.yml"),
        )
        .unwrap();
        crate::source::sources_of(&c.jobs[0])
    }

    #[test]
    fn a_changed_dsn_file_restarts_the_source_and_its_target_changes_the_state_key() {
        let dir = tempfile::tempdir().unwrap();
        let base = "postgres://u:s3cret-one@127.0.0.1:5432/inv";
        let key = |s: &[crate::source::SourceConfig]| {
            crate::state::job_key("a", crate::source::key_parts(s))
        };
        let names = crate::source::source_names;
        let old = with_file(dir.path(), base);
        assert!(old[0]
            .describe()
            .ends_with("(postgres://u:***@127.0.0.1:5432/inv)"));
        let again = with_file(dir.path(), &format!("{base}\n"));
        assert!(old[0].same(&*again[0]), "an unchanged DSN keeps the source");
        assert_eq!(key(&old), key(&again));
        // A new password: reconnect (restart), same state key and name.
        let password = with_file(dir.path(), "postgres://u:s3cret-two@127.0.0.1:5432/inv");
        assert!(!old[0].same(&*password[0]));
        assert_eq!(key(&old), key(&password));
        assert_eq!(names(&old), names(&password));
        for other in [
            "mysql://u:s3cret-one@127.0.0.1:5432/inv",
            "postgres://v:s3cret-one@127.0.0.1:5432/inv",
            "postgres://u:s3cret-one@127.0.0.2:5432/inv",
            "postgres://u:s3cret-one@127.0.0.1:5433/inv",
            "postgres://u:s3cret-one@127.0.0.1:5432/other",
        ] {
            let new = with_file(dir.path(), other);
            assert!(!old[0].same(&*new[0]), "{other}");
            assert_ne!(key(&old), key(&new), "{other}");
            assert!(!format!("{:?}{}", new[0], new[0].describe()).contains("s3cret"));
        }
    }

    #[test]
    fn source_names_differ_with_the_dsn() {
        let c = Config::parse(
            "jobs:\n  - job_name: a\n    sql_sd_configs:\n      - {dsn: 'mysql://u:pw@127.0.0.1/a', query: q}\n      - {dsn: 'mysql://u:pw@127.0.0.1/b', query: q}\n      - {dsn: 'postgres://u:pw@127.0.0.1/a', query: q}\n      - {dsn: 'sqlite:///srv/a.db', query: q}\n      - {dsn: 'mysql://u:other@127.0.0.1/a', query: q}\n",
            Path::new("/etc/sdbridge/sdbridge.yml"),
        )
        .unwrap();
        let names = crate::source::source_names(&crate::source::sources_of(&c.jobs[0]));
        let distinct: std::collections::BTreeSet<_> = names[..4].iter().collect();
        assert_eq!(distinct.len(), 4, "{names:?}");
        // The password is not in the name: the same DSN otherwise is a
        // second entry of the same name.
        assert_eq!(names[4], format!("{}.1", names[0]));
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
