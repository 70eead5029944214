//! `sql_sd_configs`' guarantees against the real servers: read-only,
//! `query_timeout` enforced on the server, bounded connects, no password
//! in errors, `NOTIFY` wake-ups and a lost `LISTEN` connection reported.

use std::time::{Duration, Instant};

use sdbridge::source::sql::{Database, Dsn, Listener};
use sdbridge::targetgroup::{LabelSet, TargetGroup};

use crate::sql_util::{connect, groups, query, MariaDb, Postgres, SqliteFile, PASSWORD, TIMEOUT};

const WRITES: [&str; 5] = [
    "DELETE FROM w RETURNING addr AS __address__",
    "INSERT INTO w VALUES ('127.0.0.1:9') RETURNING addr AS __address__",
    "UPDATE w SET addr = 'x'",
    "DROP TABLE w",
    "CREATE TABLE w2 (addr VARCHAR(8))",
];

/// Each server half runs when its server is there (a missing MariaDB does
/// not skip PostgreSQL's); SQLite always runs.
#[tokio::test]
async fn writes_fail_and_leave_the_table_unchanged() {
    let seed = "CREATE TABLE w (addr VARCHAR(32)); INSERT INTO w VALUES ('127.0.0.1:1')";
    let sqlite = SqliteFile::create(seed).await;
    let maria = MariaDb::create();
    let pg = Postgres::create();
    let mut dsns = vec![sqlite.dsn()];
    if let Some(maria) = &maria {
        maria.exec(seed);
        dsns.push(maria.dsn());
    }
    if let Some(pg) = &pg {
        pg.exec(seed);
        dsns.push(pg.dsn());
    }
    for dsn in dsns {
        for sql in WRITES {
            let err = query(&dsn, sql).await.expect_err(sql);
            assert!(["query", "column"].contains(&err.kind), "{sql}: {err}");
        }
        let left = groups(&dsn, "SELECT addr AS __address__ FROM w").await;
        assert_eq!(
            left,
            [TargetGroup::new(["127.0.0.1:1"], LabelSet::default())],
            "{dsn}"
        );
    }
    if let Some(pg) = &pg {
        let err = query(&pg.dsn(), WRITES[0]).await.unwrap_err();
        assert!(err.message.contains("read-only transaction"), "{err}");
        assert_eq!(
            pg.exec("SELECT count(*) FROM pg_tables WHERE tablename = 'w2'")
                .trim(),
            "0"
        );
    }
    if let Some(maria) = &maria {
        let err = query(&maria.dsn(), WRITES[0]).await.unwrap_err();
        assert!(err.message.contains("READ ONLY"), "{err}");
        assert_eq!(maria.exec("SHOW TABLES LIKE 'w2'").trim(), "");
    }
}

/// Generous bound on what should take about a second: far below the
/// statements' 60 s, so only a timeout can meet it.
const PROMPTLY: Duration = Duration::from_secs(20);

/// Runs a 60 s statement under a 1 s `query_timeout`: a `timeout` error
/// long before the statement would end, nothing left running on the
/// server, the connection still good.
async fn check_timeout(dsn: &str, slow: &str, still_running: impl Fn() -> bool) {
    let mut db = connect(dsn, Duration::from_secs(1)).await;
    let start = Instant::now();
    let err = db.query(slow).await.expect_err("timeout");
    assert_eq!(err.kind, "timeout", "{err}");
    assert!(start.elapsed() < PROMPTLY, "{:?}", start.elapsed());
    let deadline = Instant::now() + PROMPTLY;
    while still_running() {
        assert!(
            Instant::now() < deadline,
            "the statement still runs on the server"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!db.is_broken());
    let ok = db
        .query("SELECT 'x' AS __address__")
        .await
        .expect("query after a timeout");
    assert_eq!(ok.rows, 1);
}

#[tokio::test]
async fn query_timeout_is_enforced_on_the_server() {
    let sqlite = SqliteFile::create("CREATE TABLE t (a TEXT)").await;
    check_timeout(
        &sqlite.dsn(),
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT 'a' AS __address__, max(x) AS n FROM c",
        || false,
    )
    .await;
    if let Some(maria) = MariaDb::create() {
        let user = maria.user.clone();
        check_timeout(&maria.dsn(), "SELECT '127.0.0.1:1' AS __address__, SLEEP(60) AS s", || {
            maria.exec(&format!(
                "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = '{user}' AND INFO LIKE '%SLEEP(60)%'"
            ))
            .trim()
                != "0"
        })
        .await;
    }
    if let Some(pg) = Postgres::create() {
        let user = pg.user.clone();
        check_timeout(&pg.dsn(), "SELECT '127.0.0.1:1' AS __address__, pg_sleep(60)::text AS s", || {
            pg.admin(&format!(
                "SELECT count(*) FROM pg_stat_activity WHERE usename = '{user}' AND state = 'active' AND query LIKE '%pg_sleep(60)%'"
            ))
            .trim()
                != "0"
        })
        .await;
    }
}

#[tokio::test]
async fn connect_is_bounded_and_a_silent_server_times_out() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    for scheme in ["mysql", "postgres"] {
        let dsn = Dsn::parse(&format!("{scheme}://u:{PASSWORD}@127.0.0.1:{port}/db")).unwrap();
        let start = Instant::now();
        let err = Database::connect(&dsn, Duration::from_millis(500))
            .await
            .unwrap_err();
        assert!(start.elapsed() < PROMPTLY, "{:?}", start.elapsed());
        assert_eq!(err.kind, "connect", "{err}");
        assert!(err.message.contains("no answer within"), "{err}");
        assert!(err.message.contains("u:***@127.0.0.1"), "{err}");
        assert!(!err.message.contains(PASSWORD), "{err}");
    }
    drop(listener);
    let missing = Dsn::parse("sqlite:///nonexistent/sdbridge/inv.db").unwrap();
    let err = Database::connect(&missing, TIMEOUT).await.unwrap_err();
    assert_eq!(err.kind, "connect", "{err}");
}

#[tokio::test]
async fn a_wrong_password_is_not_in_the_error() {
    let wrong = "Wr0ng-Secret-Pa55";
    if let Some(maria) = MariaDb::create() {
        let dsn = Dsn::parse(&maria.dsn().replace(PASSWORD, wrong)).unwrap();
        let err = Database::connect(&dsn, TIMEOUT).await.unwrap_err();
        assert_eq!(err.kind, "connect");
        assert!(err.message.contains("Access denied"), "{err}");
        assert!(
            !err.message.contains(wrong) && !format!("{err:?}").contains(wrong),
            "{err}"
        );
    }
    let Some(pg) = Postgres::create() else { return };
    // Where pg_hba trusts local TCP logins a wrong password goes through;
    // a database that does not exist fails either way.
    for url in [
        pg.dsn().replace(PASSWORD, wrong),
        format!(
            "postgres://{}:{wrong}@127.0.0.1:5432/{}_missing",
            pg.user, pg.db
        ),
    ] {
        let dsn = Dsn::parse(&url).unwrap();
        if let Err(err) = Database::connect(&dsn, TIMEOUT).await {
            assert_eq!(err.kind, "connect");
            assert!(
                !err.message.contains(wrong) && !format!("{err:?}").contains(wrong),
                "{err}"
            );
        }
    }
}

#[tokio::test]
async fn notify_wakes_the_listener_and_a_lost_connection_is_reported() {
    let pg = fixture!(Postgres);
    let dsn = Dsn::parse(&pg.dsn()).unwrap();
    let mut listener = Listener::connect(&dsn, "Inventory changed", TIMEOUT)
        .await
        .unwrap();
    let mut wait = tokio::spawn(async move {
        let woke = listener.recv().await;
        (listener, woke)
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!wait.is_finished(), "woke without a NOTIFY");
    pg.exec(
        "SELECT pg_notify('Inventory changed', 'a'); SELECT pg_notify('Inventory changed', 'b')",
    );
    let (mut listener, woke) = tokio::time::timeout(PROMPTLY, &mut wait)
        .await
        .unwrap()
        .unwrap();
    woke.unwrap();
    // Kill the LISTEN session: the next recv reports it, and keeps doing so.
    let user = pg.user.clone();
    let wait = tokio::spawn(async move {
        // 'b' may still be on its way: it wakes at most once more.
        let mut first = listener.recv().await;
        if first.is_ok() {
            first = listener.recv().await;
        }
        let second = listener.recv().await;
        (first, second)
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    pg.admin(&format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{user}' AND query LIKE 'LISTEN%'"
    ));
    let (first, second) = tokio::time::timeout(PROMPTLY, wait).await.unwrap().unwrap();
    for result in [first, second] {
        let err = result.unwrap_err();
        assert_eq!(err.kind, "listen", "{err}");
        assert!(!err.message.contains(PASSWORD));
    }
    let mysql = Dsn::parse("mysql://u:p@127.0.0.1/db").unwrap();
    assert_eq!(
        Listener::connect(&mysql, "x", TIMEOUT)
            .await
            .unwrap_err()
            .kind,
        "dsn"
    );
}

/// Waits (20 s at most) until `pg`'s user has `want` `LISTEN` sessions.
async fn wait_listens(pg: &std::sync::Arc<Postgres>, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let pg = pg.clone();
        let now = tokio::task::spawn_blocking(move || {
            pg.admin(&format!(
                "SELECT count(*) FROM pg_stat_activity WHERE usename = '{}' AND query ILIKE 'LISTEN%'",
                pg.user
            ))
        })
        .await
        .unwrap();
        if now.trim() == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {want} LISTEN sessions: {now}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The `LISTEN` connection belongs to its source's task: when the task is
/// dropped (a supervisor restart, an abort) without being told to stop,
/// the connection goes with it instead of staying open beside the next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listen_connection_ends_with_its_source_task() {
    use sdbridge::source::{Outbox, SlotId, Source, SourceContext};
    let pg = std::sync::Arc::new(fixture!(Postgres));
    pg.exec("CREATE TABLE h (a text); INSERT INTO h VALUES ('127.0.0.1:1')");
    let text = format!(
        "jobs:\n  - job_name: j\n    sql_sd_configs:\n      - dsn: '{}'\n        query: 'SELECT a AS __address__ FROM h'\n        refresh_interval: 1h\n        notify_channel: inventory\n",
        pg.dsn()
    );
    let mut config =
        sdbridge::config::Config::parse(&text, std::path::Path::new("/tmp/s.yml")).expect("config");
    let source = std::sync::Arc::new(config.jobs.remove(0).sql_sd_configs.remove(0));
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    let drain = tokio::spawn(async move { while rx.recv().await.is_some() {} });
    let ctx = SourceContext {
        out: Outbox::new(SlotId(1), "j", ("sql_sd#test", "sql_sd"), tx),
        shutdown: tokio_util::sync::CancellationToken::new(),
        shared: Default::default(),
    };
    let task = tokio::spawn(source.run(ctx.clone()));
    wait_listens(&pg, "1").await;
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    assert!(!ctx.shutdown.is_cancelled());
    wait_listens(&pg, "0").await;
    drop(ctx);
    drain.abort();
}
