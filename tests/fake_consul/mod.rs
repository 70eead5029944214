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
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

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

mod bexpr;
mod server;
#[cfg(test)]
mod tests;

use bexpr::*;
use server::*;
