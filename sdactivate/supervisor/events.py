"""The supervisor's vocabulary: events the runner feeds to the machine, actions it returns.

Plain frozen values (h11-style): no behaviour, so both sides and the tests share them.
"""

from __future__ import annotations

from dataclasses import dataclass

# The STATUS= a supervisor sends with READY=1 after a handover that failed (the old generation
# keeps serving). Under Type=notify-reload (v253+) systemd has no way to fail the reload job,
# so `sdactivate reload NAME` reads this prefix from the unit's StatusText to report it.
HANDOVER_FAILED_STATUS = "upgrade failed: "

__all__ = [
    "HANDOVER_FAILED_STATUS",
    "Action",
    "CancelHealth",
    "CancelTimer",
    "ChildExited",
    "ChildReady",
    "Deadline",
    "Event",
    "Exit",
    "ExtendTimeout",
    "ForwardSignal",
    "HealthResult",
    "Kill",
    "Log",
    "NotifyManager",
    "Promote",
    "ReloadRequested",
    "Report",
    "RunHealth",
    "SetTimer",
    "Signal",
    "Spawn",
    "SpawnFailed",
    "Spawned",
    "Start",
    "StopRequested",
    "TimerKey",
    "WatchdogPing",
    "parse_extend_timeout",
]


# A timer's key: (kind, generation), or (kind, generation, worker) for one worker's timer.
TimerKey = tuple[str, int] | tuple[str, int, int]


# --- events ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Start:
    """Start the first generation."""


@dataclass(frozen=True)
class ReloadRequested:
    """SIGHUP (``request`` None) or a control-socket request (``request`` = its id)."""

    request: int | None = None


@dataclass(frozen=True)
class Spawned:
    gen: int
    pid: int
    worker: int = 0


@dataclass(frozen=True)
class SpawnFailed:
    gen: int
    reason: str
    worker: int = 0


@dataclass(frozen=True)
class ChildReady:
    """``READY=1`` received from this generation's process (``worker``: its index)."""

    gen: int
    worker: int = 0


@dataclass(frozen=True)
class ChildExited:
    """The generation's process was reaped; ``status`` as ``os.waitstatus_to_exitcode``."""

    gen: int
    status: int
    worker: int = 0


@dataclass(frozen=True)
class Deadline:
    """A timer set with :class:`SetTimer` fired."""

    key: TimerKey


@dataclass(frozen=True)
class HealthResult:
    gen: int
    ok: bool
    detail: str = ""


@dataclass(frozen=True)
class StopRequested:
    """SIGTERM/SIGINT to the supervisor."""


@dataclass(frozen=True)
class WatchdogPing:
    """``WATCHDOG=1`` (or ``=trigger``) received from this generation's process."""

    gen: int
    value: str = "1"
    worker: int = 0


@dataclass(frozen=True)
class ExtendTimeout:
    """``EXTEND_TIMEOUT_USEC=`` from this generation: it needs ``usec`` more from now."""

    gen: int
    usec: int
    worker: int = 0


# systemd's usec_t: USEC_INFINITY is 2^64-1, and service.c ignores an EXTEND_TIMEOUT_USEC=
# of 0 or USEC_INFINITY; a value it cannot parse as a u64 it ignores with a warning (v252).
_USEC_INFINITY = (1 << 64) - 1


def parse_extend_timeout(value: str) -> int | None:
    """The usec of an ``EXTEND_TIMEOUT_USEC=`` value (sd_notify(3)), 1..2^64-2, or None
    for anything systemd would not act on (0, out of range, not a number). Stricter than
    systemd's safe_atou64(): only ASCII digits (no sign, spaces or 0x)."""
    if not (0 < len(value) <= 20 and value.isascii() and value.isdigit()):
        return None
    usec = int(value)
    return usec if 0 < usec < _USEC_INFINITY else None


@dataclass(frozen=True)
class ForwardSignal:
    """A signal the supervisor passes on to the serving generation (SIGUSR1, SIGUSR2)."""

    signum: int


Event = (
    Start
    | ReloadRequested
    | Spawned
    | SpawnFailed
    | ChildReady
    | ChildExited
    | Deadline
    | HealthResult
    | StopRequested
    | WatchdogPing
    | ExtendTimeout
    | ForwardSignal
)


# --- actions -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Spawn:
    """Start generation ``gen``; answer with :class:`Spawned` or :class:`SpawnFailed`.
    ``lowered``: at the start-up priority (another generation is serving); ``worker``: the
    index (``SDACTIVATE_WORKER``) of the process to start."""

    gen: int
    lowered: bool = False
    worker: int = 0


@dataclass(frozen=True)
class Signal:
    """Send ``signum`` to the generation's processes (``worker`` None), or to one of them."""

    gen: int
    signum: int
    worker: int | None = None


@dataclass(frozen=True)
class Kill:
    """SIGKILL the generation (``worker`` None), or one worker; it is then reaped normally."""

    gen: int
    worker: int | None = None


@dataclass(frozen=True)
class SetTimer:
    key: TimerKey
    seconds: float


@dataclass(frozen=True)
class CancelTimer:
    key: TimerKey


@dataclass(frozen=True)
class RunHealth:
    gen: int


@dataclass(frozen=True)
class CancelHealth:
    gen: int


@dataclass(frozen=True)
class NotifyManager:
    """sd_notify(3) to the supervisor's own manager; ``reloading`` adds MONOTONIC_USEC."""

    fields: tuple[tuple[str, str], ...]
    reloading: bool = False


@dataclass(frozen=True)
class Report:
    """Answer control request ``request``."""

    request: int
    ok: bool
    generation: int | None
    pid: int | None
    message: str


@dataclass(frozen=True)
class Log:
    level: str  # "info" | "warning" | "error"
    message: str


@dataclass(frozen=True)
class Promote:
    """Lift ``gen``'s start-up priority (or one worker's): it took over, or its start-up
    ran too long."""

    gen: int
    worker: int | None = None


@dataclass(frozen=True)
class Exit:
    code: int


Action = (
    Spawn
    | Signal
    | Kill
    | SetTimer
    | CancelTimer
    | RunHealth
    | CancelHealth
    | NotifyManager
    | Report
    | Log
    | Promote
    | Exit
)
