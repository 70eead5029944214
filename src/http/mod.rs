//! The HTTP interface (CONTRACT section 4). Handlers load the current
//! [`Snapshot`] once, answer from its pre-built bytes, and never lock, await
//! or serialize JSON on the request path.

use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{
    ACCEPT_ENCODING, ALLOW, CONTENT_ENCODING, CONTENT_TYPE, ETAG, IF_MODIFIED_SINCE, IF_NONE_MATCH,
    LAST_MODIFIED, RETRY_AFTER, VARY,
};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use tokio::sync::{mpsc, oneshot, Semaphore};

mod server;

pub use server::{
    run, Bounds, HEADER_READ_TIMEOUT, IDLE_TIMEOUT, MAX_CONNECTIONS, PROBE_CONNECTIONS,
};

use crate::chain::ChainBody;
use crate::metrics::Metrics;
use crate::shard::Shard;
use crate::snapshot::{JobSnapshot, Rendered, Snapshot};
use crate::web::{self, Web};

/// Seconds a client is told to wait while a job is not synced yet.
const RETRY_AFTER_SECONDS: &str = "5";

/// A config reload asked for over HTTP; the daemon answers on the oneshot.
pub type ReloadRequest = oneshot::Sender<Result<(), String>>;

/// What handlers share.
#[derive(Debug)]
pub struct AppState {
    /// The current snapshot, replaced whole by the merger.
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    /// Request counters and the exposition.
    pub metrics: Arc<Metrics>,
    /// Where `POST /-/reload` goes; `None` where reloading makes no sense.
    pub reload: Option<mpsc::Sender<ReloadRequest>>,
    /// TLS, credentials and headers in force, replaced whole on reload.
    pub web: ArcSwap<Web>,
}

/// Whether `path` is one of the probes orchestrators ask for, answered
/// even on a full server.
fn is_probe(path: &str) -> bool {
    matches!(path, "/-/healthy" | "/-/ready")
}

/// Answers one request: `/-/reload` waits for the daemon, an answer that
/// must be built first waits for the blocking pool ([`build_off_worker`]),
/// everything else is answered from the snapshot without awaiting anything.
async fn respond(state: &Arc<AppState>, req: Request<Incoming>) -> Response<ChainBody> {
    let web = state.web.load_full();
    let mut response = match &web.auth {
        Some(auth) if !web::is_open_path(req.uri().path()) && !auth.allows(req.headers()).await => {
            unauthorized(state, &req, auth)
        }
        _ if req.uri().path() == "/-/reload" => {
            let response = reload(state, req.method()).await;
            state
                .metrics
                .request("/-/reload", response.status().as_u16());
            response
        }
        _ if must_build(&state.snapshot.load(), &req) => build_off_worker(state, req).await,
        _ => handle(state, &req),
    };
    for (name, value) in &web.headers {
        response.headers_mut().insert(name.clone(), value.clone());
    }
    response
}

/// How many answers are built at once: half the cores, at least one, so
/// the other half keeps answering.
fn build_slots() -> &'static Arc<Semaphore> {
    static SLOTS: OnceLock<Arc<Semaphore>> = OnceLock::new();
    SLOTS.get_or_init(|| {
        let n = std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1));
        Arc::new(Semaphore::new(n))
    })
}

/// Whether answering `req` needs work proportional to a body: the
/// targets page (it reads the whole body), or a shard whose cut (or its
/// gzip) the first request for it builds. Such work never runs on the
/// async workers, which must keep answering probes and cached bodies.
fn must_build<B>(snapshot: &Snapshot, req: &Request<B>) -> bool {
    let path = req.uri().path();
    if path.starts_with("/targets/") {
        return true;
    }
    let Ok(Some(shard)) = Shard::from_query(req.uri().query()) else {
        return false;
    };
    let rendered = match Target::of(snapshot, path) {
        Target::All if snapshot.all_ready => &snapshot.all,
        Target::Job(job) if job.ready => &job.rendered,
        _ => return false,
    };
    !rendered.shards.is_built(shard, accepts_gzip(req.headers()))
}

/// [`handle`] on the blocking pool, at most [`build_slots`] at once. The
/// slot moves into the blocking task: a client that hangs up drops this
/// future, not the work, so the bound holds whatever clients do.
async fn build_off_worker(state: &Arc<AppState>, req: Request<Incoming>) -> Response<ChainBody> {
    let Ok(slot) = build_slots().clone().acquire_owned().await else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "shutting down");
    };
    let (parts, _body) = req.into_parts();
    let req = Request::from_parts(parts, ());
    let state = state.clone();
    let what = if req.uri().path().starts_with("/targets/") {
        "targets_page"
    } else {
        "shard"
    };
    tokio::task::spawn_blocking(move || {
        let _slot = slot;
        let started = std::time::Instant::now();
        let response = handle(&state, &req);
        state.metrics.answer_built(what, started.elapsed());
        response
    })
    .await
    .unwrap_or_else(|_| {
        error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "building the answer failed",
        )
    })
}

/// 401 for a request without good credentials, whatever it asked for:
/// an unknown path is not told apart from a known one.
fn unauthorized<B>(
    state: &AppState,
    req: &Request<B>,
    auth: &web::auth::Auth,
) -> Response<ChainBody> {
    let path = req.uri().path();
    let metric_path = if path == "/-/reload" {
        path.to_string()
    } else {
        Target::of(&state.snapshot.load(), path).metric_path()
    };
    state.metrics.request(&metric_path, 401);
    let mut response = error(StatusCode::UNAUTHORIZED, "unauthorized");
    for challenge in auth.challenges() {
        response
            .headers_mut()
            .append(http::header::WWW_AUTHENTICATE, challenge.clone());
    }
    response
}

async fn reload(state: &AppState, method: &Method) -> Response<ChainBody> {
    if method != Method::POST && method != Method::PUT {
        let mut response = error(StatusCode::METHOD_NOT_ALLOWED, "use POST to reload");
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("POST, PUT"));
        return response;
    }
    let Some(reload) = &state.reload else {
        return error(StatusCode::NOT_FOUND, "reloading is not available here");
    };
    let (tx, rx) = oneshot::channel();
    if reload.send(tx).await.is_err() {
        return error(StatusCode::SERVICE_UNAVAILABLE, "shutting down");
    }
    match rx.await {
        Ok(Ok(())) => text(
            StatusCode::OK,
            "text/plain; charset=utf-8",
            "Reloaded\n".into(),
        ),
        Ok(Err(e)) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("reload failed: {e}"),
        ),
        Err(_) => error(StatusCode::SERVICE_UNAVAILABLE, "shutting down"),
    }
}

/// Answers one request from the current snapshot.
pub fn handle<B>(state: &AppState, req: &Request<B>) -> Response<ChainBody> {
    let snapshot = state.snapshot.load();
    let (metric_path, response) = route(&snapshot, state, req);
    state
        .metrics
        .request(&metric_path, response.status().as_u16());
    response
}

/// What a request path names, resolved once per request.
enum Target<'a> {
    All,
    Job(&'a JobSnapshot),
    UnknownJob(String),
    Healthy,
    Ready,
    Metrics,
    Status,
    TargetsPage(&'a JobSnapshot),
    NotFound,
}

impl<'a> Target<'a> {
    fn of(snapshot: &'a Snapshot, path: &str) -> Target<'a> {
        match path {
            "/http_sd" | "/http_sd/" => Target::All,
            "/-/healthy" => Target::Healthy,
            "/-/ready" => Target::Ready,
            "/metrics" => Target::Metrics,
            "/" => Target::Status,
            _ => match path.strip_prefix("/http_sd/").map(decode_job) {
                Some(name) => match snapshot.job(&name) {
                    Some(job) => Target::Job(job),
                    None => Target::UnknownJob(name),
                },
                None => match path.strip_prefix("/targets/").map(decode_job) {
                    Some(name) => match snapshot.job(&name) {
                        Some(job) => Target::TargetsPage(job),
                        None => Target::UnknownJob(name),
                    },
                    None => Target::NotFound,
                },
            },
        }
    }

    /// The `path` label for request metrics, bounded by the config's jobs.
    fn metric_path(&self) -> String {
        match self {
            Target::All => "/http_sd".to_string(),
            Target::Job(job) => format!("/http_sd/{}", job.name),
            Target::Healthy => "/-/healthy".to_string(),
            Target::Ready => "/-/ready".to_string(),
            Target::Metrics => "/metrics".to_string(),
            Target::Status => "/".to_string(),
            Target::TargetsPage(_) => "/targets".to_string(),
            Target::UnknownJob(_) | Target::NotFound => "other".to_string(),
        }
    }
}

fn route<B>(
    snapshot: &Snapshot,
    state: &AppState,
    req: &Request<B>,
) -> (String, Response<ChainBody>) {
    let target = Target::of(snapshot, req.uri().path());
    let shard = match Shard::from_query(req.uri().query()) {
        Ok(shard) => shard,
        Err(e) if matches!(target, Target::All | Target::Job(_)) => {
            return (
                target.metric_path(),
                error(StatusCode::BAD_REQUEST, &format!("invalid shard: {e}")),
            );
        }
        Err(_) => None,
    };
    let method = req.method();
    let exists = !matches!(target, Target::NotFound | Target::UnknownJob(_));
    if exists && method != Method::GET && method != Method::HEAD {
        let mut response = error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return (target.metric_path(), response);
    }
    let response = match &target {
        Target::All => serve_sd(
            req.headers(),
            &snapshot.all,
            shard,
            snapshot.all_ready,
            || {
                let waiting: Vec<String> = snapshot
                    .jobs
                    .iter()
                    .filter(|j| !j.ready)
                    .flat_map(|j| {
                        j.sources
                            .iter()
                            .filter(|s| !s.synced)
                            .map(move |s| format!("{}/{}", j.name, s.name))
                    })
                    .collect();
                format!(
                    "not every job has synced yet (waiting for {})",
                    waiting.join(", ")
                )
            },
        ),
        Target::Healthy => text(
            StatusCode::OK,
            "text/plain; charset=utf-8",
            "Healthy\n".into(),
        ),
        Target::Ready if snapshot.all_ready => text(
            StatusCode::OK,
            "text/plain; charset=utf-8",
            "Ready\n".into(),
        ),
        Target::Ready => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain; charset=utf-8",
            "Not ready: some jobs have not synced yet\n".into(),
        ),
        Target::Metrics => {
            let accept = req
                .headers()
                .get(http::header::ACCEPT)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let (content_type, body) = state.metrics.exposition(snapshot, accept);
            text(StatusCode::OK, content_type, body.into())
        }
        Target::Status => text(
            StatusCode::OK,
            "text/html; charset=utf-8",
            crate::status::page(snapshot).into(),
        ),
        Target::Job(job) => serve_sd(req.headers(), &job.rendered, shard, job.ready, || {
            let waiting: Vec<&str> = job
                .sources
                .iter()
                .filter(|s| !s.synced)
                .map(|s| s.name.as_str())
                .collect();
            format!(
                "job {:?} has not synced yet (waiting for {})",
                job.name,
                waiting.join(", ")
            )
        }),
        Target::TargetsPage(job) => text(
            StatusCode::OK,
            "text/html; charset=utf-8",
            crate::targets_page::page(
                job,
                &crate::targets_page::View::from_query(req.uri().query()),
            )
            .into(),
        ),
        Target::UnknownJob(name) => error(StatusCode::NOT_FOUND, &format!("unknown job {name:?}")),
        Target::NotFound => error(StatusCode::NOT_FOUND, "not found"),
    };
    (target.metric_path(), response)
}

fn decode_job(segment: &str) -> String {
    percent_encoding::percent_decode_str(segment)
        .decode_utf8_lossy()
        .into_owned()
}

fn serve_sd(
    headers: &HeaderMap,
    rendered: &Arc<Rendered>,
    shard: Option<Shard>,
    ready: bool,
    why_not_ready: impl FnOnce() -> String,
) -> Response<ChainBody> {
    if !ready {
        // Never an empty list while starting: Prometheus keeps its previous
        // targets on a non-200 answer.
        let mut response = error(StatusCode::SERVICE_UNAVAILABLE, &why_not_ready());
        response
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_SECONDS));
        return response;
    }
    let (rendered, compressed) = match shard {
        None => (
            rendered.clone(),
            accepts_gzip(headers)
                .then(|| rendered.gzip.get().cloned())
                .flatten(),
        ),
        // A shard's gzip is made by its first gzip request (the merger's
        // gzip thread knows only whole bodies).
        Some(shard) => {
            let cut = rendered.shards.get(rendered, shard);
            let gzip = accepts_gzip(headers).then(|| cut.compress().clone());
            (cut, gzip)
        }
    };
    let gzip = compressed.is_some();
    let (body, etag) = match compressed {
        Some(bytes) => (bytes, &rendered.gzip_etag),
        None => (rendered.body.clone(), &rendered.etag),
    };
    let status = if not_modified(headers, etag, rendered.last_modified) {
        StatusCode::NOT_MODIFIED
    } else {
        StatusCode::OK
    };
    let mut builder = Response::builder()
        .status(status)
        .header(ETAG, etag.clone())
        .header(LAST_MODIFIED, rendered.last_modified_header.clone())
        .header(VARY, HeaderValue::from_static("Accept-Encoding"));
    if status == StatusCode::NOT_MODIFIED {
        return builder.body(ChainBody::empty()).unwrap_or_default();
    }
    builder = builder.header(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if gzip {
        builder = builder.header(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    builder.body(body.body()).unwrap_or_default()
}

/// Whether the client accepts gzip (`Accept-Encoding`, q-values honoured,
/// `*` counts unless gzip is listed itself).
pub fn accepts_gzip(headers: &HeaderMap) -> bool {
    let mut gzip = None;
    let mut star = None;
    for value in headers.get_all(ACCEPT_ENCODING) {
        let Ok(value) = value.to_str() else { continue };
        for item in value.split(',') {
            let mut fields = item.split(';');
            let coding = fields.next().unwrap_or("").trim().to_ascii_lowercase();
            let q = fields
                .filter_map(|p| {
                    let (k, v) = p.split_once('=')?;
                    (k.trim().eq_ignore_ascii_case("q")).then(|| v.trim().parse::<f32>().ok())?
                })
                .next()
                .unwrap_or(1.0);
            match coding.as_str() {
                "gzip" | "x-gzip" => gzip = Some(q > 0.0),
                "*" => star = Some(q > 0.0),
                _ => {}
            }
        }
    }
    gzip.or(star).unwrap_or(false)
}

/// RFC 9110 section 13.1: `If-None-Match` (weak comparison, lists, `*`)
/// decides when present; otherwise `If-Modified-Since`.
pub fn not_modified(headers: &HeaderMap, etag: &HeaderValue, last_modified: SystemTime) -> bool {
    let ours = etag
        .as_bytes()
        .strip_prefix(b"W/")
        .unwrap_or(etag.as_bytes());
    let mut has_inm = false;
    for value in headers.get_all(IF_NONE_MATCH) {
        has_inm = true;
        let Ok(value) = value.to_str() else { continue };
        for tag in value.split(',') {
            let tag = tag.trim();
            if tag == "*" || tag.strip_prefix("W/").unwrap_or(tag).as_bytes() == ours {
                return true;
            }
        }
    }
    if has_inm {
        return false;
    }
    headers
        .get(IF_MODIFIED_SINCE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok())
        .is_some_and(|since| last_modified <= since)
}

fn text(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<ChainBody> {
    Response::builder()
        .status(status)
        .header(CONTENT_TYPE, content_type)
        .body(ChainBody::from(body))
        .unwrap_or_default()
}

/// A JSON error body: `{"error": "..."}`.
fn error(status: StatusCode, message: &str) -> Response<ChainBody> {
    let body = serde_json::json!({ "status": "error", "error": message }).to_string();
    text(status, "application/json", body.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn gzip_negotiation() {
        for (value, want) in [
            ("gzip", true),
            ("deflate, gzip;q=0.5", true),
            ("GZIP", true),
            ("gzip;q=0", false),
            ("gzip; q=0.0, *", false),
            ("*", true),
            ("br", false),
            ("identity", false),
            ("*;q=0", false),
        ] {
            assert_eq!(
                accepts_gzip(&headers(&[("accept-encoding", value)])),
                want,
                "{value}"
            );
        }
        assert!(!accepts_gzip(&HeaderMap::new()));
    }

    #[test]
    fn conditional_requests() {
        let etag = HeaderValue::from_static("\"abc\"");
        let lm = httpdate::parse_http_date("Wed, 25 Nov 2026 12:00:00 GMT").unwrap();
        let nm = |pairs: &[(&'static str, &str)]| not_modified(&headers(pairs), &etag, lm);
        assert!(nm(&[("if-none-match", "\"abc\"")]));
        assert!(nm(&[("if-none-match", "W/\"abc\"")]));
        assert!(nm(&[("if-none-match", "\"x\", \"abc\"")]));
        assert!(nm(&[
            ("if-none-match", "\"x\""),
            ("if-none-match", "\"abc\"")
        ]));
        assert!(nm(&[("if-none-match", "*")]));
        assert!(!nm(&[("if-none-match", "\"abcd\"")]));
        assert!(!nm(&[("if-none-match", "abc")]));
        assert!(nm(&[(
            "if-modified-since",
            "Wed, 25 Nov 2026 12:00:00 GMT"
        )]));
        assert!(nm(&[(
            "if-modified-since",
            "Wed, 25 Nov 2026 13:00:00 GMT"
        )]));
        assert!(!nm(&[(
            "if-modified-since",
            "Wed, 25 Nov 2026 11:59:59 GMT"
        )]));
        assert!(!nm(&[("if-modified-since", "garbage")]));
        // If-None-Match wins over If-Modified-Since.
        assert!(!nm(&[
            ("if-none-match", "\"other\""),
            ("if-modified-since", "Wed, 25 Nov 2026 13:00:00 GMT")
        ]));
        assert!(!nm(&[]));
    }
}

/// Properties of the conditional and encoding headers: generated lists
/// with any order, spacing, weak forms and splits over header lines.
#[cfg(test)]
mod properties {
    use std::time::{Duration, UNIX_EPOCH};

    use http::HeaderName;
    use proptest::collection::vec;
    use proptest::prelude::*;

    use super::*;

    /// An entity-tag other than `ours`, maybe weak.
    fn other_etag() -> impl Strategy<Value = String> {
        ("[a-z0-9-]{0,8}", any::<bool>())
            .prop_filter("not ours", |(tag, _)| tag != "abc")
            .prop_map(|(tag, weak)| format!("{}\"{tag}\"", if weak { "W/" } else { "" }))
    }

    /// Optional whitespace around list commas (RFC 9110 OWS).
    fn ows() -> impl Strategy<Value = &'static str> {
        prop_oneof![Just(""), Just(" "), Just("  "), Just("\t"), Just(" \t")]
    }

    /// `items` as `If-None-Match` header lines: joined with commas and
    /// `ows`, split into separate lines at `split`.
    fn list_headers(
        name: HeaderName,
        items: &[String],
        spaces: &[&str],
        split: usize,
    ) -> HeaderMap {
        let mut headers = HeaderMap::new();
        let split = split.min(items.len());
        for chunk in [&items[..split], &items[split..]] {
            if chunk.is_empty() {
                continue;
            }
            let mut value = String::new();
            for (i, item) in chunk.iter().enumerate() {
                let space = spaces[i % spaces.len()];
                if i > 0 {
                    value.push(',');
                }
                value.push_str(space);
                value.push_str(item);
                value.push_str(space);
            }
            headers.append(name.clone(), HeaderValue::from_str(&value).unwrap());
        }
        headers
    }

    fn date(secs: u64) -> HeaderValue {
        HeaderValue::from_str(&httpdate::fmt_http_date(
            UNIX_EPOCH + Duration::from_secs(secs),
        ))
        .unwrap()
    }

    /// `q=` as clients write it: `0`, `0.5`, `0.001`, `1`, `1.000`...
    fn qvalue() -> impl Strategy<Value = Option<(String, bool)>> {
        prop_oneof![
            1 => Just(None),
            4 => (prop_oneof![Just(0u16), Just(1), Just(1000), 0u16..=1000], 0usize..4, ows()).prop_map(|(thousandths, digits, space)| {
                let text = match (thousandths, digits) {
                    (1000, 0) => "1".to_string(),
                    (1000, d) => format!("1.{}", "0".repeat(d)),
                    (t, 0) => if t == 0 { "0".to_string() } else { format!("0.{t:03}") },
                    (t, _) => format!("0.{t:03}"),
                };
                Some((format!(";{space}q={text}"), thousandths > 0))
            }),
        ]
    }

    fn coding(name: &'static str) -> impl Strategy<Value = (String, bool)> {
        qvalue().prop_map(move |q| match q {
            None => (name.to_string(), true),
            Some((param, accepted)) => (format!("{name}{param}"), accepted),
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn if_none_match_listing_our_etag_anywhere_gives_304(
            others in vec(other_etag(), 0..6),
            at in any::<prop::sample::Index>(),
            weak in any::<bool>(),
            spaces in vec(ows(), 1..4),
            split in 0usize..8,
            modified_since in proptest::option::of(0u64..4_000_000_000),
        ) {
            let ours = HeaderValue::from_static("\"abc\"");
            let mut items = others;
            let tag = if weak { "W/\"abc\"" } else { "\"abc\"" };
            items.insert(at.index(items.len() + 1), tag.to_string());
            let mut headers = list_headers(IF_NONE_MATCH, &items, &spaces, split);
            // If-None-Match decides: any If-Modified-Since is ignored.
            if let Some(secs) = modified_since {
                headers.insert(IF_MODIFIED_SINCE, date(secs));
            }
            let last_modified = UNIX_EPOCH + Duration::from_secs(2_000_000_000);
            prop_assert!(not_modified(&headers, &ours, last_modified), "{:?}", headers);
        }

        #[test]
        fn if_none_match_without_our_etag_never_gives_304(
            items in vec(other_etag(), 1..6),
            spaces in vec(ows(), 1..4),
            split in 0usize..8,
        ) {
            let ours = HeaderValue::from_static("\"abc\"");
            let mut headers = list_headers(IF_NONE_MATCH, &items, &spaces, split);
            // An If-Modified-Since that alone would give 304.
            headers.insert(IF_MODIFIED_SINCE, date(3_000_000_000));
            let last_modified = UNIX_EPOCH + Duration::from_secs(2_000_000_000);
            prop_assert!(!not_modified(&headers, &ours, last_modified), "{:?}", headers);
        }

        #[test]
        fn the_last_modified_we_serve_echoed_back_gives_304_and_an_earlier_one_does_not(
            secs in 1u64..4_000_000_000,
        ) {
            let ours = HeaderValue::from_static("\"abc\"");
            let last_modified = UNIX_EPOCH + Duration::from_secs(secs);
            let mut headers = HeaderMap::new();
            headers.insert(IF_MODIFIED_SINCE, date(secs));
            prop_assert!(not_modified(&headers, &ours, last_modified));
            headers.insert(IF_MODIFIED_SINCE, date(secs - 1));
            prop_assert!(!not_modified(&headers, &ours, last_modified));
        }

        #[test]
        fn accept_encoding_follows_q_values_in_any_order(
            others in vec(
                prop_oneof![coding("br"), coding("deflate"), coding("identity"), coding("zstd")],
                0..4,
            ),
            gzip in proptest::option::of((
                prop_oneof![Just("gzip"), Just("x-gzip"), Just("GZIP"), Just("Gzip")],
                qvalue(),
            )),
            star in proptest::option::of(coding("*")),
            order in any::<u64>(),
            spaces in vec(ows(), 1..4),
        ) {
            let mut items: Vec<String> = others.into_iter().map(|(c, _)| c).collect();
            let want = match (&gzip, &star) {
                (Some((_, q)), _) => q.as_ref().is_none_or(|(_, accepted)| *accepted),
                (None, Some((_, accepted))) => *accepted,
                (None, None) => false,
            };
            if let Some((name, q)) = &gzip {
                items.push(format!("{name}{}", q.as_ref().map_or("", |(p, _)| p)));
            }
            if let Some((c, _)) = star {
                items.push(c);
            }
            // A deterministic shuffle driven by `order`.
            let len = items.len();
            if len > 1 {
                let mut seed = order;
                for i in (1..len).rev() {
                    items.swap(i, (seed % (i as u64 + 1)) as usize);
                    seed = seed.rotate_left(7) ^ 0x9e37_79b9_7f4a_7c15;
                }
            }
            let headers = list_headers(ACCEPT_ENCODING, &items, &spaces, 99);
            prop_assert_eq!(accepts_gzip(&headers), want, "{:?}", headers);
        }
    }
}
