//! A fake Consul agent speaking Consul's documented HTTP API, for the
//! integration tests and benches. It follows Consul's behaviour (as
//! documented in `api-docs/{health,catalog,agent}.mdx`,
//! `features/blocking.mdx`, `features/filtering.mdx` and the state store's
//! index rules), not the expectations of any particular client.
//!
//! It runs on its own thread with its own tokio runtime, so synchronous
//! tests can drive it, binds `127.0.0.1:0`, and shuts down on drop.
//!
//! # Endpoints
//!
//! - `GET /v1/agent/self`: `{"Config":{"Datacenter","NodeName",..},"Member":{..},"Meta":{}}`.
//! - `GET /v1/catalog/services`: service name → sorted, deduplicated tags.
//!   Params `node-meta`, `filter` (against catalog `ServiceNode`s: `ServiceName`,
//!   `ServiceTags`, `NodeMeta.k`, ...), `ns`, `partition`.
//! - `GET /v1/catalog/service/<name>`: `ServiceNode`s; `tag`, `node-meta`, `filter`.
//! - `GET /v1/health/service/<name>`: `[{"Node","Service","Checks"}]` ordered by
//!   node then service ID; `tag` (repeatable, all must match, case-insensitive as
//!   in Consul's `serviceTagFilter`), `node-meta` (repeatable `k:v`, all must
//!   match), `passing`, `filter` (`Node.*`, `Service.*`, `Checks.*` selectors).
//! - `GET /v1/health/state/<any|passing|warning|critical>`: flat list of checks,
//!   node-level ones included; `node-meta`, `filter`.
//!
//! Every endpoint accepts `dc` (another datacenter → `500 No path to
//! datacenter`), `stale` / `consistent` (both → 400) / `cached`, `ns` /
//! `partition` (also `X-Consul-Namespace` / `X-Consul-Partition`; an instance
//! without a namespace is in `default`; `*` matches all), `token` /
//! `X-Consul-Token` / `Authorization: Bearer`, `pretty`, and on the list
//! endpoints `index` + `wait` (Go durations such as `10s`, `120000ms`, `5m`;
//! default 5m, capped at 10m, plus a random jitter of up to `wait/16` unless
//! [`Options::jitter`] is off). Unknown paths answer 404, methods other than
//! GET 405.
//!
//! # Indexes
//!
//! One Raft-like index is bumped by each catalog mutation that changes
//! something (re-registering an identical service or setting a check to the
//! status it already has is a no-op, as in Consul). What a query reports as
//! `X-Consul-Index`, and what a blocking query waits on, is Consul's
//! per-query index: for `health/service/<name>` and `catalog/service/<name>`
//! the last index touching that service (its instances, their checks, the
//! node-level checks and node records of the nodes hosting it), or, for a
//! service that does not exist, the index at which the last service
//! disappeared; for `catalog/services` the services table's index (plus the
//! nodes table's with `node-meta`); for `health/state` the checks table's
//! (plus nodes with `node-meta`). Never 0. A blocking query returns as soon
//! as its index exceeds `index`, else after the wait with the same index.
//!
//! # Filter language (subset of go-bexpr as used by Consul)
//!
//! - `Sel == V`, `Sel != V`, `V in Sel`, `V not in Sel`, `Sel contains V`,
//!   `Sel not contains V`, `Sel matches "re"`, `Sel not matches "re"`,
//!   `Sel is empty`, `Sel is not empty`; `and`, `or`, `not`, parentheses;
//!   precedence `not` > `and` > `or`.
//! - Values: `"double quoted"` (ends at the first `"`, as bexpr's grammar
//!   has it, then Go's `strconv.Unquote` escapes: `\"` cannot appear
//!   inside), `` `raw` ``, numbers, `true` / `false`, or a bare word (taken
//!   literally, as bexpr does).
//! - Selectors: dotted names, map keys also as `Meta["key"]`. They are checked
//!   against the endpoint's selector list (below); an unknown selector or a
//!   syntax error answers 400 with `Failed to create boolean expression
//!   evaluator: ...`.
//! - Semantics: `in`/`contains` test membership in lists, key presence in
//!   maps, substrings in strings; a missing map key makes `==`, `in`,
//!   `contains`, `matches`, `is not empty` false and their negations true;
//!   a selector crossing a list of objects (`Checks.Status`) has bexpr's ANY
//!   semantics (true if the match holds for any element).
//! - Health selectors: `Node.{ID,Node,Address,Datacenter,TaggedAddresses(.k),Meta(.k)}`,
//!   `Service.{ID,Service,Kind,Tags,Address,TaggedAddresses(.k(.Address|.Port)),Meta(.k),Port,
//!   Weights.Passing,Weights.Warning,EnableTagOverride}`, `Checks(.{Node,CheckID,Name,Status,
//!   Notes,Output,ServiceID,ServiceName,ServiceTags,Type})`.
//! - Catalog selectors: `ID, Node, Address, Datacenter, TaggedAddresses(.k), NodeMeta(.k),
//!   ServiceKind, ServiceID, ServiceName, ServiceTags, ServiceAddress,
//!   ServiceTaggedAddresses(.k(.Address|.Port)), ServiceWeights.{Passing,Warning},
//!   ServiceMeta(.k), ServicePort, ServiceEnableTagOverride`.
//! - Health-state selectors: `Node, CheckID, Name, Status, Notes, Output, ServiceID,
//!   ServiceName, ServiceTags, Type`.
//!
//! # Not modelled
//!
//! Other datacenters (only the fake's own exists), `near`, `peer`,
//! `merge-central-config`, the streaming backend, Connect/proxies, the
//! `consul` service real servers register (register it yourself if a test
//! needs it), `serfHealth` (add it with [`FakeConsul::set_check_status`]),
//! per-namespace indexes.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Map, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{oneshot, watch};

/// The body go-connlimit (Consul's `limits.http_max_conns_per_client`)
/// writes to a client over its limit.
pub const TOO_MANY_CONNS: &str =
    "Your IP is issuing too many concurrent connections, please rate limit your calls";

const DEFAULT_WAIT: Duration = Duration::from_secs(5 * 60);
const MAX_WAIT: Duration = Duration::from_secs(10 * 60);

/// How the fake agent behaves.
#[derive(Clone, Debug)]
pub struct Options {
    /// The datacenter it is in (`dc1`).
    pub datacenter: String,
    /// Its node name (`fake-agent`).
    pub node_name: String,
    /// `limits.http_max_conns_per_client` (200); 0 = unlimited.
    pub max_conns_per_client: usize,
    /// Add Consul's random `wait/16` jitter to blocking queries (true).
    pub jitter: bool,
    /// When set, ACLs are on with default-deny: this token sees everything,
    /// no token sees nothing (lists empty, `X-Consul-Results-Filtered-By-ACLs`),
    /// any other token gets `403 ACL not found`.
    pub acl_token: Option<String>,
    /// A prefix (e.g. `/consul`) in front of every path, as behind a proxy
    /// (Prometheus's `path_prefix`). Empty by default.
    pub path_prefix: String,
    /// Encode empty tags/meta/tagged addresses as `null`, as Go does for nil
    /// slices and maps of records registered without them (false).
    pub null_empty_collections: bool,
    /// Serve HTTPS instead of HTTP (None).
    pub tls: Option<TlsFiles>,
}

/// The agent's TLS settings (`tls.https` in Consul's config), as PEM.
#[derive(Clone, Debug, Default)]
pub struct TlsFiles {
    /// Certificate chain.
    pub cert: Vec<u8>,
    /// Its private key.
    pub key: Vec<u8>,
    /// When set, client certificates signed by this CA are required
    /// (`verify_incoming`).
    pub client_ca: Option<Vec<u8>>,
}

impl TlsFiles {
    fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&self.cert)
            .collect::<Result<_, _>>()
            .expect("server certificate");
        let key = PrivateKeyDer::from_pem_slice(&self.key).expect("server key");
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("TLS versions");
        let builder = match &self.client_ca {
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                for cert in CertificateDer::pem_slice_iter(ca) {
                    roots.add(cert.expect("client CA")).expect("client CA");
                }
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                )
                .build()
                .expect("client verifier");
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let config = builder
            .with_single_cert(chain, key)
            .expect("server TLS config");
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    }
}

impl Default for Options {
    fn default() -> Self {
        Options {
            datacenter: "dc1".into(),
            node_name: "fake-agent".into(),
            max_conns_per_client: 200,
            jitter: true,
            acl_token: None,
            path_prefix: String::new(),
            null_empty_collections: false,
            tls: None,
        }
    }
}

/// A catalog node.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Node {
    pub name: String,
    pub address: String,
    /// Empty means the fake's datacenter.
    pub datacenter: String,
    pub tagged_addresses: BTreeMap<String, String>,
    pub meta: BTreeMap<String, String>,
}

impl Node {
    pub fn new(name: &str, address: &str) -> Node {
        Node {
            name: name.into(),
            address: address.into(),
            ..Node::default()
        }
    }
    pub fn meta(mut self, k: &str, v: &str) -> Node {
        self.meta.insert(k.into(), v.into());
        self
    }
    pub fn tagged_address(mut self, k: &str, v: &str) -> Node {
        self.tagged_addresses.insert(k.into(), v.into());
        self
    }
}

/// A service instance registered on a node.
#[derive(Clone, Debug, PartialEq)]
pub struct ServiceInstance {
    /// The node it runs on; registering on an unknown node creates that node
    /// with address `127.0.0.1`.
    pub node: String,
    /// Service ID (defaults to the service name).
    pub id: String,
    pub service: String,
    pub tags: Vec<String>,
    /// Empty means "use the node's address" (clients do the fallback).
    pub address: String,
    pub port: u16,
    pub meta: BTreeMap<String, String>,
    /// Service tagged addresses: name → (address, port).
    pub tagged_addresses: BTreeMap<String, (String, u16)>,
    /// (Passing, Warning), Consul's default (1, 1).
    pub weights: (i64, i64),
    pub enable_tag_override: bool,
    /// Consul Enterprise namespace/partition; `None` = not emitted, and
    /// treated as `default` when querying.
    pub namespace: Option<String>,
    pub partition: Option<String>,
}

impl ServiceInstance {
    pub fn new(node: &str, service: &str, port: u16) -> ServiceInstance {
        ServiceInstance {
            node: node.into(),
            id: service.into(),
            service: service.into(),
            tags: Vec::new(),
            address: String::new(),
            port,
            meta: BTreeMap::new(),
            tagged_addresses: BTreeMap::new(),
            weights: (1, 1),
            enable_tag_override: false,
            namespace: None,
            partition: None,
        }
    }
    pub fn id(mut self, id: &str) -> Self {
        self.id = id.into();
        self
    }
    pub fn tags(mut self, tags: &[&str]) -> Self {
        self.tags = tags.iter().map(|t| t.to_string()).collect();
        self
    }
    pub fn address(mut self, a: &str) -> Self {
        self.address = a.into();
        self
    }
    pub fn meta(mut self, k: &str, v: &str) -> Self {
        self.meta.insert(k.into(), v.into());
        self
    }
    pub fn tagged_address(mut self, k: &str, addr: &str, port: u16) -> Self {
        self.tagged_addresses.insert(k.into(), (addr.into(), port));
        self
    }
    pub fn namespace(mut self, ns: &str) -> Self {
        self.namespace = Some(ns.into());
        self
    }
    pub fn partition(mut self, p: &str) -> Self {
        self.partition = Some(p.into());
        self
    }
}

/// A fault the fake injects into requests whose path starts with a prefix.
#[derive(Clone, Debug, PartialEq)]
pub enum Fault {
    /// `500 Internal Server Error`.
    Status500,
    /// Accept the request and never answer (until the fault is cleared or
    /// the fake dropped).
    Hang,
    /// `200` with the usual headers and a body that is not JSON.
    Garbage,
    /// `429 Too Many Requests` with `Retry-After: <secs>`.
    TooManyRequests { retry_after_secs: u64 },
}

/// Counters, for tests and benches.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// HTTP requests seen (not counting connections refused with 429).
    pub requests: u64,
    /// Requests per endpoint: `agent/self`, `catalog/services`,
    /// `catalog/service`, `health/service`, `health/state`, `other`.
    pub by_endpoint: BTreeMap<String, u64>,
    /// Bytes of JSON answer bodies per endpoint (same keys; error bodies
    /// not counted).
    pub bytes_by_endpoint: BTreeMap<String, u64>,
    pub open_connections: usize,
    pub peak_connections: usize,
    /// Connections refused by the per-client limit.
    pub rejected_connections: u64,
    /// Blocking queries currently waiting.
    pub blocking_in_flight: usize,
    pub peak_blocking: usize,
    /// TLS handshakes that failed.
    pub tls_failures: u64,
}

/// One request as received.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    pub method: String,
    /// Path (as sent, not decoded) and query string.
    pub path: String,
    pub query: String,
    /// Header names lower-cased.
    pub headers: BTreeMap<String, String>,
}

/// A running fake Consul agent; shuts down on drop.
pub struct FakeConsul {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

struct NodeRec {
    node: Node,
    id: String,
    create: u64,
    modify: u64,
}

struct SvcRec {
    inst: ServiceInstance,
    create: u64,
    modify: u64,
}

#[derive(Clone)]
struct CheckRec {
    node: String,
    check_id: String,
    name: String,
    status: String,
    service_id: String,
    create: u64,
    modify: u64,
}

#[derive(Default)]
struct Catalog {
    index: u64,
    nodes: BTreeMap<String, NodeRec>,
    services: BTreeMap<(String, String), SvcRec>,
    /// Service name → keys of `services`, as Consul's state store indexes
    /// instances by service name (a health query does not scan the catalog).
    by_name: HashMap<String, BTreeSet<(String, String)>>,
    checks: BTreeMap<(String, String), CheckRec>,
    /// (node, service ID) → IDs of its checks in `checks` (`""`: the node's
    /// own checks), as Consul's state store indexes checks by node and
    /// service: a health query does not scan every check of the node.
    checks_of: HashMap<(String, String), BTreeSet<String>>,
    service_index: HashMap<String, u64>,
    services_table: u64,
    nodes_table: u64,
    checks_table: u64,
    extinction: u64,
    index_shift: u64,
    restore_epoch: u64,
    faults: Vec<(String, Fault)>,
    /// The index of the write in progress, when several mutations form one
    /// Raft write (a registration carrying its check).
    txn: Option<u64>,
}

struct Shared {
    opts: Options,
    catalog: Mutex<Catalog>,
    changes: watch::Sender<u64>,
    requests: AtomicU64,
    by_endpoint: Mutex<BTreeMap<String, u64>>,
    bytes_by_endpoint: Mutex<BTreeMap<String, u64>>,
    log: Mutex<Vec<RecordedRequest>>,
    conns_per_ip: Mutex<HashMap<IpAddr, usize>>,
    open: AtomicUsize,
    peak: AtomicUsize,
    rejected: AtomicU64,
    blocking: AtomicUsize,
    peak_blocking: AtomicUsize,
    /// TLS handshakes that failed (bad or missing client certificate...).
    tls_failures: AtomicU64,
}

const LOG_LIMIT: usize = 100_000;

impl Shared {
    fn notify(&self) {
        self.changes.send_modify(|g| *g += 1);
    }
    fn mutate<R>(&self, f: impl FnOnce(&mut Catalog) -> R) -> R {
        let r = f(&mut self.catalog.lock().unwrap());
        self.notify();
        r
    }
}

fn node_id(name: &str) -> String {
    // Deterministic UUID-shaped ID (FNV-1a, twice).
    let mut h: u64 = 0xcbf29ce484222325;
    for b in name.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x100000001b3);
    }
    let h2 = h.rotate_left(29).wrapping_mul(0x9e3779b97f4a7c15);
    let s = format!("{h:016x}{h2:016x}");
    format!(
        "{}-{}-{}-{}-{}",
        &s[0..8],
        &s[8..12],
        &s[12..16],
        &s[16..20],
        &s[20..32]
    )
}

impl Catalog {
    fn bump(&mut self) -> u64 {
        if let Some(idx) = self.txn {
            return idx;
        }
        self.index += 1;
        self.index
    }

    fn touch_services_on_node(&mut self, node: &str, idx: u64) {
        let names: Vec<String> = self
            .services
            .range((node.to_string(), String::new())..)
            .take_while(|((n, _), _)| n == node)
            .map(|(_, s)| s.inst.service.clone())
            .collect();
        for n in names {
            self.service_index.insert(n, idx);
        }
    }

    fn service_exists(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    fn insert_service(&mut self, key: (String, String), rec: SvcRec) {
        self.by_name
            .entry(rec.inst.service.clone())
            .or_default()
            .insert(key.clone());
        self.services.insert(key, rec);
    }

    fn remove_service(&mut self, key: &(String, String)) -> Option<SvcRec> {
        let rec = self.services.remove(key)?;
        if let Some(keys) = self.by_name.get_mut(&rec.inst.service) {
            keys.remove(key);
            if keys.is_empty() {
                self.by_name.remove(&rec.inst.service);
            }
        }
        Some(rec)
    }

    fn forget_service_if_gone(&mut self, name: &str, idx: u64) {
        if !self.service_exists(name) {
            self.service_index.remove(name);
            self.extinction = idx;
        } else {
            self.service_index.insert(name.to_string(), idx);
        }
    }

    fn ensure_node(&mut self, name: &str, idx: u64) {
        if !self.nodes.contains_key(name) {
            self.nodes.insert(
                name.to_string(),
                NodeRec {
                    node: Node::new(name, "127.0.0.1"),
                    id: node_id(name),
                    create: idx,
                    modify: idx,
                },
            );
            self.nodes_table = idx;
        }
    }

    fn register(&mut self, mut inst: ServiceInstance) -> bool {
        if inst.id.is_empty() {
            inst.id = inst.service.clone();
        }
        let key = (inst.node.clone(), inst.id.clone());
        if self.nodes.contains_key(&inst.node)
            && self.services.get(&key).map(|s| &s.inst) == Some(&inst)
        {
            return false;
        }
        let idx = self.bump();
        self.ensure_node(&inst.node, idx);
        let create = match self.services.get(&key) {
            Some(old) => {
                let old_name = old.inst.service.clone();
                let create = old.create;
                if old_name != inst.service {
                    self.remove_service(&key);
                    self.forget_service_if_gone(&old_name, idx);
                }
                create
            }
            None => idx,
        };
        self.service_index.insert(inst.service.clone(), idx);
        self.services_table = idx;
        self.insert_service(
            key,
            SvcRec {
                inst,
                create,
                modify: idx,
            },
        );
        true
    }

    fn deregister(&mut self, node: &str, id: &str) -> bool {
        let key = (node.to_string(), id.to_string());
        let Some(old) = self.services.get(&key) else {
            return false;
        };
        let name = old.inst.service.clone();
        let idx = self.bump();
        self.remove_service(&key);
        let before = self.checks.len();
        self.checks
            .retain(|(n, _), c| !(n == node && c.service_id == id));
        self.checks_of.remove(&key);
        if self.checks.len() != before {
            self.checks_table = idx;
        }
        self.services_table = idx;
        self.forget_service_if_gone(&name, idx);
        true
    }

    fn set_node(&mut self, node: Node) -> bool {
        if let Some(old) = self.nodes.get(&node.name) {
            if old.node == node {
                return false;
            }
        }
        let idx = self.bump();
        let name = node.name.clone();
        let create = self.nodes.get(&name).map_or(idx, |n| n.create);
        self.nodes.insert(
            name.clone(),
            NodeRec {
                node,
                id: node_id(&name),
                create,
                modify: idx,
            },
        );
        self.nodes_table = idx;
        self.touch_services_on_node(&name, idx);
        true
    }

    fn deregister_node(&mut self, name: &str) -> bool {
        if !self.nodes.contains_key(name) {
            return false;
        }
        let idx = self.bump();
        self.nodes.remove(name);
        self.nodes_table = idx;
        let gone: Vec<(String, String)> = self
            .services
            .keys()
            .filter(|(n, _)| n == name)
            .cloned()
            .collect();
        let mut names = BTreeSet::new();
        for k in gone {
            if let Some(s) = self.remove_service(&k) {
                names.insert(s.inst.service);
            }
            self.services_table = idx;
        }
        for n in names {
            self.forget_service_if_gone(&n, idx);
        }
        let before = self.checks.len();
        self.checks.retain(|(n, _), _| n != name);
        self.checks_of.retain(|(n, _), _| n != name);
        if before != self.checks.len() {
            self.checks_table = idx;
        }
        true
    }

    fn touch_for_check(&mut self, node: &str, service_id: &str, idx: u64) {
        self.checks_table = idx;
        if service_id.is_empty() {
            self.touch_services_on_node(node, idx);
        } else if let Some(s) = self
            .services
            .get(&(node.to_string(), service_id.to_string()))
        {
            let name = s.inst.service.clone();
            self.service_index.insert(name, idx);
        }
    }

    fn set_check(&mut self, node: &str, check_id: &str, status: &str) -> bool {
        let key = (node.to_string(), check_id.to_string());
        if let Some(c) = self.checks.get(&key) {
            if c.status == status {
                return false;
            }
            let service_id = c.service_id.clone();
            let idx = self.bump();
            let c = self.checks.get_mut(&key).unwrap();
            c.status = status.to_string();
            c.modify = idx;
            self.touch_for_check(node, &service_id, idx);
            return true;
        }
        assert!(
            self.nodes.contains_key(node),
            "fake consul: check {check_id:?} on unknown node {node:?}"
        );
        let (service_id, name) = if check_id == "_node_maintenance" {
            (String::new(), "Node Maintenance Mode".to_string())
        } else if let Some(sid) = check_id.strip_prefix("_service_maintenance:") {
            (sid.to_string(), "Service Maintenance Mode".to_string())
        } else if let Some(sid) = check_id.strip_prefix("service:") {
            let sid = sid.split(':').next().unwrap_or(sid).to_string();
            let svc = self
                .services
                .get(&(node.to_string(), sid.clone()))
                .map(|s| s.inst.service.clone())
                .unwrap_or_default();
            (sid, format!("Service '{svc}' check"))
        } else if check_id == "serfHealth" {
            (String::new(), "Serf Health Status".to_string())
        } else {
            (String::new(), check_id.to_string())
        };
        if !service_id.is_empty() {
            assert!(
                self.services.contains_key(&(node.to_string(), service_id.clone())),
                "fake consul: check {check_id:?} for unknown service {service_id:?} on {node:?} (Consul: Missing service registration)"
            );
        }
        let idx = self.bump();
        self.checks_of
            .entry((node.to_string(), service_id.clone()))
            .or_default()
            .insert(check_id.to_string());
        self.checks.insert(
            key,
            CheckRec {
                node: node.to_string(),
                check_id: check_id.to_string(),
                name,
                status: status.to_string(),
                service_id: service_id.clone(),
                create: idx,
                modify: idx,
            },
        );
        self.touch_for_check(node, &service_id, idx);
        true
    }

    fn remove_check(&mut self, node: &str, check_id: &str) -> bool {
        let key = (node.to_string(), check_id.to_string());
        let Some(c) = self.checks.remove(&key) else {
            return false;
        };
        if let Some(ids) = self
            .checks_of
            .get_mut(&(node.to_string(), c.service_id.clone()))
        {
            ids.remove(check_id);
        }
        let idx = self.bump();
        self.touch_for_check(node, &c.service_id, idx);
        true
    }

    fn reported(&self, idx: u64) -> u64 {
        idx.saturating_sub(self.index_shift).max(1)
    }
}

impl FakeConsul {
    /// Starts a fake agent with default [`Options`].
    pub fn start() -> FakeConsul {
        FakeConsul::start_with(Options::default())
    }

    /// Starts a fake agent.
    pub fn start_with(opts: Options) -> FakeConsul {
        FakeConsul::start_on(0, opts)
    }

    /// Starts a fake agent on loopback port `port` (0: any free one), e.g.
    /// to bring one back where a stopped one listened.
    pub fn start_on(port: u16, opts: Options) -> FakeConsul {
        let (changes, _) = watch::channel(0u64);
        let shared = Arc::new(Shared {
            opts,
            catalog: Mutex::new(Catalog::default()),
            changes,
            requests: AtomicU64::new(0),
            by_endpoint: Mutex::new(BTreeMap::new()),
            bytes_by_endpoint: Mutex::new(BTreeMap::new()),
            log: Mutex::new(Vec::new()),
            conns_per_ip: Mutex::new(HashMap::new()),
            open: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            rejected: AtomicU64::new(0),
            blocking: AtomicUsize::new(0),
            peak_blocking: AtomicUsize::new(0),
            tls_failures: AtomicU64::new(0),
        });
        let std_listener =
            std::net::TcpListener::bind(("127.0.0.1", port)).expect("bind fake consul");
        std_listener.set_nonblocking(true).expect("nonblocking");
        let addr = std_listener.local_addr().expect("local addr");
        let (tx, rx) = oneshot::channel();
        let sh = shared.clone();
        let thread = std::thread::Builder::new()
            .name("fake-consul".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("runtime");
                rt.block_on(async move {
                    let listener =
                        tokio::net::TcpListener::from_std(std_listener).expect("listener");
                    tokio::select! {
                        _ = rx => {}
                        _ = accept_loop(listener, sh) => {}
                    }
                });
                rt.shutdown_timeout(Duration::from_millis(200));
            })
            .expect("spawn fake consul");
        FakeConsul {
            addr,
            shared,
            shutdown: Some(tx),
            thread: Some(thread),
        }
    }

    /// Where it listens (always loopback).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its datacenter.
    pub fn datacenter(&self) -> &str {
        &self.shared.opts.datacenter
    }

    /// The current global (Raft) index, as reported (after any index reset).
    pub fn index(&self) -> u64 {
        let c = self.shared.catalog.lock().unwrap();
        c.reported(c.index)
    }

    /// What `X-Consul-Index` `health/service/<name>` would report now.
    pub fn service_index(&self, name: &str) -> u64 {
        let c = self.shared.catalog.lock().unwrap();
        let idx = c.service_index.get(name).copied().unwrap_or(c.extinction);
        c.reported(idx)
    }

    /// Registers (or replaces) a service instance; creates its node if
    /// unknown. Returns whether anything changed.
    pub fn register(&self, inst: ServiceInstance) -> bool {
        self.shared.mutate(|c| c.register(inst))
    }

    /// Registers a service instance with its `service:<id>` check in one
    /// write (one index), as `PUT /v1/catalog/register` with a `Check` does,
    /// and as an agent's anti-entropy sync sends a service with its checks.
    pub fn register_with_check(&self, inst: ServiceInstance, status: &str) -> bool {
        assert!(
            matches!(status, "passing" | "warning" | "critical"),
            "fake consul: invalid check status {status:?}"
        );
        let node = inst.node.clone();
        let id = if inst.id.is_empty() {
            inst.service.clone()
        } else {
            inst.id.clone()
        };
        self.shared.mutate(|c| {
            let registered = c.register(inst);
            if registered {
                c.txn = Some(c.index);
            }
            let checked = c.set_check(&node, &format!("service:{id}"), status);
            c.txn = None;
            registered || checked
        })
    }

    /// Deregisters a service instance and its checks.
    pub fn deregister(&self, node: &str, service_id: &str) -> bool {
        self.shared.mutate(|c| c.deregister(node, service_id))
    }

    /// Creates or updates a node (address, tagged addresses, meta).
    pub fn set_node(&self, node: Node) -> bool {
        self.shared.mutate(|c| c.set_node(node))
    }

    /// Removes a node with its services and checks.
    pub fn deregister_node(&self, node: &str) -> bool {
        self.shared.mutate(|c| c.deregister_node(node))
    }

    /// Creates or updates a check. `status` is `passing`, `warning` or
    /// `critical`. The check ID decides what it is attached to:
    /// `service:<id>` and `_service_maintenance:<id>` attach to service `<id>`
    /// on that node, anything else (`serfHealth`, `_node_maintenance`, ...)
    /// is a node-level check. Maintenance is Consul's way: a critical check
    /// named `_node_maintenance` / `_service_maintenance:<id>` (see
    /// [`FakeConsul::set_node_maintenance`]).
    pub fn set_check_status(&self, node: &str, check_id: &str, status: &str) -> bool {
        assert!(
            matches!(status, "passing" | "warning" | "critical"),
            "fake consul: invalid check status {status:?}"
        );
        self.shared.mutate(|c| c.set_check(node, check_id, status))
    }

    /// Removes a check.
    pub fn remove_check(&self, node: &str, check_id: &str) -> bool {
        self.shared.mutate(|c| c.remove_check(node, check_id))
    }

    /// `consul maint -enable|-disable` for a node.
    pub fn set_node_maintenance(&self, node: &str, on: bool) -> bool {
        if on {
            self.set_check_status(node, "_node_maintenance", "critical")
        } else {
            self.remove_check(node, "_node_maintenance")
        }
    }

    /// `consul maint -enable|-disable -service <id>`.
    pub fn set_service_maintenance(&self, node: &str, service_id: &str, on: bool) -> bool {
        let id = format!("_service_maintenance:{service_id}");
        if on {
            self.set_check_status(node, &id, "critical")
        } else {
            self.remove_check(node, &id)
        }
    }

    /// Injects `fault` into every request whose path starts with
    /// `path_prefix` (`""` = all). Faults accumulate until
    /// [`FakeConsul::clear_faults`]; the first matching one wins.
    pub fn inject(&self, path_prefix: &str, fault: Fault) {
        self.shared
            .mutate(|c| c.faults.push((path_prefix.to_string(), fault)));
    }

    /// Simulates a snapshot restore: from now on every reported index is
    /// `lower_by` lower (at least 1), and blocking queries in flight return
    /// at once with the lower index. Undone by [`FakeConsul::clear_faults`]
    /// (indexes then jump back up).
    pub fn reset_index(&self, lower_by: u64) {
        self.shared.mutate(|c| {
            c.index_shift = lower_by;
            c.restore_epoch += 1;
        });
    }

    /// Clears every fault, including an index reset; hung requests are then
    /// answered normally.
    pub fn clear_faults(&self) {
        self.shared.mutate(|c| {
            c.faults.clear();
            c.index_shift = 0;
        });
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        let s = &self.shared;
        Stats {
            requests: s.requests.load(Ordering::SeqCst),
            by_endpoint: s.by_endpoint.lock().unwrap().clone(),
            bytes_by_endpoint: s.bytes_by_endpoint.lock().unwrap().clone(),
            open_connections: s.open.load(Ordering::SeqCst),
            peak_connections: s.peak.load(Ordering::SeqCst),
            rejected_connections: s.rejected.load(Ordering::SeqCst),
            blocking_in_flight: s.blocking.load(Ordering::SeqCst),
            peak_blocking: s.peak_blocking.load(Ordering::SeqCst),
            tls_failures: s.tls_failures.load(Ordering::SeqCst),
        }
    }

    /// Resets request counts, peaks and the request log (not the gauges).
    pub fn reset_stats(&self) {
        let s = &self.shared;
        s.requests.store(0, Ordering::SeqCst);
        s.by_endpoint.lock().unwrap().clear();
        s.bytes_by_endpoint.lock().unwrap().clear();
        s.log.lock().unwrap().clear();
        s.rejected.store(0, Ordering::SeqCst);
        s.peak
            .store(s.open.load(Ordering::SeqCst), Ordering::SeqCst);
        s.peak_blocking
            .store(s.blocking.load(Ordering::SeqCst), Ordering::SeqCst);
    }

    /// The requests received so far (the last 100 000).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.log.lock().unwrap().clone()
    }
}

impl Drop for FakeConsul {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ---------------------------------------------------------------------------
// Server

struct ConnGuard {
    shared: Arc<Shared>,
    ip: IpAddr,
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

struct BlockingGuard(Arc<Shared>);

impl Drop for BlockingGuard {
    fn drop(&mut self) {
        self.0.blocking.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn accept_loop(listener: tokio::net::TcpListener, shared: Arc<Shared>) {
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
async fn reject(mut stream: tokio::net::TcpStream) {
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

type Resp = Response<Full<Bytes>>;

fn text(status: StatusCode, body: &str) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut()
        .insert("content-type", "text/plain; charset=utf-8".parse().unwrap());
    r
}

#[derive(Clone, Debug)]
enum Route {
    AgentSelf,
    CatalogServices,
    CatalogService(String),
    HealthService(String),
    HealthState(String),
}

impl Route {
    fn endpoint(&self) -> &'static str {
        match self {
            Route::AgentSelf => "agent/self",
            Route::CatalogServices => "catalog/services",
            Route::CatalogService(_) => "catalog/service",
            Route::HealthService(_) => "health/service",
            Route::HealthState(_) => "health/state",
        }
    }
}

fn decode(s: &str, plus_is_space: bool) -> String {
    let s = if plus_is_space {
        s.replace('+', " ")
    } else {
        s.to_string()
    };
    percent_encoding::percent_decode_str(&s)
        .decode_utf8_lossy()
        .into_owned()
}

fn route(path: &str) -> Option<Route> {
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
struct Query {
    params: Vec<(String, String)>,
    tags: Vec<String>,
    node_meta: Vec<(String, String)>,
    passing: bool,
    filter: Option<Expr>,
    ns: String,
    partition: String,
    index: u64,
    wait: Option<Duration>,
    stale: bool,
    consistent: bool,
    pretty: bool,
}

impl Query {
    fn get(&self, k: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    }
    fn has(&self, k: &str) -> bool {
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

fn parse_query(
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

enum Acl {
    All,
    Anonymous,
}

fn acl(shared: &Shared, q: &Query, req: &Request<Incoming>) -> Result<Acl, Box<Resp>> {
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

fn record(shared: &Shared, req: &Request<Incoming>, endpoint: &str) {
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

fn matching_fault(shared: &Shared, path: &str) -> Option<Fault> {
    let c = shared.catalog.lock().unwrap();
    c.faults
        .iter()
        .find(|(p, _)| path.starts_with(p.as_str()))
        .map(|(_, f)| f.clone())
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Result<Resp, Infallible> {
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

fn json_response(
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

fn query_index(c: &Catalog, route: &Route, q: &Query) -> u64 {
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

fn agent_self(o: &Options) -> Value {
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

fn str_map(m: &BTreeMap<String, String>, nulls: bool) -> Value {
    if m.is_empty() && nulls {
        return Value::Null;
    }
    Value::Object(m.iter().map(|(k, v)| (k.clone(), json!(v))).collect())
}

fn tags_json(t: &[String], nulls: bool) -> Value {
    if t.is_empty() && nulls {
        Value::Null
    } else {
        json!(t)
    }
}

fn svc_tagged(s: &ServiceInstance) -> Value {
    Value::Object(
        s.tagged_addresses
            .iter()
            .map(|(k, (a, p))| (k.clone(), json!({"Address": a, "Port": p})))
            .collect(),
    )
}

fn dc_of<'a>(n: &'a Node, o: &'a Options) -> &'a str {
    if n.datacenter.is_empty() {
        &o.datacenter
    } else {
        &n.datacenter
    }
}

fn node_json(n: &NodeRec, o: &Options) -> Value {
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
fn scope_and_indexes(m: &mut Map<String, Value>, s: &SvcRec) {
    if let Some(ns) = &s.inst.namespace {
        m.insert("Namespace".into(), json!(ns));
    }
    if let Some(p) = &s.inst.partition {
        m.insert("Partition".into(), json!(p));
    }
    m.insert("CreateIndex".into(), json!(s.create));
    m.insert("ModifyIndex".into(), json!(s.modify));
}

fn service_json(s: &SvcRec, o: &Options) -> Value {
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

fn check_json(c: &Catalog, ch: &CheckRec, o: &Options) -> Value {
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
fn service_node_json(n: &NodeRec, s: &SvcRec, o: &Options) -> Value {
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

fn in_scope(i: &ServiceInstance, q: &Query) -> bool {
    let ns = i.namespace.as_deref().unwrap_or("default");
    let part = i.partition.as_deref().unwrap_or("default");
    (q.ns == "*" || q.ns == ns) && (q.partition == "*" || q.partition == part)
}

fn meta_ok(n: &Node, q: &Query) -> bool {
    q.node_meta
        .iter()
        .all(|(k, v)| n.meta.get(k).is_some_and(|x| x == v))
}

fn tags_ok(i: &ServiceInstance, q: &Query) -> bool {
    q.tags.iter().all(|want| {
        let want = want.to_lowercase();
        i.tags.iter().any(|t| t.to_lowercase() == want)
    })
}

fn filter_ok(q: &Query, v: &Value) -> bool {
    q.filter.as_ref().is_none_or(|f| f.eval(v))
}

/// Instances of `name` in scope, ordered by node then service ID.
fn instances<'a>(c: &'a Catalog, q: &Query, name: &str) -> Vec<(&'a NodeRec, &'a SvcRec)> {
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

fn health_service(c: &Catalog, o: &Options, q: &Query, name: &str) -> Vec<Value> {
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

fn catalog_service(c: &Catalog, o: &Options, q: &Query, name: &str) -> Vec<Value> {
    instances(c, q, name)
        .into_iter()
        .map(|(n, s)| service_node_json(n, s, o))
        .filter(|v| filter_ok(q, v))
        .collect()
}

fn catalog_services(c: &Catalog, o: &Options, q: &Query) -> Value {
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

fn health_state(c: &Catalog, o: &Options, q: &Query, state: &str) -> Vec<Value> {
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

// ---------------------------------------------------------------------------
// Filter expressions (go-bexpr subset)

const HEALTH_SELECTORS: &[&str] = &[
    "Node",
    "Node.ID",
    "Node.Node",
    "Node.Address",
    "Node.Datacenter",
    "Node.TaggedAddresses",
    "Node.TaggedAddresses.*",
    "Node.Meta",
    "Node.Meta.*",
    "Service.ID",
    "Service.Service",
    "Service.Kind",
    "Service.Tags",
    "Service.Address",
    "Service.TaggedAddresses",
    "Service.TaggedAddresses.*",
    "Service.TaggedAddresses.*.Address",
    "Service.TaggedAddresses.*.Port",
    "Service.Meta",
    "Service.Meta.*",
    "Service.Port",
    "Service.Weights.Passing",
    "Service.Weights.Warning",
    "Service.EnableTagOverride",
    "Checks",
    "Checks.Node",
    "Checks.CheckID",
    "Checks.Name",
    "Checks.Status",
    "Checks.Notes",
    "Checks.Output",
    "Checks.ServiceID",
    "Checks.ServiceName",
    "Checks.ServiceTags",
    "Checks.Type",
];

const CATALOG_SELECTORS: &[&str] = &[
    "ID",
    "Node",
    "Address",
    "Datacenter",
    "TaggedAddresses",
    "TaggedAddresses.*",
    "NodeMeta",
    "NodeMeta.*",
    "ServiceKind",
    "ServiceID",
    "ServiceName",
    "ServiceTags",
    "ServiceAddress",
    "ServiceTaggedAddresses",
    "ServiceTaggedAddresses.*",
    "ServiceTaggedAddresses.*.Address",
    "ServiceTaggedAddresses.*.Port",
    "ServiceWeights.Passing",
    "ServiceWeights.Warning",
    "ServiceMeta",
    "ServiceMeta.*",
    "ServicePort",
    "ServiceEnableTagOverride",
];

const CHECK_SELECTORS: &[&str] = &[
    "Node",
    "CheckID",
    "Name",
    "Status",
    "Notes",
    "Output",
    "ServiceID",
    "ServiceName",
    "ServiceTags",
    "Type",
];

#[derive(Clone, Copy, Debug, PartialEq)]
enum Op {
    Eq,
    Ne,
    In,
    NotIn,
    Contains,
    NotContains,
    Matches,
    NotMatches,
    IsEmpty,
    IsNotEmpty,
}

impl Op {
    fn negated(self) -> bool {
        matches!(
            self,
            Op::Ne | Op::NotIn | Op::NotContains | Op::NotMatches | Op::IsEmpty
        )
    }
}

#[derive(Debug)]
enum Expr {
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    Match {
        sel: Vec<String>,
        op: Op,
        value: String,
        re: Option<regex::Regex>,
    },
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    LParen,
    RParen,
    EqEq,
    NotEq,
    Str(String),
    /// A number, or a (possibly dotted) bare word; keywords included.
    Word(Vec<String>),
}

fn tokenize(s: &str) -> Result<Vec<(usize, Tok)>, String> {
    let b: Vec<char> = s.chars().collect();
    let mut i = 0;
    let mut out = Vec::new();
    let err = |i: usize, m: &str| format!("1:{} ({}): {}", i + 1, i, m);
    while i < b.len() {
        let c = b[i];
        let start = i;
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        match c {
            '(' => {
                out.push((start, Tok::LParen));
                i += 1;
            }
            ')' => {
                out.push((start, Tok::RParen));
                i += 1;
            }
            '=' | '!' => {
                if b.get(i + 1) != Some(&'=') {
                    return Err(err(i, &format!("no match found, unexpected {c:?}")));
                }
                out.push((start, if c == '=' { Tok::EqEq } else { Tok::NotEq }));
                i += 2;
            }
            '"' => {
                let (v, n) =
                    quoted(&b[i..]).ok_or_else(|| err(i, "rule \"string\": invalid syntax"))?;
                out.push((start, Tok::Str(v)));
                i += n;
            }
            '`' => {
                let end = b[i + 1..]
                    .iter()
                    .position(|&c| c == '`')
                    .ok_or_else(|| err(i, "unterminated raw string literal"))?;
                // strconv.Unquote drops carriage returns from raw strings.
                let raw = b[i + 1..i + 1 + end].iter().filter(|&&c| c != '\r');
                out.push((start, Tok::Str(raw.collect())));
                i += end + 2;
            }
            c if c.is_ascii_digit() || c == '-' => {
                let mut j = i + 1;
                while j < b.len() && (b[j].is_ascii_digit() || b[j] == '.') {
                    j += 1;
                }
                let n: String = b[i..j].iter().collect();
                if n == "-" {
                    return Err(err(i, "no match found, unexpected '-'"));
                }
                out.push((start, Tok::Word(vec![n])));
                i = j;
            }
            c if c.is_ascii_alphabetic() || c == '_' => {
                let mut parts = Vec::new();
                loop {
                    let mut j = i;
                    while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == '_') {
                        j += 1;
                    }
                    if j == i {
                        return Err(err(i, "invalid selector"));
                    }
                    parts.push(b[i..j].iter().collect::<String>());
                    i = j;
                    // Map index forms: ["key"] (possibly repeated).
                    while b.get(i) == Some(&'[') {
                        let (key, n) = match b.get(i + 1) {
                            Some('"') => quoted(&b[i + 1..]).ok_or_else(|| err(i, "bad index"))?,
                            _ => return Err(err(i, "expected a quoted key after '['")),
                        };
                        if b.get(i + 1 + n) != Some(&']') {
                            return Err(err(i, "expected ']'"));
                        }
                        parts.push(key);
                        i += n + 2;
                    }
                    if b.get(i) == Some(&'.')
                        && b.get(i + 1)
                            .is_some_and(|c| c.is_ascii_alphabetic() || *c == '_')
                    {
                        i += 1;
                        continue;
                    }
                    break;
                }
                out.push((start, Tok::Word(parts)));
            }
            _ => return Err(err(i, &format!("no match found, unexpected {c:?}"))),
        }
    }
    Ok(out)
}

/// A Go double-quoted string at the start of `b`: (value, chars consumed).
/// A double-quoted literal at the start of `b`: (its value, chars used).
/// As go-bexpr's grammar (`'"' DoubleStringChar* '"'` with
/// `DoubleStringChar <- !'"' .`), the literal ends at the first `"`, even
/// after a backslash, and its text then goes through Go's
/// `strconv.Unquote`: Go escapes, no raw newline, `\'` refused. `None`:
/// unterminated or invalid.
fn quoted(b: &[char]) -> Option<(String, usize)> {
    let end = 1 + b.get(1..)?.iter().position(|&c| c == '"')?;
    Some((go_unquote(&b[1..end])?, end + 1))
}

/// The body of a double-quoted Go string literal, unquoted as
/// `strconv.Unquote` does. `\x` and octal escapes above 0x7f (raw bytes
/// in Go, possibly invalid UTF-8) are refused: the fake's strings are text.
fn go_unquote(b: &[char]) -> Option<String> {
    let mut v = String::new();
    let mut i = 0;
    let hex = |s: &[char]| -> Option<u32> {
        s.iter()
            .try_fold(0u32, |n, c| Some(n * 16 + c.to_digit(16)?))
    };
    while i < b.len() {
        let c = b[i];
        i += 1;
        if c == '\n' {
            return None;
        }
        if c != '\\' {
            v.push(c);
            continue;
        }
        let e = *b.get(i)?;
        i += 1;
        let ch = match e {
            'a' => '\u{7}',
            'b' => '\u{8}',
            'f' => '\u{c}',
            'n' => '\n',
            'r' => '\r',
            't' => '\t',
            'v' => '\u{b}',
            '\\' => '\\',
            'x' | 'u' | 'U' => {
                let n = match e {
                    'x' => 2,
                    'u' => 4,
                    _ => 8,
                };
                let code = hex(b.get(i..i + n)?)?;
                i += n;
                if e == 'x' && code > 0x7f {
                    return None;
                }
                char::from_u32(code)?
            }
            '0'..='7' => {
                let digits = b.get(i - 1..i + 2)?;
                if !digits.iter().all(|c| ('0'..='7').contains(c)) {
                    return None;
                }
                i += 2;
                let code = digits
                    .iter()
                    .fold(0u32, |n, c| n * 8 + c.to_digit(8).unwrap_or(0));
                if code > 0x7f {
                    return None;
                }
                char::from_u32(code)?
            }
            _ => return None,
        };
        v.push(ch);
    }
    Some(v)
}

struct Parser<'a> {
    toks: Vec<(usize, Tok)>,
    pos: usize,
    len: usize,
    selectors: &'a [&'a str],
}

fn is_kw(t: Option<&Tok>, kw: &str) -> bool {
    matches!(t, Some(Tok::Word(p)) if p.len() == 1 && p[0] == kw)
}

const KEYWORDS: &[&str] = &[
    "and", "or", "not", "in", "contains", "matches", "is", "empty",
];

impl Parser<'_> {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|(_, t)| t)
    }
    fn peek_at(&self, n: usize) -> Option<&Tok> {
        self.toks.get(self.pos + n).map(|(_, t)| t)
    }
    fn offset(&self) -> usize {
        self.toks.get(self.pos).map_or(self.len, |(o, _)| *o)
    }
    fn err(&self, m: &str) -> String {
        let o = self.offset();
        format!("1:{} ({}): {}", o + 1, o, m)
    }
    fn eat_kw(&mut self, kw: &str) -> bool {
        if is_kw(self.peek(), kw) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn or(&mut self) -> Result<Expr, String> {
        let mut e = self.and()?;
        while self.eat_kw("or") {
            e = Expr::Or(Box::new(e), Box::new(self.and()?));
        }
        Ok(e)
    }
    fn and(&mut self) -> Result<Expr, String> {
        let mut e = self.unary()?;
        while self.eat_kw("and") {
            e = Expr::And(Box::new(e), Box::new(self.unary()?));
        }
        Ok(e)
    }
    fn unary(&mut self) -> Result<Expr, String> {
        if self.eat_kw("not") {
            return Ok(Expr::Not(Box::new(self.unary()?)));
        }
        if self.peek() == Some(&Tok::LParen) {
            self.pos += 1;
            let e = self.or()?;
            if self.peek() != Some(&Tok::RParen) {
                return Err(self.err("no match found, expected \")\""));
            }
            self.pos += 1;
            return Ok(e);
        }
        self.matcher()
    }

    fn selector(&mut self) -> Result<Vec<String>, String> {
        match self.peek().cloned() {
            Some(Tok::Word(p)) if !(p.len() == 1 && KEYWORDS.contains(&p[0].as_str())) => {
                if !p[0].starts_with(|c: char| c.is_ascii_alphabetic()) {
                    return Err(self.err("no match found, expected selector"));
                }
                let ok = self.selectors.iter().any(|pat| {
                    let pat: Vec<&str> = pat.split('.').collect();
                    pat.len() == p.len() && pat.iter().zip(&p).all(|(a, b)| *a == "*" || a == b)
                });
                if !ok {
                    return Err(format!("Selector {:?} is not valid", p.join(".")));
                }
                self.pos += 1;
                Ok(p)
            }
            _ => Err(self.err("no match found, expected selector")),
        }
    }

    fn value(&mut self) -> Result<String, String> {
        match self.peek().cloned() {
            Some(Tok::Str(s)) => {
                self.pos += 1;
                Ok(s)
            }
            Some(Tok::Word(p)) if !(p.len() == 1 && KEYWORDS.contains(&p[0].as_str())) => {
                self.pos += 1;
                Ok(p.join("."))
            }
            _ => Err(self.err("no match found, expected value")),
        }
    }

    fn matcher(&mut self) -> Result<Expr, String> {
        // `Value in Selector` / `Value not in Selector`.
        let value_first = match self.peek() {
            Some(Tok::Str(_)) => true,
            Some(Tok::Word(_)) => {
                is_kw(self.peek_at(1), "in")
                    || (is_kw(self.peek_at(1), "not") && is_kw(self.peek_at(2), "in"))
            }
            _ => false,
        };
        if value_first {
            let value = self.value()?;
            let op = if self.eat_kw("in") {
                Op::In
            } else if self.eat_kw("not") && self.eat_kw("in") {
                Op::NotIn
            } else {
                return Err(self.err("no match found, expected \"in\" or \"not in\""));
            };
            let sel = self.selector()?;
            return Ok(Expr::Match {
                sel,
                op,
                value,
                re: None,
            });
        }
        let sel = self.selector()?;
        let op = match self.peek().cloned() {
            Some(Tok::EqEq) => {
                self.pos += 1;
                Op::Eq
            }
            Some(Tok::NotEq) => {
                self.pos += 1;
                Op::Ne
            }
            _ if self.eat_kw("contains") => Op::Contains,
            _ if self.eat_kw("matches") => Op::Matches,
            _ if self.eat_kw("is") => {
                let not = self.eat_kw("not");
                if !self.eat_kw("empty") {
                    return Err(self.err("no match found, expected \"empty\""));
                }
                if not {
                    Op::IsNotEmpty
                } else {
                    Op::IsEmpty
                }
            }
            _ if self.eat_kw("not") => {
                if self.eat_kw("contains") {
                    Op::NotContains
                } else if self.eat_kw("matches") {
                    Op::NotMatches
                } else {
                    return Err(self.err("no match found, expected \"contains\" or \"matches\""));
                }
            }
            _ => return Err(self.err("no match found, expected a match operator")),
        };
        let value = if matches!(op, Op::IsEmpty | Op::IsNotEmpty) {
            String::new()
        } else {
            self.value()?
        };
        let re = if matches!(op, Op::Matches | Op::NotMatches) {
            Some(
                regex::Regex::new(&value)
                    .map_err(|e| format!("Failed to compile regular expression {value:?}: {e}"))?,
            )
        } else {
            None
        };
        Ok(Expr::Match { sel, op, value, re })
    }
}

fn parse_filter(s: &str, selectors: &[&str]) -> Result<Expr, String> {
    let toks = tokenize(s)?;
    let mut p = Parser {
        toks,
        pos: 0,
        len: s.len(),
        selectors,
    };
    let e = p.or()?;
    if p.pos != p.toks.len() {
        return Err(p.err("no match found, expected \"and\", \"or\" or end of input"));
    }
    Ok(e)
}

impl Expr {
    fn eval(&self, v: &Value) -> bool {
        match self {
            Expr::And(a, b) => a.eval(v) && b.eval(v),
            Expr::Or(a, b) => a.eval(v) || b.eval(v),
            Expr::Not(a) => !a.eval(v),
            Expr::Match { sel, op, value, re } => eval_match(v, sel, *op, value, re.as_ref()),
        }
    }
}

fn eval_match(v: &Value, path: &[String], op: Op, lit: &str, re: Option<&regex::Regex>) -> bool {
    if path.is_empty() {
        return apply(v, op, lit, re);
    }
    match v {
        Value::Object(m) => match m.get(&path[0]) {
            Some(x) => eval_match(x, &path[1..], op, lit, re),
            None => op.negated(),
        },
        // A selector crossing a list of structs: ANY semantics.
        Value::Array(items) => items.iter().any(|x| eval_match(x, path, op, lit, re)),
        _ => op.negated(),
    }
}

fn scalar_eq(v: &Value, lit: &str) -> bool {
    match v {
        Value::String(s) => s == lit,
        Value::Number(n) => match (n.as_f64(), lit.parse::<f64>()) {
            (Some(a), Ok(b)) => a == b,
            _ => false,
        },
        Value::Bool(b) => lit.parse::<bool>().ok() == Some(*b),
        Value::Null => lit.is_empty(),
        _ => false,
    }
}

fn apply(v: &Value, op: Op, lit: &str, re: Option<&regex::Regex>) -> bool {
    let contains = |v: &Value| match v {
        Value::Array(a) => a.iter().any(|x| scalar_eq(x, lit)),
        Value::Object(m) => m.contains_key(lit),
        Value::String(s) => s.contains(lit),
        _ => false,
    };
    let empty = match v {
        Value::Array(a) => a.is_empty(),
        Value::Object(m) => m.is_empty(),
        Value::String(s) => s.is_empty(),
        Value::Null => true,
        _ => false,
    };
    let matches = |v: &Value| match (v, re) {
        (Value::String(s), Some(re)) => re.is_match(s),
        _ => false,
    };
    match op {
        Op::Eq => scalar_eq(v, lit),
        Op::Ne => !scalar_eq(v, lit),
        Op::In | Op::Contains => contains(v),
        Op::NotIn | Op::NotContains => !contains(v),
        Op::Matches => matches(v),
        Op::NotMatches => !matches(v),
        Op::IsEmpty => empty,
        Op::IsNotEmpty => !empty,
    }
}

// ---------------------------------------------------------------------------
// Tests of the fake itself, over real HTTP.

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::{poll_until, request, Response};
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::Instant;

    fn quiet() -> FakeConsul {
        FakeConsul::start_with(Options {
            jitter: false,
            ..Options::default()
        })
    }

    fn get(c: &FakeConsul, path: &str) -> Response {
        request(c.addr(), "GET", path, &[])
    }

    fn index_of(r: &Response) -> u64 {
        r.header("x-consul-index")
            .expect("X-Consul-Index")
            .parse()
            .expect("numeric index")
    }

    /// A GET in a background thread.
    fn spawn_get(c: &FakeConsul, path: &str) -> std::thread::JoinHandle<(Response, Duration)> {
        let addr = c.addr();
        let path = path.to_string();
        std::thread::spawn(move || {
            let t = Instant::now();
            let r = request(addr, "GET", &path, &[]);
            (r, t.elapsed())
        })
    }

    fn fleet(c: &FakeConsul) {
        c.set_node(
            Node::new("node-a", "127.0.0.1")
                .meta("rack", "r1")
                .tagged_address("lan", "127.0.0.1"),
        );
        c.set_node(Node::new("node-b", "127.0.0.2").meta("rack", "r2"));
        c.register(
            ServiceInstance::new("node-b", "web", 8080)
                .tags(&["prod", "v2"])
                .meta("team", "a"),
        );
        c.register(
            ServiceInstance::new("node-a", "web", 8080)
                .id("web-1")
                .tags(&["prod"]),
        );
        c.register(
            ServiceInstance::new("node-a", "web", 8081)
                .id("web-0")
                .tags(&["canary"])
                .address("127.0.0.9"),
        );
        c.register(ServiceInstance::new("node-a", "db", 5432).tags(&["primary"]));
        c.set_check_status("node-a", "serfHealth", "passing");
        c.set_check_status("node-b", "serfHealth", "passing");
        c.set_check_status("node-a", "service:web-1", "passing");
        c.set_check_status("node-a", "service:web-0", "warning");
    }

    fn ids(r: &Response) -> Vec<String> {
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        r.json()
            .as_array()
            .expect("array")
            .iter()
            .map(|e| {
                format!(
                    "{}/{}",
                    e["Node"]["Node"].as_str().unwrap(),
                    e["Service"]["ID"].as_str().unwrap()
                )
            })
            .collect()
    }

    #[test]
    fn agent_self_and_headers() {
        let c = FakeConsul::start_with(Options {
            datacenter: "test-dc".into(),
            ..Options::default()
        });
        assert!(c.addr().ip().is_loopback());
        let r = get(&c, "/v1/agent/self");
        assert_eq!(r.status, 200);
        assert_eq!(r.json()["Config"]["Datacenter"], "test-dc");
        assert_eq!(r.json()["Config"]["NodeName"], "fake-agent");
        assert_eq!(r.json()["Member"]["Addr"], "127.0.0.1");
        // Empty catalog: index is never 0.
        for path in [
            "/v1/catalog/services",
            "/v1/health/service/nope",
            "/v1/health/state/any",
            "/v1/catalog/service/nope",
        ] {
            let r = get(&c, path);
            assert_eq!(r.status, 200, "{path}");
            assert_eq!(r.header("content-type"), Some("application/json"));
            assert!(index_of(&r) >= 1, "{path}");
            assert_eq!(r.header("x-consul-knownleader"), Some("true"));
            assert_eq!(r.header("x-consul-lastcontact"), Some("0"));
        }
        assert_eq!(get(&c, "/v1/catalog/services").json(), json!({}));
        assert_eq!(get(&c, "/v1/health/service/nope").json(), json!([]));
        assert_eq!(get(&c, "/v1/nope").status, 404);
        assert_eq!(
            request(c.addr(), "PUT", "/v1/catalog/services", &[]).status,
            405
        );
        assert_eq!(get(&c, "/v1/health/service/x?dc=dc9").status, 500);
        assert_eq!(
            get(&c, "/v1/health/service/x?dc=dc9").text(),
            "No path to datacenter"
        );
        assert_eq!(get(&c, "/v1/health/service/x?dc=test-dc").status, 200);
        assert_eq!(get(&c, "/v1/health/service/x?stale&consistent").status, 400);
        assert_eq!(get(&c, "/v1/health/service/x?index=abc").status, 400);
        assert_eq!(get(&c, "/v1/health/service/x?wait=10parsecs").status, 400);
        assert_eq!(get(&c, "/v1/health/state/sad").status, 400);
        let stats = c.stats();
        assert!(stats.requests >= 10);
        assert_eq!(stats.by_endpoint["agent/self"], 1);
    }

    #[test]
    fn health_service_shapes_and_order() {
        let c = quiet();
        fleet(&c);
        let r = get(&c, "/v1/health/service/web");
        assert_eq!(ids(&r), ["node-a/web-0", "node-a/web-1", "node-b/web"]);
        let v = r.json();
        let e = &v[1];
        assert_eq!(e["Node"]["Address"], "127.0.0.1");
        assert_eq!(e["Node"]["Datacenter"], "dc1");
        assert_eq!(e["Node"]["Meta"], json!({"rack": "r1"}));
        assert_eq!(e["Node"]["TaggedAddresses"], json!({"lan": "127.0.0.1"}));
        assert!(e["Node"]["ID"].as_str().unwrap().len() == 36);
        assert_eq!(e["Service"]["Service"], "web");
        assert_eq!(e["Service"]["Tags"], json!(["prod"]));
        assert_eq!(e["Service"]["Port"], 8080);
        assert_eq!(e["Service"]["Address"], "");
        assert_eq!(e["Service"]["Weights"], json!({"Passing": 1, "Warning": 1}));
        assert!(e["Service"].get("Namespace").is_none());
        let checks: Vec<&str> = e["Checks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["CheckID"].as_str().unwrap())
            .collect();
        assert_eq!(checks, ["serfHealth", "service:web-1"]);
        assert_eq!(e["Checks"][1]["ServiceName"], "web");
        assert_eq!(e["Checks"][1]["ServiceTags"], json!(["prod"]));
        assert_eq!(e["Checks"][0]["ServiceID"], "");
        assert_eq!(v[0]["Service"]["Address"], "127.0.0.9");
        // URL-decoded names.
        c.register(ServiceInstance::new("node-b", "my svc/x", 1));
        assert_eq!(
            ids(&get(&c, "/v1/health/service/my%20svc%2Fx")),
            ["node-b/my svc/x"]
        );
        // Tagged service addresses use {"Address","Port"}.
        c.register(ServiceInstance::new("node-b", "ta", 1).tagged_address("wan", "127.0.0.3", 80));
        let v = get(&c, "/v1/health/service/ta").json();
        assert_eq!(
            v[0]["Service"]["TaggedAddresses"],
            json!({"wan": {"Address": "127.0.0.3", "Port": 80}})
        );
        // catalog/service.
        let v = get(&c, "/v1/catalog/service/web?tag=prod").json();
        let got: Vec<&str> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["ServiceID"].as_str().unwrap())
            .collect();
        assert_eq!(got, ["web-1", "web"]);
        assert_eq!(v[0]["NodeMeta"], json!({"rack": "r1"}));
    }

    #[test]
    fn null_empty_collections_option() {
        let c = FakeConsul::start_with(Options {
            null_empty_collections: true,
            ..Options::default()
        });
        c.register(ServiceInstance::new("n", "s", 1));
        let v = get(&c, "/v1/health/service/s").json();
        assert_eq!(v[0]["Service"]["Tags"], Value::Null);
        assert_eq!(v[0]["Service"]["Meta"], Value::Null);
        assert_eq!(v[0]["Node"]["Meta"], Value::Null);
    }

    #[test]
    fn tag_node_meta_passing_and_filter() {
        let c = quiet();
        fleet(&c);
        let q = |p: &str| ids(&get(&c, &format!("/v1/health/service/web?{p}")));
        assert_eq!(q("tag=prod"), ["node-a/web-1", "node-b/web"]);
        assert_eq!(q("tag=prod&tag=v2"), ["node-b/web"]);
        assert_eq!(
            q("tag=PROD&tag=V2"),
            ["node-b/web"],
            "tag match is case-insensitive"
        );
        assert_eq!(q("tag=nope").len(), 0);
        assert_eq!(q("node-meta=rack%3Ar1"), ["node-a/web-0", "node-a/web-1"]);
        assert_eq!(q("node-meta=rack:r1&node-meta=rack:r2").len(), 0);
        assert_eq!(q("passing"), ["node-a/web-1", "node-b/web"]);
        assert_eq!(q("passing=false").len(), 3);
        let f = |e: &str| {
            let mut s = String::from("filter=");
            for b in e.bytes() {
                s.push_str(&format!("%{b:02X}"));
            }
            q(&s)
        };
        assert_eq!(
            f(r#""prod" in Service.Tags"#),
            ["node-a/web-1", "node-b/web"]
        );
        assert_eq!(f(r#""prod" not in Service.Tags"#), ["node-a/web-0"]);
        assert_eq!(f(r#"Service.Tags contains "v2""#), ["node-b/web"]);
        assert_eq!(f(r#"Service.Tags not contains `prod`"#), ["node-a/web-0"]);
        assert_eq!(f(r#"Node.Meta.rack == "r2""#), ["node-b/web"]);
        assert_eq!(
            f(r#"Node.Meta["rack"] != "r2""#),
            ["node-a/web-0", "node-a/web-1"]
        );
        assert_eq!(f(r#"Service.Meta.team == "a""#), ["node-b/web"]);
        assert_eq!(f(r#"Service.Meta.missing == "a""#).len(), 0);
        assert_eq!(f(r#"Service.Meta.missing != "a""#).len(), 3);
        assert_eq!(
            f(r#"Service.Meta is empty"#),
            ["node-a/web-0", "node-a/web-1"]
        );
        assert_eq!(
            f(r#"Service.ID == "web-0" or Node.Node == "node-b""#),
            ["node-a/web-0", "node-b/web"]
        );
        assert_eq!(
            f(r#"not (Service.ID == "web-0" or Node.Node == "node-b")"#),
            ["node-a/web-1"]
        );
        assert_eq!(
            f(r#"Node.Node == "node-a" and not "canary" in Service.Tags"#),
            ["node-a/web-1"]
        );
        assert_eq!(f(r#"Service.Port == 8081"#), ["node-a/web-0"]);
        assert_eq!(
            f(r#"Service.Service == web and Service.EnableTagOverride == false"#).len(),
            3
        );
        assert_eq!(
            f(r#"Node.Datacenter == "dc1" and Service.Service == "web""#).len(),
            3
        );
        assert_eq!(f(r#"Checks.Status == "warning""#), ["node-a/web-0"]);
        assert_eq!(
            f(r#"Service.ID matches "^web-[0-9]$""#),
            ["node-a/web-0", "node-a/web-1"]
        );
        // Errors: syntax, and catalog selectors on the health endpoint.
        for bad in [
            r#"Service.Tags contains"#,
            r#"ServiceTags contains "x""#,
            r#"(Service.ID == "a""#,
            r#"Service.ID = "a""#,
            r#"Node.Node == node-b"#,
        ] {
            let mut s = String::from("/v1/health/service/web?filter=");
            for b in bad.bytes() {
                s.push_str(&format!("%{b:02X}"));
            }
            let r = get(&c, &s);
            assert_eq!(r.status, 400, "{bad}");
            assert!(
                r.text()
                    .starts_with("Failed to create boolean expression evaluator"),
                "{}",
                r.text()
            );
        }
    }

    #[test]
    fn catalog_services_and_health_state() {
        let c = quiet();
        fleet(&c);
        let v = get(&c, "/v1/catalog/services").json();
        assert_eq!(
            v,
            json!({"db": ["primary"], "web": ["canary", "prod", "v2"]})
        );
        let v = get(&c, "/v1/catalog/services?node-meta=rack:r2").json();
        assert_eq!(v, json!({"web": ["prod", "v2"]}));
        let v = get(
            &c,
            "/v1/catalog/services?filter=NodeMeta.rack+%3D%3D+%22r1%22",
        )
        .json();
        assert_eq!(v, json!({"db": ["primary"], "web": ["canary", "prod"]}));
        let v = get(&c, "/v1/catalog/services?filter=ServiceName+%3D%3D+db").json();
        assert_eq!(v, json!({"db": ["primary"]}));
        // Health selectors are not catalog selectors.
        assert_eq!(
            get(&c, "/v1/catalog/services?filter=Service.Service+%3D%3D+db").status,
            400
        );

        let st = |p: &str| -> Vec<String> {
            get(&c, p)
                .json()
                .as_array()
                .unwrap()
                .iter()
                .map(|ch| {
                    format!(
                        "{}/{}",
                        ch["Node"].as_str().unwrap(),
                        ch["CheckID"].as_str().unwrap()
                    )
                })
                .collect()
        };
        assert_eq!(
            st("/v1/health/state/any"),
            [
                "node-a/serfHealth",
                "node-a/service:web-0",
                "node-a/service:web-1",
                "node-b/serfHealth"
            ]
        );
        assert_eq!(st("/v1/health/state/warning"), ["node-a/service:web-0"]);
        assert_eq!(st("/v1/health/state/critical").len(), 0);
        assert_eq!(
            st("/v1/health/state/passing?node-meta=rack:r2"),
            ["node-b/serfHealth"]
        );
        assert_eq!(
            st("/v1/health/state/any?filter=ServiceName+%3D%3D+web"),
            ["node-a/service:web-0", "node-a/service:web-1"]
        );

        // Maintenance.
        c.set_node_maintenance("node-b", true);
        assert_eq!(
            st("/v1/health/state/critical"),
            ["node-b/_node_maintenance"]
        );
        let v = get(
            &c,
            "/v1/health/service/web?filter=Node.Node+%3D%3D+%22node-b%22",
        )
        .json();
        let checks: Vec<&str> = v[0]["Checks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["CheckID"].as_str().unwrap())
            .collect();
        assert_eq!(checks, ["_node_maintenance", "serfHealth"]);
        c.set_service_maintenance("node-a", "web-1", true);
        assert_eq!(
            ids(&get(&c, "/v1/health/service/web?passing")),
            Vec::<String>::new()
        );
        c.set_node_maintenance("node-b", false);
        c.set_service_maintenance("node-a", "web-1", false);
        assert_eq!(
            ids(&get(&c, "/v1/health/service/web?passing")),
            ["node-a/web-1", "node-b/web"]
        );
        // Deregistering removes instance and its checks.
        c.deregister("node-a", "web-0");
        assert_eq!(st("/v1/health/state/warning").len(), 0);
        c.deregister_node("node-b");
        assert_eq!(ids(&get(&c, "/v1/health/service/web")), ["node-a/web-1"]);
    }

    #[test]
    fn a_registration_with_its_check_is_one_write() {
        let c = quiet();
        c.set_node(Node::new("n", "127.0.0.1"));
        c.register_with_check(ServiceInstance::new("n", "s", 1).id("s-1"), "passing");
        let catalog = index_of(&get(&c, "/v1/catalog/services"));
        let state = get(&c, "/v1/health/state/any");
        assert_eq!(index_of(&state), catalog);
        assert_eq!(state.json()[0]["ModifyIndex"], json!(catalog));
        assert_eq!(c.service_index("s"), catalog);
        // Apart, they are two writes.
        c.register(ServiceInstance::new("n", "s", 1).id("s-2"));
        c.set_check_status("n", "service:s-2", "passing");
        let catalog = index_of(&get(&c, "/v1/catalog/services"));
        assert_eq!(index_of(&get(&c, "/v1/health/state/any")), catalog + 1);
    }

    /// `filter` on `/v1/health/state/:state` runs over HealthCheck
    /// fields; the answer's index stays the checks table's (Consul filters
    /// after the blocking query, so a change elsewhere still wakes it).
    #[test]
    fn health_state_filter_over_check_fields() {
        let c = quiet();
        fleet(&c);
        c.set_check_status("node-a", "service:db", "passing");
        let enc = |e: &str| {
            let mut s = String::from("/v1/health/state/any?filter=");
            for b in e.bytes() {
                s.push_str(&format!("%{b:02X}"));
            }
            s
        };
        let st = |e: &str| -> Vec<String> {
            let r = get(&c, &enc(e));
            assert_eq!(r.status, 200, "{e}: {}", r.text());
            r.json()
                .as_array()
                .unwrap()
                .iter()
                .map(|ch| {
                    format!(
                        "{}/{}",
                        ch["Node"].as_str().unwrap(),
                        ch["CheckID"].as_str().unwrap()
                    )
                })
                .collect()
        };
        assert_eq!(
            st(r#"ServiceName == "" or ServiceName == "db""#),
            [
                "node-a/serfHealth",
                "node-a/service:db",
                "node-b/serfHealth"
            ]
        );
        assert_eq!(
            st(r#"(ServiceName == "web" and Status != "passing") or CheckID == "service:db""#),
            ["node-a/service:db", "node-a/service:web-0"]
        );
        assert_eq!(
            st(r#"ServiceName == `db` and Node == "node-a""#),
            ["node-a/service:db"]
        );
        assert_eq!(st(r#"ServiceName == "d\x62""#), ["node-a/service:db"]);
        assert_eq!(st(r#""canary" in ServiceTags"#), ["node-a/service:web-0"]);
        // The index is the checks table's whatever the filter keeps.
        let before = index_of(&get(&c, &enc(r#"ServiceName == "db""#)));
        c.set_check_status("node-b", "serfHealth", "critical");
        let after = get(&c, &enc(r#"ServiceName == "db""#));
        assert!(index_of(&after) > before);
        assert_eq!(after.json().as_array().unwrap().len(), 1);
        // What bexpr refuses: a `"` ends a double-quoted literal even after
        // a backslash; invalid Go escapes; service-entry selectors.
        for bad in [
            r#"ServiceName == "a\"b""#,
            r#"ServiceName == "a\q""#,
            r#"ServiceName == "a"#,
            r#"Service.Service == "db""#,
            r#"ServiceName == "db" or"#,
            r#"(ServiceName == "db""#,
        ] {
            let r = get(&c, &enc(bad));
            assert_eq!(r.status, 400, "{bad}");
            assert!(
                r.text()
                    .starts_with("Failed to create boolean expression evaluator"),
                "{bad}: {}",
                r.text()
            );
        }
    }

    #[test]
    fn blocking_query_wakes_on_relevant_change_only() {
        let c = quiet();
        fleet(&c);
        let i = index_of(&get(&c, "/v1/health/service/web"));
        assert_eq!(i, c.service_index("web"));
        let catalog_i = index_of(&get(&c, "/v1/catalog/services"));
        let h = spawn_get(&c, &format!("/v1/health/service/web?index={i}&wait=8s"));
        let hc = spawn_get(
            &c,
            &format!("/v1/catalog/services?index={catalog_i}&wait=8s"),
        );
        poll_until(Duration::from_secs(5), "two blocking queries", || {
            (c.stats().blocking_in_flight == 2).then_some(())
        });
        // Unrelated: another service's instance and check, another node.
        c.register(ServiceInstance::new("node-a", "db", 5433).id("db-2"));
        c.set_check_status("node-a", "service:db", "critical");
        c.set_node(Node::new("node-c", "127.0.0.3"));
        std::thread::sleep(Duration::from_millis(300));
        assert!(!h.is_finished(), "woke on an unrelated change");
        // The catalog watcher woke on the db-2 registration.
        let (r, _) = hc.join().unwrap();
        assert!(index_of(&r) > catalog_i);
        assert_eq!(c.stats().blocking_in_flight, 1);
        // Relevant: a node-level check on a node hosting web.
        c.set_check_status("node-b", "serfHealth", "critical");
        let (r, took) = h.join().unwrap();
        assert!(took < Duration::from_secs(5), "{took:?}");
        let j = index_of(&r);
        assert!(j > i);
        assert_eq!(r.json()[2]["Checks"][0]["Status"], "critical");
        // Check changes do not wake catalog/services.
        let ci = index_of(&get(&c, "/v1/catalog/services"));
        let hc = spawn_get(&c, &format!("/v1/catalog/services?index={ci}&wait=600ms"));
        std::thread::sleep(Duration::from_millis(100));
        c.set_check_status("node-a", "service:web-1", "critical");
        let (r, took) = hc.join().unwrap();
        assert!(took >= Duration::from_millis(600), "{took:?}");
        assert_eq!(index_of(&r), ci);
        // A deleted service's index moves, so its watchers wake.
        let wi = index_of(&get(&c, "/v1/health/service/db"));
        let h = spawn_get(&c, &format!("/v1/health/service/db?index={wi}&wait=8s"));
        poll_until(Duration::from_secs(5), "blocking", || {
            (c.stats().blocking_in_flight == 1).then_some(())
        });
        c.deregister("node-a", "db");
        c.deregister("node-a", "db-2");
        let (r, took) = h.join().unwrap();
        assert!(took < Duration::from_secs(5));
        assert!(index_of(&r) > wi);
        assert_eq!(c.stats().peak_blocking, 2);
    }

    #[test]
    fn wait_timeout_returns_the_same_index() {
        let c = quiet();
        fleet(&c);
        let i = index_of(&get(&c, "/v1/health/service/web"));
        let t = Instant::now();
        let r = get(&c, &format!("/v1/health/service/web?index={i}&wait=400ms"));
        let took = t.elapsed();
        assert!(
            took >= Duration::from_millis(400) && took < Duration::from_secs(3),
            "{took:?}"
        );
        assert_eq!(index_of(&r), i);
        assert_eq!(ids(&r).len(), 3);
        // An index below the current one answers at once.
        let t = Instant::now();
        let r = get(
            &c,
            &format!("/v1/health/service/web?index={}&wait=5s", i - 1),
        );
        assert!(t.elapsed() < Duration::from_secs(1));
        assert_eq!(index_of(&r), i);
        // Go durations.
        assert_eq!(
            parse_go_duration("120000ms"),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_go_duration("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_go_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_go_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_go_duration("10"), None);
        assert_eq!(parse_go_duration(""), None);
    }

    #[test]
    fn jitter_is_bounded() {
        let c = FakeConsul::start();
        c.register(ServiceInstance::new("n", "s", 1));
        let i = index_of(&get(&c, "/v1/health/service/s"));
        let t = Instant::now();
        get(&c, &format!("/v1/health/service/s?index={i}&wait=320ms"));
        let took = t.elapsed();
        assert!(
            took >= Duration::from_millis(320) && took < Duration::from_millis(320 + 20 + 500),
            "{took:?}"
        );
    }

    #[test]
    fn identical_writes_do_not_bump_the_index() {
        let c = quiet();
        fleet(&c);
        let i = c.index();
        assert!(!c.register(ServiceInstance::new("node-a", "db", 5432).tags(&["primary"])));
        assert!(!c.set_check_status("node-a", "serfHealth", "passing"));
        assert!(!c.set_node(Node::new("node-b", "127.0.0.2").meta("rack", "r2")));
        assert_eq!(c.index(), i);
        assert!(c.set_node(Node::new("node-b", "127.0.0.2").meta("rack", "r3")));
        assert_eq!(c.index(), i + 1);
        assert_eq!(c.service_index("web"), i + 1);
        assert_eq!(c.service_index("db"), c.service_index("db").min(i));
    }

    #[test]
    fn namespaces_and_partitions() {
        let c = quiet();
        c.register(ServiceInstance::new("n", "s", 1).id("plain"));
        c.register(
            ServiceInstance::new("n", "s", 2)
                .id("in-ns")
                .namespace("team-a")
                .partition("p1"),
        );
        assert_eq!(ids(&get(&c, "/v1/health/service/s")), ["n/plain"]);
        assert_eq!(ids(&get(&c, "/v1/health/service/s?ns=team-a")).len(), 0);
        assert_eq!(
            ids(&get(&c, "/v1/health/service/s?ns=team-a&partition=p1")),
            ["n/in-ns"]
        );
        let v = get(&c, "/v1/health/service/s?ns=*&partition=*").json();
        assert_eq!(v.as_array().unwrap().len(), 2);
        assert_eq!(v[0]["Service"]["Namespace"], "team-a");
        assert_eq!(v[0]["Service"]["Partition"], "p1");
        let r = request(
            c.addr(),
            "GET",
            "/v1/health/service/s",
            &[
                ("X-Consul-Namespace", "team-a"),
                ("X-Consul-Partition", "p1"),
            ],
        );
        assert_eq!(ids(&r), ["n/in-ns"]);
    }

    #[test]
    fn acl_token_and_path_prefix() {
        let c = FakeConsul::start_with(Options {
            acl_token: Some("s3cret".into()),
            path_prefix: "/consul".into(),
            ..Options::default()
        });
        c.register(ServiceInstance::new("n", "s", 1));
        assert_eq!(get(&c, "/v1/health/service/s").status, 404);
        let r = get(&c, "/consul/v1/health/service/s");
        assert_eq!(r.status, 200);
        assert_eq!(r.json(), json!([]));
        assert_eq!(r.header("x-consul-results-filtered-by-acls"), Some("true"));
        let r = request(
            c.addr(),
            "GET",
            "/consul/v1/health/service/s",
            &[("X-Consul-Token", "s3cret")],
        );
        assert_eq!(ids(&r), ["n/s"]);
        let r = request(
            c.addr(),
            "GET",
            "/consul/v1/health/service/s",
            &[("Authorization", "Bearer s3cret")],
        );
        assert_eq!(ids(&r), ["n/s"]);
        assert_eq!(
            ids(&get(&c, "/consul/v1/health/service/s?token=s3cret")),
            ["n/s"]
        );
        let r = request(
            c.addr(),
            "GET",
            "/consul/v1/health/service/s",
            &[("X-Consul-Token", "wrong")],
        );
        assert_eq!(r.status, 403);
        let log = c.requests();
        assert_eq!(log[2].headers["x-consul-token"], "s3cret");
        assert_eq!(log[4].query, "token=s3cret");
    }

    #[test]
    fn connection_limit_answers_429() {
        let c = FakeConsul::start_with(Options {
            max_conns_per_client: 3,
            ..Options::default()
        });
        let mut held: Vec<TcpStream> = (0..3)
            .map(|_| TcpStream::connect(c.addr()).unwrap())
            .collect();
        poll_until(Duration::from_secs(5), "3 open connections", || {
            (c.stats().open_connections == 3).then_some(())
        });
        let r = get(&c, "/v1/agent/self");
        assert_eq!(r.status, 429);
        assert_eq!(r.text(), TOO_MANY_CONNS);
        assert_eq!(r.header("connection"), Some("close"));
        assert_eq!(c.stats().rejected_connections, 1);
        assert_eq!(c.stats().peak_connections, 3);
        held.pop();
        poll_until(Duration::from_secs(5), "2 open connections", || {
            (c.stats().open_connections == 2).then_some(())
        });
        assert_eq!(get(&c, "/v1/agent/self").status, 200);
        // Held connections still work (keep-alive requests on them).
        let s = &mut held[0];
        s.write_all(b"GET /v1/agent/self HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut buf = String::new();
        s.read_to_string(&mut buf).unwrap();
        assert!(buf.starts_with("HTTP/1.1 200"), "{buf}");
    }

    #[test]
    fn client_disconnect_ends_a_blocking_query() {
        let c = quiet();
        c.register(ServiceInstance::new("n", "s", 1));
        let i = c.service_index("s");
        let mut s = TcpStream::connect(c.addr()).unwrap();
        write!(
            s,
            "GET /v1/health/service/s?index={i}&wait=60s HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        .unwrap();
        poll_until(Duration::from_secs(5), "blocking", || {
            (c.stats().blocking_in_flight == 1).then_some(())
        });
        drop(s);
        poll_until(Duration::from_secs(5), "blocking query cancelled", || {
            let st = c.stats();
            (st.blocking_in_flight == 0 && st.open_connections == 0).then_some(())
        });
    }

    #[test]
    fn faults() {
        let c = quiet();
        fleet(&c);
        // 500 on a prefix only.
        c.inject("/v1/health/", Fault::Status500);
        assert_eq!(get(&c, "/v1/health/service/web").status, 500);
        assert_eq!(get(&c, "/v1/catalog/services").status, 200);
        c.clear_faults();
        assert_eq!(get(&c, "/v1/health/service/web").status, 200);
        // 429 with Retry-After.
        c.inject(
            "",
            Fault::TooManyRequests {
                retry_after_secs: 7,
            },
        );
        let r = get(&c, "/v1/catalog/services");
        assert_eq!(r.status, 429);
        assert_eq!(r.header("retry-after"), Some("7"));
        c.clear_faults();
        // Garbage.
        c.inject("/v1/catalog/services", Fault::Garbage);
        let r = get(&c, "/v1/catalog/services");
        assert_eq!(r.status, 200);
        assert!(r.header("x-consul-index").is_some());
        assert!(serde_json::from_slice::<Value>(&r.body).is_err());
        c.clear_faults();
        // Hang, until cleared.
        c.inject("", Fault::Hang);
        let h = spawn_get(&c, "/v1/catalog/services");
        std::thread::sleep(Duration::from_millis(300));
        assert!(!h.is_finished());
        c.clear_faults();
        let (r, _) = h.join().unwrap();
        assert_eq!(r.status, 200);
        // Index reset: an in-flight blocking query returns a lower index,
        // later ones report it.
        let i = index_of(&get(&c, "/v1/health/service/web"));
        let h = spawn_get(&c, &format!("/v1/health/service/web?index={i}&wait=8s"));
        poll_until(Duration::from_secs(5), "blocking", || {
            (c.stats().blocking_in_flight == 1).then_some(())
        });
        c.reset_index(5);
        let (r, took) = h.join().unwrap();
        assert!(took < Duration::from_secs(5));
        assert_eq!(index_of(&r), i - 5);
        assert_eq!(index_of(&get(&c, "/v1/health/service/web")), i - 5);
        c.reset_index(1_000_000);
        assert_eq!(index_of(&get(&c, "/v1/health/service/web")), 1);
        c.clear_faults();
        assert_eq!(index_of(&get(&c, "/v1/health/service/web")), i);
    }

    #[test]
    fn hanging_requests_do_not_block_shutdown() {
        let c = quiet();
        c.inject("", Fault::Hang);
        let addr = c.addr();
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(b"GET /v1/agent/self HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        poll_until(Duration::from_secs(5), "request seen", || {
            (c.stats().requests == 1).then_some(())
        });
        let t = Instant::now();
        drop(c);
        assert!(t.elapsed() < Duration::from_secs(2));
        let mut buf = Vec::new();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = s.read_to_end(&mut buf);
        assert!(TcpStream::connect(addr).is_err() || buf.is_empty());
    }
}
