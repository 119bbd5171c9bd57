"""Machine-stall canaries: when was a CPU unavailable to everything, server and client alike?

On a small VM the hypervisor, or the guest kernel, now and then takes a vCPU away for
10-150 ms (measured here: both the load generator on CPU 1 and the server on CPU 0 stop, and
no steal time is accounted). A request in flight then shows that stall as latency, whatever
the server does. To tell those stalls from what a restart costs, the bench runs one canary
per CPU: a process pinned there at SCHED_FIFO priority 1 (it preempts any normal task at
once) that sleeps 1 ms in a loop and records every wake-up that came more than
``threshold`` late. A gap is a time the CPU ran nothing of ours.

:func:`stalled` marks the requests whose lifetime overlaps a gap; the report gives the
figures with and without them, and the gap rate inside restart windows against outside, so
a restart that itself stalls a CPU shows up as a higher rate in its windows.

    .venv/bin/python bench/stalls.py 10     # 10 s of canaries on every CPU, print the gaps
"""

from __future__ import annotations

import bisect
import contextlib
import json
import math
import os
import select
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

PERIOD_S = 0.001
THRESHOLD_S = 0.004  # a 1 ms sleep that took longer than this is a stall


class Canaries:
    """One canary process per CPU in ``cpus``, each bounded by ``duration`` seconds."""

    def __init__(self, cpus: Sequence[int], duration: float) -> None:
        self.cpus = list(cpus)
        self._procs = [
            subprocess.Popen(
                [sys.executable, os.path.abspath(__file__), "--child", str(cpu), repr(duration)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                close_fds=True,
            )
            for cpu in self.cpus
        ]

    def stop(self, timeout: float = 5.0) -> dict[str, Any]:
        """End the canaries; ``{"gaps": [(cpu, start, end), ...], "rt": bool, ...}``."""
        for p in self._procs:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(15)
        gaps: list[tuple[int, float, float]] = []
        rt = True
        covered: dict[int, tuple[float, float]] = {}
        for cpu, p in zip(self.cpus, self._procs, strict=True):
            try:
                out, _ = p.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                out, _ = p.communicate()
            try:
                data = json.loads(out or b"{}")
            except ValueError:
                data = {}
            rt = rt and bool(data.get("rt"))
            gaps += [(cpu, a, b) for a, b in data.get("gaps", [])]
            if "from" in data:
                covered[cpu] = (data["from"], data["to"])
        gaps.sort(key=lambda g: g[1])
        return {"gaps": gaps, "rt": rt, "covered": covered, "threshold_s": THRESHOLD_S}


def merged(gaps: Sequence[tuple[int, float, float]]) -> tuple[list[float], list[float]]:
    """Union of the gap intervals (any CPU), as sorted starts and ends."""
    from bench.loadresult import union

    return union([(a, b) for _, a, b in gaps])


def stalled(
    scheduled: Sequence[float],
    latency: Sequence[float],
    gaps: Sequence[tuple[int, float, float]],
    *,
    timeout: float,
) -> list[bool]:
    """For each request: did its life (scheduled .. response, or .. +timeout if it failed)
    overlap a stall? Only ever used to *exclude ok latencies*; failures always count."""
    starts, ends = merged(gaps)
    out: list[bool] = []
    for s, lat in zip(scheduled, latency, strict=True):
        e = s + (timeout if math.isnan(lat) else lat)
        # the last stall starting before e; it overlaps if it ends after s
        k = bisect.bisect_left(starts, e) - 1
        out.append(k >= 0 and ends[k] > s)
    return out


def rate_inside(
    gaps: Sequence[tuple[int, float, float]], windows: Sequence[tuple[float, float]]
) -> tuple[int, float]:
    """(gaps starting inside any window, seconds covered by the windows)."""
    n = 0
    for _, a, _b in gaps:
        if any(w0 <= a < w1 for w0, w1 in windows):
            n += 1
    return n, sum(max(0.0, w1 - w0) for w0, w1 in windows)


def _child(cpu: int, duration: float) -> int:  # pragma: no cover - a separate process
    import signal

    os.sched_setaffinity(0, {cpu})
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL(None, use_errno=True).mlockall(1 | 2)  # no page fault stalls a canary
    rt = True
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
    except OSError:
        rt = False
    stop = False

    def on_term(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    gaps: list[tuple[float, float]] = []
    start = prev = time.monotonic()
    end = start + duration
    while not stop and prev < end:
        select.select([], [], [], PERIOD_S)
        now = time.monotonic()
        if now - prev > PERIOD_S + THRESHOLD_S:
            gaps.append((prev + PERIOD_S, now))
        prev = now
    sys.stdout.write(json.dumps({"rt": rt, "gaps": gaps, "from": start, "to": prev}))
    sys.stdout.flush()
    return 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["--child"]:
        return _child(int(argv[1]), float(argv[2]))
    seconds = float(argv[0]) if argv else 10.0
    c = Canaries(range(os.cpu_count() or 1), seconds + 5)
    time.sleep(seconds)
    got = c.stop()
    print(f"SCHED_FIFO: {got['rt']}; {len(got['gaps'])} gap(s) > {THRESHOLD_S * 1e3:g} ms")
    for cpu, a, b in got["gaps"]:
        print(f"  cpu{cpu} at {a:.3f}: {(b - a) * 1e3:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
