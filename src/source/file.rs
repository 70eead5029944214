//! `file_sd_configs` with Prometheus's semantics (`discovery/file`).
//!
//! Watching: the directories of the patterns are watched (non-recursively),
//! never the files. Any event only marks the source dirty; after a short
//! settle window the directory listings are rescanned and a file is re-read
//! only if its (size, mtime, ctime, inode, device) changed. That one rule
//! covers in-place writes, editors' rename-over saves and Kubernetes
//! ConfigMaps swapping their `..data` symlink, without interpreting event
//! kinds. A directory that does not exist yet is covered by watching its
//! nearest existing ancestor. Every `refresh_interval` all files are re-read
//! regardless, as Prometheus does.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::Notify;
use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;

use super::{Change, Outbox, Part, SourceError, Update};
use crate::config::FileSdConfig;
use crate::gopath;
use crate::targetgroup::TargetGroup;
use crate::yaml;

/// The label Prometheus puts the matched path in.
pub const FILEPATH_LABEL: &str = "__meta_filepath";

/// Quiet time after the last event before rescanning, so a file written in
/// several steps is read once, complete.
const SETTLE: Duration = Duration::from_millis(50);
/// Longest a stream of events can delay a rescan.
const MAX_SETTLE: Duration = Duration::from_secs(1);

/// A file_sd file that could not be used; its previous groups stay served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct FileError {
    /// The file, as `__meta_filepath` would name it.
    pub path: String,
    /// 1-based line, 0 if not tied to a place.
    pub line: usize,
    /// 1-based column, 0 if not tied to a place.
    pub column: usize,
    /// What is wrong.
    pub message: String,
    /// `read` or `parse`, for metrics.
    pub kind: &'static str,
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        if self.line > 0 {
            write!(
                f,
                "{}:{}:{}: {}",
                self.path, self.line, self.column, self.message
            )
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Parses one file_sd file the way Prometheus's `readFile` does: `.json`
/// with JSON (unknown keys rejected), `.yml`/`.yaml` with strict YAML; a
/// `null` item rejects the whole file; every group gets `__meta_filepath`.
/// An empty YAML file is an empty list; an empty JSON file is an error.
pub fn parse_file(path: &str, content: &[u8]) -> Result<Vec<TargetGroup>, FileError> {
    let error = |line, column, message: String| FileError {
        path: path.to_string(),
        line,
        column,
        message,
        kind: "parse",
    };
    let ext = gopath::split(path)
        .1
        .rsplit_once('.')
        .map(|(_, ext)| ext.to_ascii_lowercase())
        .unwrap_or_default();
    let parsed: Option<Vec<Option<TargetGroup>>> = match ext.as_str() {
        "json" => serde_json::from_slice(content).map_err(|e| {
            let full = e.to_string();
            let suffix = format!(" at line {} column {}", e.line(), e.column());
            let message = full.strip_suffix(&suffix).unwrap_or(&full).to_string();
            error(e.line(), e.column(), message)
        })?,
        "yml" | "yaml" => {
            let text = std::str::from_utf8(content)
                .map_err(|e| error(0, 0, format!("invalid UTF-8: {e}")))?;
            yaml::from_str(text).map_err(|e| error(e.line, e.column, e.message))?
        }
        _ => return Err(error(0, 0, "not a .json, .yml or .yaml file".to_string())),
    };
    let mut groups = Vec::new();
    for group in parsed.unwrap_or_default() {
        let Some(mut group) = group else {
            return Err(error(0, 0, "nil target group item found".to_string()));
        };
        group
            .labels
            .0
            .insert(FILEPATH_LABEL.to_string(), path.to_string());
        groups.push(group);
    }
    Ok(groups)
}

/// One `files` entry, split the way Go's `filepath.Glob` splits it.
#[derive(Debug, Clone)]
struct Pattern {
    /// Directory to list (Go's `cleanGlobPath` of the directory part).
    dir: String,
    /// Glob for the file name; `None` for a pattern without metacharacters,
    /// which Go returns verbatim if it exists.
    name: Option<String>,
    /// The whole pattern, for literal ones.
    raw: String,
}

impl Pattern {
    fn new(raw: &str) -> Pattern {
        let (dir, name) = gopath::split(raw);
        let dir = match dir {
            "" => ".".to_string(),
            "/" => "/".to_string(),
            d => d[..d.len() - 1].to_string(),
        };
        Pattern {
            dir,
            name: gopath::has_meta(name).then(|| name.to_string()),
            raw: raw.to_string(),
        }
    }
}

/// What identifies a version of a file without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Signature {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Signature {
    fn of(meta: &std::fs::Metadata) -> Signature {
        Signature {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }
}

#[derive(Debug)]
struct FileState {
    /// `None` when the file is listed but could not be stat'ed.
    signature: Option<Signature>,
    /// The current problem with the file; its previous groups are served.
    error: Option<FileError>,
}

/// The result of one scan.
#[derive(Debug, Default)]
pub struct Scan {
    /// Files whose groups changed (empty groups: removed).
    pub parts: Vec<Part>,
    /// Errors found in this scan (each file error is reported once, when
    /// the file changes).
    pub new_errors: Vec<FileError>,
}

/// Directory-listing state of one file_sd config.
#[derive(Debug)]
pub struct Scanner {
    patterns: Vec<Pattern>,
    files: BTreeMap<String, FileState>,
}

impl Scanner {
    /// A scanner for resolved patterns (see [`crate::config::Config::parse`]).
    pub fn new(files: &[String]) -> Scanner {
        Scanner {
            patterns: files.iter().map(|f| Pattern::new(f)).collect(),
            files: BTreeMap::new(),
        }
    }

    /// The paths the patterns match now, like Prometheus's `listFiles`.
    fn list(&self) -> BTreeMap<String, Option<Signature>> {
        let mut found = BTreeMap::new();
        let mut listings: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for pattern in &self.patterns {
            let Some(glob) = &pattern.name else {
                if let Ok(meta) = std::fs::metadata(&pattern.raw) {
                    if !meta.is_dir() {
                        found.insert(pattern.raw.clone(), Some(Signature::of(&meta)));
                    }
                }
                continue;
            };
            let names = listings.entry(&pattern.dir).or_insert_with(|| {
                std::fs::read_dir(&pattern.dir)
                    .map(|entries| {
                        entries
                            .filter_map(|e| e.ok())
                            .filter_map(|e| e.file_name().into_string().ok())
                            .collect()
                    })
                    .unwrap_or_default()
            });
            for name in names.iter() {
                if gopath::glob_match(glob, name) != Ok(true) {
                    continue;
                }
                let path = gopath::join(&pattern.dir, name);
                match std::fs::metadata(&path) {
                    Ok(meta) if meta.is_dir() => {}
                    Ok(meta) => {
                        found.insert(path, Some(Signature::of(&meta)));
                    }
                    // Listed but not stat-able: a dangling symlink, often
                    // mid-swap. Treated as unreadable, not as deleted.
                    Err(_) => {
                        found.insert(path, None);
                    }
                }
            }
        }
        found
    }

    /// Rescans; with `reread_all`, re-reads every file even if unchanged.
    pub fn scan(&mut self, reread_all: bool) -> Scan {
        let mut scan = Scan::default();
        let listing = self.list();
        let gone: Vec<String> = self
            .files
            .keys()
            .filter(|path| !listing.contains_key(*path))
            .cloned()
            .collect();
        for path in gone {
            self.files.remove(&path);
            scan.parts.push(Part::removed(path));
        }
        for (path, signature) in listing {
            let known = self.files.get(&path);
            if !reread_all && known.is_some_and(|f| f.signature == signature && signature.is_some())
            {
                continue;
            }
            let result = std::fs::read(&path)
                .map_err(|e| FileError {
                    path: path.clone(),
                    line: 0,
                    column: 0,
                    message: e.to_string(),
                    kind: "read",
                })
                .and_then(|content| parse_file(&path, &content));
            let error = match result {
                Ok(groups) => {
                    scan.parts.push(Part::new(path.clone(), &groups));
                    None
                }
                Err(e) => {
                    if known.and_then(|f| f.error.as_ref()) != Some(&e) {
                        scan.new_errors.push(e.clone());
                    }
                    Some(e)
                }
            };
            self.files.insert(path, FileState { signature, error });
        }
        scan
    }

    /// Problems of files that currently cannot be used, one per line.
    pub fn problem(&self) -> Option<String> {
        let errors: Vec<String> = self
            .files
            .values()
            .filter_map(|f| f.error.as_ref().map(ToString::to_string))
            .collect();
        (!errors.is_empty()).then(|| errors.join("\n"))
    }

    /// Directories to watch: each pattern's directory, or its nearest
    /// existing ancestor while it does not exist.
    pub fn watch_dirs(&self) -> BTreeSet<PathBuf> {
        self.patterns
            .iter()
            .filter_map(|p| {
                Path::new(&p.dir)
                    .ancestors()
                    .find(|a| a.as_os_str().is_empty() || a.is_dir())
                    .map(|a| {
                        if a.as_os_str().is_empty() {
                            PathBuf::from(".")
                        } else {
                            a.to_path_buf()
                        }
                    })
            })
            .collect()
    }
}

/// The watches currently set, keyed by directory with the inode they were
/// set on (a directory deleted and recreated needs a new watch).
struct Watches {
    watcher: Option<notify::RecommendedWatcher>,
    set: BTreeMap<PathBuf, (u64, u64)>,
}

impl Watches {
    fn new(wake: Arc<Notify>) -> Watches {
        let watcher = notify::recommended_watcher(move |_event: notify::Result<notify::Event>| {
            // Events (and watcher errors) only mean "look again".
            wake.notify_one();
        });
        let watcher = match watcher {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(error = %e, "cannot create file watcher; relying on refresh_interval");
                None
            }
        };
        Watches {
            watcher,
            set: BTreeMap::new(),
        }
    }

    /// Makes the watch set equal to `wanted`; returns whether a watch was
    /// added (the caller rescans, to catch changes made before it existed).
    fn sync(&mut self, wanted: BTreeSet<PathBuf>) -> bool {
        let Some(watcher) = self.watcher.as_mut() else {
            return false;
        };
        let mut added = false;
        let identity = |dir: &Path| std::fs::metadata(dir).ok().map(|m| (m.dev(), m.ino()));
        self.set.retain(|dir, id| {
            let keep = wanted.contains(dir) && identity(dir) == Some(*id);
            if !keep {
                let _ = watcher.unwatch(dir);
            }
            keep
        });
        for dir in wanted {
            if self.set.contains_key(&dir) {
                continue;
            }
            let Some(id) = identity(&dir) else { continue };
            match watcher.watch(&dir, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    self.set.insert(dir, id);
                    added = true;
                }
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "cannot watch directory")
                }
            }
        }
        added
    }
}

/// Runs one file_sd config: a full scan (after which the source is synced,
/// even if some files are invalid, as in Prometheus), then a rescan on every
/// change notification and a full re-read every `refresh_interval`.
pub async fn run(config: FileSdConfig, out: Outbox, shutdown: CancellationToken) {
    let wake = Arc::new(Notify::new());
    let mut watches = Watches::new(wake.clone());
    let mut scanner = Scanner::new(&config.files);
    let refresh = config.refresh_interval.0.max(Duration::from_millis(100));
    let mut next_refresh = Instant::now() + refresh;
    let mut reread_all = true;
    let mut first = true;
    loop {
        let (returned, scan) = match tokio::task::spawn_blocking(move || {
            let scan = scanner.scan(reread_all);
            (scanner, scan)
        })
        .await
        {
            Ok(result) => result,
            Err(e) => {
                tracing::error!(error = %e, "file_sd scan task failed");
                return;
            }
        };
        scanner = returned;
        for e in &scan.new_errors {
            tracing::warn!(job = %out.job, error = %e, "file_sd file rejected; its previous targets stay served");
        }
        let update = Update {
            source: out.id,
            change: if first {
                Change::Replace(scan.parts)
            } else if scan.parts.is_empty() {
                Change::None
            } else {
                Change::Patch(scan.parts)
            },
            synced: true,
            problem: scanner.problem(),
            errors: scan
                .new_errors
                .into_iter()
                .map(|e| SourceError {
                    kind: e.kind,
                    message: e.to_string(),
                })
                .collect(),
        };
        if out.send(update).await.is_err() {
            return;
        }
        first = false;
        reread_all = false;
        if watches.sync(scanner.watch_dirs()) {
            // A new watch: something may have changed before it was set.
            continue;
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = wake.notified() => settle(&wake).await,
            _ = sleep_until(next_refresh) => {
                reread_all = true;
                next_refresh = Instant::now() + refresh;
            }
        }
    }
}

/// Waits until events stop for [`SETTLE`], at most [`MAX_SETTLE`].
async fn settle(wake: &Notify) {
    let deadline = Instant::now() + MAX_SETTLE;
    loop {
        let quiet = (Instant::now() + SETTLE).min(deadline);
        tokio::select! {
            _ = wake.notified() => {
                if Instant::now() >= deadline {
                    return;
                }
            }
            _ = sleep_until(quiet) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::targetgroup::LabelSet;

    #[test]
    fn json_file_gets_filepath_and_keeps_order() {
        let groups = parse_file(
            "/sd/a.json",
            r#"[{"targets": ["127.0.0.1:9100"], "labels": {"db_name": "프라이머리"}}, {"targets": []}]"#.as_bytes(),
        )
        .unwrap();
        assert_eq!(groups.len(), 2);
        assert_eq!(
            groups[0].labels,
            LabelSet::from([("db_name", "프라이머리"), (FILEPATH_LABEL, "/sd/a.json")])
        );
        assert_eq!(
            groups[1].labels,
            LabelSet::from([(FILEPATH_LABEL, "/sd/a.json")])
        );
    }

    #[test]
    fn filepath_label_in_file_is_overwritten() {
        let groups = parse_file(
            "/sd/a.yml",
            b"- targets: [x]\n  labels: {__meta_filepath: fake}\n",
        )
        .unwrap();
        assert_eq!(groups[0].labels.0[FILEPATH_LABEL], "/sd/a.yml");
    }

    #[test]
    fn what_rejects_a_whole_file_like_prometheus() {
        let cases: [(&str, &[u8], &str); 7] = [
            ("/sd/a.json", b"", "/sd/a.json:1:0: EOF while parsing"),
            (
                "/sd/a.json",
                b"[null]",
                "/sd/a.json: nil target group item found",
            ),
            (
                "/sd/a.yml",
                b"- null\n",
                "/sd/a.yml: nil target group item found",
            ),
            (
                "/sd/a.json",
                b"[{\"targets\": [\"x\"],\n \"extra\": 1}]",
                "/sd/a.json:2:8: unknown field `extra`",
            ),
            (
                "/sd/a.yml",
                b"- targets: [x]\n  labels:\n    bad-name: 1\n",
                "/sd/a.yml:3:5: [0].labels: \"bad-name\" is not a valid label name",
            ),
            (
                "/sd/a.json",
                b"[{\"targets\": [9104]}]",
                "/sd/a.json:1:18: invalid type: integer",
            ),
            (
                "/sd/a.yml",
                b"- targets: [x]\n  targets: [y]\n",
                "/sd/a.yml:1:3: [0]: duplicate field `targets`",
            ),
        ];
        for (path, content, want) in cases {
            let err = parse_file(path, content).unwrap_err().to_string();
            assert!(
                err.starts_with(want),
                "{path} {:?}\nwant: {want}\ngot:  {err}",
                String::from_utf8_lossy(content)
            );
        }
    }

    #[test]
    fn what_prometheus_accepts() {
        assert_eq!(parse_file("/a.yml", b"").unwrap(), vec![]);
        assert_eq!(parse_file("/a.json", b"null").unwrap(), vec![]);
        assert_eq!(parse_file("/a.json", b"[]").unwrap(), vec![]);
        let g = parse_file(
            "/a.YAML",
            b"- targets: [127.0.0.1:9104, ~]\n  labels: {port: 9104, n: null}\n",
        )
        .unwrap();
        assert_eq!(g[0].targets, ["127.0.0.1:9104", ""]);
        assert_eq!(g[0].labels.0["port"], "9104");
        assert_eq!(g[0].labels.0["n"], "");
        let g = parse_file("/a.json", br#"[{"targets": null, "labels": null}]"#).unwrap();
        assert!(g[0].targets.is_empty());
    }

    #[test]
    fn scanner_forms_paths_like_go_glob() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().to_str().unwrap();
        std::fs::create_dir(dir.path().join("sd")).unwrap();
        std::fs::create_dir(dir.path().join("sd/dir.json")).unwrap();
        std::fs::write(dir.path().join("sd/b.json"), "[]").unwrap();
        std::fs::write(dir.path().join("sd/a.json"), r#"[{"targets":["x"]}]"#).unwrap();
        std::fs::write(dir.path().join("sd/c.yml"), "- targets: [y]\n").unwrap();
        std::fs::write(dir.path().join("sd/lit.yaml"), "- targets: [z]\n").unwrap();
        let patterns = [
            format!("{base}/./sd/*.json"),
            format!("{base}/sd/*.yml"),
            format!("{base}//sd/lit.yaml"),
        ];
        let mut scanner = Scanner::new(&patterns);
        let scan = scanner.scan(true);
        let keys: Vec<&str> = scan.parts.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                format!("{base}//sd/lit.yaml"),
                format!("{base}/sd/a.json"),
                format!("{base}/sd/b.json"),
                format!("{base}/sd/c.yml"),
            ]
        );
        // Nothing changed: nothing re-read.
        assert!(scanner.scan(false).parts.is_empty());
        // Deleted file: its part is emptied.
        std::fs::remove_file(dir.path().join("sd/a.json")).unwrap();
        let scan = scanner.scan(false);
        assert_eq!(scan.parts, vec![Part::removed(format!("{base}/sd/a.json"))]);
    }

    #[test]
    fn invalid_file_keeps_previous_groups_and_reports_once() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.json");
        std::fs::write(&file, r#"[{"targets":["x"]}]"#).unwrap();
        let mut scanner = Scanner::new(&[format!("{}/*.json", dir.path().display())]);
        assert_eq!(scanner.scan(true).parts.len(), 1);
        std::fs::write(&file, r#"[{"targets":["x"],}]"#).unwrap();
        let scan = scanner.scan(false);
        assert!(scan.parts.is_empty(), "no part change for an invalid file");
        assert_eq!(scan.new_errors.len(), 1);
        assert!(scanner.problem().is_some());
        // A refresh re-reads it and finds the same error: not reported again.
        assert!(scanner.scan(true).new_errors.is_empty());
        std::fs::write(&file, r#"[{"targets":["y"]}]"#).unwrap();
        let scan = scanner.scan(false);
        let labels = LabelSet::from([(FILEPATH_LABEL, file.to_str().unwrap())]);
        assert_eq!(
            scan.parts,
            [Part::new(
                file.to_str().unwrap(),
                &[TargetGroup::new(["y"], labels)]
            )]
        );
        assert!(scanner.problem().is_none());
    }
}
