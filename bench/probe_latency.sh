#!/usr/bin/env bash
# Probes while the server works: /-/healthy and /-/ready latency (p50,
# p99, max over PROBES probes) while CLIENTS clients cycle through
# MODULI values of `of` (more than the 4 kept per body, so every request
# cuts the body anew), and while SILENT connections sit idle holding
# their places. FILES x TARGETS_PER_FILE file_sd targets. Loopback only,
# bounded (PROBES probes, then everything stops). Needs python3, curl.
#
#   bash bench/probe_latency.sh                      # 100,000 targets
#   FILES=100 TARGETS_PER_FILE=100 bash bench/probe_latency.sh
set -euo pipefail
cd "$(dirname "$0")/.."
FILES=${FILES:-10000}
TARGETS_PER_FILE=${TARGETS_PER_FILE:-10}
CLIENTS=${CLIENTS:-4}
MODULI=${MODULI:-5}
PROBES=${PROBES:-400}
SILENT=${SILENT:-500}
PORT=${PORT:-19423}
BIN=${SDBRIDGE_BIN:-./target/release/sdbridge}

[ -n "${SDBRIDGE_BIN:-}" ] || cargo build --release -q
work=$(mktemp -d)
pid=
trap '[ -z "$pid" ] || kill "$pid" 2>/dev/null; rm -rf "$work"' EXIT
mkdir -p "$work/sd"
python3 bench/gen_file_sd.py "$work/sd" "$FILES" "$TARGETS_PER_FILE"
printf 'listen: 127.0.0.1:%s\njobs:\n  - job_name: big\n    file_sd_configs: [{files: ["%s/sd/*.json"]}]\n' \
    "$PORT" "$work" > "$work/sdbridge.yml"
"$BIN" serve --config "$work/sdbridge.yml" 2>"$work/log" &
pid=$!
until curl -sf "http://127.0.0.1:$PORT/-/ready" >/dev/null; do sleep 0.05; done
echo "$((FILES * TARGETS_PER_FILE)) targets, $(nproc) cores, $CLIENTS clients cycling $MODULI moduli, $SILENT silent connections, $PROBES probes"
python3 - "$PORT" "$CLIENTS" "$MODULI" "$PROBES" "$SILENT" <<'PY'
import http.client, socket, sys, threading, time
port, clients, moduli, probes, silent = map(int, sys.argv[1:])
def get(path):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    c.request("GET", path)
    r = c.getresponse(); r.read(); c.close()
    return r.status
def timed(path):
    t = time.perf_counter(); s = get(path); return s, time.perf_counter() - t
_, cut = timed("/http_sd/big?shard=0&of=97")
print(f"one cut (first request for a modulus): {cut*1000:.0f} ms")
held = [socket.create_connection(("127.0.0.1", port)) for _ in range(silent)]
stop = threading.Event(); cuts = [0]
def client(c):
    n = 0
    while not stop.is_set():
        get(f"/http_sd/big?shard=0&of={2 + c * moduli + n % moduli}"); n += 1; cuts[0] += 1
threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
for t in threads: t.start()
time.sleep(cut * 2)
lat = []
for i in range(probes):
    s, t = timed("/-/healthy" if i % 2 == 0 else "/-/ready")
    assert s == 200, s
    lat.append(t); time.sleep(0.005)
stop.set()
for t in threads: t.join()
for h in held: h.close()
lat.sort()
q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] * 1000
print(f"probes: p50 {q(0.5):.2f} ms, p99 {q(0.99):.2f} ms, max {lat[-1]*1000:.2f} ms; {cuts[0]} cuts meanwhile")
PY
