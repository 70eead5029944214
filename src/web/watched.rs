//! Files the web layer re-reads when they change (token lists, certificate
//! and key), so secrets rotate without a reload.
//!
//! Nothing runs while nobody asks: the files are `stat`ed when they are
//! used, at most once per [`CHECK_EVERY`], and read again only when a
//! file's identity, size or modification time moved. `stat` follows
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
            .field("paths", &self.paths)
            .finish_non_exhaustive()
    }
}

impl<T> Watched<T> {
    /// Reads and loads the files now; an error names the file that could
    /// not be read, or says why the contents do not load.
    pub fn open(paths: Vec<PathBuf>, load: Loader<T>) -> Result<Self, String> {
        let stamps = paths.iter().map(stamp).collect();
        let value = read_all(&paths).and_then(|contents| load(&contents))?;
        Ok(Watched {
            paths,
            load,
            current: ArcSwap::from_pointee(value),
            checked: AtomicU64::new(0),
            epoch: Instant::now(),
            stamps: Mutex::new(stamps),
        })
    }

    /// The value to use now, re-read first if the files changed and the
    /// last look is older than [`CHECK_EVERY`].
    pub fn get(&self) -> Arc<T> {
        let now = self.epoch.elapsed().as_millis() as u64;
        let last = self.checked.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= CHECK_EVERY.as_millis() as u64
            && self
                .checked
                .compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.refresh();
        }
        self.current.load_full()
    }

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

    #[test]
    fn a_missing_file_is_an_error_naming_it() {
        let err = Watched::open(vec![PathBuf::from("/nonexistent/tokens")], lines).unwrap_err();
        assert!(err.contains("/nonexistent/tokens"), "{err}");
    }
}
