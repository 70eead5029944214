#!/usr/bin/env bash
# Shards against the whole job: FILES x TARGETS_PER_FILE file_sd targets;
# the time of the first request for a modulus after a change (it cuts all N
# shards), then requests/s for the whole job and for one shard, 200 and
# 304, and RSS with the shards kept. Loopback only, bounded (wrk runs
# DURATION seconds per row). Needs wrk, curl.
#
#   bash bench/shard_load.sh                       # 10,000 targets, of=4
#   FILES=1000 TARGETS_PER_FILE=100 bash bench/shard_load.sh
set -euo pipefail
cd "$(dirname "$0")/.."
FILES=${FILES:-100}
TARGETS_PER_FILE=${TARGETS_PER_FILE:-100}
OF=${OF:-4}
DURATION=${DURATION:-5}
PORT=${PORT:-19422}
BIN=${SDBRIDGE_BIN:-./target/release/sdbridge}

[ -n "${SDBRIDGE_BIN:-}" ] || cargo build --release -q
work=$(mktemp -d)
pid=
trap '[ -z "$pid" ] || kill "$pid" 2>/dev/null; rm -rf "$work"' EXIT
mkdir -p "$work/sd"
python3 bench/gen_file_sd.py "$work/sd" "$FILES" "$TARGETS_PER_FILE"
printf 'listen: 127.0.0.1:%s\njobs:\n  - job_name: mysql\n    file_sd_configs: [{files: ["%s/sd/*.json"]}]\n' \
    "$PORT" "$work" > "$work/sdbridge.yml"
"$BIN" serve --config "$work/sdbridge.yml" 2>"$work/log" &
pid=$!
until curl -sf "http://127.0.0.1:$PORT/-/ready" >/dev/null; do sleep 0.05; done
base="http://127.0.0.1:$PORT/http_sd/mysql"
echo "$((FILES * TARGETS_PER_FILE)) targets in $FILES files, of=$OF, $(nproc) cores, wrk ${DURATION}s, 2 threads, 32 connections"
printf 'first shard request (cuts %s shards): %s s\n' "$OF" \
    "$(curl -s -o /dev/null -w '%{time_total}' "$base?shard=0&of=$OF")"
printf 'next shard request:                    %s s\n' \
    "$(curl -s -o /dev/null -w '%{time_total}' "$base?shard=1&of=$OF")"
etag() { curl -sI "$1" | tr -d '\r' | awk -F': ' 'tolower($1)=="etag"{print $2}'; }
printf '| %-22s | %10s | %10s | %12s |\n' request "200 req/s" "304 req/s" "body bytes"
printf '|%s|%s|%s|%s|\n' "------------------------" "------------" "------------" "--------------"
for url in "$base" "$base?shard=0&of=$OF"; do
    ok=$(wrk -t2 -c32 -d"${DURATION}s" "$url" | awk '/Requests\/sec/ {print $2}')
    nm=$(wrk -t2 -c32 -d"${DURATION}s" -H "If-None-Match: $(etag "$url")" "$url" | awk '/Requests\/sec/ {print $2}')
    printf '| %-22s | %10s | %10s | %12s |\n' "${url#http://127.0.0.1:$PORT}" "$ok" "$nm" "$(curl -s "$url" | wc -c)"
done
grep -E 'VmRSS' /proc/$pid/status | sed 's/^/memory with shards kept: /'
