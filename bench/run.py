"""``make bench``: micro-benchmarks, then every restart mode under the same open-loop load.

    .venv/bin/python bench/run.py                 # default, about 8 minutes
    .venv/bin/python bench/run.py --modes C1,C3   # a subset
    .venv/bin/python bench/run.py --app bench --modes C3,C3:4,P1-HUP,P1-HUP:4,P2-chain,\
        P2-chain:4,P3-circus,P3-circus:4          # issue 15: the peers, 1 and 4 workers
    .venv/bin/python bench/run.py --long          # >= 1000 restarts, >= 10^6 connections per mode

``MODE:N`` runs a mode with N workers (``sdactivate run --workers N``, or the peer's own
worker count); the report sets each peer beside C3 with as many workers.

Each (mode, workload) run: start the service, start the load generator (open loop,
``--rate`` req/s, new connection per request or 50 keep-alive connections), restart
``--restarts`` times every ``--interval`` s, stop. Modes run in a random order (seed in the
results). A mode whose pieces are missing is skipped with the reason. Outputs go to
bench/results/ (see report.py).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import platform
import random
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from bench import loadgen, micro, modes, report, stalls
from bench.modes.base import SERVICE_CPU, ModeUnavailable, proc_sample
from tests.support import free_port, wait_until

LOADGEN_CPU = 1
# C4@bench: the Upgrader driven by the asyncio bench app, beside examples/upgrader_app.py
# MODE:N: N workers (issue 15: sdactivate run --workers N and the peers, 1 and 4 each)
DEFAULT_MODES = (
    "C0",
    "C1",
    "C2",
    "C3",
    "C3:4",
    "C4",
    "C4@bench",
    "P1-HUP",
    "P1-HUP:4",
    "P1-USR2",
    "P2-chain",
    "P2-chain:4",
    "P3-circus",
    "P3-circus:4",
)


def _version_of(python: str) -> str:
    """``3.11.2 (/usr/bin/python3.11)``: an interpreter's version and real path."""
    r = subprocess.run(
        [python, "-I", "-c", "import platform; print(platform.python_version())"],
        capture_output=True,
        text=True,
        check=False,
    )
    return f"{r.stdout.strip() or '?'} ({os.path.realpath(python)})"


def _major_faults() -> int:
    """The system's major page faults so far (a page read back from disk: the faulting
    process waits for the I/O, its CPU stays free, and no stall canary sees it)."""
    for line in Path("/proc/vmstat").read_text().splitlines():
        if line.startswith("pgmajfault "):
            return int(line.split()[1])
    return 0


def _damon() -> str:
    """DAMON's state: a ``pageout`` scheme running drops cold page cache (reclaim)."""
    base = Path("/sys/kernel/mm/damon/admin/kdamonds")
    found = []
    for k in sorted(base.glob("*/state")):
        with contextlib.suppress(OSError):
            actions = [a.read_text().strip() for a in k.parent.glob("contexts/*/schemes/*/action")]
            found.append(f"{k.read_text().strip()} ({', '.join(actions) or 'no schemes'})")
    return "; ".join(found) or "none"


def environment() -> dict[str, Any]:
    def read(p: str) -> str:
        try:
            return Path(p).read_text().strip()
        except OSError:
            return "?"

    cpu = "?"
    for line in read("/proc/cpuinfo").splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    systemd = subprocess.run(
        ["systemctl", "--version"], capture_output=True, text=True, check=False
    ).stdout.splitlines()
    sysctls = {
        "net.core.somaxconn": "/proc/sys/net/core/somaxconn",
        "net.ipv4.tcp_max_syn_backlog": "/proc/sys/net/ipv4/tcp_max_syn_backlog",
        "net.ipv4.tcp_syn_retries": "/proc/sys/net/ipv4/tcp_syn_retries",
        "net.ipv4.tcp_abort_on_overflow": "/proc/sys/net/ipv4/tcp_abort_on_overflow",
        "net.ipv4.tcp_migrate_req": "/proc/sys/net/ipv4/tcp_migrate_req",
        "net.unix.max_dgram_qlen": "/proc/sys/net/unix/max_dgram_qlen",
    }
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "kernel": platform.release(),
        "systemd": systemd[0] if systemd else "?",
        "python": f"{platform.python_version()} ({os.path.realpath(sys.executable)})",
        "service_python": _version_of(modes.base.PYTHON),
        "loadgen_python": _version_of(loadgen.fast_python()),
        "governor": read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"),
        "damon": _damon(),
        "autogroup": read("/proc/sys/kernel/sched_autogroup_enabled"),
        "loadavg_start": read("/proc/loadavg"),
        "sysctl": {k: read(v) for k, v in sysctls.items()},
        "loadgen_cpu": LOADGEN_CPU,
        "service_cpu": SERVICE_CPU,
        "git": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).resolve().parent.parent,
            check=False,
        ).stdout.strip(),
    }


def run_one(
    mode_id: str, workload: str, cfg: argparse.Namespace, pool: modes.SandboxPool
) -> dict[str, Any]:
    keepalive = workload == "keepalive"
    restarts_n = cfg.restarts_ka if keepalive else cfg.restarts
    port = free_port()
    # "C4@bench": C4 with bench/modes/app.py; "C3:4": C3 with 4 workers
    base_id, workers, app = modes.split_id(mode_id)
    app = app or cfg.app
    m = modes.make(
        base_id, port=port, keepalive=keepalive, app=app, pool=pool, pin=cfg.pin, workers=workers
    )
    title = m.title + (f" [{app} app]" if app != cfg.app else "")
    out: dict[str, Any] = {
        "mode": mode_id,
        "title": title,
        "workload": workload,
        "app": app,
        "workers": workers,
    }
    m.log = modes.base.scratch_dir() / f"{base_id}-{workers}-{app}-{workload}-{port}.log"
    try:
        m.check()
        m.start()
    except ModeUnavailable as exc:
        out["skipped"] = str(exc)
        with contextlib.suppress(Exception):
            m.stop()
        return out
    except Exception as exc:
        out["skipped"] = f"start failed: {type(exc).__name__}: {str(exc)[:300]}"
        traceback.print_exc()
        with contextlib.suppress(Exception):
            m.stop()
        return out
    interval = max(cfg.interval, m.restart_hint_s)
    if interval > cfg.interval:
        m.notes.append(f"restarts every {interval:g} s (this mode's restart takes ~that long)")
    duration = cfg.warmup + restarts_n * interval + cfg.tail + 0.5
    restarts: list[modes.Restart] = []
    sup_first = m.supervisor_pid()
    idle0 = proc_sample(sup_first) if sup_first else None
    time.sleep(cfg.idle)  # no load: the supervisor's idle CPU
    s0 = proc_sample(sup_first) if sup_first else None
    rss_max = s0.rss_kb if s0 else 0
    error = ""
    canaries = (
        stalls.Canaries(range(os.cpu_count() or 1), duration + cfg.timeout + 30)
        if cfg.canaries
        else None
    )
    majflt0 = _major_faults()
    h = loadgen.start(
        "127.0.0.1",
        port,
        rate=cfg.rate,
        duration=duration,
        keepalive=keepalive,
        timeout=cfg.timeout,
        cpus={LOADGEN_CPU} if cfg.pin else None,
    )
    try:
        for k in range(restarts_n):
            target = h.t0 + cfg.warmup + k * interval
            if time.monotonic() > h.t0 + duration - cfg.tail - 1.0:
                m.notes.append(
                    f"{restarts_n - k} restart(s) not run: earlier ones overran the "
                    f"{interval} s interval and the load ends"
                )
                break
            time.sleep(max(0.0, target - time.monotonic()))
            try:
                restarts.append(m.restart() if cfg.placebo_ms is None else _placebo(m, cfg))
            except Exception as exc:
                error = f"restart {k + 1} failed: {type(exc).__name__}: {str(exc)[:200]}"
                traceback.print_exc()
                break
            sp = m.supervisor_pid()
            smp = proc_sample(sp) if sp else None
            if smp:
                rss_max = max(rss_max, smp.rss_kb)
        if error:
            h.stop()
        res = h.result()
        out["t0_monotonic"] = h.t0  # CLOCK_MONOTONIC of request 0: lines up outside traces
        out["major_faults"] = _major_faults() - majflt0
        sup_last = m.supervisor_pid()
        s1 = proc_sample(sup_last) if sup_last else None
        with contextlib.suppress(Exception):
            extra = getattr(m, "extra", None)
            if extra is not None:
                out["systemd"] = extra()
    finally:
        h.stop()
        got_stalls = canaries.stop() if canaries is not None else None
        with contextlib.suppress(Exception):
            m.stop()
    sup: dict[str, Any] = {"label": m.supervisor_label}
    if idle0 and s0 and idle0.pid == s0.pid and cfg.idle > 0:
        sup["idle_cpu_pct"] = round((s0.cpu_s - idle0.cpu_s) / cfg.idle * 100, 2)
        sup["idle_rss_mb"] = round(s0.rss_kb / 1024, 1)
    if s1:
        sup["rss_mb"] = round(s1.rss_kb / 1024, 1)
        sup["rss_max_mb"] = round(rss_max / 1024, 1)
        sup["hwm_mb"] = round(s1.hwm_kb / 1024, 1)
    if s0 and s1 and s0.pid == s1.pid and restarts:
        sup["cpu_s"] = round(s1.cpu_s - s0.cpu_s, 3)
        sup["cpu_ms_per_restart"] = round((s1.cpu_s - s0.cpu_s) * 1e3 / len(restarts), 1)
    out.update(
        report.summarize(
            res, restarts, tail=cfg.tail, supervisor=sup, stalls=got_stalls, timeout=cfg.timeout
        )
    )
    if error:
        out["error"] = error
        out["log_tail"] = modes.base.log_tail(m.log)
    out["notes"] = m.notes
    return out


def _wrk(port: int, conns: int, seconds: float, pin: bool) -> dict[str, str]:
    argv = ["wrk", "-t1", f"-c{conns}", f"-d{int(seconds)}s", "--latency"]
    argv += ["-H", "Connection: close", f"http://127.0.0.1:{port}/"]
    if pin:
        argv = ["taskset", "-c", str(LOADGEN_CPU), *argv]
    out = subprocess.run(
        argv, capture_output=True, text=True, timeout=seconds + 30, check=False
    ).stdout
    got = {"rps": "?", "p50": "?", "p99": "?"}
    for ln in out.splitlines():
        parts = ln.split()
        if ln.startswith("Requests/sec"):
            got["rps"] = parts[1]
        elif len(parts) == 2 and parts[0] in ("50%", "99%"):
            got["p" + parts[0][:-1]] = parts[1]
    return got


def wrk_crosscheck(seconds: float, pin: bool, app: str) -> dict[str, Any]:
    """wrk and loadgen against the same server (the app under test), new connection each.

    wrk is closed loop, so compare like with like: wrk with one connection (no queueing)
    against loadgen at a low open-loop rate, both p50 latency; wrk -c8 gives the capacity.
    """
    import shutil

    if shutil.which("wrk") is None:
        return {"skipped": "wrk not installed"}
    port = free_port()
    srv = modes.base.popen(modes.local.app_argv(app, "plain", port), pin=pin)
    try:
        wait_until(lambda: _connectable(port), timeout=20, interval=0.002, what="the app")
        one = _wrk(port, 1, seconds, pin)
        cap = _wrk(port, 8, seconds, pin)
        low = loadgen.start(
            "127.0.0.1", port, rate=200, duration=seconds, cpus={LOADGEN_CPU} if pin else None
        ).result()
        hi = loadgen.start(
            "127.0.0.1", port, rate=1000, duration=seconds, cpus={LOADGEN_CPU} if pin else None
        ).result()
    finally:
        modes.base.kill_pid(srv.pid)
    ls, hs = low.summary(), hi.summary()
    return {
        "wrk_c1": one,
        "wrk_c8": cap,
        "loadgen_200": {"ok": ls["ok"], "total": ls["total"], **ls["latency_ms"]},
        "loadgen_1000": {
            "ok": hs["ok"],
            "total": hs["total"],
            **hs["latency_ms"],
            "cpu_pct": round(hs["cpu_s"] / seconds * 100, 1),
        },
        "text": (
            f"wrk -c1 (closed loop) p50 {one['p50']}, {one['rps']} req/s; loadgen 200/s "
            f"(open loop) p50 {ls['latency_ms']['p50']:.2f}ms from the schedule, "
            f"{ls['service_ms']['p50']:.2f}ms from the send; wrk -c8 capacity "
            f"{cap['rps']} req/s; loadgen 1000/s ok {hs['ok']}/{hs['total']} p50 "
            f"{hs['latency_ms']['p50']:.2f}ms p99 {hs['latency_ms']['p99']:.2f}ms, "
            f"generator CPU {hs['cpu_s'] / seconds * 100:.0f}% of a core"
        ),
    }


def _connectable(port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _placebo(m: modes.Mode, cfg: argparse.Namespace) -> modes.Restart:
    """A control trigger: no restart, only a window of ``--placebo-ms`` (what the windows
    of a run look like when nothing happens in them: the machine's own tail)."""
    t = time.monotonic()
    time.sleep(cfg.placebo_ms / 1e3)
    if not m.notes or not m.notes[-1].startswith("placebo"):
        m.notes.append(f"placebo run: no restart at the triggers, {cfg.placebo_ms:g} ms windows")
    return modes.Restart(t, time.monotonic(), note="placebo")


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--long", action="store_true", help=">= 1000 restarts and >= 10^6 requests per mode"
    )
    p.add_argument(
        "--modes",
        default=",".join(DEFAULT_MODES),
        help=f"comma-separated mode ids ({', '.join(modes.ALL)}); MODE@bench runs MODE with "
        "bench/modes/app.py instead of the examples app",
    )
    p.add_argument("--workloads", default="new,keepalive")
    p.add_argument("--rate", type=float, default=1000.0)
    p.add_argument("--restarts", type=int, default=5)
    p.add_argument("--restarts-ka", type=int, default=3)
    p.add_argument("--interval", type=float, default=1.5)
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--tail", type=float, default=0.25, help="window end = restart done + TAIL s")
    p.add_argument("--timeout", type=float, default=3.0, help="per-request timeout")
    p.add_argument("--app", choices=("auto", "examples", "bench"), default="auto")
    p.add_argument("--idle", type=float, default=0.5, help="s of idle before the load")
    p.add_argument("--no-micro", action="store_true")
    p.add_argument("--wrk", action="store_true", help="also cross-check loadgen against wrk")
    p.add_argument(
        "--pin",
        choices=("auto", "on", "off"),
        default="auto",
        help="services on CPU 0, load generator on CPU 1 (auto: only on a quiet machine, "
        "1-min load average < 1; pinned services on a busy machine saturate their CPU)",
    )
    p.add_argument(
        "--no-canaries",
        dest="canaries",
        action="store_false",
        help="do not run the machine-stall canaries (stalls.py: one SCHED_FIFO sleeper per CPU)",
    )
    p.add_argument(
        "--placebo-ms",
        type=float,
        default=None,
        metavar="MS",
        help="control run: at each trigger do not restart, only mark a window of MS ms "
        "(the machine's own tail in windows of a handover's length)",
    )
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--out", type=Path, default=report.RESULTS)
    a = p.parse_args(argv)
    if a.long:
        a.restarts, a.restarts_ka, a.interval = max(a.restarts, 1000), max(a.restarts_ka, 200), 1.0
        if a.modes == ",".join(DEFAULT_MODES):
            a.modes = "C1,C2,C3,C4"
    if a.app == "auto":
        a.app = "examples" if (modes.base.EXAMPLES_APP.exists()) else "bench"
    a.seed = a.seed if a.seed is not None else random.randrange(1 << 30)
    return a


def main(argv: list[str] | None = None) -> int:
    cfg = parse(argv)
    load1 = float(Path("/proc/loadavg").read_text().split()[0])
    if cfg.pin == "auto":
        cfg.pin = "on" if load1 < 1.0 else "off"
    cfg.pin = cfg.pin == "on" and (os.cpu_count() or 1) >= 2
    if cfg.pin:
        os.sched_setaffinity(0, {SERVICE_CPU})  # main thread: children inherit CPU 0
    elif load1 >= 1.0:
        print(f"note: load average {load1} at start; results will be noisy", flush=True)
    started = time.monotonic()
    data: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "environment": environment(),
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(cfg).items()},
        "runs": [],
    }
    if not cfg.no_micro:
        print("micro-benchmarks ...", flush=True)
        data["micro"] = micro.run_all(quick=False)
        data["micro_rows"] = micro.verdicts(data["micro"])
        for row in data["micro_rows"]:
            print("  " + " | ".join(row), flush=True)
    if cfg.wrk:
        data["wrk"] = wrk_crosscheck(3, cfg.pin, cfg.app)
        data["config"]["wrk"] = data["wrk"].get("text", data["wrk"].get("skipped"))
        print("wrk:", data["config"]["wrk"], flush=True)
    plan = [(m, w) for m in cfg.modes.split(",") for w in cfg.workloads.split(",")]
    random.Random(cfg.seed).shuffle(plan)
    pool = modes.SandboxPool()
    try:
        for mode_id, workload in plan:
            print(f"{mode_id} / {workload} ...", flush=True)
            out = run_one(mode_id, workload, cfg, pool)
            data["runs"].append(out)
            if "skipped" in out:
                print(f"  skipped: {out['skipped']}", flush=True)
            else:
                c = out["counts"]
                w = out.get("window_ms") or {}
                print(
                    f"  ok {c['ok']}/{c['total']} refused {c['refused']} reset {c['reset']} "
                    f"timeout {c['timeout']} lost {c['lost'] + c['error']}; window p99.9 "
                    f"{w.get('p99.9')} ms max {w.get('max')} ms; restart "
                    f"{out['restart_ms']['median']} ms {out.get('error', '')}",
                    flush=True,
                )
    finally:
        pool.close()
    order = {m: i for i, m in enumerate(DEFAULT_MODES)}
    data["runs"].sort(key=lambda r: (order.get(r["mode"], 99), r["workload"] != "new"))
    data["environment"]["loadavg_end"] = Path("/proc/loadavg").read_text().strip()
    data["elapsed_s"] = round(time.monotonic() - started, 1)
    paths = report.write(data, cfg.out)
    print()
    print(report.markdown(data))
    print("wrote", ", ".join(str(p) for p in paths.values()), f"in {data['elapsed_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
