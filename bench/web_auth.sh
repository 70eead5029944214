#!/usr/bin/env bash
# What `web:` costs per request: requests/s for 200 (full body) and 304
# answers of one job (1,000 targets), without credentials, with basic auth
# (bcrypt cost 10, cached after the first check, as exporter-toolkit does),
# with a bearer token, and over TLS with basic auth. Loopback only, bounded
# (wrk runs DURATION seconds per row). Needs wrk, curl, openssl.
#
#   bash bench/web_auth.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-5}
TARGETS=${TARGETS:-1000}
PORT=${PORT:-19421}
BIN=${SDBRIDGE_BIN:-./target/release/sdbridge}

[ -n "${SDBRIDGE_BIN:-}" ] || cargo build --release -q
work=$(mktemp -d)
pid=
trap '[ -z "$pid" ] || kill "$pid" 2>/dev/null; rm -rf "$work"' EXIT
mkdir -p "$work/sd"
python3 - "$work/sd/groups.json" "$TARGETS" <<'PY'
import json, sys
path, n = sys.argv[1], int(sys.argv[2])
json.dump([{"targets": [f"127.0.{i // 256 % 256}.{i % 256}:9104"],
            "labels": {"dbms": "MySQL", "service_name": "My서비스", "db_name": f"db-{i}"}}
           for i in range(n)], open(path, "w"), ensure_ascii=False)
PY
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
    -subj /CN=localhost -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -keyout "$work/server.key" -out "$work/server.pem" 2>/dev/null
echo bench-token > "$work/tokens"
# bcrypt (cost 10) of "bench".
HASH='$2b$10$XJhdZi1q7K8kmoQgq2aefuBO3LGoI9Qw9pKFh0.5Y8PZ5NV7svYtq'
BASIC="Authorization: Basic $(printf 'bench:bench' | base64)"
BEARER="Authorization: Bearer bench-token"

serve() { # web block
    [ -z "$pid" ] || { kill "$pid"; wait "$pid" 2>/dev/null || true; }
    printf 'listen: 127.0.0.1:%s\n%s\njobs:\n  - job_name: mysql\n    file_sd_configs: [{files: ["%s/sd/*.json"]}]\n' \
        "$PORT" "$1" "$work" > "$work/sdbridge.yml"
    "$BIN" serve --config "$work/sdbridge.yml" 2>"$work/log" &
    pid=$!
    until curl -skf "$2://127.0.0.1:$PORT/-/ready" >/dev/null; do sleep 0.1; done
}

row() { # label, url, header...
    local label=$1 url=$2; shift 2
    local args=()
    for h in "$@"; do args+=(-H "$h"); done
    local etag
    etag=$(curl -sk -D - -o /dev/null "${args[@]}" "$url" | tr -d '\r' | awk -F': ' 'tolower($1) == "etag" {print $2}')
    local ok notmod
    ok=$(wrk -t2 -c32 -d"${DURATION}s" "${args[@]}" "$url" | awk '/Requests\/sec/ {print $2}')
    notmod=$(wrk -t2 -c32 -d"${DURATION}s" "${args[@]}" -H "If-None-Match: $etag" "$url" | awk '/Requests\/sec/ {print $2}')
    printf '| %-28s | %10s | %10s |\n' "$label" "$ok" "$notmod"
}

echo "$TARGETS targets, wrk ${DURATION}s per cell, 2 threads, 32 connections, $(nproc) cores"
printf '| %-28s | %10s | %10s |\n' "request" "200 req/s" "304 req/s"
printf '|%s|%s|%s|\n' "------------------------------" "------------" "------------"
serve "" http
row "no web: block" "http://127.0.0.1:$PORT/http_sd/mysql"
serve "web: {basic_auth_users: {bench: '$HASH'}, bearer_tokens_file: $work/tokens}" http
row "basic auth (cached bcrypt)" "http://127.0.0.1:$PORT/http_sd/mysql" "$BASIC"
row "bearer token" "http://127.0.0.1:$PORT/http_sd/mysql" "$BEARER"
serve "web: {tls_server_config: {cert_file: $work/server.pem, key_file: $work/server.key}, basic_auth_users: {bench: '$HASH'}}" https
row "TLS + basic auth" "https://127.0.0.1:$PORT/http_sd/mysql" "$BASIC"
