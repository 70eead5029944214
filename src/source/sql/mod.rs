//! `sql_sd_configs`: targets from an inventory database (MySQL/MariaDB,
//! PostgreSQL, SQLite), CONTRACT section 5. This module is the database
//! half: configuration ([`config`]), DSNs ([`dsn`]), one connection that
//! runs the query ([`Database`]), `NOTIFY` wake-ups ([`Listener`]) and the
//! row conversion; [`task`] runs it on the shared refresh loop.
//!
//! # Rows to targets
//!
//! One row is one target: the `__address__` column. Every other column is
//! a label named as the column; a NULL leaves the label out. Rows with the
//! same labels form one group; groups are sorted by their sorted
//! `(name, value)` lists and targets within a group are sorted and
//! deduplicated, so the result depends neither on row order nor on the
//! database. Checked before the query runs (names come from preparing
//! it): every column name must be a valid label name, no name may repeat,
//! and `__address__` must be there.
//!
//! A NULL or empty `__address__` fails the whole query (naming the row),
//! like any bad value: a half-served inventory is worse than the last good
//! one, which the source keeps serving.
//!
//! # Values as text
//!
//! Values are read in each protocol's binary form and written by sdbridge,
//! so the same rows give the same bytes on every database:
//!
//! | value | MySQL/MariaDB | PostgreSQL | SQLite | text |
//! |---|---|---|---|---|
//! | integer | `TINYINT` (also `TINYINT(1)`/`BOOLEAN`) … `BIGINT [UNSIGNED]`, `YEAR`, `BIT` (as an unsigned integer) | `int2`, `int4`, `int8`, `oid` | `INTEGER` | decimal: `1`, `-5` |
//! | decimal | `DECIMAL` | `numeric` | — | as the server gives it: `1.50`; `NaN`, `Infinity` |
//! | float | `FLOAT`, `DOUBLE` | `real`, `float8` | `REAL` | ECMAScript's `Number::toString`: the shortest digits that read back as the same `f64` (a `FLOAT`/`real`: the same `f32`), an exponent from 1e21 and below 1e-6: `1`, `0.1`, `1.1` for a `FLOAT` 1.1, `1e+38`, `1e-7`, `-0` is `0`; `NaN`, `+Inf`, `-Inf` |
//! | boolean | (integers, above) | `boolean` | — | `true`, `false` |
//! | date | `DATE` | `date` | — | `2026-12-02`; PostgreSQL's `infinity`, `-infinity` |
//! | timestamp | `DATETIME`, `TIMESTAMP` | `timestamp`, `timestamptz` | — | UTC, RFC 3339, fraction without trailing zeros: `2026-12-02T10:00:00Z`, `…:00.5Z` |
//! | time of day | `TIME` | `time` | — | `10:00:00`, `-838:59:59`, `10:00:00.25` |
//! | text | `CHAR`, `VARCHAR`, `*TEXT`, `ENUM`, `SET`, in any collation (`_bin` too) | `text`, `varchar`, `char(n)`, `name`, `"char"`, enums | `TEXT` | as stored (UTF-8) |
//! | uuid | `UUID` (MariaDB, as its text) | `uuid` | — | `0e4f…-…` lower-case, hyphenated |
//!
//! Time zones: MySQL sessions run with `time_zone = '+00:00'`, so a
//! `TIMESTAMP` comes out in UTC and a `DATETIME` is taken as UTC;
//! PostgreSQL's `timestamptz` is UTC on the wire and a `timestamp` is
//! taken as UTC. Dates outside years 0000–9999 are an error (RFC 3339
//! has four-digit years). MySQL's zero dates, and dates with a zero month
//! or day (a permissive `sql_mode` stores them), name no day and so no
//! instant: they are served as MariaDB shows them, `0000-00-00`,
//! `0000-00-00 00:00:00`, `2026-12-00 10:00:00` (sqlx reads them as
//! NULL; only a real NULL leaves the label out).
//! SQLite goes by each value's storage class, not the declared type.
//!
//! Refused, with an error naming the column (cast it to text in SQL):
//! binary (`BINARY`, `VARBINARY`, `*BLOB`, `bytea`, a SQLite BLOB value)
//! and JSON (MySQL `JSON`, `json`, `jsonb`). On MySQL/MariaDB binary means
//! the `binary` character set (63): the protocol also sets the BINARY flag
//! on text in a `_bin` collation, on expressions over it (`CONCAT`,
//! `LOWER`) and on MariaDB's `UUID` and `INET6`, which carry a text
//! character set and are text (sqlx 0.8 goes by the flag; the copy in
//! `vendor/sqlx-mysql` goes by the character set, as later sqlx does).
//! MariaDB's `JSON` is a `LONGTEXT` in `utf8mb4_bin` on the wire, so it is
//! served as its text. Every other
//! type (`interval`, `inet`, `timetz`, arrays, ranges, `money`, `xml`,
//! `GEOMETRY`, extension types) is refused naming its type rather than
//! guessed at.
//!
//! # Read-only and timeouts
//!
//! The query is prepared (one statement only on MySQL and PostgreSQL) and
//! runs in a read-only transaction that is always rolled back:
//!
//! - MySQL/MariaDB: `START TRANSACTION READ ONLY`, with the session set to
//!   `SET SESSION TRANSACTION READ ONLY` as well, so DDL (which commits
//!   implicitly) is refused too. Time limit: MariaDB's `max_statement_time`
//!   (seconds, every statement), MySQL's `max_execution_time` (ms,
//!   `SELECT` only), detected from `VERSION()`.
//! - PostgreSQL: `BEGIN READ ONLY; SET LOCAL statement_timeout`, and the
//!   session starts with `default_transaction_read_only = on`.
//! - SQLite: the file is opened read-only with `PRAGMA query_only`; a
//!   progress handler interrupts the statement at the deadline.
//!
//! The client also gives up `CLIENT_GRACE` after `query_timeout`, drops
//! the connection ([`Database::is_broken`]) and stops the server's
//! statement from a second connection (`KILL QUERY`,
//! `pg_cancel_backend`). A result that arrives later than `query_timeout`
//! is a timeout too (MySQL's interrupted `SLEEP` returns 1 instead of
//! failing). Prepared statements are closed after each query, so a schema
//! change never meets a stale cached plan.
//!
//! # Secrets
//!
//! The DSN's password is never printed: [`Dsn`]'s `Debug` and `Display`
//! are its redacted form, and every driver message is scrubbed of every
//! spelling of the password before it becomes a [`SqlError`].

pub mod config;
mod convert;
mod db;
pub mod dsn;
mod task;
mod text;

pub use config::SqlSdConfig;
pub use convert::ADDRESS;
pub use db::{Database, Listener, QueryResult, CLIENT_GRACE};
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
