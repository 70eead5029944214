//! The fake's HTTP side: accepting, routing, the endpoints' JSON.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

use super::*;

pub(super) struct ConnGuard {
    pub(super) shared: Arc<Shared>,
    pub(super) ip: IpAddr,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        let mut m = self.shared.conns_per_ip.lock().unwrap();
        if let Some(c) = m.get_mut(&self.ip) {
            *c -= 1;
            if *c == 0 {
                m.remove(&self.ip);
            }
        }
        self.shared.open.fetch_sub(1, Ordering::SeqCst);
    }
}

pub(super) struct BlockingGuard(Arc<Shared>);

impl Drop for BlockingGuard {
    fn drop(&mut self) {
        self.0.blocking.fetch_sub(1, Ordering::SeqCst);
    }
}

pub(super) async fn accept_loop(listener: tokio::net::TcpListener, shared: Arc<Shared>) {
    let tls = shared.opts.tls.as_ref().map(TlsFiles::acceptor);
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let ip = peer.ip();
        let limit = shared.opts.max_conns_per_client;
        let admitted = {
            let mut m = shared.conns_per_ip.lock().unwrap();
            let c = m.entry(ip).or_insert(0);
            if limit > 0 && *c >= limit {
                false
            } else {
                *c += 1;
                true
            }
        };
        if !admitted {
            shared.rejected.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(reject(stream));
            continue;
        }
        let open = shared.open.fetch_add(1, Ordering::SeqCst) + 1;
        shared.peak.fetch_max(open, Ordering::SeqCst);
        let guard = ConnGuard {
            shared: shared.clone(),
            ip,
        };
        let sh = shared.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let _guard = guard;
            let failures = sh.clone();
            let svc = hyper::service::service_fn(move |req| handle(sh.clone(), req));
            let http = hyper::server::conn::http1::Builder::new();
            match tls {
                None => {
                    let _ = http.serve_connection(TokioIo::new(stream), svc).await;
                }
                Some(acceptor) => match acceptor.accept(stream).await {
                    Ok(stream) => {
                        let _ = http.serve_connection(TokioIo::new(stream), svc).await;
                    }
                    Err(_) => {
                        failures.tls_failures.fetch_add(1, Ordering::SeqCst);
                    }
                },
            }
        });
    }
}

/// go-connlimit's answer to a connection over the limit. Consul writes it
/// and closes at once; the fake also drains what the client sent for a
/// moment, so that the client reads the 429 instead of a reset.
pub(super) async fn reject(mut stream: tokio::net::TcpStream) {
    let msg = format!(
        "HTTP/1.1 429 Too Many Requests\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
        TOO_MANY_CONNS.len(),
        TOO_MANY_CONNS
    );
    let _ =
        tokio::time::timeout(Duration::from_millis(100), stream.write_all(msg.as_bytes())).await;
    let _ = stream.shutdown().await;
    let mut buf = [0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_millis(200), async {
        while let Ok(n) = stream.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}

pub(super) type Resp = Response<Full<Bytes>>;

pub(super) fn text(status: StatusCode, body: &str) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut()
        .insert("content-type", "text/plain; charset=utf-8".parse().unwrap());
    r
}

#[derive(Clone, Debug)]
pub(super) enum Route {
    AgentSelf,
    CatalogServices,
    CatalogService(String),
    HealthService(String),
    HealthState(String),
}

impl Route {
    pub(super) fn endpoint(&self) -> &'static str {
        match self {
            Route::AgentSelf => "agent/self",
            Route::CatalogServices => "catalog/services",
            Route::CatalogService(_) => "catalog/service",
            Route::HealthService(_) => "health/service",
            Route::HealthState(_) => "health/state",
        }
    }
}

pub(super) fn decode(s: &str, plus_is_space: bool) -> String {
    let s = if plus_is_space {
        s.replace('+', " ")
    } else {
        s.to_string()
    };
    percent_encoding::percent_decode_str(&s)
        .decode_utf8_lossy()
        .into_owned()
}

pub(super) fn route(path: &str) -> Option<Route> {
    let path = decode(path, false);
    if path == "/v1/agent/self" {
        return Some(Route::AgentSelf);
    }
    if path == "/v1/catalog/services" {
        return Some(Route::CatalogServices);
    }
    if let Some(n) = path.strip_prefix("/v1/catalog/service/") {
        return Some(Route::CatalogService(n.to_string()));
    }
    if let Some(n) = path.strip_prefix("/v1/health/service/") {
        return Some(Route::HealthService(n.to_string()));
    }
    if let Some(n) = path.strip_prefix("/v1/health/state/") {
        return Some(Route::HealthState(n.to_string()));
    }
    None
}

/// Parsed query options.
#[derive(Default)]
pub(super) struct Query {
    pub(super) params: Vec<(String, String)>,
    pub(super) tags: Vec<String>,
    pub(super) node_meta: Vec<(String, String)>,
    pub(super) passing: bool,
    pub(super) filter: Option<Expr>,
    pub(super) ns: String,
    pub(super) partition: String,
    pub(super) index: u64,
    pub(super) wait: Option<Duration>,
    pub(super) stale: bool,
    pub(super) consistent: bool,
    pub(super) pretty: bool,
}

impl Query {
    pub(super) fn get(&self, k: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    }
    pub(super) fn has(&self, k: &str) -> bool {
        self.params.iter().any(|(n, _)| n == k)
    }
}

/// Go's `time.ParseDuration`.
pub fn parse_go_duration(s: &str) -> Option<Duration> {
    let (neg, mut rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Some(Duration::ZERO);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let num = &rest[..num_end];
        if num.is_empty() || num == "." {
            return None;
        }
        let n: f64 = num.parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_end] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit_end..];
        total += n * unit;
    }
    if neg {
        // Consul treats a non-positive wait like no wait (the default).
        return Some(Duration::ZERO);
    }
    Some(Duration::from_secs_f64(total))
}

pub(super) fn parse_query(
    shared: &Shared,
    route: &Route,
    raw: &str,
    req: &Request<Incoming>,
) -> Result<Query, Box<Resp>> {
    let mut q = Query::default();
    for part in raw.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once('=').unwrap_or((part, ""));
        q.params.push((decode(k, true), decode(v, true)));
    }
    let bad = |m: &str| Box::new(text(StatusCode::BAD_REQUEST, m));
    q.stale = q.has("stale");
    q.consistent = q.has("consistent");
    q.pretty = q.has("pretty");
    if q.stale && q.consistent {
        return Err(bad(
            "Cannot specify ?stale with ?consistent, conflicting semantics.",
        ));
    }
    if let Some(w) = q.get("wait").filter(|w| !w.is_empty()) {
        match parse_go_duration(w) {
            Some(d) => q.wait = Some(d),
            None => return Err(bad("Invalid wait time")),
        }
    }
    if let Some(i) = q.get("index").filter(|i| !i.is_empty()) {
        match i.parse() {
            Ok(i) => q.index = i,
            Err(_) => return Err(bad("Invalid index")),
        }
    }
    if let Some(p) = q.get("passing") {
        q.passing = match p {
            "" | "1" | "t" | "T" | "true" | "TRUE" | "True" => true,
            "0" | "f" | "F" | "false" | "FALSE" | "False" => false,
            _ => return Err(bad("Invalid value for ?passing")),
        };
    }
    q.tags = q
        .params
        .iter()
        .filter(|(k, _)| k == "tag")
        .map(|(_, v)| v.clone())
        .collect();
    q.node_meta = q
        .params
        .iter()
        .filter(|(k, _)| k == "node-meta")
        .map(|(_, v)| match v.split_once(':') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (v.clone(), String::new()),
        })
        .collect();
    let header = |n: &str| {
        req.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    q.ns = q
        .get("ns")
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .or_else(|| header("x-consul-namespace"))
        .unwrap_or_else(|| "default".into());
    q.partition = q
        .get("partition")
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .or_else(|| header("x-consul-partition"))
        .unwrap_or_else(|| "default".into());
    if let Some(f) = q.get("filter").filter(|f| !f.trim().is_empty()) {
        let selectors = match route {
            Route::HealthService(_) => HEALTH_SELECTORS,
            Route::CatalogServices | Route::CatalogService(_) => CATALOG_SELECTORS,
            Route::HealthState(_) => CHECK_SELECTORS,
            Route::AgentSelf => &[],
        };
        match parse_filter(f, selectors) {
            Ok(e) => q.filter = Some(e),
            Err(m) => {
                return Err(bad(&format!(
                    "Failed to create boolean expression evaluator: {m}"
                )))
            }
        }
    }
    if let Some(dc) = q.get("dc").filter(|d| !d.is_empty()) {
        if dc != shared.opts.datacenter {
            return Err(Box::new(text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "No path to datacenter",
            )));
        }
    }
    Ok(q)
}

pub(super) enum Acl {
    All,
    Anonymous,
}

pub(super) fn acl(shared: &Shared, q: &Query, req: &Request<Incoming>) -> Result<Acl, Box<Resp>> {
    let Some(want) = &shared.opts.acl_token else {
        return Ok(Acl::All);
    };
    let h = |n: &str| req.headers().get(n).and_then(|v| v.to_str().ok());
    let token = h("x-consul-token")
        .map(str::to_string)
        .or_else(|| {
            h("authorization")
                .and_then(|a| a.strip_prefix("Bearer "))
                .map(|t| t.trim().to_string())
        })
        .or_else(|| q.get("token").map(str::to_string))
        .unwrap_or_default();
    if token.is_empty() {
        Ok(Acl::Anonymous)
    } else if &token == want {
        Ok(Acl::All)
    } else {
        Err(Box::new(text(StatusCode::FORBIDDEN, "ACL not found")))
    }
}

pub(super) fn record(shared: &Shared, req: &Request<Incoming>, endpoint: &str) {
    shared.requests.fetch_add(1, Ordering::SeqCst);
    *shared
        .by_endpoint
        .lock()
        .unwrap()
        .entry(endpoint.to_string())
        .or_insert(0) += 1;
    let mut log = shared.log.lock().unwrap();
    if log.len() < LOG_LIMIT {
        log.push(RecordedRequest {
            method: req.method().to_string(),
            path: req.uri().path().to_string(),
            query: req.uri().query().unwrap_or("").to_string(),
            headers: req
                .headers()
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_string(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
        });
    }
}

pub(super) fn matching_fault(shared: &Shared, path: &str) -> Option<Fault> {
    let c = shared.catalog.lock().unwrap();
    c.faults
        .iter()
        .find(|(p, _)| path.starts_with(p.as_str()))
        .map(|(_, f)| f.clone())
}

pub(super) async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Resp, Infallible> {
    let full_path = req.uri().path().to_string();
    let prefix = shared.opts.path_prefix.trim_end_matches('/');
    let path = match full_path.strip_prefix(prefix) {
        Some(p) if p.starts_with('/') => p.to_string(),
        _ => String::new(),
    };
    let route = route(&path);
    record(
        &shared,
        &req,
        route.as_ref().map_or("other", |r| r.endpoint()),
    );

    // Faults, first.
    let mut changes = shared.changes.subscribe();
    loop {
        match matching_fault(&shared, &path) {
            Some(Fault::Hang) => {
                if changes.changed().await.is_err() {
                    return Ok(text(StatusCode::SERVICE_UNAVAILABLE, "shutting down"));
                }
            }
            Some(Fault::Status500) => {
                return Ok(text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "rpc error making call: injected failure (fake consul)",
                ))
            }
            Some(Fault::TooManyRequests { retry_after_secs }) => {
                let mut r = text(StatusCode::TOO_MANY_REQUESTS, "rate limit exceeded");
                r.headers_mut()
                    .insert("retry-after", retry_after_secs.to_string().parse().unwrap());
                return Ok(r);
            }
            Some(Fault::Garbage) => {
                let idx = {
                    let c = shared.catalog.lock().unwrap();
                    c.reported(c.index)
                };
                let mut r = Response::new(Full::new(Bytes::from_static(
                    b"[{\"Node\": {\"Node\": \"garb\x00age\", tru",
                )));
                let h = r.headers_mut();
                h.insert("content-type", "application/json".parse().unwrap());
                h.insert("x-consul-index", idx.to_string().parse().unwrap());
                return Ok(r);
            }
            None => break,
        }
    }

    let Some(route) = route else {
        return Ok(text(StatusCode::NOT_FOUND, "404 page not found\n"));
    };
    if req.method() != hyper::Method::GET {
        let mut r = text(
            StatusCode::METHOD_NOT_ALLOWED,
            &format!("method {} not allowed", req.method()),
        );
        r.headers_mut().insert("allow", "GET".parse().unwrap());
        return Ok(r);
    }
    let raw_query = req.uri().query().unwrap_or("").to_string();
    let q = match parse_query(&shared, &route, &raw_query, &req) {
        Ok(q) => q,
        Err(r) => return Ok(*r),
    };
    let acl = match acl(&shared, &q, &req) {
        Ok(a) => a,
        Err(r) => return Ok(*r),
    };
    match &route {
        Route::AgentSelf => {
            if matches!(acl, Acl::Anonymous) {
                return Ok(text(StatusCode::FORBIDDEN, "Permission denied"));
            }
            return Ok(json_response(
                &shared,
                route.endpoint(),
                &q,
                agent_self(&shared.opts),
                None,
                false,
            ));
        }
        Route::HealthService(n) | Route::CatalogService(n) if n.is_empty() => {
            return Ok(text(StatusCode::BAD_REQUEST, "Missing service name"));
        }
        Route::HealthState(s) if s.is_empty() => {
            return Ok(text(StatusCode::BAD_REQUEST, "Missing check state"));
        }
        Route::HealthState(s)
            if !matches!(s.as_str(), "any" | "passing" | "warning" | "critical") =>
        {
            return Ok(text(StatusCode::BAD_REQUEST, "Invalid check state"));
        }
        _ => {}
    }

    // Blocking.
    if q.index > 0 {
        let mut wait = q.wait.unwrap_or(DEFAULT_WAIT);
        if wait.is_zero() {
            wait = DEFAULT_WAIT;
        }
        wait = wait.min(MAX_WAIT);
        if shared.opts.jitter {
            wait += Duration::from_nanos(fastrand::u64(0..=(wait.as_nanos() / 16) as u64));
        }
        let deadline = tokio::time::Instant::now() + wait;
        let n = shared.blocking.fetch_add(1, Ordering::SeqCst) + 1;
        shared.peak_blocking.fetch_max(n, Ordering::SeqCst);
        let _guard = BlockingGuard(shared.clone());
        let mut changes = shared.changes.subscribe();
        let epoch = shared.catalog.lock().unwrap().restore_epoch;
        loop {
            let (idx, now_epoch) = {
                let c = shared.catalog.lock().unwrap();
                (query_index(&c, &route, &q), c.restore_epoch)
            };
            if idx > q.index || now_epoch != epoch {
                break;
            }
            tokio::select! {
                r = changes.changed() => if r.is_err() { break },
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
    }

    let c = shared.catalog.lock().unwrap();
    let idx = query_index(&c, &route, &q);
    let mut body = match &route {
        Route::CatalogServices => catalog_services(&c, &shared.opts, &q),
        Route::CatalogService(n) => Value::Array(catalog_service(&c, &shared.opts, &q, n)),
        Route::HealthService(n) => Value::Array(health_service(&c, &shared.opts, &q, n)),
        Route::HealthState(s) => Value::Array(health_state(&c, &shared.opts, &q, s)),
        Route::AgentSelf => unreachable!(),
    };
    drop(c);
    let filtered = matches!(acl, Acl::Anonymous);
    if filtered {
        body = match body {
            Value::Object(_) => json!({}),
            _ => json!([]),
        };
    }
    Ok(json_response(
        &shared,
        route.endpoint(),
        &q,
        body,
        Some(idx),
        filtered,
    ))
}

pub(super) fn json_response(
    shared: &Shared,
    endpoint: &str,
    q: &Query,
    body: Value,
    index: Option<u64>,
    acl_filtered: bool,
) -> Resp {
    let bytes = if q.pretty {
        serde_json::to_vec_pretty(&body).unwrap()
    } else {
        serde_json::to_vec(&body).unwrap()
    };
    *shared
        .bytes_by_endpoint
        .lock()
        .unwrap()
        .entry(endpoint.to_string())
        .or_insert(0) += bytes.len() as u64;
    let mut r = Response::new(Full::new(Bytes::from(bytes)));
    let h = r.headers_mut();
    h.insert("content-type", "application/json".parse().unwrap());
    if let Some(idx) = index {
        h.insert("x-consul-index", idx.to_string().parse().unwrap());
        h.insert("x-consul-knownleader", "true".parse().unwrap());
        h.insert("x-consul-lastcontact", "0".parse().unwrap());
        let consistency = if q.stale {
            "stale"
        } else if q.consistent {
            "consistent"
        } else {
            "leader"
        };
        h.insert(
            "x-consul-effective-consistency",
            consistency.parse().unwrap(),
        );
        if acl_filtered {
            h.insert("x-consul-results-filtered-by-acls", "true".parse().unwrap());
        }
        if q.has("cached") {
            h.insert("x-cache", "MISS".parse().unwrap());
            h.insert("age", "0".parse().unwrap());
        }
    }
    r
}

pub(super) fn query_index(c: &Catalog, route: &Route, q: &Query) -> u64 {
    let raw = match route {
        Route::HealthService(n) | Route::CatalogService(n) => {
            c.service_index.get(n).copied().unwrap_or(c.extinction)
        }
        Route::CatalogServices => {
            if q.node_meta.is_empty() {
                c.services_table
            } else {
                c.services_table.max(c.nodes_table)
            }
        }
        Route::HealthState(_) => {
            if q.node_meta.is_empty() {
                c.checks_table
            } else {
                c.checks_table.max(c.nodes_table)
            }
        }
        Route::AgentSelf => c.index,
    };
    c.reported(raw)
}

// ---------------------------------------------------------------------------
// JSON shapes

pub(super) fn agent_self(o: &Options) -> Value {
    json!({
        "Config": {
            "Datacenter": o.datacenter,
            "PrimaryDatacenter": o.datacenter,
            "NodeName": o.node_name,
            "NodeID": node_id(&o.node_name),
            "Revision": "fake",
            "Server": true,
            "Version": "1.20.0",
            "BuildDate": "2024-01-01T00:00:00Z"
        },
        "Member": {
            "Name": o.node_name,
            "Addr": "127.0.0.1",
            "Port": 8301,
            "Tags": {"dc": o.datacenter, "role": "consul", "build": "1.20.0:fake"},
            "Status": 1,
            "ProtocolMin": 1,
            "ProtocolMax": 5,
            "ProtocolCur": 2,
            "DelegateMin": 2,
            "DelegateMax": 5,
            "DelegateCur": 4
        },
        "Meta": {"consul-network-segment": ""},
        "xDS": {"SupportedProxies": {}, "Port": -1, "Ports": {}}
    })
}

pub(super) fn str_map(m: &BTreeMap<String, String>, nulls: bool) -> Value {
    if m.is_empty() && nulls {
        return Value::Null;
    }
    Value::Object(m.iter().map(|(k, v)| (k.clone(), json!(v))).collect())
}

pub(super) fn tags_json(t: &[String], nulls: bool) -> Value {
    if t.is_empty() && nulls {
        Value::Null
    } else {
        json!(t)
    }
}

pub(super) fn svc_tagged(s: &ServiceInstance) -> Value {
    Value::Object(
        s.tagged_addresses
            .iter()
            .map(|(k, (a, p))| (k.clone(), json!({"Address": a, "Port": p})))
            .collect(),
    )
}

pub(super) fn dc_of<'a>(n: &'a Node, o: &'a Options) -> &'a str {
    if n.datacenter.is_empty() {
        &o.datacenter
    } else {
        &n.datacenter
    }
}

pub(super) fn node_json(n: &NodeRec, o: &Options) -> Value {
    let nulls = o.null_empty_collections;
    json!({
        "ID": n.id,
        "Node": n.node.name,
        "Address": n.node.address,
        "Datacenter": dc_of(&n.node, o),
        "TaggedAddresses": str_map(&n.node.tagged_addresses, nulls),
        "Meta": str_map(&n.node.meta, nulls),
        "CreateIndex": n.create,
        "ModifyIndex": n.modify,
    })
}

/// The fields every service record ends with: its namespace and partition
/// (when it has them) and its Raft indexes.
pub(super) fn scope_and_indexes(m: &mut Map<String, Value>, s: &SvcRec) {
    if let Some(ns) = &s.inst.namespace {
        m.insert("Namespace".into(), json!(ns));
    }
    if let Some(p) = &s.inst.partition {
        m.insert("Partition".into(), json!(p));
    }
    m.insert("CreateIndex".into(), json!(s.create));
    m.insert("ModifyIndex".into(), json!(s.modify));
}

pub(super) fn service_json(s: &SvcRec, o: &Options) -> Value {
    let i = &s.inst;
    let nulls = o.null_empty_collections;
    let mut m = Map::new();
    m.insert("ID".into(), json!(i.id));
    m.insert("Service".into(), json!(i.service));
    m.insert("Tags".into(), tags_json(&i.tags, nulls));
    m.insert("Address".into(), json!(i.address));
    if !i.tagged_addresses.is_empty() {
        m.insert("TaggedAddresses".into(), svc_tagged(i));
    }
    m.insert("Meta".into(), str_map(&i.meta, nulls));
    m.insert("Port".into(), json!(i.port));
    m.insert(
        "Weights".into(),
        json!({"Passing": i.weights.0, "Warning": i.weights.1}),
    );
    m.insert("EnableTagOverride".into(), json!(i.enable_tag_override));
    m.insert(
        "Proxy".into(),
        json!({"Mode": "", "MeshGateway": {}, "Expose": {}}),
    );
    m.insert("Connect".into(), json!({}));
    m.insert("PeerName".into(), json!(""));
    scope_and_indexes(&mut m, s);
    Value::Object(m)
}

pub(super) fn check_json(c: &Catalog, ch: &CheckRec, o: &Options) -> Value {
    let svc = (!ch.service_id.is_empty())
        .then(|| c.services.get(&(ch.node.clone(), ch.service_id.clone())))
        .flatten();
    let (name, tags) = svc.map_or((String::new(), Vec::new()), |s| {
        (s.inst.service.clone(), s.inst.tags.clone())
    });
    let mut m = Map::new();
    m.insert("Node".into(), json!(ch.node));
    m.insert("CheckID".into(), json!(ch.check_id));
    m.insert("Name".into(), json!(ch.name));
    m.insert("Status".into(), json!(ch.status));
    m.insert("Notes".into(), json!(""));
    m.insert("Output".into(), json!(""));
    m.insert("ServiceID".into(), json!(ch.service_id));
    m.insert("ServiceName".into(), json!(name));
    m.insert(
        "ServiceTags".into(),
        tags_json(&tags, o.null_empty_collections),
    );
    m.insert("Type".into(), json!(""));
    m.insert("Interval".into(), json!(""));
    m.insert("Timeout".into(), json!(""));
    m.insert("ExposedPort".into(), json!(0));
    m.insert("Definition".into(), json!({}));
    if let Some(s) = svc {
        if let Some(ns) = &s.inst.namespace {
            m.insert("Namespace".into(), json!(ns));
        }
        if let Some(p) = &s.inst.partition {
            m.insert("Partition".into(), json!(p));
        }
    }
    m.insert("CreateIndex".into(), json!(ch.create));
    m.insert("ModifyIndex".into(), json!(ch.modify));
    Value::Object(m)
}

/// Catalog `ServiceNode` (what `catalog/service/<name>` returns and what
/// `catalog/services` filters run against).
pub(super) fn service_node_json(n: &NodeRec, s: &SvcRec, o: &Options) -> Value {
    let i = &s.inst;
    let nulls = o.null_empty_collections;
    let mut m = Map::new();
    m.insert("ID".into(), json!(n.id));
    m.insert("Node".into(), json!(n.node.name));
    m.insert("Address".into(), json!(n.node.address));
    m.insert("Datacenter".into(), json!(dc_of(&n.node, o)));
    m.insert(
        "TaggedAddresses".into(),
        str_map(&n.node.tagged_addresses, nulls),
    );
    m.insert("NodeMeta".into(), str_map(&n.node.meta, nulls));
    m.insert("ServiceKind".into(), json!(""));
    m.insert("ServiceID".into(), json!(i.id));
    m.insert("ServiceName".into(), json!(i.service));
    m.insert("ServiceTags".into(), tags_json(&i.tags, nulls));
    m.insert("ServiceAddress".into(), json!(i.address));
    m.insert("ServiceTaggedAddresses".into(), {
        let t = svc_tagged(i);
        if i.tagged_addresses.is_empty() && nulls {
            Value::Null
        } else {
            t
        }
    });
    m.insert(
        "ServiceWeights".into(),
        json!({"Passing": i.weights.0, "Warning": i.weights.1}),
    );
    m.insert("ServiceMeta".into(), str_map(&i.meta, nulls));
    m.insert("ServicePort".into(), json!(i.port));
    m.insert(
        "ServiceEnableTagOverride".into(),
        json!(i.enable_tag_override),
    );
    m.insert(
        "ServiceProxy".into(),
        json!({"Mode": "", "MeshGateway": {}, "Expose": {}}),
    );
    m.insert("ServiceConnect".into(), json!({}));
    scope_and_indexes(&mut m, s);
    Value::Object(m)
}

pub(super) fn in_scope(i: &ServiceInstance, q: &Query) -> bool {
    let ns = i.namespace.as_deref().unwrap_or("default");
    let part = i.partition.as_deref().unwrap_or("default");
    (q.ns == "*" || q.ns == ns) && (q.partition == "*" || q.partition == part)
}

pub(super) fn meta_ok(n: &Node, q: &Query) -> bool {
    q.node_meta
        .iter()
        .all(|(k, v)| n.meta.get(k).is_some_and(|x| x == v))
}

pub(super) fn tags_ok(i: &ServiceInstance, q: &Query) -> bool {
    q.tags.iter().all(|want| {
        let want = want.to_lowercase();
        i.tags.iter().any(|t| t.to_lowercase() == want)
    })
}

pub(super) fn filter_ok(q: &Query, v: &Value) -> bool {
    q.filter.as_ref().is_none_or(|f| f.eval(v))
}

/// Instances of `name` in scope, ordered by node then service ID.
pub(super) fn instances<'a>(
    c: &'a Catalog,
    q: &Query,
    name: &str,
) -> Vec<(&'a NodeRec, &'a SvcRec)> {
    c.by_name
        .get(name)
        .into_iter()
        .flatten()
        .filter_map(|key| c.services.get(key))
        .filter(|s| in_scope(&s.inst, q) && tags_ok(&s.inst, q))
        .filter_map(|s| c.nodes.get(&s.inst.node).map(|n| (n, s)))
        .filter(|(n, _)| meta_ok(&n.node, q))
        .collect()
}

pub(super) fn health_service(c: &Catalog, o: &Options, q: &Query, name: &str) -> Vec<Value> {
    let mut out = Vec::new();
    for (n, s) in instances(c, q, name) {
        // The node's checks and the instance's, in check ID order.
        let owned = |sid: &str| {
            c.checks_of
                .get(&(n.node.name.clone(), sid.to_string()))
                .into_iter()
                .flatten()
        };
        let mut ids: Vec<&String> = owned("").chain(owned(&s.inst.id)).collect();
        ids.sort();
        let checks: Vec<&CheckRec> = ids
            .into_iter()
            .filter_map(|id| c.checks.get(&(n.node.name.clone(), id.clone())))
            .collect();
        if q.passing && checks.iter().any(|ch| ch.status != "passing") {
            continue;
        }
        let entry = json!({
            "Node": node_json(n, o),
            "Service": service_json(s, o),
            "Checks": checks.iter().map(|ch| check_json(c, ch, o)).collect::<Vec<_>>(),
        });
        if filter_ok(q, &entry) {
            out.push(entry);
        }
    }
    out
}

pub(super) fn catalog_service(c: &Catalog, o: &Options, q: &Query, name: &str) -> Vec<Value> {
    instances(c, q, name)
        .into_iter()
        .map(|(n, s)| service_node_json(n, s, o))
        .filter(|v| filter_ok(q, v))
        .collect()
}

pub(super) fn catalog_services(c: &Catalog, o: &Options, q: &Query) -> Value {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for s in c.services.values() {
        if !in_scope(&s.inst, q) {
            continue;
        }
        let Some(n) = c.nodes.get(&s.inst.node) else {
            continue;
        };
        if !meta_ok(&n.node, q) {
            continue;
        }
        if q.filter.is_some() && !filter_ok(q, &service_node_json(n, s, o)) {
            continue;
        }
        out.entry(s.inst.service.clone())
            .or_default()
            .extend(s.inst.tags.iter().cloned());
    }
    Value::Object(
        out.into_iter()
            .map(|(k, v)| (k, json!(v.into_iter().collect::<Vec<_>>())))
            .collect(),
    )
}

pub(super) fn health_state(c: &Catalog, o: &Options, q: &Query, state: &str) -> Vec<Value> {
    c.checks
        .values()
        .filter(|ch| state == "any" || ch.status == state)
        .filter(|ch| c.nodes.get(&ch.node).is_some_and(|n| meta_ok(&n.node, q)))
        .filter(|ch| {
            ch.service_id.is_empty()
                || c.services
                    .get(&(ch.node.clone(), ch.service_id.clone()))
                    .is_none_or(|s| in_scope(&s.inst, q))
        })
        .map(|ch| check_json(c, ch, o))
        .filter(|v| filter_ok(q, v))
        .collect()
}
