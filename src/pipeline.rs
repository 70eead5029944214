//! The pipeline's vocabulary: what sources send ([`Update`]s of
//! [`Part`]s, from a [`SlotId`]), what the merger receives ([`Message`]),
//! and the [`Layout`] of jobs and sources the daemon gives it. A leaf:
//! sources and the merger both depend on it, and not on each other.

use std::path::PathBuf;
use std::sync::Arc;

use crate::targetgroup::{Fragment, TargetGroup};

/// Which running source an update comes from. Allocated once per started
/// source and never reused, so an update from a source a reload stopped
/// cannot land on its successor.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SlotId(pub u64);

/// A named slice of a source's groups that is replaced as a whole: one file
/// for file_sd, one service for Consul, the whole list for static. Parts are
/// served in key order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// Stable sort key (the file path for file_sd, the service for Consul).
    pub key: String,
    /// The groups, serialized by the source; empty removes the part.
    /// Shared, not copied, between a source that keeps it (Consul's
    /// watcher) and the merger.
    pub fragment: Arc<Fragment>,
}

impl Part {
    /// A part holding `groups`, as job `job` serves them.
    pub fn new(key: impl Into<String>, groups: &[TargetGroup], job: &str) -> Part {
        Part::serialized(key, Arc::new(Fragment::new(groups, job)))
    }

    /// A part holding groups already serialized.
    pub fn serialized(key: impl Into<String>, fragment: Arc<Fragment>) -> Part {
        Part {
            key: key.into(),
            fragment,
        }
    }

    /// The update that removes part `key`.
    pub fn removed(key: impl Into<String>) -> Part {
        Part::serialized(key, Arc::new(Fragment::default()))
    }
}

/// How an update changes a source's parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Nothing changed (the round still counts for health and age).
    None,
    /// These parts are all the source has now.
    Replace(Vec<Part>),
    /// Only these parts changed; others stay as they are.
    Patch(Vec<Part>),
}

/// An error met during one discovery round, counted once in metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceError {
    /// Error class, a metric label: `read`, `parse`, `watch`, ...
    pub kind: &'static str,
    /// Full message, with file:line:col where there is one.
    pub message: String,
}

/// What a source reports after each discovery round.
#[derive(Debug, Clone)]
pub struct Update {
    /// Who sends it.
    pub source: SlotId,
    /// The change to its groups.
    pub change: Change,
    /// Whether the source has completed a full round, so its job may be
    /// served (before that the job answers 503).
    pub synced: bool,
    /// The problem the source has now, if any (its last good groups keep
    /// being served meanwhile).
    pub problem: Option<String>,
    /// Errors met in this round.
    pub errors: Vec<SourceError>,
}

/// What the merger receives.
#[derive(Debug)]
pub enum Message {
    /// One source's round.
    Update(Update),
    /// The jobs and sources from now on (start, reload).
    Layout(Layout),
    /// A source waits for something shared (`Some(what)`), or no longer
    /// does (`None`): shown on the status page and in `/metrics`.
    Waiting(SlotId, Option<String>),
}

/// The jobs the merger serves, in config order, with their sources' slots.
#[derive(Debug, Clone, Default)]
pub struct Layout {
    /// Jobs in config order.
    pub jobs: Vec<JobLayout>,
    /// Where job bodies are persisted (`state_dir`), if anywhere.
    pub state_dir: Option<PathBuf>,
}

/// One job of a [`Layout`].
#[derive(Debug, Clone)]
pub struct JobLayout {
    /// The job name.
    pub name: String,
    /// Its config's `state::job_key`: a persisted body is served only
    /// under the same key.
    pub key: String,
    /// Its sources in serving order.
    pub sources: Vec<SourceLayout>,
}

/// One source of a [`JobLayout`].
#[derive(Debug, Clone)]
pub struct SourceLayout {
    /// Where its updates come from.
    pub slot: SlotId,
    /// Mechanism, a metric label.
    pub kind: &'static str,
    /// Name within the job, a metric label.
    pub name: String,
    /// What it reads, for the status page.
    pub description: String,
}

impl SourceLayout {
    /// The layout entry of a source of `kind`, named `name` within its
    /// job, described by `description`, sending from `slot`.
    pub fn new(
        slot: SlotId,
        kind: &'static str,
        name: String,
        description: String,
    ) -> SourceLayout {
        SourceLayout {
            slot,
            kind,
            name,
            description,
        }
    }
}
