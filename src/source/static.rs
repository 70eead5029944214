//! `static_configs`: served exactly as written, synced from the start.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::{Change, Outbox, Part, SlotId, Source, SourceContext, SourceFuture, Update};
use crate::targetgroup::TargetGroup;

/// All `static_configs` of a job, as one source (as in Prometheus).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticSource(pub Vec<TargetGroup>);

impl Source for StaticSource {
    fn kind(&self) -> &'static str {
        "static"
    }

    fn describe(&self) -> String {
        format!("static_configs ({} groups)", self.0.len())
    }

    fn selects(&self) -> String {
        format!("{:?}", self.0)
    }

    fn run(self: Arc<Self>, ctx: SourceContext) -> SourceFuture {
        Box::pin(run(self.0.clone(), ctx.out, ctx.shutdown))
    }
}

/// The part key of the static source (it has only one part).
pub const PART_KEY: &str = "static_configs";

/// The one update a static source sends.
pub fn update(groups: Vec<TargetGroup>, id: SlotId, job: &str) -> Update {
    Update {
        source: id,
        change: Change::Replace(vec![Part::new(PART_KEY, &groups, job)]),
        synced: true,
        problem: None,
        errors: Vec::new(),
    }
}

/// Sends the groups once, then waits for shutdown so the source's lifetime
/// matches the others'.
pub async fn run(groups: Vec<TargetGroup>, out: Outbox, shutdown: CancellationToken) {
    if out.send(update(groups, out.id, &out.job)).await.is_ok() {
        shutdown.cancelled().await;
    }
}
