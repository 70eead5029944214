#!/usr/bin/env bash
# Growth (issue 12): how sdbridge's costs grow with the size of what it
# serves, as one Markdown table (printed, and saved to target/growth.md).
#
# - file_sd at SIZES targets (10 per file, bench/gen_file_sd.py): start to
#   /-/ready, one-file rename-over to new ETag served (p50/p99 over CHANGES,
#   timed by bench/growth_probe.py on one kept-alive connection, no curl
#   start-up inside the interval), full 200 and 304 requests/s (wrk, 2
#   threads x 8 connections, WRK_SECS s, identity), RSS, body size;
# - Consul at CONSUL_SIZES services x CONSUL_INSTANCES on the fake agent of
#   tests/fake_consul.rs, through `cargo bench --bench consul_load`
#   (SKIP_VM=1, its GROWTH lines): first sync, change served with and
#   without a check, RSS, peak connections.
# Every size also gets per-target (or per-service) rows and a last column:
# the per-unit cost at the largest size over the smallest (1.00 = linear).
#
# Loopback only; every load is bounded (wrk WRK_SECS s per run, CHANGES
# changes); processes and temp dirs are removed on exit. Needs curl, wrk,
# python3 (and cargo unless SDBRIDGE_BIN is given and SKIP_CONSUL=1).
#
#   bash bench/growth.sh                                  # ~15 min
#   SIZES=10000 CONSUL_SIZES=1000 bash bench/growth.sh    # ~2 min
#   SKIP_CONSUL=1 SIZES="10000 100000" bash bench/growth.sh
#
# Env: SIZES ("10000 100000 1000000"), CONSUL_SIZES ("1000 5000 10000"),
# SKIP_FILE_SD=1, SKIP_CONSUL=1, CHANGES (100 below 1M targets, 30 from 1M),
# WRK_SECS (5), CONSUL_INSTANCES (10), CONSUL_CHANGES (10),
# CONSUL_WINDOW_SECS (1: the bench's request-rate windows are not reported
# here), POLL_MS (1), PORT (19414), SDBRIDGE_BIN.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZES=${SIZES:-"10000 100000 1000000"}
CONSUL_SIZES=${CONSUL_SIZES:-"1000 5000 10000"}
SKIP_FILE_SD=${SKIP_FILE_SD:-0}
SKIP_CONSUL=${SKIP_CONSUL:-0}
TARGETS_PER_FILE=10
WRK_SECS=${WRK_SECS:-5}
CONSUL_INSTANCES=${CONSUL_INSTANCES:-10}
CONSUL_CHANGES=${CONSUL_CHANGES:-10}
CONSUL_WINDOW_SECS=${CONSUL_WINDOW_SECS:-1}
export POLL_MS=${POLL_MS:-1}
PORT=${PORT:-19414}

need() { command -v "$1" >/dev/null || { echo "growth.sh: $1 is missing ($2)" >&2; exit 1; }; }
need python3 "it generates the file_sd directories and times the probes"
# The interpreter itself: a version manager's shim can add half a second
# to every start.
PY=$(python3 -c 'import sys; print(sys.executable)')
need curl "it fetches bodies and ETags"
if [ "$SKIP_FILE_SD" != 1 ]; then
    # A fresh machine has no wrk: install it where we may (root, apt).
    if ! command -v wrk >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "growth.sh: apt-get install wrk" >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q wrk >/dev/null ||
            echo "growth.sh: could not install wrk" >&2
    fi
    need wrk "it measures the file_sd requests/s: apt-get install wrk, or SKIP_FILE_SD=1"
fi

if [ -z "${SDBRIDGE_BIN:-}" ]; then
    need cargo "it builds the release binary"
    echo "growth.sh: cargo build --release" >&2
    cargo build --release -q
    BIN=$PWD/target/release/sdbridge
else
    BIN=$(realpath "$SDBRIDGE_BIN")
fi
mkdir -p target
work=$(mktemp -d)
pid=
# sdbridge is the probe's child (re-parented when the probe exits), so it
# is waited for by polling, not `wait`.
stop() {
    kill "$pid" 2>/dev/null || return 0
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
}
cleanup() {
    if [ -n "$pid" ]; then stop; fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { echo "growth.sh: $*" >&2; }
kb() { awk -v f="$1:" '$1 == f {print $2}' "/proc/$pid/status"; }
ticks() { awk '{sub(/.*\) /, ""); print $12 + $13}' "/proc/$pid/stat"; }
# Requests/sec and the errors line of a wrk run.
wrk_run() {
    wrk -t2 -c8 -d"${WRK_SECS}s" --timeout 30s "$@" "http://127.0.0.1:$PORT/http_sd/mysql" > "$work/wrk"
    local rps errs
    rps=$(awk '/^Requests\/sec:/ {print $2}' "$work/wrk")
    errs=$(awk '/Non-2xx|Socket errors/ {printf "%s; ", $0}' "$work/wrk")
    [ -z "$errs" ] || log "wrk $*: $errs"
    echo "${rps:-0}"
}

{
    echo "date=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "nproc=$(nproc)"
    echo "rev=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD -- src bench 2>/dev/null || echo +dirty)"
    echo "load=$(cut -d' ' -f1-3 /proc/loadavg)"
    echo "kernel=$(uname -r)"
    echo "wrk_secs=$WRK_SECS"
    echo "poll_ms=$POLL_MS"
} > "$work/meta"

if [ "$SKIP_FILE_SD" != 1 ]; then
    for size in $SIZES; do
        files=$(( (size + TARGETS_PER_FILE - 1) / TARGETS_PER_FILE ))
        if [ -n "${CHANGES:-}" ]; then changes=$CHANGES
        elif [ "$size" -ge 1000000 ]; then changes=30
        else changes=100; fi
        sd="$work/sd-$size"
        mkdir -p "$sd"
        log "file_sd $size targets: generating $files files"
        $PY bench/gen_file_sd.py "$sd" "$files" "$TARGETS_PER_FILE"
        cat > "$work/sdbridge.yml" <<YML
listen: 127.0.0.1:$PORT
jobs:
  - job_name: mysql
    file_sd_configs: [{files: ["$sd/*.json"]}]
YML
        sync; sleep 1 # the generator's writeback out of the way
        launched=$($PY bench/growth_probe.py launch "$PORT" "$work/log-$size" \
            "$BIN" serve --config "$work/sdbridge.yml") || { cat "$work/log-$size" >&2; exit 1; }
        read -r pid ready_ms <<< "$launched"
        cpu_ready=$(ticks)
        log "file_sd $size: ready in $ready_ms ms; waiting for the initial gzip"
        $PY bench/growth_probe.py quiet "$pid"
        rss_steady=$(kb VmRSS)
        url="http://127.0.0.1:$PORT/http_sd/mysql"
        body=$(curl -s -H 'Accept-Encoding: identity' -o /dev/null -w '%{size_download}' "$url")
        gz=$(curl -s -H 'Accept-Encoding: gzip' -o /dev/null -w '%{size_download}' "$url")
        log "file_sd $size: $changes rename-overs"
        probe=$($PY bench/growth_probe.py changes "$PORT" "$pid" "$sd" "$files" "$changes")
        read -r p50 p99 max floor50 floor99 <<< "$probe"
        $PY bench/growth_probe.py quiet "$pid"
        etag=$(curl -sI "$url" | tr -d '\r' | awk -F': ' 'tolower($1)=="etag"{print $2}')
        code=$(curl -s -o /dev/null -w '%{http_code}' -H "If-None-Match: $etag" "$url")
        [ "$code" = 304 ] || { log "expected 304 for If-None-Match $etag, got $code"; exit 1; }
        log "file_sd $size: wrk 304, then 200"
        rps304=$(wrk_run -H "If-None-Match: $etag")
        rps200=$(wrk_run -H 'Accept-Encoding: identity')
        rss_end=$(kb VmRSS)
        hwm=$(kb VmHWM)
        echo "size=$size files=$files changes=$changes ready_ms=$ready_ms cpu_ready_ticks=$cpu_ready body=$body gz=$gz p50=$p50 p99=$p99 max=$max floor50=$floor50 floor99=$floor99 rps304=$rps304 rps200=$rps200 rss_steady_kb=$rss_steady rss_end_kb=$rss_end hwm_kb=$hwm" >> "$work/file_sd"
        stop; pid=
        rm -rf "$sd"
    done
fi

if [ "$SKIP_CONSUL" != 1 ]; then
    need cargo "it runs cargo bench --bench consul_load"
    for services in $CONSUL_SIZES; do
        log "consul $services services x $CONSUL_INSTANCES: cargo bench --bench consul_load"
        SERVICES=$services INSTANCES=$CONSUL_INSTANCES SKIP_VM=1 CHANGES=$CONSUL_CHANGES \
            WINDOW_SECS=$CONSUL_WINDOW_SECS SDBRIDGE_BIN=$BIN \
            cargo bench -q --bench consul_load > "$work/consul-$services"
        grep '^GROWTH consumer=sdbridge ' "$work/consul-$services" >> "$work/consul" ||
            { log "no GROWTH line from consul_load"; cat "$work/consul-$services" >&2; exit 1; }
    done
fi

$PY bench/growth_table.py "$work" | tee target/growth.md
log "saved to target/growth.md"
