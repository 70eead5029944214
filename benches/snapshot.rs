//! Snapshot rebuild and request-path benchmarks.
//!
//! `cargo bench --bench snapshot`; numbers are recorded in the README.

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper_util::rt::TokioIo;
use sdbridge::config::Config;
use sdbridge::daemon::placeholder;
use sdbridge::http::{handle, AppState};
use sdbridge::merge::{Merger, Publisher};
use sdbridge::metrics::Metrics;
use sdbridge::snapshot::Snapshot;
use sdbridge::source::{Change, Part, SlotId, Update};
use sdbridge::targetgroup::{LabelSet, TargetGroup};

const FILES: usize = 1000;

/// A file_sd file: its path and groups.
type File = (String, Vec<TargetGroup>);

/// `targets` targets in one-target groups spread over up to 1000 files,
/// labelled like the DBaaS seed case.
fn files(targets: usize, generation: usize) -> Vec<File> {
    let files = FILES.min(targets);
    (0..files)
        .map(|f| {
            (
                format!("/etc/sd/db-{f:04}.json"),
                (0..targets / files)
                    .map(|i| {
                        let n = f * (targets / files) + i;
                        TargetGroup::new(
                            [format!(
                                "127.{}.{}.{}:9104",
                                n / 65536 % 256,
                                n / 256 % 256,
                                n % 256
                            )],
                            LabelSet::from([
                                ("dbms", "MySQL"),
                                ("service_name", "My서비스"),
                                (
                                    "db_name",
                                    if i % 3 == 0 {
                                        "프라이머리"
                                    } else {
                                        "세컨더리"
                                    },
                                ),
                                (
                                    "role",
                                    if generation.is_multiple_of(2) {
                                        "replica"
                                    } else {
                                        "primary"
                                    },
                                ),
                                ("__meta_filepath", "/etc/sd/db.json"),
                            ]),
                        )
                    })
                    .collect(),
            )
        })
        .collect()
}

/// What the file source does with parsed files: serializes each into a
/// part (measured with the merge, as it is work done per change).
fn parts(files: &[File]) -> Vec<Part> {
    files
        .iter()
        .map(|(path, groups)| Part::new(path.as_str(), groups, "mysql"))
        .collect()
}

fn setup() -> (Merger, Arc<ArcSwap<Snapshot>>, Arc<Metrics>) {
    let config = Config::parse(
        "jobs:\n  - job_name: mysql\n    file_sd_configs: [{files: [/etc/sd/*.json]}]\n",
        Path::new("/etc/sdbridge.yml"),
    )
    .expect("config");
    let metrics = Arc::new(Metrics::new());
    let publisher = Publisher::new(placeholder());
    let merger = Merger::new(
        sdbridge::daemon::sequential_layout(&config),
        publisher.clone(),
        metrics.clone(),
    );
    (merger, publisher.snapshot.clone(), metrics)
}

fn update(change: Change) -> Update {
    Update {
        source: SlotId(0),
        change,
        synced: true,
        problem: None,
        errors: Vec::new(),
    }
}

fn rebuild(c: &mut Criterion) {
    let mut group = c.benchmark_group("rebuild");
    group.sample_size(10);
    for targets in [1_000usize, 100_000] {
        group.throughput(Throughput::Elements(targets as u64));
        let full = [files(targets, 0), files(targets, 1)];
        let (mut merger, snapshot, _) = setup();
        let mut generation = 0;
        group.bench_with_input(BenchmarkId::new("full", targets), &targets, |b, _| {
            b.iter(|| {
                generation += 1;
                merger.apply(update(Change::Replace(parts(&full[generation % 2]))));
                merger.publish();
            })
        });
        // Gzip of the whole job body in one piece: what every change cost
        // before parts kept their own deflate segments.
        let body = snapshot.load().jobs[0].rendered.body.to_bytes();
        group.bench_with_input(
            BenchmarkId::new("gzip_whole_body", targets),
            &targets,
            |b, _| b.iter(|| black_box(sdbridge::gzip::whole(body.clone()))),
        );
        // One file of many changes: only its fragment is re-serialized,
        // the body is re-chained and hashed.
        let (mut merger, _, _) = setup();
        merger.apply(update(Change::Replace(parts(&files(targets, 0)))));
        merger.publish();
        let one = [files(targets, 0), files(targets, 1)].map(|f| f[..1].to_vec());
        group.bench_with_input(
            BenchmarkId::new("one_file_changed", targets),
            &targets,
            |b, _| {
                b.iter(|| {
                    generation += 1;
                    merger.apply(update(Change::Patch(parts(&one[generation % 2]))));
                    merger.publish();
                })
            },
        );
        // The same, and the gzip of the new body as the gzip thread makes
        // it: one part deflated, the rest's segments reused, a CRC pass.
        let (mut merger, snapshot, _) = setup();
        merger.apply(update(Change::Replace(parts(&files(targets, 0)))));
        merger.publish();
        let mut chunks = sdbridge::gzip::Chunks::default();
        snapshot.load().jobs[0].rendered.compress_with(&mut chunks);
        group.bench_with_input(
            BenchmarkId::new("one_file_changed_with_gzip", targets),
            &targets,
            |b, _| {
                b.iter(|| {
                    generation += 1;
                    merger.apply(update(Change::Patch(parts(&one[generation % 2]))));
                    merger.publish();
                    let gzip = snapshot.load().jobs[0]
                        .rendered
                        .compress_with(&mut chunks)
                        .len();
                    chunks.rotate();
                    black_box(gzip)
                })
            },
        );
    }
    group.finish();
}

fn request(c: &mut Criterion) {
    let (mut merger, snapshot, metrics) = setup();
    merger.apply(update(Change::Replace(parts(&files(1_000, 0)))));
    merger.publish();
    let state = Arc::new(AppState {
        snapshot,
        metrics,
        reload: None,
        web: arc_swap::ArcSwap::from_pointee(sdbridge::web::Web::open()),
    });
    let mut group = c.benchmark_group("request");
    let req = Request::get("/http_sd/mysql").body(()).expect("request");
    group.bench_function("handler_1k_targets", |b| {
        b.iter(|| black_box(handle(&state, black_box(&req))))
    });
    let gz = Request::get("/http_sd/mysql")
        .header("accept-encoding", "gzip")
        .body(())
        .expect("request");
    group.bench_function("handler_1k_targets_gzip", |b| {
        b.iter(|| black_box(handle(&state, black_box(&gz))))
    });

    // A keep-alive HTTP/1.1 round trip over loopback TCP.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let mut sender = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(sdbridge::http::run(
            listener,
            state.clone(),
            sdbridge::http::Bounds::default(),
            std::future::pending(),
        ));
        let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        sender
    });
    group.bench_function("tcp_round_trip_1k_targets", |b| {
        b.iter(|| {
            rt.block_on(async {
                let req = Request::get("/http_sd/mysql")
                    .header("host", "127.0.0.1")
                    .body(Empty::<Bytes>::new())
                    .expect("request");
                sender.ready().await.expect("connection ready");
                let response = sender.send_request(req).await.expect("response");
                let body = response.into_body().collect().await.expect("body");
                black_box(body.to_bytes().len())
            })
        })
    });
    group.finish();
}

criterion_group!(benches, rebuild, request);
criterion_main!(benches);
