#!/usr/bin/env bash
# Idle cost and change propagation of file_sd at scale: FILES files x
# TARGETS_PER_FILE targets served by the release binary.
# - CPU seconds the process uses over IDLE seconds with nothing changing,
#   and the rescans/re-reads it made meanwhile (both should be ~0);
# - CHANGES one-file rename-overs: time until the new ETag is served
#   (p50/p99), then the idle CPU again right after them.
# Loopback only, bounded (CHANGES changes, two IDLE windows). Needs curl.
#
#   bash bench/file_sd_idle.sh            # 10,000 files x 10 = 100k targets
#   FILES=1000 IDLE=5 CHANGES=20 bash bench/file_sd_idle.sh
set -euo pipefail
cd "$(dirname "$0")/.."
FILES=${FILES:-10000}
TARGETS_PER_FILE=${TARGETS_PER_FILE:-10}
IDLE=${IDLE:-20}
CHANGES=${CHANGES:-200}
PORT=${PORT:-19413}
BIN=${SDBRIDGE_BIN:-./target/release/sdbridge}

[ -n "${SDBRIDGE_BIN:-}" ] || cargo build --release -q
work=$(mktemp -d)
trap 'kill $pid 2>/dev/null || true; rm -rf "$work"' EXIT
mkdir -p "$work/sd"
python3 bench/gen_file_sd.py "$work/sd" "$FILES" "$TARGETS_PER_FILE"
last=$((FILES - 1)); width=${#last}; [ "$width" -ge 4 ] || width=4 # as gen_file_sd.py names them
cat > "$work/sdbridge.yml" <<YML
listen: 127.0.0.1:$PORT
jobs:
  - job_name: mysql
    file_sd_configs: [{files: ["$work/sd/*.json"]}]
YML
start=$(date +%s.%N)
"$BIN" serve --config "$work/sdbridge.yml" 2>"$work/log" &
pid=$!
until curl -sf "http://127.0.0.1:$PORT/-/ready" >/dev/null; do sleep 0.01; done
ready=$(date +%s.%N)
echo "targets:            $((FILES * TARGETS_PER_FILE)) in $FILES files"
printf 'time to ready:      %.0f ms\n' "$(echo "($ready - $start) * 1000" | bc)"

ticks() { awk '{sub(/.*\) /, ""); print $12 + $13}' "/proc/$pid/stat"; }
counter() { curl -s "http://127.0.0.1:$PORT/metrics" | awk -v m="$1" '$1 ~ "^"m"{" {s += $2} END {print s + 0}'; }
idle() {
    local label=$1 t0 s0 r0 t1
    t0=$(ticks); s0=$(counter sdbridge_file_sd_scans_total); r0=$(counter sdbridge_file_sd_reads_total)
    sleep "$IDLE"
    t1=$(ticks)
    printf '%-19s %.2f%% of a core (%.2f CPU s in %s s), %d rescans, %d files read\n' "$label" \
        "$(echo "($t1 - $t0) / $IDLE" | bc -l)" "$(echo "($t1 - $t0) / 100" | bc -l)" "$IDLE" \
        "$(( $(counter sdbridge_file_sd_scans_total) - s0 ))" "$(( $(counter sdbridge_file_sd_reads_total) - r0 ))"
}
sleep 2 # the initial gzip
idle "idle:"

etag() { curl -sI "http://127.0.0.1:$PORT/http_sd/mysql" | tr -d '\r' | awk -F': ' 'tolower($1)=="etag"{print $2}'; }
: > "$work/latencies"
for k in $(seq 1 "$CHANGES"); do
    f="$work/sd/db-$(printf "%0${width}d" $(( k % FILES ))).json"
    before=$(etag)
    changed=$(date +%s%N)
    echo "[{\"targets\": [\"127.255.$((k / 256 % 256)).$((k % 256)):9104\"], \"labels\": {\"change\": \"$k\"}}]" > "$f.tmp"
    mv "$f.tmp" "$f"
    while [ "$(etag)" = "$before" ]; do :; done
    echo $(( ($(date +%s%N) - changed) / 1000000 )) >> "$work/latencies"
done
sort -n "$work/latencies" | awk -v n="$CHANGES" '
    { v[NR] = $1 }
    END { printf "change served in:   p50 %d ms, p99 %d ms, max %d ms over %d rename-overs\n",
          v[int(n * 0.5 + 0.5)], v[int(n * 0.99 + 0.5)], v[n], n }'
idle "idle after changes:"
grep -E 'VmHWM|VmRSS' "/proc/$pid/status" | sed 's/^/memory:             /'
