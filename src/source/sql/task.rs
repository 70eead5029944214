//! The `sql_sd_configs` source task: one query connection, the shared
//! refresh loop, and with `notify_channel` a `LISTEN` connection that wakes
//! it. A broken connection is dropped and opened again on the next round
//! (the refresh loop's backoff with jitter spaces the attempts), with the
//! DSN read again, so a rotated `dsn_file` is picked up.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Mutex, Notify};

use super::{Database, Listener, SqlError, SqlSdConfig};
use crate::backoff::Backoff;
use crate::source::{refresh, Source, SourceContext, SourceError, SourceFuture};

impl Source for SqlSdConfig {
    fn kind(&self) -> &'static str {
        "sql_sd"
    }

    fn describe(&self) -> String {
        SqlSdConfig::describe(self)
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
async fn dsn(config: &Arc<SqlSdConfig>) -> Result<super::Dsn, SqlError> {
    let config = config.clone();
    tokio::task::spawn_blocking(move || config.dsn())
        .await
        .map_err(|e| SqlError::new("dsn", e.to_string()))?
}

async fn run(config: Arc<SqlSdConfig>, ctx: SourceContext) {
    let wake = Arc::new(Notify::new());
    if let Some(channel) = config.notify_channel.clone() {
        tokio::spawn(listen(config.clone(), channel, wake.clone(), ctx.clone()));
    }
    let db: Arc<Mutex<Option<Database>>> = Arc::default();
    let labels = ctx.out.labels();
    let metrics = ctx.out.metrics().cloned();
    let job = ctx.out.job.clone();
    refresh::run(&ctx, config.refresh_interval.0, Some(wake), || {
        let (config, db, labels, metrics, job) = (
            config.clone(),
            db.clone(),
            labels.clone(),
            metrics.clone(),
            job.clone(),
        );
        async move {
            let mut db = db.lock().await;
            if db.as_ref().is_some_and(Database::is_broken) {
                *db = None;
            }
            if db.is_none() {
                let dsn = dsn(&config).await.map_err(source_error)?;
                let connected = Database::connect(&dsn, config.query_timeout.0)
                    .await
                    .map_err(source_error)?;
                *db = Some(connected);
            }
            let Some(database) = db.as_mut() else {
                return Err(source_error(SqlError::new("connect", "not connected")));
            };
            let result = database.query(&config.query).await.map_err(source_error)?;
            for warning in &result.skipped {
                tracing::warn!(job = %job, source = %labels.source, warning = %warning, "sql_sd row");
            }
            if let Some(m) = &metrics {
                m.sql_rows(&labels, result.rows);
            }
            Ok(Some(result.groups))
        }
    })
    .await;
}

/// Keeps a `LISTEN` connection on `channel` and wakes the refresh on every
/// notification, and once after each (re)connect, since notifications sent
/// while it was down are lost.
async fn listen(config: Arc<SqlSdConfig>, channel: String, wake: Arc<Notify>, ctx: SourceContext) {
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
                            break;
                        }
                    }
                }
            }
            Err(e) => {
                tracing::warn!(job = %ctx.out.job, source = %ctx.out.name, error = %e, "cannot LISTEN; retrying");
                if let Some(m) = ctx.out.metrics() {
                    m.source_error(&ctx.out.labels(), "sql_listen");
                }
            }
        }
        tokio::select! {
            _ = ctx.shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff.next_delay()) => {}
        }
    }
}
