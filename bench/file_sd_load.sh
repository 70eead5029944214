#!/usr/bin/env bash
# Load script: a file_sd directory of FILES files x TARGETS_PER_FILE targets
# served by the release binary; measures time to ready, time for a change to
# be served, RSS, and request throughput with wrk. Loopback only, bounded
# (wrk runs for DURATION seconds). Needs: wrk (apt-get install wrk), curl.
#
#   bash bench/file_sd_load.sh            # 1,000 files x 100 = 100k targets
#   FILES=10 TARGETS_PER_FILE=100 bash bench/file_sd_load.sh
set -euo pipefail
cd "$(dirname "$0")/.."
FILES=${FILES:-1000}
TARGETS_PER_FILE=${TARGETS_PER_FILE:-100}
DURATION=${DURATION:-10}
PORT=${PORT:-19412}

cargo build --release -q
work=$(mktemp -d)
trap 'kill $pid 2>/dev/null || true; rm -rf "$work"' EXIT
mkdir -p "$work/sd"
python3 bench/gen_file_sd.py "$work/sd" "$FILES" "$TARGETS_PER_FILE"
cat > "$work/sdbridge.yml" <<YML
listen: 127.0.0.1:$PORT
jobs:
  - job_name: mysql
    file_sd_configs: [{files: ["$work/sd/*.json"]}]
YML
start=$(date +%s.%N)
./target/release/sdbridge serve --config "$work/sdbridge.yml" 2>"$work/log" &
pid=$!
until curl -sf "http://127.0.0.1:$PORT/-/ready" >/dev/null; do sleep 0.01; done
ready=$(date +%s.%N)
body=$(curl -s "http://127.0.0.1:$PORT/http_sd/mysql" | wc -c)
echo "targets:            $((FILES * TARGETS_PER_FILE)) in $FILES files"
echo "body bytes:         $body"
printf 'time to ready:      %.0f ms\n' "$(echo "($ready - $start) * 1000" | bc)"

etag() { curl -sI "http://127.0.0.1:$PORT/http_sd/mysql" | tr -d '\r' | awk -F': ' 'tolower($1)=="etag"{print $2}'; }
sleep 1 # let the initial gzip finish
# One file changes (rename-over): time until the ETag moves (HEAD, cheap).
before=$(etag)
changed=$(date +%s.%N)
echo '[{"targets": ["127.255.255.1:9104"], "labels": {"changed": "yes"}}]' > "$work/sd/db-0000.json.tmp"
mv "$work/sd/db-0000.json.tmp" "$work/sd/db-0000.json"
while [ "$(etag)" = "$before" ]; do sleep 0.002; done
seen=$(date +%s.%N)
curl -s "http://127.0.0.1:$PORT/http_sd/mysql" | grep -q 127.255.255.1
printf 'change served in:   %.0f ms (rename-over to new ETag)\n' "$(echo "($seen - $changed) * 1000" | bc)"

grep -E 'VmHWM|VmRSS' /proc/$pid/status | sed 's/^/memory:             /'
etag=$(etag)
echo "wrk, ${DURATION}s, 2 threads, 32 connections:"
echo "  304 (If-None-Match, what polling Prometheus servers mostly get):"
wrk -t2 -c32 -d"${DURATION}s" -H "If-None-Match: $etag" "http://127.0.0.1:$PORT/http_sd/mysql" | grep -E 'Requests/sec|Latency' | sed 's/^/    /'
echo "  200 with the full body:"
wrk -t2 -c32 -d"${DURATION}s" "http://127.0.0.1:$PORT/http_sd/mysql" | grep -E 'Requests/sec|Latency|Transfer/sec' | sed 's/^/    /'
grep -E 'VmHWM|VmRSS' /proc/$pid/status | sed 's/^/memory after load:  /'
