//! Test helpers shared by every integration test: spawn the real binary on
//! a free loopback port, speak HTTP to it, write files, poll until.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_sdbridge")
}

/// Runs `sdbridge ARGS` in `cwd` (or the temp dir) to completion.
pub fn run_cli<A: AsRef<std::ffi::OsStr>>(
    cwd: Option<&Path>,
    args: impl IntoIterator<Item = A>,
) -> std::process::Output {
    Command::new(bin())
        .current_dir(
            cwd.map(Path::to_path_buf)
                .unwrap_or_else(std::env::temp_dir),
        )
        .args(args)
        .output()
        .expect("run sdbridge")
}

/// Polls `f` every 20 ms until it returns `Some`, panicking with `what`
/// after `timeout`.
pub fn poll_until<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A free loopback port (bound and released; fine for tests).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port")
}

/// A running `sdbridge serve`, killed on drop.
pub struct Bridge {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Everything it logged so far (JSON lines).
    pub log: Arc<Mutex<String>>,
}

impl Bridge {
    /// Starts `sdbridge serve --config CONFIG` on a free loopback port and
    /// waits until it listens.
    pub fn start(config: &Path) -> Bridge {
        Bridge::start_in(&std::env::temp_dir(), config)
    }

    /// Like [`Bridge::start`], without waiting for `/-/ready`.
    pub fn start_unready(config: &Path) -> Bridge {
        Bridge::spawn(&std::env::temp_dir(), config)
    }

    /// Like [`Bridge::start`], with `cwd` as the working directory (for
    /// relative config paths).
    pub fn start_in(cwd: &Path, config: &Path) -> Bridge {
        let bridge = Bridge::spawn(cwd, config);
        poll_until(Duration::from_secs(10), "/-/ready", || {
            (bridge.get("/-/ready").status == 200).then_some(())
        });
        bridge
    }

    /// Like [`Bridge::start`], run through `wrapper` (such as `prlimit
    /// --nofile=64:64`), without waiting for `/-/ready`.
    pub fn start_wrapped(config: &Path, wrapper: &[&str]) -> Bridge {
        Bridge::spawn_with(&std::env::temp_dir(), config, wrapper)
    }

    /// Like [`Bridge::start_unready`], listening where the config's
    /// `listen` says (no `--listen`).
    pub fn start_at_config_listen(config: &Path) -> Bridge {
        Bridge::spawn_full(&std::env::temp_dir(), config, &[], false)
    }

    fn spawn(cwd: &Path, config: &Path) -> Bridge {
        Bridge::spawn_with(cwd, config, &[])
    }

    fn spawn_with(cwd: &Path, config: &Path, wrapper: &[&str]) -> Bridge {
        Bridge::spawn_full(cwd, config, wrapper, true)
    }

    fn spawn_full(cwd: &Path, config: &Path, wrapper: &[&str], free_port: bool) -> Bridge {
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(bin());
                c
            }
            None => Command::new(bin()),
        };
        command
            .current_dir(cwd)
            .args(["--log-format", "json", "serve"]);
        if free_port {
            command.args(["--listen", "127.0.0.1:0"]);
        }
        let mut child = command
            .arg("--config")
            .arg(config)
            // `SDBRIDGE_TEST_LOG=debug` to see more of the bridge's log.
            .env(
                "RUST_LOG",
                std::env::var("SDBRIDGE_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sdbridge");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                    if v["fields"]["message"] == "listening" {
                        let _ = tx.send(v["fields"]["addr"].as_str().unwrap_or("").to_string());
                    }
                }
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(addr) => addr.parse().expect("listen address"),
            Err(_) => {
                let _ = child.kill();
                panic!("sdbridge did not start; log:\n{}", log.lock().unwrap());
            }
        };
        Bridge { child, addr, log }
    }

    /// GET `path`.
    pub fn get(&self, path: &str) -> Response {
        request(self.addr, "GET", path, &[])
    }

    /// A request with extra headers.
    pub fn request(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Response {
        request(self.addr, method, path, headers)
    }

    /// Polls `path` until its body satisfies `pred`, returning it.
    pub fn wait_body(&self, path: &str, what: &str, pred: impl Fn(&str) -> bool) -> String {
        poll_until(Duration::from_secs(10), what, || {
            let r = self.get(path);
            (r.status == 200 && pred(&r.text())).then(|| r.text())
        })
    }

    /// The sum of the `/metrics` samples of `name` whose labels contain
    /// every `matchers` substring; `None` when there is no such sample.
    pub fn metric(&self, name: &str, matchers: &[&str]) -> Option<f64> {
        metric(&self.get("/metrics").text(), name, matchers)
    }

    /// CPU seconds (user + system) the process has used so far.
    pub fn cpu_seconds(&self) -> f64 {
        cpu_seconds(self.pid())
    }

    /// The process ID, for signals.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What it logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        poll_until(Duration::from_secs(10), "exit after SIGTERM", || {
            self.child.try_wait().ok().flatten()
        })
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP response, headers lower-cased.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
}

impl Response {
    /// The body as UTF-8.
    pub fn text(&self) -> String {
        String::from_utf8(self.body.clone()).expect("UTF-8 body")
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

/// The sum of the samples of `name` in the exposition `text` whose labels
/// contain every `matchers` substring; `None` when there is no such sample.
pub fn metric(text: &str, name: &str, matchers: &[&str]) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (metric_name, label_text) = series.split_once('{').unwrap_or((series, ""));
        if metric_name == name && matchers.iter().all(|m| label_text.contains(m)) {
            let v: f64 = value.parse().expect("sample value");
            found = Some(found.unwrap_or(0.0) + v);
        }
    }
    found
}

/// CPU seconds (user + system) process `pid` has used, from
/// `/proc/PID/stat` (fields 14 and 15, in clock ticks of 1/100 s).
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/PID/stat");
    // The command name (field 2) may hold spaces; fields after it do not.
    let after_name = &stat[stat.rfind(')').expect("stat format") + 2..];
    let fields: Vec<&str> = after_name.split(' ').collect();
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    ticks as f64 / 100.0
}

/// One kept-alive HTTP/1.1 connection, for asking a server that cannot
/// accept new connections (out of file descriptors).
pub struct KeepAlive {
    stream: BufReader<TcpStream>,
}

impl KeepAlive {
    /// Connects and makes sure the server has accepted the connection.
    pub fn open(addr: SocketAddr) -> KeepAlive {
        let stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut conn = KeepAlive {
            stream: BufReader::new(stream),
        };
        assert_eq!(conn.get("/-/healthy").status, 200);
        conn
    }

    /// The connection itself (to watch it close).
    pub fn stream(&mut self) -> &mut TcpStream {
        self.stream.get_mut()
    }

    /// GET `path` on this connection (the answer must have a
    /// Content-Length, as sdbridge's do).
    pub fn get(&mut self, path: &str) -> Response {
        let req = format!("GET {path} HTTP/1.1\r\nHost: sdbridge\r\n\r\n");
        self.stream
            .get_mut()
            .write_all(req.as_bytes())
            .expect("send");
        let mut status_line = String::new();
        self.stream
            .read_line(&mut status_line)
            .expect("status line");
        let status = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("status");
        let mut headers = BTreeMap::new();
        loop {
            let mut line = String::new();
            self.stream.read_line(&mut line).expect("header");
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
        }
        let len: usize = headers
            .get("content-length")
            .and_then(|l| l.parse().ok())
            .expect("content-length");
        let mut body = vec![0; len];
        self.stream.read_exact(&mut body).expect("body");
        Response {
            status,
            headers,
            body,
        }
    }
}

/// A minimal HTTP/1.1 request over a fresh connection (`Connection: close`).
pub fn request(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)]) -> Response {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    exchange(&mut stream, addr, method, path, headers).expect("HTTP exchange")
}

/// Sends one `Connection: close` request over `stream` and reads the
/// answer to the end.
pub fn exchange(
    stream: &mut (impl Read + Write),
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Response, String> {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    stream
        .write_all(req.as_bytes())
        .map_err(|e| format!("send: {e}"))?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .map_err(|e| format!("read: {e}"))?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("no end of headers in {} bytes", raw.len()))?;
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut body = raw[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or("no status line")?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Ok(Response {
        status,
        headers,
        body,
    })
}

/// Decodes a chunked HTTP/1.1 body.
fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    while let Some(eol) = raw.windows(2).position(|w| w == b"\r\n") {
        let size_text = String::from_utf8_lossy(&raw[..eol]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .expect("chunk size");
        if size == 0 {
            break;
        }
        body.extend_from_slice(&raw[eol + 2..eol + 2 + size]);
        raw = &raw[eol + 2 + size + 2..];
    }
    body
}

/// A temporary directory with helpers for writing SD files the ways real
/// tools do.
pub struct Dir {
    pub tmp: tempfile::TempDir,
}

impl Dir {
    pub fn new() -> Dir {
        Dir {
            tmp: tempfile::tempdir().expect("tempdir"),
        }
    }

    /// Absolute path of `rel`.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }

    /// The directory as a string.
    pub fn root(&self) -> String {
        self.tmp
            .path()
            .to_str()
            .expect("UTF-8 temp path")
            .to_string()
    }

    /// Writes `content` to `rel` in place, creating parent directories.
    pub fn write(&self, rel: &str, content: &str) -> PathBuf {
        let path = self.path(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(&path, content).expect("write");
        path
    }

    /// Writes `content` to a temporary name and renames it over `rel`, as
    /// editors and config management do.
    pub fn replace(&self, rel: &str, content: &str) {
        let tmp = self.write(&format!("{rel}.tmp~"), content);
        std::fs::rename(tmp, self.path(rel)).expect("rename");
    }

    /// Removes `rel`.
    pub fn remove(&self, rel: &str) {
        std::fs::remove_file(self.path(rel)).expect("remove");
    }
}

/// The path of `name` on PATH, or why the test using it is skipped.
/// With `SDBRIDGE_REQUIRE_E2E=1` a missing binary fails the test instead.
pub fn require_binary(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        if std::env::var("SDBRIDGE_REQUIRE_E2E").as_deref() == Ok("1") {
            panic!("{name} not found on PATH and SDBRIDGE_REQUIRE_E2E=1");
        }
        eprintln!("SKIPPED: {name} not found on PATH (install it, or set SDBRIDGE_REQUIRE_E2E=1 to fail instead)");
    }
    found
}

/// Parses a served body into (targets, labels) pairs.
pub fn groups(body: &str) -> Vec<(Vec<String>, BTreeMap<String, String>)> {
    let v: Vec<serde_json::Value> = serde_json::from_str(body).expect("JSON array");
    v.into_iter()
        .map(|g| {
            let targets = serde_json::from_value(g["targets"].clone()).expect("targets");
            let labels = serde_json::from_value(g["labels"].clone()).expect("labels");
            (targets, labels)
        })
        .collect()
}

/// Skips the calling test with a printed `reason` (the caller returns),
/// or fails it under `SDBRIDGE_REQUIRE_E2E=1`.
pub fn skip(reason: &str) {
    if std::env::var("SDBRIDGE_REQUIRE_E2E").as_deref() == Ok("1") {
        panic!("{reason}, and SDBRIDGE_REQUIRE_E2E=1");
    }
    eprintln!("SKIPPED: {reason} (set SDBRIDGE_REQUIRE_E2E=1 to fail instead)");
}

/// A bridge serving job `big`: 100,000 loopback targets in 10,000 groups
/// of one file_sd file, enough that work over the whole body is long
/// enough to see who waits for it.
pub fn big_fleet() -> (Dir, Bridge) {
    let dir = Dir::new();
    let groups: Vec<serde_json::Value> = (0..10_000)
        .map(|g| {
            let targets: Vec<String> = (0..10)
                .map(|t| format!("127.{}.{}.{}:9100", g / 250, g % 250, t + 1))
                .collect();
            serde_json::json!({"targets": targets, "labels": {"g": g.to_string()}})
        })
        .collect();
    dir.write("sd/big.json", &serde_json::Value::Array(groups).to_string());
    let config = dir.write(
        "sdbridge.yml",
        "jobs:\n  - job_name: big\n    file_sd_configs: [{files: [sd/*.json]}]\n",
    );
    let bridge = Bridge::start(&config);
    (dir, bridge)
}

/// The slowest of 40 probes (`/-/healthy`, `/-/ready`) asked while four
/// clients keep asking `path(client, round)`; `cost` is what one of
/// their requests costs alone, for pacing (nothing here is an absolute
/// time).
pub fn slowest_probe_while(
    bridge: &std::sync::Arc<Bridge>,
    cost: Duration,
    path: fn(u64, u64) -> String,
) -> Duration {
    use std::sync::atomic::{AtomicBool, Ordering};
    let busy = std::sync::Arc::new(AtomicBool::new(true));
    let clients: Vec<_> = (0..4)
        .map(|c| {
            let (bridge, busy) = (bridge.clone(), busy.clone());
            std::thread::spawn(move || {
                let mut round = 0;
                while busy.load(Ordering::SeqCst) {
                    assert_eq!(bridge.get(&path(c, round)).status, 200);
                    round += 1;
                }
            })
        })
        .collect();
    std::thread::sleep(cost);
    let mut slowest = Duration::ZERO;
    for _ in 0..20 {
        for probe in ["/-/healthy", "/-/ready"] {
            let asked = std::time::Instant::now();
            assert_eq!(bridge.get(probe).status, 200);
            slowest = slowest.max(asked.elapsed());
        }
        std::thread::sleep(cost / 10);
    }
    busy.store(false, Ordering::SeqCst);
    for client in clients {
        client.join().expect("client");
    }
    slowest
}
