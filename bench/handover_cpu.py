"""The supervisor's own cost per handover: CPU ms and wall ms, ``sdactivate run`` with a
trivial generation (``bench/apps/trivial.go``, built here with ``go build``; or
``bench/apps/trivial.py``, the stdlib only).

Each run starts ``python -m sdactivate run --listen 127.0.0.1:0 -- APP``, waits for the first
generation, then asks for ``--handovers`` handovers one after the other over the control
socket (what ``sdactivate reload --pid`` does) and waits for the last old generation to be
reaped. CPU is the supervisor process's own, generations excluded: ``/proc/PID/schedstat``
(ns on a CPU; the supervisor is single-threaded), and ``utime``/``stime`` (ticks) for the
user/kernel split. Wall is the time from the first request to the last answer. All are
divided by the number of handovers.

``--tree DIR`` (repeatable) runs the supervisor from another copy of the package (e.g. an
older commit: ``git archive COMMIT sdactivate | tar -x -C /tmp/before``); trees and apps are
interleaved round by round, so a busy host weighs on each the same. ``--profile FILE`` runs
one supervisor under cProfile instead and prints where its time went.

    python bench/handover_cpu.py --handovers 200 --rounds 3 --app go --app python
    python bench/handover_cpu.py --tree /tmp/before --tree . --rounds 5
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

from sdactivate.supervisor.client import request, request_reload
from tests.support import wait_until

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


_TICK = os.sysconf("SC_CLK_TCK")
_PROFILED = """
import cProfile, sys, time
from sdactivate.cli import main
out, args = sys.argv[1], sys.argv[2:]
prof = cProfile.Profile(time.process_time)
try:
    prof.runcall(main, args)
finally:
    prof.dump_stats(out)
"""


def build_go_app() -> str:
    """``bench/apps/trivial.go`` built once into ~/.cache (Debian: apt-get install golang-go)."""
    src = os.path.join(HERE, "apps", "trivial.go")
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    out_dir = os.path.join(cache, "sdactivate-bench")
    exe = os.path.join(out_dir, "trivial-go")
    if os.path.exists(exe) and os.path.getmtime(exe) >= os.path.getmtime(src):
        return exe
    go = shutil.which("go")
    if go is None:
        raise SystemExit(
            "handover_cpu: no `go` on PATH (apt-get install golang-go), or --app python"
        )
    os.makedirs(out_dir, exist_ok=True)
    env = dict(os.environ, CGO_ENABLED="0", GOCACHE=os.path.join(out_dir, "gocache"))
    env.setdefault("HOME", out_dir)
    subprocess.run([go, "build", "-o", exe, src], check=True, env=env)
    return exe


def cpu_ns(pid: int) -> tuple[int, int, int]:
    """(ns on a CPU from schedstat, utime and stime in ns from stat) of process ``pid``."""
    with open(f"/proc/{pid}/schedstat") as f:
        sched = int(f.read().split()[0])
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5), in ticks
    return sched, utime * 1_000_000_000 // _TICK, stime * 1_000_000_000 // _TICK


def _wait_status(pid: int, until: Any, deadline: float) -> dict[str, Any]:
    last: dict[str, Any] = {}

    def reached() -> dict[str, Any] | None:
        nonlocal last
        try:
            last = request(pid, "status", timeout=5.0)
        except Exception:  # the control socket is not there yet
            last = {}
            return None
        return last if until(last) else None

    try:
        return wait_until(reached, timeout=max(0.0, deadline - time.monotonic()))
    except TimeoutError:
        raise SystemExit(
            f"handover_cpu: supervisor {pid} never reached the state: {last}"
        ) from None


def one_run(tree: str, app: list[str], handovers: int, profile: str | None) -> dict[str, Any]:
    """One supervisor from ``tree`` supervising ``app`` through ``handovers`` handovers."""
    env = dict(os.environ, PYTHONPATH=os.path.abspath(tree))
    for key in ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "NOTIFY_SOCKET"):
        env.pop(key, None)
    args = ["run", "--listen", "127.0.0.1:0", "--", *app]
    argv = [sys.executable, "-m", "sdactivate", *args]
    if profile is not None:  # CPU time, not wall: the figure this bench is about
        argv = [sys.executable, "-c", _PROFILED, profile, *args]
    with tempfile.TemporaryFile() as log:
        sup = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stderr=log, cwd=tree)
        try:
            one_serving = lambda s: [g["state"] for g in s.get("generations", ())] == ["serving"]  # noqa: E731
            _wait_status(sup.pid, one_serving, time.monotonic() + 30)
            cpu0 = cpu_ns(sup.pid)
            t0 = time.monotonic()
            walls = []
            for i in range(handovers):
                t = time.monotonic()
                result = request_reload(sup.pid, timeout=60)
                walls.append(time.monotonic() - t)
                if not result.ok:
                    raise SystemExit(f"handover_cpu: handover {i + 1} failed: {result.message}")
            wall = time.monotonic() - t0
            _wait_status(sup.pid, one_serving, time.monotonic() + 60)
            cpu1 = cpu_ns(sup.pid)
        finally:
            sup.send_signal(signal.SIGTERM)
            try:
                sup.wait(30)
            except subprocess.TimeoutExpired:
                sup.kill()
                sup.wait()
    return {
        "cpu_ms": (cpu1[0] - cpu0[0]) / handovers / 1e6,
        "user_ms": (cpu1[1] - cpu0[1]) / handovers / 1e6,
        "sys_ms": (cpu1[2] - cpu0[2]) / handovers / 1e6,
        "wall_ms": wall / handovers * 1e3,
        "wall_median_ms": statistics.median(walls) * 1e3,
    }


def print_profile(path: str, top: int) -> None:
    import pstats

    stats = pstats.Stats(path, stream=sys.stdout)
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--handovers", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--app", action="append", choices=("go", "python"))
    parser.add_argument("--tree", action="append", help="package tree to run (default: this)")
    parser.add_argument("--profile", metavar="FILE", help="one cProfile run; print the top")
    parser.add_argument("--json", action="store_true", help="print every run as JSON")
    args = parser.parse_args(argv)
    apps_wanted = args.app or ["go", "python"]
    trees = args.tree or [ROOT]
    apps = {}
    if "go" in apps_wanted:
        apps["go"] = [build_go_app()]
    if "python" in apps_wanted:
        apps["python"] = [sys.executable, "-I", os.path.join(HERE, "apps", "trivial.py")]
    if args.profile:
        name = apps_wanted[0]
        one_run(trees[0], apps[name], args.handovers, args.profile)
        print_profile(args.profile, 30)
        return 0
    runs: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for _ in range(args.rounds):
        for tree in trees:
            for name, app in apps.items():
                run = one_run(tree, app, args.handovers, None)
                runs.setdefault((tree, name), []).append(run)
                print(f"{tree} {name}: " + json.dumps(run), file=sys.stderr)
    if args.json:
        print(json.dumps([{"tree": t, "app": a, "runs": r} for (t, a), r in runs.items()]))
    print(f"{args.handovers} handovers per run, {args.rounds} rounds, median of runs per handover")
    print(f"{'tree':40} {'app':7} {'CPU ms':>7} {'user':>6} {'sys':>6} {'wall ms':>8}")
    for (tree, name), rs in runs.items():
        med = {k: statistics.median(r[k] for r in rs) for k in rs[0]}
        print(
            f"{tree:40} {name:7} {med['cpu_ms']:7.2f} {med['user_ms']:6.2f} {med['sys_ms']:6.2f}"
            f" {med['wall_ms']:8.2f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
