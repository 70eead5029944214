"""Timing probes for bench/growth.sh, in one process so that no curl start-up
(a few ms each) lands inside the measured intervals.

    python3 bench/growth_probe.py launch PORT LOG CMD...
        starts CMD (stderr to LOG, left running when this exits), polls
        /-/ready (fresh connection every 5 ms) until 200; prints "PID MS",
        MS from the spawn to the 200 (this interpreter's own start-up, tens
        of ms, stays outside); fails if CMD exits first.
    python3 bench/growth_probe.py quiet PID
        returns once PID used at most one clock tick (10 ms) in 100 ms
        (or after 120 s).
    python3 bench/growth_probe.py changes PORT PID DIR FILES N
        N one-file rename-overs in DIR; each is timed from the rename until
        a HEAD on /http_sd/mysql (one kept-alive connection, every POLL_MS)
        shows a new ETag. Each change starts once PID is quiet again (CPU
        idle for 100 ms: the previous change's gzip is done), so changes do
        not queue behind each other. Prints "p50 p99 max floor_p50
        floor_p99" in ms; the floor is one HEAD round trip, measured on the
        same connection after the changes (add POLL_MS for the resolution).
"""
import http.client
import json
import os
import sys
import time

PATH = "/http_sd/mysql"
POLL_S = float(os.environ.get("POLL_MS", "1")) / 1000


def launch(port, log, cmd):
    import subprocess
    with open(log, "wb") as err:
        t0 = time.perf_counter()
        child = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                 stderr=err, start_new_session=False)
    while True:
        if child.poll() is not None:
            sys.exit(f"growth_probe.py: {cmd[0]} exited ({child.returncode}) before /-/ready")
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            c.request("GET", "/-/ready")
            r = c.getresponse()
            r.read()
            c.close()
            if r.status == 200:
                print(f"{child.pid} {(time.perf_counter() - t0) * 1000:.0f}")
                return
        except OSError:
            pass
        time.sleep(0.005)


def ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def wait_quiet(pid, limit=60.0):
    """Until PID used at most one clock tick (10 ms) in 100 ms, or LIMIT s."""
    deadline = time.monotonic() + limit
    before = ticks(pid)
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = ticks(pid)
        if now - before <= 1:
            return
        before = now


def pct(sorted_v, q):
    return sorted_v[min(len(sorted_v) - 1, max(0, int(len(sorted_v) * q + 0.5) - 1))]


def changes(port, pid, d, files, n):
    width = max(4, len(str(files - 1)))  # as gen_file_sd.py names them
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def etag():
        conn.request("HEAD", PATH)
        r = conn.getresponse()
        r.read()
        return r.getheader("ETag")

    lat = []
    for k in range(1, n + 1):
        wait_quiet(pid)
        f = os.path.join(d, f"db-{k % files:0{width}d}.json")
        group = [{"targets": [f"127.255.{k // 256 % 256}.{k % 256}:9104"],
                  "labels": {"change": str(k)}}]
        with open(f + ".tmp", "w") as out:
            json.dump(group, out)
        before = etag()
        t0 = time.perf_counter()
        os.rename(f + ".tmp", f)
        while etag() == before:
            time.sleep(POLL_S)
        lat.append((time.perf_counter() - t0) * 1000)
    wait_quiet(pid)
    floor = []
    for _ in range(200):
        t0 = time.perf_counter()
        etag()
        floor.append((time.perf_counter() - t0) * 1000)
    lat.sort()
    floor.sort()
    print(f"{pct(lat, 0.5):.1f} {pct(lat, 0.99):.1f} {lat[-1]:.1f} "
          f"{pct(floor, 0.5):.2f} {pct(floor, 0.99):.2f}")


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "launch":
        launch(int(sys.argv[2]), sys.argv[3], sys.argv[4:])
    elif cmd == "quiet":
        wait_quiet(int(sys.argv[2]), 120.0)
    elif cmd == "changes":
        changes(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5]),
                int(sys.argv[6]))
    else:
        sys.exit(f"growth_probe.py: unknown command {cmd!r}")
