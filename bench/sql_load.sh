#!/usr/bin/env bash
# sql_sd_configs at 100,000 rows on the local MariaDB and PostgreSQL: start
# to ready, one refresh round (query + rows to groups + serialize), a
# NOTIFY to the new body served (PostgreSQL), RSS. Each run makes its own
# database and user through the local sockets (as root) and drops them.
# Loopback only, bounded (ROUNDS rounds at 1 s, CHANGES notifications).
#
#   bash bench/sql_load.sh            # 100,000 rows
#   ROWS=10000 bash bench/sql_load.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${ROWS:-100000}
ROUNDS=${ROUNDS:-10}
CHANGES=${CHANGES:-20}
PORT=${PORT:-19416}
BIN=${SDBRIDGE_BIN:-./target/release/sdbridge}
NAME=sdbench_$$
PASS=bench-pass-$$

[ -n "${SDBRIDGE_BIN:-}" ] || cargo build --release -q
work=$(mktemp -d)
pid=
cleanup() {
    [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
    mariadb -e "DROP DATABASE IF EXISTS $NAME; DROP USER IF EXISTS '$NAME'@'localhost'; DROP USER IF EXISTS '$NAME'@'127.0.0.1';" 2>/dev/null || true
    runuser -u postgres -- psql -q -c "DROP DATABASE IF EXISTS $NAME WITH (FORCE)" -c "DROP ROLE IF EXISTS $NAME" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

QUERY="SELECT address AS __address__, dbms, service_name, db_name, role FROM hosts"
metric() { curl -s "http://127.0.0.1:$PORT/metrics" | awk -v m="$1" '$1 ~ "^"m {s += $2} END {print s + 0}'; }
etag() { curl -sI "http://127.0.0.1:$PORT/http_sd/inventory" | tr -d '\r' | awk -F': ' 'tolower($1)=="etag"{print $2}'; }

run() { # backend dsn extra-yaml
    local backend=$1 dsn=$2 extra=$3
    cat > "$work/sdbridge.yml" <<YML
listen: 127.0.0.1:$PORT
jobs:
  - job_name: inventory
    sql_sd_configs:
      - dsn: '$dsn'
        query: "$QUERY"
        refresh_interval: 1s
$extra
YML
    local start ready
    start=$(date +%s.%N)
    "$BIN" serve --config "$work/sdbridge.yml" 2>"$work/log.$backend" &
    pid=$!
    until curl -sf "http://127.0.0.1:$PORT/-/ready" >/dev/null; do sleep 0.01; done
    ready=$(date +%s.%N)
    echo "$backend, $ROWS rows:"
    printf '  start to ready:         %.0f ms\n' "$(echo "($ready - $start) * 1000" | bc)"
    echo "  body bytes:             $(curl -s "http://127.0.0.1:$PORT/http_sd/inventory" | wc -c)"
    local s0 c0
    s0=$(metric 'sdbridge_source_refresh_duration_seconds_sum'); c0=$(metric 'sdbridge_source_refresh_duration_seconds_count')
    sleep "$ROUNDS"
    local s1 c1
    s1=$(metric 'sdbridge_source_refresh_duration_seconds_sum'); c1=$(metric 'sdbridge_source_refresh_duration_seconds_count')
    printf '  one refresh round:      %.0f ms (mean of %d rounds: query, rows to groups)\n' \
        "$(echo "($s1 - $s0) * 1000 / ($c1 - $c0)" | bc -l)" "$(echo "$c1 - $c0" | bc)"
    grep -E 'VmHWM|VmRSS' "/proc/$pid/status" | sed 's/^/  memory:                 /'
}

# MariaDB: rows from its SEQUENCE engine.
mariadb -e "CREATE DATABASE $NAME CHARACTER SET utf8mb4;
  CREATE USER '$NAME'@'localhost' IDENTIFIED BY '$PASS'; CREATE USER '$NAME'@'127.0.0.1' IDENTIFIED BY '$PASS';
  GRANT SELECT ON $NAME.* TO '$NAME'@'localhost'; GRANT SELECT ON $NAME.* TO '$NAME'@'127.0.0.1';"
mariadb "$NAME" -e "CREATE TABLE hosts (address VARCHAR(64) NOT NULL, dbms VARCHAR(16), service_name VARCHAR(64), db_name VARCHAR(64), role VARCHAR(16));
  INSERT INTO hosts SELECT CONCAT('127.', seq DIV 65536 MOD 256, '.', seq DIV 256 MOD 256, '.', seq MOD 256, ':9104'), 'MySQL', 'My서비스',
    CONCAT('db-', seq DIV 10), IF(seq MOD 10 = 0, 'primary', 'replica') FROM seq_0_to_$((ROWS - 1));"
run MariaDB "mysql://$NAME:$PASS@127.0.0.1:3306/$NAME" ""
kill "$pid"; wait "$pid" 2>/dev/null || true; pid=

# PostgreSQL: rows from generate_series; NOTIFY to served.
runuser -u postgres -- psql -q -c "CREATE ROLE $NAME LOGIN PASSWORD '$PASS'" -c "CREATE DATABASE $NAME OWNER $NAME ENCODING 'UTF8' TEMPLATE template0"
runuser -u postgres -- psql -q -d "$NAME" -c "SET ROLE $NAME" -c "CREATE TABLE hosts (address TEXT NOT NULL, dbms TEXT, service_name TEXT, db_name TEXT, role TEXT);
  INSERT INTO hosts SELECT '127.' || (s / 65536 % 256) || '.' || (s / 256 % 256) || '.' || (s % 256) || ':9104', 'MySQL', 'My서비스',
    'db-' || (s / 10), CASE WHEN s % 10 = 0 THEN 'primary' ELSE 'replica' END FROM generate_series(0, $((ROWS - 1))) s;"
sed_extra="        notify_channel: bench"
run PostgreSQL "postgres://$NAME:$PASS@127.0.0.1:5432/$NAME" "$sed_extra"
# With an hourly refresh, only NOTIFY moves the body.
sed -i 's/refresh_interval: 1s/refresh_interval: 1h/' "$work/sdbridge.yml"
kill -HUP "$pid"; sleep 2
: > "$work/latencies"
for k in $(seq 1 "$CHANGES"); do
    before=$(etag)
    changed=$(date +%s%N)
    runuser -u postgres -- psql -q -d "$NAME" -c "UPDATE hosts SET role = 'r$k' WHERE address = '127.0.0.1:9104'; NOTIFY bench;"
    while [ "$(etag)" = "$before" ]; do :; done
    echo $(( ($(date +%s%N) - changed) / 1000000 )) >> "$work/latencies"
done
sort -n "$work/latencies" | awk -v n="$CHANGES" '
    { v[NR] = $1 }
    END { printf "  UPDATE + NOTIFY served: p50 %d ms, max %d ms over %d changes (refresh_interval 1h; includes psql start)\n",
          v[int(n * 0.5 + 0.5)], v[n], n }'
grep -E 'VmHWM|VmRSS' "/proc/$pid/status" | sed 's/^/  memory after changes:   /'
