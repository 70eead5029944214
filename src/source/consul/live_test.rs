//! The client and watcher against a tiny in-process Consul stand-in (four
//! endpoints, blocking on `index`), on loopback. The full fake Consul lives
//! in the integration tests.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::pipeline::Message;
use crate::source::{Change, Outbox, SlotId, Update};

#[derive(Default)]
struct Catalog {
    index: u64,
    services: BTreeMap<String, Vec<String>>,
    checks: Vec<Value>,
    entries: BTreeMap<String, Value>,
    /// Every request's path and query, and its token header.
    log: Vec<(String, String)>,
}

struct Fake {
    state: Mutex<Catalog>,
    changed: Notify,
}

impl Fake {
    fn update(&self, f: impl FnOnce(&mut Catalog)) {
        let mut s = self.state.lock().unwrap();
        f(&mut s);
        s.index += 1;
        drop(s);
        self.changed.notify_waiters();
    }

    fn log(&self) -> Vec<(String, String)> {
        self.state.lock().unwrap().log.clone()
    }
}

async fn serve(
    fake: Arc<Fake>,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let token = req
        .headers()
        .get("X-Consul-Token")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    fake.state
        .lock()
        .unwrap()
        .log
        .push((format!("{path}?{query}"), token));
    let wait_index: Option<u64> = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("index="))
        .and_then(|v| v.parse().ok());
    if let Some(wanted) = wait_index {
        let notified = fake.changed.notified();
        if fake.state.lock().unwrap().index <= wanted {
            let _ = tokio::time::timeout(Duration::from_secs(2), notified).await;
        }
    }
    let s = fake.state.lock().unwrap();
    let body = match path.as_str() {
        "/v1/agent/self" => json!({"Config": {"Datacenter": "dc-test"}}),
        "/v1/catalog/services" => json!(s.services),
        "/v1/health/state/any" => json!(s.checks),
        p => match p.strip_prefix("/v1/health/service/") {
            Some(name) => s.entries.get(name).cloned().unwrap_or(json!([])),
            None => json!(null),
        },
    };
    let response = Response::builder()
        .header("X-Consul-Index", s.index.to_string())
        .header("Content-Type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    Ok(response)
}

async fn start(fake: Arc<Fake>) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let fake = fake.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| serve(fake.clone(), req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

fn entry(node: &str, id: &str, port: u16, status: &str) -> Value {
    json!({
        "Node": {"Node": node, "Address": "127.0.0.1", "Meta": {"rack.id": "r1"}},
        "Service": {"ID": id, "Service": "web", "Tags": ["prod"], "Address": "", "Port": port},
        "Checks": [{"Node": node, "CheckID": format!("service:{id}"), "Status": status, "ServiceID": id, "ServiceName": "web"}]
    })
}

fn check(node: &str, id: &str, index: u64) -> Value {
    json!({"Node": node, "CheckID": format!("service:{id}"), "Status": "passing",
           "ServiceID": id, "ServiceName": "web", "ModifyIndex": index})
}

async fn next(
    rx: &mut mpsc::Receiver<Message>,
    what: &str,
    pred: impl Fn(&Update) -> bool,
) -> Update {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let Message::Update(u) = rx.recv().await.expect("source stopped") else {
                continue;
            };
            if pred(&u) {
                return u;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

#[tokio::test]
async fn watcher_syncs_then_patches_only_what_changed() {
    let fake = Arc::new(Fake {
        state: Mutex::new(Catalog::default()),
        changed: Notify::new(),
    });
    fake.update(|s| {
        s.services.insert("web".into(), vec!["prod".into()]);
        s.services.insert("db".into(), vec![]);
        s.checks = vec![check("n1", "web-1", 1)];
        s.entries
            .insert("web".into(), json!([entry("n1", "web-1", 9100, "passing")]));
    });
    let addr = start(fake.clone()).await;
    let text = format!(
        "jobs:\n  - job_name: j\n    consul_sd_configs:\n      - {{server: '{addr}', token: s3cret, tags: [prod], node_meta: {{rack: r1}}}}\n"
    );
    let config = Config::parse(&text, std::path::Path::new("/tmp/x.yml")).unwrap();
    let consul = config.jobs[0].consul_sd_configs[0].clone();
    let (tx, mut rx) = mpsc::channel(64);
    let shutdown = CancellationToken::new();
    let out = Outbox::new(SlotId(0), "j", ("consul_sd#0", "consul_sd"), tx);
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let watchers = super::Watchers::default();
        super::run(&watchers, consul, out, stop).await
    });

    let u = next(&mut rx, "first sync", |u| u.synced).await;
    let Change::Replace(parts) = &u.change else {
        panic!("{:?}", u.change)
    };
    assert_eq!(parts.len(), 1, "db lacks the prod tag: {parts:?}");
    assert_eq!(parts[0].key, "web");
    let g = &parts[0].fragment.parse()[0];
    assert_eq!(g.targets, ["127.0.0.1:9100"]);
    assert_eq!(g.labels.0["__meta_consul_dc"], "dc-test");
    assert_eq!(g.labels.0["__meta_consul_health"], "passing");
    assert_eq!(g.labels.0["__meta_consul_metadata_rack_id"], "r1");

    // A new instance registers with its check: one Patch of web.
    fake.update(|s| {
        let index = s.index + 1;
        s.checks.push(check("n2", "web-2", index));
        s.entries.insert(
            "web".into(),
            json!([
                entry("n2", "web-2", 9101, "critical"),
                entry("n1", "web-1", 9100, "passing")
            ]),
        );
    });
    let u = next(&mut rx, "patch", |u| matches!(u.change, Change::Patch(_))).await;
    let Change::Patch(parts) = &u.change else {
        unreachable!()
    };
    assert_eq!(parts.len(), 1);
    let nodes: Vec<String> = parts[0]
        .fragment
        .parse()
        .iter()
        .map(|g| g.labels.0["__meta_consul_node"].clone())
        .collect();
    assert_eq!(nodes, ["n1", "n2"], "ordered by node");

    // The service disappears: an empty part removes it.
    fake.update(|s| {
        s.services.remove("web");
        s.checks.clear();
    });
    let u = next(&mut rx, "removal", |u| matches!(u.change, Change::Patch(_))).await;
    let Change::Patch(parts) = &u.change else {
        unreachable!()
    };
    assert_eq!(
        (parts[0].key.as_str(), parts[0].fragment.groups()),
        ("web", 0)
    );
    shutdown.cancel();

    let log = fake.log();
    assert!(
        log.iter().all(|(_, token)| token == "s3cret"),
        "token on every request"
    );
    let catalog = log
        .iter()
        .find(|(p, _)| p.starts_with("/v1/catalog/services"))
        .unwrap();
    assert_eq!(
        catalog.0, "/v1/catalog/services?node-meta=rack%3Ar1&stale=&wait=120000ms",
        "first call: no index"
    );
    assert!(log
        .iter()
        .any(|(p, _)| p.starts_with("/v1/catalog/services?index=")));
    let health = log
        .iter()
        .find(|(p, _)| p.starts_with("/v1/health/service/web"))
        .unwrap();
    assert_eq!(
        health.0,
        "/v1/health/service/web?node-meta=rack%3Ar1&stale=&tag=prod"
    );
    assert!(
        !log.iter()
            .any(|(p, _)| p.starts_with("/v1/health/service/db")),
        "db is never read"
    );
    let service_reads = log
        .iter()
        .filter(|(p, _)| p.starts_with("/v1/health/service/"))
        .count();
    assert_eq!(service_reads, 2, "one read per change of web: {log:#?}");
}
