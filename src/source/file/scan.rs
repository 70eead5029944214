//! Listing the patterns' directories and re-reading what changed.
//!
//! A file is re-read only when its (device, inode, size, mtime, ctime)
//! changed, so a rescan of an idle tree costs one `getdents` per directory
//! and one `stat` per file, and a focused one ([`Scanner::scan_focused`])
//! a `stat` of each file events named. A listing or a read that fails is never taken
//! for "no files": the files it would have listed keep their groups, the
//! error is reported, and [`Scanner::needs_retry`] asks for another look.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{ErrorKind, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::parse::{parse_file, FileError};
use super::watch::Focus;
use crate::gopath;
use crate::source::Part;

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
    /// A FIFO, socket or device: never opened (reading a FIFO blocks).
    regular: bool,
}

impl Signature {
    fn of(meta: &std::fs::Metadata) -> Signature {
        Signature {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
            regular: meta.is_file(),
        }
    }
}

#[derive(Debug)]
struct FileState {
    /// `None` when the file is listed but could not be stat'ed (a dangling
    /// symlink, often mid-swap).
    signature: Option<Signature>,
    /// The directory (or literal pattern) that listed it: while that
    /// listing fails, the file keeps its groups.
    origin: String,
    /// The current problem with the file; its previous groups are served.
    error: Option<FileError>,
}

/// What the patterns match now.
#[derive(Debug, Default)]
struct Listing {
    /// Matched paths, with where they were listed from.
    found: BTreeMap<String, (Option<Signature>, String)>,
    /// Directories (or literal paths) whose listing failed, with why.
    failed: BTreeMap<String, FileError>,
}

/// The result of one scan.
#[derive(Debug, Default)]
pub struct Scan {
    /// Files whose groups changed (empty groups: removed).
    pub parts: Vec<Part>,
    /// Errors found in this scan (each is reported once, when it first
    /// appears or changes).
    pub new_errors: Vec<FileError>,
    /// Files read (for `sdbridge_file_sd_reads_total`).
    pub reads: u64,
}

/// Directory-listing state of one file_sd config.
#[derive(Debug)]
pub struct Scanner {
    patterns: Vec<Pattern>,
    /// Largest file read (`limits.max_input_size`).
    max_input: usize,
    files: BTreeMap<String, FileState>,
    /// Listings that failed in the last scan.
    failed: BTreeMap<String, FileError>,
    /// The job whose name the parts carry.
    job: Arc<str>,
    /// Pattern directories where a matching name is a symlink: there, a
    /// change to something else (Kubernetes' `..data`) can change what a
    /// served name reads, so only a full scan can tell.
    symlinked: BTreeSet<String>,
}

fn list_error(path: &str, e: &std::io::Error) -> FileError {
    FileError {
        path: path.to_string(),
        line: 0,
        column: 0,
        message: format!("cannot list: {e}"),
        kind: "list",
    }
}

/// Errors that mean "nothing is there" rather than "could not look".
fn is_absent(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory)
}

impl Scanner {
    /// A scanner for resolved patterns (see [`crate::config::Config::parse`]).
    pub fn new(files: &[String]) -> Scanner {
        Scanner {
            patterns: files.iter().map(|f| Pattern::new(f)).collect(),
            max_input: crate::http_client::DEFAULT_MAX_INPUT,
            files: BTreeMap::new(),
            failed: BTreeMap::new(),
            job: Arc::from(""),
            symlinked: BTreeSet::new(),
        }
    }

    /// The same scanner, serializing parts for job `job`.
    pub fn for_job(mut self, job: Arc<str>) -> Scanner {
        self.job = job;
        self
    }

    /// The same scanner, refusing files over `max_input` bytes.
    pub fn with_limit(mut self, max_input: usize) -> Scanner {
        self.max_input = max_input;
        self
    }

    /// The paths the patterns match now, like Prometheus's `listFiles`
    /// (Go's `filepath.Glob`), but keeping failures apart from absence.
    fn list(&mut self) -> Listing {
        let mut listing = Listing::default();
        self.symlinked.clear();
        let mut names_of: BTreeMap<&str, Option<Vec<(String, bool)>>> = BTreeMap::new();
        for pattern in &self.patterns {
            let Some(glob) = &pattern.name else {
                // Go's Glob returns a literal pattern if `Lstat` finds it,
                // so a dangling symlink is listed (and fails to read,
                // keeping its groups), as in Prometheus.
                match std::fs::symlink_metadata(&pattern.raw) {
                    Ok(meta) => {
                        let meta = if meta.file_type().is_symlink() {
                            std::fs::metadata(&pattern.raw).ok()
                        } else {
                            Some(meta)
                        };
                        if !meta.as_ref().is_some_and(|m| m.is_dir()) {
                            let signature = meta.as_ref().map(Signature::of);
                            listing
                                .found
                                .insert(pattern.raw.clone(), (signature, pattern.raw.clone()));
                        }
                    }
                    Err(e) if is_absent(&e) => {}
                    Err(e) => {
                        listing
                            .failed
                            .insert(pattern.raw.clone(), list_error(&pattern.raw, &e));
                    }
                }
                continue;
            };
            let names =
                names_of
                    .entry(&pattern.dir)
                    .or_insert_with(|| match read_names(&pattern.dir) {
                        Ok(names) => Some(names),
                        Err(e) if is_absent(&e) => Some(Vec::new()),
                        Err(e) => {
                            listing
                                .failed
                                .insert(pattern.dir.clone(), list_error(&pattern.dir, &e));
                            None
                        }
                    });
            for (name, symlink) in names.iter().flatten() {
                if gopath::glob_match(glob, name) != Ok(true) {
                    continue;
                }
                if *symlink {
                    self.symlinked.insert(pattern.dir.clone());
                }
                let path = gopath::join(&pattern.dir, name);
                let Some(signature) = seen(&path) else {
                    continue;
                };
                listing
                    .found
                    .entry(path)
                    .or_insert((signature, pattern.dir.clone()));
            }
        }
        listing
    }

    /// Rescans; with `reread_all`, re-reads every file even if unchanged.
    /// Files whose last read failed are always read again.
    pub fn scan(&mut self, reread_all: bool) -> Scan {
        let mut scan = Scan::default();
        let listing = self.list();
        for (origin, error) in &listing.failed {
            if self.failed.get(origin) != Some(error) {
                scan.new_errors.push(error.clone());
            }
        }
        self.failed = listing.failed;
        let gone: Vec<String> = self
            .files
            .iter()
            .filter(|(path, f)| {
                !listing.found.contains_key(*path) && !self.failed.contains_key(&f.origin)
            })
            .map(|(path, _)| path.clone())
            .collect();
        for path in gone {
            self.files.remove(&path);
            scan.parts.push(Part::removed(path));
        }
        for (path, (signature, origin)) in listing.found {
            self.look_at(path, signature, origin, reread_all, &mut scan);
        }
        scan
    }

    /// Looks at just the files `focus` names, if that is enough to know
    /// what changed: not when an event named something else where served
    /// names are symlinks, a listing is failing, or a literal pattern is
    /// involved. `None`: call [`Scanner::scan`] instead.
    pub fn scan_focused(&mut self, focus: &Focus) -> Option<Scan> {
        let symlinked = |dir: &Path| self.symlinked.iter().any(|d| Path::new(d) == dir);
        if focus.everything
            || !self.failed.is_empty()
            || focus.other_dirs.iter().any(|d| symlinked(d))
        {
            return None;
        }
        let mut named: BTreeMap<String, String> = BTreeMap::new();
        for file in &focus.files {
            let (Some(dir), Some(name)) =
                (file.parent(), file.file_name().and_then(|n| n.to_str()))
            else {
                return None;
            };
            for pattern in &self.patterns {
                match &pattern.name {
                    None if Path::new(&pattern.raw) == file => return None,
                    Some(glob)
                        if Path::new(&pattern.dir) == dir
                            && gopath::glob_match(glob, name) == Ok(true) =>
                    {
                        named
                            .entry(gopath::join(&pattern.dir, name))
                            .or_insert_with(|| pattern.dir.clone());
                    }
                    _ => {}
                }
            }
        }
        let mut scan = Scan::default();
        for (path, origin) in named {
            if is_symlink(&path) {
                // A new symlink: from now on its target can change
                // without an event naming it.
                self.symlinked.insert(origin.clone());
            }
            match seen(&path) {
                Some(signature) => self.look_at(path, signature, origin, false, &mut scan),
                None => {
                    if self.files.remove(&path).is_some() {
                        scan.parts.push(Part::removed(path));
                    }
                }
            }
        }
        Some(scan)
    }

    /// Reads `path` if its signature says it changed (or `reread_all`)
    /// and records what it holds now.
    fn look_at(
        &mut self,
        path: String,
        signature: Option<Signature>,
        origin: String,
        reread_all: bool,
        scan: &mut Scan,
    ) {
        {
            let known = self.files.get(&path);
            let unchanged = known.is_some_and(|f| {
                f.signature == signature
                    && signature.is_some()
                    && f.error.as_ref().is_none_or(|e| e.kind == "parse")
            });
            if unchanged && !reread_all {
                return;
            }
            scan.reads += 1;
            let result = read(&path, signature, self.max_input)
                .and_then(|content| parse_file(&path, &content));
            let error = match result {
                Ok(groups) => {
                    scan.parts.push(Part::new(path.clone(), &groups, &self.job));
                    None
                }
                Err(e) => {
                    if known.and_then(|f| f.error.as_ref()) != Some(&e) {
                        scan.new_errors.push(e.clone());
                    }
                    Some(e)
                }
            };
            self.files.insert(
                path,
                FileState {
                    signature,
                    origin,
                    error,
                },
            );
        }
    }

    /// Whether the last scan met errors that may go away by themselves (a
    /// failed listing, an unreadable file), so the caller should look again
    /// soon rather than wait for an event.
    pub fn needs_retry(&self) -> bool {
        !self.failed.is_empty()
            || self
                .files
                .values()
                .any(|f| f.error.as_ref().is_some_and(|e| e.kind != "parse"))
    }

    /// Problems of listings and files that currently cannot be used, one
    /// per line.
    pub fn problem(&self) -> Option<String> {
        let errors: Vec<String> = self
            .failed
            .values()
            .chain(self.files.values().filter_map(|f| f.error.as_ref()))
            .map(ToString::to_string)
            .collect();
        (!errors.is_empty()).then(|| errors.join("\n"))
    }

    /// (directory, file-name glob) of each pattern; a literal pattern's
    /// name is a glob matching only itself.
    pub fn served_names(&self) -> Vec<(PathBuf, String)> {
        self.patterns
            .iter()
            .map(|p| {
                let name = match &p.name {
                    Some(glob) => glob.clone(),
                    None => gopath::split(&p.raw).1.to_string(),
                };
                (PathBuf::from(&p.dir), name)
            })
            .collect()
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

/// The names in `dir`; any error while listing fails the whole listing
/// (a partial listing would remove the files it missed). Each name comes
/// with whether it is a symlink (or of unknown type), which the directory
/// entry tells without a `stat` on most filesystems.
fn read_names(dir: &str) -> std::io::Result<Vec<(String, bool)>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let symlink = entry.file_type().map_or(true, |t| t.is_symlink());
        if let Ok(name) = entry.file_name().into_string() {
            names.push((name, symlink));
        }
    }
    Ok(names)
}

/// A matched name as a listing sees it. `None`: gone (deleted since the
/// listing, or a directory); `Some(None)`: there but not stat-able (a
/// dangling symlink, often mid-swap), unreadable rather than deleted, so
/// it keeps its groups.
fn seen(path: &str) -> Option<Option<Signature>> {
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_dir() => None,
        Ok(meta) => Some(Some(Signature::of(&meta))),
        Err(e) if e.kind() == ErrorKind::NotFound && !is_symlink(path) => None,
        Err(_) => Some(None),
    }
}

fn is_symlink(path: &str) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
}

/// Reads a listed file; special files are refused without opening them,
/// and so are files over `max` bytes (also one still growing).
fn read(path: &str, signature: Option<Signature>, max: usize) -> Result<Vec<u8>, FileError> {
    let error = |message: String| FileError {
        path: path.to_string(),
        line: 0,
        column: 0,
        message,
        kind: "read",
    };
    if signature.is_some_and(|s| !s.regular) {
        return Err(error("not a regular file".to_string()));
    }
    let too_large = || {
        error(format!(
            "larger than limits.max_input_size ({max} bytes); its previous targets stay served"
        ))
    };
    if signature.is_some_and(|s| s.len > max as u64) {
        return Err(too_large());
    }
    let mut content = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(max as u64 + 1).read_to_end(&mut content))
        .map_err(|e| error(e.to_string()))?;
    if content.len() > max {
        return Err(too_large());
    }
    Ok(content)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::file::FILEPATH_LABEL;
    use crate::targetgroup::{LabelSet, TargetGroup};

    /// Issue 12: the files events name are looked at alone; a rename-over,
    /// a new file and a delete come out as a full scan would see them, and
    /// the scanner declines where only a listing can tell.
    #[test]
    fn a_focused_scan_sees_what_a_full_one_would() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap().to_string();
        let path = |n: &str| format!("{d}/{n}");
        for n in ["a", "b", "c"] {
            std::fs::write(
                path(&format!("{n}.json")),
                format!(r#"[{{"targets":["{n}"]}}]"#),
            )
            .unwrap();
        }
        let mut scanner = Scanner::new(&[format!("{d}/*.json")]);
        assert_eq!(scanner.scan(false).parts.len(), 3);
        let focus = |files: &[&str]| Focus {
            files: files.iter().map(|f| PathBuf::from(path(f))).collect(),
            ..Focus::default()
        };
        std::fs::write(path("a.tmp"), r#"[{"targets":["a2"]}]"#).unwrap();
        std::fs::rename(path("a.tmp"), path("a.json")).unwrap();
        std::fs::write(path("d.json"), r#"[{"targets":["d"]}]"#).unwrap();
        std::fs::remove_file(path("b.json")).unwrap();
        let mut other = focus(&["a.json", "b.json", "d.json", "c.json"]);
        other.other_dirs.insert(dir.path().to_path_buf());
        let scan = scanner.scan_focused(&other).expect("no symlinks here");
        let summary: Vec<(String, Vec<String>)> = scan
            .parts
            .iter()
            .map(|p| {
                let targets = p.fragment.parse().into_iter().flat_map(|g| g.targets);
                (p.key.clone(), targets.collect())
            })
            .collect();
        assert_eq!(
            summary,
            [
                (path("a.json"), vec!["a2".to_string()]),
                (path("b.json"), vec![]),
                (path("d.json"), vec!["d".to_string()]),
            ],
            "c.json is unchanged and not read"
        );
        assert_eq!(scan.reads, 2);
        assert!(scanner.scan(false).parts.is_empty(), "a full scan agrees");
        // Served names that are symlinks: a change to anything else in the
        // directory may change them (Kubernetes' `..data`).
        std::os::unix::fs::symlink(path("c.json"), path("e.json")).unwrap();
        assert_eq!(scanner.scan(false).parts.len(), 1);
        assert!(scanner.scan_focused(&other).is_none());
        assert!(scanner.scan_focused(&focus(&["a.json"])).is_some());
        let everything = Focus {
            everything: true,
            ..Focus::default()
        };
        assert!(scanner.scan_focused(&everything).is_none());
        // A literal pattern is left to the listing.
        let mut literal = Scanner::new(&[path("a.json")]);
        literal.scan(false);
        assert!(literal.scan_focused(&focus(&["a.json"])).is_none());
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
                &[TargetGroup::new(["y"], labels)],
                ""
            )]
        );
        assert!(scanner.problem().is_none());
    }

    /// Issue 7, defect 3: a listing that fails (here ELOOP; in the field
    /// EMFILE) is not an empty directory.
    #[test]
    fn failed_listing_keeps_groups_and_is_retried() {
        let dir = tempfile::tempdir().unwrap();
        let sd = dir.path().join("sd");
        std::fs::create_dir(&sd).unwrap();
        std::fs::write(sd.join("a.json"), r#"[{"targets":["x"]}]"#).unwrap();
        let mut scanner = Scanner::new(&[format!("{}/*.json", sd.display())]);
        assert_eq!(scanner.scan(true).parts.len(), 1);
        std::fs::rename(&sd, dir.path().join("sd.old")).unwrap();
        std::os::unix::fs::symlink("sd", &sd).unwrap();
        let scan = scanner.scan(false);
        assert!(scan.parts.is_empty(), "groups kept: {:?}", scan.parts);
        assert_eq!(scan.new_errors.len(), 1);
        assert_eq!(scan.new_errors[0].kind, "list");
        assert!(scanner.needs_retry());
        assert!(scanner.problem().unwrap().contains("cannot list"));
        // Reported once, however often it is retried.
        assert!(scanner.scan(false).new_errors.is_empty());
        // The directory comes back: up again, nothing re-read needlessly.
        std::fs::remove_file(&sd).unwrap();
        std::fs::rename(dir.path().join("sd.old"), &sd).unwrap();
        let scan = scanner.scan(false);
        assert!(scan.parts.is_empty() && scan.reads == 0, "{scan:?}");
        assert!(!scanner.needs_retry() && scanner.problem().is_none());
        // A directory that is really gone removes its files' groups.
        std::fs::remove_dir_all(&sd).unwrap();
        assert_eq!(scanner.scan(false).parts.len(), 1);
    }

    /// Issue 7, defect 4: Prometheus `Lstat`s literal patterns, so a
    /// dangling literal symlink is a read error that keeps its groups.
    #[test]
    fn dangling_literal_symlink_keeps_groups() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("real.json"), r#"[{"targets":["x"]}]"#).unwrap();
        let lit = dir.path().join("lit.json");
        std::os::unix::fs::symlink("real.json", &lit).unwrap();
        let mut scanner = Scanner::new(&[lit.to_str().unwrap().to_string()]);
        assert_eq!(scanner.scan(true).parts.len(), 1);
        std::fs::remove_file(dir.path().join("real.json")).unwrap();
        let scan = scanner.scan(false);
        assert!(scan.parts.is_empty(), "groups kept: {:?}", scan.parts);
        assert_eq!(scan.new_errors[0].kind, "read");
        // Removing the symlink itself removes the groups.
        std::fs::remove_file(&lit).unwrap();
        assert_eq!(
            scanner.scan(false).parts,
            [Part::removed(lit.to_str().unwrap())]
        );
    }

    /// A FIFO matched by a glob would block a reader forever: refused
    /// without being opened.
    #[test]
    fn fifo_is_refused_without_opening_it() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pipe.json");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        if !made.is_ok_and(|s| s.success()) {
            eprintln!("SKIPPED: mkfifo not available");
            return;
        }
        let mut scanner = Scanner::new(&[format!("{}/*.json", dir.path().display())]);
        let scan = scanner.scan(true);
        assert!(scan.parts.is_empty());
        assert!(scan.new_errors[0]
            .to_string()
            .contains("not a regular file"));
    }

    /// Issue 10: a file over `limits.max_input_size` is an error that keeps
    /// its previous groups, whether it is over the limit when listed or
    /// grows past it while read.
    #[test]
    fn a_file_over_the_limit_keeps_its_previous_groups() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.json");
        std::fs::write(&file, r#"[{"targets":["x"]}]"#).unwrap();
        let mut scanner =
            Scanner::new(&[format!("{}/*.json", dir.path().display())]).with_limit(64);
        assert_eq!(scanner.scan(true).parts.len(), 1);
        let big = format!(r#"[{{"targets":["{}"]}}]"#, "y".repeat(100));
        std::fs::write(&file, big).unwrap();
        let scan = scanner.scan(false);
        assert!(scan.parts.is_empty(), "groups kept");
        assert!(scan.new_errors[0]
            .to_string()
            .contains("larger than limits.max_input_size (64 bytes)"));
        assert!(
            read(file.to_str().unwrap(), None, 64).is_err(),
            "bounded without a size"
        );
    }
}
