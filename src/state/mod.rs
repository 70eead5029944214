//! `state_dir`: each job's last good body, persisted so that a restart
//! while its sources are unreachable serves it (200, ready) instead of
//! `503` until they sync.
//!
//! - [`format`]: one file per job, a self-checking header and the body.
//! - [`Writer`]: the thread that writes them, atomically and coalesced.
//! - [`load`]: reads them back at start, for jobs whose [`job_key`] is
//!   unchanged; anything unreadable is ignored with a warning.
//!
//! Loading happens only at start; a reload that changes `state_dir` makes
//! later writes go to the new directory (see the README).

mod format;
mod writer;

use std::collections::HashMap;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

pub use format::{file_name, Persisted};
pub use writer::{Writer, MIN_INTERVAL};

/// Ends the name of a file being written (`.<file>.<pid>.tmp`); such files
/// left by a crash are removed at start.
pub(crate) const TMP_SUFFIX: &str = ".tmp";

/// The key of job `job`'s configuration: xxh3-128 over the job name and,
/// for each source in order, its kind and what selects its data (see
/// [`crate::source::Source::selects`]). The same config gives the same
/// key in every process; a tuning field or a rotated credential leaves it
/// alone, since the same data is read.
pub fn job_key<'a>(job: &str, sources: impl IntoIterator<Item = (&'a str, String)>) -> String {
    let mut text = format!("{job:?}\n");
    for (kind, selects) in sources {
        text.push_str(&format!("{kind}\0{selects}\n"));
    }
    format!("{:032x}", xxhash_rust::xxh3::xxh3_128(text.as_bytes()))
}

/// A `state_dir` that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("state_dir {}: {message}", dir.display())]
pub struct DirError {
    /// The directory.
    pub dir: PathBuf,
    /// Why not.
    pub message: String,
}

/// Whether `dir` is, or could be created as, a directory, without touching
/// anything (`sdbridge check`).
pub fn check_dir(dir: &Path) -> Result<(), DirError> {
    let fail = |message: String| DirError {
        dir: dir.to_path_buf(),
        message,
    };
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => return Ok(()),
        Ok(_) => return Err(fail("exists and is not a directory".into())),
        Err(e) if !missing(&e) => return Err(fail(e.to_string())),
        Err(_) => {}
    }
    for ancestor in dir.ancestors().skip(1) {
        let ancestor = if ancestor.as_os_str().is_empty() {
            Path::new(".")
        } else {
            ancestor
        };
        match std::fs::metadata(ancestor) {
            Ok(m) if m.is_dir() => return Ok(()),
            Ok(_) => {
                return Err(fail(format!(
                    "cannot be created: {} is not a directory",
                    ancestor.display()
                )))
            }
            Err(e) if !missing(&e) => {
                return Err(fail(format!("{}: {e}", ancestor.display())));
            }
            Err(_) => {}
        }
    }
    Ok(())
}

fn missing(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory)
}

/// Makes `dir` ready for writing: checked, created if missing, and a probe
/// file written and removed, so a directory sdbridge cannot write in is an
/// error at start, not a warning at the first write.
pub fn prepare(dir: &Path) -> Result<(), DirError> {
    check_dir(dir)?;
    let fail = |what: &str, e: std::io::Error| DirError {
        dir: dir.to_path_buf(),
        message: format!("{what}: {e}"),
    };
    std::fs::create_dir_all(dir).map_err(|e| fail("cannot create it", e))?;
    let probe = dir.join(format!(".probe.{}{TMP_SUFFIX}", std::process::id()));
    std::fs::write(&probe, b"")
        .and_then(|()| std::fs::remove_file(&probe))
        .map_err(|e| fail("cannot write in it", e))
}

/// The bodies read at start, by job name.
pub type Loaded = HashMap<String, Persisted>;

/// What `serve` gives the merger: the writer, and what was read at start.
#[derive(Debug)]
pub struct Persistence {
    /// Writes bodies after each publish.
    pub writer: Arc<Writer>,
    /// Bodies to serve until their jobs' sources sync.
    pub loaded: Loaded,
}

/// Reads the state files of `jobs` (name, [`job_key`]) from `dir`,
/// keeping those whose key matches. A file that is damaged, foreign, of
/// another format, not a regular file, over `max_body` bytes of body
/// (`limits.max_input_size`) or built more than a day ahead of the clock
/// is ignored with a warning; leftovers of interrupted writes are
/// removed. Never fails and cannot block on a file: the worst case is
/// serving nothing.
pub fn load(dir: &Path, jobs: &[(String, String)], max_body: u64) -> Loaded {
    let wanted: HashMap<String, (&str, &str)> = jobs
        .iter()
        .map(|(job, key)| (file_name(job), (job.as_str(), key.as_str())))
        .collect();
    sweep(dir, &wanted);
    let now = SystemTime::now();
    let mut loaded = Loaded::new();
    for (file, (job, key)) in wanted {
        let path = dir.join(&file);
        let persisted = match format::read(&path, max_body, now) {
            Ok(Some(p)) => p,
            Ok(None) => continue,
            Err(why) => {
                tracing::warn!(job, path = %path.display(), error = %why, "ignoring the state file");
                continue;
            }
        };
        if persisted.job != job {
            tracing::warn!(job, path = %path.display(), holds = %persisted.job, "the state file is another job's; ignored");
        } else if persisted.key != key {
            tracing::info!(job, path = %path.display(), "the job's configuration changed since its state was written; not serving it");
        } else {
            tracing::info!(
                job,
                path = %path.display(),
                built = %crate::snapshot::http_date(persisted.built_at),
                targets = persisted.targets,
                "serving the job's last good body from state_dir until its sources sync"
            );
            loaded.insert(job.to_string(), persisted);
        }
    }
    loaded
}

/// Removes leftovers of interrupted writes and warns about files that are
/// not sdbridge's.
fn sweep(dir: &Path, wanted: &HashMap<String, (&str, &str)>) {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(path = %dir.display(), error = %e, "cannot list state_dir");
            return;
        }
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if wanted.contains_key(&name) {
            // Read by `load`.
        } else if name.starts_with('.') && name.ends_with(TMP_SUFFIX) {
            if let Err(e) = std::fs::remove_file(&path) {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove a leftover temporary state file");
            }
        } else if name.ends_with(format::EXTENSION) {
            tracing::debug!(path = %path.display(), "state file of a job not in the config; left alone");
        } else if entry.file_type().is_ok_and(|t| t.is_file()) {
            tracing::warn!(path = %path.display(), "not an sdbridge state file; ignored");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::source::sources_of;

    fn key(text: &str) -> String {
        let config = Config::parse(text, Path::new("/etc/sdbridge/s.yml")).unwrap();
        let job = &config.jobs[0];
        job_key(&job.job_name, crate::source::key_parts(&sources_of(job)))
    }

    #[test]
    fn the_key_follows_every_source_and_nothing_else() {
        let base = "jobs:\n  - job_name: j\n    file_sd_configs: [{files: [a.json]}]\n    sql_sd_configs: [{dsn: 'mysql://u:pw@127.0.0.1/inv', query: 'SELECT 1'}]\n";
        assert_eq!(key(base), key(base), "stable");
        assert_eq!(key(base), key(&format!("{base}  - job_name: other\n")));
        for changed in [
            base.replace("a.json", "b.json"),
            base.replace("j\n", "k\n"),
            base.replace("/inv", "/inv2"),
            base.replace("127.0.0.1", "127.0.0.2"),
            base.replace("SELECT 1", "SELECT 2"),
            format!("{base}    static_configs: [{{targets: ['127.0.0.1:1']}}]\n"),
        ] {
            assert_ne!(key(base), key(&changed), "{changed}");
        }
        assert_eq!(
            key(base),
            key(&base.replace("u:pw@", "u:other@")),
            "a rotated password reads the same data"
        );
    }

    /// Regression: a reload that changed only a tuning field changed the
    /// key, so a crash right after it served 503 where `state_dir` had the
    /// job's last good body.
    #[test]
    fn tuning_fields_and_credentials_leave_the_key_alone() {
        let job = |block: &str| format!("jobs:\n  - job_name: j\n{block}");
        for (kind, plain, tuned) in [
            (
                "file_sd",
                "    file_sd_configs: [{files: [a.json]}]\n",
                "    file_sd_configs: [{files: [a.json], refresh_interval: 1h}]\n",
            ),
            (
                "sql_sd",
                "    sql_sd_configs: [{dsn: 'mysql://u:pw@127.0.0.1/inv', query: 'SELECT 1'}]\n",
                "    sql_sd_configs: [{dsn: 'mysql://u:pw@127.0.0.1/inv', query: 'SELECT 1', refresh_interval: 5m, query_timeout: 3s}]\n",
            ),
            (
                "http_sd",
                "    http_sd_configs: [{url: 'http://127.0.0.1:1/sd'}]\n",
                "    http_sd_configs: [{url: 'http://127.0.0.1:1/sd', refresh_interval: 5m, follow_redirects: false, basic_auth: {username: a, password: b}}]\n",
            ),
            (
                "consul_sd",
                "    consul_sd_configs: [{server: '127.0.0.1:8500', services: [a]}]\n",
                "    consul_sd_configs: [{server: '127.0.0.1:8500', services: [a], refresh_interval: 1m, allow_stale: false, token: t, max_connections: 8}]\n",
            ),
        ] {
            assert_eq!(key(&job(plain)), key(&job(tuned)), "{kind}: {tuned}");
        }
        // What selects the data still changes it.
        assert_ne!(
            key(&job("    consul_sd_configs: [{server: '127.0.0.1:8500', services: [a]}]\n")),
            key(&job("    consul_sd_configs: [{server: '127.0.0.1:8500', services: [a], datacenter: dc2}]\n"))
        );
        assert_ne!(
            key(&job(
                "    http_sd_configs: [{url: 'http://127.0.0.1:1/sd'}]\n"
            )),
            key(&job(
                "    http_sd_configs: [{url: 'http://127.0.0.1:1/sd2'}]\n"
            ))
        );
    }

    #[test]
    fn an_unusable_dir_is_an_error_and_a_missing_one_is_created() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("file");
        std::fs::write(&file, "x").unwrap();
        let under_file = file.join("state");
        let err = check_dir(&under_file).unwrap_err().to_string();
        assert!(err.contains("is not a directory"), "{err}");
        assert!(prepare(&under_file).is_err());
        assert!(check_dir(&file)
            .unwrap_err()
            .to_string()
            .contains("not a directory"));
        let fresh = tmp.path().join("a/b/state");
        check_dir(&fresh).unwrap();
        assert!(!fresh.exists(), "check touches nothing");
        prepare(&fresh).unwrap();
        assert!(fresh.is_dir());
        assert_eq!(
            std::fs::read_dir(&fresh).unwrap().count(),
            0,
            "probe removed"
        );
    }

    #[test]
    fn load_keeps_matching_files_and_ignores_the_rest() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let body = b"[{\"targets\":[\"127.0.0.1:1\"],\"labels\":{}}]";
        let write = |job: &str, key: &str| {
            let mut f = format::header(
                job,
                key,
                std::time::UNIX_EPOCH,
                &crate::chain::Chain::from(bytes::Bytes::copy_from_slice(body)),
            );
            f.extend_from_slice(body);
            std::fs::write(dir.join(file_name(job)), f).unwrap();
        };
        write("good", "k");
        write("changed", "old");
        std::fs::write(dir.join(file_name("corrupt")), b"sdbridge state v1\njob").unwrap();
        std::fs::write(dir.join(file_name("foreign")), b"[]").unwrap();
        // Another job's file under this job's name.
        std::fs::copy(dir.join(file_name("good")), dir.join(file_name("moved"))).unwrap();
        std::fs::write(dir.join(".good.state.1.tmp"), b"half").unwrap();
        std::fs::write(dir.join("README"), b"not ours").unwrap();
        let jobs: Vec<(String, String)> =
            ["good", "changed", "corrupt", "foreign", "moved", "absent"]
                .iter()
                .map(|j| (j.to_string(), "k".to_string()))
                .collect();
        let loaded = load(dir, &jobs, 1 << 20);
        assert_eq!(loaded.keys().collect::<Vec<_>>(), ["good"]);
        assert_eq!(&loaded["good"].body[..], body);
        assert!(!dir.join(".good.state.1.tmp").exists(), "leftover removed");
        assert!(dir.join("README").exists(), "foreign files are left alone");
    }
}
