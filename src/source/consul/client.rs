//! A small Consul HTTP client: the query parameters Consul's Go client
//! (`consul/api`, as Prometheus uses it) sends, blocking-query index rules,
//! auth headers, redirects, a cap on concurrent requests (connections are
//! capped by [`crate::http_client::transport`]), and metrics.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, RETRY_AFTER, USER_AGENT};
use http::{StatusCode, Uri};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::de::DeserializeOwned;
use tokio::sync::Semaphore;

use super::config::{ConsulSdConfig, Secret};
use crate::http_client::client::{auth_header, parse_retry_after, HttpClient};
use crate::metrics::Metrics;

/// `wait` of blocking queries: Prometheus's 2 minutes. Longer waits would
/// save a request per watch every few minutes but are cut by many proxies
/// and load balancers' idle timeouts.
pub const WAIT: Duration = Duration::from_secs(120);
/// Timeout of a blocking request: `wait` plus Consul's jitter (at most
/// `wait/16`) plus 15 s, as Prometheus (2m15s) gives it.
pub const BLOCKING_TIMEOUT: Duration = Duration::from_secs(120 + 120 / 16 + 15);
/// Timeout of a non-blocking request.
pub const TIMEOUT: Duration = Duration::from_secs(30);
/// Most bytes of an error body kept in messages.
const MAX_ERROR_BODY: usize = 512;
/// Go's `url.QueryEscape` set: everything but `A-Za-z0-9-_.~` is escaped
/// (space then becomes `+`).
const QUERY: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');
/// Escaping of a service name as one path segment.
const SEGMENT: &AsciiSet = &QUERY
    .remove(b'@')
    .remove(b':')
    .remove(b'!')
    .remove(b'$')
    .remove(b'&');

/// A request that did not give a usable answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConsulError {
    /// No response: connection refused, reset, TLS failure...
    #[error("{endpoint}: {message}")]
    Transport {
        /// Which call.
        endpoint: &'static str,
        /// What failed.
        message: String,
    },
    /// No response in time.
    #[error("{endpoint}: no answer within {0:?}", .timeout)]
    Timeout {
        /// Which call.
        endpoint: &'static str,
        /// The timeout that expired.
        timeout: Duration,
    },
    /// A status other than 200 (the Go client's wording).
    #[error("{endpoint}: Unexpected response code: {status} ({body})")]
    Status {
        /// Which call.
        endpoint: &'static str,
        /// HTTP status.
        status: u16,
        /// Start of the body.
        body: String,
        /// `Retry-After` of a 429 or 503, if any.
        retry_after: Option<Duration>,
    },
    /// A 200 whose body or headers could not be used.
    #[error("{endpoint}: {message}")]
    Decode {
        /// Which call.
        endpoint: &'static str,
        /// What is wrong.
        message: String,
    },
    /// A credentials file could not be read, or the client could not be
    /// built (bad CA or client certificate).
    #[error("{0}")]
    Setup(String),
}

impl ConsulError {
    /// Error class, the `error` label of `sdbridge_source_errors_total`.
    pub fn kind(&self) -> &'static str {
        match self {
            ConsulError::Transport { .. } | ConsulError::Status { .. } => "consul_http",
            ConsulError::Timeout { .. } => "consul_timeout",
            ConsulError::Decode { .. } => "consul_decode",
            ConsulError::Setup(_) => "consul_config",
        }
    }

    /// How long Consul asked us to wait, if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ConsulError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// A decoded answer with its `X-Consul-Index`.
#[derive(Debug)]
pub struct Answer<T> {
    /// `X-Consul-Index` (0 when absent on a non-blocking call).
    pub index: u64,
    /// The body.
    pub body: T,
}

/// The next index to send after an answer, per Consul's blocking-query
/// rules: reset to 0 (a fresh, non-blocking read) when it goes backwards,
/// and never below 1 otherwise.
pub fn next_index(previous: u64, returned: u64) -> u64 {
    if returned < previous {
        0
    } else {
        returned.max(1)
    }
}

/// The client of one watcher.
pub struct Client {
    /// The pooled client over this server's shared connection slots.
    http: HttpClient,
    /// `scheme://server` + `path_prefix`.
    base: String,
    config: Arc<ConsulSdConfig>,
    /// The token after the Go client's environment fallback.
    token: Option<Secret>,
    /// Requests at once, shared by every client of the server (as many as
    /// its connection slots): a request holding one always finds a
    /// connection or a slot to take over ([`crate::http_client::slots`]).
    permits: Arc<Semaphore>,
    metrics: Option<Arc<Metrics>>,
    /// Progress of the `/v1/health/state/any` calls.
    pub health_state_progress: CallProgress,
    /// `filter` of the health-state watch ([`checks_filter`]), if any.
    pub checks_filter: Option<String>,
}

/// Progress of one kind of call: how many were sent (had their connection
/// slot) and how many have finished, whatever the outcome. Calls of one
/// blocking watch are sequential, so call `n` is out while `done < n`.
#[derive(Debug, Default)]
pub struct CallProgress {
    sent: AtomicU64,
    done: AtomicU64,
}

impl CallProgress {
    /// The number of the call now out at Consul, if one is.
    pub fn outstanding(&self) -> Option<u64> {
        let done = self.done.load(Ordering::SeqCst);
        let sent = self.sent.load(Ordering::SeqCst);
        (sent > done).then_some(sent)
    }

    /// Whether call number `call` has finished.
    pub fn finished(&self, call: u64) -> bool {
        self.done.load(Ordering::SeqCst) >= call
    }
}

/// Counts a call as finished when dropped.
struct Finished<'a>(&'a CallProgress);

impl Drop for Finished<'_> {
    fn drop(&mut self) {
        self.0.done.fetch_add(1, Ordering::SeqCst);
    }
}

impl Client {
    /// Builds the client; fails on unreadable or invalid TLS material.
    pub fn new(
        config: Arc<ConsulSdConfig>,
        metrics: Option<Arc<Metrics>>,
    ) -> Result<Client, ConsulError> {
        let http = HttpClient::new(
            config.scheme.as_str(),
            &config.server,
            &config.tls_config,
            config.follow_redirects,
            config.max_connections,
            2 * WAIT,
        )
        .map_err(ConsulError::Setup)?;
        let prefix = if config.path_prefix.is_empty() || config.path_prefix.starts_with('/') {
            config.path_prefix.clone()
        } else {
            format!("/{}", config.path_prefix)
        };
        let base = format!("{}://{}{prefix}", config.scheme.as_str(), config.server);
        base.parse::<Uri>()
            .map_err(|e| ConsulError::Setup(format!("invalid Consul URL {base:?}: {e}")))?;
        let token = config.token.clone().or_else(token_from_env);
        let permits = http.requests().clone();
        let checks_filter = checks_filter(&config.services);
        if checks_filter.is_none() && !config.services.is_empty() {
            tracing::warn!(server = %config.server, "a name in services holds both '\"' and '`' (or a carriage return), which no Consul filter string can express: watching every check of the datacenter");
        }
        Ok(Client {
            http,
            base,
            permits,
            config,
            token,
            metrics,
            health_state_progress: CallProgress::default(),
            checks_filter,
        })
    }

    /// The parameters every request carries (Go client's `newRequest` and
    /// `setQueryOptions`): `dc`, `ns`, `partition`, `stale`, `node-meta`.
    fn base_params(&self) -> Vec<(&'static str, String)> {
        let c = &self.config;
        let mut p = Vec::new();
        if !c.datacenter.is_empty() {
            p.push(("dc", c.datacenter.clone()));
        }
        if !c.namespace.is_empty() {
            p.push(("ns", c.namespace.clone()));
        }
        if !c.partition.is_empty() {
            p.push(("partition", c.partition.clone()));
        }
        if c.allow_stale {
            p.push(("stale", String::new()));
        }
        for (k, v) in &c.node_meta {
            p.push(("node-meta", format!("{k}:{v}")));
        }
        p
    }

    /// `GET /v1/agent/self` → `Config.Datacenter`.
    pub async fn agent_datacenter(&self) -> Result<String, ConsulError> {
        let answer: Answer<serde_json::Value> = self
            .get("agent_self", "/v1/agent/self", Vec::new(), None, None)
            .await?;
        datacenter_of(&answer.body)
    }

    /// Blocking `GET /v1/catalog/services` (with `filter`).
    pub async fn catalog_services(
        &self,
        index: u64,
    ) -> Result<Answer<CatalogServices>, ConsulError> {
        let mut params = self.base_params();
        if !self.config.filter.is_empty() {
            params.push(("filter", self.config.filter.clone()));
        }
        self.get(
            "catalog_services",
            "/v1/catalog/services",
            params,
            Some(index),
            None,
        )
        .await
    }

    /// Blocking `GET /v1/health/state/any`: every check (only the selected
    /// services' and the node checks with [`Client::checks_filter`]), with
    /// its `ModifyIndex`.
    pub async fn health_state(
        &self,
        index: u64,
    ) -> Result<Answer<Vec<super::labels::HealthCheck>>, ConsulError> {
        let mut params = self.base_params();
        if let Some(filter) = &self.checks_filter {
            params.push(("filter", filter.clone()));
        }
        self.get(
            "health_state",
            "/v1/health/state/any",
            params,
            Some(index),
            Some(&self.health_state_progress),
        )
        .await
    }

    /// Non-blocking `GET /v1/health/service/<name>` with `tag=` per
    /// configured tag and `filter=<health_filter>`.
    pub async fn health_service(
        &self,
        name: &str,
    ) -> Result<Vec<super::labels::ServiceEntry>, ConsulError> {
        Ok(self.health_service_query(name, None).await?.body)
    }

    /// The same, blocking on `index` (per-service watches).
    pub async fn health_service_blocking(
        &self,
        name: &str,
        index: u64,
    ) -> Result<Answer<Vec<super::labels::ServiceEntry>>, ConsulError> {
        self.health_service_query(name, Some(index)).await
    }

    async fn health_service_query(
        &self,
        name: &str,
        blocking: Option<u64>,
    ) -> Result<Answer<Vec<super::labels::ServiceEntry>>, ConsulError> {
        let mut params = self.base_params();
        for tag in &self.config.tags {
            params.push(("tag", tag.clone()));
        }
        if !self.config.health_filter.is_empty() {
            params.push(("filter", self.config.health_filter.clone()));
        }
        let path = format!("/v1/health/service/{}", utf8_percent_encode(name, SEGMENT));
        self.get("health_service", &path, params, blocking, None)
            .await
    }

    /// The auth headers, read now (credential files may be rotated); file
    /// reads happen off the async workers.
    async fn headers(&self) -> Result<HeaderMap, ConsulError> {
        let mut h = HeaderMap::new();
        let value = |s: String| {
            HeaderValue::from_str(&s).map_err(|_| {
                ConsulError::Setup("credentials contain characters not allowed in a header".into())
            })
        };
        if let Some(token) = self.token.as_ref().filter(|t| !t.0.is_empty()) {
            h.insert("X-Consul-Token", value(token.0.clone())?);
        }
        let config = self.config.clone();
        let read = move || auth_header(config.basic_auth.as_ref(), config.authorization.as_ref());
        let reads_files = self
            .config
            .basic_auth
            .as_ref()
            .is_some_and(|b| !b.username_file.is_empty() || !b.password_file.is_empty())
            || self
                .config
                .authorization
                .as_ref()
                .is_some_and(|a| !a.credentials_file.is_empty());
        let auth = if reads_files {
            tokio::task::spawn_blocking(read)
                .await
                .map_err(|e| ConsulError::Setup(e.to_string()))?
        } else {
            read()
        }
        .map_err(ConsulError::Setup)?;
        if let Some(auth) = auth {
            h.insert(AUTHORIZATION, auth);
        }
        h.insert(
            USER_AGENT,
            HeaderValue::from_static(concat!("sdbridge/", env!("CARGO_PKG_VERSION"))),
        );
        Ok(h)
    }

    /// One GET; `blocking` carries the index for a blocking query (0: a
    /// fresh read, no `index` sent); `progress`, if any, counts the call.
    async fn get<T: DeserializeOwned>(
        &self,
        endpoint: &'static str,
        path: &str,
        mut params: Vec<(&'static str, String)>,
        blocking: Option<u64>,
        progress: Option<&CallProgress>,
    ) -> Result<Answer<T>, ConsulError> {
        let timeout = match blocking {
            Some(index) => {
                if index > 0 {
                    params.push(("index", index.to_string()));
                }
                params.push(("wait", format!("{}ms", WAIT.as_millis())));
                BLOCKING_TIMEOUT
            }
            None => TIMEOUT,
        };
        let url = format!("{}{path}{}", self.base, encode_query(params));
        let uri: Uri = url.parse().map_err(|e| ConsulError::Transport {
            endpoint,
            message: format!("invalid URL {url:?}: {e}"),
        })?;
        let headers = self.headers().await?;
        // The semaphore is never closed; a closed one would mean shutdown.
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| ConsulError::Setup("client closed".into()))?;
        let _finished = progress.map(|p| {
            p.sent.fetch_add(1, Ordering::SeqCst);
            Finished(p)
        });
        let started = Instant::now();
        let result = tokio::time::timeout(timeout, self.exchange(uri, headers)).await;
        let (status, response_headers, body) = match result {
            Ok(Ok(answer)) => answer,
            Ok(Err(message)) => {
                self.observe(endpoint, "error", started);
                return Err(ConsulError::Transport { endpoint, message });
            }
            Err(_) => {
                self.observe(endpoint, "timeout", started);
                return Err(ConsulError::Timeout { endpoint, timeout });
            }
        };
        self.observe(endpoint, status.as_str(), started);
        let status = status.as_u16();
        let index = response_headers
            .get("X-Consul-Index")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.parse::<u64>());
        let retry_after = response_headers
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        if status != 200 {
            let text = String::from_utf8_lossy(&body[..body.len().min(MAX_ERROR_BODY)])
                .trim()
                .to_string();
            return Err(ConsulError::Status {
                endpoint,
                status,
                body: text,
                retry_after,
            });
        }
        let index = match (index, blocking) {
            (Some(Ok(i)), _) => i,
            (None, None) => 0,
            (Some(Err(e)), _) => {
                return Err(ConsulError::Decode {
                    endpoint,
                    message: format!("Failed to parse X-Consul-Index: {e}"),
                })
            }
            (None, Some(_)) => {
                return Err(ConsulError::Decode {
                    endpoint,
                    message: "no X-Consul-Index header in a blocking answer".into(),
                })
            }
        };
        let body = decode(endpoint, &body)?;
        Ok(Answer { index, body })
    }

    /// Sends a GET and reads the whole answer (credentials are not sent
    /// to another host on a redirect).
    async fn exchange(
        &self,
        uri: Uri,
        headers: HeaderMap,
    ) -> Result<(StatusCode, HeaderMap, Bytes), String> {
        let token = HeaderName::from_static("x-consul-token");
        let fetched = self
            .http
            .get(uri, headers, &[token], self.config.max_input_size)
            .await
            .map_err(|e| e.to_string())?;
        Ok((fetched.status, fetched.headers, fetched.body))
    }

    fn observe(&self, endpoint: &str, code: &str, started: Instant) {
        if let Some(m) = &self.metrics {
            m.consul_request(endpoint, code, started.elapsed());
        }
    }
}

/// `/v1/catalog/services`: service names to their tags (`null` tags are
/// none).
pub type CatalogServices = std::collections::BTreeMap<String, Option<Vec<String>>>;

/// Decodes the body of a `200` answer from `endpoint`. Public for the fuzz
/// targets.
pub fn decode<T: DeserializeOwned>(endpoint: &'static str, body: &[u8]) -> Result<T, ConsulError> {
    serde_json::from_slice(body).map_err(|e| ConsulError::Decode {
        endpoint,
        message: format!("invalid JSON: {e}"),
    })
}

/// `Config.Datacenter` of a `/v1/agent/self` answer, which must be a string.
pub fn datacenter_of(agent_self: &serde_json::Value) -> Result<String, ConsulError> {
    match agent_self.get("Config").and_then(|c| c.get("Datacenter")) {
        Some(serde_json::Value::String(dc)) => Ok(dc.clone()),
        other => Err(ConsulError::Decode {
            endpoint: "agent_self",
            message: format!(
                "invalid value '{}' for Config.Datacenter",
                other
                    .map(ToString::to_string)
                    .unwrap_or_else(|| "<nil>".into())
            ),
        }),
    }
}

/// The `filter` of `/v1/health/state/any` when `services` is explicit:
/// `ServiceName == "" or ServiceName == "<name>" ...`, names sorted. The
/// node checks (`ServiceName == ""`) stay in: a node check sets the health
/// of every instance on its node, and a node check appearing on an unknown
/// node is how a new node shows. `None` (every check) when `services` is
/// empty, or when a name cannot be written as a filter string.
///
/// Consul filters after the blocking query: the answer's index is still
/// the whole checks table's, so a check change anywhere wakes the watch,
/// but the answer holds only these checks.
///
/// The user's `filter` is not added. It selects catalog `ServiceNode`s, as
/// Prometheus applies it to `/v1/catalog/services`: most of its selectors
/// (`NodeMeta`, `ServiceMeta`, `ServicePort`, ...) are no `HealthCheck`
/// fields, and Consul answers 400 for an unknown selector; the ones both
/// have (`ServiceTags`, `Node`) would drop the node checks. `health_filter`
/// selects `ServiceEntry`s (`Service.*`, `Node.*`, `Checks.*`), another
/// shape again. Both still apply where Prometheus applies them; this
/// watch only has to see a superset of the checks that matter.
pub fn checks_filter(services: &[String]) -> Option<String> {
    if services.is_empty() {
        return None;
    }
    let names: std::collections::BTreeSet<&str> = services.iter().map(String::as_str).collect();
    let mut filter = String::from(r#"ServiceName == """#);
    for name in names {
        filter.push_str(" or ServiceName == ");
        filter.push_str(&bexpr_string(name)?);
    }
    Some(filter)
}

/// `s` as a go-bexpr string literal. bexpr's grammar ends a double-quoted
/// literal at the first `"`, whatever precedes it, then unquotes it as Go
/// does (`strconv.Unquote`): such a literal can hold anything but `"`, with
/// `\` and control characters escaped. Otherwise a raw (backquoted)
/// literal, which has no escapes and loses carriage returns. `None` when
/// neither can hold `s`.
pub fn bexpr_string(s: &str) -> Option<String> {
    if !s.contains('"') {
        let mut out = String::with_capacity(s.len() + 2);
        out.push('"');
        for c in s.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                c if c.is_ascii_control() => {
                    let _ = write!(out, "\\x{:02x}", c as u32);
                }
                c => out.push(c),
            }
        }
        out.push('"');
        Some(out)
    } else if !s.contains('`') && !s.contains('\r') {
        Some(format!("`{s}`"))
    } else {
        None
    }
}

/// Consul's Go client falls back to these when no token is configured.
fn token_from_env() -> Option<Secret> {
    if let Ok(file) = std::env::var("CONSUL_HTTP_TOKEN_FILE") {
        if let Ok(text) = std::fs::read_to_string(&file) {
            return Some(Secret(text.trim().to_string()));
        }
    }
    std::env::var("CONSUL_HTTP_TOKEN")
        .ok()
        .filter(|t| !t.is_empty())
        .map(Secret)
}

/// Go's `url.Values.Encode`: keys sorted (stable for repeated keys),
/// `QueryEscape`d, `k=` for empty values.
pub fn encode_query(mut params: Vec<(&'static str, String)>) -> String {
    params.sort_by_key(|(k, _)| *k);
    let mut out = String::new();
    for (i, (k, v)) in params.iter().enumerate() {
        out.push(if i == 0 { '?' } else { '&' });
        let _ = write!(out, "{}={}", escape(k), escape(v));
    }
    out
}

fn escape(s: &str) -> String {
    utf8_percent_encode(s, QUERY)
        .to_string()
        .replace("%20", "+")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http_client::client::{base64, resolve_location};

    #[test]
    fn query_is_encoded_like_go_url_values() {
        let q = encode_query(vec![
            ("stale", String::new()),
            ("tag", "tag1".into()),
            ("node-meta", "rack_name:2304".into()),
            ("wait", "120000ms".into()),
            ("tag", "a b".into()),
        ]);
        assert_eq!(
            q,
            "?node-meta=rack_name%3A2304&stale=&tag=tag1&tag=a+b&wait=120000ms"
        );
        let q = encode_query(vec![
            ("filter", r#"NodeMeta.rack_name == "2304""#.into()),
            ("index", "1".into()),
        ]);
        assert_eq!(q, "?filter=NodeMeta.rack_name+%3D%3D+%222304%22&index=1");
        assert_eq!(encode_query(vec![]), "");
    }

    #[test]
    fn checks_filter_quotes_names_as_bexpr_reads_them() {
        let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(checks_filter(&[]), None);
        assert_eq!(
            checks_filter(&names(&["web", "db", "web"])).as_deref(),
            Some(r#"ServiceName == "" or ServiceName == "db" or ServiceName == "web""#)
        );
        assert_eq!(bexpr_string("a b.c-d_e").as_deref(), Some(r#""a b.c-d_e""#));
        assert_eq!(bexpr_string(r"a\b").as_deref(), Some(r#""a\\b""#));
        assert_eq!(
            bexpr_string("a\n\u{1}서").as_deref(),
            Some(r#""a\n\x01서""#)
        );
        // A `"` would end a double-quoted literal, even escaped.
        assert_eq!(bexpr_string(r#"a"b\"#).as_deref(), Some(r#"`a"b\`"#));
        assert_eq!(bexpr_string("a\"b`c"), None);
        assert_eq!(bexpr_string("a\"b\rc"), None);
        assert_eq!(checks_filter(&names(&["ok", "a\"b`c"])), None);
        assert_eq!(bexpr_string("").as_deref(), Some(r#""""#));
    }

    #[test]
    fn index_rules() {
        assert_eq!(next_index(0, 0), 1, "never below 1");
        assert_eq!(next_index(5, 7), 7);
        assert_eq!(next_index(7, 7), 7);
        assert_eq!(next_index(7, 3), 0, "backwards: reset");
    }

    #[test]
    fn helpers() {
        assert_eq!(base64(b"u:p"), "dTpw");
        assert_eq!(base64(b"user:pass"), "dXNlcjpwYXNz");
        assert_eq!(base64(b"ab"), "YWI=");
        let base: Uri = "http://127.0.0.1:8500/consul/v1/catalog/services?stale="
            .parse()
            .unwrap();
        for (location, want) in [
            ("https://[::1]:8501/v1/x?a=b", "https://[::1]:8501/v1/x?a=b"),
            ("/v1/y?index=3", "http://127.0.0.1:8500/v1/y?index=3"),
            ("z?q", "http://127.0.0.1:8500/consul/v1/catalog/z?q"),
        ] {
            assert_eq!(resolve_location(&base, location).unwrap().to_string(), want);
        }
        assert_eq!(parse_retry_after("3"), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after("nope"), None);
        assert_eq!(
            utf8_percent_encode("a b/c?서", SEGMENT).to_string(),
            "a%20b%2Fc%3F%EC%84%9C"
        );
    }
}
