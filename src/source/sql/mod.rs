//! `sql_sd_configs`: targets from an inventory database (MySQL/MariaDB,
//! PostgreSQL, SQLite), CONTRACT section 5. So far: configuration
//! ([`config`]) and DSNs ([`dsn`]).

pub mod config;
pub mod dsn;

pub use config::SqlSdConfig;
pub use dsn::{Backend, Dsn};

/// A failure of the SQL source, for the log, `/metrics` and the status
/// page. Never contains the DSN's password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SqlError {
    /// What failed, a metric label: `dsn`, `connect`, `query`,
    /// `timeout`, `column`, `value` or `listen`.
    pub kind: &'static str,
    /// What went wrong, naming the column, row or setting.
    pub message: String,
}

impl SqlError {
    /// An error of `kind`.
    pub fn new(kind: &'static str, message: impl Into<String>) -> SqlError {
        SqlError {
            kind,
            message: message.into(),
        }
    }
}
