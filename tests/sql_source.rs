//! `sql_sd_configs` as a user runs it: the real binary against real
//! MariaDB and PostgreSQL (throwaway databases from `sql_util`), and real
//! Prometheus and VictoriaMetrics consuming the job.

use std::time::Duration;

use crate::e2e::{Consumer, DROP_ALL};
use crate::sql_util::{MariaDb, Postgres, PASSWORD};
use crate::util::{groups, poll_until, run_cli, Bridge, Dir};

const SEED: &str = "CREATE TABLE hosts (address VARCHAR(64) NOT NULL, dbms VARCHAR(16), service_name VARCHAR(64), db_name VARCHAR(64), role VARCHAR(16));
INSERT INTO hosts VALUES ('127.0.0.1:9104', 'MySQL', 'My서비스', '프라이머리', 'primary'), ('127.0.0.2:9104', 'MySQL', 'My서비스', '세컨더리', 'replica'), ('127.0.0.3:9104', 'MySQL', 'My서비스', '세컨더리', 'replica');";

const QUERY: &str = "SELECT address AS __address__, dbms, service_name, db_name, role FROM hosts";

fn config(dir: &Dir, dsn: &str, extra: &str) -> std::path::PathBuf {
    dir.write(
        "sdbridge.yml",
        &format!(
            "jobs:\n  - job_name: inventory\n    sql_sd_configs:\n      - dsn: '{dsn}'\n        query: \"{QUERY}\"\n{extra}"
        ),
    )
}

fn targets(body: &str) -> Vec<String> {
    let mut t: Vec<String> = groups(body).into_iter().flat_map(|g| g.0).collect();
    t.sort();
    t
}

fn assert_no_password(bridge: &Bridge) {
    for (what, text) in [
        ("log", bridge.log()),
        ("/metrics", bridge.get("/metrics").text()),
        ("status page", bridge.get("/").text()),
    ] {
        assert!(
            !text.contains(PASSWORD),
            "the password is in the {what}:\n{text}"
        );
    }
}

#[test]
fn mariadb_changes_are_polled_and_a_lost_table_keeps_the_last_good_targets() {
    let Some(db) = MariaDb::create() else { return };
    db.exec(SEED);
    let dir = Dir::new();
    let bridge = Bridge::start_unready(&config(&dir, &db.dsn(), "        refresh_interval: 1s\n"));
    let body = bridge.wait_body("/http_sd/inventory", "seed rows", |b| targets(b).len() == 3);
    let g = groups(&body);
    assert!(g.iter().all(|(_, l)| l["service_name"] == "My서비스"));
    db.exec(
        "INSERT INTO hosts VALUES ('127.0.0.4:9104', 'MySQL', 'My서비스', '세컨더리', 'replica')",
    );
    let good = bridge.wait_body("/http_sd/inventory", "a new row", |b| targets(b).len() == 4);

    // The table goes away: the last good targets stay, the error shows.
    db.exec("RENAME TABLE hosts TO hosts_away");
    let up = || bridge.metric("sdbridge_source_up", &["job=\"inventory\""]);
    poll_until(Duration::from_secs(20), "source down", || {
        (up() == Some(0.0)).then_some(())
    });
    assert_eq!(bridge.get("/http_sd/inventory").text(), good);
    assert!(
        bridge.get("/").text().contains("hosts"),
        "the error names the table"
    );
    assert!(bridge.metric("sdbridge_source_errors_total", &["error=\"sql_query\""]) >= Some(1.0));
    db.exec("RENAME TABLE hosts_away TO hosts");
    poll_until(Duration::from_secs(20), "source up again", || {
        (up() == Some(1.0)).then_some(())
    });
    assert_eq!(bridge.get("/http_sd/inventory").text(), good);
    assert!(bridge.metric("sdbridge_sql_rows", &["job=\"inventory\""]) == Some(4.0));
    assert_no_password(&bridge);

    // `dump` prints the body, and not the password.
    let out = run_cli(Some(dir.tmp.path()), ["dump", "--config", "sdbridge.yml"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(targets(&String::from_utf8_lossy(&out.stdout)).len(), 4);
    assert!(!String::from_utf8_lossy(&out.stderr).contains(PASSWORD));
}

/// A change is served at once on `NOTIFY`, with an hourly refresh.
#[test]
fn postgres_notify_is_served_at_once() {
    let Some(db) = Postgres::create() else { return };
    db.exec(SEED);
    let dir = Dir::new();
    let bridge = Bridge::start_unready(&config(
        &dir,
        &db.dsn(),
        "        refresh_interval: 1h\n        notify_channel: inventory\n",
    ));
    bridge.wait_body("/http_sd/inventory", "seed rows", |b| targets(b).len() == 3);
    // Once the LISTEN is in place, a notification refreshes at once.
    poll_until(Duration::from_secs(20), "LISTEN connection", || {
        let n = db.admin("SELECT count(*) FROM pg_stat_activity WHERE query ILIKE 'LISTEN%'");
        (n.trim() != "0").then_some(())
    });
    db.exec("INSERT INTO hosts VALUES ('127.0.0.9:9104', 'MySQL', 'My서비스', '세컨더리', 'replica'); NOTIFY inventory;");
    bridge.wait_body("/http_sd/inventory", "the notified row", |b| {
        b.contains("127.0.0.9:9104")
    });
    assert_no_password(&bridge);
}

/// Prometheus and VictoriaMetrics consuming the SQL job through
/// `http_sd_configs` discover exactly the inventory's labels.
#[test]
fn prometheus_and_victoria_metrics_discover_the_inventory() {
    let Some(prometheus) = crate::util::require_binary("prometheus") else {
        return;
    };
    let Some(victoria) = crate::util::require_binary("victoria-metrics") else {
        return;
    };
    let Some(db) = MariaDb::create() else { return };
    db.exec(SEED);
    let dir = Dir::new();
    let bridge = Bridge::start(&config(&dir, &db.dsn(), ""));
    let scrape = dir.write(
        "scrape.yml",
        &format!(
            "global: {{scrape_interval: 1h}}\nscrape_configs:\n  - job_name: inventory\n    http_sd_configs:\n      - url: http://{}/http_sd/inventory\n{DROP_ALL}",
            bridge.addr
        ),
    );
    let consumers = [
        Consumer::prometheus(&prometheus, &scrape, &dir.path("prom-data")),
        Consumer::victoria_metrics(&victoria, &scrape, &dir.path("vm-data")),
    ];
    for consumer in &consumers {
        let found = poll_until(Duration::from_secs(60), consumer.name, || {
            let dropped = consumer.dropped();
            let labels = dropped.get("inventory")?.clone();
            (labels.len() == 3).then_some(labels)
        });
        let mut seen: Vec<(String, String, String)> = found
            .iter()
            .map(|l| {
                assert_eq!(l["service_name"], "My서비스", "{}", consumer.name);
                assert_eq!(l["dbms"], "MySQL", "{}", consumer.name);
                assert_eq!(l["__meta_sdbridge_job"], "inventory", "{}", consumer.name);
                (
                    l["__address__"].clone(),
                    l["db_name"].clone(),
                    l["role"].clone(),
                )
            })
            .collect();
        seen.sort();
        assert_eq!(
            seen,
            [
                (
                    "127.0.0.1:9104".into(),
                    "프라이머리".into(),
                    "primary".into()
                ),
                ("127.0.0.2:9104".into(), "세컨더리".into(), "replica".into()),
                ("127.0.0.3:9104".into(), "세컨더리".into(), "replica".into()),
            ],
            "{}",
            consumer.name
        );
    }
}

/// `examples/seed-sql.yml` over `examples/inventory/inventory.sql`, as the
/// README's walk-through runs them, on both databases.
#[test]
fn the_seed_inventory_example_serves_the_seed_targets() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let schema = std::fs::read_to_string(root.join("examples/inventory/inventory.sql")).unwrap();
    let example = std::fs::read_to_string(root.join("examples/seed-sql.yml")).unwrap();
    let example_dsn = "mysql://sdbridge:change-me@127.0.0.1:3306/inventory";
    assert!(example.contains(example_dsn));
    let check = run_cli(Some(root), ["check", "examples/seed-sql.yml"]);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
    let mut dsns = Vec::new();
    let maria = MariaDb::create();
    if let Some(db) = &maria {
        db.exec(&schema);
        dsns.push(db.dsn());
    }
    let pg = Postgres::create();
    if let Some(db) = &pg {
        db.exec(&schema);
        dsns.push(db.dsn());
    }
    let mut bodies = Vec::new();
    for dsn in dsns {
        let dir = Dir::new();
        dir.write("seed-sql.yml", &example.replace(example_dsn, &dsn));
        let out = run_cli(Some(dir.tmp.path()), ["dump", "--config", "seed-sql.yml"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let body = String::from_utf8_lossy(&out.stdout).to_string();
        assert_eq!(
            targets(&body),
            [
                "127.0.0.1:9100",
                "127.0.0.1:9104",
                "127.0.0.2:9100",
                "127.0.0.2:9104",
                "127.0.0.3:9100",
                "127.0.0.3:9104"
            ]
        );
        assert!(body.contains("\"db_name\":\"프라이머리\""), "{body}");
        bodies.push(body);
    }
    // The same rows give the same bytes on either database.
    if let [a, b] = &bodies[..] {
        assert_eq!(a, b);
    }
}

/// A PostgreSQL of the test's own (a temporary data directory, a free
/// port, run as the unprivileged `postgres` user), so it can be stopped and
/// started without touching the shared server.
struct PrivatePostgres {
    dir: tempfile::TempDir,
    bin: std::path::PathBuf,
    port: u16,
}

impl PrivatePostgres {
    fn start() -> Option<PrivatePostgres> {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(Result::ok)
            .map(|e| e.path().join("bin"))
            .find(|b| b.join("initdb").is_file());
        let Some(bin) = bin else {
            if std::env::var("SDBRIDGE_REQUIRE_E2E").as_deref() == Ok("1") {
                panic!("no /usr/lib/postgresql/*/bin/initdb and SDBRIDGE_REQUIRE_E2E=1");
            }
            eprintln!("SKIPPED: no /usr/lib/postgresql/*/bin/initdb");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let status = std::process::Command::new("chown")
            .args(["postgres:postgres", dir.path().to_str().unwrap()])
            .status()
            .unwrap();
        assert!(status.success());
        let pg = PrivatePostgres {
            dir,
            bin,
            port: crate::util::free_port(),
        };
        pg.as_postgres(&[
            "initdb",
            "-D",
            &pg.data(),
            "-A",
            "trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
        ]);
        pg.up();
        Some(pg)
    }

    fn data(&self) -> String {
        format!("{}/data", self.dir.path().display())
    }

    fn as_postgres(&self, args: &[&str]) {
        let program = self.bin.join(args[0]);
        let out = std::process::Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(program)
            .args(&args[1..])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn up(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1",
            self.port,
            self.dir.path().display()
        );
        let log = format!("{}/log", self.dir.path().display());
        self.as_postgres(&[
            "pg_ctl",
            "-D",
            &self.data(),
            "-o",
            &options,
            "-l",
            &log,
            "-w",
            "start",
        ]);
    }

    fn down(&self) {
        self.as_postgres(&["pg_ctl", "-D", &self.data(), "-m", "fast", "-w", "stop"]);
    }

    fn sql(&self, sql: &str) {
        let host = self.dir.path().display().to_string();
        let port = self.port.to_string();
        self.as_postgres(&[
            "psql",
            "-X",
            "-q",
            "-h",
            &host,
            "-p",
            &port,
            "-d",
            "postgres",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            sql,
        ]);
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = std::process::Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .args(["-D", &self.data(), "-m", "immediate", "stop"])
            .output();
    }
}

/// Refresh rounds the source has run (successful or not).
fn rounds(bridge: &Bridge) -> f64 {
    bridge
        .metric(
            "sdbridge_source_refresh_duration_seconds_count",
            &["job=\"inventory\""],
        )
        .unwrap_or(0.0)
}

/// The database restarts mid-run, with an hourly refresh: the outage shows
/// at once through the lost `LISTEN` connection, the last good targets stay
/// served (and the job ready) while it is down, and after the `LISTEN`
/// reconnect the source refreshes once, serving a row that changed without
/// a `NOTIFY`.
#[test]
fn a_database_restart_keeps_the_targets_and_reconnects() {
    let Some(pg) = PrivatePostgres::start() else {
        return;
    };
    pg.sql(SEED);
    let dir = Dir::new();
    let dsn = format!("postgres://postgres@127.0.0.1:{}/postgres", pg.port);
    let bridge = Bridge::start_unready(&config(
        &dir,
        &dsn,
        "        refresh_interval: 1h\n        notify_channel: inventory\n",
    ));
    let good = bridge.wait_body("/http_sd/inventory", "seed rows", |b| targets(b).len() == 3);
    // The first round, and the one after the LISTEN connection is up.
    poll_until(Duration::from_secs(20), "two rounds", || {
        (rounds(&bridge) >= 2.0).then_some(())
    });
    // Not notified: only the refresh after the reconnect can serve it.
    pg.sql(
        "INSERT INTO hosts VALUES ('127.0.0.8:9104', 'MySQL', 'My서비스', '세컨더리', 'replica')",
    );
    pg.down();
    let up = || bridge.metric("sdbridge_source_up", &["job=\"inventory\""]);
    poll_until(Duration::from_secs(20), "source down", || {
        (up() == Some(0.0)).then_some(())
    });
    assert_eq!(bridge.get("/http_sd/inventory").text(), good);
    assert_eq!(bridge.get("/-/ready").status, 200);
    assert!(
        bridge.get("/").text().contains("LISTEN"),
        "the status page shows why"
    );
    pg.up();
    poll_until(Duration::from_secs(30), "source up again", || {
        (up() == Some(1.0)).then_some(())
    });
    bridge.wait_body("/http_sd/inventory", "the row changed while down", |b| {
        b.contains("127.0.0.8:9104")
    });
}

/// Only the `LISTEN` connection is lost (its backend terminated, the role
/// unable to log in again), with an hourly refresh: the source reports it
/// at once like any failure, the targets stay served, and the report
/// clears when the connection is back.
#[test]
fn a_lost_listen_connection_is_reported_until_it_is_back() {
    let Some(pg) = Postgres::create() else { return };
    pg.exec(SEED);
    let dir = Dir::new();
    let bridge = Bridge::start_unready(&config(
        &dir,
        &pg.dsn(),
        "        refresh_interval: 1h\n        notify_channel: inventory\n",
    ));
    let good = bridge.wait_body("/http_sd/inventory", "seed rows", |b| targets(b).len() == 3);
    let listens = || {
        pg.admin(&format!(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = '{}' AND query ILIKE 'LISTEN%'",
            pg.user
        ))
        .trim()
        .to_string()
    };
    poll_until(Duration::from_secs(20), "LISTEN connection", || {
        (listens() == "1").then_some(())
    });
    let up = || bridge.metric("sdbridge_source_up", &["job=\"inventory\""]);
    poll_until(Duration::from_secs(20), "source up", || {
        (up() == Some(1.0)).then_some(())
    });
    pg.admin(&format!("ALTER ROLE \"{}\" NOLOGIN", pg.user));
    pg.admin(&format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{}' AND query ILIKE 'LISTEN%'",
        pg.user
    ));
    poll_until(Duration::from_secs(20), "source down", || {
        (up() == Some(0.0)).then_some(())
    });
    let page = bridge.get("/").text();
    assert!(
        page.contains("LISTEN"),
        "the status page shows why:\n{page}"
    );
    assert_eq!(bridge.get("/http_sd/inventory").text(), good);
    assert_eq!(bridge.get("/-/ready").status, 200);
    // Every failed attempt counts, as for any source.
    poll_until(
        Duration::from_secs(20),
        "a failed reconnect counted",
        || {
            (bridge.metric("sdbridge_source_errors_total", &["error=\"sql_listen\""]) >= Some(2.0))
                .then_some(())
        },
    );
    assert_eq!(up(), Some(0.0), "still down while LISTEN is");

    pg.admin(&format!("ALTER ROLE \"{}\" LOGIN", pg.user));
    poll_until(Duration::from_secs(60), "source up again", || {
        (up() == Some(1.0)).then_some(())
    });
    poll_until(Duration::from_secs(20), "LISTEN again", || {
        (listens() == "1").then_some(())
    });
    assert!(!bridge.get("/").text().contains("LISTEN connection"));
    assert_no_password(&bridge);
}

/// A slow query (over sqlx's 1 s alert threshold) and duplicate rows do
/// not log on every round: the duplicates once when they appear and once
/// when they are gone, sqlx's statement logging not at all at info.
#[test]
fn slow_queries_and_duplicates_do_not_log_every_round() {
    let Some(db) = MariaDb::create() else { return };
    db.exec(SEED);
    db.exec("INSERT INTO hosts SELECT * FROM hosts WHERE role = 'primary'");
    let dir = Dir::new();
    let path = dir.write(
        "sdbridge.yml",
        "jobs:\n  - job_name: inventory\n    sql_sd_configs:\n      - dsn: 'DSN'\n        query: \"SELECT address AS __address__, role FROM hosts WHERE SLEEP(0.4) = 0\"\n        refresh_interval: 1s\n        query_timeout: 10s\n"
            .replace("DSN", &db.dsn())
            .as_str(),
    );
    let bridge = Bridge::start_unready(&path);
    bridge.wait_body("/http_sd/inventory", "seed rows", |b| targets(b).len() == 3);
    let count = |what: &str| bridge.log().matches(what).count();
    poll_until(Duration::from_secs(60), "four rounds", || {
        (rounds(&bridge) >= 4.0).then_some(())
    });
    assert_eq!(count("slow statement"), 0, "{}", bridge.log());
    assert_eq!(count("repeat a target"), 1, "{}", bridge.log());
    db.exec("DELETE FROM hosts WHERE role = 'primary' LIMIT 1");
    poll_until(Duration::from_secs(30), "the duplicates gone", || {
        (count("duplicate rows are gone") == 1).then_some(())
    });
    let seen = rounds(&bridge);
    poll_until(Duration::from_secs(30), "two more rounds", || {
        (rounds(&bridge) >= seen + 2.0).then_some(())
    });
    assert_eq!(count("repeat a target"), 1, "{}", bridge.log());
    assert_eq!(count("duplicate rows are gone"), 1, "{}", bridge.log());
}

fn sighup(bridge: &Bridge) {
    let status = std::process::Command::new("kill")
        .args(["-HUP", &bridge.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// The `configuration reloaded` log line's (kept, started, stopped), once
/// there are `n` of them.
fn reloaded(bridge: &Bridge, n: usize) -> (u64, u64, u64) {
    poll_until(Duration::from_secs(20), "the reload's log line", || {
        let lines: Vec<serde_json::Value> = bridge
            .log()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .filter(|v: &serde_json::Value| v["fields"]["message"] == "configuration reloaded")
            .collect();
        let f = &lines.get(n - 1)?["fields"];
        Some((
            f["kept"].as_u64()?,
            f["started"].as_u64()?,
            f["stopped"].as_u64()?,
        ))
    })
}

/// A reload re-reads `dsn_file`: pointed at another database, the source
/// restarts on it, and the job's state key changes with it, so a restart
/// never serves one database's body for another. A new password alone
/// reconnects and keeps the key.
#[test]
fn a_changed_dsn_file_is_applied_on_reload_and_keys_the_state() {
    let Some(pg) = Postgres::create() else { return };
    let Some(maria) = MariaDb::create() else {
        return;
    };
    pg.exec(SEED);
    maria.exec(SEED);
    maria.exec("UPDATE hosts SET address = '127.0.0.7:9104' WHERE role = 'primary'");
    let dir = Dir::new();
    dir.write("dsn", &pg.dsn());
    let path = dir.write(
        "sdbridge.yml",
        &format!(
            "state_dir: state\njobs:\n  - job_name: inventory\n    sql_sd_configs:\n      - dsn_file: dsn\n        query: \"{QUERY}\"\n        refresh_interval: 1h\n"
        ),
    );
    let bridge = Bridge::start_unready(&path);
    bridge.wait_body("/http_sd/inventory", "PostgreSQL's rows", |b| {
        b.contains("127.0.0.1:9104")
    });
    let persisted = || {
        let bytes = std::fs::read(dir.path("state/inventory.state")).ok()?;
        let at = bytes.windows(2).position(|w| w == b"\n\n")?;
        String::from_utf8(bytes[at + 2..].to_vec()).ok()
    };

    // The same DSN with another password: a reconnect, same state key.
    dir.write("dsn", &pg.dsn().replace(PASSWORD, "Other-Pa55"));
    sighup(&bridge);
    assert_eq!(reloaded(&bridge, 1), (0, 1, 1));

    dir.write("dsn", &maria.dsn());
    sighup(&bridge);
    assert_eq!(reloaded(&bridge, 2), (0, 1, 1));
    let maria_body = bridge.wait_body("/http_sd/inventory", "MariaDB's rows", |b| {
        b.contains("127.0.0.7:9104")
    });
    assert!(bridge.get("/").text().contains("127.0.0.1:3306"));
    poll_until(Duration::from_secs(20), "MariaDB's body persisted", || {
        (persisted().as_deref() == Some(maria_body.as_str())).then_some(())
    });
    assert!(bridge.terminate().success());

    // Back to PostgreSQL, which now fails: MariaDB's body is not served
    // for it (503 until it syncs), whatever state_dir holds.
    pg.exec("DROP TABLE hosts");
    dir.write("dsn", &pg.dsn());
    let bridge = Bridge::start_unready(&path);
    let up = || bridge.metric("sdbridge_source_up", &["job=\"inventory\""]);
    poll_until(Duration::from_secs(20), "the failing query", || {
        (up() == Some(0.0)).then_some(())
    });
    assert_eq!(bridge.get("/http_sd/inventory").status, 503);
    assert_eq!(
        bridge.metric("sdbridge_job_from_state", &["job=\"inventory\""]),
        Some(0.0)
    );
    assert_no_password(&bridge);
}

/// `LISTEN` quotes `notify_channel`, so a mixed-case name is reached only
/// by a quoted `NOTIFY` or `pg_notify`: `check` and `serve` say so.
#[test]
fn a_mixed_case_notify_channel_is_warned_about() {
    let Some(pg) = Postgres::create() else { return };
    pg.exec(SEED);
    let dir = Dir::new();
    let path = config(
        &dir,
        &pg.dsn(),
        "        refresh_interval: 1h\n        notify_channel: Hunt_Mixed\n",
    );
    let want = "only NOTIFY \"Hunt_Mixed\" or SELECT pg_notify('Hunt_Mixed', '') reach it; an unquoted NOTIFY Hunt_Mixed is folded to \"hunt_mixed\"";
    let check = run_cli(Some(dir.tmp.path()), ["check", "sdbridge.yml"]);
    let out = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "{out}");
    assert!(
        out.contains("sdbridge.yml: warning: job \"inventory\": sql_sd_configs[0]: notify_channel \"Hunt_Mixed\" has upper-case letters")
            && out.contains(want),
        "{out}"
    );
    assert!(!out.contains(PASSWORD), "{out}");
    let bridge = Bridge::start_unready(&path);
    bridge.wait_body("/http_sd/inventory", "seed rows", |b| targets(b).len() == 3);
    // (JSON escapes the quotes.)
    assert!(
        bridge
            .log()
            .contains("or SELECT pg_notify('Hunt_Mixed', '') reach it; an unquoted NOTIFY Hunt_Mixed is folded to"),
        "{}",
        bridge.log()
    );
    // The advice holds: pg_notify with the exact name wakes the source.
    poll_until(Duration::from_secs(20), "LISTEN connection", || {
        let n = pg.admin(
            "SELECT count(*) FROM pg_stat_activity WHERE query ILIKE 'LISTEN \"Hunt_Mixed\"%'",
        );
        (n.trim() != "0").then_some(())
    });
    pg.exec("INSERT INTO hosts VALUES ('127.0.0.9:9104', 'MySQL', 'My서비스', '세컨더리', 'replica'); SELECT pg_notify('Hunt_Mixed', '');");
    bridge.wait_body("/http_sd/inventory", "the notified row", |b| {
        b.contains("127.0.0.9:9104")
    });
}
