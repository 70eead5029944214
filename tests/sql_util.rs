//! Throwaway databases for tests/sql.rs: each fixture creates its own
//! database and a user with a password through the local socket (as the
//! servers' admins: `mariadb` as root, `psql` as postgres), hands out a
//! TCP DSN for that user, and drops both on drop, also when the test
//! fails. Nothing else on the servers is touched.

use std::net::TcpStream;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use sdbridge::source::sql::{Database, Dsn, QueryResult, SqlError};
use sdbridge::targetgroup::{Fragment, LabelSet, TargetGroup};

/// Password of every test user: distinctive, so tests can look for it in
/// error texts.
pub const PASSWORD: &str = "Sdb-Pa55word-7q";

fn unique(prefix: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{prefix}_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Skips (printing why) or, with `SDBRIDGE_REQUIRE_E2E=1`, fails.
fn unavailable(what: &str) {
    if std::env::var("SDBRIDGE_REQUIRE_E2E").as_deref() == Ok("1") {
        panic!("{what} and SDBRIDGE_REQUIRE_E2E=1");
    }
    eprintln!("SKIPPED: {what} (start it, or set SDBRIDGE_REQUIRE_E2E=1 to fail instead)");
}

fn reachable(port: u16) -> bool {
    TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(2)).is_ok()
}

fn run(cmd: &mut Command) -> Result<String, String> {
    let out = cmd.output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).to_string())
    }
}

/// A database and user on the local MariaDB.
pub struct MariaDb {
    pub db: String,
    pub user: String,
}

impl MariaDb {
    /// `None` (after printing `SKIPPED`) when MariaDB is not there.
    pub fn create() -> Option<MariaDb> {
        if run(Command::new("mariadb").args(["-e", "SELECT 1"])).is_err() || !reachable(3306) {
            unavailable("MariaDB is not reachable (mariadb -e 'select 1' over the socket, TCP 127.0.0.1:3306)");
            return None;
        }
        let name = unique("sdbt");
        let fixture = MariaDb {
            db: name.clone(),
            user: name,
        };
        let (db, user) = (&fixture.db, &fixture.user);
        fixture.root(&format!(
            "CREATE DATABASE `{db}` CHARACTER SET utf8mb4;
             CREATE USER '{user}'@'localhost' IDENTIFIED BY '{PASSWORD}';
             CREATE USER '{user}'@'%' IDENTIFIED BY '{PASSWORD}';
             GRANT ALL ON `{db}`.* TO '{user}'@'localhost';
             GRANT ALL ON `{db}`.* TO '{user}'@'%';"
        ));
        Some(fixture)
    }

    /// The user's TCP DSN.
    pub fn dsn(&self) -> String {
        format!(
            "mysql://{}:{PASSWORD}@127.0.0.1:3306/{}",
            self.user, self.db
        )
    }

    /// Runs `sql` as root over the socket, in the fixture's database;
    /// returns the tab-separated output.
    pub fn exec(&self, sql: &str) -> String {
        run(Command::new("mariadb").args(["-N", "-B", &self.db, "-e", sql]))
            .unwrap_or_else(|e| panic!("mariadb: {sql}: {e}"))
    }

    fn root(&self, sql: &str) {
        if let Err(e) = run(Command::new("mariadb").args(["-e", sql])) {
            panic!("mariadb: {sql}: {e}");
        }
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        let (db, user) = (&self.db, &self.user);
        let _ = run(Command::new("mariadb").args([
            "-e",
            &format!(
                "DROP DATABASE IF EXISTS `{db}`; DROP USER IF EXISTS '{user}'@'localhost'; DROP USER IF EXISTS '{user}'@'%';"
            ),
        ]));
    }
}

/// A database owned by a fresh role on the local PostgreSQL.
pub struct Postgres {
    pub db: String,
    pub user: String,
}

fn psql(db: &str, sql: &str) -> Result<String, String> {
    run(Command::new("runuser").args([
        "-u",
        "postgres",
        "--",
        "psql",
        "-X",
        "-q",
        "-A",
        "-t",
        "-v",
        "ON_ERROR_STOP=1",
        "-d",
        db,
        "-c",
        sql,
    ]))
}

impl Postgres {
    /// `None` (after printing `SKIPPED`) when PostgreSQL is not there.
    pub fn create() -> Option<Postgres> {
        if psql("postgres", "SELECT 1").is_err() || !reachable(5432) {
            unavailable(
                "PostgreSQL is not reachable (runuser -u postgres -- psql, TCP 127.0.0.1:5432)",
            );
            return None;
        }
        let name = unique("sdbt");
        let fixture = Postgres {
            db: name.clone(),
            user: name,
        };
        let (db, user) = (&fixture.db, &fixture.user);
        for sql in [
            format!("CREATE ROLE \"{user}\" LOGIN PASSWORD '{PASSWORD}'"),
            format!("CREATE DATABASE \"{db}\" OWNER \"{user}\" ENCODING 'UTF8' TEMPLATE template0"),
        ] {
            psql("postgres", &sql).unwrap_or_else(|e| panic!("psql: {sql}: {e}"));
        }
        Some(fixture)
    }

    /// The user's TCP DSN.
    pub fn dsn(&self) -> String {
        format!(
            "postgres://{}:{PASSWORD}@127.0.0.1:5432/{}",
            self.user, self.db
        )
    }

    /// Runs `sql` in the fixture's database as its owner (tables it
    /// creates belong to the test user); returns psql's unaligned output.
    pub fn exec(&self, sql: &str) -> String {
        self.admin(&format!("SET ROLE \"{}\"; {sql}", self.user))
    }

    /// Runs `sql` in the fixture's database as the superuser.
    pub fn admin(&self, sql: &str) -> String {
        psql(&self.db, sql).unwrap_or_else(|e| panic!("psql: {sql}: {e}"))
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let (db, user) = (&self.db, &self.user);
        let _ = psql(
            "postgres",
            &format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)"),
        );
        let _ = psql("postgres", &format!("DROP ROLE IF EXISTS \"{user}\""));
    }
}

/// A SQLite file in a temporary directory, written with sdbridge's own
/// driver (the machine need not have the sqlite3 tool).
pub struct SqliteFile {
    pub dir: tempfile::TempDir,
}

impl SqliteFile {
    /// A new database file seeded with `sql`.
    pub async fn create(sql: &str) -> SqliteFile {
        use sqlx::{ConnectOptions, Executor};
        let dir = tempfile::tempdir().expect("tempdir");
        let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(dir.path().join("inv.db"))
            .create_if_missing(true)
            .connect()
            .await
            .expect("create sqlite file");
        conn.execute(sql).await.expect("seed sqlite");
        drop(conn);
        SqliteFile { dir }
    }

    /// The file's DSN.
    pub fn dsn(&self) -> String {
        format!("sqlite://{}", self.dir.path().join("inv.db").display())
    }
}

/// Bound on connecting and querying in tests that are not about timeouts.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// Connects to `dsn`, panicking on failure.
pub async fn connect(dsn: &str, timeout: Duration) -> Database {
    let dsn = Dsn::parse(dsn).expect("dsn");
    Database::connect(&dsn, timeout).await.expect("connect")
}

/// Runs `sql` on a fresh connection to `dsn`.
pub async fn query(dsn: &str, sql: &str) -> Result<QueryResult, SqlError> {
    connect(dsn, TIMEOUT).await.query(sql).await
}

/// The groups `sql` gives, panicking on failure.
pub async fn groups(dsn: &str, sql: &str) -> Vec<TargetGroup> {
    query(dsn, sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .groups
}

/// The groups as served under a job: what "byte-identical" is about.
pub fn body(groups: &[TargetGroup]) -> String {
    let served = Fragment::new(groups, "inventory").served_joined(true, &Default::default());
    String::from_utf8(served.to_vec()).expect("UTF-8")
}

/// A label set from pairs.
pub fn labels(pairs: &[(&str, &str)]) -> LabelSet {
    LabelSet(
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

/// Asserts `sql` fails with `kind` and a message containing `want`.
pub async fn fails(dsn: &str, sql: &str, kind: &str, want: &str) {
    match query(dsn, sql).await {
        Ok(r) => panic!("{sql}: expected an error, got {r:?}"),
        Err(e) => {
            assert_eq!(e.kind, kind, "{sql}: {e}");
            assert!(e.message.contains(want), "{sql}: want {want:?}, got {e}");
            assert!(!e.message.contains(PASSWORD), "{e}");
        }
    }
}
