//! `static_configs`: served exactly as written, synced from the start.

use tokio_util::sync::CancellationToken;

use super::{Change, Outbox, Part, SourceId, Update};
use crate::targetgroup::TargetGroup;

/// The part key of the static source (it has only one part).
pub const PART_KEY: &str = "static_configs";

/// The one update a static source sends.
pub fn update(groups: Vec<TargetGroup>, id: SourceId) -> Update {
    Update {
        source: id,
        change: Change::Replace(vec![Part::new(PART_KEY, &groups)]),
        synced: true,
        problem: None,
        errors: Vec::new(),
    }
}

/// Sends the groups once, then waits for shutdown so the source's lifetime
/// matches the others'.
pub async fn run(groups: Vec<TargetGroup>, out: Outbox, shutdown: CancellationToken) {
    if out.send(update(groups, out.id)).await.is_ok() {
        shutdown.cancelled().await;
    }
}
