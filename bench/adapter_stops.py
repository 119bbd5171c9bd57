"""How long each server adapter takes to stop when ``sdactivate run`` hands over, under load.

For each adapter (the example apps in ``examples/``), one supervisor runs
``python -m sdactivate run --listen 127.0.0.1:0=http -- EXAMPLE`` while ``bench/loadgen.py``
sends ``--rate`` new connections a second; ``--handovers`` reloads follow one after the other
(``sdactivate reload --pid``: each waits for the new generation's READY=1). A generation's
stop is the time from the supervisor's stop signal (its log line "... draining") to its
reaping ("... exited"), as read off the supervisor's log when each line arrives. A
generation that missed its stop signal serves on until ``--drain-timeout`` and is SIGKILLed:
it shows as a stop of that length and in the ``killed`` column.

``--thread-churn`` runs every generation with an app thread that starts a short-lived thread
every millisecond (an app with an on-demand thread pool): a thread that creates threads takes
process-directed signals from the main thread (clone(2) rechecks pending signals), the
situation that made the http.server, wsgiref and waitress adapters miss SIGTERM (issue 16).
``--tree DIR`` runs supervisor and generations on another copy of the package, e.g. an older
commit: ``git archive COMMIT sdactivate | tar -x -C /tmp/before``.

    python bench/adapter_stops.py --handovers 100 --rate 250
    python bench/adapter_stops.py --adapter waitress --thread-churn --tree /tmp/before
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from bench import loadgen
from sdactivate.supervisor.client import request_reload, request_status

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
EXAMPLES = os.path.join(ROOT, "examples")

ADAPTERS: dict[str, list[str]] = {
    "http_server": ["adapter_http_server.py"],
    "wsgiref": ["adapter_wsgi.py", "wsgiref"],
    "waitress": ["adapter_wsgi.py", "waitress"],
    "asyncio": ["adapter_asyncio.py"],
    "uvicorn": ["adapter_asgi.py", "uvicorn"],
    "hypercorn": ["adapter_asgi.py", "hypercorn"],
    "gunicorn": ["adapter_gunicorn.py"],  # execs gunicorn: no --thread-churn wrapper
}

# Starts the churning app thread, then runs the example as __main__.
CHURN = r"""
import runpy, sys, threading
def churn():
    while True:
        t = threading.Thread(target=lambda: None)
        t.start()
        t.join()
        threading.Event().wait(0.001)
threading.Thread(target=churn, name="app-churn", daemon=True).start()
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""

_DRAINING = re.compile(r"serving; generation (\d+) \(pid \d+\) draining")
_ENDED = re.compile(r"generation (\d+) \(pid \d+\) (exited with status -?\d+|killed by \w+)$")


@dataclass
class Log:
    """The supervisor's stderr, line by line, with the monotonic time each line arrived."""

    signalled: dict[int, float] = field(default_factory=dict)
    ended: dict[int, tuple[float, str]] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)
    cond: threading.Condition = field(default_factory=threading.Condition)

    def read(self, stream: Any) -> None:
        for line in stream:
            now = time.monotonic()
            line = line.rstrip("\n")
            with self.cond:
                self.lines.append(line)
                if m := _DRAINING.search(line):
                    self.signalled[int(m.group(1))] = now
                elif m := _ENDED.search(line):
                    self.ended[int(m.group(1))] = (now, m.group(2))
                self.cond.notify_all()

    def wait_ended(self, gens: list[int], timeout: float) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: all(g in self.ended for g in gens), timeout)


def run_adapter(name: str, cfg: argparse.Namespace) -> dict[str, Any]:
    example = [os.path.join(EXAMPLES, ADAPTERS[name][0]), *ADAPTERS[name][1:]]
    app = [sys.executable, *example]
    if cfg.thread_churn and name != "gunicorn":
        app = [sys.executable, "-c", CHURN, *example]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NOTIFY_", "LISTEN_"))}
    env.update(EXAMPLE_DRAIN_TIMEOUT="5", EXAMPLE_LOAD_MS="0")
    if cfg.tree:
        env["PYTHONPATH"] = os.path.abspath(cfg.tree)
    argv = [sys.executable, "-m", "sdactivate", "run", "--listen", "127.0.0.1:0=http"]
    argv += ["--ready-timeout", "60", "--drain-timeout", str(cfg.drain_timeout), "--", *app]
    sup = subprocess.Popen(argv, env=env, stderr=subprocess.PIPE, text=True, cwd=EXAMPLES)
    log = Log()
    reader = threading.Thread(target=log.read, args=(sup.stderr,), daemon=True)
    reader.start()
    handle = None
    try:
        deadline = time.monotonic() + 60
        while True:  # the first generation serving, and the port
            try:
                status = request_status(sup.pid, timeout=5)
                if status.get("generation") == 1:
                    break
            except Exception:  # the control socket is not up yet
                pass
            if time.monotonic() > deadline or sup.poll() is not None:
                raise SystemExit(f"{name}: supervisor not serving:\n" + "\n".join(log.lines))
            time.sleep(0.05)  # polling a state, with a deadline
        port = int(status["listeners"][0]["address"].rpartition(":")[2])
        seconds = cfg.handovers * 10 + 60  # a bound; stopped after the last handover
        handle = loadgen.start("127.0.0.1", port, rate=cfg.rate, duration=seconds, timeout=5.0)
        failed_reloads = 0
        for _ in range(cfg.handovers):
            result = request_reload(sup.pid, timeout=cfg.drain_timeout + 90)
            failed_reloads += not result.ok
        # the last "draining" line may still be on its way: every handover's old generation
        with log.cond:
            log.cond.wait_for(lambda: len(log.signalled) >= cfg.handovers - failed_reloads, 10)
        log.wait_ended(list(log.signalled), cfg.drain_timeout + 30)
        handle.stop()
        res = handle.result()
        handle = None
    finally:
        if handle is not None:
            handle.stop()
        if sup.poll() is None:
            sup.send_signal(signal.SIGTERM)
        try:
            sup.wait(cfg.drain_timeout + 30)
        except subprocess.TimeoutExpired:
            sup.kill()
            sup.wait()
        reader.join(5)
    stops = sorted(log.ended[g][0] - t for g, t in log.signalled.items() if g in log.ended)
    killed = sum(1 for g in log.signalled if "SIGKILL" in log.ended.get(g, (0, ""))[1])
    return {
        "adapter": name,
        "handovers": len(log.signalled),
        "failed_reloads": failed_reloads,
        "stop_p50_ms": round(1000 * stops[len(stops) // 2], 1) if stops else None,
        "stop_p99_ms": round(1000 * stops[int(len(stops) * 0.99)], 1) if stops else None,
        "stop_max_ms": round(1000 * stops[-1], 1) if stops else None,
        "never_ended": len(log.signalled) - len(stops),
        "killed": killed,
        "requests": res.sent,
        "failed_requests": res.refused + res.reset + res.timeout + res.error,
        "errors": dict(res.errors),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--adapter", action="append", choices=sorted(ADAPTERS))
    p.add_argument("--handovers", type=int, default=100)
    p.add_argument("--rate", type=float, default=250.0, help="new connections per second")
    p.add_argument("--drain-timeout", type=float, default=30.0)
    p.add_argument("--thread-churn", action="store_true")
    p.add_argument("--tree", help="run this copy of the package (its parent dir)")
    p.add_argument("--json", action="store_true")
    cfg = p.parse_args(argv)
    rows = []
    for name in cfg.adapter or list(ADAPTERS):
        row = run_adapter(name, cfg)
        rows.append(row)
        print(json.dumps(row) if cfg.json else _line(row), flush=True)
    return 0 if all(r["killed"] == 0 and r["never_ended"] == 0 for r in rows) else 1


def _line(row: dict[str, Any]) -> str:
    return (
        f"{row['adapter']:<12} handovers {row['handovers']:>4}  stop p50 {row['stop_p50_ms']} ms"
        f"  p99 {row['stop_p99_ms']} ms  max {row['stop_max_ms']} ms  killed {row['killed']}"
        f"  never ended {row['never_ended']}  failed reloads {row['failed_reloads']}"
        f"  requests {row['requests']} failed {row['failed_requests']} {row['errors']}"
    )


if __name__ == "__main__":
    sys.exit(main())
