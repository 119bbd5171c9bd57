"""The chaos soak's pure parts: the seeded fault schedule, the cause of every failed request,
and the summary table. integration/soak.py carries the faults out under a real systemd.

Causes: a failed request is *read* by a generation (the app logs ``RID PID`` before it
answers), or not. One read, or reset before it was read, by a process that was then killed
is put on that death (who killed it and why: the soak, the supervisor at a timeout, systemd
at TimeoutStopSec=); one never accepted (refused, timed out) on the fault under way when it
was sent. Only the first kind of death is allowed: a serving generation the soak SIGKILLed
cannot answer what it had accepted, and no supervisor can change that.
"""

from __future__ import annotations

import math
import random
import statistics
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence, Set
from dataclasses import dataclass, field
from typing import NamedTuple

__all__ = [
    "ALLOWED",
    "DIED_SERVING",
    "KILLED_BY_SYSTEMD",
    "KILLED_DRAINING",
    "KILLED_NOT_READY",
    "KILLED_SERVING",
    "KILLED_STARTING",
    "KINDS",
    "Attributed",
    "Checks",
    "Death",
    "Failed",
    "Fault",
    "FaultRecord",
    "attribute",
    "estimate",
    "schedule",
    "stuck_drains",
    "table",
]

# kind -> what the soak does (one line of the summary table)
KINDS = {
    "kill-serving": "SIGKILL the serving generation",
    "kill-starting": "SIGKILL a starting generation",
    "stop-starting": "SIGSTOP a starting generation past --ready-timeout",
    "exit-at-start": "a version that exits at start-up",
    "never-ready": "a version that serves but never sends READY=1",
    "reload-burst": "back-to-back SIGHUPs or `systemctl reload`s",
    "kill-supervisor": "SIGKILL the supervisor (systemd restarts it)",
}

# Death causes (Death.cause)
KILLED_SERVING = "serving generation SIGKILLed by the soak"
KILLED_STARTING = "starting generation SIGKILLed by the soak"
# At --ready-timeout: SIGKILLed at once (sdactivate run up to issue 16 item 2), or given the
# stop signal and then, if still there after a grace, KILLED_DRAINING.
KILLED_NOT_READY = "generation that missed --ready-timeout, failed by the supervisor"
KILLED_DRAINING = "generation SIGKILLed by the supervisor still running after its stop signal"
KILLED_BY_SYSTEMD = "process SIGKILLed by systemd at TimeoutStopSec="
DIED_SERVING = "serving generation died by itself"

ALLOWED = f"accepted by a {KILLED_SERVING}"


@dataclass(frozen=True)
class Fault:
    """One scheduled fault. ``pause``: seconds of plain load before it; ``variant``:
    stop-starting ``cont`` (SIGCONT once the supervisor gave up) or ``left``; reload-burst
    ``sighup`` or ``systemctl``; ``count``: reload-burst triggers; ``delay``: seconds into a
    starting generation's start-up at which it is killed or stopped."""

    kind: str
    pause: float
    variant: str = ""
    count: int = 1
    delay: float = 0.0

    def label(self) -> str:
        extra = f" {self.variant}" if self.variant else ""
        return f"{self.kind}{extra}" + (f" x{self.count}" if self.count > 1 else "")


def schedule(seed: int) -> Iterator[Fault]:
    """The faults for ``seed``, endless: rounds in which every kind comes once, in a random
    order, so that even a short soak meets each kind."""
    rng = random.Random(seed)
    while True:
        kinds = list(KINDS)
        rng.shuffle(kinds)
        for kind in kinds:
            pause = round(rng.uniform(0.5, 2.0), 3)
            if kind == "stop-starting":
                yield Fault(kind, pause, rng.choice(("cont", "left")), delay=_delay(rng))
            elif kind == "kill-starting":
                yield Fault(kind, pause, delay=_delay(rng))
            elif kind == "reload-burst":
                yield Fault(kind, pause, rng.choice(("sighup", "systemctl")), rng.randint(2, 4))
            else:
                yield Fault(kind, pause)


def _delay(rng: random.Random) -> float:
    return round(rng.uniform(0.0, 0.3), 3)


def estimate(fault: Fault, *, ready_timeout: float) -> float:
    """Seconds the fault usually takes, pause included (to fit a time budget): a failed
    handover waits for --ready-timeout, a supervisor restart for RestartSec= (1 s) and a
    start; the rest take a few hundred ms on a busy 2-CPU machine (a margin added)."""
    base = {
        "stop-starting": ready_timeout + 1.0,
        "never-ready": ready_timeout + 1.0,
        "reload-burst": 2.0,
        "kill-supervisor": 3.0,
    }.get(fault.kind, 1.0)
    return fault.pause + base


@dataclass
class FaultRecord:
    """A fault as carried out: monotonic times of its start (the harness began), trigger
    (the signal or reload was sent) and end (the service settled: one generation serving,
    nothing else left), the pid it acted on (0: none) and what was seen."""

    fault: Fault
    start: float
    trigger: float
    end: float
    target: int = 0
    note: str = ""

    @property
    def seconds(self) -> float:
        return self.end - self.trigger


@dataclass(frozen=True)
class Death:
    """A process that held connections and was killed: ``at`` monotonic, ``cause`` one of
    the KILLED_* / DIED_* texts."""

    pid: int
    at: float
    cause: str


class Failed(NamedTuple):
    """A failed request: loadgen's id, monotonic send time (its schedule if never sent) and
    outcome (loadgen.OUTCOMES)."""

    rid: int
    sent: float
    outcome: str


class Attributed(NamedTuple):
    request: Failed
    cause: str
    allowed: bool
    fault: str  # the kind of the fault it is put on ("" if none)


def _fault_at(faults: Sequence[FaultRecord], t: float, slack: float) -> FaultRecord | None:
    """The fault under way at ``t``: the last one started by then, if ``t`` is no later
    than ``slack`` after its end (a request sent just before a fault settled)."""
    for rec in reversed(faults):
        if rec.start <= t:
            return rec if t <= rec.end + slack else None
    return None


def _death_of(deaths: Sequence[Death], pid: int, sent: float) -> Death | None:
    """The death of ``pid`` after a request sent at ``sent`` (pids may be reused)."""
    found = [d for d in deaths if d.pid == pid and d.at >= sent - 0.5]
    return min(found, key=lambda d: d.at) if found else None


def attribute(
    failed: Sequence[Failed],
    read_by: Mapping[int, int],
    deaths: Sequence[Death],
    faults: Sequence[FaultRecord],
    *,
    timeout: float,
) -> list[Attributed]:
    """The cause of each failed request (see the module doc). ``read_by``: request id ->
    pid of the process that read it; ``timeout``: the client's per-request bound."""
    out: list[Attributed] = []
    for req in failed:
        pid = read_by.get(req.rid)
        death: Death | None
        if pid is not None:
            death = _death_of(deaths, pid, req.sent)
            cause = (
                f"accepted by a {death.cause}"
                if death
                else f"read by pid {pid}, which was not killed ({req.outcome})"
            )
        elif req.outcome == "reset":
            # A queued connection survives every generation (the supervisor and the socket
            # unit hold the listening socket): a reset comes from a process that had it.
            after = [d for d in deaths if req.sent - 0.5 <= d.at <= req.sent + timeout]
            death = min(after, key=lambda d: d.at) if after else None
            cause = f"accepted by a {death.cause}" if death else "reset, and no process was killed"
        else:
            death = None
            rec = _fault_at(faults, req.sent, slack=1.0)
            during = f"during {rec.fault.kind}" if rec else "with no fault under way"
            cause = f"not accepted: {req.outcome} {during}"
        rec = _fault_at(faults, death.at if death else req.sent, slack=1.0)
        out.append(Attributed(req, cause, cause == ALLOWED, rec.fault.kind if rec else ""))
    return out


def stuck_drains(deaths: Sequence[Death], left_stopped: Set[int]) -> list[str]:
    """Processes SIGKILLed because they were still running after their stop signal (by the
    supervisor, or by systemd at TimeoutStopSec=): stuck drains, but for the generations
    the soak SIGSTOPped and left so (``left_stopped``), which cannot drain by design."""
    return [
        f"pid {d.pid}: {d.cause}"
        for d in deaths
        if d.cause in (KILLED_DRAINING, KILLED_BY_SYSTEMD) and d.pid not in left_stopped
    ]


@dataclass
class Checks:
    """End-of-soak checks besides the requests (the driver fills them)."""

    stuck_drains: list[str] = field(default_factory=list)
    zombies: list[str] = field(default_factory=list)
    fd_counts: dict[int, list[int]] = field(default_factory=dict)  # supervisor pid -> counts
    left_after_stop: list[str] = field(default_factory=list)
    stop_seconds: float = math.nan
    unsettled: list[str] = field(default_factory=list)
    missing_kinds: list[str] = field(default_factory=list)
    drains: dict[int, float] = field(default_factory=dict)  # pid -> stop signal to its end
    listeners: list[str] = field(default_factory=list)  # listening socket changes

    def fd_growth(self) -> dict[int, int]:
        """Supervisor pid -> fds at its last settle minus at its first."""
        return {pid: counts[-1] - counts[0] for pid, counts in self.fd_counts.items() if counts}

    def violations(self) -> list[str]:
        out = [f"stuck drain: {s}" for s in self.stuck_drains]
        out += [f"zombie: {z}" for z in self.zombies]
        out += [
            f"supervisor {pid}: {grew:+d} fds between its first and last settle"
            for pid, grew in self.fd_growth().items()
            if grew > 0
        ]
        out += [f"left after stop: {x}" for x in self.left_after_stop]
        out += [f"listening socket: {x}" for x in self.listeners]
        out += [f"did not settle: {u}" for u in self.unsettled]
        out += [f"fault kind never run: {k}" for k in self.missing_kinds]
        return out


def table(
    *,
    title: str,
    faults: Sequence[FaultRecord],
    attributed: Sequence[Attributed],
    requests: int,
    ok: int,
    checks: Checks,
) -> str:
    """The summary: faults by kind, requests, failures by cause, the checks."""
    lines = [title, ""]
    by_kind: dict[str, list[FaultRecord]] = {}
    for rec in faults:
        by_kind.setdefault(rec.fault.kind, []).append(rec)
    failed_by_fault = Counter(a.fault for a in attributed)
    head = f"{'fault':<16} {'runs':>5} {'settled in s: median':>21} {'max':>6}  failed requests"
    lines += [head, "-" * len(head)]
    for kind, text in KINDS.items():
        recs = by_kind.get(kind, [])
        secs = [r.seconds for r in recs]
        med = f"{statistics.median(secs):.2f}" if secs else "-"
        top = f"{max(secs):.2f}" if secs else "-"
        lines.append(
            f"{kind:<16} {len(recs):>5} {med:>21} {top:>6}  {failed_by_fault.get(kind, 0):>6}"
            f"   {text}"
        )
    if failed_by_fault.get(""):
        lines.append(f"{'(no fault)':<16} {'':>5} {'':>21} {'':>6}  {failed_by_fault['']:>6}")
    lines.append(f"{'total':<16} {len(faults):>5} {'':>21} {'':>6}  {len(attributed):>6}")
    allowed = sum(a.allowed for a in attributed)
    lines += [
        "",
        f"requests {requests}: ok {ok}, failed {requests - ok}"
        f" ({allowed} allowed, {requests - ok - allowed} not allowed)",
    ]
    for cause, n in Counter(a.cause for a in attributed).most_common():
        mark = "allowed" if cause == ALLOWED else "NOT ALLOWED"
        lines.append(f"  {n:>6}  {cause}  [{mark}]")
    growth = checks.fd_growth()
    fds = ", ".join(
        f"{pid}: {c[0]}->{c[-1]} (max {max(c)})" for pid, c in checks.fd_counts.items() if c
    )
    lines += [
        "",
        f"stuck drains: {len(checks.stuck_drains)}   zombies: {len(checks.zombies)}"
        f"   supervisor fd growth: {max(growth.values(), default=0):+d}"
        f" ({len(growth)} supervisors)",
        f"supervisor fds per settle (first->last): {fds or '-'}",
        f"drains: {len(checks.drains)}, longest"
        f" {max(checks.drains.values(), default=math.nan):.2f} s from the stop signal to exit",
        f"systemctl stop took {checks.stop_seconds:.2f} s; left after stop:"
        f" {', '.join(checks.left_after_stop) or 'nothing'}",
    ]
    for v in checks.violations():
        lines.append(f"VIOLATION: {v}")
    return "\n".join(lines)
