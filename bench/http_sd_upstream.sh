#!/usr/bin/env bash
# sdbridge in front of a slow upstream HTTP SD server: the upstream (a
# Python server on loopback) takes DELAY seconds per answer and fails every
# third call; sdbridge polls it every second. wrk measures sdbridge's own
# answers for that job, then for a file_sd job serving the same groups.
# Loopback only, bounded (wrk runs DURATION seconds each). Needs wrk, curl,
# python3.
#
#   bash bench/http_sd_upstream.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DELAY=${DELAY:-2}
DURATION=${DURATION:-10}
TARGETS=${TARGETS:-1000}
PORT=${PORT:-19417}
UP_PORT=${UP_PORT:-19418}
BIN=${SDBRIDGE_BIN:-./target/release/sdbridge}

[ -n "${SDBRIDGE_BIN:-}" ] || cargo build --release -q
work=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; rm -rf "$work"' EXIT
mkdir -p "$work/sd"
python3 - "$work" "$TARGETS" <<'PY'
import json, sys
d, n = sys.argv[1], int(sys.argv[2])
groups = [{"targets": [f"127.0.{i // 256 % 256}.{i % 256}:9104"],
           "labels": {"dbms": "MySQL", "service_name": "My서비스", "db_name": f"db-{i}"}} for i in range(n)]
open(f"{d}/upstream.json", "w").write(json.dumps(groups, ensure_ascii=False))
# The file_sd twin carries the same labels sdbridge adds to the upstream's.
for g in groups:
    g["labels"]["__meta_url"] = "x"
open(f"{d}/sd/groups.json", "w").write(json.dumps(groups, ensure_ascii=False))
PY
python3 - "$work/upstream.json" "$UP_PORT" "$DELAY" <<'PY' &
import http.server, socketserver, sys, threading, time
body = open(sys.argv[1], "rb").read()
port, delay = int(sys.argv[2]), float(sys.argv[3])
calls = [0]
lock = threading.Lock()
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        with lock:
            calls[0] += 1
            n = calls[0]
        time.sleep(delay)
        if n % 3 == 0:
            self.send_response(500); self.send_header("Content-Length", "0"); self.end_headers(); return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
S(("127.0.0.1", port), H).serve_forever()
PY
pids+=($!)
cat > "$work/sdbridge.yml" <<YML
listen: 127.0.0.1:$PORT
jobs:
  - job_name: upstream
    http_sd_configs: [{url: "http://127.0.0.1:$UP_PORT/sd", refresh_interval: 3s}]
  - job_name: file
    file_sd_configs: [{files: ["$work/sd/*.json"]}]
YML
"$BIN" serve --config "$work/sdbridge.yml" 2>"$work/log" &
pids+=($!)
until curl -sf "http://127.0.0.1:$PORT/-/ready" >/dev/null; do sleep 0.1; done
echo "upstream: ${DELAY}s per answer, every third call a 500; $TARGETS targets"
for job in upstream file; do
    echo "  /http_sd/$job (200, full body), wrk ${DURATION}s, 2 threads, 32 connections:"
    wrk -t2 -c32 -d"${DURATION}s" --latency "http://127.0.0.1:$PORT/http_sd/$job" \
        | grep -E 'Requests/sec|  99%|  50%' | sed 's/^/    /'
done
echo "  upstream errors seen meanwhile: $(curl -s "http://127.0.0.1:$PORT/metrics" | awk '/^sdbridge_source_errors_total/ && /job="upstream"/ {s += $2} END {print s + 0}')"
