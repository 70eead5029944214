//! `http_sd_configs`: another HTTP SD server as a source, validated as
//! Prometheus's `discovery/http` validates it, and cached: sdbridge's own
//! answers come from its snapshot, never from a request to the upstream.
//!
//! Each round (every `refresh_interval`, through [`super::refresh`]) GETs
//! the URL with `Accept: application/json`, Prometheus's
//! `X-Prometheus-Refresh-Interval-Seconds`, `Accept-Encoding: gzip`, and
//! `If-None-Match` once the upstream gave an ETag (a `304` is a round
//! without change). The answer must be `200` with a content type matching
//! `^application/json(;.*)?$`, a JSON array of groups (unknown keys
//! ignored, as Go's `encoding/json` does), no `null` group, valid label
//! names; it may be at most `limits.max_input_size` (64 MiB), decoded. Every group gets `__meta_url`
//! (the URL with its password, if any, shown as `xxxxx`).
//! Anything else is an error for that round: the last good groups stay
//! served, `503` only before the first success.
//!
//! Every source of one server shares its [`MAX_CONNECTIONS`] request and
//! connection slots ([`crate::http_client::slots`]): a round waits its
//! turn for a request slot (first come, first served), and says so on the
//! status page and in `sdbridge_source_waiting` when the wait lasts.

pub mod config;

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{
    HeaderMap, HeaderValue, ACCEPT, ACCEPT_ENCODING, AUTHORIZATION, CONTENT_TYPE, ETAG,
    IF_NONE_MATCH,
};
use http::{StatusCode, Uri};
use serde::Deserialize;

pub use config::HttpSdConfig;

use super::{refresh, Outbox, Source, SourceContext, SourceError, SourceFuture};
use crate::http_client::client::{auth_header, HttpClient};
use crate::targetgroup::{LabelSet, TargetGroup};

/// The label Prometheus puts the upstream URL in.
pub const URL_LABEL: &str = "__meta_url";
/// Connections to one upstream server at once (one request per round),
/// shared by every source of that server.
const MAX_CONNECTIONS: usize = 4;
/// A wait for a request slot longer than this shows on the status page
/// and in `/metrics` (shorter ones would only make them flicker).
const WAIT_SHOWN: Duration = Duration::from_secs(1);

impl Source for HttpSdConfig {
    fn kind(&self) -> &'static str {
        "http_sd"
    }

    fn describe(&self) -> String {
        format!("http_sd_configs {}", self.url)
    }

    fn selects(&self) -> String {
        // `url` as shown: user information redacted.
        format!("url={:?}", self.url)
    }

    fn run(self: Arc<Self>, ctx: SourceContext) -> SourceFuture {
        Box::pin(async move {
            let mut upstream = Upstream::new(self.clone(), ctx.out.clone());
            let interval = self.refresh_interval.0;
            let metrics = ctx.out.metrics().cloned();
            let labels = ctx.out.labels();
            refresh::run(&ctx, interval, refresh::Between::default(), || {
                let round = upstream.round();
                let (metrics, labels) = (metrics.clone(), labels.clone());
                async move {
                    let started = Instant::now();
                    let (code, result) = round.await;
                    if let Some(m) = &metrics {
                        m.upstream_request(&labels, &code, started.elapsed());
                    }
                    result
                }
            })
            .await;
        })
    }
}

/// One upstream, with what its last answer said.
struct Upstream {
    config: Arc<HttpSdConfig>,
    /// Where to say that a round waits for a request slot.
    out: Outbox,
    client: Option<Arc<HttpClient>>,
    /// The ETag of the last good answer, sent as `If-None-Match`.
    etag: Arc<std::sync::Mutex<Option<HeaderValue>>>,
}

fn error(kind: &'static str, message: String) -> SourceError {
    SourceError { kind, message }
}

impl Upstream {
    fn new(config: Arc<HttpSdConfig>, out: Outbox) -> Upstream {
        Upstream {
            config,
            out,
            client: None,
            etag: Arc::default(),
        }
    }

    /// One round: the status code (or `error`/`timeout`) for metrics, and
    /// the groups (`None`: unchanged).
    fn round(
        &mut self,
    ) -> impl std::future::Future<Output = (String, Result<Option<Vec<TargetGroup>>, SourceError>)>
           + Send
           + 'static {
        let config = self.config.clone();
        let etag = self.etag.clone();
        let out = self.out.clone();
        let client = match &self.client {
            Some(c) => Ok(c.clone()),
            None => connect(&config).map(Arc::new),
        };
        if let Ok(c) = &client {
            self.client = Some(c.clone());
        }
        async move {
            let client = match client {
                Ok(c) => c,
                Err(e) => return ("error".to_string(), Err(e)),
            };
            fetch(&config, &client, &etag, &out).await
        }
    }
}

fn connect(config: &HttpSdConfig) -> Result<HttpClient, SourceError> {
    let uri: Uri = config
        .fetch_url
        .parse()
        .map_err(|e| error("http_config", format!("invalid URL: {e}")))?;
    let authority = uri.authority().map(|a| a.as_str()).unwrap_or_default();
    HttpClient::new(
        uri.scheme_str().unwrap_or("http"),
        authority,
        &config.tls_config,
        config.follow_redirects,
        MAX_CONNECTIONS,
        2 * config.refresh_interval.0.max(Duration::from_secs(1)),
    )
    .map_err(|e| error("http_config", e))
}

/// One of the server's request slots, in turn; a wait longer than
/// [`WAIT_SHOWN`] is shown while it lasts.
async fn request_slot(
    config: &HttpSdConfig,
    client: &HttpClient,
    out: &Outbox,
) -> Option<tokio::sync::OwnedSemaphorePermit> {
    let slots = client.requests().clone();
    if let Ok(permit) = slots.clone().try_acquire_owned() {
        return Some(permit);
    }
    let acquire = slots.acquire_owned();
    tokio::pin!(acquire);
    if let Ok(permit) = tokio::time::timeout(WAIT_SHOWN, &mut acquire).await {
        return permit.ok();
    }
    let server = config
        .fetch_url
        .parse::<Uri>()
        .ok()
        .and_then(|u| u.authority().map(|a| a.to_string()))
        .unwrap_or_default();
    let what =
        format!("a request slot of {server} (every source of that server shares them; all in use)");
    tracing::debug!(job = %out.job, source = %out.name, server, "waiting for a request slot");
    let _ = out.waiting(Some(what)).await;
    let permit = acquire.await.ok();
    let _ = out.waiting(None).await;
    permit
}

async fn fetch(
    config: &HttpSdConfig,
    client: &HttpClient,
    etag: &std::sync::Mutex<Option<HeaderValue>>,
    out: &Outbox,
) -> (String, Result<Option<Vec<TargetGroup>>, SourceError>) {
    // Shown: a password in it is `xxxxx`.
    let url = &config.url;
    let Ok(uri) = config.fetch_url.parse::<Uri>() else {
        return (
            "error".into(),
            Err(error("http_config", format!("invalid URL {url:?}"))),
        );
    };
    let mut headers = HeaderMap::new();
    headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
    headers.insert(ACCEPT_ENCODING, HeaderValue::from_static("gzip"));
    let interval = config.refresh_interval.0;
    if let Ok(v) = HeaderValue::from_str(&interval.as_secs_f64().to_string()) {
        headers.insert("X-Prometheus-Refresh-Interval-Seconds", v);
    }
    let known = etag.lock().unwrap_or_else(|e| e.into_inner()).clone();
    if let Some(tag) = &known {
        headers.insert(IF_NONE_MATCH, tag.clone());
    }
    // Credential files are read now (they rotate), off the async workers.
    let (basic, authorization) = (config.basic_auth.clone(), config.authorization.clone());
    let auth =
        tokio::task::spawn_blocking(move || auth_header(basic.as_ref(), authorization.as_ref()))
            .await;
    match auth {
        Ok(Ok(Some(value))) => {
            headers.insert(AUTHORIZATION, value);
        }
        Ok(Ok(None)) => {}
        Ok(Err(e)) => return ("error".into(), Err(error("http_config", e))),
        Err(e) => return ("error".into(), Err(error("http_config", e.to_string()))),
    }
    let Some(_permit) = request_slot(config, client, out).await else {
        return (
            "error".into(),
            Err(error("http_request", "client closed".into())),
        );
    };
    // Prometheus times a request out after the refresh interval.
    let timeout = interval.max(Duration::from_secs(1));
    let fetched = match tokio::time::timeout(
        timeout,
        client.get(uri, headers, &[], config.max_input_size),
    )
    .await
    {
        Err(_) => {
            return (
                "timeout".into(),
                Err(error(
                    "http_timeout",
                    format!("{url}: no answer within {timeout:?}"),
                )),
            )
        }
        Ok(Err(e)) => {
            let kind = match e {
                crate::http_client::client::FetchError::TooLarge(_) => "http_too_large",
                _ => "http_request",
            };
            return ("error".into(), Err(error(kind, format!("{url}: {e}"))));
        }
        Ok(Ok(f)) => f,
    };
    let code = fetched.status.as_u16().to_string();
    if fetched.status == StatusCode::NOT_MODIFIED && known.is_some() {
        return (code, Ok(None));
    }
    if fetched.status != StatusCode::OK {
        return (
            code,
            Err(error(
                "http_status",
                format!("{url}: server returned HTTP status {}", fetched.status),
            )),
        );
    }
    let content_type = fetched
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if content_type != "application/json" && !content_type.starts_with("application/json;") {
        return (
            code,
            Err(error(
                "http_decode",
                format!("{url}: unsupported content type {content_type:?}"),
            )),
        );
    }
    let body = fetched.body.clone();
    let url_owned = url.clone();
    let parsed = tokio::task::spawn_blocking(move || parse(&url_owned, &body)).await;
    let groups = match parsed {
        Ok(Ok(groups)) => groups,
        Ok(Err(message)) => return (code, Err(error("http_decode", format!("{url}: {message}")))),
        Err(e) => return (code, Err(error("http_decode", e.to_string()))),
    };
    *etag.lock().unwrap_or_else(|e| e.into_inner()) = fetched.headers.get(ETAG).cloned();
    (code, Ok(Some(groups)))
}

/// One group as Go's `encoding/json` reads `targetgroup.Group`: unknown
/// keys ignored, `null` targets and labels empty, label names checked.
#[derive(Deserialize)]
struct UpstreamGroup {
    #[serde(default, deserialize_with = "crate::targetgroup::deserialize_targets")]
    targets: Vec<String>,
    #[serde(default)]
    labels: LabelSet,
}

/// Parses an HTTP SD answer as Prometheus does, adding `__meta_url`.
pub fn parse(url: &str, body: &[u8]) -> Result<Vec<TargetGroup>, String> {
    let groups: Option<Vec<Option<UpstreamGroup>>> =
        serde_json::from_slice(body).map_err(|e| format!("invalid answer: {e}"))?;
    let mut out = Vec::new();
    for group in groups.unwrap_or_default() {
        let Some(group) = group else {
            return Err("nil target group item found".to_string());
        };
        let mut labels = group.labels;
        labels.0.insert(URL_LABEL.to_string(), url.to_string());
        out.push(TargetGroup {
            targets: group.targets,
            labels,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_read_as_prometheus_reads_them() {
        let url = "http://127.0.0.1:1/sd";
        let g = parse(
            url,
            r#"[{"targets": ["127.0.0.1:9100", null], "labels": {"db_name": "프라이머리"}, "extra": 1}, {"targets": null}]"#.as_bytes(),
        )
        .unwrap();
        assert_eq!(g[0].targets, ["127.0.0.1:9100", ""]);
        assert_eq!(g[0].labels.0["db_name"], "프라이머리");
        assert_eq!(g[0].labels.0[URL_LABEL], url);
        assert_eq!(g[1].labels.0.len(), 1);
        assert!(parse(url, b"null").unwrap().is_empty());
        assert_eq!(
            parse(url, b"[null]").unwrap_err(),
            "nil target group item found"
        );
        let bad = parse(url, br#"[{"targets": [], "labels": {"bad-name": "x"}}]"#).unwrap_err();
        assert!(
            bad.contains("\"bad-name\" is not a valid label name"),
            "{bad}"
        );
        assert!(parse(url, b"{}").unwrap_err().starts_with("invalid answer"));
    }
}
