//! The merger: the one task that owns all discovered groups. It keeps each
//! source part pre-serialized, re-serializes only parts that changed,
//! concatenates fragments into job bodies and publishes a new [`Snapshot`].

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use arc_swap::ArcSwap;
use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::snapshot::{JobSnapshot, Rendered, Snapshot, SourceStatus};
use crate::source::{self, Change, Part, Update};
use crate::targetgroup::{EscapedJob, Fragment};

/// Most updates applied before one publish, so a burst is coalesced but a
/// flood cannot starve publishing.
const MAX_BATCH: usize = 1024;

#[derive(Debug)]
struct SourceState {
    status: SourceStatus,
    /// Parts by key, as the source serialized them; served in key order.
    parts: BTreeMap<String, Arc<Fragment>>,
}

#[derive(Debug)]
struct JobState {
    name: String,
    /// The name as spliced into fragments.
    escaped: EscapedJob,
    sources: Vec<SourceState>,
    rendered: Arc<Rendered>,
    dirty: bool,
}

/// Where mergers publish, kept across config reloads.
#[derive(Debug)]
pub struct Publisher {
    /// What the HTTP handlers serve.
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    /// The epoch allowed to publish. A reload bumps it, so a retired
    /// merger finishing a batch can never overwrite its successor's state.
    epoch: Mutex<u64>,
}

impl Publisher {
    /// A publisher serving `initial` until a merger publishes.
    pub fn new(initial: Snapshot) -> Arc<Publisher> {
        Arc::new(Publisher {
            snapshot: Arc::new(ArcSwap::from_pointee(initial)),
            epoch: Mutex::new(0),
        })
    }

    /// Retires every merger so far; returns the epoch for the next one.
    pub fn next_epoch(&self) -> u64 {
        let mut epoch = self.epoch.lock().unwrap_or_else(|e| e.into_inner());
        *epoch += 1;
        *epoch
    }

    fn store(&self, epoch: u64, snapshot: Snapshot) -> bool {
        let current = self.epoch.lock().unwrap_or_else(|e| e.into_inner());
        if *current != epoch {
            return false;
        }
        self.snapshot.store(Arc::new(snapshot));
        true
    }
}

/// Owns the groups of every source and publishes snapshots.
pub struct Merger {
    jobs: Vec<JobState>,
    all: Arc<Rendered>,
    /// The job bodies `all` was last built from.
    all_parts: Vec<Arc<Rendered>>,
    publisher: Arc<Publisher>,
    epoch: u64,
    /// After a reload: the snapshot being replaced. A job that is not
    /// synced yet in the new config is served from it (if it was ready
    /// there) instead of answering 503, until every job has synced.
    fallback: Option<Arc<Snapshot>>,
    metrics: Arc<Metrics>,
    generation: u64,
}

fn empty_body() -> Bytes {
    Bytes::from_static(b"[]")
}

impl Merger {
    /// A merger for `config`'s jobs; publishes an initial snapshot in which
    /// no job with sources is ready.
    pub fn new(config: &Config, publisher: Arc<Publisher>, metrics: Arc<Metrics>) -> Merger {
        Merger::replacing(config, publisher, metrics, None)
    }

    /// A merger that takes over from the one that published `previous`
    /// (a reload): jobs keep being served from `previous` until synced.
    pub fn replacing(
        config: &Config,
        publisher: Arc<Publisher>,
        metrics: Arc<Metrics>,
        previous: Option<Arc<Snapshot>>,
    ) -> Merger {
        let empty = Rendered::new(empty_body(), 0, 0, None);
        let jobs = config
            .jobs
            .iter()
            .map(|job| {
                let configs = source::sources_of(job);
                let names = source::source_names(&configs);
                let sources = configs
                    .iter()
                    .zip(names)
                    .map(|(s, name)| SourceState {
                        status: SourceStatus {
                            kind: s.kind(),
                            name,
                            description: s.describe(),
                            synced: false,
                            problem: None,
                            last_success: None,
                            groups: 0,
                            targets: 0,
                        },
                        parts: BTreeMap::new(),
                    })
                    .collect();
                JobState {
                    name: job.job_name.clone(),
                    escaped: EscapedJob::new(&job.job_name),
                    sources,
                    rendered: empty.clone(),
                    dirty: true,
                }
            })
            .collect();
        let epoch = publisher.next_epoch();
        let mut merger = Merger {
            jobs,
            all: empty,
            all_parts: Vec::new(),
            publisher,
            epoch,
            fallback: previous,
            metrics,
            generation: 0,
        };
        for rendered in merger.publish() {
            rendered.compress();
        }
        merger
    }

    /// Applies one update (its parts come serialized by the source).
    pub fn apply(&mut self, update: Update) {
        let Some(job) = self.jobs.get_mut(update.source.job) else {
            return;
        };
        let job_name = job.name.clone();
        let Some(source) = job.sources.get_mut(update.source.index) else {
            return;
        };
        let labels = self.metrics.source_labels(&job_name, &source.status);
        for error in &update.errors {
            self.metrics.source_error(&labels, error.kind);
        }
        let changed = !matches!(update.change, Change::None);
        match update.change {
            Change::None => {}
            Change::Replace(parts) => {
                source.parts.clear();
                insert_parts(&mut source.parts, parts);
            }
            Change::Patch(parts) => insert_parts(&mut source.parts, parts),
        }
        let status = &mut source.status;
        if changed || status.synced != update.synced || status.problem != update.problem {
            job.dirty = true;
        }
        status.synced |= update.synced;
        status.problem = update.problem;
        if status.problem.is_none() && update.synced {
            status.last_success = Some(SystemTime::now());
        }
        status.groups = source.parts.values().map(|f| f.groups()).sum();
        status.targets = source.parts.values().map(|f| f.targets()).sum();
        self.metrics.source_state(&labels, status);
    }

    /// Rebuilds the bodies of jobs that changed and publishes a snapshot.
    /// Returns the bodies that are new, still to be gzipped
    /// ([`Rendered::compress`]).
    pub fn publish(&mut self) -> Vec<Arc<Rendered>> {
        let mut fresh = Vec::new();
        let started = Instant::now();
        for job in self.jobs.iter_mut().filter(|j| j.dirty) {
            job.dirty = false;
            let fragments = job.sources.iter().flat_map(|s| s.parts.values());
            let rendered = render(fragments.map(|f| &**f), &job.escaped, Some(&job.rendered));
            if !Arc::ptr_eq(&rendered, &job.rendered) {
                fresh.push(rendered.clone());
            }
            job.rendered = rendered;
        }
        if self
            .jobs
            .iter()
            .all(|j| j.sources.iter().all(|s| s.status.synced))
        {
            self.fallback = None;
        }
        let jobs: Vec<JobSnapshot> = self
            .jobs
            .iter()
            .map(|j| {
                let ready = j.sources.iter().all(|s| s.status.synced);
                let previous = self
                    .fallback
                    .as_ref()
                    .filter(|_| !ready)
                    .and_then(|f| f.job(&j.name))
                    .filter(|p| p.ready);
                JobSnapshot {
                    name: j.name.clone(),
                    ready: ready || previous.is_some(),
                    rendered: previous.map_or(&j.rendered, |p| &p.rendered).clone(),
                    sources: j.sources.iter().map(|s| s.status.clone()).collect(),
                }
            })
            .collect();
        let parts: Vec<Arc<Rendered>> = jobs.iter().map(|j| j.rendered.clone()).collect();
        let same_parts = parts.len() == self.all_parts.len()
            && parts
                .iter()
                .zip(&self.all_parts)
                .all(|(a, b)| Arc::ptr_eq(a, b));
        if (!same_parts || self.generation == 0) && parts.len() == 1 {
            // One job: `/http_sd` is byte-identical to it, share the render.
            if !Arc::ptr_eq(&parts[0], &self.all) {
                self.all = parts[0].clone();
            }
            self.all_parts = parts;
        } else if !same_parts || self.generation == 0 {
            let inner: Vec<Fragment> = parts
                .iter()
                .map(|r| Fragment::verbatim(inner_of(&r.body), r.groups, r.targets))
                .collect();
            let all = render(inner.iter(), &EscapedJob::default(), Some(&self.all));
            if !Arc::ptr_eq(&all, &self.all) || self.generation == 0 {
                fresh.push(all.clone());
            }
            self.all = all;
            self.all_parts = parts;
        }
        self.generation += 1;
        for job in &jobs {
            self.metrics.job_state(&job.name, job.ready, &job.rendered);
        }
        let snapshot = Snapshot {
            all_ready: jobs.iter().all(|j| j.ready),
            by_name: jobs
                .iter()
                .enumerate()
                .map(|(i, j)| (j.name.clone(), i))
                .collect(),
            jobs,
            all: self.all.clone(),
            generation: self.generation,
        };
        if !self.publisher.store(self.epoch, snapshot) {
            return Vec::new();
        }
        self.metrics.rebuilt(started.elapsed());
        fresh
    }

    /// Receives updates until every sender is gone, publishing after each
    /// batch of queued updates.
    pub async fn run(mut self, mut updates: mpsc::Receiver<Update>) {
        while let Some(update) = updates.recv().await {
            self.apply(update);
            let mut batch = 1;
            while batch < MAX_BATCH {
                match updates.try_recv() {
                    Ok(update) => {
                        self.apply(update);
                        batch += 1;
                    }
                    Err(_) => break,
                }
            }
            let fresh = self.publish();
            if !fresh.is_empty() {
                // Compression of large bodies takes far longer than the
                // rebuild: do it off the merger, after the change is live.
                tokio::task::spawn_blocking(move || {
                    for rendered in fresh {
                        // Superseded while waiting: nobody can serve it.
                        if Arc::strong_count(&rendered) > 1 {
                            rendered.compress();
                        }
                    }
                });
            }
        }
    }
}

fn insert_parts(parts: &mut BTreeMap<String, Arc<Fragment>>, new: Vec<Part>) {
    for part in new {
        if part.fragment.is_empty() {
            parts.remove(&part.key);
        } else {
            parts.insert(part.key, part.fragment);
        }
    }
}

/// The body of a JSON array without its brackets.
fn inner_of(body: &Bytes) -> Bytes {
    body.slice(1..body.len().saturating_sub(1).max(1))
}

/// Concatenates `fragments`, served under `job`, into a JSON array.
fn render<'a>(
    fragments: impl Iterator<Item = &'a Fragment> + Clone,
    job: &EscapedJob,
    previous: Option<&Arc<Rendered>>,
) -> Arc<Rendered> {
    let len: usize = fragments.clone().map(|f| f.len_for(job.len()) + 1).sum();
    let mut body = BytesMut::with_capacity(len + 2);
    body.extend_from_slice(b"[");
    let (mut groups, mut targets) = (0, 0);
    let mut first = true;
    for fragment in fragments.filter(|f| !f.is_empty()) {
        if !first {
            body.extend_from_slice(b",");
        }
        first = false;
        fragment.write_for(&mut body, job);
        groups += fragment.groups();
        targets += fragment.targets();
    }
    body.extend_from_slice(b"]");
    Rendered::new(body.freeze(), groups, targets, previous)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::placeholder;
    use crate::source::SourceId;
    use crate::targetgroup::{LabelSet, TargetGroup};
    use std::path::Path;

    fn merger() -> (Merger, Arc<ArcSwap<Snapshot>>) {
        let (m, p) = merger_with(None);
        (m, p.snapshot.clone())
    }

    fn merger_with(publisher: Option<Arc<Publisher>>) -> (Merger, Arc<Publisher>) {
        let config = Config::parse(
            "jobs:\n  - job_name: a\n    static_configs: [{targets: ['127.0.0.1:1']}]\n    file_sd_configs: [{files: [/sd/*.json]}]\n  - job_name: b\n",
            Path::new("/etc/sdbridge.yml"),
        )
        .unwrap();
        let publisher = publisher.unwrap_or_else(|| Publisher::new(placeholder()));
        let previous = Some(publisher.snapshot.load_full());
        let merger = Merger::replacing(
            &config,
            publisher.clone(),
            Arc::new(Metrics::new()),
            previous,
        );
        (merger, publisher)
    }

    fn part(key: &str, target: &str) -> Part {
        Part::new(key, &[TargetGroup::new([target], LabelSet::default())])
    }

    fn update(index: usize, change: Change, problem: Option<&str>) -> Update {
        Update {
            source: SourceId { job: 0, index },
            change,
            synced: true,
            problem: problem.map(str::to_string),
            errors: Vec::new(),
        }
    }

    fn targets(body: &[u8]) -> Vec<String> {
        let groups: Vec<serde_json::Value> = serde_json::from_slice(body).unwrap();
        groups
            .iter()
            .flat_map(|g| g["targets"].as_array().unwrap().clone())
            .map(|t| t.as_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn job_is_ready_only_when_every_source_synced() {
        let (mut m, snap) = merger();
        let s = snap.load();
        assert!(!s.job("a").unwrap().ready);
        assert!(s.job("b").unwrap().ready, "a job without sources is ready");
        assert!(!s.all_ready);
        m.apply(update(
            0,
            Change::Replace(vec![part("static_configs", "127.0.0.1:1")]),
            None,
        ));
        m.publish();
        assert!(!snap.load().job("a").unwrap().ready);
        m.apply(update(1, Change::Replace(vec![]), None));
        m.publish();
        let s = snap.load();
        assert!(s.job("a").unwrap().ready && s.all_ready);
        assert_eq!(targets(&s.job("a").unwrap().rendered.body), ["127.0.0.1:1"]);
    }

    #[test]
    fn order_is_source_then_part_key_and_patches_touch_only_their_part() {
        let (mut m, snap) = merger();
        m.apply(update(
            0,
            Change::Replace(vec![part("static_configs", "s")]),
            None,
        ));
        m.apply(update(
            1,
            Change::Replace(vec![part("/sd/b.json", "b"), part("/sd/a.json", "a")]),
            None,
        ));
        m.publish();
        assert_eq!(
            targets(&snap.load().job("a").unwrap().rendered.body),
            ["s", "a", "b"]
        );
        m.apply(update(
            1,
            Change::Patch(vec![part("/sd/c.json", "c")]),
            None,
        ));
        m.apply(update(
            1,
            Change::Patch(vec![Part::removed("/sd/a.json")]),
            None,
        ));
        m.publish();
        let s = snap.load();
        assert_eq!(targets(&s.job("a").unwrap().rendered.body), ["s", "b", "c"]);
        assert_eq!(targets(&s.all.body), ["s", "b", "c"]);
    }

    #[test]
    fn a_problem_keeps_the_last_good_groups_and_the_same_render() {
        let (mut m, snap) = merger();
        m.apply(update(
            0,
            Change::Replace(vec![part("static_configs", "s")]),
            None,
        ));
        m.apply(update(
            1,
            Change::Replace(vec![part("/sd/a.json", "a")]),
            None,
        ));
        m.publish();
        let before = snap.load().job("a").unwrap().rendered.clone();
        m.apply(update(1, Change::None, Some("/sd/a.json:1:1: broken")));
        m.publish();
        let s = snap.load();
        let job = s.job("a").unwrap();
        assert!(
            Arc::ptr_eq(&before, &job.rendered),
            "same body, same render"
        );
        assert_eq!(
            job.sources[1].problem.as_deref(),
            Some("/sd/a.json:1:1: broken")
        );
        assert!(job.ready);
    }

    #[test]
    fn after_a_reload_jobs_are_served_from_the_old_snapshot_until_synced() {
        let (mut old, publisher) = merger_with(None);
        old.apply(update(
            0,
            Change::Replace(vec![part("static_configs", "s")]),
            None,
        ));
        old.apply(update(
            1,
            Change::Replace(vec![part("/sd/a.json", "old")]),
            None,
        ));
        old.publish();
        let served_before = publisher.snapshot.load().job("a").unwrap().rendered.clone();

        let (mut new, _) = merger_with(Some(publisher.clone()));
        let s = publisher.snapshot.load();
        assert!(s.job("a").unwrap().ready, "no 503 because of a reload");
        assert!(Arc::ptr_eq(&s.job("a").unwrap().rendered, &served_before));
        // The retired merger can no longer publish.
        old.apply(update(
            1,
            Change::Replace(vec![part("/sd/a.json", "stale")]),
            None,
        ));
        assert!(old.publish().is_empty());
        assert_eq!(
            targets(&publisher.snapshot.load().job("a").unwrap().rendered.body),
            ["s", "old"]
        );

        new.apply(update(
            0,
            Change::Replace(vec![part("static_configs", "s")]),
            None,
        ));
        new.apply(update(
            1,
            Change::Replace(vec![part("/sd/a.json", "new")]),
            None,
        ));
        new.publish();
        let s = publisher.snapshot.load();
        assert_eq!(targets(&s.job("a").unwrap().rendered.body), ["s", "new"]);
        assert_eq!(targets(&s.all.body), ["s", "new"]);
    }
}
