//! Files the web layer re-reads when they change (token lists, certificate
//! and key), so secrets rotate without a reload.
//!
//! Nothing runs while nobody asks: the files are `stat`ed when they are
//! used, at most once per [`CHECK_EVERY`], and read again only when a
//! file's identity, size or modification time moved. That look runs on
//! tokio's blocking pool (the value in use answers meanwhile), never on
//! the async worker of the request or handshake that asked. `stat` follows
//! symlinks, so a Kubernetes Secret's `..data` swap counts as a change. A
//! new version that does not load (a certificate written before its key)
//! is logged and the previous one stays in use until the files change
//! again.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;

/// How stale a file may be before its next use looks at it again.
pub const CHECK_EVERY: Duration = Duration::from_secs(1);

/// What decides that a file changed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    modified: Option<SystemTime>,
}

fn stamp(path: &PathBuf) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    Some(Stamp {
        dev: meta.dev(),
        ino: meta.ino(),
        len: meta.len(),
        modified: meta.modified().ok(),
    })
}

/// Turns the files' contents (in `paths` order) into the value in use.
pub type Loader<T> = fn(&[Vec<u8>]) -> Result<T, String>;

/// The latest value loaded from a set of files.
pub struct Watched<T> {
    inner: Arc<Inner<T>>,
}

struct Inner<T> {
    paths: Vec<PathBuf>,
    load: Loader<T>,
    current: ArcSwap<T>,
    /// Milliseconds after `epoch` of the last look at the files.
    checked: AtomicU64,
    epoch: Instant,
    /// The stamps `current` was loaded from (or last failed to load from);
    /// held while a check runs, so one caller looks and others go on.
    stamps: Mutex<Vec<Option<Stamp>>>,
}

impl<T> std::fmt::Debug for Watched<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watched")
            .field("paths", &self.inner.paths)
            .finish_non_exhaustive()
    }
}

impl<T: Send + Sync + 'static> Watched<T> {
    /// Reads and loads the files now; an error names the file that could
    /// not be read, or says why the contents do not load.
    pub fn open(paths: Vec<PathBuf>, load: Loader<T>) -> Result<Self, String> {
        let stamps = paths.iter().map(stamp).collect();
        let value = read_all(&paths).and_then(|contents| load(&contents))?;
        Ok(Watched {
            inner: Arc::new(Inner {
                paths,
                load,
                current: ArcSwap::from_pointee(value),
                checked: AtomicU64::new(0),
                epoch: Instant::now(),
                stamps: Mutex::new(stamps),
            }),
        })
    }

    /// The value to use now. If the last look at the files is older than
    /// [`CHECK_EVERY`], one is started off this thread (inside a tokio
    /// runtime; outside one, here): a change is in use from a later call.
    pub fn get(&self) -> Arc<T> {
        let inner = &self.inner;
        let now = inner.epoch.elapsed().as_millis() as u64;
        let last = inner.checked.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= CHECK_EVERY.as_millis() as u64
            && inner
                .checked
                .compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => {
                    let inner = inner.clone();
                    drop(runtime.spawn_blocking(move || inner.refresh()));
                }
                Err(_) => inner.refresh(),
            }
        }
        inner.current.load_full()
    }
}

impl<T> Inner<T> {
    fn refresh(&self) {
        let Ok(mut stamps) = self.stamps.try_lock() else {
            return;
        };
        let now: Vec<Option<Stamp>> = self.paths.iter().map(stamp).collect();
        if *stamps == now {
            return;
        }
        *stamps = now;
        match read_all(&self.paths).and_then(|contents| (self.load)(&contents)) {
            Ok(value) => {
                self.current.store(Arc::new(value));
                tracing::info!(files = ?self.paths, "re-read after a change");
            }
            Err(error) => tracing::warn!(
                files = ?self.paths,
                %error,
                "changed but does not load; the previous version stays in use"
            ),
        }
    }
}

fn read_all(paths: &[PathBuf]) -> Result<Vec<Vec<u8>>, String> {
    paths
        .iter()
        .map(|p| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(contents: &[Vec<u8>]) -> Result<String, String> {
        let text = String::from_utf8_lossy(&contents[0]).into_owned();
        if text.contains("bad") {
            return Err("bad".into());
        }
        Ok(text)
    }

    fn wait_for(w: &Watched<String>, want: &str) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if *w.get() == want {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    #[test]
    fn a_change_is_picked_up_and_a_bad_one_keeps_the_old_value() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, "one").unwrap();
        let w = Watched::open(vec![path.clone()], lines).unwrap();
        assert_eq!(*w.get(), "one");
        // Rename-over, as editors and Kubernetes do.
        let tmp = dir.path().join("f.tmp");
        std::fs::write(&tmp, "two").unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        assert!(wait_for(&w, "two"));
        std::fs::write(&path, "bad").unwrap();
        std::thread::sleep(CHECK_EVERY * 2);
        assert_eq!(*w.get(), "two");
        std::fs::write(&path, "three!").unwrap();
        assert!(wait_for(&w, "three!"));
    }

    /// Regression: the look at the files (a `stat`, maybe a read and a
    /// certificate parse) ran on the async worker of the request or TLS
    /// handshake that asked.
    #[tokio::test]
    async fn inside_a_runtime_the_files_are_looked_at_off_the_calling_thread() {
        static LOADED_ON: Mutex<Vec<std::thread::ThreadId>> = Mutex::new(Vec::new());
        fn recording(contents: &[Vec<u8>]) -> Result<String, String> {
            LOADED_ON.lock().unwrap().push(std::thread::current().id());
            lines(contents)
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, "one").unwrap();
        let w = Watched::open(vec![path.clone()], recording).unwrap();
        std::fs::write(&path, "two!").unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while *w.get() != "two!" && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(*w.get(), "two!");
        let here = std::thread::current().id();
        let loads = LOADED_ON.lock().unwrap().clone();
        assert_eq!(loads.len(), 2, "open, then one re-read");
        assert_eq!(loads[0], here, "open reads where it is called");
        assert_ne!(loads[1], here, "the re-read ran on the calling thread");
    }

    #[test]
    fn a_missing_file_is_an_error_naming_it() {
        let err = Watched::open(vec![PathBuf::from("/nonexistent/tokens")], lines).unwrap_err();
        assert!(err.contains("/nonexistent/tokens"), "{err}");
    }
}
