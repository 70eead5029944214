"""Renders bench/growth.sh's measurements (key=value lines in WORK/meta,
WORK/file_sd and WORK/consul) as Markdown.

    python3 bench/growth_table.py WORK

The last column of each table divides the per-unit cost at the largest size
by the one at the smallest: 1.00 means the cost grows linearly with the
size (or, for rows marked "flat", does not grow at all); 2.00 means each
target costs twice as much at the largest size. Rows "per added ..." are
slopes between consecutive sizes (fixed costs drop out); their ratio is the
last slope over the first.
"""
import math
import os
import sys


def records(path):
    if not os.path.exists(path):
        return []
    out = []
    with open(path) as f:
        for line in f:
            kv = dict(w.split("=", 1) for w in line.split() if "=" in w)
            if kv:
                out.append({k: num(v) for k, v in kv.items()})
    return out


def num(v):
    try:
        return float(v)
    except ValueError:
        return v


def meta(path):
    m = {}
    with open(path) as f:
        for line in f:
            k, _, v = line.rstrip("\n").partition("=")
            m[k] = v
    return m


def n(v):
    return f"{int(v):,}"


def ms(v):
    if isinstance(v, str) or math.isnan(v):
        return "—"
    return f"{v:.0f} ms" if v >= 10 else f"{v:.1f} ms"


def secs(v):
    return "—" if math.isnan(v) else f"{v:.2f} s"


def mib(kb):
    return f"{kb / 1024:.1f} MiB"


def size_bytes(b):
    for unit, div in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if b >= div:
            return f"{b / div:.1f} {unit}"
    return f"{b:.0f} B"


def sl_ms(v, digits=2):
    return "" if math.isnan(v) else f"{v:.{digits}f} ms"


def sl_b(v):
    return "" if math.isnan(v) else f"{v:,.0f}"


def ratio(per_unit):
    """Largest ÷ smallest of per-unit costs, or '' with one size."""
    if len(per_unit) < 2 or not per_unit[0] or any(
            isinstance(v, str) or math.isnan(v) for v in (per_unit[0], per_unit[-1])):
        return ""
    return f"{per_unit[-1] / per_unit[0]:.2f}"


def marginal(xs, ys):
    """Cost of each added unit between consecutive sizes (the slope), which
    fixed costs (process start, runtime, code pages) do not blur."""
    return [float("nan")] + [(y1 - y0) / (x1 - x0) for x0, x1, y0, y1 in
                             zip(xs, xs[1:], ys, ys[1:])]


def slope_ratio(slopes):
    """Last slope ÷ first slope: needs three sizes."""
    return ratio(slopes[1:]) if len(slopes) >= 3 else ""


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        lines.append("| " + " | ".join(r) + " |")
    return "\n".join(lines)


def file_sd(rs, m):
    rs = sorted(rs, key=lambda r: r["size"])
    k = [r["size"] / 1000 for r in rs]  # thousands of targets
    col = lambda f: [f(r) for r in rs]
    rows = []

    def row(name, cells, per=None):
        rows.append([name] + cells + [ratio(per) if per else ""])

    row("files (10 targets each)", col(lambda r: n(r["files"])))
    row("body, identity / gzip", col(lambda r: f"{size_bytes(r['body'])} / {size_bytes(r['gz'])}"))
    row("… body bytes per target", col(lambda r: f"{r['body'] / r['size']:.0f}"),
        [r["body"] / r["size"] for r in rs])
    row("start to `/-/ready`", col(lambda r: ms(r["ready_ms"])))
    row("… per 1k targets", [f"{r['ready_ms'] / x:.2f} ms" for r, x in zip(rs, k)],
        [r["ready_ms"] / x for r, x in zip(rs, k)])
    slopes = marginal([r["size"] for r in rs], [r["ready_ms"] for r in rs])
    rows.append(["… per added 1k targets"] + [sl_ms(v * 1000) for v in slopes] + [slope_ratio(slopes)])
    row("CPU used until ready (user + sys)", col(lambda r: f"{r['cpu_ready_ticks'] * 10:.0f} ms"))
    row("one-file rename-over to new ETag, p50 / p99 / max",
        col(lambda r: f"{ms(r['p50'])} / {ms(r['p99'])} / {ms(r['max'])} ({int(r['changes'])} changes)"))
    row("… p50 per 1k targets", [f"{r['p50'] / x:.3f} ms" for r, x in zip(rs, k)],
        [r["p50"] / x for r, x in zip(rs, k)])
    slopes = marginal([r["size"] for r in rs], [r["p50"] for r in rs])
    rows.append(["… p50 per added 1k targets"] + [sl_ms(v * 1000, 3) for v in slopes] + [slope_ratio(slopes)])
    row(f"measurement floor: one HEAD round trip p50 / p99 (+ {m.get('poll_ms', '1')} ms poll interval)",
        col(lambda r: f"{r['floor50']:.2f} / {r['floor99']:.2f} ms"))
    row("full `200` requests/s (wrk 2 × 8 connections, identity)", col(lambda r: f"{r['rps200']:,.1f}"))
    row("… bytes served/s (req/s × body; ratio per byte)",
        col(lambda r: f"{size_bytes(r['rps200'] * r['body'])}/s"),
        [1 / (r["rps200"] * r["body"]) if r["rps200"] else float("nan") for r in rs])
    row("`304` requests/s (If-None-Match; ratio per request, flat)", col(lambda r: f"{r['rps304']:,.0f}"),
        [1 / r["rps304"] if r["rps304"] else float("nan") for r in rs])
    row("RSS at steady state after start (VmRSS)", col(lambda r: mib(r["rss_steady_kb"])))
    row("… bytes per target", col(lambda r: f"{r['rss_steady_kb'] * 1024 / r['size']:,.0f}"),
        [r["rss_steady_kb"] / r["size"] for r in rs])
    slopes = marginal([r["size"] for r in rs], [r["rss_steady_kb"] * 1024 for r in rs])
    rows.append(["… bytes per added target"] + [sl_b(v) for v in slopes] + [slope_ratio(slopes)])
    row("RSS peak over the run (VmHWM)", col(lambda r: mib(r["hwm_kb"])))
    row("… bytes per target", col(lambda r: f"{r['hwm_kb'] * 1024 / r['size']:,.0f}"),
        [r["hwm_kb"] / r["size"] for r in rs])
    slopes = marginal([r["size"] for r in rs], [r["hwm_kb"] * 1024 for r in rs])
    rows.append(["… bytes per added target"] + [sl_b(v) for v in slopes] + [slope_ratio(slopes)])
    row("RSS at the end, after changes and wrk (VmRSS)", col(lambda r: mib(r["rss_end_kb"])))
    header = ["file_sd targets"] + [n(r["size"]) for r in rs] + ["largest ÷ smallest, per unit (1.00 = linear)"]
    return table(header, rows)


def consul(rs):
    rs = sorted(rs, key=lambda r: r["services"])
    k = [r["services"] / 1000 for r in rs]  # thousands of services
    col = lambda f: [f(r) for r in rs]
    rows = []

    def row(name, cells, per=None):
        rows.append([name] + cells + [ratio(per) if per else ""])

    row("first full sync (start to every target served)", col(lambda r: secs(r["first_sync_s"])))
    row("… per 1k services", [sl_ms(r["first_sync_s"] * 1000 / x, 0) for r, x in zip(rs, k)],
        [r["first_sync_s"] / x for r, x in zip(rs, k)])
    slopes = marginal([r["services"] for r in rs], [r["first_sync_s"] * 1000 for r in rs])
    rows.append(["… per added 1k services"] + [sl_ms(v * 1000, 0) for v in slopes] + [slope_ratio(slopes)])
    row("requests to Consul during first sync", col(lambda r: n(r["first_sync_requests"])))
    row("new instance with its check served, median / max (flat)",
        col(lambda r: f"{secs(r['checked_median_s'])} / {secs(r['checked_max_s'])}"),
        [r["checked_median_s"] for r in rs])
    row("new check-less instance served, median / max",
        col(lambda r: f"{secs(r['checkless_median_s'])} / {secs(r['checkless_max_s'])}"
            + (f" ({int(r['missed'])} missed in 20 s)" if r["missed"] else "")))
    row("… check-less median per 1k services",
        [sl_ms(r["checkless_median_s"] * 1000 / x, 0) for r, x in zip(rs, k)],
        [r["checkless_median_s"] / x for r, x in zip(rs, k)])
    slopes = marginal([r["services"] for r in rs], [r["checkless_median_s"] * 1000 for r in rs])
    rows.append(["… check-less median per added 1k services"] + [sl_ms(v * 1000, 0) for v in slopes]
                + [slope_ratio(slopes)])
    row("RSS peak (VmHWM) / at the end (VmRSS)",
        col(lambda r: f"{r['hwm_mib']:.1f} / {r['rss_mib']:.1f} MiB"))
    row("… peak bytes per target",
        col(lambda r: f"{r['hwm_mib'] * 1048576 / (r['services'] * r['instances']):,.0f}"),
        [r["hwm_mib"] / (r["services"] * r["instances"]) for r in rs])
    slopes = marginal([r["services"] * r["instances"] for r in rs], [r["hwm_mib"] * 1048576 for r in rs])
    rows.append(["… peak bytes per added target"] + [sl_b(v) for v in slopes] + [slope_ratio(slopes)])
    row("peak connections to Consul / refused (429)",
        col(lambda r: f"{int(r['peak_conns'])} / {int(r['refused'])}"))
    header = ["Consul services × instances"] + [
        f"{n(r['services'])} × {int(r['instances'])}" for r in rs] + [
        "largest ÷ smallest, per unit (1.00 = linear)"]
    return table(header, rows)


def main():
    work = sys.argv[1]
    m = meta(os.path.join(work, "meta"))
    print(f"Growth run {m['date']}, nproc {m['nproc']}, revision {m['rev']}, "
          f"load average at start {m['load']}, kernel {m['kernel']}")
    fs = records(os.path.join(work, "file_sd"))
    if fs:
        print()
        print(file_sd(fs, m))
        print()
        print(f"Rename-overs are timed from the rename(2) until a HEAD on one kept-alive "
              f"connection (every {m['poll_ms']} ms) shows a new ETag; each starts once "
              f"sdbridge's CPU is idle again (the previous change's gzip done). wrk runs "
              f"{m['wrk_secs']} s per cell.")
    cs = records(os.path.join(work, "consul"))
    if cs:
        print()
        print(consul(cs))
        print()
        print("`cargo bench --bench consul_load` with SKIP_VM=1 on tests/fake_consul.rs "
              "(which shares the cores); sdbridge's default max_connections.")


if __name__ == "__main__":
    main()
