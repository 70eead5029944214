//! Supervision: a source task that ends before it is told to, or panics,
//! is reported and restarted with backoff. Its last good groups stay
//! served meanwhile: the report changes nothing but its problem.

use std::time::Duration;

use super::{Change, SourceConfig, SourceContext, SourceError, Update};
use crate::backoff::Backoff;

/// First restart delay; doubles (with jitter) up to [`MAX_RESTART`].
const FIRST_RESTART: Duration = Duration::from_secs(1);
/// Longest wait before restarting a failed source.
const MAX_RESTART: Duration = Duration::from_secs(60);
/// A run that lasted this long resets the backoff.
const HEALTHY_RUN: Duration = Duration::from_secs(60);

/// Runs `source` until `ctx.shutdown` is cancelled or the merger is gone,
/// restarting it whenever it ends on its own or panics.
pub async fn supervise(source: SourceConfig, ctx: SourceContext) {
    let mut backoff = Backoff::new(FIRST_RESTART, MAX_RESTART);
    loop {
        let started = tokio::time::Instant::now();
        let result = tokio::spawn(source.clone().run(ctx.clone())).await;
        if ctx.shutdown.is_cancelled() || ctx.out.tx.is_closed() {
            return;
        }
        let (kind, problem) = match result {
            Ok(()) => ("ended", "the source task ended unexpectedly".to_string()),
            Err(e) if e.is_panic() => {
                let payload = e.into_panic();
                let message = payload
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "(no message)".to_string());
                ("panic", format!("the source task panicked: {message}"))
            }
            Err(e) => ("ended", format!("the source task was cancelled: {e}")),
        };
        if started.elapsed() >= HEALTHY_RUN {
            backoff.reset();
        }
        let delay = backoff.next_delay();
        tracing::error!(
            job = %ctx.out.job, source = %ctx.out.name, problem = %problem, restart_in = ?delay,
            "source failed; its last good targets stay served"
        );
        let report = Update {
            source: ctx.out.id,
            change: Change::None,
            synced: false,
            problem: Some(format!("{problem}; restarting")),
            errors: vec![SourceError {
                kind,
                message: problem,
            }],
        };
        if ctx.out.send(report).await.is_err() {
            return;
        }
        tokio::select! {
            _ = ctx.shutdown.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use tokio::sync::mpsc;
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::pipeline::Message;
    use crate::source::{Outbox, Part, SlotId, Source, SourceFuture};

    /// A test-only kind: sends one group, then panics (first run) or ends
    /// (second run), then behaves.
    #[derive(Debug, Default)]
    struct Flaky {
        runs: AtomicUsize,
    }

    impl PartialEq for Flaky {
        fn eq(&self, _: &Self) -> bool {
            true
        }
    }

    impl Source for Flaky {
        fn kind(&self) -> &'static str {
            "flaky"
        }
        fn describe(&self) -> String {
            "flaky".into()
        }
        fn selects(&self) -> String {
            String::new()
        }
        fn run(self: Arc<Self>, ctx: SourceContext) -> SourceFuture {
            Box::pin(async move {
                let run = self.runs.fetch_add(1, Ordering::SeqCst);
                let update = Update {
                    source: ctx.out.id,
                    change: Change::Replace(vec![Part::new(
                        "k",
                        &[crate::targetgroup::TargetGroup::new(
                            [format!("127.0.0.1:{run}")],
                            Default::default(),
                        )],
                        &ctx.out.job,
                    )]),
                    synced: true,
                    problem: None,
                    errors: Vec::new(),
                };
                let _ = ctx.out.send(update).await;
                match run {
                    0 => panic!("injected fault"),
                    1 => {}
                    _ => ctx.shutdown.cancelled().await,
                }
            })
        }
    }

    async fn next(rx: &mut mpsc::Receiver<Message>) -> Update {
        match rx.recv().await {
            Some(Message::Update(u)) => u,
            other => panic!("expected an update, got {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_panicking_or_ending_source_is_reported_and_restarted() {
        let (tx, mut rx) = mpsc::channel(16);
        let shutdown = CancellationToken::new();
        let ctx = SourceContext {
            out: Outbox::new(SlotId(7), "j", ("flaky#0", "flaky"), tx),
            shutdown: shutdown.clone(),
            shared: Default::default(),
        };
        let source = Arc::new(Flaky::default());
        let task = tokio::spawn(supervise(source.clone(), ctx));
        assert!(matches!(next(&mut rx).await.change, Change::Replace(_)));
        let report = next(&mut rx).await;
        assert_eq!(report.change, Change::None, "last good groups kept");
        assert!(!report.synced, "a report does not sync");
        assert_eq!(report.errors[0].kind, "panic");
        assert!(report.problem.unwrap().contains("injected fault"));
        // Restarted after the backoff, then it ends on its own.
        assert!(matches!(next(&mut rx).await.change, Change::Replace(_)));
        let report = next(&mut rx).await;
        assert_eq!(report.errors[0].kind, "ended");
        assert!(matches!(next(&mut rx).await.change, Change::Replace(_)));
        assert_eq!(source.runs.load(Ordering::SeqCst), 3);
        shutdown.cancel();
        task.await.unwrap();
    }
}
