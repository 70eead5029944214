//! `sql_sd_configs`' row conversion against the real servers: the same
//! rows give the same bytes in MariaDB, PostgreSQL and SQLite, each
//! type's text, refused columns, column and address errors, ordering.
//! MariaDB and PostgreSQL are reached over TCP with a fresh user and
//! password each (skipped when a server is missing, failing with
//! `SDBRIDGE_REQUIRE_E2E=1`); SQLite always runs.

use sdbridge::targetgroup::TargetGroup;

use crate::sql_util::{body, fails, groups, labels, query, MariaDb, Postgres, SqliteFile};

/// The inventory as each database stores it; rows in different orders,
/// one duplicated.
/// address, dbms, service_name, port, ratio, created, seen, role.
type Inv = (
    &'static str,
    &'static str,
    &'static str,
    i64,
    &'static str,
    &'static str,
    &'static str,
    Option<&'static str>,
);

const ROWS: [Inv; 4] = [
    (
        "127.0.0.1:9104",
        "MySQL",
        "My서비스",
        3306,
        "1.50",
        "2026-12-02",
        "2026-12-02 10:00:00",
        Some("primary"),
    ),
    (
        "127.0.0.1:9100",
        "MySQL",
        "My서비스",
        3306,
        "1.50",
        "2026-12-02",
        "2026-12-02 10:00:00",
        Some("primary"),
    ),
    (
        "127.0.0.2:9104",
        "MySQL",
        "My서비스",
        3307,
        "0.25",
        "2026-01-31",
        "2026-01-31 23:59:59.5",
        None,
    ),
    (
        "127.0.0.3:9187",
        "PostgreSQL",
        "결제",
        5432,
        "10.00",
        "2025-06-01",
        "2025-06-01 00:00:00",
        Some("replica"),
    ),
];

fn inserts(table_values: impl Fn(&Inv) -> String) -> String {
    let mut order: Vec<_> = ROWS.iter().collect();
    order.push(&ROWS[0]);
    order.reverse();
    order
        .iter()
        .map(|r| table_values(r))
        .collect::<Vec<_>>()
        .join(";\n")
}

const INVENTORY_QUERY: &str = "SELECT addr AS __address__, dbms, service_name, port, ratio, created, seen, role, weight FROM inv";

fn expected_inventory() -> Vec<TargetGroup> {
    let common = |port, ratio, created, seen, name, dbms| {
        vec![
            ("created", created),
            ("dbms", dbms),
            ("port", port),
            ("ratio", ratio),
            ("seen", seen),
            ("service_name", name),
            ("weight", "1"),
        ]
    };
    let mut g1 = common(
        "3306",
        "1.50",
        "2026-12-02",
        "2026-12-02T10:00:00Z",
        "My서비스",
        "MySQL",
    );
    g1.push(("role", "primary"));
    let g2 = common(
        "3307",
        "0.25",
        "2026-01-31",
        "2026-01-31T23:59:59.5Z",
        "My서비스",
        "MySQL",
    );
    let mut g3 = common(
        "5432",
        "10.00",
        "2025-06-01",
        "2025-06-01T00:00:00Z",
        "결제",
        "PostgreSQL",
    );
    g3.push(("role", "replica"));
    let mut groups = vec![
        TargetGroup::new(["127.0.0.1:9100", "127.0.0.1:9104"], labels(&g1)),
        TargetGroup::new(["127.0.0.2:9104"], labels(&g2)),
        TargetGroup::new(["127.0.0.3:9187"], labels(&g3)),
    ];
    groups.sort_by(|a, b| {
        let key = |g: &TargetGroup| g.labels.0.clone().into_iter().collect::<Vec<_>>();
        key(a).cmp(&key(b))
    });
    groups
}

fn sql_value(v: Option<&str>) -> String {
    v.map(|v| format!("'{v}'")).unwrap_or_else(|| "NULL".into())
}

#[tokio::test]
async fn same_rows_give_the_same_bytes_in_mariadb_postgres_and_sqlite() {
    let want = expected_inventory();
    let sqlite = SqliteFile::create(&format!(
        "CREATE TABLE inv (addr TEXT, dbms TEXT, service_name TEXT, port INTEGER, ratio TEXT, created TEXT, seen TEXT, role TEXT, weight REAL);\n{}",
        inserts(|r| format!(
            "INSERT INTO inv VALUES ('{}', '{}', '{}', {}, '{}', '{}', '{}', {}, 1.0)",
            r.0, r.1, r.2, r.3, r.4, r.5, r.6.replace(' ', "T") + "Z", sql_value(r.7)
        ))
    ))
    .await;
    let sqlite_groups = groups(&sqlite.dsn(), INVENTORY_QUERY).await;
    assert_eq!(sqlite_groups, want);
    let body_sqlite = body(&sqlite_groups);

    let maria = fixture!(MariaDb);
    maria.exec(&format!(
        "CREATE TABLE inv (addr VARCHAR(64), dbms VARCHAR(32), service_name VARCHAR(64), port INT, ratio DECIMAL(10,2), created DATE, seen DATETIME(3), role ENUM('primary','replica'), weight DOUBLE);\n{}",
        inserts(|r| format!(
            "INSERT INTO inv VALUES ('{}', '{}', '{}', {}, {}, '{}', '{}', {}, 1.0)",
            r.0, r.1, r.2, r.3, r.4, r.5, r.6, sql_value(r.7)
        ))
    ));
    let maria_groups = groups(&maria.dsn(), INVENTORY_QUERY).await;
    assert_eq!(body(&maria_groups), body_sqlite);

    let pg = fixture!(Postgres);
    pg.exec(&format!(
        "CREATE TYPE role AS ENUM ('primary', 'replica');
         CREATE TABLE inv (addr text, dbms varchar(32), service_name text, port int4, ratio numeric(10,2), created date, seen timestamp(3), role role, weight float8);\n{}",
        inserts(|r| format!(
            "INSERT INTO inv VALUES ('{}', '{}', '{}', {}, {}, '{}', '{}', {}, 1.0)",
            r.0, r.1, r.2, r.3, r.4, r.5, r.6, sql_value(r.7)
        ))
    ));
    let pg_groups = groups(&pg.dsn(), INVENTORY_QUERY).await;
    assert_eq!(body(&pg_groups), body_sqlite);
    assert!(
        body_sqlite.contains("\"service_name\":\"My서비스\""),
        "{body_sqlite}"
    );
}

#[tokio::test]
async fn mariadb_value_types() {
    let maria = fixture!(MariaDb);
    maria.exec(
        "CREATE TABLE t (a VARCHAR(32), flag TINYINT(1), off BOOLEAN, tiny_u TINYINT UNSIGNED, big_u BIGINT UNSIGNED, big BIGINT,
           amount DECIMAL(10,2), d DOUBLE, tenth DOUBLE, f FLOAT, day DATE, at DATETIME(3), ts TIMESTAMP, dur TIME, y YEAR,
           e ENUM('x','y'), b BIT(3), ko VARCHAR(32), missing VARCHAR(8), bin_name VARCHAR(16) COLLATE utf8mb4_bin);
         SET time_zone = '+09:00';
         INSERT INTO t VALUES ('127.0.0.1:9104', 1, FALSE, 200, 18446744073709551615, -9223372036854775808,
           1.50, 1.0, 0.1, 1.1, '2026-12-02', '2026-12-02 10:00:00.500', '2026-12-02 19:00:00', '-01:02:03', 2026,
           'y', b'101', '한국어 서비스', NULL, 'Node-A');",
    );
    let got = groups(
        &maria.dsn(),
        "SELECT a AS __address__, flag, off, tiny_u, big_u, big, amount, d, tenth, f, day, at, ts, dur, y, e, b, ko, missing,
           CAST(bin_name AS CHAR) AS bin_name, 7 AS seven, 2.5 AS lit FROM t",
    )
    .await;
    let want = labels(&[
        ("flag", "1"),
        ("off", "0"),
        ("tiny_u", "200"),
        ("big_u", "18446744073709551615"),
        ("big", "-9223372036854775808"),
        ("amount", "1.50"),
        ("d", "1"),
        ("tenth", "0.1"),
        ("f", "1.1"),
        ("day", "2026-12-02"),
        ("at", "2026-12-02T10:00:00.5Z"),
        ("ts", "2026-12-02T10:00:00Z"),
        ("dur", "-01:02:03"),
        ("y", "2026"),
        ("e", "y"),
        ("b", "5"),
        ("ko", "한국어 서비스"),
        ("bin_name", "Node-A"),
        ("seven", "7"),
        ("lit", "2.5"),
    ]);
    assert_eq!(got, [TargetGroup::new(["127.0.0.1:9104"], want)]);
}

#[tokio::test]
async fn postgres_value_types() {
    let pg = fixture!(Postgres);
    // The role's sessions run in Seoul: timestamps must still come out UTC.
    pg.admin(&format!(
        "ALTER ROLE \"{}\" SET timezone = 'Asia/Seoul'",
        pg.user
    ));
    pg.exec(
        "CREATE DOMAIN hostname AS text;
         CREATE TABLE t (a hostname, yes boolean, no boolean, small int2, big int8, amount numeric(10,2), n numeric,
           d float8, tenth float8, r real, day date, at timestamp(3), tz timestamptz, tod time, id uuid, ko text, missing text, c char(4));
         INSERT INTO t VALUES ('127.0.0.1:9187', true, false, -32768, 9223372036854775807, 1.50, 'NaN',
           1.0, 0.1, 1.1, '2026-12-02', '2026-12-02 10:00:00.500', '2026-12-02 19:00:00+09', '10:00:00.25',
           '0e4fb2a4-8c1d-4b5e-9f00-000000000001', '한국어 서비스', NULL, 'ab');",
    );
    let got = groups(
        &pg.dsn(),
        "SELECT a AS __address__, yes, no, small, big, amount, n, d, tenth, r, day, at, tz, tod, id, ko, missing, c,
           123456789.000123::numeric AS wide, 0.00001234::numeric AS tiny, 'infinity'::date AS forever FROM t",
    )
    .await;
    let want = labels(&[
        ("yes", "true"),
        ("no", "false"),
        ("small", "-32768"),
        ("big", "9223372036854775807"),
        ("amount", "1.50"),
        ("n", "NaN"),
        ("d", "1"),
        ("tenth", "0.1"),
        ("r", "1.1"),
        ("day", "2026-12-02"),
        ("at", "2026-12-02T10:00:00.5Z"),
        ("tz", "2026-12-02T10:00:00Z"),
        ("tod", "10:00:00.25"),
        ("id", "0e4fb2a4-8c1d-4b5e-9f00-000000000001"),
        ("ko", "한국어 서비스"),
        ("c", "ab  "),
        ("wide", "123456789.000123"),
        ("tiny", "0.00001234"),
        ("forever", "infinity"),
    ]);
    assert_eq!(got, [TargetGroup::new(["127.0.0.1:9187"], want)]);
}

#[tokio::test]
async fn sqlite_goes_by_storage_class() {
    let db = SqliteFile::create(
        "CREATE TABLE t (a TEXT, n, f REAL, ko TEXT, missing TEXT, flag BOOLEAN, blob BLOB);
         INSERT INTO t VALUES ('127.0.0.1:1', 42, 1.0, '서울', NULL, 1, x'00ff'), ('127.0.0.1:2', 'forty-two', 0.1, '서울', NULL, 1, NULL);",
    )
    .await;
    let got = groups(
        &db.dsn(),
        "SELECT a AS __address__, n, f, ko, missing, flag FROM t",
    )
    .await;
    assert_eq!(
        got,
        [
            TargetGroup::new(
                ["127.0.0.1:2"],
                labels(&[
                    ("n", "forty-two"),
                    ("f", "0.1"),
                    ("ko", "서울"),
                    ("flag", "1")
                ])
            ),
            TargetGroup::new(
                ["127.0.0.1:1"],
                labels(&[("n", "42"), ("f", "1"), ("ko", "서울"), ("flag", "1")])
            ),
        ]
    );
    fails(
        &db.dsn(),
        "SELECT a AS __address__, blob FROM t",
        "column",
        "column \"blob\" is binary",
    )
    .await;
}

/// Text in a `_bin` collation, expressions over it and MariaDB's `UUID`
/// carry the BINARY flag on the wire with a text character set: text.
/// Only the `binary` character set (63) is binary.
#[tokio::test]
async fn mariadb_bin_collations_and_uuid_are_text() {
    let maria = fixture!(MariaDb);
    maria.exec(
        "CREATE TABLE b (h VARCHAR(64) COLLATE utf8mb4_bin, id UUID, t TEXT COLLATE utf8mb4_bin, c CHAR(4) COLLATE utf8mb4_bin, ko VARCHAR(16) COLLATE utf8mb4_bin, j JSON);
         INSERT INTO b VALUES ('Node-A', '0e4fb2a4-8c1d-4b5e-9f00-000000000001', 'long text', 'ab', '서울', '{\"a\": 1}');",
    );
    let got = groups(
        &maria.dsn(),
        "SELECT CONCAT(h, ':9100') AS __address__, h, LOWER(h) AS lower_h, id, t, c, ko, j FROM b",
    )
    .await;
    let want = labels(&[
        ("h", "Node-A"),
        ("lower_h", "node-a"),
        ("id", "0e4fb2a4-8c1d-4b5e-9f00-000000000001"),
        ("t", "long text"),
        ("c", "ab"),
        ("ko", "서울"),
        ("j", "{\"a\": 1}"),
    ]);
    assert_eq!(got, [TargetGroup::new(["Node-A:9100"], want)]);
}

#[tokio::test]
async fn binary_json_and_unknown_types_are_refused_naming_the_column() {
    let maria = fixture!(MariaDb);
    maria.exec(
        "CREATE TABLE t (a VARCHAR(32), vb VARBINARY(16), bl BLOB, fixed BINARY(4));
         INSERT INTO t VALUES ('127.0.0.1:1', x'00ff', x'00ff', 'abcd');",
    );
    for col in ["vb", "bl", "fixed", "cb"] {
        let sql = format!(
            "SELECT a AS __address__, {col} FROM (SELECT t.*, CAST(a AS BINARY) AS cb FROM t) q"
        );
        fails(
            &maria.dsn(),
            &sql,
            "column",
            &format!("column \"{col}\" is binary"),
        )
        .await;
    }
    let pg = fixture!(Postgres);
    pg.exec(
        "CREATE TABLE t (a text, by bytea, j json, jb jsonb, iv interval, ip inet);
         INSERT INTO t VALUES ('127.0.0.1:1', '\\x00ff', '{}', '{}', '1 day', '127.0.0.1');",
    );
    let dsn = pg.dsn();
    fails(
        &dsn,
        "SELECT a AS __address__, by FROM t",
        "column",
        "column \"by\" is binary: cast it to text",
    )
    .await;
    fails(
        &dsn,
        "SELECT a AS __address__, j FROM t",
        "column",
        "column \"j\" is JSON",
    )
    .await;
    fails(
        &dsn,
        "SELECT a AS __address__, jb FROM t",
        "column",
        "column \"jb\" is JSON",
    )
    .await;
    fails(
        &dsn,
        "SELECT a AS __address__, iv FROM t",
        "column",
        "column \"iv\" has type INTERVAL",
    )
    .await;
    fails(
        &dsn,
        "SELECT a AS __address__, ip FROM t",
        "column",
        "column \"ip\" has type INET",
    )
    .await;
    let cast = groups(
        &dsn,
        "SELECT a AS __address__, ip::text AS ip, j::text AS j FROM t",
    )
    .await;
    assert_eq!(
        cast[0].labels,
        labels(&[("ip", "127.0.0.1/32"), ("j", "{}")])
    );
}

/// The same malformed result on every database gives the same error.
async fn check_result_errors(dsn: &str, quote: char) {
    let q = |name: &str| format!("{quote}{name}{quote}");
    fails(
        dsn,
        &format!(
            "SELECT '127.0.0.1:1' AS __address__, 1 AS {}",
            q("bad-name")
        ),
        "column",
        "column \"bad-name\" is not a valid label name",
    )
    .await;
    fails(
        dsn,
        "SELECT '127.0.0.1:1' AS __address__, 1 AS x, 2 AS x",
        "column",
        "column \"x\" appears more than once",
    )
    .await;
    fails(
        dsn,
        "SELECT '127.0.0.1:1' AS addr, 1 AS x",
        "column",
        "no __address__ column (columns: addr, x)",
    )
    .await;
    fails(
        dsn,
        "SELECT '127.0.0.1:1' AS __address__ UNION ALL SELECT NULL",
        "value",
        "row 2: __address__ is NULL",
    )
    .await;
    fails(
        dsn,
        "SELECT '' AS __address__",
        "value",
        "row 1: __address__ is empty",
    )
    .await;
    // An empty result still has its columns checked.
    fails(
        dsn,
        "SELECT 1 AS x WHERE 1 = 0",
        "column",
        "no __address__ column",
    )
    .await;
    let none = query(dsn, "SELECT '127.0.0.1:1' AS __address__ WHERE 1 = 0")
        .await
        .unwrap();
    assert_eq!((none.groups.len(), none.rows), (0, 0));
}

#[tokio::test]
async fn column_and_address_errors_name_the_problem() {
    let sqlite = SqliteFile::create("CREATE TABLE t (a TEXT)").await;
    check_result_errors(&sqlite.dsn(), '"').await;
    let maria = fixture!(MariaDb);
    check_result_errors(&maria.dsn(), '`').await;
    let pg = fixture!(Postgres);
    check_result_errors(&pg.dsn(), '"').await;
}

async fn check_order_and_dedup(dsn: &str) {
    let up = query(
        dsn,
        "SELECT addr AS __address__, dc FROM o ORDER BY addr, dc",
    )
    .await
    .unwrap();
    let down = query(
        dsn,
        "SELECT addr AS __address__, dc FROM o ORDER BY addr DESC, dc DESC",
    )
    .await
    .unwrap();
    assert_eq!(up.groups, down.groups);
    assert_eq!(up.rows, 5);
    assert_eq!(up.skipped.len(), 1, "{:?}", up.skipped);
    assert_eq!(
        up.groups,
        [
            TargetGroup::new(["127.0.0.1:3"], labels(&[])),
            TargetGroup::new(["127.0.0.1:1", "127.0.0.1:2"], labels(&[("dc", "a")])),
            TargetGroup::new(["127.0.0.1:1"], labels(&[("dc", "b")])),
        ]
    );
}

#[tokio::test]
async fn row_order_does_not_matter_and_duplicates_are_served_once() {
    let seed = "CREATE TABLE o (addr VARCHAR(32), dc VARCHAR(8));
        INSERT INTO o VALUES ('127.0.0.1:2', 'a'), ('127.0.0.1:1', 'a'), ('127.0.0.1:1', 'b'), ('127.0.0.1:3', NULL), ('127.0.0.1:2', 'a')";
    let sqlite = SqliteFile::create(seed).await;
    check_order_and_dedup(&sqlite.dsn()).await;
    let maria = fixture!(MariaDb);
    maria.exec(seed);
    check_order_and_dedup(&maria.dsn()).await;
    let pg = fixture!(Postgres);
    pg.exec(seed);
    check_order_and_dedup(&pg.dsn()).await;
}

/// Floats as ECMAScript's `Number::toString` writes them, the same on
/// every database: `f64` and `f32` alike, exponents from 1e21 and below
/// 1e-6.
#[tokio::test]
async fn floats_are_shortest_in_ecmascript_form_on_every_database() {
    const VALUES: &str = "1e38, 1.7976931348623157e308, 1e21, 1e20, 1e-7, 123.456, 0.000001, -0.0";
    let want = labels(&[
        ("big", "1e+38"),
        ("max", "1.7976931348623157e+308"),
        ("e21", "1e+21"),
        ("e20", "100000000000000000000"),
        ("tiny", "1e-7"),
        ("plain", "123.456"),
        ("micro", "0.000001"),
        ("zero", "0"),
    ]);
    let query = "SELECT a AS __address__, big, max, e21, e20, tiny, plain, micro, zero FROM f";
    let columns = |ty: &str| {
        ["big", "max", "e21", "e20", "tiny", "plain", "micro", "zero"]
            .map(|c| format!("{c} {ty}"))
            .join(", ")
    };
    let sqlite = SqliteFile::create(&format!(
        "CREATE TABLE f (a TEXT, {}); INSERT INTO f VALUES ('127.0.0.1:1', {VALUES})",
        columns("REAL")
    ))
    .await;
    let expected = [TargetGroup::new(["127.0.0.1:1"], want)];
    assert_eq!(groups(&sqlite.dsn(), query).await, expected, "SQLite");
    let maria = fixture!(MariaDb);
    maria.exec(&format!(
        "CREATE TABLE f (a VARCHAR(16), {}, r FLOAT); INSERT INTO f VALUES ('127.0.0.1:1', {VALUES}, 1e38)",
        columns("DOUBLE")
    ));
    assert_eq!(groups(&maria.dsn(), query).await, expected, "MariaDB");
    let r = groups(&maria.dsn(), "SELECT a AS __address__, r FROM f").await;
    assert_eq!(r[0].labels, labels(&[("r", "1e+38")]), "MariaDB FLOAT");
    let pg = fixture!(Postgres);
    pg.exec(&format!(
        "CREATE TABLE f (a text, {}, r real); INSERT INTO f VALUES ('127.0.0.1:1', {VALUES}, 1.1)",
        columns("float8")
    ));
    assert_eq!(groups(&pg.dsn(), query).await, expected, "PostgreSQL");
    let r = groups(&pg.dsn(), "SELECT a AS __address__, r FROM f").await;
    assert_eq!(r[0].labels, labels(&[("r", "1.1")]), "PostgreSQL real");
}

/// MariaDB's zero dates (a permissive `sql_mode` stores them) are served
/// as MariaDB shows them, never dropped: only NULL leaves a label out.
#[tokio::test]
async fn mariadb_zero_dates_are_served_as_mariadb_shows_them() {
    let maria = fixture!(MariaDb);
    maria.exec(
        "SET SESSION sql_mode = '';
         CREATE TABLE z (a VARCHAR(16), d DATE, dt DATETIME, dt3 DATETIME(3), ts TIMESTAMP NULL, part DATE, part_dt DATETIME, missing DATE);
         INSERT INTO z VALUES ('127.0.0.1:1', '0000-00-00', '0000-00-00 00:00:00', '0000-00-00 00:00:00.000', '0000-00-00 00:00:00', '2026-00-00', '2026-12-00 10:00:00', NULL);",
    );
    let got = groups(
        &maria.dsn(),
        "SELECT a AS __address__, d, dt, dt3, ts, part, part_dt, missing, CAST('0000-00-00' AS DATE) AS cast_d FROM z",
    )
    .await;
    let want = labels(&[
        ("d", "0000-00-00"),
        ("dt", "0000-00-00 00:00:00"),
        ("dt3", "0000-00-00 00:00:00"),
        ("ts", "0000-00-00 00:00:00"),
        ("part", "2026-00-00"),
        ("part_dt", "2026-12-00 10:00:00"),
        ("cast_d", "0000-00-00"),
    ]);
    assert_eq!(got, [TargetGroup::new(["127.0.0.1:1"], want)]);
}
