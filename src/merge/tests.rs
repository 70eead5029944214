//! The merger on its own: layouts, updates, reloads, restored bodies.

use super::*;
use crate::config::Config;
use crate::daemon::placeholder;
use crate::pipeline::{JobLayout, Part, SourceLayout};
use crate::state;
use crate::targetgroup::{LabelSet, TargetGroup};
use std::path::Path;

fn merger() -> (Merger, Arc<ArcSwap<Snapshot>>) {
    let (m, p) = merger_with_metrics(Arc::new(Metrics::new()));
    (m, p.snapshot.clone())
}

/// Job `a`: static (slot 0) and file_sd (slot 1); job `b`: no sources.
fn merger_with_metrics(metrics: Arc<Metrics>) -> (Merger, Arc<Publisher>) {
    let config = Config::parse(
        "jobs:\n  - job_name: a\n    static_configs: [{targets: ['127.0.0.1:1']}]\n    file_sd_configs: [{files: [/sd/*.json]}]\n  - job_name: b\n",
        Path::new("/etc/sdbridge.yml"),
    )
    .unwrap();
    let publisher = Publisher::new(placeholder());
    let merger = Merger::new(
        crate::daemon::sequential_layout(&config),
        publisher.clone(),
        metrics,
    );
    (merger, publisher)
}

fn part(key: &str, target: &str) -> Part {
    Part::new(key, &[TargetGroup::new([target], LabelSet::default())], "a")
}

/// Syncs job `a`: its static source serves `s`, its file_sd source
/// `files`; then publishes.
fn serve_a(m: &mut Merger, files: Vec<Part>) {
    m.apply(update(
        0,
        Change::Replace(vec![part("static_configs", "s")]),
        None,
    ));
    m.apply(update(1, Change::Replace(files), None));
    m.publish();
}

fn update(index: usize, change: Change, problem: Option<&str>) -> Update {
    Update {
        source: SlotId(index as u64),
        change,
        synced: true,
        problem: problem.map(str::to_string),
        errors: Vec::new(),
    }
}

fn targets(body: &crate::chain::Chain) -> Vec<String> {
    let groups: Vec<serde_json::Value> = serde_json::from_slice(&body.to_bytes()).unwrap();
    groups
        .iter()
        .flat_map(|g| g["targets"].as_array().unwrap().clone())
        .map(|t| t.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn job_is_ready_only_when_every_source_synced() {
    let (mut m, snap) = merger();
    let s = snap.load();
    assert!(!s.job("a").unwrap().ready);
    assert!(s.job("b").unwrap().ready, "a job without sources is ready");
    assert!(!s.all_ready);
    m.apply(update(
        0,
        Change::Replace(vec![part("static_configs", "127.0.0.1:1")]),
        None,
    ));
    m.publish();
    assert!(!snap.load().job("a").unwrap().ready);
    m.apply(update(1, Change::Replace(vec![]), None));
    m.publish();
    let s = snap.load();
    assert!(s.job("a").unwrap().ready && s.all_ready);
    assert_eq!(targets(&s.job("a").unwrap().rendered.body), ["127.0.0.1:1"]);
}

#[test]
fn order_is_source_then_part_key_and_patches_touch_only_their_part() {
    let (mut m, snap) = merger();
    serve_a(
        &mut m,
        vec![part("/sd/b.json", "b"), part("/sd/a.json", "a")],
    );
    assert_eq!(
        targets(&snap.load().job("a").unwrap().rendered.body),
        ["s", "a", "b"]
    );
    m.apply(update(
        1,
        Change::Patch(vec![part("/sd/c.json", "c")]),
        None,
    ));
    m.apply(update(
        1,
        Change::Patch(vec![Part::removed("/sd/a.json")]),
        None,
    ));
    m.publish();
    let s = snap.load();
    assert_eq!(targets(&s.job("a").unwrap().rendered.body), ["s", "b", "c"]);
    assert_eq!(targets(&s.all.body), ["s", "b", "c"]);
}

#[test]
fn a_problem_keeps_the_last_good_groups_and_the_same_render() {
    let (mut m, snap) = merger();
    serve_a(&mut m, vec![part("/sd/a.json", "a")]);
    let before = snap.load().job("a").unwrap().rendered.clone();
    m.apply(update(1, Change::None, Some("/sd/a.json:1:1: broken")));
    m.publish();
    let s = snap.load();
    let job = s.job("a").unwrap();
    assert!(
        Arc::ptr_eq(&before, &job.rendered),
        "same body, same render"
    );
    assert_eq!(
        job.sources[1].problem.as_deref(),
        Some("/sd/a.json:1:1: broken")
    );
    assert!(job.ready);
}

#[test]
fn a_reload_keeps_kept_sources_and_holds_jobs_until_synced() {
    let metrics = Arc::new(Metrics::new());
    let (mut m, publisher) = merger_with_metrics(metrics.clone());
    serve_a(&mut m, vec![part("/sd/a.json", "old")]);
    let served_before = publisher.snapshot.load().job("a").unwrap().rendered.clone();
    assert!(metrics
        .encode(&publisher.snapshot.load())
        .contains("job=\"b\""));

    // Job a keeps slot 0 and gets a new file_sd source (slot 5); job b
    // goes away.
    let mut layout = Layout::default();
    let mut a = JobLayout {
        name: "a".into(),
        key: String::new(),
        sources: Vec::new(),
    };
    for (slot, kind) in [(0, "static"), (5, "file_sd")] {
        a.sources.push(SourceLayout {
            slot: SlotId(slot),
            kind,
            name: format!("{kind}#x"),
            description: String::new(),
        });
    }
    layout.jobs.push(a);
    m.reconfigure(layout);
    m.publish();
    let s = publisher.snapshot.load();
    assert!(s.job("a").unwrap().ready, "no 503 because of a reload");
    assert!(Arc::ptr_eq(&s.job("a").unwrap().rendered, &served_before));
    assert!(s.job("b").is_none());
    assert!(
        !metrics.encode(&s).contains("job=\"b\""),
        "removed job's series"
    );
    // The stopped source's late update is dropped.
    m.apply(update(
        1,
        Change::Replace(vec![part("/sd/a.json", "stale")]),
        None,
    ));
    m.publish();
    let s = publisher.snapshot.load();
    assert!(Arc::ptr_eq(&s.job("a").unwrap().rendered, &served_before));
    // The new source syncs: the kept source's parts are still there.
    m.apply(update(
        5,
        Change::Replace(vec![part("/sd/a.json", "new")]),
        None,
    ));
    m.publish();
    let s = publisher.snapshot.load();
    assert_eq!(targets(&s.job("a").unwrap().rendered.body), ["s", "new"]);
    assert_eq!(targets(&s.all.body), ["s", "new"]);
}

/// Job `a` of [`merger_with_metrics`] with a body read back from
/// `state_dir`, built at `built`, under `key` (its real key or not).
fn restored_merger(
    right_key: bool,
    built: SystemTime,
) -> (Merger, Arc<Publisher>, Arc<Writer>, tempfile::TempDir) {
    let config = Config::parse(
        "jobs:\n  - job_name: a\n    static_configs: [{targets: ['127.0.0.1:1']}]\n    file_sd_configs: [{files: [/sd/*.json]}]\n  - job_name: b\n",
        Path::new("/etc/sdbridge.yml"),
    )
    .unwrap();
    let mut layout = crate::daemon::sequential_layout(&config);
    let dir = tempfile::tempdir().unwrap();
    layout.state_dir = Some(dir.path().to_path_buf());
    let key = if right_key {
        layout.jobs[0].key.clone()
    } else {
        "another".to_string()
    };
    // What the job served before the restart: 127.0.0.1:9 from its file.
    let fragment = part("/sd/a.json", "127.0.0.1:9").fragment;
    let body = render(std::iter::once(&fragment), &Bytes::new(), None)
        .body
        .to_bytes();
    let persisted = state::Persisted {
        job: "a".into(),
        key,
        built_at: built,
        body,
        groups: 1,
        targets: 1,
    };
    let metrics = Arc::new(Metrics::new());
    let writer = Writer::spawn(metrics.clone());
    let publisher = Publisher::new(placeholder());
    let mut m = Merger::empty(publisher.clone(), metrics).with_state(Persistence {
        writer: writer.clone(),
        loaded: [("a".to_string(), persisted)].into_iter().collect(),
    });
    m.reconfigure(layout);
    m.publish();
    (m, publisher, writer, dir)
}

fn sync_a(m: &mut Merger, file_target: &str) {
    m.apply(update(
        0,
        Change::Replace(vec![part("static_configs", "127.0.0.1:1")]),
        None,
    ));
    m.publish();
    m.apply(update(
        1,
        Change::Replace(vec![part("/sd/a.json", file_target)]),
        None,
    ));
    m.publish();
}

#[test]
fn a_restored_body_is_served_ready_until_the_sources_sync() {
    let built = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
    let (mut m, publisher, writer, dir) = restored_merger(true, built);
    let s = publisher.snapshot.load();
    let a = s.job("a").unwrap();
    assert!(a.ready && a.from_state && s.all_ready);
    assert_eq!(targets(&a.rendered.body), ["127.0.0.1:9"]);
    assert_eq!(
        a.rendered.last_modified, built,
        "Last-Modified as persisted"
    );
    // One source synced: still the restored body.
    m.apply(update(
        0,
        Change::Replace(vec![part("static_configs", "127.0.0.1:1")]),
        None,
    ));
    m.publish();
    assert!(publisher.snapshot.load().job("a").unwrap().from_state);
    m.apply(update(
        1,
        Change::Replace(vec![part("/sd/a.json", "127.0.0.1:2")]),
        None,
    ));
    m.publish();
    let s = publisher.snapshot.load();
    let a = s.job("a").unwrap();
    assert!(a.ready && !a.from_state);
    assert_eq!(targets(&a.rendered.body), ["127.0.0.1:1", "127.0.0.1:2"]);
    assert!(a.rendered.last_modified > built);
    writer.close();
    let file = std::fs::read(dir.path().join(state::file_name("a"))).unwrap();
    assert!(
        file.ends_with(&a.rendered.body.to_bytes()),
        "the live body is persisted"
    );
}

#[test]
fn a_restored_body_with_another_key_is_not_served() {
    let (mut m, publisher, writer, _dir) = restored_merger(false, SystemTime::now());
    let a = publisher.snapshot.load().job("a").unwrap().clone();
    assert!(!a.ready && !a.from_state);
    sync_a(&mut m, "127.0.0.1:2");
    assert!(publisher.snapshot.load().job("a").unwrap().ready);
    writer.close();
}

#[test]
fn syncing_to_the_restored_body_keeps_its_last_modified() {
    let built = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
    let (mut m, publisher, writer, dir) = restored_merger(true, built);
    let before = publisher.snapshot.load().job("a").unwrap().rendered.clone();
    // The sources find what was persisted: the same bytes.
    m.apply(update(0, Change::Replace(vec![]), None));
    m.apply(update(
        1,
        Change::Replace(vec![part("/sd/a.json", "127.0.0.1:9")]),
        None,
    ));
    m.publish();
    let a = publisher.snapshot.load().job("a").unwrap().clone();
    assert!(a.ready && !a.from_state);
    assert_eq!(
        (&a.rendered.etag, a.rendered.last_modified),
        (&before.etag, before.last_modified),
        "same ETag, same Last-Modified"
    );
    assert!(
        a.rendered
            .pieces
            .iter()
            .all(|p| !matches!(p, crate::snapshot::Piece::Raw(_))),
        "served from the sources' fragments, the restored bytes freed"
    );
    writer.close();
    assert!(
        !dir.path().join(state::file_name("a")).exists(),
        "nothing new to write"
    );
}

/// A re-read part equal to the served one (file_sd's refresh_interval
/// re-reads every file) must not leave two copies alive: the kept
/// render holds the first.
#[test]
fn an_equal_part_keeps_the_served_fragment() {
    let (mut m, snap) = merger();
    serve_a(&mut m, vec![part("/sd/a.json", "a")]);
    let before = snap.load().job("a").unwrap().rendered.clone();
    let served = m.jobs[0].sources[1].parts["/sd/a.json"].clone();
    m.apply(update(
        1,
        Change::Patch(vec![part("/sd/a.json", "a")]),
        None,
    ));
    m.publish();
    assert!(Arc::ptr_eq(
        &before,
        &snap.load().job("a").unwrap().rendered
    ));
    assert!(Arc::ptr_eq(
        &served,
        &m.jobs[0].sources[1].parts["/sd/a.json"]
    ));
    m.apply(update(
        1,
        Change::Patch(vec![part("/sd/a.json", "b")]),
        None,
    ));
    m.publish();
    assert!(!Arc::ptr_eq(
        &served,
        &m.jobs[0].sources[1].parts["/sd/a.json"]
    ));
}

#[test]
fn an_unchanged_layout_keeps_the_same_render() {
    let (mut m, snap) = merger();
    serve_a(&mut m, vec![part("/sd/a.json", "a")]);
    let before = snap.load().job("a").unwrap().rendered.clone();
    let config = Config::parse(
        "jobs:\n  - job_name: a\n    static_configs: [{targets: ['127.0.0.1:1']}]\n    file_sd_configs: [{files: [/sd/*.json]}]\n  - job_name: b\n",
        Path::new("/etc/sdbridge.yml"),
    )
    .unwrap();
    m.reconfigure(crate::daemon::sequential_layout(&config));
    m.publish();
    let after = snap.load().job("a").unwrap().rendered.clone();
    assert!(Arc::ptr_eq(&before, &after), "same ETag and Last-Modified");
}
