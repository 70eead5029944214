//! One database connection per source: connect, run the query read-only
//! under both a server-side and a client-side timeout, and (PostgreSQL)
//! wait for `NOTIFY`.

use std::str::FromStr;
use std::time::{Duration, Instant};

use futures_util::TryStreamExt;
use sqlx::mysql::{MySql, MySqlConnectOptions, MySqlConnection, MySqlDatabaseError};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgListener, PgPoolOptions, Postgres};
use sqlx::sqlite::{Sqlite, SqliteConnectOptions, SqliteConnection};
use sqlx::{Column, ConnectOptions, Connection, Executor, Row, Statement};

use super::convert::{self, Grouper};
use super::dsn::{Backend, Dsn};
use super::SqlError;
use crate::targetgroup::TargetGroup;

/// How much longer than `query_timeout` the client waits before giving up
/// on the server enforcing it (network stalls, a server ignoring it).
pub const CLIENT_GRACE: Duration = Duration::from_secs(1);

/// How long a best-effort cancel of a runaway statement may take.
const CANCEL_TIMEOUT: Duration = Duration::from_secs(2);

/// SQLite: VM steps between two looks at the deadline.
const SQLITE_PROGRESS_STEPS: i32 = 1000;

/// What one query produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueryResult {
    /// The groups, sorted (see [`crate::source::sql`]).
    pub groups: Vec<TargetGroup>,
    /// Rows the query returned.
    pub rows: usize,
    /// Warnings (duplicate rows served once), for the log.
    pub skipped: Vec<String>,
}

/// One open connection (not a pool: one query connection per source).
pub struct Database {
    conn: Conn,
    dsn: Dsn,
    query_timeout: Duration,
    broken: bool,
}

enum Conn {
    Mysql {
        conn: MySqlConnection,
        /// Connection ID, for `KILL QUERY` from a second connection.
        id: String,
    },
    Postgres {
        conn: PgConnection,
        /// Backend PID, for `pg_cancel_backend` from a second connection.
        pid: String,
    },
    Sqlite {
        conn: SqliteConnection,
    },
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("dsn", &self.dsn)
            .field("query_timeout", &self.query_timeout)
            .field("broken", &self.broken)
            .finish()
    }
}

impl Database {
    /// Connects (bounded by `query_timeout`) and sets the session up:
    /// MySQL/MariaDB `time_zone` `+00:00`, read-only transactions and the
    /// statement time limit; PostgreSQL read-only by default; SQLite
    /// opened read-only with `query_only`.
    pub async fn connect(dsn: &Dsn, query_timeout: Duration) -> Result<Database, SqlError> {
        let setup = async {
            let conn = match dsn.backend() {
                Backend::Mysql => connect_mysql(dsn, query_timeout).await?,
                Backend::Postgres => connect_pg(dsn).await?,
                Backend::Sqlite => Conn::Sqlite {
                    conn: SqliteConnection::connect_with(&sqlite_options(dsn, query_timeout)?)
                        .await?,
                },
            };
            Ok::<_, sqlx::Error>(conn)
        };
        let conn = match tokio::time::timeout(query_timeout, setup).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => {
                return Err(SqlError::new(
                    "connect",
                    format!("connecting to {}: {}", dsn.redacted(), describe(dsn, &e)),
                ))
            }
            Err(_) => {
                return Err(SqlError::new(
                    "connect",
                    format!(
                        "connecting to {}: no answer within {query_timeout:?} (query_timeout)",
                        dsn.redacted()
                    ),
                ))
            }
        };
        Ok(Database {
            conn,
            dsn: dsn.clone(),
            query_timeout,
            broken: false,
        })
    }

    /// Whether the connection is unusable (lost, or left mid-query by a
    /// client-side timeout): connect a new one.
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// The DSN this connection was opened with.
    pub fn dsn(&self) -> &Dsn {
        &self.dsn
    }

    /// Runs `query` in a read-only transaction with the server-side
    /// statement timeout set, bounded client-side too, then rolls back.
    /// A result that arrives after `query_timeout` (MySQL's `SLEEP`
    /// returns 1 when interrupted instead of failing) is a timeout too.
    pub async fn query(&mut self, query: &str) -> Result<QueryResult, SqlError> {
        if self.broken {
            return Err(SqlError::new(
                "connect",
                "the connection was lost: reconnect",
            ));
        }
        let start = Instant::now();
        let limit = self.query_timeout + CLIENT_GRACE;
        let outcome = tokio::time::timeout(limit, self.run(query)).await;
        let timed_out = || {
            SqlError::new(
                "timeout",
                format!(
                    "the query did not finish within {:?} (query_timeout)",
                    self.query_timeout
                ),
            )
        };
        match outcome {
            Err(_) => {
                self.broken = true;
                self.cancel().await;
                Err(timed_out())
            }
            Ok(Err(e)) => Err(e),
            Ok(Ok(_)) if start.elapsed() >= self.query_timeout => Err(timed_out()),
            Ok(Ok(result)) => Ok(result),
        }
    }

    async fn run(&mut self, query: &str) -> Result<QueryResult, SqlError> {
        let timeout = self.query_timeout;
        let begin = match &self.conn {
            Conn::Mysql { .. } => "START TRANSACTION READ ONLY".to_string(),
            Conn::Postgres { .. } => format!(
                "BEGIN READ ONLY; SET LOCAL statement_timeout = {}",
                timeout.as_millis().max(1)
            ),
            Conn::Sqlite { .. } => "BEGIN".to_string(),
        };
        if let Conn::Sqlite { conn } = &mut self.conn {
            let deadline = Instant::now() + timeout;
            let set = async {
                let mut handle = conn.lock_handle().await?;
                handle
                    .set_progress_handler(SQLITE_PROGRESS_STEPS, move || Instant::now() < deadline);
                Ok::<_, sqlx::Error>(())
            };
            if let Err(e) = set.await {
                return Err(self.failed(e));
            }
        }
        self.execute(&begin).await?;
        let result = match &mut self.conn {
            Conn::Mysql { conn, .. } => select::<MySql>(conn, query, convert::mysql_value).await,
            Conn::Postgres { conn, .. } => select::<Postgres>(conn, query, convert::pg_value).await,
            Conn::Sqlite { conn } => select::<Sqlite>(conn, query, convert::sqlite_value).await,
        };
        if let Conn::Sqlite { conn } = &mut self.conn {
            // Before ROLLBACK, which the expired deadline would interrupt.
            let removed = async {
                conn.lock_handle().await?.remove_progress_handler();
                Ok::<_, sqlx::Error>(())
            };
            if let Err(e) = removed.await {
                self.broken = true;
                return Err(self.failed(e));
            }
        }
        let result = result.map_err(|e| match e {
            Failure::Sql(e) => e,
            Failure::Driver(e) => self.failed(e),
        });
        // Statements are prepared anew each time: a cached one breaks
        // (PostgreSQL's "cached plan must not change result type") when
        // the schema changes under it.
        let cleanup = async {
            match &mut self.conn {
                Conn::Mysql { conn, .. } => {
                    conn.execute("ROLLBACK").await?;
                    conn.clear_cached_statements().await
                }
                Conn::Postgres { conn, .. } => {
                    conn.execute("ROLLBACK").await?;
                    conn.clear_cached_statements().await
                }
                Conn::Sqlite { conn } => {
                    conn.execute("ROLLBACK").await?;
                    conn.clear_cached_statements().await
                }
            }
        };
        if let Err(e) = cleanup.await {
            let e = self.failed(e);
            self.broken = true;
            return Err(result.err().unwrap_or(e));
        }
        let (groups, rows, skipped) = result?;
        Ok(QueryResult {
            groups,
            rows,
            skipped,
        })
    }

    async fn execute(&mut self, sql: &str) -> Result<(), SqlError> {
        let done = match &mut self.conn {
            Conn::Mysql { conn, .. } => conn.execute(sql).await.map(drop),
            Conn::Postgres { conn, .. } => conn.execute(sql).await.map(drop),
            Conn::Sqlite { conn } => conn.execute(sql).await.map(drop),
        };
        done.map_err(|e| self.failed(e))
    }

    /// Maps a driver error to a [`SqlError`] (scrubbed), marking the
    /// connection broken when it is a connection-level failure.
    fn failed(&mut self, e: sqlx::Error) -> SqlError {
        if is_connection_error(&e) {
            self.broken = true;
            return SqlError::new(
                "connect",
                format!(
                    "lost the connection to {}: {}",
                    self.dsn.redacted(),
                    describe(&self.dsn, &e)
                ),
            );
        }
        if is_timeout(&e) {
            return SqlError::new(
                "timeout",
                format!(
                    "the query did not finish within {:?} (query_timeout): {}",
                    self.query_timeout,
                    describe(&self.dsn, &e)
                ),
            );
        }
        SqlError::new(
            "query",
            format!("the query failed: {}", describe(&self.dsn, &e)),
        )
    }

    /// Best effort, from a second connection: stops the statement a
    /// client-side timeout left running on the server.
    async fn cancel(&self) {
        let dsn = &self.dsn;
        let cancel = async {
            match &self.conn {
                Conn::Mysql { id, .. } => {
                    let mut side = MySqlConnection::connect_with(&mysql_options(dsn)?).await?;
                    side.execute(format!("KILL QUERY {id}").as_str()).await?;
                    side.close().await
                }
                Conn::Postgres { pid, .. } => {
                    let mut side = PgConnection::connect_with(&pg_options(dsn)?).await?;
                    side.execute(format!("SELECT pg_cancel_backend({pid})").as_str())
                        .await?;
                    side.close().await
                }
                // The progress handler stops SQLite's statement.
                Conn::Sqlite { .. } => Ok(()),
            }
        };
        match tokio::time::timeout(CANCEL_TIMEOUT, cancel).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(dsn = %dsn, error = %describe(dsn, &e), "cancelling a timed-out query failed")
            }
            Err(_) => tracing::warn!(dsn = %dsn, "cancelling a timed-out query timed out"),
        }
    }
}

/// Why [`select`] failed: a conversion error, or the driver's.
enum Failure {
    Sql(SqlError),
    Driver(sqlx::Error),
}

impl From<sqlx::Error> for Failure {
    fn from(e: sqlx::Error) -> Failure {
        Failure::Driver(e)
    }
}

impl From<SqlError> for Failure {
    fn from(e: SqlError) -> Failure {
        Failure::Sql(e)
    }
}

/// A value of database `DB` as label text (`None`: NULL).
type ValueFn<DB> =
    for<'r> fn(&str, <DB as sqlx::Database>::ValueRef<'r>) -> Result<Option<String>, SqlError>;

/// Prepares `query` (one statement; its columns are checked before it
/// runs), runs it and groups the rows.
async fn select<DB>(
    conn: &mut DB::Connection,
    query: &str,
    value: ValueFn<DB>,
) -> Result<(Vec<TargetGroup>, usize, Vec<String>), Failure>
where
    DB: sqlx::Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: sqlx::IntoArguments<'q, DB>,
    usize: sqlx::ColumnIndex<DB::Row>,
{
    let statement = (&mut *conn).prepare(query).await?;
    let names: Vec<String> = statement
        .columns()
        .iter()
        .map(|c| c.name().to_string())
        .collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut grouper = Grouper::new(&refs)?;
    // Streamed: only the grouped labels are kept, never every row at once.
    let mut rows = statement.query().fetch(&mut *conn);
    while let Some(row) = rows.try_next().await? {
        let mut values = Vec::with_capacity(names.len());
        for (i, name) in names.iter().enumerate() {
            values.push(value(name, row.try_get_raw(i)?)?);
        }
        grouper.push(values)?;
    }
    Ok(grouper.finish())
}

/// sqlx logs every statement, and at WARN every one over 1 s with its
/// SQL: at each round of a slow inventory query. Both at debug; the
/// source's own log says when something starts and stops going wrong,
/// and `sdbridge_source_refresh_duration_seconds` how long queries take.
fn quiet<O: ConnectOptions>(options: O) -> O {
    options
        .log_statements(log::LevelFilter::Debug)
        .log_slow_statements(log::LevelFilter::Debug, Duration::from_secs(1))
}

fn mysql_options(dsn: &Dsn) -> Result<MySqlConnectOptions, sqlx::Error> {
    // Keep the server's sql_mode (sqlx would add PIPES_AS_CONCAT, which
    // changes what `||` means in the operator's query).
    Ok(quiet(MySqlConnectOptions::from_str(dsn.url())?)
        .pipes_as_concat(false)
        .no_engine_substitution(false)
        .timezone(Some("+00:00".to_string())))
}

async fn connect_mysql(dsn: &Dsn, query_timeout: Duration) -> Result<Conn, sqlx::Error> {
    let mut conn = MySqlConnection::connect_with(&mysql_options(dsn)?).await?;
    let row = sqlx::query("SELECT VERSION(), CONNECTION_ID()")
        .fetch_one(&mut conn)
        .await?;
    let text = |i: usize| -> Result<String, sqlx::Error> {
        let raw = row.try_get_raw(i)?;
        convert::mysql_value("", raw)
            .map_err(|e| sqlx::Error::Protocol(e.message))
            .map(Option::unwrap_or_default)
    };
    let (version, id) = (text(0)?, text(1)?);
    // MariaDB limits every statement, in seconds; MySQL only SELECTs, in
    // milliseconds (and its SLEEP returns 1 instead of failing).
    let limit = if version.contains("MariaDB") {
        format!(
            "SET SESSION max_statement_time = {:.6}",
            query_timeout.as_secs_f64()
        )
    } else {
        format!(
            "SET SESSION max_execution_time = {}",
            query_timeout.as_millis().max(1)
        )
    };
    conn.execute(limit.as_str()).await?;
    // Also covers statements that commit implicitly (DDL), which would
    // end the READ ONLY transaction each query starts.
    conn.execute("SET SESSION TRANSACTION READ ONLY").await?;
    Ok(Conn::Mysql { conn, id })
}

fn pg_options(dsn: &Dsn) -> Result<PgConnectOptions, sqlx::Error> {
    let options = quiet(PgConnectOptions::from_str(dsn.url())?)
        .options([("default_transaction_read_only", "on")]);
    Ok(match options.get_application_name() {
        Some(_) => options,
        None => options.application_name("sdbridge"),
    })
}

async fn connect_pg(dsn: &Dsn) -> Result<Conn, sqlx::Error> {
    let mut conn = PgConnection::connect_with(&pg_options(dsn)?).await?;
    let row = sqlx::query("SELECT pg_backend_pid()")
        .fetch_one(&mut conn)
        .await?;
    let pid = convert::pg_value("", row.try_get_raw(0)?)
        .map_err(|e| sqlx::Error::Protocol(e.message))?
        .unwrap_or_default();
    Ok(Conn::Postgres { conn, pid })
}

fn sqlite_options(dsn: &Dsn, query_timeout: Duration) -> Result<SqliteConnectOptions, sqlx::Error> {
    Ok(quiet(SqliteConnectOptions::from_str(dsn.url())?)
        .read_only(true)
        .create_if_missing(false)
        .busy_timeout(query_timeout)
        .pragma("query_only", "ON"))
}

/// A driver error as text without secrets.
fn describe(dsn: &Dsn, e: &sqlx::Error) -> String {
    let text = match e {
        sqlx::Error::Database(db) => match db.code() {
            Some(code) => format!("{} ({code})", db.message()),
            None => db.message().to_string(),
        },
        other => other.to_string(),
    };
    dsn.scrub(&text)
}

fn is_connection_error(e: &sqlx::Error) -> bool {
    matches!(
        e,
        sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
    )
}

/// Whether the server (or SQLite's progress handler) stopped the
/// statement for running too long.
fn is_timeout(e: &sqlx::Error) -> bool {
    let sqlx::Error::Database(db) = e else {
        return false;
    };
    if let Some(my) = db.try_downcast_ref::<MySqlDatabaseError>() {
        // ER_STATEMENT_TIMEOUT (MariaDB), ER_QUERY_TIMEOUT (MySQL).
        return matches!(my.number(), 1969 | 3024);
    }
    // PostgreSQL query_canceled; SQLITE_INTERRUPT.
    matches!(db.code().as_deref(), Some("57014") | Some("9"))
}

/// PostgreSQL `LISTEN` on one channel, on a connection of its own.
pub struct Listener {
    listener: PgListener,
    dsn: Dsn,
    channel: String,
    lost: bool,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.debug_struct("Listener")
            .field("dsn", &self.dsn)
            .field("channel", &self.channel)
            .finish()
    }
}

impl Listener {
    /// Connects (bounded by `timeout`) and listens on `channel` (the exact
    /// name: it is quoted, so case matters).
    pub async fn connect(
        dsn: &Dsn,
        channel: &str,
        timeout: Duration,
    ) -> Result<Listener, SqlError> {
        if dsn.backend() != Backend::Postgres {
            return Err(SqlError::new(
                "dsn",
                format!(
                    "notify_channel needs PostgreSQL (LISTEN/NOTIFY), but the dsn is {}",
                    dsn.backend().name()
                ),
            ));
        }
        let setup = async {
            let pool = PgPoolOptions::new()
                .max_connections(1)
                .min_connections(0)
                .connect_with(pg_options(dsn)?)
                .await?;
            let mut listener = PgListener::connect_with(&pool).await?;
            listener.eager_reconnect(false);
            listener.listen(channel).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        let listener = match tokio::time::timeout(timeout, setup).await {
            Ok(Ok(listener)) => listener,
            Ok(Err(e)) => {
                return Err(SqlError::new(
                    "listen",
                    format!(
                        "listening on {channel:?} at {}: {}",
                        dsn.redacted(),
                        describe(dsn, &e)
                    ),
                ))
            }
            Err(_) => {
                return Err(SqlError::new(
                    "listen",
                    format!(
                        "listening on {channel:?} at {}: no answer within {timeout:?}",
                        dsn.redacted()
                    ),
                ))
            }
        };
        Ok(Listener {
            listener,
            dsn: dsn.clone(),
            channel: channel.to_string(),
            lost: false,
        })
    }

    /// Waits until a notification arrives (any that queued up meanwhile
    /// are taken with it: one refresh covers them). A lost connection is
    /// an error, and stays one: notifications may have been missed, so
    /// connect a new `Listener` (re-reading the DSN) and refresh once.
    pub async fn recv(&mut self) -> Result<(), SqlError> {
        let lost = || {
            SqlError::new(
                "listen",
                format!(
                    "lost the LISTEN connection to {} (notifications may have been missed)",
                    self.dsn.redacted()
                ),
            )
        };
        if self.lost {
            return Err(lost());
        }
        match self.listener.try_recv().await {
            Ok(Some(_)) => {
                while self.listener.next_buffered().is_some() {}
                Ok(())
            }
            Ok(None) => {
                self.lost = true;
                Err(lost())
            }
            Err(e) => {
                self.lost = true;
                Err(SqlError::new(
                    "listen",
                    format!(
                        "LISTEN connection to {}: {}",
                        self.dsn.redacted(),
                        describe(&self.dsn, &e)
                    ),
                ))
            }
        }
    }
}
