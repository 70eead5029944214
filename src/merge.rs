//! The merger: the one task that owns all discovered groups. It keeps each
//! source part pre-serialized, concatenates fragments into job bodies and
//! publishes a new [`Snapshot`].
//!
//! There is one merger for the life of the process. A reload sends it a
//! new [`Layout`] through the same queue as the sources' updates, before
//! any new source starts: sources a reload keeps keep their parts, a job
//! keeps serving its last body until its new sources have synced, and no
//! handover can let an older snapshot replace a newer one. It runs on a
//! thread of its own, so rendering and hashing large bodies never occupies
//! the async workers that answer HTTP; gzip runs on another (`Compressor`).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Instant, SystemTime};

use arc_swap::ArcSwap;
use bytes::Bytes;
use tokio::sync::mpsc;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::snapshot::{JobSnapshot, Piece, Rendered, Snapshot, SourceStatus};
use crate::source::{self, Change, Part, SlotId, Update};
use crate::state::{self, Loaded, Persistence, Writer};
use crate::targetgroup::{escape_job, Fragment};

/// Most updates applied before one publish, so a burst is coalesced but a
/// flood cannot starve publishing.
const MAX_BATCH: usize = 1024;

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
    /// Its config's [`state::job_key`]: a persisted body is served only
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
    /// The layout entry of `source`, named `name`, sending from `slot`.
    pub fn new(slot: SlotId, name: String, source: &dyn source::Configured) -> SourceLayout {
        SourceLayout {
            slot,
            kind: source.kind(),
            name,
            description: source.describe(),
        }
    }
}

impl Layout {
    /// The layout of `config` with slots numbered from 0 in order (tests,
    /// benches, `dump`).
    pub fn sequential(config: &Config) -> Layout {
        let mut next = 0;
        Layout {
            jobs: config
                .jobs
                .iter()
                .map(|job| {
                    let sources = source::sources_of(job);
                    let names = source::source_names(&sources);
                    JobLayout {
                        name: job.job_name.clone(),
                        key: state::job_key(&job.job_name, &sources),
                        sources: sources
                            .iter()
                            .zip(names)
                            .map(|(s, name)| {
                                next += 1;
                                SourceLayout::new(SlotId(next - 1), name, &**s)
                            })
                            .collect(),
                    }
                })
                .collect(),
            state_dir: config.state_dir.clone(),
        }
    }
}

#[derive(Debug)]
struct SourceState {
    slot: SlotId,
    status: SourceStatus,
    /// Parts by key, as the source serialized them; served in key order.
    parts: BTreeMap<String, Arc<Fragment>>,
}

#[derive(Debug)]
struct JobState {
    name: String,
    /// The name as spliced into job-free fragments.
    escaped: Bytes,
    sources: Vec<SourceState>,
    rendered: Arc<Rendered>,
    /// After a reload: the body the job served before, kept serving (ready)
    /// until every source of the new layout has synced. At start: the body
    /// read from `state_dir`.
    held: Option<Arc<Rendered>>,
    /// Whether `held` came from `state_dir`.
    from_state: bool,
    /// Its config key ([`JobLayout::key`]).
    key: String,
    /// The key and body last handed to the state writer.
    persisted: Option<(String, Arc<Rendered>)>,
    dirty: bool,
}

impl JobState {
    fn synced(&self) -> bool {
        self.sources.iter().all(|s| s.status.synced)
    }
}

/// What a job of the layout before a reload leaves to its successor.
struct Previous {
    /// Its last render.
    rendered: Arc<Rendered>,
    /// What it served, if it was ready.
    served: Option<Arc<Rendered>>,
    /// Whether `served` came from `state_dir`.
    from_state: bool,
    /// What was last handed to the state writer.
    persisted: Option<(String, Arc<Rendered>)>,
}

/// Where the merger publishes.
#[derive(Debug)]
pub struct Publisher {
    /// What the HTTP handlers serve.
    pub snapshot: Arc<ArcSwap<Snapshot>>,
}

impl Publisher {
    /// A publisher serving `initial` until the merger publishes.
    pub fn new(initial: Snapshot) -> Arc<Publisher> {
        Arc::new(Publisher {
            snapshot: Arc::new(ArcSwap::from_pointee(initial)),
        })
    }
}

/// Owns the groups of every source and publishes snapshots.
pub struct Merger {
    jobs: Vec<JobState>,
    /// Slot to (job, source) indexes.
    slots: HashMap<SlotId, (usize, usize)>,
    all: Arc<Rendered>,
    /// The job bodies `all` was last built from.
    all_parts: Vec<Arc<Rendered>>,
    publisher: Arc<Publisher>,
    metrics: Arc<Metrics>,
    generation: u64,
    /// Persists served bodies (`serve` only).
    writer: Option<Arc<Writer>>,
    /// Bodies read from `state_dir` at start, for the first layout only.
    loaded: Option<Loaded>,
    /// The `state_dir` of the current layout.
    state_dir: Option<PathBuf>,
    /// Bodies read back, still to be gzipped.
    restored: Vec<Arc<Rendered>>,
}

fn empty_body() -> Arc<Rendered> {
    render(std::iter::empty(), &Bytes::new(), None)
}

impl Merger {
    /// A merger for `config`'s jobs with [`Layout::sequential`] slots;
    /// publishes an initial snapshot in which no job with sources is ready.
    pub fn new(config: &Config, publisher: Arc<Publisher>, metrics: Arc<Metrics>) -> Merger {
        let mut merger = Merger::empty(publisher, metrics);
        merger.reconfigure(Layout::sequential(config));
        for rendered in merger.publish() {
            rendered.compress();
        }
        merger
    }

    /// A merger with no jobs (it publishes nothing until given a layout).
    pub fn empty(publisher: Arc<Publisher>, metrics: Arc<Metrics>) -> Merger {
        Merger {
            jobs: Vec::new(),
            slots: HashMap::new(),
            all: empty_body(),
            all_parts: Vec::new(),
            publisher,
            metrics,
            generation: 0,
            writer: None,
            loaded: None,
            state_dir: None,
            restored: Vec::new(),
        }
    }

    /// The same merger, persisting served bodies through `persistence`'s
    /// writer and serving its loaded bodies until their jobs sync.
    pub fn with_state(mut self, persistence: Persistence) -> Merger {
        self.writer = Some(persistence.writer);
        self.loaded = Some(persistence.loaded);
        self
    }

    /// Switches to `layout`: sources whose slot is in it keep their parts
    /// and state; jobs that were served keep being served from their last
    /// body until their sources have synced; the series of sources and jobs
    /// no longer there are removed from `/metrics`.
    pub fn reconfigure(&mut self, layout: Layout) {
        let mut old_sources: HashMap<SlotId, (String, SourceState)> = HashMap::new();
        let mut old_jobs: HashMap<String, Previous> = HashMap::new();
        let moved = layout.state_dir != self.state_dir;
        if moved {
            if let Some(writer) = &self.writer {
                writer.set_dir(layout.state_dir.clone());
            }
            self.state_dir = layout.state_dir.clone();
        }
        for mut job in std::mem::take(&mut self.jobs) {
            let synced = job.synced();
            let served = if synced {
                Some(job.rendered.clone())
            } else {
                job.held.take()
            };
            old_jobs.insert(
                job.name.clone(),
                Previous {
                    rendered: job.rendered,
                    served,
                    from_state: job.from_state && !synced,
                    // A new directory gets every body again.
                    persisted: job.persisted.filter(|_| !moved),
                },
            );
            for source in job.sources {
                old_sources.insert(source.slot, (job.name.clone(), source));
            }
        }
        let mut loaded = self.loaded.take().unwrap_or_default();
        let empty = empty_body();
        for job in &layout.jobs {
            let sources = job
                .sources
                .iter()
                .map(|s| match old_sources.remove(&s.slot) {
                    Some((_, state)) => state,
                    None => SourceState {
                        slot: s.slot,
                        status: SourceStatus {
                            kind: s.kind,
                            name: s.name.clone(),
                            description: s.description.clone(),
                            synced: false,
                            problem: None,
                            waiting: None,
                            last_success: None,
                            groups: 0,
                            targets: 0,
                        },
                        parts: BTreeMap::new(),
                    },
                })
                .collect();
            let previous = old_jobs.remove(&job.name);
            let mut state = JobState {
                name: job.name.clone(),
                escaped: escape_job(&job.name),
                sources,
                rendered: previous
                    .as_ref()
                    .map_or(empty.clone(), |p| p.rendered.clone()),
                held: None,
                from_state: false,
                key: job.key.clone(),
                persisted: None,
                dirty: true,
            };
            match previous {
                Some(p) => {
                    state.persisted = p.persisted;
                    if !state.synced() {
                        state.held = p.served;
                        state.from_state = p.from_state && state.held.is_some();
                    }
                }
                None => {
                    if let Some(body) = loaded.remove(&job.name).filter(|p| p.key == job.key) {
                        if !state.sources.is_empty() {
                            let restored = Rendered::restored(
                                body.body,
                                body.groups,
                                body.targets,
                                body.built_at,
                            );
                            // Later bodies get a later Last-Modified.
                            state.rendered = restored.clone();
                            state.held = Some(restored.clone());
                            state.from_state = true;
                            state.persisted = Some((job.key.clone(), restored.clone()));
                            self.restored.push(restored);
                        }
                    }
                }
            }
            self.jobs.push(state);
        }
        for (job, source) in old_sources.into_values() {
            self.metrics
                .forget_source(&self.metrics.source_labels(&job, &source.status));
        }
        for name in old_jobs.keys() {
            self.metrics.forget_job(name);
            if let Some(writer) = &self.writer {
                writer.forget(name);
            }
        }
        self.slots = self
            .jobs
            .iter()
            .enumerate()
            .flat_map(|(j, job)| {
                job.sources
                    .iter()
                    .enumerate()
                    .map(move |(i, s)| (s.slot, (j, i)))
            })
            .collect();
    }

    /// Applies one update (its parts come serialized by the source).
    /// Updates from slots not in the layout (a source a reload stopped)
    /// are dropped.
    pub fn apply(&mut self, update: Update) {
        let Some(&(j, i)) = self.slots.get(&update.source) else {
            return;
        };
        let job = &mut self.jobs[j];
        let source = &mut job.sources[i];
        let labels = self.metrics.source_labels(&job.name, &source.status);
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

    /// Records what a source waits for, if anything.
    pub fn waiting(&mut self, slot: SlotId, waiting: Option<String>) {
        let Some(&(j, i)) = self.slots.get(&slot) else {
            return;
        };
        let job = &mut self.jobs[j];
        let status = &mut job.sources[i].status;
        if status.waiting != waiting {
            status.waiting = waiting;
            job.dirty = true;
            let labels = self.metrics.source_labels(&job.name, status);
            self.metrics.source_state(&labels, status);
        }
    }

    /// Rebuilds the bodies of jobs that changed and publishes a snapshot.
    /// Returns the bodies that are new, still to be gzipped
    /// ([`Rendered::compress`]).
    pub fn publish(&mut self) -> Vec<Arc<Rendered>> {
        let mut fresh = std::mem::take(&mut self.restored);
        let started = Instant::now();
        for job in self.jobs.iter_mut().filter(|j| j.dirty) {
            job.dirty = false;
            let fragments = job.sources.iter().flat_map(|s| s.parts.values());
            // Synced after a restart or reload: what follows is measured
            // against what was held (served). The same bytes keep its
            // Last-Modified, served from the sources' fragments.
            let synced = job.synced();
            let held = if synced { job.held.take() } else { None };
            if synced {
                job.from_state = false;
            }
            let previous = held.as_ref().unwrap_or(&job.rendered);
            let rendered = render(fragments, &job.escaped, Some(previous));
            if !Arc::ptr_eq(&rendered, &job.rendered) {
                fresh.push(rendered.clone());
            }
            job.rendered = rendered;
        }
        if let Some(writer) = &self.writer {
            for job in self
                .jobs
                .iter_mut()
                .filter(|j| j.held.is_none() && !j.sources.is_empty() && j.synced())
            {
                // The same bytes and date are the same file, whichever
                // fragments hold them.
                let current = job.persisted.as_ref().is_some_and(|(k, r)| {
                    *k == job.key
                        && r.etag == job.rendered.etag
                        && r.last_modified == job.rendered.last_modified
                });
                if !current {
                    writer.push(&job.name, &job.key, job.rendered.clone());
                }
                // Not the render it replaces: that may hold a body read
                // back from `state_dir` that nothing serves any more.
                job.persisted = Some((job.key.clone(), job.rendered.clone()));
            }
        }
        let jobs: Vec<JobSnapshot> = self
            .jobs
            .iter()
            .map(|j| {
                let ready = j.synced();
                let held = j.held.as_ref().filter(|_| !ready);
                JobSnapshot {
                    name: j.name.clone(),
                    ready: ready || held.is_some(),
                    rendered: held.unwrap_or(&j.rendered).clone(),
                    from_state: j.from_state && held.is_some(),
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
            let all = concat(&parts, Some(&self.all));
            if !Arc::ptr_eq(&all, &self.all) || self.generation == 0 {
                fresh.push(all.clone());
            }
            self.all = all;
            self.all_parts = parts;
        }
        self.generation += 1;
        for job in &jobs {
            self.metrics
                .job_state(&job.name, job.ready, job.from_state, &job.rendered);
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
        self.publisher.snapshot.store(Arc::new(snapshot));
        self.metrics.rebuilt(started.elapsed());
        fresh
    }

    /// Receives messages until every sender is gone, publishing after each
    /// batch of queued ones. Blocking: run it on a thread of its own
    /// ([`Merger::spawn`]).
    pub fn run(mut self, mut messages: mpsc::Receiver<Message>) {
        let compressor = Compressor::spawn();
        while let Some(message) = messages.blocking_recv() {
            self.handle(message);
            let mut batch = 1;
            while batch < MAX_BATCH {
                match messages.try_recv() {
                    Ok(message) => {
                        self.handle(message);
                        batch += 1;
                    }
                    Err(_) => break,
                }
            }
            compressor.push(self.publish());
        }
    }

    /// Runs the merger on a thread of its own, whose death ends the
    /// process ([`crate::fatal`]).
    pub fn spawn(self, messages: mpsc::Receiver<Message>) {
        crate::fatal::spawn("merger", move || self.run(messages));
    }

    fn handle(&mut self, message: Message) {
        match message {
            Message::Update(update) => {
                crate::fatal::test_panic("merger");
                self.apply(update)
            }
            Message::Layout(layout) => self.reconfigure(layout),
            Message::Waiting(slot, waiting) => self.waiting(slot, waiting),
        }
    }
}

/// One thread compressing new bodies, latest first in spirit: a body that
/// was superseded before its turn (nobody else holds it) is skipped, so a
/// burst of changes costs one compression per job, not one per change. It
/// sleeps until there is work (no timer), and ends with the merger.
struct Compressor {
    queue: Arc<(Mutex<Pending>, Condvar)>,
}

#[derive(Default)]
struct Pending {
    bodies: Vec<Arc<Rendered>>,
    closed: bool,
}

impl Compressor {
    fn spawn() -> Compressor {
        let queue: Arc<(Mutex<Pending>, Condvar)> = Arc::default();
        let worker = queue.clone();
        crate::fatal::spawn("gzip", move || {
            let mut chunks = crate::gzip::Chunks::default();
            loop {
                let (lock, ready) = &*worker;
                let mut pending = lock.lock().unwrap_or_else(|e| e.into_inner());
                while pending.bodies.is_empty() && !pending.closed {
                    pending = ready.wait(pending).unwrap_or_else(|e| e.into_inner());
                }
                if pending.bodies.is_empty() {
                    return;
                }
                let batch = std::mem::take(&mut pending.bodies);
                drop(pending);
                crate::fatal::test_panic("gzip");
                for rendered in batch {
                    // Superseded while waiting: nobody can serve it.
                    if Arc::strong_count(&rendered) > 1 {
                        rendered.compress_with(&mut chunks);
                    }
                }
                chunks.rotate();
            }
        });
        Compressor { queue }
    }

    fn push(&self, fresh: Vec<Arc<Rendered>>) {
        if fresh.is_empty() {
            return;
        }
        let (lock, ready) = &*self.queue;
        lock.lock()
            .unwrap_or_else(|e| e.into_inner())
            .bodies
            .extend(fresh);
        ready.notify_one();
    }
}

impl Drop for Compressor {
    fn drop(&mut self) {
        let (lock, ready) = &*self.queue;
        lock.lock().unwrap_or_else(|e| e.into_inner()).closed = true;
        ready.notify_one();
    }
}

fn insert_parts(parts: &mut BTreeMap<String, Arc<Fragment>>, new: Vec<Part>) {
    for part in new {
        if part.fragment.is_empty() {
            parts.remove(&part.key);
        } else if parts.get(&part.key) != Some(&part.fragment) {
            // An equal part (a file re-read every refresh_interval) keeps
            // the fragment already served: the body that is kept when
            // nothing changed holds that one, and holding both would
            // double the memory of every re-read part.
            parts.insert(part.key, part.fragment);
        }
    }
}

/// Chains `fragments` into a JSON array: the body a job serves. No bytes
/// are copied; the chain shares the fragments' bytes. Public for the fuzz
/// targets, which check that served bodies parse back to the groups they
/// were built from.
pub fn render<'a>(
    fragments: impl Iterator<Item = &'a Arc<Fragment>>,
    job: &Bytes,
    previous: Option<&Arc<Rendered>>,
) -> Arc<Rendered> {
    let mut pieces = vec![Piece::Open];
    let (mut groups, mut targets) = (0, 0);
    for fragment in fragments.filter(|f| !f.is_empty()) {
        pieces.push(Piece::Part {
            fragment: fragment.clone(),
            first: pieces.len() == 1,
            job: job.clone(),
        });
        groups += fragment.groups();
        targets += fragment.targets();
    }
    pieces.push(Piece::Close);
    Rendered::new(pieces, groups, targets, previous)
}

/// The groups of every body of `jobs`, in order, as one JSON array (the
/// all-jobs body), sharing their bytes.
fn concat(jobs: &[Arc<Rendered>], previous: Option<&Arc<Rendered>>) -> Arc<Rendered> {
    let mut pieces = vec![Piece::Open];
    for job in jobs {
        let inner = job.pieces.get(1..job.pieces.len().saturating_sub(1));
        for piece in inner.unwrap_or_default() {
            let first = pieces.len() == 1;
            match piece {
                // A part first in its job follows the groups before it.
                Piece::Part { fragment, job, .. } => pieces.push(Piece::Part {
                    fragment: fragment.clone(),
                    first,
                    job: job.clone(),
                }),
                Piece::Raw(raw) => {
                    if !first {
                        pieces.push(Piece::Comma);
                    }
                    pieces.push(Piece::Raw(raw.clone()));
                }
                Piece::Comma if first => {}
                other => pieces.push(other.clone()),
            }
        }
    }
    pieces.push(Piece::Close);
    let groups = jobs.iter().map(|j| j.groups).sum();
    let targets = jobs.iter().map(|j| j.targets).sum();
    Rendered::new(pieces, groups, targets, previous)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::placeholder;
    use crate::targetgroup::{LabelSet, TargetGroup};
    use std::path::Path;

    fn merger() -> (Merger, Arc<ArcSwap<Snapshot>>) {
        let (m, p) = merger_with_metrics(Arc::new(Metrics::new()));
        (m, p.snapshot.clone())
    }

    /// Job `a`: static (slot 0) and file_sd (slot 1); job `b`: no sources.
    fn merger_with_metrics(metrics: Arc<Metrics>) -> (Merger, Arc<Publisher>) {
        let config = Config::parse(
            "jobs:\n  - job_name: a\n    static_configs: [{targets: ['127.0.0.1:1']}]\n    file_sd_configs: [{files: [/sd/*.json]}]\n  - job_name: b\n",
            Path::new("/etc/sdbridge.yml"),
        )
        .unwrap();
        let publisher = Publisher::new(placeholder());
        let merger = Merger::new(&config, publisher.clone(), metrics);
        (merger, publisher)
    }

    fn part(key: &str, target: &str) -> Part {
        Part::new(key, &[TargetGroup::new([target], LabelSet::default())], "a")
    }

    /// Syncs job `a`: its static source serves `s`, its file_sd source
    /// `files`; then publishes.
    fn serve_a(m: &mut Merger, files: Vec<Part>) {
        m.apply(update(
            0,
            Change::Replace(vec![part("static_configs", "s")]),
            None,
        ));
        m.apply(update(1, Change::Replace(files), None));
        m.publish();
    }

    fn update(index: usize, change: Change, problem: Option<&str>) -> Update {
        Update {
            source: SlotId(index as u64),
            change,
            synced: true,
            problem: problem.map(str::to_string),
            errors: Vec::new(),
        }
    }

    fn targets(body: &crate::chain::Chain) -> Vec<String> {
        let groups: Vec<serde_json::Value> = serde_json::from_slice(&body.to_bytes()).unwrap();
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
        serve_a(
            &mut m,
            vec![part("/sd/b.json", "b"), part("/sd/a.json", "a")],
        );
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
        serve_a(&mut m, vec![part("/sd/a.json", "a")]);
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
    fn a_reload_keeps_kept_sources_and_holds_jobs_until_synced() {
        let metrics = Arc::new(Metrics::new());
        let (mut m, publisher) = merger_with_metrics(metrics.clone());
        serve_a(&mut m, vec![part("/sd/a.json", "old")]);
        let served_before = publisher.snapshot.load().job("a").unwrap().rendered.clone();
        assert!(metrics
            .encode(&publisher.snapshot.load())
            .contains("job=\"b\""));

        // Job a keeps slot 0 and gets a new file_sd source (slot 5); job b
        // goes away.
        let mut layout = Layout::default();
        let mut a = JobLayout {
            name: "a".into(),
            key: String::new(),
            sources: Vec::new(),
        };
        for (slot, kind) in [(0, "static"), (5, "file_sd")] {
            a.sources.push(SourceLayout {
                slot: SlotId(slot),
                kind,
                name: format!("{kind}#x"),
                description: String::new(),
            });
        }
        layout.jobs.push(a);
        m.reconfigure(layout);
        m.publish();
        let s = publisher.snapshot.load();
        assert!(s.job("a").unwrap().ready, "no 503 because of a reload");
        assert!(Arc::ptr_eq(&s.job("a").unwrap().rendered, &served_before));
        assert!(s.job("b").is_none());
        assert!(
            !metrics.encode(&s).contains("job=\"b\""),
            "removed job's series"
        );
        // The stopped source's late update is dropped.
        m.apply(update(
            1,
            Change::Replace(vec![part("/sd/a.json", "stale")]),
            None,
        ));
        m.publish();
        let s = publisher.snapshot.load();
        assert!(Arc::ptr_eq(&s.job("a").unwrap().rendered, &served_before));
        // The new source syncs: the kept source's parts are still there.
        m.apply(update(
            5,
            Change::Replace(vec![part("/sd/a.json", "new")]),
            None,
        ));
        m.publish();
        let s = publisher.snapshot.load();
        assert_eq!(targets(&s.job("a").unwrap().rendered.body), ["s", "new"]);
        assert_eq!(targets(&s.all.body), ["s", "new"]);
    }

    /// Job `a` of [`merger_with_metrics`] with a body read back from
    /// `state_dir`, built at `built`, under `key` (its real key or not).
    fn restored_merger(
        right_key: bool,
        built: SystemTime,
    ) -> (Merger, Arc<Publisher>, Arc<Writer>, tempfile::TempDir) {
        let config = Config::parse(
            "jobs:\n  - job_name: a\n    static_configs: [{targets: ['127.0.0.1:1']}]\n    file_sd_configs: [{files: [/sd/*.json]}]\n  - job_name: b\n",
            Path::new("/etc/sdbridge.yml"),
        )
        .unwrap();
        let mut layout = Layout::sequential(&config);
        let dir = tempfile::tempdir().unwrap();
        layout.state_dir = Some(dir.path().to_path_buf());
        let key = if right_key {
            layout.jobs[0].key.clone()
        } else {
            "another".to_string()
        };
        // What the job served before the restart: 127.0.0.1:9 from its file.
        let fragment = part("/sd/a.json", "127.0.0.1:9").fragment;
        let body = render(std::iter::once(&fragment), &Bytes::new(), None)
            .body
            .to_bytes();
        let persisted = state::Persisted {
            job: "a".into(),
            key,
            built_at: built,
            body,
            groups: 1,
            targets: 1,
        };
        let metrics = Arc::new(Metrics::new());
        let writer = Writer::spawn(metrics.clone());
        let publisher = Publisher::new(placeholder());
        let mut m = Merger::empty(publisher.clone(), metrics).with_state(Persistence {
            writer: writer.clone(),
            loaded: [("a".to_string(), persisted)].into_iter().collect(),
        });
        m.reconfigure(layout);
        m.publish();
        (m, publisher, writer, dir)
    }

    fn sync_a(m: &mut Merger, file_target: &str) {
        m.apply(update(
            0,
            Change::Replace(vec![part("static_configs", "127.0.0.1:1")]),
            None,
        ));
        m.publish();
        m.apply(update(
            1,
            Change::Replace(vec![part("/sd/a.json", file_target)]),
            None,
        ));
        m.publish();
    }

    #[test]
    fn a_restored_body_is_served_ready_until_the_sources_sync() {
        let built = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        let (mut m, publisher, writer, dir) = restored_merger(true, built);
        let s = publisher.snapshot.load();
        let a = s.job("a").unwrap();
        assert!(a.ready && a.from_state && s.all_ready);
        assert_eq!(targets(&a.rendered.body), ["127.0.0.1:9"]);
        assert_eq!(
            a.rendered.last_modified, built,
            "Last-Modified as persisted"
        );
        // One source synced: still the restored body.
        m.apply(update(
            0,
            Change::Replace(vec![part("static_configs", "127.0.0.1:1")]),
            None,
        ));
        m.publish();
        assert!(publisher.snapshot.load().job("a").unwrap().from_state);
        m.apply(update(
            1,
            Change::Replace(vec![part("/sd/a.json", "127.0.0.1:2")]),
            None,
        ));
        m.publish();
        let s = publisher.snapshot.load();
        let a = s.job("a").unwrap();
        assert!(a.ready && !a.from_state);
        assert_eq!(targets(&a.rendered.body), ["127.0.0.1:1", "127.0.0.1:2"]);
        assert!(a.rendered.last_modified > built);
        writer.close();
        let file = std::fs::read(dir.path().join(state::file_name("a"))).unwrap();
        assert!(
            file.ends_with(&a.rendered.body.to_bytes()),
            "the live body is persisted"
        );
    }

    #[test]
    fn a_restored_body_with_another_key_is_not_served() {
        let (mut m, publisher, writer, _dir) = restored_merger(false, SystemTime::now());
        let a = publisher.snapshot.load().job("a").unwrap().clone();
        assert!(!a.ready && !a.from_state);
        sync_a(&mut m, "127.0.0.1:2");
        assert!(publisher.snapshot.load().job("a").unwrap().ready);
        writer.close();
    }

    #[test]
    fn syncing_to_the_restored_body_keeps_its_last_modified() {
        let built = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        let (mut m, publisher, writer, dir) = restored_merger(true, built);
        let before = publisher.snapshot.load().job("a").unwrap().rendered.clone();
        // The sources find what was persisted: the same bytes.
        m.apply(update(0, Change::Replace(vec![]), None));
        m.apply(update(
            1,
            Change::Replace(vec![part("/sd/a.json", "127.0.0.1:9")]),
            None,
        ));
        m.publish();
        let a = publisher.snapshot.load().job("a").unwrap().clone();
        assert!(a.ready && !a.from_state);
        assert_eq!(
            (&a.rendered.etag, a.rendered.last_modified),
            (&before.etag, before.last_modified),
            "same ETag, same Last-Modified"
        );
        assert!(
            a.rendered
                .pieces
                .iter()
                .all(|p| !matches!(p, crate::snapshot::Piece::Raw(_))),
            "served from the sources' fragments, the restored bytes freed"
        );
        writer.close();
        assert!(
            !dir.path().join(state::file_name("a")).exists(),
            "nothing new to write"
        );
    }

    /// A re-read part equal to the served one (file_sd's refresh_interval
    /// re-reads every file) must not leave two copies alive: the kept
    /// render holds the first.
    #[test]
    fn an_equal_part_keeps_the_served_fragment() {
        let (mut m, snap) = merger();
        serve_a(&mut m, vec![part("/sd/a.json", "a")]);
        let before = snap.load().job("a").unwrap().rendered.clone();
        let served = m.jobs[0].sources[1].parts["/sd/a.json"].clone();
        m.apply(update(
            1,
            Change::Patch(vec![part("/sd/a.json", "a")]),
            None,
        ));
        m.publish();
        assert!(Arc::ptr_eq(
            &before,
            &snap.load().job("a").unwrap().rendered
        ));
        assert!(Arc::ptr_eq(
            &served,
            &m.jobs[0].sources[1].parts["/sd/a.json"]
        ));
        m.apply(update(
            1,
            Change::Patch(vec![part("/sd/a.json", "b")]),
            None,
        ));
        m.publish();
        assert!(!Arc::ptr_eq(
            &served,
            &m.jobs[0].sources[1].parts["/sd/a.json"]
        ));
    }

    #[test]
    fn an_unchanged_layout_keeps_the_same_render() {
        let (mut m, snap) = merger();
        serve_a(&mut m, vec![part("/sd/a.json", "a")]);
        let before = snap.load().job("a").unwrap().rendered.clone();
        let config = Config::parse(
            "jobs:\n  - job_name: a\n    static_configs: [{targets: ['127.0.0.1:1']}]\n    file_sd_configs: [{files: [/sd/*.json]}]\n  - job_name: b\n",
            Path::new("/etc/sdbridge.yml"),
        )
        .unwrap();
        m.reconfigure(Layout::sequential(&config));
        m.publish();
        let after = snap.load().job("a").unwrap().rendered.clone();
        assert!(Arc::ptr_eq(&before, &after), "same ETag and Last-Modified");
    }
}
