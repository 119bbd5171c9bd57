"""Turn load-generator results into the published artefacts.

* :func:`summarize` -- one (mode, workload) run -> a plain dict: counts, steady vs restart-window
  latency, added tail, restart time, client-side gap, supervisor cost, plot series;
* :func:`write` -- ``results/<date>.json``, ``results/latest.md`` (+ ``<date>.md``) and
  ``results/latest.png`` (+ ``<date>.png``): latency over time aligned on the restart trigger,
  one line per mode. ``python bench/report.py results/X.json`` re-renders from a JSON file.
"""

from __future__ import annotations

import bisect
import itertools
import json
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import loadgen
from bench import stalls as stallmod

RESULTS = Path(__file__).resolve().parent / "results"
BIN_S = 0.010  # plot bins
PLOT_FROM, PLOT_TO = -0.2, 1.2  # seconds around each restart trigger
STEADY_SKIP = 0.5  # the first seconds of a run are warm-up, not steady state


def _ms(d: dict[str, float]) -> dict[str, float | None]:
    return {
        k: (v if k == "n" else (None if math.isnan(v) else round(v * 1e3, 3))) for k, v in d.items()
    }


def _gap(completions: list[float], a: float, b: float) -> float:
    """Longest interval inside [a, b] with no completed request (seconds); sorted input."""
    if b <= a:
        return 0.0
    lo, hi = bisect.bisect_left(completions, a), bisect.bisect_right(completions, b)
    pts = [a, *completions[lo:hi], b]
    return max((y - x for x, y in itertools.pairwise(pts)), default=0.0)


def _range_stats(res: loadgen.Result, a: float, b: float) -> tuple[int, int | None]:
    """(failed, index of the slowest ok request) of requests scheduled in [a, b) (the
    schedule is sorted)."""
    lo, hi = bisect.bisect_left(res.scheduled, a), bisect.bisect_left(res.scheduled, b)
    failed = sum(1 for o in res.outcome[lo:hi] if o != 0)
    slowest = max(
        (i for i in range(lo, hi) if not math.isnan(res.latency[i])),
        key=lambda i: res.latency[i],
        default=None,
    )
    return failed, slowest


def summarize(
    res: loadgen.Result,
    restarts: Sequence[Any],
    *,
    tail: float,
    supervisor: dict[str, Any] | None = None,
    stalls: dict[str, Any] | None = None,
    timeout: float = 3.0,
) -> dict[str, Any]:
    """Counts, steady vs window latency (ms), restart time and gap, plot series.

    ``stalls`` (from :class:`stalls.Canaries`) adds the same figures without the ok
    requests a machine stall caught, and the stall rate inside windows against outside.
    """
    windows = [(r.trigger, r.done + tail) for r in restarts]
    steady = loadgen.steady_stats(res, [*windows, (res.t0 - 1.0, res.t0 + STEADY_SKIP)])
    win = loadgen.window_stats(res, windows) if windows else None
    completions = sorted(
        s + lat for s, lat, o in zip(res.scheduled, res.latency, res.outcome, strict=True) if o == 0
    )
    end = res.scheduled[-1] if res.total else 0.0  # no requests after the schedule ends
    gaps = [_gap(completions, r.trigger - 0.05, min(r.done + tail, end)) for r in restarts]
    durations = [r.done - r.trigger for r in restarts]
    per_restart = []
    for (a, b), r, g in zip(windows, restarts, gaps, strict=True):
        failed, i = _range_stats(res, a, b)
        per_restart.append(
            {
                "trigger_s": round(r.trigger - res.t0, 4),
                "duration_ms": round((r.done - r.trigger) * 1e3, 2),
                "gap_ms": round(g * 1e3, 2),
                "failed": failed,
                "max_ms": None if i is None else round(res.latency[i] * 1e3, 3),
                # the slowest request: when it was due (from the trigger), which process
                # answered it, and how late the generator sent it (a late send is the
                # generator's stall, not the server's)
                "max_at_ms": None if i is None else round((res.scheduled[i] - r.trigger) * 1e3, 2),
                "max_pid": None if i is None else res.pid[i],
                "max_send_lag_ms": None if i is None else round(res.send_lag[i] * 1e3, 3),
                "old_pid": r.old_pid,
                "new_pid": r.new_pid,
                "note": r.note,
            }
        )
    out: dict[str, Any] = {
        "counts": {
            "total": res.total,
            "sent": res.sent,
            "ok": res.ok,
            "refused": res.refused,
            "reset": res.reset,
            "timeout": res.timeout,
            "lost": res.lost,
            "error": res.error,
            "failed": res.failed,
            "errors": dict(res.errors),
        },
        "rate": res.rate,
        "duration_s": res.duration,
        "restarts": len(restarts),
        "steady_ms": _ms(steady.latency),
        "window_ms": _ms(win.latency) if win else None,
        "window_counts": win.counts if win else None,
        "window_requests": win.total if win else 0,
        "restart_ms": {
            "median": round(sorted(durations)[len(durations) // 2] * 1e3, 2) if durations else None,
            "max": round(max(durations) * 1e3, 2) if durations else None,
        },
        "gap_ms": {
            "median": round(sorted(gaps)[len(gaps) // 2] * 1e3, 2) if gaps else None,
            "max": round(max(gaps) * 1e3, 2) if gaps else None,
        },
        "server_pids": len([p for p in res.pids() if p]),
        "generator": {
            "send_lag_ms": _ms(loadgen.percentiles(x for x in res.send_lag if not math.isnan(x))),
            "cpu_s": round(res.cpu_s, 3),
        },
        "supervisor": supervisor or {},
        "per_restart": per_restart,
        "series": _series(res, restarts),
    }
    if win and steady.latency["n"] and win.latency["n"]:
        out["added_ms"] = _added(win, steady)
    if tail > 0 and restarts:
        # the window of restarts-and-measurement.md §4.4 itself: trigger .. restart done
        # (for C3: the later of the new generation's READY and the old one's exit)
        exact = [(r.trigger, r.done) for r in restarts]
        s0 = loadgen.steady_stats(res, [*exact, (res.t0 - 1.0, res.t0 + STEADY_SKIP)])
        w0 = loadgen.window_stats(res, exact)
        if s0.latency["n"] and w0.latency["n"]:
            out["exact_window"] = {
                "steady_ms": _ms(s0.latency),
                "window_ms": _ms(w0.latency),
                "window_s": round(sum(b - a for a, b in exact), 2),
                "added_ms": _added(w0, s0),
            }
    if stalls is not None and windows:
        out["stalls"] = _stall_summary(res, windows, per_restart, stalls, timeout)
    return out


def _added(win: loadgen.Stats, steady: loadgen.Stats) -> dict[str, float]:
    """Window minus steady p99 and p99.9, in ms ("added latency")."""
    return {q: round((win.latency[q] - steady.latency[q]) * 1e3, 3) for q in ("p99", "p99.9")}


def _stall_summary(
    res: loadgen.Result,
    windows: list[tuple[float, float]],
    per_restart: list[dict[str, Any]],
    stalls: dict[str, Any],
    timeout: float,
) -> dict[str, Any]:
    gaps = [tuple(g) for g in stalls["gaps"]]
    flags = stallmod.stalled(res.scheduled, res.latency, gaps, timeout=timeout)
    quiet = [*windows, (res.t0 - 1.0, res.t0 + STEADY_SKIP)]
    steady = loadgen.steady_stats(res, quiet, flags)
    win = loadgen.window_stats(res, windows, flags)
    inside, win_s = stallmod.rate_inside(gaps, windows)
    span = (res.scheduled[-1] - res.t0) if res.total else 0.0
    for row, (a, b) in zip(per_restart, windows, strict=True):
        row["stall_ms"] = round(sum(max(0.0, min(b, e) - max(a, s)) for _, s, e in gaps) * 1e3, 2)
    out: dict[str, Any] = {
        "sched_fifo": stalls.get("rt"),
        "threshold_ms": round(stalls.get("threshold_s", 0) * 1e3, 1),
        "count": len(gaps),
        "max_ms": round(max((e - s for _, s, e in gaps), default=0.0) * 1e3, 2),
        "per_cpu": {
            str(c): sum(1 for g in gaps if g[0] == c) for c in sorted({g[0] for g in gaps})
        },
        "in_windows": inside,
        "window_s": round(win_s, 2),
        "outside": len(gaps) - inside,
        "outside_s": round(max(0.0, span - win_s), 2),
        "windows_hit": sum(1 for r in per_restart if r["stall_ms"] > 0),
        "excluded_ok": sum(1 for f, o in zip(flags, res.outcome, strict=True) if f and o == 0),
        "steady_ms": _ms(steady.latency),
        "window_ms": _ms(win.latency),
    }
    if steady.latency["n"] and win.latency["n"]:
        out["added_ms"] = _added(win, steady)
    return out


def _series(res: loadgen.Result, restarts: Sequence[Any]) -> dict[str, list[Any]]:
    """Per 10 ms bin around the triggers (all restarts overlaid): max latency and failures."""
    nbins = round((PLOT_TO - PLOT_FROM) / BIN_S)
    mx: list[float | None] = [None] * nbins
    fails = [0] * nbins
    for r in restarts:
        a = r.trigger + PLOT_FROM
        lo = _bisect(res.scheduled, a)
        hi = _bisect(res.scheduled, r.trigger + PLOT_TO)
        for i in range(lo, hi):
            b = int((res.scheduled[i] - a) / BIN_S)
            if not 0 <= b < nbins:
                continue
            lat = res.latency[i]
            if math.isnan(lat):
                fails[b] += 1
            else:
                cur = mx[b]
                mx[b] = lat if cur is None or lat > cur else cur
    return {
        "t_ms": [round((PLOT_FROM + (k + 0.5) * BIN_S) * 1e3, 1) for k in range(nbins)],
        "max_ms": [None if v is None else round(v * 1e3, 3) for v in mx],
        "failed": fails,
    }


def _bisect(xs: Sequence[float], x: float) -> int:
    return bisect.bisect_left(xs, x)


# ------------------------------------------------------------------------- artefacts


def _f(v: Any, nd: int = 1) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def markdown(data: dict[str, Any]) -> str:
    env = data.get("environment", {})
    cfg = data.get("config", {})
    lines = [
        f"# sdactivate restart benchmark — {data.get('date', '?')}",
        "",
        f"Machine: {env.get('nproc')} CPU ({env.get('cpu')}), kernel {env.get('kernel')}, "
        f"{env.get('systemd')}, Python {env.get('python')} (harness); services "
        f"{env.get('service_python', 'the same')}, load generator "
        f"{env.get('loadgen_python', 'the same')}. "
        + (
            f"Load generator on CPU {env.get('loadgen_cpu')}, services on CPU "
            f"{env.get('service_cpu')}. "
            if cfg.get("pin")
            else "Not pinned to CPUs (busy machine). "
        )
        + f"Load average at start / end: {env.get('loadavg_start', '?').split(' ')[0]} / "
        f"{env.get('loadavg_end', '?').split(' ')[0]} (other work was running). "
        f"somaxconn {env.get('sysctl', {}).get('net.core.somaxconn')}.",
        f"Workload: open loop, {cfg.get('rate')} req/s, latency from the scheduled send time; "
        f"{cfg.get('restarts')} restarts every {cfg.get('interval')} s (keep-alive: "
        f"{cfg.get('restarts_ka')}); window = trigger .. restart done + {cfg.get('tail')} s; "
        f"app: `{cfg.get('app')}`.",
        "",
        "| mode | workload | restarts | sent | ok | refused | reset | timeout | lost | "
        "steady p50 / p99 / p99.9 ms | window p50 / p99 / p99.9 / max ms | added p99.9 ms | "
        "restart ms (median) | gap ms (max) | supervisor RSS MB / CPU ms per restart / "
        "idle CPU % | w/o machine stalls: added p99.9 / window max ms (stalls in windows / "
        "outside) |",
        "|" + "---|" * 16,
    ]
    for run in data.get("runs", []):
        head = f"| {run['mode']} {run.get('title', '')} | {run['workload']} |"
        if "skipped" in run:
            lines.append(head + f" skipped: {run['skipped']} |" + " |" * 13)
            continue
        c = run["counts"]
        s, w = run["steady_ms"], run.get("window_ms") or {}
        sup = run.get("supervisor") or {}
        rss = sup.get("rss_mb")
        cpu = sup.get("cpu_ms_per_restart")
        note = f" ({run['error']})" if run.get("error") else ""
        if run.get("notes"):
            note += " (" + "; ".join(run["notes"]) + ")"
        lines.append(
            head + f" {run['restarts']}{note} | {c['sent']} | {c['ok']} | {c['refused']} |"
            f" {c['reset']} |"
            f" {c['timeout']} | {c['lost'] + c['error']} |"
            f" {_f(s.get('p50'), 2)} / {_f(s.get('p99'), 2)} / {_f(s.get('p99.9'), 2)} |"
            f" {_f(w.get('p50'), 2)} / {_f(w.get('p99'))} / {_f(w.get('p99.9'))} /"
            f" {_f(w.get('max'))} | {_f((run.get('added_ms') or {}).get('p99.9'))} |"
            f" {_f(run['restart_ms']['median'])} | {_f(run['gap_ms']['max'])} |"
            f" {_f(rss)} / {_f(cpu)} / {_f(sup.get('idle_cpu_pct'))} |"
            f" {_stall_cell(run.get('stalls'))} |"
        )
    lines += peers_table(data.get("runs", []))
    micro = data.get("micro_rows") or []
    if micro:
        lines += [
            "",
            "Micro-benchmarks (same run; ratio = sdactivate / peer, < 1 is faster):",
            "",
            "| measure | sdactivate | ratio | target |",
            "|---|---|---|---|",
        ]
        lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in micro]
    if cfg.get("wrk"):
        lines += ["", f"wrk cross-check: {cfg['wrk']}"]
    lines += [
        "",
        "Counts are per request (one new connection each, or over a pool of 50 keep-alive "
        "connections). refused = ECONNREFUSED; reset = ECONNRESET/EPIPE/short response; "
        "lost = non-2xx or never sent. gap = longest time with no completed request around a "
        "restart. 'restart' = trigger until the mode reports done (systemctl returned; READY "
        "after handover, and every old worker gone; MAINPID from the old process; gunicorn: "
        "old workers/master gone; uWSGI: 'chain reloading complete' logged and old workers "
        "gone; circus: reload answered and old processes gone). MODE:N = N workers. "
        "Machine stalls: a SCHED_FIFO canary per CPU (bench/stalls.py) saw a 1 ms sleep last "
        "> 5 ms; the last column drops the ok requests in flight during one (failures always "
        "count) and compares the stall rate inside restart windows with outside.",
    ]
    faults = [
        f"{r['mode']}/{r['workload']} {r['major_faults']}"
        for r in data.get("runs", [])
        if r.get("major_faults") is not None
    ]
    if faults:
        lines += [
            "",
            f"Major page faults during each run (system-wide; DAMON: {env.get('damon', '?')}; "
            "a process waiting for a page read from disk leaves its CPU free, so no canary "
            "sees it): " + ", ".join(faults) + ".",
        ]
    return "\n".join(lines) + "\n"


PEERS = ("P1-HUP", "P2-chain", "P3-circus")  # issue 15: against sdactivate run (C3)


def peers_table(runs: Sequence[dict[str, Any]]) -> list[str]:
    """Issue 15's comparison: per worker count and workload, each peer's failures, added
    p99.9, window max and restart time beside C3's of the same run, and the ratios
    (peer / C3) of the window max and the restart time."""
    done = [r for r in runs if "skipped" not in r and r.get("window_ms")]
    base = {
        (r.get("workers", 1), r["workload"]): r for r in done if r["mode"].split(":")[0] == "C3"
    }
    rows = []
    for r in done:
        mode = r["mode"].split("@")[0].split(":")[0]
        c3 = base.get((r.get("workers", 1), r["workload"]))
        if mode not in PEERS or c3 is None:
            continue
        ratio_max = _ratio(r["window_ms"].get("max"), c3["window_ms"].get("max"))
        ratio_restart = _ratio(r["restart_ms"]["median"], c3["restart_ms"]["median"])
        rows.append(
            f"| {r.get('workers', 1)} | {r['workload']} | {r['title']} | {r['counts']['failed']}"
            f" / {c3['counts']['failed']} | {_f((r.get('added_ms') or {}).get('p99.9'))} / "
            f"{_f((c3.get('added_ms') or {}).get('p99.9'))} | {_f(r['window_ms'].get('max'))} "
            f"/ {_f(c3['window_ms'].get('max'))} ({ratio_max}) | "
            f"{_f(r['restart_ms']['median'])} / {_f(c3['restart_ms']['median'])} "
            f"({ratio_restart}) |"
        )
    if not rows:
        return []
    return [
        "",
        "Against the peers (same run, same load; each cell: peer / `sdactivate run` (C3) "
        "with as many workers; ratio = peer / C3):",
        "",
        "| workers | workload | peer | failed | added p99.9 ms | window max ms (ratio) | "
        "restart ms, median (ratio) |",
        "|---|---|---|---|---|---|---|",
        *sorted(rows),
    ]


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.1f}x" if a is not None and b else "-"


def _stall_cell(st: dict[str, Any] | None) -> str:
    if not st:
        return "-"
    return (
        f"{_f((st.get('added_ms') or {}).get('p99.9'))} / {_f(st['window_ms'].get('max'))} "
        f"({st['in_windows']} in {_f(st['window_s'])} s / {st['outside']} in "
        f"{_f(st['outside_s'])} s)"
    )


def plot(data: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [r for r in data.get("runs", []) if "series" in r]
    workloads = [w for w in ("new", "keepalive") if any(r["workload"] == w for r in runs)]
    if not workloads:
        return
    fig, axes = plt.subplots(
        len(workloads), 1, figsize=(13, 4.4 * len(workloads)), squeeze=False, sharex=True
    )
    colours = plt.get_cmap("tab10")
    modes = sorted({r["mode"] for r in runs})
    for ax, wl in zip(axes[:, 0], workloads, strict=True):
        mine = [r for r in runs if r["workload"] == wl]
        top = max([1.0] + [v for r in mine for v in r["series"]["max_ms"] if v is not None])
        for r in mine:
            s = r["series"]
            k = modes.index(r["mode"])
            col = colours(k % 10)
            xs = [t for t, v in zip(s["t_ms"], s["max_ms"], strict=True) if v is not None]
            ys = [v for v in s["max_ms"] if v is not None]
            label = f"{r['mode']} {r.get('title', '')} (failed {r['counts']['failed']})"
            if r.get("error"):
                label += f" [{r['restarts']} restarts, then a restart failed]"
            ax.plot(xs, ys, color=col, lw=1.3, label=label)
            fx = [t for t, f in zip(s["t_ms"], s["failed"], strict=True) if f]
            if fx:  # one row of x marks per mode, above the curves
                ax.scatter(fx, [top * 1.6 * 1.25**k] * len(fx), marker="x", color=col, s=14)
        ax.set_yscale("log")
        ax.axvline(0, color="k", lw=0.8, ls="--")
        ax.set_ylabel("max latency in 10 ms bin (ms, log)")
        ax.set_title(
            f"{'new connection per request' if wl == 'new' else 'keep-alive (50 conns)'}: "
            f"{data.get('config', {}).get('rate')} req/s, all restarts overlaid; "
            "x at top = failed requests"
        )
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    axes[-1, 0].set_xlabel("time since restart trigger (ms), by scheduled send time")
    env = data.get("environment", {})
    fig.suptitle(
        f"sdactivate restart benchmark {data.get('date', '')} — {env.get('nproc')} CPU "
        f"{env.get('cpu')}, kernel {env.get('kernel')}",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write(data: dict[str, Any], outdir: Path = RESULTS) -> dict[str, Path]:
    """Write <date>.json, <date>.md, latest.md and the PNGs; return their paths."""
    outdir.mkdir(parents=True, exist_ok=True)
    stamp = data["date"].replace(":", "").replace("-", "")
    paths = {"json": outdir / f"{stamp}.json", "md": outdir / "latest.md"}
    _atomic(paths["json"], json.dumps(data, indent=1, default=str) + "\n")
    md = markdown(data)
    _atomic(paths["md"], md)
    _atomic(outdir / f"{stamp}.md", md)
    try:
        paths["png"] = outdir / "latest.png"
        plot(data, paths["png"])
    except ImportError as exc:
        print(f"no plot: {exc} (make bench installs matplotlib)", file=sys.stderr)
        del paths["png"]
    return paths


def _atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


if __name__ == "__main__":
    src = Path(sys.argv[1])
    d = json.loads(src.read_text())
    print(write(d, src.parent))
