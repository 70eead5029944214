//! HTTP header parsing: `Accept-Encoding` and the conditional headers
//! (`If-None-Match` lists, `If-Modified-Since`) through the real request
//! handler, and what the HTTP sources read from upstream answers
//! (`Retry-After`, `Location`).
//!
//! Input: lines. The first picks the method and path; each further line is
//! one header, its first byte picking the name, the rest its value.
#![no_main]

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{
    HeaderName, HeaderValue, ACCEPT, ACCEPT_ENCODING, CONTENT_ENCODING, ETAG, IF_MODIFIED_SINCE,
    IF_NONE_MATCH, LOCATION, RETRY_AFTER,
};
use http::{HeaderMap, Method, Request, StatusCode, Uri};
use libfuzzer_sys::fuzz_target;
use sdbridge::http::{accepts_gzip, handle, not_modified, AppState};
use sdbridge::http_client::client::{parse_retry_after, resolve_location};
use sdbridge::metrics::Metrics;
use sdbridge::snapshot::{JobSnapshot, Rendered, Snapshot};

const HEADERS: [HeaderName; 6] = [
    ACCEPT_ENCODING,
    IF_NONE_MATCH,
    IF_MODIFIED_SINCE,
    ACCEPT,
    RETRY_AFTER,
    LOCATION,
];

fn state() -> &'static AppState {
    static STATE: OnceLock<AppState> = OnceLock::new();
    STATE.get_or_init(|| {
        let body = Bytes::from_static(
            br#"[{"targets":["127.0.0.1:9100"],"labels":{"__meta_sdbridge_job":"fuzz"}}]"#,
        );
        // Short ETags the fuzzer can write (real ones are 32 hex digits).
        let mut rendered = Rendered::restored(body, 1, 1, std::time::UNIX_EPOCH);
        let r = Arc::make_mut(&mut rendered);
        r.etag = HeaderValue::from_static("\"abc\"");
        r.gzip_etag = HeaderValue::from_static("\"abc-gzip\"");
        r.compress();
        let job = JobSnapshot {
            name: "fuzz".to_string(),
            ready: true,
            rendered: rendered.clone(),
            sources: Vec::new(),
            from_state: false,
        };
        let snapshot = Snapshot {
            jobs: vec![job],
            by_name: HashMap::from([("fuzz".to_string(), 0)]),
            all: rendered,
            all_ready: true,
            generation: 1,
        };
        AppState {
            snapshot: Arc::new(ArcSwap::from_pointee(snapshot)),
            metrics: Arc::new(Metrics::new()),
            reload: None,
            web: ArcSwap::from_pointee(sdbridge::web::Web::open()),
        }
    })
}

/// Whether an `If-None-Match` value lists `*`.
fn lists_star(headers: &HeaderMap) -> bool {
    headers
        .get_all(IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|t| t.trim() == "*"))
}

fuzz_target!(|data: &[u8]| {
    let mut lines = data.split(|&b| b == b'\n');
    let first = lines.next().unwrap_or_default();
    let (selector, rest) = first.split_first().map_or((0, &[][..]), |(s, r)| (*s, r));
    let method = [Method::GET, Method::HEAD, Method::POST][(selector % 3) as usize].clone();
    let path = match (selector / 3) % 4 {
        0 => "/http_sd/fuzz".to_string(),
        1 => "/http_sd".to_string(),
        2 => format!("/http_sd/{}", String::from_utf8_lossy(rest)),
        _ => String::from_utf8_lossy(rest).into_owned(),
    };
    let mut headers = HeaderMap::new();
    for line in lines {
        let Some((&name, value)) = line.split_first() else {
            continue;
        };
        if let Ok(value) = HeaderValue::from_bytes(value) {
            headers.append(HEADERS[name as usize % HEADERS.len()].clone(), value);
        }
    }

    // Client side: what an upstream answer's headers can make a source do.
    for value in headers.get_all(RETRY_AFTER) {
        if let Some(delay) = value.to_str().ok().and_then(parse_retry_after) {
            assert!(delay <= Duration::from_secs(60), "{delay:?}");
        }
    }
    let base: Uri = "http://127.0.0.1:9412/sd/targets.json"
        .parse()
        .unwrap_or_default();
    for value in headers.get_all(LOCATION) {
        if let Ok(location) = value.to_str() {
            if let Some(uri) = resolve_location(&base, location) {
                if !location.contains("://") {
                    assert_eq!(uri.authority(), base.authority(), "{location:?}");
                }
            }
        }
    }

    // Server side: the parsers alone, then the whole handler.
    let state = state();
    let snapshot = state.snapshot.load();
    let rendered = &snapshot.all;
    let gzip = accepts_gzip(&headers);
    if headers.get(ACCEPT_ENCODING).is_none() {
        assert!(!gzip);
    }
    for etag in [&rendered.etag, &rendered.gzip_etag] {
        let nm = not_modified(&headers, etag, rendered.last_modified);
        if lists_star(&headers) {
            assert!(nm, "If-None-Match: * must match");
        }
        if headers.get(IF_NONE_MATCH).is_none() && headers.get(IF_MODIFIED_SINCE).is_none() {
            assert!(!nm);
        }
    }
    let Ok(mut request) = Request::builder()
        .method(method.clone())
        .uri(path.as_str())
        .body(())
    else {
        return;
    };
    *request.headers_mut() = headers.clone();
    let response = handle(state, &request);
    let status = response.status();
    let sd = matches!(
        request.uri().path(),
        "/http_sd" | "/http_sd/" | "/http_sd/fuzz"
    );
    if !sd {
        return;
    }
    if method == Method::POST {
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        return;
    }
    let (etag, encoding) = if gzip {
        (&rendered.gzip_etag, Some("gzip"))
    } else {
        (&rendered.etag, None)
    };
    assert_eq!(response.headers().get(ETAG), Some(etag));
    let expect = if not_modified(&headers, etag, rendered.last_modified) {
        StatusCode::NOT_MODIFIED
    } else {
        StatusCode::OK
    };
    assert_eq!(status, expect);
    if lists_star(&headers) {
        assert_eq!(status, StatusCode::NOT_MODIFIED);
    }
    if status == StatusCode::OK {
        assert_eq!(
            response
                .headers()
                .get(CONTENT_ENCODING)
                .and_then(|v| v.to_str().ok()),
            encoding
        );
    }
});
