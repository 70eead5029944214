//! The state writer: one thread that persists job bodies the merger hands
//! it, off the publish path. Per job at most one write a second, the
//! latest body winning; it sleeps on a condvar while nothing is pending
//! (a timed wait only while a write is due), so idle costs nothing.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::format;
use crate::chain::Chain;
use crate::metrics::Metrics;
use crate::snapshot::Rendered;

/// Least time between two writes of one job's file.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);
/// Mode of state files: owner only (the umask may narrow it further).
pub const MODE: u32 = 0o600;
/// Wait before retrying a write that failed (disk full, permissions).
const RETRY_AFTER: Duration = Duration::from_secs(30);
/// Longest a shutdown waits for the last writes (a hung disk must not
/// keep the process from exiting).
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// Persists bodies into the state directory (see the module doc).
#[derive(Debug)]
pub struct Writer {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    queue: Mutex<Queue>,
    wake: Condvar,
    /// Signalled when the thread has ended.
    ended: Condvar,
    metrics: Arc<Metrics>,
    interval: Duration,
}

#[derive(Debug, Default)]
struct Queue {
    /// Where files go; `None`: nothing is persisted.
    dir: Option<PathBuf>,
    /// The latest body not yet written, per job.
    pending: BTreeMap<String, Pending>,
    /// Per job, when its next write may start.
    not_before: HashMap<String, Instant>,
    /// Set on shutdown: write what is pending now, then end.
    closed: bool,
    /// Whether the thread has ended (or never started).
    finished: bool,
}

#[derive(Debug)]
struct Pending {
    key: String,
    rendered: Arc<Rendered>,
}

impl Writer {
    /// Starts the writer thread, persisting into nothing until
    /// [`Writer::set_dir`].
    pub fn spawn(metrics: Arc<Metrics>) -> Arc<Writer> {
        Writer::with_interval(metrics, MIN_INTERVAL)
    }

    /// [`Writer::spawn`] with another least interval between writes of a
    /// job (tests).
    pub fn with_interval(metrics: Arc<Metrics>, interval: Duration) -> Arc<Writer> {
        let shared = Arc::new(Shared {
            queue: Mutex::default(),
            wake: Condvar::new(),
            ended: Condvar::new(),
            metrics,
            interval,
        });
        let worker = shared.clone();
        crate::fatal::spawn("state", move || {
            worker.run();
            worker.lock().finished = true;
            worker.ended.notify_all();
        });
        Arc::new(Writer { shared })
    }

    /// Persists into `dir` from now on (`None`: not at all). What is
    /// pending goes to the new place.
    pub fn set_dir(&self, dir: Option<PathBuf>) {
        let mut queue = self.shared.lock();
        if dir.is_none() {
            queue.pending.clear();
        }
        queue.dir = dir;
    }

    /// Queues `rendered` as job `job`'s body under config key `key`,
    /// replacing a body of that job still waiting. Never blocks on disk.
    pub fn push(&self, job: &str, key: &str, rendered: Arc<Rendered>) {
        let mut queue = self.shared.lock();
        if queue.dir.is_none() || queue.closed {
            return;
        }
        queue.pending.insert(
            job.to_string(),
            Pending {
                key: key.to_string(),
                rendered,
            },
        );
        drop(queue);
        self.shared.wake.notify_one();
    }

    /// Drops what is pending for a job a reload removed.
    pub fn forget(&self, job: &str) {
        let mut queue = self.shared.lock();
        queue.pending.remove(job);
        queue.not_before.remove(job);
    }

    /// Writes what is pending at once and stops the thread (shutdown),
    /// waiting at most 10 s for it. Later pushes are dropped.
    pub fn close(&self) {
        let mut queue = self.shared.lock();
        queue.closed = true;
        self.shared.wake.notify_one();
        let deadline = Instant::now() + CLOSE_TIMEOUT;
        while !queue.finished {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                tracing::warn!(
                    "the state writer did not finish in time; the last bodies may not be persisted"
                );
                return;
            }
            queue = self
                .shared
                .ended
                .wait_timeout(queue, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn run(&self) {
        let mut queue = self.lock();
        loop {
            let now = Instant::now();
            let closed = queue.closed;
            let due: Vec<String> = queue
                .pending
                .keys()
                .filter(|job| closed || queue.not_before.get(*job).is_none_or(|t| *t <= now))
                .cloned()
                .collect();
            if !due.is_empty() {
                let dir = queue.dir.clone();
                let batch: Vec<(String, Pending)> = due
                    .into_iter()
                    .filter_map(|job| queue.pending.remove(&job).map(|p| (job, p)))
                    .collect();
                drop(queue);
                let outcomes: Vec<(String, Pending, bool)> = batch
                    .into_iter()
                    .map(|(job, p)| {
                        let ok = dir.as_deref().is_none_or(|d| self.write(d, &job, &p));
                        (job, p, ok)
                    })
                    .collect();
                queue = self.lock();
                let now = Instant::now();
                for (job, p, ok) in outcomes {
                    let wait = if ok { self.interval } else { RETRY_AFTER };
                    queue.not_before.insert(job.clone(), now + wait);
                    if !ok && !queue.closed {
                        // Retried later unless a newer body came meanwhile.
                        queue.pending.entry(job).or_insert(p);
                    }
                }
                continue;
            }
            if closed {
                return;
            }
            let next = queue
                .pending
                .keys()
                .filter_map(|job| queue.not_before.get(job))
                .min()
                .copied();
            queue = match next {
                Some(at) => {
                    let wait = at.saturating_duration_since(now);
                    self.wake
                        .wait_timeout(queue, wait)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
                None => self.wake.wait(queue).unwrap_or_else(|e| e.into_inner()),
            };
        }
    }

    /// Writes one job's file; logs and counts a failure.
    fn write(&self, dir: &Path, job: &str, pending: &Pending) -> bool {
        crate::fatal::test_panic("state");
        let r = &pending.rendered;
        let head = format::header(job, &pending.key, r.last_modified, &r.body);
        let path = dir.join(format::file_name(job));
        match write_atomically(dir, &path, &head, &r.body) {
            Ok(()) => {
                self.metrics.state_written(job, true);
                tracing::debug!(job, path = %path.display(), bytes = r.body.len(), "state written");
                true
            }
            Err(e) => {
                self.metrics.state_written(job, false);
                tracing::warn!(job, path = %path.display(), error = %e, "cannot write the state file; retrying in 30s");
                false
            }
        }
    }
}

/// Replaces `path` by `head` + `body` so that a crash at any point leaves
/// the old file or the new one, never a mix: a temporary file in the same
/// directory, fsync, rename over, fsync of the directory (which makes the
/// rename durable). Mode `0600`: a body is a map of the fleet. The
/// temporary file is created anew (a leftover is removed first), so it
/// cannot be a symlink or a file of another mode.
fn write_atomically(dir: &Path, path: &Path, head: &[u8], body: &Chain) -> std::io::Result<()> {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(
        ".{name}.{}{}",
        std::process::id(),
        super::TMP_SUFFIX
    ));
    let written = (|| {
        match std::fs::remove_file(&tmp) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(MODE)
            .open(&tmp)?;
        file.write_all(head)?;
        for segment in body.segments() {
            file.write_all(segment)?;
        }
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn body(i: usize) -> Arc<Rendered> {
        let text = format!("[{{\"targets\":[\"127.0.0.1:{i}\"],\"labels\":{{}}}}]");
        Rendered::restored(Bytes::from(text), 1, 1, std::time::SystemTime::now())
    }

    fn read(dir: &Path, job: &str) -> format::Persisted {
        let bytes = std::fs::read(dir.join(format::file_name(job))).unwrap();
        format::decode(Bytes::from(bytes), std::time::SystemTime::now()).unwrap()
    }

    /// The value of counter `name` for job `job` (0 when absent).
    fn counter(metrics: &Metrics, name: &str, job: &str) -> f64 {
        let text = metrics.encode(&crate::daemon::placeholder());
        let prefix = format!("{name}{{job=\"{job}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .map_or(0.0, |v| v.parse().unwrap())
    }

    fn writes(metrics: &Metrics, job: &str) -> f64 {
        counter(metrics, "sdbridge_state_writes_total", job)
    }

    #[test]
    fn a_burst_is_coalesced_and_the_latest_body_wins() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Arc::new(Metrics::new());
        // An hour between writes: after the first, only close writes.
        let writer = Writer::with_interval(metrics.clone(), Duration::from_secs(3600));
        writer.set_dir(Some(dir.path().to_path_buf()));
        for i in 0..100 {
            writer.push("j", "k", body(i));
        }
        writer.push("other", "k2", body(7));
        writer.close();
        let n = writes(&metrics, "j");
        assert!((1.0..=2.0).contains(&n), "100 pushes, {n} writes");
        assert_eq!(read(dir.path(), "j").body, body(99).body.to_bytes());
        let other = read(dir.path(), "other");
        assert_eq!(
            (other.key.as_str(), other.body),
            ("k2", body(7).body.to_bytes())
        );
        writer.push("j", "k", body(1000));
        assert_eq!(
            read(dir.path(), "j").body,
            body(99).body.to_bytes(),
            "closed"
        );
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n.to_string_lossy().ends_with(super::super::TMP_SUFFIX))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    /// Issue 17: a state file holds a map of the fleet; whatever the
    /// umask, nobody but the owner may read it.
    #[test]
    fn state_files_are_written_mode_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let writer = Writer::spawn(Arc::new(Metrics::new()));
        writer.set_dir(Some(dir.path().to_path_buf()));
        writer.push("j", "k", body(1));
        writer.close();
        let meta = std::fs::metadata(dir.path().join(format::file_name("j"))).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, MODE);
        assert_eq!(read(dir.path(), "j").body, body(1).body.to_bytes());
    }

    #[test]
    fn writes_are_spaced_by_the_interval_and_the_last_one_lands() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Arc::new(Metrics::new());
        let writer = Writer::with_interval(metrics.clone(), Duration::from_millis(50));
        writer.set_dir(Some(dir.path().to_path_buf()));
        let started = Instant::now();
        for i in 0..40 {
            writer.push("j", "k", body(i));
            std::thread::sleep(Duration::from_millis(5));
        }
        let last = body(40);
        writer.push("j", "k", last.clone());
        let deadline = Instant::now() + Duration::from_secs(30);
        while read_body(dir.path()) != Some(last.body.to_bytes()) {
            assert!(Instant::now() < deadline, "the last body never landed");
            std::thread::sleep(Duration::from_millis(10));
        }
        let elapsed = started.elapsed();
        let n = writes(&metrics, "j");
        // At most one write per 50 ms, plus the first.
        let bound = (elapsed.as_millis() / 50 + 1) as f64;
        assert!(n <= bound, "{n} writes in {elapsed:?}");
        writer.close();
    }

    fn read_body(dir: &Path) -> Option<Bytes> {
        let bytes = std::fs::read(dir.join(format::file_name("j"))).ok()?;
        format::decode(Bytes::from(bytes), std::time::SystemTime::now())
            .ok()
            .map(|p| p.body)
    }

    #[test]
    fn a_failed_write_is_counted_and_nothing_half_written_stays() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Arc::new(Metrics::new());
        let writer = Writer::spawn(metrics.clone());
        // A directory that is gone: every write fails.
        writer.set_dir(Some(dir.path().join("gone")));
        writer.push("j", "k", body(1));
        writer.close();
        // Once, or twice when close retried it.
        assert!(counter(&metrics, "sdbridge_state_write_errors_total", "j") >= 1.0);
        assert_eq!(writes(&metrics, "j"), 0.0);
    }
}
