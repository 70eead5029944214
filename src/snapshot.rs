//! The immutable state the HTTP handlers serve: every body pre-serialized,
//! pre-gzipped and tagged, swapped in whole through `ArcSwap` by the merger.

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use flate2::write::GzEncoder;
use flate2::Compression;
use http::HeaderValue;

/// One servable body and its validators. Built once per content change,
/// never per request.
#[derive(Debug, Clone)]
pub struct Rendered {
    /// The JSON array.
    pub body: Bytes,
    /// `body`, gzip-compressed once, off the publish path (see
    /// [`Rendered::compress`]); until then gzip clients get identity, which
    /// `Accept-Encoding` allows.
    pub gzip: OnceLock<Bytes>,
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
    pub shards: crate::shard::Shards,
}

impl Rendered {
    /// Renders `body`; if it equals `previous`'s body, returns `previous`
    /// unchanged so Last-Modified and the gzip bytes are kept.
    pub fn new(
        body: Bytes,
        groups: usize,
        targets: usize,
        previous: Option<&Arc<Rendered>>,
    ) -> Arc<Rendered> {
        if let Some(prev) = previous {
            if prev.body == body {
                return prev.clone();
            }
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        // Whole seconds, and always later than the body it replaces: a
        // client holding the old Last-Modified must not get a 304 for a
        // body that changed within the same second.
        let after_previous = previous
            .and_then(|p| p.last_modified.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs() + 1);
        let last_modified = UNIX_EPOCH + Duration::from_secs(now.max(after_previous));
        Rendered::restored(body, groups, targets, last_modified)
    }

    /// A body first seen at `last_modified` (a body read back from
    /// `state_dir` keeps the `Last-Modified` it was served with).
    pub fn restored(
        body: Bytes,
        groups: usize,
        targets: usize,
        last_modified: SystemTime,
    ) -> Arc<Rendered> {
        // A 128-bit content hash: not a security boundary, just a
        // validator that must be equal wherever the bytes are equal.
        let hex = format!("{:032x}", xxhash_rust::xxh3::xxh3_128(&body));
        let etag = header(&format!("\"{hex}\""));
        let gzip_etag = header(&format!("\"{hex}-gzip\""));
        Arc::new(Rendered {
            gzip: OnceLock::new(),
            body,
            etag,
            gzip_etag,
            last_modified,
            last_modified_header: header(&httpdate::fmt_http_date(last_modified)),
            groups,
            targets,
            shards: Default::default(),
        })
    }

    /// A body cut from `parent` (a shard): its own ETag, `parent`'s
    /// `Last-Modified`.
    pub fn derived(body: Bytes, groups: usize, targets: usize, parent: &Rendered) -> Arc<Rendered> {
        Rendered::restored(body, groups, targets, parent.last_modified)
    }
}

impl Rendered {
    /// Compresses the body if not done yet. The merger calls this from a
    /// blocking task after publishing, so a change is served (identity)
    /// without waiting for gzip.
    pub fn compress(&self) -> &Bytes {
        self.gzip.get_or_init(|| gzip(&self.body))
    }
}

fn header(value: &str) -> HeaderValue {
    // Hex digits, quotes and HTTP dates are always valid header values.
    HeaderValue::from_str(value).unwrap_or(HeaderValue::from_static(""))
}

/// Gzip at the default level: bodies are highly repetitive, and this runs
/// once per change, not per request.
pub fn gzip(body: &[u8]) -> Bytes {
    let mut encoder = GzEncoder::new(
        Vec::with_capacity(body.len() / 8 + 64),
        Compression::default(),
    );
    // Writing into a Vec cannot fail.
    let _ = encoder.write_all(body);
    Bytes::from(encoder.finish().unwrap_or_default())
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
    use std::io::Read;

    #[test]
    fn etag_depends_only_on_content() {
        let a = Rendered::new(Bytes::from_static(b"[1]"), 0, 0, None);
        let b = Rendered::new(Bytes::from_static(b"[1]"), 0, 0, None);
        let c = Rendered::new(Bytes::from_static(b"[2]"), 0, 0, None);
        assert_eq!(a.etag, b.etag);
        assert_ne!(a.etag, c.etag);
        assert_ne!(a.etag, a.gzip_etag);
        assert!(a.etag.to_str().unwrap().starts_with('"'));
    }

    /// Issue 10: a client holding the Last-Modified of a body replaced
    /// within the same second must not get a 304 for the new one.
    #[test]
    fn last_modified_moves_with_every_change() {
        let a = Rendered::new(Bytes::from_static(b"[1]"), 0, 0, None);
        let b = Rendered::new(Bytes::from_static(b"[2]"), 0, 0, Some(&a));
        let c = Rendered::new(Bytes::from_static(b"[3]"), 0, 0, Some(&b));
        assert!(b.last_modified > a.last_modified);
        assert!(c.last_modified > b.last_modified);
    }

    #[test]
    fn same_body_keeps_previous_render() {
        let a = Rendered::new(Bytes::from_static(b"[1]"), 0, 0, None);
        let again = Rendered::new(Bytes::from_static(b"[1]"), 0, 0, Some(&a));
        assert!(Arc::ptr_eq(&a, &again));
    }

    #[test]
    fn gzip_roundtrips() {
        let r = Rendered::new(Bytes::from("[\"서비스\"]"), 0, 0, None);
        let mut out = String::new();
        assert!(r.gzip.get().is_none(), "compressed only on demand");
        flate2::read::GzDecoder::new(&r.compress()[..])
            .read_to_string(&mut out)
            .unwrap();
        assert_eq!(out.as_bytes(), &r.body[..]);
    }
}
