//! `file_sd_configs` with Prometheus's semantics (`discovery/file`).
//!
//! - [`parse`]: one file, read as Prometheus's `readFile` reads it.
//! - [`scan`]: the patterns' listings; a file is re-read only if its
//!   (size, mtime, ctime, inode, device) changed. That one rule covers
//!   in-place writes, editors' rename-over saves and Kubernetes ConfigMaps
//!   swapping their `..data` symlink, without interpreting event kinds.
//! - [`watch`]: the directories of the patterns are watched
//!   (non-recursively), never the files; only events that can change what
//!   is served wake a rescan, and a watch the kernel ends is set again. A
//!   directory that does not exist yet is covered by watching its nearest
//!   existing ancestor.
//!
//! After an event the loop waits for a short quiet window (none after an
//! event that completes a change), then looks at the files the events
//! named ([`watch::Focus`]), or lists everything when they cannot tell
//! (events lost, a watch added or ended, a change next to served
//! symlinks, a failing listing). Every `refresh_interval` all files are
//! re-read regardless, as Prometheus does. Listings and reads
//! that fail keep their last good groups and are retried with backoff.

pub mod config;
pub mod parse;
pub mod scan;
pub mod watch;

use std::sync::Arc;
use std::time::Duration;

use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;

use super::{Change, Outbox, Source, SourceContext, SourceError, SourceFuture, Update};
pub use config::FileSdConfig;
pub use parse::{parse_file, FileError};
pub use scan::{Scan, Scanner};
use watch::{Events, Watches};

/// The label Prometheus puts the matched path in.
pub const FILEPATH_LABEL: &str = "__meta_filepath";

/// Quiet time after the last event before rescanning, so a file written in
/// several steps is read once, complete.
const SETTLE: Duration = Duration::from_millis(50);
/// Longest a stream of events can delay a rescan.
const MAX_SETTLE: Duration = Duration::from_secs(1);
/// First retry after a listing or read failed; doubles up to [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_secs(1);
/// Longest wait between retries of a failing listing or read.
const MAX_RETRY: Duration = Duration::from_secs(30);
/// Rescan period for directories that cannot be watched (the inotify
/// watch limit reached, say).
pub const POLL_INTERVAL: Duration = Duration::from_secs(5);

impl Source for FileSdConfig {
    fn kind(&self) -> &'static str {
        "file_sd"
    }

    fn selects(&self) -> String {
        format!("files={:?}", self.files)
    }

    fn describe(&self) -> String {
        format!("file_sd_configs {}", self.files.join(", "))
    }

    fn run(self: Arc<Self>, ctx: SourceContext) -> SourceFuture {
        Box::pin(run((*self).clone(), ctx.out, ctx.shutdown))
    }
}

/// Runs one file_sd config: a full scan (after which the source is synced,
/// even if some files are invalid, as in Prometheus), then a rescan on every
/// change notification, a retry while something fails, and a full re-read
/// every `refresh_interval`. Listing, stat'ing and reading run on blocking
/// threads, so a slow mount never stalls the async workers.
pub async fn run(config: FileSdConfig, out: Outbox, shutdown: CancellationToken) {
    let mut scanner = Scanner::new(&config.files)
        .with_limit(config.max_input_size)
        .for_job(out.job.clone());
    let events = Arc::new(Events::new(scanner.served_names()));
    let mut watches = Watches::new(events.clone());
    let refresh = config.refresh_interval.0.max(Duration::from_millis(100));
    let mut next_refresh = Instant::now() + refresh;
    let mut retry = FIRST_RETRY;
    let mut reread_all = true;
    let mut first = true;
    // Whether this round lists everything rather than looking at the
    // files events named: at start, after a new watch, on timers.
    let mut list_all = true;
    let metrics = out.metrics().cloned();
    loop {
        // Events from here on are news to the scan below.
        events.take_urgent();
        let focus = events.take_focus();
        let round = tokio::task::spawn_blocking(move || {
            let focused = if list_all || reread_all {
                None
            } else {
                scanner.scan_focused(&focus)
            };
            let scan = focused.unwrap_or_else(|| scanner.scan(reread_all));
            let added = watches.sync(scanner.watch_dirs());
            (scanner, watches, scan, added)
        });
        let (returned, returned_watches, scan, added) = match round.await {
            Ok(result) => result,
            Err(e) => {
                tracing::error!(job = %out.job, error = %e, "file_sd scan task failed");
                return;
            }
        };
        (scanner, watches) = (returned, returned_watches);
        if let Some(m) = &metrics {
            m.file_sd_scan(&out.labels(), scan.reads);
            m.file_sd_polling(&out.labels(), watches.polling());
        }
        for e in &scan.new_errors {
            tracing::warn!(job = %out.job, error = %e, "file_sd input rejected; its previous targets stay served");
        }
        let update = Update {
            source: out.id,
            change: if first {
                Change::Replace(scan.parts)
            } else if scan.parts.is_empty() {
                Change::None
            } else {
                Change::Patch(scan.parts)
            },
            synced: true,
            problem: scanner.problem(),
            errors: scan
                .new_errors
                .into_iter()
                .map(|e| SourceError {
                    kind: e.kind,
                    message: e.to_string(),
                })
                .collect(),
        };
        if out.send(update).await.is_err() {
            return;
        }
        first = false;
        reread_all = false;
        list_all = added;
        if added {
            // A new watch: something may have changed before it was set.
            continue;
        }
        let mut retry_at = if scanner.needs_retry() {
            let at = Instant::now() + retry;
            retry = (retry * 2).min(MAX_RETRY);
            Some(at)
        } else {
            retry = FIRST_RETRY;
            None
        };
        if watches.polling() {
            let poll = Instant::now() + POLL_INTERVAL;
            retry_at = Some(retry_at.map_or(poll, |r| r.min(poll)));
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = events.wake.notified() => settle(&events).await,
            _ = sleep_until(next_refresh) => {
                reread_all = true;
                next_refresh = Instant::now() + refresh;
            }
            _ = sleep_until(retry_at.unwrap_or(next_refresh)), if retry_at.is_some() => {
                list_all = true;
            }
        }
    }
}

/// Waits until events stop for [`SETTLE`], at most [`MAX_SETTLE`], or
/// until an event completes a change.
async fn settle(events: &Events) {
    let deadline = Instant::now() + MAX_SETTLE;
    loop {
        if events.take_urgent() {
            return;
        }
        let quiet = (Instant::now() + SETTLE).min(deadline);
        tokio::select! {
            _ = events.wake.notified() => {
                if Instant::now() >= deadline {
                    return;
                }
            }
            _ = sleep_until(quiet) => return,
        }
    }
}
