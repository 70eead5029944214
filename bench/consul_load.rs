//! Consul load benchmark: the real `sdbridge` binary, then VictoriaMetrics's
//! native `consul_sd_configs`, against the same fake Consul agent
//! (`tests/fake_consul.rs`, with Consul's default limit of 200 concurrent
//! connections per client address) holding `SERVICES` × `INSTANCES`
//! instances.
//!
//! ```text
//! CARGO_TARGET_DIR=/tmp/target-cbench cargo bench --bench consul_load
//! ```
//!
//! Everything is on loopback; every phase is bounded in time (the whole run
//! takes about 4 minutes with the defaults). VictoriaMetrics, when installed
//! (`victoria-metrics` on PATH, or `VM_BIN`), scrapes nothing: its only job
//! drops every target by relabelling. Results are recorded in
//! `bench/README.md`.
//!
//! Environment:
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `SERVICES` | 1000 | services in the catalog |
//! | `INSTANCES` | 10 | instances per service |
//! | `CHANGES` | 10 | change-latency samples |
//! | `WINDOW_SECS` | 30 | length of each request-rate window |
//! | `MAX_CONNECTIONS` | sdbridge's default | sdbridge's `max_connections` |
//! | `SDBRIDGE_BIN` | the bench's own build of `sdbridge` | binary to run |
//! | `VM_BIN` | `victoria-metrics` on PATH | VictoriaMetrics binary; `SKIP_VM=1` skips it |
//! | `SELECT_SERVICES` | unset (every service) | comma-separated `services:` for both consumers, e.g. `svc-0000` |
//! | `CHECK_CHANGES` | 5 | samples per kind of check change (sdbridge only) |
//!
//! Check changes (sdbridge only, after the other phases): a check of a
//! served instance, a check of another service's instance, and the node
//! check of the served instance's node each flip `CHECK_CHANGES` times;
//! for each flip the bench counts the requests and answer bytes Consul
//! sees until the change is served plus one second (the re-armed watch
//! included), and the time until the instance's health is served (a
//! service that is not selected is given 1.5 s to cause traffic).

// `cargo bench` compiles the fake's own tests (`cfg(test)`) without their
// `#[test]` functions, hence `unused_imports` (it allows `dead_code` itself).
#[allow(unused_imports)]
#[path = "../tests/fake_consul/mod.rs"]
mod fake_consul;
/// Only for the fake's own tests, which `cargo bench` compiles (with
/// `cfg(test)`) but never runs here.
#[cfg(test)]
#[allow(dead_code)]
#[path = "../tests/util.rs"]
mod util;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fake_consul::{FakeConsul, Node, ServiceInstance};

/// Drops every target: VictoriaMetrics must scrape nothing.
const DROP_ALL: &str =
    "    relabel_configs: [{action: drop, source_labels: [__address__], regex: \".*\"}]\n";

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port")
}

/// A loopback address for instance `n` (never 127.0.0.0 or .255).
fn address(n: usize) -> String {
    let n = n + 1;
    format!(
        "127.{}.{}.{}",
        1 + n / 62_500 % 250,
        n / 250 % 250,
        1 + n % 250
    )
}

/// One GET over a fresh connection: (status, ETag, body), or `None` when
/// the server is not there (yet).
fn get(
    addr: SocketAddr,
    path: &str,
    if_none_match: Option<&str>,
) -> Option<(u16, String, Vec<u8>)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .ok()?;
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(etag) = if_none_match {
        req.push_str(&format!("If-None-Match: {etag}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).ok()?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).ok()?;
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let mut etag = String::new();
    let mut chunked = false;
    for line in head.lines().skip(1) {
        if let Some((k, v)) = line.split_once(':') {
            match k.trim().to_ascii_lowercase().as_str() {
                "etag" => etag = v.trim().to_string(),
                "transfer-encoding" => chunked = v.to_ascii_lowercase().contains("chunked"),
                _ => {}
            }
        }
    }
    let mut body = raw[split + 4..].to_vec();
    if chunked {
        body = dechunk(&body);
    }
    Some((status, etag, body))
}

fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    while let Some(eol) = raw.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(
            String::from_utf8_lossy(&raw[..eol])
                .split(';')
                .next()
                .unwrap_or("")
                .trim(),
            16,
        )
        .unwrap_or(0);
        if size == 0 || raw.len() < eol + 2 + size {
            break;
        }
        body.extend_from_slice(&raw[eol + 2..eol + 2 + size]);
        raw = &raw[(eol + 4 + size).min(raw.len())..];
    }
    body
}

/// Substring search (`str::contains` is a two-way search: a 10 MB body is
/// scanned in about a millisecond, not the ~100 ms of a naive window scan,
/// which would steal a core from the processes being measured).
fn contains(haystack: &[u8], needle: &str) -> bool {
    String::from_utf8_lossy(haystack).contains(needle)
}

/// Polls every `every` until `f` returns `Some`, or `None` after `timeout`.
fn poll<T>(timeout: Duration, every: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(every);
    }
}

/// CPU seconds (user + system) `pid` has used, from `/proc/PID/stat`
/// (fields 14 and 15, in clock ticks of 1/100 s).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let Some(end) = stat.rfind(')') else {
        return 0.0;
    };
    let fields: Vec<u64> = stat[end + 1..]
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    (fields.get(11).copied().unwrap_or(0) + fields.get(12).copied().unwrap_or(0)) as f64 / 100.0
}

/// `VmHWM` and `VmRSS` of `pid`, in MiB.
fn rss(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / 1024.0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// A child process killed on drop.
struct Proc(Child);

/// Stops the process with SIGTERM (so that wrappers such as valgrind's
/// massif write their output), then SIGKILL after 10 s.
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What one consumer of Consul measured.
#[derive(Default)]
struct Results {
    first_sync: Option<Duration>,
    first_sync_peak_conns: usize,
    first_sync_requests: u64,
    rejected: u64,
    /// New instance registered with its own check, as agents do.
    change_checked: Vec<Duration>,
    /// New instance registered without any check (the worst case: the
    /// catalog index moves and nothing names the service).
    change: Vec<Duration>,
    change_missed: usize,
    hwm_mib: f64,
    rss_mib: f64,
    idle_per_min: f64,
    /// The consumer's CPU use over the idle window, in % of one core.
    idle_cpu_pct: f64,
    churn_per_min: f64,
    peak_conns: usize,
}

/// The per-consumer steps: how to tell the targets are all there, and
/// whether a given address is served.
trait Consumer {
    fn pid(&self) -> u32;
    /// Whether `want` targets are discovered.
    fn synced(&self, want: usize) -> bool;
    /// Whether `address` is among the discovered targets.
    fn sees(&mut self, address: &str) -> bool;
    /// Poll interval for [`Consumer::sees`].
    fn poll_every(&self) -> Duration;
}

struct Sdbridge {
    proc: Proc,
    addr: SocketAddr,
    etag: Option<String>,
    body: Vec<u8>,
    /// The address last searched for in `body`, and whether it was found
    /// (a body is searched once, not on every 304).
    searched: Option<(String, bool)>,
}

impl Consumer for Sdbridge {
    fn pid(&self) -> u32 {
        self.proc.0.id()
    }
    fn synced(&self, want: usize) -> bool {
        if !matches!(get(self.addr, "/-/ready", None), Some((200, _, _))) {
            return false;
        }
        let Some((200, _, body)) = get(self.addr, "/http_sd/consul", None) else {
            return false;
        };
        let groups: Vec<serde_json::Value> = serde_json::from_slice(&body).unwrap_or_default();
        assert_eq!(
            groups.len(),
            want,
            "sdbridge ready but not every target served"
        );
        true
    }
    fn sees(&mut self, address: &str) -> bool {
        // Conditional GETs: a 304 costs nothing, the body comes only when
        // it changed.
        if let Some((status, etag, body)) = get(self.addr, "/http_sd/consul", self.etag.as_deref())
        {
            if status == 200 {
                self.etag = Some(etag);
                self.body = body;
                self.searched = None;
            }
        }
        match &self.searched {
            Some((searched, found)) if searched == address => *found,
            _ => {
                let found = contains(&self.body, &format!("\"{address}\""));
                self.searched = Some((address.to_string(), found));
                found
            }
        }
    }
    fn poll_every(&self) -> Duration {
        Duration::from_millis(10)
    }
}

impl Sdbridge {
    /// The `__meta_consul_health` served for service instance `id`
    /// (labels are serialized in name order, so the instance's health is
    /// the last one before its service ID).
    fn health_of(&mut self, id: &str) -> Option<String> {
        if let Some((status, etag, body)) = get(self.addr, "/http_sd/consul", self.etag.as_deref())
        {
            if status == 200 {
                self.etag = Some(etag);
                self.body = body;
                self.searched = None;
            }
        }
        let text = std::str::from_utf8(&self.body).ok()?;
        let at = text.find(&format!("\"__meta_consul_service_id\":\"{id}\""))?;
        let key = "\"__meta_consul_health\":\"";
        let start = text[..at].rfind(key)? + key.len();
        let len = text[start..].find('"')?;
        Some(text[start..start + len].to_string())
    }
}

/// What one kind of check change cost.
#[derive(Default)]
struct CheckChange {
    /// Time from the flip until the new health is served, per flip.
    served: Vec<Duration>,
    missed: usize,
    /// Requests and answer bytes Consul saw per flip.
    requests: Vec<u64>,
    bytes: Vec<u64>,
    /// Requests per endpoint over all flips.
    by_endpoint: std::collections::BTreeMap<String, u64>,
}

/// Flips `check` on `node` `flips` times (`bad`, then `passing`, ...); when
/// `watched` is served, waits for its health to follow.
#[allow(clippy::too_many_arguments)]
fn check_changes(
    consul: &FakeConsul,
    bridge: &mut Sdbridge,
    node: &str,
    check: &str,
    bad: &str,
    watched: &str,
    served: bool,
    flips: usize,
) -> CheckChange {
    let mut r = CheckChange::default();
    for k in 0..flips {
        let status = if k % 2 == 0 { bad } else { "passing" };
        // Let the previous flip's traffic end.
        std::thread::sleep(Duration::from_millis(500));
        consul.reset_stats();
        let t0 = Instant::now();
        consul.set_check_status(node, check, status);
        if served {
            match poll(Duration::from_secs(20), Duration::from_millis(10), || {
                (bridge.health_of(watched).as_deref() == Some(status)).then(|| t0.elapsed())
            }) {
                Some(d) => r.served.push(d),
                None => r.missed += 1,
            }
            std::thread::sleep(Duration::from_secs(1));
        } else {
            std::thread::sleep(Duration::from_millis(1500));
        }
        let stats = consul.stats();
        r.requests.push(stats.requests);
        r.bytes.push(stats.bytes_by_endpoint.values().sum());
        for (e, n) in stats.by_endpoint {
            *r.by_endpoint.entry(e).or_insert(0) += n;
        }
    }
    consul.set_check_status(node, check, "passing");
    r.served.sort();
    r
}

/// Waits (at most a minute) until Consul sees no service read for 2 s:
/// the deregistrations ending the change phase set off re-reads (of every
/// service, when no check explains them), which must not be counted as
/// the cost of the first check change.
fn settle(consul: &FakeConsul) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        consul.reset_stats();
        std::thread::sleep(Duration::from_secs(2));
        let reads = consul.stats().by_endpoint.get("health/service").copied();
        if reads.unwrap_or(0) == 0 {
            return;
        }
    }
}

/// The three kinds of check change, for instance `svc-0000-0` (on
/// `node-000`) and `svc-0001-0`.
fn run_check_changes(
    consul: &FakeConsul,
    bridge: &mut Sdbridge,
    services: usize,
    instances: usize,
    flips: usize,
) -> Vec<(String, CheckChange)> {
    let other_node = format!("node-{:03}", instances % node_count(services, instances));
    let other_served = selected().is_none_or(|s| s.iter().any(|n| n == "svc-0001"));
    vec![
        (
            "check of a served instance (svc-0000-0)".to_string(),
            check_changes(
                consul,
                bridge,
                "node-000",
                "service:svc-0000-0",
                "warning",
                "svc-0000-0",
                true,
                flips,
            ),
        ),
        (
            format!(
                "check of another service's instance (svc-0001-0){}",
                if other_served { "" } else { ", not selected" }
            ),
            check_changes(
                consul,
                bridge,
                &other_node,
                "service:svc-0001-0",
                "warning",
                "svc-0001-0",
                other_served,
                flips,
            ),
        ),
        (
            "node check (serfHealth) of svc-0000-0's node".to_string(),
            check_changes(
                consul,
                bridge,
                "node-000",
                "serfHealth",
                "critical",
                "svc-0000-0",
                true,
                flips,
            ),
        ),
    ]
}

fn mean(v: &[u64]) -> f64 {
    if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<u64>() as f64 / v.len() as f64
    }
}

fn fmt_bytes(b: f64) -> String {
    if b >= 1024.0 * 1024.0 {
        format!("{:.2} MiB", b / 1024.0 / 1024.0)
    } else if b >= 1024.0 {
        format!("{:.1} KiB", b / 1024.0)
    } else {
        format!("{b:.0} B")
    }
}

struct Victoria {
    proc: Proc,
    addr: SocketAddr,
}

impl Victoria {
    fn dropped(&self) -> Vec<u8> {
        match get(self.addr, "/api/v1/targets?state=dropped", None) {
            Some((200, _, body)) => body,
            _ => Vec::new(),
        }
    }
}

impl Consumer for Victoria {
    fn pid(&self) -> u32 {
        self.proc.0.id()
    }
    fn synced(&self, want: usize) -> bool {
        let body = self.dropped();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        v["data"]["droppedTargets"]
            .as_array()
            .is_some_and(|a| a.len() >= want)
    }
    fn sees(&mut self, address: &str) -> bool {
        contains(&self.dropped(), &format!("\"{address}\""))
    }
    fn poll_every(&self) -> Duration {
        // Each answer holds every target (megabytes): poll less often.
        Duration::from_millis(100)
    }
}

/// Registers the catalog: `services` × `instances`, on 100 nodes, each
/// instance with its own loopback address and a passing check, each node
/// with a passing `serfHealth`.
fn populate(consul: &FakeConsul, services: usize, instances: usize) {
    let nodes = node_count(services, instances);
    for n in 0..nodes {
        consul.set_node(
            Node::new(
                &format!("node-{n:03}"),
                &format!("127.0.{}.{}", n / 250, 1 + n % 250),
            )
            .meta("rack", &format!("r{}", n % 8)),
        );
        consul.set_check_status(&format!("node-{n:03}"), "serfHealth", "passing");
    }
    for s in 0..services {
        for i in 0..instances {
            let n = s * instances + i;
            let node = format!("node-{:03}", n % nodes);
            let id = format!("svc-{s:04}-{i}");
            consul.register(
                ServiceInstance::new(&node, &format!("svc-{s:04}"), 9100)
                    .id(&id)
                    .address(&address(n))
                    .tags(&["prod", "exporter=node"])
                    .meta("team", &format!("team-{}", s % 20)),
            );
            consul.set_check_status(&node, &format!("service:{id}"), "passing");
        }
    }
}

/// The nodes [`populate`] spreads instances over.
fn node_count(services: usize, instances: usize) -> usize {
    100.min(services * instances).max(1)
}

/// Requests per minute Consul sees over `window` while `churn` (if set)
/// flips one check per second.
fn request_rate(consul: &FakeConsul, window: Duration, churn: bool) -> (f64, usize) {
    consul.reset_stats();
    let start = Instant::now();
    let mut flip = 0usize;
    while start.elapsed() < window {
        if churn {
            let status = if flip & 1 == 0 { "warning" } else { "passing" };
            consul.set_check_status("node-000", "service:svc-0000-0", status);
            flip += 1;
        }
        std::thread::sleep(Duration::from_secs(1).min(window.saturating_sub(start.elapsed())));
    }
    // Leave the check as it started.
    consul.set_check_status("node-000", "service:svc-0000-0", "passing");
    let stats = consul.stats();
    (
        stats.requests as f64 * 60.0 / start.elapsed().as_secs_f64(),
        stats.peak_connections,
    )
}

/// Runs the measurements against an already started consumer.
#[allow(clippy::too_many_arguments)]
fn measure(
    name: &str,
    consul: &FakeConsul,
    consumer: &mut dyn Consumer,
    started: Instant,
    want: usize,
    tag: usize,
    changes: usize,
    window: Duration,
) -> Results {
    let mut r = Results::default();
    let sync_every = if name == "sdbridge" {
        Duration::from_millis(20)
    } else {
        Duration::from_millis(250)
    };
    r.first_sync = poll(Duration::from_secs(120), sync_every, || {
        consumer.synced(want).then(|| started.elapsed())
    });
    let stats = consul.stats();
    r.first_sync_peak_conns = stats.peak_connections;
    r.first_sync_requests = stats.requests;
    r.rejected = stats.rejected_connections;
    eprintln!(
        "{name}: first sync {:?}, {} requests, peak {} connections, {} refused",
        r.first_sync, stats.requests, stats.peak_connections, stats.rejected_connections
    );
    if r.first_sync.is_none() {
        r.peak_conns = stats.peak_connections;
        (r.hwm_mib, r.rss_mib) = rss(consumer.pid());
        return r;
    }
    // Let the start-up traffic settle before measuring rates.
    std::thread::sleep(Duration::from_secs(2));

    let cpu = cpu_seconds(consumer.pid());
    let idle_started = Instant::now();
    let (idle, _) = request_rate(consul, window, false);
    r.idle_per_min = idle;
    r.idle_cpu_pct =
        100.0 * (cpu_seconds(consumer.pid()) - cpu) / idle_started.elapsed().as_secs_f64();
    eprintln!("{name}: {:.2}% of a core at idle", r.idle_cpu_pct);
    let (churn, peak) = request_rate(consul, window, true);
    r.churn_per_min = churn;
    r.peak_conns = peak.max(r.first_sync_peak_conns);
    eprintln!("{name}: {idle:.0} req/min idle, {churn:.0} req/min with a change per second");

    // Change latency: one new instance at a time, never seen before.
    consumer.sees("0.0.0.0:0"); // prime the sdbridge ETag
    for k in 0..changes {
        let addr = format!("127.254.{tag}.{}", 1 + k);
        let id = format!("new-{tag}-{k}");
        let with_check = k % 2 == 0;
        let t0 = Instant::now();
        consul.register(
            ServiceInstance::new("node-000", "svc-0000", 9100)
                .id(&id)
                .address(&addr),
        );
        if with_check {
            consul.set_check_status("node-000", &format!("service:{id}"), "passing");
        }
        let target = format!("{addr}:9100");
        let every = consumer.poll_every();
        match poll(Duration::from_secs(20), every, || {
            consumer.sees(&target).then(|| t0.elapsed())
        }) {
            Some(d) if with_check => r.change_checked.push(d),
            Some(d) => r.change.push(d),
            None => r.change_missed += 1,
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    r.change.sort();
    r.change_checked.sort();
    eprintln!(
        "{name}: change latencies with a check {:?}, without {:?}",
        r.change_checked, r.change
    );
    (r.hwm_mib, r.rss_mib) = rss(consumer.pid());
    for k in 0..changes {
        consul.deregister("node-000", &format!("new-{tag}-{k}"));
    }
    r
}

fn sdbridge_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("SDBRIDGE_BIN") {
        return p.into();
    }
    PathBuf::from(env!("CARGO_BIN_EXE_sdbridge"))
}

fn vm_bin() -> Option<PathBuf> {
    if std::env::var("SKIP_VM").as_deref() == Ok("1") {
        return None;
    }
    if let Some(p) = std::env::var_os("VM_BIN") {
        return Some(p.into());
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|p| p.join("victoria-metrics"))
        .find(|p| p.is_file())
}

/// `SELECT_SERVICES` as a `services:` line of a consul_sd_configs entry.
fn services_line(indent: &str) -> String {
    selected()
        .map(|s| format!("{indent}services: [{}]\n", s.join(", ")))
        .unwrap_or_default()
}

fn selected() -> Option<Vec<String>> {
    let v = std::env::var("SELECT_SERVICES").ok()?;
    let names: Vec<String> = v
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    (!names.is_empty()).then_some(names)
}

fn start_sdbridge(bin: &Path, dir: &Path, consul: SocketAddr) -> Sdbridge {
    let config = dir.join("sdbridge.yml");
    std::fs::write(
        &config,
        format!(
            "jobs:\n  - job_name: consul\n    consul_sd_configs:\n      - server: {consul}\n{}{}",
            std::env::var("MAX_CONNECTIONS")
                .map(|n| format!("        max_connections: {n}\n"))
                .unwrap_or_default(),
            services_line("        ")
        ),
    )
    .expect("write config");
    let port = free_port();
    let child = Command::new(bin)
        .args(["--log-format", "json", "serve", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start sdbridge");
    Sdbridge {
        proc: Proc(child),
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        etag: None,
        body: Vec::new(),
        searched: None,
    }
}

/// `max_dropped` raises `-promscrape.maxDroppedTargets` (default 1000) so
/// that every discovered target shows up among the dropped ones.
fn start_vm(bin: &Path, dir: &Path, consul: SocketAddr, max_dropped: usize) -> Victoria {
    let config = dir.join("vm.yml");
    std::fs::write(
        &config,
        format!(
            "global: {{scrape_interval: 1h}}\nscrape_configs:\n  - job_name: consul\n    consul_sd_configs:\n      - server: {consul}\n{}{DROP_ALL}",
            services_line("        ")
        ),
    )
    .expect("write config");
    let port = free_port();
    let child = Command::new(bin)
        .arg(format!("-promscrape.config={}", config.display()))
        .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
        .arg(format!(
            "-storageDataPath={}",
            dir.join("vm-data").display()
        ))
        .arg("-promscrape.consulSDCheckInterval=1s")
        .arg(format!("-promscrape.maxDroppedTargets={max_dropped}"))
        .arg("-loggerLevel=ERROR")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start victoria-metrics");
    Victoria {
        proc: Proc(child),
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
    }
}

fn fmt_dur(d: Option<Duration>) -> String {
    d.map_or("—".into(), |d| format!("{:.2} s", d.as_secs_f64()))
}

fn rate(r: &Results, per_min: f64) -> String {
    if r.first_sync.is_some() {
        format!("{per_min:.0}")
    } else {
        "—".into()
    }
}

fn row(metric: &str, target: &str, values: &[String]) {
    println!("| {metric} | {} | {target} |", values.join(" | "));
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing
    // useful either: this bench has no filters.
    let services = env_usize("SERVICES", 1000);
    let instances = env_usize("INSTANCES", 10);
    let changes = env_usize("CHANGES", 10);
    let window = Duration::from_secs(env_usize("WINDOW_SECS", 30) as u64);
    let want = match selected() {
        Some(names) => {
            names
                .iter()
                .filter(|n| {
                    n.strip_prefix("svc-")
                        .and_then(|i| i.parse::<usize>().ok())
                        .is_some_and(|i| i < services)
                })
                .count()
                * instances
        }
        None => services * instances,
    };
    let check_changes_n = env_usize("CHECK_CHANGES", 5);
    let mut checks = None;

    let consul = FakeConsul::start();
    let t = Instant::now();
    populate(&consul, services, instances);
    eprintln!(
        "fake consul at {} with {services} services x {instances} instances ({:.1} s to build)",
        consul.addr(),
        t.elapsed().as_secs_f64()
    );
    let dir = tempfile::tempdir().expect("tempdir");

    let mut all: Vec<(&str, Results)> = Vec::new();
    {
        consul.reset_stats();
        let started = Instant::now();
        let mut bridge = start_sdbridge(&sdbridge_bin(), dir.path(), consul.addr());
        let r = measure(
            "sdbridge",
            &consul,
            &mut bridge,
            started,
            want,
            1,
            changes,
            window,
        );
        if r.first_sync.is_some() && check_changes_n > 0 {
            settle(&consul);
            checks = Some(run_check_changes(
                &consul,
                &mut bridge,
                services,
                instances,
                check_changes_n,
            ));
        }
        all.push(("sdbridge", r));
    }
    if let Some(vm) = vm_bin() {
        // Let sdbridge's connections close before counting VM's.
        std::thread::sleep(Duration::from_secs(1));
        consul.reset_stats();
        let started = Instant::now();
        let mut victoria = start_vm(&vm, dir.path(), consul.addr(), 2 * want + 1000);
        let r = measure(
            "victoria-metrics",
            &consul,
            &mut victoria,
            started,
            want,
            2,
            changes,
            window,
        );
        all.push(("VictoriaMetrics 1.79.5 (single node, consul_sd)", r));
    } else {
        eprintln!("victoria-metrics not found (or SKIP_VM=1): sdbridge only");
    }

    println!();
    println!("{services} services x {instances} instances = {want} targets, fake Consul limit 200 connections per client");
    println!();
    let names: Vec<String> = all.iter().map(|(n, _)| n.to_string()).collect();
    println!("| metric | {} | target |", names.join(" | "));
    println!("|---|{}---|", "---|".repeat(all.len()));
    let col = |f: &dyn Fn(&Results) -> String| all.iter().map(|(_, r)| f(r)).collect::<Vec<_>>();
    row(
        "time to first full sync",
        "≤ 5 s",
        &col(&|r| {
            r.first_sync
                .map_or("not within 120 s".to_string(), |d| fmt_dur(Some(d)))
        }),
    );
    row(
        "requests to Consul during first sync",
        "",
        &col(&|r| r.first_sync_requests.to_string()),
    );
    row(
        "new instance with its check served, median",
        "≤ 2 s",
        &col(&|r| fmt_dur(r.change_checked.get(r.change_checked.len() / 2).copied())),
    );
    row(
        "new instance with its check served, max",
        "≤ 2 s",
        &col(&|r| fmt_dur(r.change_checked.last().copied())),
    );
    row(
        "new check-less instance served, median",
        "≤ 2 s",
        &col(&|r| fmt_dur(r.change.get(r.change.len() / 2).copied())),
    );
    row(
        "new check-less instance served, max",
        "≤ 2 s",
        &col(&|r| {
            let max = fmt_dur(r.change.last().copied());
            if r.change_missed > 0 {
                format!("{max} ({} missed in 20 s)", r.change_missed)
            } else {
                max
            }
        }),
    );
    row(
        "RSS peak (VmHWM)",
        "≤ 64 MB",
        &col(&|r| format!("{:.1} MiB", r.hwm_mib)),
    );
    row(
        "RSS at end (VmRSS)",
        "≤ 64 MB",
        &col(&|r| format!("{:.1} MiB", r.rss_mib)),
    );
    row(
        "peak concurrent connections to Consul",
        "< 200",
        &col(&|r| r.peak_conns.to_string()),
    );
    row(
        "connections refused by Consul (429)",
        "0",
        &col(&|r| r.rejected.to_string()),
    );
    row(
        &format!("Consul requests/min, idle ({} s window)", window.as_secs()),
        "",
        &col(&|r| rate(r, r.idle_per_min)),
    );
    row(
        &format!("CPU at idle, % of one core ({} s window)", window.as_secs()),
        "≤ 1%",
        &col(&|r| format!("{:.2}%", r.idle_cpu_pct)),
    );
    row(
        &format!(
            "Consul requests/min, one change/s ({} s window)",
            window.as_secs()
        ),
        "",
        &col(&|r| rate(r, r.churn_per_min)),
    );
    if let Some(checks) = checks {
        println!();
        println!(
            "Check changes (sdbridge, services: {}), {check_changes_n} flips each; requests and answer bytes Consul saw per flip",
            selected().map_or("all".to_string(), |s| format!("[{}]", s.join(", ")))
        );
        println!();
        println!("| check that flips | served, median | served, max | requests/change | health/state, health/service requests/change | answer bytes/change |");
        println!("|---|---|---|---|---|---|");
        for (what, c) in checks {
            let n = c.requests.len().max(1) as f64;
            let per = |e: &str| c.by_endpoint.get(e).copied().unwrap_or(0) as f64 / n;
            let (median, max) = if c.served.is_empty() && c.missed == 0 {
                ("not served (not selected)".to_string(), "—".to_string())
            } else {
                (
                    fmt_dur(c.served.get(c.served.len() / 2).copied()),
                    if c.missed > 0 {
                        format!(
                            "{} ({} missed in 20 s)",
                            fmt_dur(c.served.last().copied()),
                            c.missed
                        )
                    } else {
                        fmt_dur(c.served.last().copied())
                    },
                )
            };
            println!(
                "| {what} | {median} | {max} | {:.1} | {:.1}, {:.1} | {} |",
                mean(&c.requests),
                per("health/state"),
                per("health/service"),
                fmt_bytes(mean(&c.bytes))
            );
        }
    }
    // Machine-readable copy for bench/growth.sh: one line per consumer.
    let secs = |d: Option<&Duration>| d.map_or(f64::NAN, |d| d.as_secs_f64());
    for (name, r) in &all {
        println!(
            "GROWTH consumer={} services={services} instances={instances} first_sync_s={:.3} first_sync_requests={} checked_median_s={:.3} checked_max_s={:.3} checkless_median_s={:.3} checkless_max_s={:.3} missed={} hwm_mib={:.1} rss_mib={:.1} peak_conns={} refused={}",
            name.split_whitespace().next().unwrap_or(name),
            secs(r.first_sync.as_ref()),
            r.first_sync_requests,
            secs(r.change_checked.get(r.change_checked.len() / 2)),
            secs(r.change_checked.last()),
            secs(r.change.get(r.change.len() / 2)),
            secs(r.change.last()),
            r.change_missed,
            r.hwm_mib,
            r.rss_mib,
            r.peak_conns,
            r.rejected,
        );
    }
}
