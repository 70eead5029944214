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

mod compress;
mod render;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use arc_swap::ArcSwap;
use bytes::Bytes;
use tokio::sync::mpsc;

use crate::metrics::Metrics;
use crate::pipeline::{Change, Layout, Message, SlotId, Update};
use crate::snapshot::{JobSnapshot, Rendered, Snapshot, SourceStatus};
use crate::state::{Loaded, Persistence, Writer};
use crate::targetgroup::{escape_job, Fragment};
use compress::Compressor;
pub use render::render;
use render::{concat, insert_parts};

/// Most updates applied before one publish, so a burst is coalesced but a
/// flood cannot starve publishing.
const MAX_BATCH: usize = 1024;

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
    /// A merger for `layout`; publishes an initial snapshot in which no
    /// job with sources is ready.
    pub fn new(layout: Layout, publisher: Arc<Publisher>, metrics: Arc<Metrics>) -> Merger {
        let mut merger = Merger::empty(publisher, metrics);
        merger.reconfigure(layout);
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

#[cfg(test)]
mod tests;
