//! The immutable state the HTTP handlers serve: every body pre-serialized,
//! pre-gzipped and tagged, swapped in whole through `ArcSwap` by the merger.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::HeaderValue;

use xxhash_rust::xxh3::Xxh3;

mod shards;

pub use shards::{Shards, MODULI_KEPT};

use crate::chain::Chain;
use crate::gzip;
use crate::targetgroup::Fragment;

/// A gzip chunk ends after a part whose content hash has these bits clear
/// (1 part in 32: about 64 KiB of file_sd files of 10 targets), so chunks
/// are large enough to compress well and small enough to redo quickly.
const CHUNK_MASK: u64 = 31;
/// A gzip chunk ends once it holds this many bytes, whatever the parts.
const MAX_CHUNK: usize = 256 * 1024;

/// What a body is made of: enough to give its bytes ([`Rendered::body`])
/// and its gzip, whose segments the fragments keep.
#[derive(Debug, Clone)]
pub enum Piece {
    /// `[`.
    Open,
    /// `,` before a [`Piece::Raw`] that follows other groups.
    Comma,
    /// `]`.
    Close,
    /// A part's groups, served under the escaped job name (spliced in if
    /// the fragment is job-free); `first` leaves out its leading comma.
    Part {
        /// The groups.
        fragment: Arc<Fragment>,
        /// Whether it comes first in its body.
        first: bool,
        /// The job's name, escaped ([`crate::targetgroup::escape_job`]).
        job: Bytes,
    },
    /// Groups serialized elsewhere (read back from `state_dir`, cut into a
    /// shard), without brackets.
    Raw(Bytes),
}

impl Piece {
    fn served(&self, out: &mut Vec<Bytes>) {
        match self {
            Piece::Open => out.push(gzip::OPEN.0.clone()),
            Piece::Comma => out.push(gzip::COMMA.0.clone()),
            Piece::Close => out.push(gzip::CLOSE.0.clone()),
            Piece::Part {
                fragment,
                first,
                job,
            } => fragment.served(*first, job, out),
            Piece::Raw(b) => out.push(b.clone()),
        }
    }

    /// Feeds what identifies the piece's bytes to a chunk's key.
    fn key(&self, key: &mut Xxh3) {
        match self {
            Piece::Open => key.update(b"o"),
            Piece::Comma => key.update(b"c"),
            Piece::Close => key.update(b"x"),
            Piece::Part {
                fragment,
                first,
                job,
            } => {
                key.update(b"p");
                key.update(&fragment.content_hash().to_le_bytes());
                key.update(&[u8::from(*first)]);
                key.update(&(job.len() as u64).to_le_bytes());
                key.update(job);
            }
            Piece::Raw(raw) => {
                key.update(b"r");
                key.update(&xxhash_rust::xxh3::xxh3_64(raw).to_le_bytes());
            }
        }
    }

    /// Whether a gzip chunk ends after this piece: after 1 part in
    /// [`CHUNK_MASK`]` + 1`, chosen by content, and after any raw piece.
    fn ends_chunk(&self) -> bool {
        match self {
            Piece::Part { fragment, .. } => fragment.content_hash() & CHUNK_MASK == 0,
            Piece::Raw(_) => true,
            Piece::Open | Piece::Comma | Piece::Close => false,
        }
    }

    fn len(&self) -> usize {
        match self {
            Piece::Part { fragment, .. } => fragment.len(),
            Piece::Raw(raw) => raw.len(),
            Piece::Open | Piece::Comma | Piece::Close => 1,
        }
    }

    /// Whether `a` and `b` are the same pieces, sharing their bytes.
    fn same(a: &[Piece], b: &[Piece]) -> bool {
        a.len() == b.len()
            && a.iter().zip(b).all(|pair| match pair {
                (
                    Piece::Part {
                        fragment: f,
                        first: x,
                        job: j,
                    },
                    Piece::Part {
                        fragment: g,
                        first: y,
                        job: k,
                    },
                ) => Arc::ptr_eq(f, g) && x == y && j == k,
                (Piece::Raw(r), Piece::Raw(s)) => r.as_ptr() == s.as_ptr() && r.len() == s.len(),
                (Piece::Open, Piece::Open)
                | (Piece::Comma, Piece::Comma)
                | (Piece::Close, Piece::Close) => true,
                _ => false,
            })
    }

    fn chain(pieces: &[Piece]) -> Chain {
        let mut segments = Vec::with_capacity(pieces.len() + 2);
        for piece in pieces {
            piece.served(&mut segments);
        }
        Chain::new(segments)
    }
}

/// One servable body and its validators. Built once per content change,
/// never per request.
#[derive(Debug, Clone)]
pub struct Rendered {
    /// The JSON array, as the chain of its parts' bytes.
    pub body: Chain,
    /// What `body` is made of: `Open`, the groups, `Close`.
    pub pieces: Vec<Piece>,
    /// `body` gzip-compressed, once, off the publish path (see
    /// [`Rendered::compress`]); until then gzip clients get identity, which
    /// `Accept-Encoding` allows.
    pub gzip: OnceLock<Chain>,
    /// Strong ETag of `body`: a hash of the bytes, so identical on every
    /// replica and restart.
    pub etag: HeaderValue,
    /// ETag of the gzip variant (a representation of its own, RFC 9110).
    pub gzip_etag: HeaderValue,
    /// When the content last changed, whole seconds (HTTP dates have no
    /// fractions, so comparisons must not either).
    pub last_modified: SystemTime,
    /// `last_modified` as an HTTP date.
    pub last_modified_header: HeaderValue,
    /// Number of groups in `body`.
    pub groups: usize,
    /// Number of targets in `body`.
    pub targets: usize,
    /// `?shard=I&of=N` variants of `body`, built when first asked for.
    pub shards: Shards,
    /// The body's content hash, which `etag` quotes.
    hash: u128,
}

impl Rendered {
    /// Renders `pieces` (from `Open` to `Close`); if that gives the bytes
    /// `previous` serves, returns `previous` unchanged so Last-Modified and
    /// the gzip are kept.
    pub fn new(
        pieces: Vec<Piece>,
        groups: usize,
        targets: usize,
        previous: Option<&Arc<Rendered>>,
    ) -> Arc<Rendered> {
        let body = Piece::chain(&pieces);
        let hash = body.xxh3_128();
        if let Some(prev) = previous {
            if prev.hash == hash && prev.body.len() == body.len() {
                if Piece::same(&prev.pieces, &pieces) {
                    return prev.clone();
                }
                // The same bytes in other fragments (a source restarted
                // by a reload re-read its files): serve the new ones, so
                // the old ones are freed, under the old Last-Modified.
                return Rendered::build(body, hash, pieces, groups, targets, prev.last_modified);
            }
        }
        // Whole seconds, and always later than the body it replaces: a
        // client holding the old Last-Modified must not get a 304 for a
        // body that changed within the same second. Saturating: at the
        // last HTTP date it stays there (the ETag still changes).
        let after_previous = previous
            .map(|p| unix_seconds(p.last_modified).saturating_add(1))
            .unwrap_or(0);
        let last_modified = at_second(unix_seconds(SystemTime::now()).max(after_previous));
        Rendered::build(body, hash, pieces, groups, targets, last_modified)
    }

    /// The pieces of `array`, a whole JSON array serialized elsewhere.
    pub fn pieces_of(array: &Bytes) -> Vec<Piece> {
        let inner = array.slice(1.min(array.len())..array.len().saturating_sub(1).max(1));
        if inner.iter().all(u8::is_ascii_whitespace) {
            vec![Piece::Open, Piece::Close]
        } else {
            vec![Piece::Open, Piece::Raw(inner), Piece::Close]
        }
    }

    /// A body first seen at `last_modified` (a body read back from
    /// `state_dir` keeps the `Last-Modified` it was served with).
    pub fn restored(
        array: Bytes,
        groups: usize,
        targets: usize,
        last_modified: SystemTime,
    ) -> Arc<Rendered> {
        let pieces = Rendered::pieces_of(&array);
        let body = Piece::chain(&pieces);
        let hash = body.xxh3_128();
        Rendered::build(body, hash, pieces, groups, targets, last_modified)
    }

    /// A body cut from `parent` (a shard): its own ETag, `parent`'s
    /// `Last-Modified`.
    pub fn derived(
        array: Bytes,
        groups: usize,
        targets: usize,
        parent: &Rendered,
    ) -> Arc<Rendered> {
        Rendered::restored(array, groups, targets, parent.last_modified)
    }

    fn build(
        body: Chain,
        hash: u128,
        pieces: Vec<Piece>,
        groups: usize,
        targets: usize,
        last_modified: SystemTime,
    ) -> Arc<Rendered> {
        // Whole seconds in what an HTTP date can show, whatever it came
        // from (a state file's header).
        let last_modified = at_second(unix_seconds(last_modified));
        // A 128-bit content hash: not a security boundary, just a
        // validator that must be equal wherever the bytes are equal.
        let etag = header(&format!("\"{hash:032x}\""));
        let gzip_etag = header(&format!("\"{hash:032x}-gzip\""));
        Arc::new(Rendered {
            gzip: OnceLock::new(),
            body,
            pieces,
            etag,
            gzip_etag,
            last_modified,
            last_modified_header: header(&http_date(last_modified)),
            groups,
            targets,
            shards: Default::default(),
            hash,
        })
    }

    /// Calls `f` with each piece's groups as a JSON array of their own, in
    /// order: readers of the body (shards, the targets page) parse one part
    /// at a time instead of a copy of the whole body.
    pub fn for_each_array(&self, mut f: impl FnMut(&[u8])) {
        let mut array = Vec::new();
        for piece in &self.pieces {
            let groups = match piece {
                Piece::Part { fragment, job, .. } => fragment.served_joined(true, job),
                Piece::Raw(raw) => raw.clone(),
                Piece::Open | Piece::Comma | Piece::Close => continue,
            };
            array.clear();
            array.push(b'[');
            array.extend_from_slice(&groups);
            array.push(b']');
            f(&array);
        }
    }

    /// Compresses the body if not done yet, with no chunks to reuse
    /// (shards, tests).
    pub fn compress(&self) -> &Chain {
        self.compress_with(&mut gzip::Chunks::default())
    }

    /// Compresses the body if not done yet, chunk by chunk, taking the
    /// chunks that recent bodies share with this one from `chunks`: after
    /// a one-part change this deflates one chunk and checksums the rest.
    /// The merger's gzip thread calls it after publishing, so a change is
    /// served (identity) without waiting for gzip.
    pub fn compress_with(&self, chunks: &mut gzip::Chunks) -> &Chain {
        self.gzip.get_or_init(|| {
            let mut segments = Vec::new();
            let mut run: Vec<Bytes> = Vec::new();
            let mut key = Xxh3::new();
            let mut size = 0;
            let last = self.pieces.len().saturating_sub(1);
            for (i, piece) in self.pieces.iter().enumerate() {
                piece.served(&mut run);
                piece.key(&mut key);
                size += piece.len();
                if piece.ends_chunk() || size >= MAX_CHUNK || i == last {
                    let id = key.digest128();
                    segments.push(chunks.get_or_make(id, || gzip::segment_of(&run)));
                    (run, key, size) = (Vec::new(), Xxh3::new(), 0);
                }
            }
            gzip::assemble(&self.body, segments)
        })
    }
}

/// The last second an HTTP date can show (9999-12-31 23:59:59 UTC);
/// `httpdate` panics on later times, and on times before 1970.
pub const LAST_HTTP_DATE: u64 = 253_402_300_799;

/// `t` as an HTTP date, clamped to what one can show: never panics.
pub fn http_date(t: SystemTime) -> String {
    httpdate::fmt_http_date(at_second(unix_seconds(t)))
}

/// Whole Unix seconds of `t`: 0 before 1970.
fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The time `secs` after 1970, clamped to [`LAST_HTTP_DATE`] (which every
/// `SystemTime` can hold).
fn at_second(secs: u64) -> SystemTime {
    let secs = secs.min(LAST_HTTP_DATE);
    UNIX_EPOCH
        .checked_add(Duration::from_secs(secs))
        .unwrap_or(UNIX_EPOCH)
}

fn header(value: &str) -> HeaderValue {
    // Hex digits, quotes and HTTP dates are always valid header values.
    HeaderValue::from_str(value).unwrap_or(HeaderValue::from_static(""))
}

/// State of one source, for readiness, the status page and metrics.
#[derive(Debug, Clone)]
pub struct SourceStatus {
    /// Mechanism (`static`, `file_sd`).
    pub kind: &'static str,
    /// Name within the job, a metric label (`file_sd#0`).
    pub name: String,
    /// What it reads.
    pub description: String,
    /// Whether its first full round is done.
    pub synced: bool,
    /// Its current problem, if any.
    pub problem: Option<String>,
    /// What it waits for now, if anything (a request slot of a server
    /// other sources share).
    pub waiting: Option<String>,
    /// End of its last round without a problem.
    pub last_success: Option<SystemTime>,
    /// Groups it contributes.
    pub groups: usize,
    /// Targets it contributes.
    pub targets: usize,
}

/// One job as served.
#[derive(Debug, Clone)]
pub struct JobSnapshot {
    /// The job name.
    pub name: String,
    /// Whether every source is synced; until then the job answers 503.
    pub ready: bool,
    /// Its body.
    pub rendered: Arc<Rendered>,
    /// Whether `rendered` is the body read from `state_dir` at start,
    /// served (ready) until every source has synced.
    pub from_state: bool,
    /// Its sources, in serving order.
    pub sources: Vec<SourceStatus>,
}

/// Everything a request needs, published atomically.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Jobs in config order.
    pub jobs: Vec<JobSnapshot>,
    /// Job name to index in `jobs`.
    pub by_name: HashMap<String, usize>,
    /// All jobs' groups, concatenated in config order.
    pub all: Arc<Rendered>,
    /// Whether every job is ready.
    pub all_ready: bool,
    /// Increments on every publish.
    pub generation: u64,
}

impl Snapshot {
    /// The job named `name`.
    pub fn job(&self, name: &str) -> Option<&JobSnapshot> {
        self.by_name.get(name).map(|&i| &self.jobs[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn array(text: &'static str) -> Arc<Rendered> {
        Rendered::restored(Bytes::from_static(text.as_bytes()), 0, 0, UNIX_EPOCH)
    }

    fn again(text: &'static str, previous: &Arc<Rendered>) -> Arc<Rendered> {
        let pieces = Rendered::pieces_of(&Bytes::from_static(text.as_bytes()));
        Rendered::new(pieces, 0, 0, Some(previous))
    }

    #[test]
    fn etag_depends_only_on_content() {
        let a = array("[1]");
        let b = array("[1]");
        let c = array("[2]");
        assert_eq!(a.etag, b.etag);
        assert_ne!(a.etag, c.etag);
        assert_ne!(a.etag, a.gzip_etag);
        assert!(a.etag.to_str().unwrap().starts_with('"'));
        // The hash of the bytes, however they are held.
        let whole = format!("\"{:032x}\"", xxhash_rust::xxh3::xxh3_128(b"[1]"));
        assert_eq!(a.etag.to_str().unwrap(), whole);
    }

    /// Issue 10: a client holding the Last-Modified of a body replaced
    /// within the same second must not get a 304 for the new one.
    #[test]
    fn last_modified_moves_with_every_change() {
        let a = array("[1]");
        let b = again("[2]", &a);
        let c = again("[3]", &b);
        assert!(b.last_modified > a.last_modified);
        assert!(c.last_modified > b.last_modified);
    }

    /// Issue 17: a `Last-Modified` at or past the last HTTP date (a state
    /// file's `built`) neither panics when formatted nor when the next
    /// body is dated one second later.
    #[test]
    fn last_modified_at_the_end_of_http_dates_cannot_panic() {
        let end = UNIX_EPOCH + Duration::from_secs(LAST_HTTP_DATE);
        for secs in [LAST_HTTP_DATE, LAST_HTTP_DATE + 1, i64::MAX as u64 / 2] {
            let at = UNIX_EPOCH + Duration::from_secs(secs);
            let restored = Rendered::restored(Bytes::from_static(b"[1]"), 0, 0, at);
            assert_eq!(restored.last_modified, end, "{secs}");
            assert_eq!(
                restored.last_modified_header,
                "Fri, 31 Dec 9999 23:59:59 GMT"
            );
            let next = again("[2]", &restored);
            assert_eq!(next.last_modified, end);
        }
        let before_1970 = UNIX_EPOCH - Duration::from_secs(1);
        assert_eq!(http_date(before_1970), "Thu, 01 Jan 1970 00:00:00 GMT");
    }

    #[test]
    fn same_body_keeps_previous_render() {
        let a = parts(3, None);
        let same = Rendered::new(a.pieces.clone(), a.groups, a.targets, Some(&a));
        assert!(Arc::ptr_eq(&a, &same));
        assert_eq!(&array("[ ]").body.to_bytes()[..], b"[]");
    }

    /// The same bytes from other fragments (a restarted source re-read
    /// its files, a body read back from `state_dir`): the new fragments
    /// are served, so the old ones can be freed, under the old date.
    #[test]
    fn same_bytes_from_other_fragments_are_served_from_the_new_ones() {
        let (old, new) = (parts(3, None), parts(3, None));
        let kept = Rendered::new(new.pieces.clone(), new.groups, new.targets, Some(&old));
        assert!(!Arc::ptr_eq(&old, &kept));
        assert!(Piece::same(&kept.pieces, &new.pieces));
        assert_eq!(
            (&kept.etag, kept.last_modified),
            (&old.etag, old.last_modified)
        );
        let restored = Rendered::restored(old.body.to_bytes(), 3, 30, UNIX_EPOCH);
        let synced = Rendered::new(new.pieces.clone(), 3, 30, Some(&restored));
        assert!(Piece::same(&synced.pieces, &new.pieces));
        assert_eq!(
            (&synced.etag, synced.last_modified),
            (&restored.etag, UNIX_EPOCH)
        );
    }

    /// A body of `n` parts of 10 targets each; part `changed` differs.
    fn parts(n: usize, changed: Option<usize>) -> Arc<Rendered> {
        use crate::targetgroup::{LabelSet, TargetGroup};
        let fragments: Vec<Arc<Fragment>> = (0..n)
            .map(|i| {
                let targets = (0..10).map(|t| format!("127.0.{}.{t}:9100", i % 250));
                let v = if Some(i) == changed {
                    "changed"
                } else {
                    "서비스"
                };
                let labels = LabelSet::from([("file", &*i.to_string()), ("service_name", v)]);
                Arc::new(Fragment::new(&[TargetGroup::new(targets, labels)], "mysql"))
            })
            .collect();
        crate::merge::render(fragments.iter(), &Bytes::new(), None)
    }

    /// The gzip of a body is the same bytes whatever was compressed
    /// before (replicas agree), and a one-part change re-deflates one
    /// chunk.
    #[test]
    fn gzip_chunks_are_cut_by_content_and_reused() {
        let before = parts(2000, None);
        let after = parts(2000, Some(1234));
        let mut cache = gzip::Chunks::default();
        let first = before.compress_with(&mut cache).to_bytes();
        let made = cache.made();
        assert!(made > 20 && made < 200, "{made} chunks for 2,000 parts");
        cache.rotate();
        let second = after.compress_with(&mut cache).to_bytes();
        assert!(
            cache.made() - made <= 2,
            "{} new chunks",
            cache.made() - made
        );
        assert_eq!(second, parts(2000, Some(1234)).compress().to_bytes());
        assert_eq!(first, parts(2000, None).compress().to_bytes());
        assert_eq!(gzip::gunzip(&second), after.body.to_bytes().to_vec());
        // Chunks of ~64 KiB compress nearly as well as the whole body.
        let whole = gzip::whole(after.body.to_bytes()).len();
        assert!(
            second.len() < whole * 13 / 10,
            "{} against {whole}",
            second.len()
        );
    }

    #[test]
    fn gzip_roundtrips() {
        let r = array("[\"서비스\"]");
        assert!(r.gzip.get().is_none(), "compressed only on demand");
        let out = gzip::gunzip(&r.compress().to_bytes());
        assert_eq!(out, r.body.to_bytes().to_vec());
    }
}
