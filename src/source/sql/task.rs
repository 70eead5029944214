//! The `sql_sd_configs` source task: one query connection, the shared
//! refresh loop, and with `notify_channel` a `LISTEN` connection that wakes
//! it. A broken connection is dropped and opened again on the next round
//! (the refresh loop's backoff with jitter spaces the attempts), with the
//! DSN read again, so a rotated `dsn_file` password is picked up. While
//! the `LISTEN` connection is down the source reports it like a failed
//! round (up 0, the error on the status page), and clears it once it is
//! back; the connection is part of the task and ends with it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Mutex, Notify};

use super::{Database, Listener, SqlError, SqlSdConfig};
use crate::backoff::Backoff;
use crate::source::refresh::{self, Between};
use crate::source::{Source, SourceContext, SourceError, SourceFuture};

impl Source for SqlSdConfig {
    fn kind(&self) -> &'static str {
        "sql_sd"
    }

    fn describe(&self) -> String {
        SqlSdConfig::describe(self)
    }

    fn selects(&self) -> String {
        SqlSdConfig::selects(self)
    }

    fn run(self: Arc<Self>, ctx: SourceContext) -> SourceFuture {
        Box::pin(run(self, ctx))
    }
}

/// The metric label of an error kind.
fn error_kind(e: &SqlError) -> &'static str {
    match e.kind {
        "dsn" => "sql_dsn",
        "connect" => "sql_connect",
        "timeout" => "sql_timeout",
        "column" => "sql_column",
        "value" => "sql_value",
        "listen" => "sql_listen",
        _ => "sql_query",
    }
}

fn source_error(e: SqlError) -> SourceError {
    SourceError {
        kind: error_kind(&e),
        message: e.message,
    }
}

/// The DSN, read now (a `dsn_file` read happens off the async workers).
async fn dsn(config: &SqlSdConfig) -> Result<super::Dsn, SqlError> {
    let config = config.clone();
    tokio::task::spawn_blocking(move || config.dsn())
        .await
        .map_err(|e| SqlError::new("dsn", e.to_string()))?
}

async fn run(config: Arc<SqlSdConfig>, ctx: SourceContext) {
    for warning in config.warnings() {
        tracing::warn!(job = %ctx.out.job, source = %ctx.out.name, warning = %warning, "sql_sd_configs");
    }
    let wake = Arc::new(Notify::new());
    let (problem_tx, problem_rx) = watch::channel(None);
    let db: Arc<Mutex<Option<Database>>> = Arc::default();
    let duplicates = Arc::new(AtomicBool::new(false));
    let labels = ctx.out.labels();
    let metrics = ctx.out.metrics().cloned();
    let job = ctx.out.job.clone();
    let between = Between {
        wake: Some(wake.clone()),
        problem: Some(problem_rx),
    };
    let rounds = refresh::run(&ctx, config.refresh_interval.0, between, || {
        let (config, db, labels, metrics, job, duplicates) = (
            config.clone(),
            db.clone(),
            labels.clone(),
            metrics.clone(),
            job.clone(),
            duplicates.clone(),
        );
        async move {
            let mut db = db.lock().await;
            let result = query(&config, &mut db).await.map_err(source_error)?;
            // Duplicates are logged when they appear and when they are
            // gone, not on every round.
            let had = duplicates.swap(!result.skipped.is_empty(), Ordering::Relaxed);
            match (had, result.skipped.is_empty()) {
                (false, false) => {
                    tracing::warn!(job = %job, source = %labels.source, warnings = ?result.skipped, "sql_sd rows repeat a target with the same labels; each is served once (logged again when this ends)")
                }
                (true, true) => {
                    tracing::info!(job = %job, source = %labels.source, "sql_sd duplicate rows are gone")
                }
                _ => {}
            }
            if let Some(m) = &metrics {
                m.sql_rows(&labels, result.rows);
            }
            Ok(Some(result.groups))
        }
    });
    // The LISTEN connection lives and ends with this future: a supervisor
    // restart (which drops it) leaves no connection behind.
    let listening = async {
        match config.notify_channel.clone() {
            Some(channel) => listen(config.clone(), channel, wake, problem_tx, ctx.clone()).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = rounds => {}
        _ = listening => {}
    }
}

/// Runs the query on the kept connection, opening one when there is none
/// or it broke. A kept connection found lost (the server restarted while
/// the source waited) is replaced once at once, so an outage does not
/// cost a failed round after it ends.
async fn query(
    config: &SqlSdConfig,
    db: &mut Option<Database>,
) -> Result<super::QueryResult, SqlError> {
    let mut retried = false;
    loop {
        if db.as_ref().is_some_and(Database::is_broken) {
            *db = None;
        }
        let fresh = db.is_none();
        let database = match db {
            Some(database) => database,
            None => {
                let dsn = dsn(config).await?;
                db.insert(Database::connect(&dsn, config.query_timeout.0).await?)
            }
        };
        match database.query(&config.query).await {
            Err(e) if e.kind == "connect" && database.is_broken() && !fresh && !retried => {
                tracing::debug!(error = %e, "the kept connection was lost; connecting again");
                retried = true;
            }
            result => return result,
        }
    }
}

/// Keeps a `LISTEN` connection on `channel` and wakes the refresh on every
/// notification, and once after each (re)connect, since notifications sent
/// while it was down are lost. While it is down, `problem` holds why (the
/// source reports it as any failure); `None` once it is back.
async fn listen(
    config: Arc<SqlSdConfig>,
    channel: String,
    wake: Arc<Notify>,
    problem: watch::Sender<Option<SourceError>>,
    ctx: SourceContext,
) {
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
    let timeout = config.query_timeout.0;
    loop {
        let connected = async {
            let dsn = dsn(&config).await?;
            Listener::connect(&dsn, &channel, timeout).await
        };
        let result = tokio::select! {
            _ = ctx.shutdown.cancelled() => return,
            r = connected => r,
        };
        match result {
            Ok(mut listener) => {
                backoff.reset();
                problem.send_if_modified(|p| p.take().is_some());
                wake.notify_one();
                loop {
                    let received = tokio::select! {
                        _ = ctx.shutdown.cancelled() => return,
                        r = listener.recv() => r,
                    };
                    match received {
                        Ok(()) => wake.notify_one(),
                        Err(e) => {
                            tracing::warn!(job = %ctx.out.job, source = %ctx.out.name, error = %e, "LISTEN connection lost; reconnecting");
                            problem.send_replace(Some(source_error(e)));
                            break;
                        }
                    }
                }
            }
            Err(e) => {
                tracing::warn!(job = %ctx.out.job, source = %ctx.out.name, error = %e, "cannot LISTEN; retrying");
                problem.send_replace(Some(source_error(e)));
            }
        }
        tokio::select! {
            _ = ctx.shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff.next_delay()) => {}
        }
    }
}
