"""In-process Upgrader under open-loop load: good upgrades and the §4.6 fault cases.

    .venv/bin/python bench/upgrader_faults.py [--rate 1000] [--upgrades 5] [--repeat 3]

Runs examples/upgrader_app.py socket-activated (a NotifyReceiver stands in for PID 1 and
records MAINPID switches), drives bench/loadgen.py at ``--rate`` new connections/s, and
per scenario triggers SIGHUPs on the current main pid:

- ``upgrade``: a good new version (MAINPID switches);
- ``F1 exit-before-ready``, ``F2 never-ready`` (upgrade timeout 2 s), ``F3
  crash-after-ready`` (an uncaught exception 100 ms after start-up, within the 1 s stable
  time), ``F3-abort`` (``os._exit`` instead: the requests it was handling fail, counted):
  the old pid keeps serving, STATUS= reports the failure;
- ``F12 double-hup``: two SIGHUPs back to back: two sequential handovers.

Prints one JSON line per scenario: client failures inside the windows (trigger .. outcome +
0.5 s), and ok-latency p99/max inside vs outside the windows. Loopback only; bounded.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path

from bench import loadgen
from sdactivate.testing import NotifyReceiver, launch

HERE = Path(__file__).resolve().parent


APP = HERE.parent / "examples" / "upgrader_app.py"


class Harness:
    def __init__(self, rx: NotifyReceiver, fault: Path, first_pid: int) -> None:
        self.rx = rx
        self.fault = fault
        self.main = first_pid
        self.pids = {first_pid}

    def _mainpids(self, since: int) -> list[int]:
        return [int(m.get("MAINPID") or 0) for m in self.rx.messages[since:] if "MAINPID" in m]

    def upgrade(self, *, hups: int = 1, timeout: float = 15.0) -> tuple[float, float]:
        """SIGHUP(s) to the main pid; wait for as many MAINPID switches.

        A second SIGHUP 20 ms after the first reaches the process during the upgrade and is
        queued, then forwarded to the new generation: two switches in a row.
        """
        n = len(self.rx.messages)
        t0 = time.monotonic()
        for i in range(hups):
            if i:
                time.sleep(0.02)  # two kill()s in a row would merge into one pending signal
            os.kill(self.main, signal.SIGHUP)
        self.rx.wait_until(
            lambda: len(self._mainpids(n)) >= hups, timeout=timeout, what="MAINPID switch"
        )
        self.main = self._mainpids(n)[-1]
        self.pids.update(self._mainpids(n))
        return t0, time.monotonic()

    def failing(self, fault: str, *, timeout: float = 15.0) -> tuple[float, float]:
        """A SIGHUP with ``fault`` set: wait for STATUS=upgrade failed; the pid stays."""
        self.fault.write_text(fault)
        n = len(self.rx.messages)
        t0 = time.monotonic()
        os.kill(self.main, signal.SIGHUP)
        self.rx.wait_until(
            lambda: any("upgrade failed" in (m.get("STATUS") or "") for m in self.rx.messages[n:]),
            timeout=timeout,
            what="failure STATUS",
        )
        self.fault.write_text("")
        if self._mainpids(n):
            raise AssertionError(f"{fault}: MAINPID switched on a failed upgrade")
        return t0, time.monotonic()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--upgrades", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=3, help="per fault case")
    parser.add_argument("--gap", type=float, default=1.0, help="seconds between triggers")
    parser.add_argument("--timeline", help="write per-100ms p99 and trigger times (JSON) here")
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="upgrader-faults-", dir=os.environ.get("SCRATCH")))
    fault = scratch / "fault"
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(4096)
    port = sock.getsockname()[1]
    app_args = ["--listen", f"127.0.0.1:{port}", "--fault-file", str(fault)]
    app_args += ["--upgrade-timeout", "2", "--stable-time", "1.0", "--drain-timeout", "5"]
    plan: list[tuple[str, int]] = [("upgrade", args.upgrades)]
    plan += [(f, args.repeat) for f in ("F1", "F2", "F3", "F3-abort", "F12")]
    duration = 3.0 + sum(n * (args.gap + (3.0 if name == "F2" else 1.0)) for name, n in plan)
    results = []
    with NotifyReceiver(thread=True) as rx:
        proc = launch([sys.executable, str(APP), *app_args], [sock], names=["http"], notify=rx)
        sock.close()
        h = Harness(rx, fault, proc.pid)
        try:
            rx.wait_for("READY", "1", timeout=10)
            load = loadgen.start("127.0.0.1", port, rate=args.rate, duration=duration, timeout=2.0)
            time.sleep(1.5)  # steady state before the first trigger (measurement, not ordering)
            windows: dict[str, list[tuple[float, float]]] = {name: [] for name, _ in plan}
            for name, count in plan:
                for _ in range(count):
                    if name == "upgrade":
                        t0, t1 = h.upgrade()
                    elif name == "F1":
                        t0, t1 = h.failing("exit-before-ready")
                    elif name == "F2":
                        t0, t1 = h.failing("never-ready")
                    elif name == "F3":
                        t0, t1 = h.failing("crash-after-ready:100")
                    elif name == "F3-abort":
                        t0, t1 = h.failing("abort-after-ready:100")
                    else:
                        t0, t1 = h.upgrade(hups=2)
                    windows[name].append((t0, t1 + 0.5))
                    time.sleep(args.gap)
            load.stop()
            res = load.result()
        finally:
            h.pids.update(h._mainpids(0))  # also generations a failed wait did not record
            for pid in h.pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
    every = [w for ws in windows.values() for w in ws]
    if args.timeline:
        buckets: dict[int, list[float]] = {}
        for rec in res.records:
            key = int((rec.scheduled - res.t0) * 10)
            buckets.setdefault(key, []).append(rec.latency_s if rec.latency_s else 9.0)
        line = {k / 10: round(sorted(v)[int(len(v) * 0.99)] * 1e3, 1) for k, v in buckets.items()}
        marks = {n: [round(a - res.t0, 2) for a, _ in ws] for n, ws in windows.items()}
        Path(args.timeline).write_text(json.dumps({"p99_ms": line, "triggers": marks}))
    steady = loadgen.steady_stats(res, every)
    ms = {k: round(v * 1e3, 2) for k, v in steady.latency.items() if k != "n"}
    print(
        json.dumps(
            {
                "scenario": "steady",
                "requests": steady.total,
                "failed": steady.failed,
                "latency_ms": ms,
            }
        )
    )
    for name, ws in windows.items():
        st = loadgen.window_stats(res, ws)
        lat = {k: round(v * 1e3, 2) for k, v in st.latency.items() if k != "n"}
        row = {
            "scenario": name,
            "triggers": len(ws),
            "requests": st.total,
            "failed": st.failed,
            "counts": {k: v for k, v in st.counts.items() if v},
            "latency_ms": lat,
            "added_p99_ms": round(lat.get("p99", 0.0) - ms.get("p99", 0.0), 2),
        }
        results.append(row)
        print(json.dumps(row))
    summary = res.summary()
    print(
        json.dumps(
            {
                "total": summary["total"],
                "ok": summary["ok"],
                "failed": res.failed,
                "achieved_rate": round(summary["achieved_rate"]),
                "generations": len(h.pids),
            }
        )
    )
    return 0 if res.failed == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
