//! The `dsn` URL: which database it names, a redacted form for logs and the
//! status page, and scrubbing of its secrets out of driver messages.

use std::fmt;
use std::str::FromStr;

use percent_encoding::percent_decode_str;
use sqlx::mysql::MySqlConnectOptions;
use sqlx::postgres::PgConnectOptions;
use sqlx::sqlite::SqliteConnectOptions;

use super::SqlError;
use crate::gopath;

/// Which database server a DSN speaks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// MySQL or MariaDB (`mysql://`, `mariadb://`).
    Mysql,
    /// PostgreSQL (`postgres://`, `postgresql://`).
    Postgres,
    /// A SQLite file (`sqlite://PATH`), opened read-only.
    Sqlite,
}

impl Backend {
    /// The name used in messages and on the status page.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Mysql => "MySQL/MariaDB",
            Backend::Postgres => "PostgreSQL",
            Backend::Sqlite => "SQLite",
        }
    }
}

/// A parsed DSN. Its `Debug` and `Display` are the redacted form: the
/// password never leaves this type except towards the driver.
#[derive(Clone, PartialEq, Eq)]
pub struct Dsn {
    backend: Backend,
    /// What the driver is given: `mariadb://` spelled `mysql://`, a
    /// relative SQLite path made absolute.
    url: String,
    /// `url` with the password and `password=` parameters as `***`.
    redacted: String,
    /// Every spelling of a secret in the DSN (as written and
    /// percent-decoded), longest first, for [`Dsn::scrub`].
    secrets: Vec<String>,
}

/// Query parameters whose values are secrets.
const SECRET_PARAMS: [&str; 2] = ["password", "sslpassword"];

impl Dsn {
    /// Parses `text` (a URL: `mysql://`, `mariadb://`, `postgres://`,
    /// `postgresql://` or `sqlite://PATH`). Errors never quote the text.
    pub fn parse(text: &str) -> Result<Dsn, SqlError> {
        let invalid = |why: &str| SqlError::new("dsn", format!("invalid dsn: {why}"));
        let Some((scheme, rest)) = text.split_once("://") else {
            return Err(invalid(
                "expected a URL starting mysql://, mariadb://, postgres://, postgresql:// or sqlite://",
            ));
        };
        let (backend, scheme) = match scheme {
            "mysql" | "mariadb" => (Backend::Mysql, "mysql"),
            "postgres" | "postgresql" => (Backend::Postgres, scheme),
            "sqlite" => (Backend::Sqlite, "sqlite"),
            other if other.len() <= 16 && other.bytes().all(|b| b.is_ascii_alphanumeric()) => {
                return Err(invalid(&format!(
                    "unsupported scheme {other:?}: use mysql://, mariadb://, postgres://, postgresql:// or sqlite://"
                )))
            }
            _ => return Err(invalid("unsupported scheme")),
        };
        if backend != Backend::Sqlite && text.chars().any(char::is_whitespace) {
            return Err(invalid("contains whitespace (percent-encode it: %20)"));
        }
        let mut secrets = Vec::new();
        let (authority, tail) = rest.split_at(rest.find(['/', '?', '#']).unwrap_or(rest.len()));
        let authority = match authority.rsplit_once('@') {
            Some((userinfo, host)) => match userinfo.split_once(':') {
                Some((user, password)) => {
                    add_secret(&mut secrets, password);
                    format!("{user}:***@{host}")
                }
                None => format!("{userinfo}@{host}"),
            },
            None => authority.to_string(),
        };
        let tail = redact_params(tail, &mut secrets);
        if backend == Backend::Sqlite {
            let path = sqlite_path(rest);
            if path.is_empty() {
                return Err(invalid("sqlite:// needs a file path (sqlite://PATH)"));
            }
            if path == ":memory:" || rest.contains("mode=memory") {
                return Err(invalid(
                    "an in-memory SQLite database holds no rows: name a file",
                ));
            }
        } else if authority.rsplit('@').next().unwrap_or("").is_empty() && !tail.contains("host=") {
            return Err(invalid("no host"));
        }
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        let dsn = Dsn {
            backend,
            url: format!("{scheme}://{rest}"),
            redacted: format!("{scheme}://{authority}{tail}"),
            secrets,
        };
        // What the driver would refuse at connect time, refused now.
        let checked = match backend {
            Backend::Mysql => MySqlConnectOptions::from_str(&dsn.url).map(drop),
            Backend::Postgres => PgConnectOptions::from_str(&dsn.url).map(drop),
            Backend::Sqlite => SqliteConnectOptions::from_str(&dsn.url).map(drop),
        };
        checked.map_err(|e| invalid(&dsn.scrub(&e.to_string())))?;
        Ok(dsn)
    }

    /// Makes a relative SQLite path relative to `base_dir` (the config
    /// file's directory); other DSNs are returned as they are.
    pub fn resolve(mut self, base_dir: &str) -> Dsn {
        if self.backend != Backend::Sqlite {
            return self;
        }
        let rest = &self.url["sqlite://".len()..];
        let path = sqlite_path(rest);
        let params = &rest[path.len()..];
        let joined = gopath::join_dir(base_dir, path);
        self.url = format!("sqlite://{joined}{params}");
        self.redacted = self.url.clone();
        self
    }

    /// The database server this DSN names.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The DSN with its password replaced by `***`, for logs, `/metrics`
    /// and the status page.
    pub fn redacted(&self) -> &str {
        &self.redacted
    }

    /// A short description for the status page: the server kind and the
    /// redacted DSN.
    pub fn describe(&self) -> String {
        format!("{} {}", self.backend.name(), self.redacted)
    }

    /// `text` with every spelling of the DSN's secrets replaced by `***`:
    /// driver messages can quote the URL or its parts.
    pub fn scrub(&self, text: &str) -> String {
        let mut out = text.replace(&self.url, &self.redacted);
        for secret in &self.secrets {
            out = out.replace(secret.as_str(), "***");
        }
        out
    }

    /// The URL handed to the driver.
    pub(crate) fn url(&self) -> &str {
        &self.url
    }
}

impl fmt::Debug for Dsn {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "Dsn({})", self.redacted)
    }
}

impl fmt::Display for Dsn {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&self.redacted)
    }
}

/// The file path of a `sqlite://` DSN's remainder: up to the parameters.
fn sqlite_path(rest: &str) -> &str {
    &rest[..rest.find(['?', '#']).unwrap_or(rest.len())]
}

/// Records `secret` as written and percent-decoded (empty ones are no
/// secret).
fn add_secret(secrets: &mut Vec<String>, secret: &str) {
    if secret.is_empty() {
        return;
    }
    secrets.push(secret.to_string());
    let decoded = percent_decode_str(secret).decode_utf8_lossy();
    if decoded != secret {
        secrets.push(decoded.into_owned());
    }
}

/// `tail` (path, `?query`, `#fragment`) with the values of secret query
/// parameters replaced by `***` and recorded in `secrets`.
fn redact_params(tail: &str, secrets: &mut Vec<String>) -> String {
    let Some((path, query)) = tail.split_once('?') else {
        return tail.to_string();
    };
    let params: Vec<String> = query
        .split('&')
        .map(|param| match param.split_once('=') {
            Some((key, value)) if SECRET_PARAMS.iter().any(|s| key.eq_ignore_ascii_case(s)) => {
                add_secret(secrets, value);
                format!("{key}=***")
            }
            _ => param.to_string(),
        })
        .collect();
    format!("{path}?{}", params.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_and_redacts() {
        let cases = [
            (
                "mysql://user:s3cr%40t@127.0.0.1:3306/db",
                Backend::Mysql,
                "mysql://user:***@127.0.0.1:3306/db",
            ),
            (
                "mariadb://user:pw@127.0.0.1/db?ssl-mode=required",
                Backend::Mysql,
                "mysql://user:***@127.0.0.1/db?ssl-mode=required",
            ),
            (
                "postgres://u@127.0.0.1:5432/inv?password=hunter2&sslmode=disable",
                Backend::Postgres,
                "postgres://u@127.0.0.1:5432/inv?password=***&sslmode=disable",
            ),
            (
                "postgresql://u:p:q@[::1]:5432/inv",
                Backend::Postgres,
                "postgresql://u:***@[::1]:5432/inv",
            ),
            (
                "postgres:///inv?host=/run/postgresql",
                Backend::Postgres,
                "postgres:///inv?host=/run/postgresql",
            ),
            (
                "sqlite:///var/lib/inv.db",
                Backend::Sqlite,
                "sqlite:///var/lib/inv.db",
            ),
        ];
        for (text, backend, redacted) in cases {
            let dsn = Dsn::parse(text).unwrap();
            assert_eq!(dsn.backend(), backend, "{text}");
            assert_eq!(dsn.redacted(), redacted, "{text}");
            assert_eq!(format!("{dsn}"), redacted);
            assert_eq!(format!("{dsn:?}"), format!("Dsn({redacted})"));
        }
        let dsn = Dsn::parse("mariadb://u:pw@127.0.0.1/db").unwrap();
        assert_eq!(dsn.url(), "mysql://u:pw@127.0.0.1/db");
        assert_eq!(dsn.describe(), "MySQL/MariaDB mysql://u:***@127.0.0.1/db");
    }

    #[test]
    fn scrubs_every_spelling_of_the_password() {
        let dsn = Dsn::parse("mysql://user:s3cr%40t@127.0.0.1:3306/db").unwrap();
        let scrubbed = dsn
            .scrub("failed mysql://user:s3cr%40t@127.0.0.1:3306/db: password s3cr@t or s3cr%40t");
        assert_eq!(
            scrubbed,
            "failed mysql://user:***@127.0.0.1:3306/db: password *** or ***"
        );
        let dsn = Dsn::parse("postgres://u@h/db?password=pa%20ss").unwrap();
        assert_eq!(dsn.scrub("pa ss / pa%20ss"), "*** / ***");
    }

    #[test]
    fn relative_sqlite_paths_follow_the_config_directory() {
        let dsn = Dsn::parse("sqlite://inv/hosts.db?mode=ro").unwrap();
        let dsn = dsn.resolve("/etc/sdbridge");
        assert_eq!(dsn.url(), "sqlite:///etc/sdbridge/inv/hosts.db?mode=ro");
        assert_eq!(
            dsn.redacted(),
            "sqlite:///etc/sdbridge/inv/hosts.db?mode=ro"
        );
        let abs = Dsn::parse("sqlite:///srv/x.db").unwrap().resolve("/etc");
        assert_eq!(abs.url(), "sqlite:///srv/x.db");
        let pg = Dsn::parse("postgres://h/db").unwrap().resolve("/etc");
        assert_eq!(pg.url(), "postgres://h/db");
    }

    #[test]
    fn rejects_what_it_cannot_use_without_quoting_it() {
        let cases = [
            ("127.0.0.1:3306", "expected a URL"),
            ("oracle://u:topsecret@h/db", "unsupported scheme \"oracle\""),
            ("sqlite://", "needs a file path"),
            ("sqlite://:memory:", "in-memory"),
            ("mysql://u:topsecret@/db", "no host"),
            ("mysql://u:top secret@h/db", "whitespace"),
            ("mysql://u:topsecret@h:port/db", "invalid dsn: "),
            (
                "postgres://u:topsecret@h/db?sslmode=sometimes",
                "invalid dsn: ",
            ),
            ("sqlite:///x.db?mode=sideways", "invalid dsn: "),
        ];
        for (text, want) in cases {
            let err = Dsn::parse(text).unwrap_err();
            assert_eq!(err.kind, "dsn");
            assert!(err.message.contains(want), "{text}: {}", err.message);
            assert!(!err.message.contains("topsecret"), "{}", err.message);
        }
    }
}
