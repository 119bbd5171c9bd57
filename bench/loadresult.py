"""What a load run produced, whichever engine ran it (loadgen.py's asyncio engine, or
epoll_client.py's epoll loop): per-request outcomes and latencies, and the statistics the
bench reports over windows of them.

Latency counts from each request's *scheduled* send time (see loadgen's module doc). Times
are ``time.monotonic()`` seconds.
"""

from __future__ import annotations

import array
import bisect
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

__all__ = [
    "ERROR",
    "LOST",
    "OK",
    "OUTCOMES",
    "REFUSED",
    "RESET",
    "TIMEOUT",
    "UNSENT",
    "Record",
    "Result",
    "Stats",
    "added_latency",
    "percentiles",
    "steady_stats",
    "union",
    "window_stats",
]

OUTCOMES = ("ok", "refused", "reset", "timeout", "lost", "error")
OK, REFUSED, RESET, TIMEOUT, LOST, ERROR = range(6)
UNSENT = -1  # placeholder before a request finishes


class Record(NamedTuple):
    """One request: what was planned and what happened."""

    id: int
    scheduled: float  # time.monotonic() of the planned send
    latency_s: float | None  # scheduled -> complete response; None unless ok
    outcome: str  # one of OUTCOMES
    status: int  # HTTP status, 0 if none
    pid: int  # server pid from X-Pid header or "pid=" body, 0 if none
    send_lag_s: float  # actual send - scheduled (generator + queueing delay); nan if unsent


@dataclass
class Result:
    """Counts and per-request records of one run (columnar, cheap at 10^6 requests)."""

    rate: float
    duration: float
    keepalive: bool
    t0: float  # monotonic time of request 0's schedule
    wall: float  # seconds from first schedule to the end of the run
    sent: int = 0
    ok: int = 0
    refused: int = 0
    reset: int = 0
    timeout: int = 0
    lost: int = 0
    error: int = 0
    errors: dict[str, int] = field(default_factory=dict)  # kind -> count, failures only
    scheduled: array.array[float] = field(default_factory=lambda: array.array("d"))
    latency: array.array[float] = field(default_factory=lambda: array.array("d"))  # nan = none
    outcome: array.array[int] = field(default_factory=lambda: array.array("b"))
    status: array.array[int] = field(default_factory=lambda: array.array("h"))
    pid: array.array[int] = field(default_factory=lambda: array.array("l"))
    send_lag: array.array[float] = field(default_factory=lambda: array.array("d"))
    cpu_s: float = 0.0  # generator process CPU time (user+sys) during the run

    @classmethod
    def planned(cls, *, rate: float, duration: float, keepalive: bool, t0: float, n: int) -> Result:
        """``n`` requests scheduled ``1 / rate`` apart from ``t0``, none sent yet."""
        res = cls(rate=rate, duration=duration, keepalive=keepalive, t0=t0, wall=0.0)
        nan = math.nan
        interval = 1.0 / rate
        res.scheduled = array.array("d", (t0 + i * interval for i in range(n)))
        res.latency = array.array("d", [nan]) * n
        res.send_lag = array.array("d", [nan]) * n
        res.outcome = array.array("b", [UNSENT]) * n
        res.status = array.array("h", [0]) * n
        res.pid = array.array("l", [0]) * n
        return res

    def truncate(self, n: int) -> None:
        """Keep the first ``n`` requests: the rest were never due (the run was stopped)."""
        if n < len(self.scheduled):
            for arr in (
                self.scheduled,
                self.latency,
                self.send_lag,
                self.outcome,
                self.status,
                self.pid,
            ):
                del arr[n:]

    def fail(self, rid: int, code: int, kind: str) -> None:
        """Record request ``rid`` as failed: outcome ``code`` (an index into OUTCOMES), counted
        under its outcome and under ``kind`` in ``errors``."""
        self.outcome[rid] = code
        name = OUTCOMES[code]
        setattr(self, name, getattr(self, name) + 1)
        self.errors[kind] = self.errors.get(kind, 0) + 1

    @property
    def total(self) -> int:
        """Number of requests scheduled."""
        return len(self.scheduled)

    @property
    def failed(self) -> int:
        """Every request that did not end ``ok``."""
        return self.total - self.ok

    @property
    def records(self) -> Iterator[Record]:
        """Per-request records in id order."""
        for i in range(len(self.scheduled)):
            lat = self.latency[i]
            yield Record(
                i,
                self.scheduled[i],
                None if math.isnan(lat) else lat,
                OUTCOMES[self.outcome[i]],
                self.status[i],
                self.pid[i],
                self.send_lag[i],
            )

    def latencies(self) -> list[float]:
        """Latencies (seconds) of the ok requests."""
        return [x for x in self.latency if not math.isnan(x)]

    def percentiles(self) -> dict[str, float]:
        """p50/p99/p99.9/max of ok-request latency, in seconds (nan if none)."""
        return percentiles(self.latencies())

    def pids(self) -> dict[int, int]:
        """Server pid -> number of ok responses it gave (0 = pid not reported)."""
        out: dict[int, int] = {}
        for o, p in zip(self.outcome, self.pid, strict=True):
            if o == OK:
                out[p] = out.get(p, 0) + 1
        return out

    def summary(self) -> dict[str, Any]:
        """Plain-dict summary (counts, latency percentiles in ms, generator lag)."""
        pct = self.percentiles()
        lag = percentiles([x for x in self.send_lag if not math.isnan(x)])
        service = percentiles(
            lat - lg for lat, lg in zip(self.latency, self.send_lag, strict=True) if lat == lat
        )
        return {
            "rate": self.rate,
            "duration": self.duration,
            "keepalive": self.keepalive,
            "total": self.total,
            "sent": self.sent,
            "ok": self.ok,
            "refused": self.refused,
            "reset": self.reset,
            "timeout": self.timeout,
            "lost": self.lost,
            "error": self.error,
            "errors": dict(self.errors),
            "latency_ms": _ms(pct),
            "send_lag_ms": _ms(lag),
            "service_ms": _ms(service),  # from the actual send, not the schedule
            "achieved_rate": self.sent / self.wall if self.wall > 0 else 0.0,
            "cpu_s": self.cpu_s,
        }


def _ms(pct: dict[str, float]) -> dict[str, float]:
    return {k: (v if k == "n" else v * 1e3) for k, v in pct.items()}


def percentiles(values: Iterable[float]) -> dict[str, float]:
    """p50, p99, p99.9 and max of ``values`` (nearest-rank); nan for an empty input."""
    xs = sorted(values)
    if not xs:
        nan = math.nan
        return {"n": 0, "p50": nan, "p99": nan, "p99.9": nan, "max": nan}

    def rank(q: float) -> float:
        return xs[min(len(xs) - 1, max(0, math.ceil(q * len(xs) / 100.0 - 1e-9) - 1))]

    return {"n": len(xs), "p50": rank(50), "p99": rank(99), "p99.9": rank(99.9), "max": xs[-1]}


@dataclass(frozen=True)
class Stats:
    """Outcome counts and ok-latency percentiles (seconds) of a subset of requests."""

    total: int
    counts: dict[str, int]
    latency: dict[str, float]

    @property
    def failed(self) -> int:
        return self.total - self.counts.get("ok", 0)


def union(windows: Sequence[tuple[float, float]]) -> tuple[list[float], list[float]]:
    """Union of the intervals (empty ones dropped), as sorted starts and ends."""
    starts: list[float] = []
    ends: list[float] = []
    for a, b in sorted(windows):
        if b <= a:
            continue
        if starts and a <= ends[-1]:
            ends[-1] = max(ends[-1], b)
        else:
            starts.append(a)
            ends.append(b)
    return starts, ends


def _select(
    result: Result,
    windows: Sequence[tuple[float, float]],
    inside: bool,
    exclude: Sequence[bool] | None = None,
) -> Stats:
    starts, ends = union(windows)
    counts = dict.fromkeys(OUTCOMES, 0)
    lats: list[float] = []
    total = 0
    for i, (s, o, lat) in enumerate(
        zip(result.scheduled, result.outcome, result.latency, strict=True)
    ):
        k = bisect.bisect_right(starts, s) - 1
        hit = k >= 0 and s < ends[k]
        if hit != inside:
            continue
        if exclude is not None and exclude[i] and o == OK:
            continue  # an ok request caught by a machine stall; failures always count
        total += 1
        counts[OUTCOMES[o]] += 1
        if not math.isnan(lat):
            lats.append(lat)
    return Stats(total, counts, percentiles(lats))


def window_stats(
    result: Result, windows: list[tuple[float, float]], exclude: Sequence[bool] | None = None
) -> Stats:
    """Stats of the requests *scheduled* inside any of ``windows`` ([start, end) monotonic).

    ``exclude`` (one flag per request) leaves out the ok requests flagged (see stalls.py)."""
    return _select(result, windows, True, exclude)


def steady_stats(
    result: Result, windows: list[tuple[float, float]], exclude: Sequence[bool] | None = None
) -> Stats:
    """Stats of the requests scheduled outside every window (the steady state)."""
    return _select(result, windows, False, exclude)


def added_latency(result: Result, windows: list[tuple[float, float]], *, q: str = "p99") -> float:
    """Window ``q`` minus steady ``q`` in seconds ("added latency"; nan if either is empty)."""
    return window_stats(result, windows).latency[q] - steady_stats(result, windows).latency[q]
