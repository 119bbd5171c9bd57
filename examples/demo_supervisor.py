"""Demo: hot-swap examples/app.py under `sdactivate run` while requests keep flowing.

No systemd needed. The supervisor binds 127.0.0.1 (a free port), starts the app with the
socket as LISTEN_FDS, and on each `sdactivate reload --pid` (the library call behind it)
starts a fresh app, waits for its READY=1, then tells the old one to drain. An open-loop
load generator sends a new connection every 2 ms the whole time; at the end we print what
the clients saw: how many requests, how many failed (0), and the latency during the
handovers against the steady state.

    .venv/bin/python examples/demo_supervisor.py [--handovers 5] [--rate 500]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from bench import loadgen  # open-loop, latency from the scheduled time
from sdactivate.errors import SupervisorError
from sdactivate.supervisor.client import request_reload, request_status

ROOT = Path(__file__).resolve().parent.parent


def wait_running(pid: int, proc: subprocess.Popen[bytes], timeout: float) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"supervisor exited with status {proc.returncode}")
        try:
            st = request_status(pid, timeout=2)
            if st.get("phase") == "running":
                return st
        except SupervisorError:
            pass  # not listening yet
        if time.monotonic() > deadline:
            raise SystemExit("the app did not become ready in time")
        time.sleep(0.05)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--handovers", type=int, default=5)
    ap.add_argument("--rate", type=float, default=500.0, help="new connections per second")
    args = ap.parse_args()

    env = {k: v for k, v in os.environ.items() if not k.startswith(("NOTIFY_", "LISTEN_"))}
    argv = [
        sys.executable, "-m", "sdactivate", "run",
        "--listen", "127.0.0.1:0=http",
        "--ready-timeout", "20", "--drain-timeout", "10",
        "--", sys.executable, str(ROOT / "examples" / "app.py"),
    ]  # fmt: skip
    print("$", " ".join(a if a != sys.executable else "python" for a in argv), flush=True)
    sup = subprocess.Popen(argv, env=env)
    try:
        st = wait_running(sup.pid, sup, 30)
        address = st["listeners"][0]["address"]  # type: ignore[index]
        host, _, port = str(address).rpartition(":")
        print(f"supervisor pid {sup.pid} serving {address}: {st['message']}", flush=True)

        duration = 1.0 + 0.8 * args.handovers + 1.0
        load = loadgen.start(host, int(port), rate=args.rate, duration=duration, timeout=3.0)
        time.sleep(1.0)  # a steady-state second before the first handover
        windows = []
        for i in range(args.handovers):
            t0 = time.monotonic()
            result = request_reload(sup.pid, timeout=30)
            t1 = time.monotonic()
            windows.append((t0, t1 + 0.25))
            mark = "ok" if result.ok else "FAILED"
            print(
                f"handover {i + 1}: {mark} in {(t1 - t0) * 1e3:.0f} ms -> generation "
                f"{result.generation} (pid {result.pid})",
                flush=True,
            )
            time.sleep(max(0.0, 0.8 - (time.monotonic() - t0)))
        res = load.result()
    finally:
        sup.send_signal(signal.SIGTERM)
        code = sup.wait(30)

    inside = loadgen.window_stats(res, windows)
    steady = loadgen.steady_stats(res, windows)
    pids = sorted(p for p in res.pids() if p)
    print()
    print(f"requests: {res.total} sent at {args.rate:.0f}/s, one new connection each")
    print(
        f"  ok {res.ok}, failed {res.failed} (refused {res.refused}, reset {res.reset}, "
        f"timeout {res.timeout}, lost {res.lost}, error {res.error})"
    )
    print(f"  answered by {len(pids)} app processes: {', '.join(map(str, pids))}")

    def ms(stats: loadgen.Stats, q: str) -> float:
        return stats.latency[q] * 1e3

    for label, s in (("steady", steady), ("handover windows", inside)):
        print(
            f"  latency {label:17s} n={s.total:5d}  p50 {ms(s, 'p50'):6.2f}  "
            f"p99 {ms(s, 'p99'):6.2f}  p99.9 {ms(s, 'p99.9'):6.2f}  max {ms(s, 'max'):6.2f} ms"
        )
    print(
        f"  added latency during handovers: p99.9 {ms(inside, 'p99.9') - ms(steady, 'p99.9'):+.2f}"
        f" ms, max {ms(inside, 'max') - ms(steady, 'max'):+.2f} ms"
    )
    print(f"supervisor stopped with status {code}")
    return 0 if res.failed == 0 and code == 0 and len(pids) > args.handovers else 1


if __name__ == "__main__":
    raise SystemExit(main())
