"""The supervisor's decisions: a sans-I/O state machine (no sockets, no clocks, no processes).

The runner feeds it events (``machine.handle(event) -> list[action]``) and carries out the
actions it returns. Generations are numbered 1, 2, 3...; the runner maps pids to them.

Invariants (checked after every event by :meth:`Machine.check`):

1. At most two generations are alive at once (counting one being killed or drained).
2. At most one generation is not ready (STARTING or CHECKING).
3. A generation that exits, misses ``ready_timeout`` or fails its health check before it
   takes over fails the upgrade: the serving generation is never signalled, the failure is
   reported (STATUS=, the waiting ``reload`` requests) and READY=1 is sent. Either may
   already have accepted connections on the shared sockets, so it gets the stop signal
   first: one that failed its check after READY=1 is SIGKILLed at ``drain_timeout``, one
   that missed ``ready_timeout`` after a short grace (``UNREADY_GRACE``, at most
   ``drain_timeout``: it is more likely hung than busy).
4. One upgrade at a time. A reload requested during one (or while the first generation
   starts, or while the previous one drains) is queued; any number of them coalesce into one
   more upgrade, started when at most the serving generation is alive. Never two in parallel.
5. The serving generation is told to stop only after its successor is READY (and healthy).
6. A serving generation that dies on its own is replaced at once (the listening sockets stay
   open in the supervisor, so the kernel queue absorbs connections meanwhile); if nothing is
   left that can serve, the supervisor stops with exit status 1 (systemd's ``Restart=`` then
   applies).
7. On stop every generation gets the stop signal, then SIGKILL at ``drain_timeout``; the
   supervisor exits when the last one is reaped (0 when asked to stop, 1 on failure).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import assert_never

from .._generation import UNREADY_GRACE, describe_status, startup_grace
from . import settings
from .events import (
    HANDOVER_FAILED_STATUS,
    Action,
    CancelHealth,
    CancelTimer,
    ChildExited,
    ChildReady,
    Deadline,
    Event,
    Exit,
    ExtendTimeout,
    ForwardSignal,
    HealthResult,
    Kill,
    Log,
    NotifyManager,
    Promote,
    ReloadRequested,
    Report,
    RunHealth,
    SetTimer,
    Signal,
    Spawn,
    Spawned,
    SpawnFailed,
    Start,
    StopRequested,
    WatchdogPing,
)

__all__ = [
    "MAX_TIMEOUT",
    "UNREADY_GRACE",
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
    "GenState",
    "HealthResult",
    "Kill",
    "Log",
    "Machine",
    "NotifyManager",
    "Policy",
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
    "WatchdogPing",
    "describe_status",
]


# The longest timeout a Policy takes (settings.MAX_SECONDS: the bound `run` and gen-units parse
# with): anything longer is a typo, or infinity, for which a timeout that never fires would be
# the wrong tool (a hung generation would stay forever).
MAX_TIMEOUT = float(settings.MAX_SECONDS)


@dataclass(frozen=True)
class Policy:
    """Timeouts (seconds) and signals; validated when built."""

    # The defaults are `run`'s (settings: one home for gen-units and the CLI too).
    ready_timeout: float = settings.READY_TIMEOUT
    drain_timeout: float = settings.DRAIN_TIMEOUT
    stop_signal: int = settings.STOP_SIGNAL
    health: bool = False
    health_timeout: float = settings.HEALTH_TIMEOUT
    # A generation started while another serves runs at a lower priority, but only this
    # long: on a host that other work keeps busy, SCHED_IDLE would starve it past
    # ready_timeout and the upgrade would fail for want of CPU, not for a fault of its own.
    startup_grace: float = settings.STARTUP_GRACE

    def __post_init__(self) -> None:
        for name in ("ready_timeout", "drain_timeout", "health_timeout", "startup_grace"):
            value = getattr(self, name)
            if not 0 < value <= MAX_TIMEOUT:  # NaN fails both
                raise ValueError(f"{name} must be > 0 and <= {MAX_TIMEOUT:.0f} s, got {value!r}")


class GenState(enum.Enum):
    STARTING = "starting"  # spawned, no READY=1 yet
    CHECKING = "checking"  # READY=1, health check running
    SERVING = "serving"
    DRAINING = "draining"  # told to stop after its successor took over
    FAILED = "failed"  # failed before taking over; signalled or SIGKILLed, not reaped yet


_NOT_READY = (GenState.STARTING, GenState.CHECKING)
_STOPPED = (GenState.DRAINING, GenState.FAILED)


@dataclass
class Generation:
    number: int
    state: GenState = GenState.STARTING
    pid: int | None = None
    killed: bool = False
    grace: float | None = None  # stop signal to SIGKILL, when not drain_timeout

    def label(self) -> str:
        pid = f"pid {self.pid}" if self.pid is not None else "not started"
        return f"generation {self.number} ({pid})"


class Phase(enum.Enum):
    STARTING = "starting"  # the first generation is not ready yet
    RUNNING = "running"
    STOPPING = "stopping"
    DONE = "done"


@dataclass
class Machine:
    """The supervisor state machine. ``handle(event)`` returns the actions to perform."""

    policy: Policy = field(default_factory=Policy)
    phase: Phase = Phase.STARTING
    gens: dict[int, Generation] = field(default_factory=dict)
    active: int | None = None  # the serving generation
    candidate: int | None = None  # the generation of the running upgrade or replacement
    pending: bool = False  # a reload is queued
    waiters: list[int] = field(default_factory=list)  # requests answered by this upgrade
    queued: list[int] = field(default_factory=list)  # requests answered by the next one
    exit_code: int = 0
    upgrades_ok: int = 0
    upgrades_failed: int = 0
    _next: int = 1
    _out: list[Action] = field(default_factory=list)

    # --- public --------------------------------------------------------------------------
    def handle(self, event: Event) -> list[Action]:
        self._out = []
        match event:
            case Start():
                self._on_start()
            case ReloadRequested():
                self._on_reload_requested(event)
            case Spawned():
                self._on_spawned(event)
            case SpawnFailed():
                self._on_spawn_failed(event)
            case ChildReady():
                self._on_child_ready(event)
            case HealthResult():
                self._on_health_result(event)
            case Deadline():
                self._on_deadline(event)
            case ChildExited():
                self._on_child_exited(event)
            case StopRequested():
                self._on_stop_requested()
            case WatchdogPing():
                self._on_watchdog_ping(event)
            case ExtendTimeout():
                self._on_extend_timeout(event)
            case ForwardSignal():
                self._on_forward_signal(event)
            case _:
                assert_never(event)
        self.check()
        out, self._out = self._out, []
        return out

    def check(self) -> None:
        """Assert the invariants in the module docstring."""
        alive = list(self.gens.values())
        assert len(alive) <= 2, f"more than two generations alive: {alive}"
        assert sum(g.state in _NOT_READY for g in alive) <= 1, f"two not ready: {alive}"
        serving = [g.number for g in alive if g.state is GenState.SERVING]
        assert serving == ([] if self.active is None else [self.active]), (serving, self.active)
        if self.candidate is not None:
            assert self.candidate in self.gens, "candidate not alive"

    def generation(self, gen: int) -> Generation | None:
        return self.gens.get(gen)

    def status_text(self) -> str:
        g = self.gens.get(self.active) if self.active is not None else None
        if g is None:
            return "no generation serving"
        return f"{g.label()} serving"

    # --- helpers -------------------------------------------------------------------------
    def _emit(self, *actions: Action) -> None:
        self._out.extend(actions)

    def _grace(self) -> float:
        """How long a new generation stays lowered: at most half of its ready_timeout."""
        return startup_grace(self.policy.startup_grace, self.policy.ready_timeout)

    def _spawn(self) -> int:
        gen = self._next
        self._next += 1
        self.gens[gen] = Generation(gen)
        self.candidate = gen
        lowered = self.active is not None  # nothing serves: start as fast as we can
        self._emit(Spawn(gen, lowered), SetTimer(("ready", gen), self.policy.ready_timeout))
        if lowered:
            self._emit(SetTimer(("lowered", gen), self._grace()))
        return gen

    def _report(self, requests: list[int], ok: bool, message: str) -> None:
        g = self.gens.get(self.active) if self.active is not None else None
        for request in requests:
            self._emit(Report(request, ok, g.number if g else None, g.pid if g else None, message))
        requests.clear()

    def _status(self, text: str) -> None:
        self._emit(NotifyManager((("STATUS", text),)))

    def _can_upgrade(self) -> bool:
        return (
            self.phase is Phase.RUNNING
            and self.active is not None
            and self.candidate is None
            and len(self.gens) == 1
        )

    def _maybe_start_pending(self) -> None:
        if self.pending and self._can_upgrade():
            self._start_upgrade()

    def _start_upgrade(self) -> None:
        self.pending = False
        self.waiters, self.queued = self.queued, []
        gen = self._spawn()
        self._emit(
            NotifyManager(
                (("RELOADING", "1"), ("STATUS", f"upgrading: starting generation {gen}")),
                reloading=True,
            ),
            Log("info", f"upgrade: starting generation {gen}"),
        )

    def _take_over(self, g: Generation) -> None:
        old = self.gens.get(self.active) if self.active is not None else None
        g.state = GenState.SERVING
        self.active = g.number
        self.candidate = None
        self._emit(CancelTimer(("lowered", g.number)), Promote(g.number))
        if old is not None:
            old.state = GenState.DRAINING
            self._emit(
                Signal(old.number, self.policy.stop_signal),
                SetTimer(("drain", old.number), self.policy.drain_timeout),
            )
            text = f"{g.label()} serving; {old.label()} draining"
        else:
            text = f"{g.label()} serving"
        self._emit(Log("info", text))
        if self.phase is Phase.STARTING:
            self.phase = Phase.RUNNING
        if self.waiters or old is not None:
            self.upgrades_ok += 1
        self._emit(NotifyManager((("READY", "1"), ("STATUS", text))))
        self._report(self.waiters, True, text)
        self._maybe_start_pending()

    def _fail(self, g: Generation, why: str, *, alive: bool = True) -> None:
        """``g`` failed before taking over: kill it; fall back to the serving one, or give up."""
        self._emit(*(CancelTimer((kind, g.number)) for kind in ("ready", "health", "lowered")))
        if g.state is GenState.CHECKING:
            self._emit(CancelHealth(g.number))
        message = f"{g.label()} failed: {why}"
        if alive and g.pid is not None and not g.killed:
            # It may already accept on the shared sockets (after READY=1, or a server that
            # accepts before it says so): the stop signal first, so the connections it took
            # are answered or closed, not reset. No READY=1 in time: a short grace.
            if g.state is GenState.STARTING:
                g.grace = min(UNREADY_GRACE, self.policy.drain_timeout)
            grace = self.policy.drain_timeout if g.grace is None else g.grace
            self._emit(
                Signal(g.number, self.policy.stop_signal), SetTimer(("drain", g.number), grace)
            )
        g.state = GenState.FAILED
        if self.phase is Phase.STOPPING:
            return
        if self.active is None:  # nothing to fall back to
            self._emit(Log("error", f"{message}; nothing left to serve"))
            self._give_up(f"{message}; nothing left to serve")
            return
        self.upgrades_failed += 1
        text = f"{HANDOVER_FAILED_STATUS}{message}; {self.status_text()}"
        self._emit(Log("error", text), NotifyManager((("READY", "1"), ("STATUS", text))))
        self._report(self.waiters, False, text)

    def _give_up(self, text: str) -> None:
        self.exit_code = 1
        self._stop(text)

    def _stop(self, text: str) -> None:
        self.phase = Phase.STOPPING
        self.pending = False
        self._report(self.waiters, False, f"supervisor stopping: {text}")
        self._report(self.queued, False, f"supervisor stopping: {text}")
        self._emit(NotifyManager((("STOPPING", "1"), ("STATUS", f"stopping: {text}"))))
        for g in self.gens.values():
            if g.state in (GenState.FAILED, GenState.DRAINING):
                continue  # killed, or signalled with its drain timer running
            if g.state in _NOT_READY:
                self._emit(
                    *(CancelTimer((kind, g.number)) for kind in ("ready", "health", "lowered"))
                )
                if g.state is GenState.CHECKING:
                    self._emit(CancelHealth(g.number))
            if g.pid is not None:
                self._emit(Signal(g.number, self.policy.stop_signal))
            self._emit(SetTimer(("drain", g.number), self.policy.drain_timeout))
            g.state = GenState.DRAINING
        self.active = None
        self.candidate = None
        self._maybe_exit()

    def _maybe_exit(self) -> None:
        if self.phase is Phase.STOPPING and not self.gens:
            self.phase = Phase.DONE
            self._emit(Exit(self.exit_code))

    # --- event handlers ------------------------------------------------------------------
    def _on_start(self) -> None:
        assert not self.gens and self._next == 1, "Start twice"
        gen = self._spawn()
        self._status(f"starting generation {gen}")

    def _on_reload_requested(self, ev: ReloadRequested) -> None:
        if self.phase in (Phase.STOPPING, Phase.DONE):
            if ev.request is not None:
                self._emit(Report(ev.request, False, None, None, "supervisor is stopping"))
            return
        if ev.request is not None:
            self.queued.append(ev.request)
        if self._can_upgrade():
            self.pending = True
            self._maybe_start_pending()
            return
        if not self.pending:
            self._emit(Log("info", "reload queued until the current transition ends"))
        self.pending = True

    def _on_spawned(self, ev: Spawned) -> None:
        g = self.gens.get(ev.gen)
        if g is not None:
            g.pid = ev.pid

    def _on_spawn_failed(self, ev: SpawnFailed) -> None:
        g = self.gens.get(ev.gen)
        if g is None:
            return
        self._fail(g, f"could not start: {ev.reason}", alive=False)
        self._reaped(g)

    def _on_child_ready(self, ev: ChildReady) -> None:
        g = self.gens.get(ev.gen)
        if g is None or g.state is not GenState.STARTING or self.phase is Phase.STOPPING:
            return  # a late or repeated READY=1 (e.g. after the app's own reload)
        self._emit(CancelTimer(("ready", g.number)))
        if self.policy.health:
            g.state = GenState.CHECKING
            self._emit(
                RunHealth(g.number), SetTimer(("health", g.number), self.policy.health_timeout)
            )
        else:
            self._take_over(g)

    def _on_health_result(self, ev: HealthResult) -> None:
        g = self.gens.get(ev.gen)
        if g is None or g.state is not GenState.CHECKING:
            return
        self._emit(CancelTimer(("health", g.number)))
        if ev.ok:
            self._take_over(g)
        else:
            self._fail(g, f"health check failed{': ' + ev.detail if ev.detail else ''}")

    def _on_deadline(self, ev: Deadline) -> None:
        kind, number = ev.key
        g = self.gens.get(number)
        if g is None:
            return
        if kind == "lowered" and g.state in _NOT_READY:
            self._emit(
                Promote(g.number),
                Log(
                    "warning",
                    f"{g.label()} not ready {self._grace():g}s after its start at"
                    " a lower priority; it gets the supervisor's priority now (a busy host?)",
                ),
            )
        elif kind == "ready" and g.state is GenState.STARTING:
            self._fail(g, f"no READY=1 within {self.policy.ready_timeout:g}s")
        elif kind == "health" and g.state is GenState.CHECKING:
            self._fail(g, f"health check did not finish within {self.policy.health_timeout:g}s")
        elif kind == "drain" and g.state in _STOPPED and not g.killed:
            g.killed = True
            grace = self.policy.drain_timeout if g.grace is None else g.grace
            self._emit(
                Log(
                    "warning",
                    f"{g.label()} still running {grace:g}s after the stop signal; sending SIGKILL",
                ),
                Kill(g.number),
            )

    def _on_child_exited(self, ev: ChildExited) -> None:
        g = self.gens.get(ev.gen)
        if g is None:
            return
        how = describe_status(ev.status)
        if g.state in _NOT_READY:
            when = "before READY=1" if g.state is GenState.STARTING else "during its health check"
            self._fail(g, f"{how} {when}", alive=False)
        elif g.state is GenState.SERVING:
            self._emit(Log("error", f"{g.label()} {how} while serving"))
            self.active = None
            g.state = GenState.FAILED
            if self.candidate is None:  # otherwise the running upgrade's child takes over
                gen = self._spawn()
                self._status(f"{g.label()} {how}; starting generation {gen}")
        else:
            self._emit(CancelTimer(("drain", g.number)), Log("info", f"{g.label()} {how}"))
            if self.phase is Phase.RUNNING and self.active is not None:
                self._status(self.status_text())
        self._reaped(g)

    def _reaped(self, g: Generation) -> None:
        del self.gens[g.number]
        if self.candidate == g.number:
            self.candidate = None
        self._maybe_exit()
        self._maybe_start_pending()

    def _on_stop_requested(self) -> None:
        if self.phase in (Phase.STOPPING, Phase.DONE):
            return
        self._stop("stop requested")

    def _on_watchdog_ping(self, ev: WatchdogPing) -> None:
        # Only the serving generation's pings reach the manager: a hung app (or a hung
        # supervisor, which then forwards nothing) makes systemd's WatchdogSec= fire.
        if ev.gen == self.active and self.phase is Phase.RUNNING:
            self._emit(NotifyManager((("WATCHDOG", ev.value),)))

    def _on_extend_timeout(self, ev: ExtendTimeout) -> None:
        # sd_notify(3) EXTEND_TIMEOUT_USEC: a slow starter asks for more time. Its ready
        # timer restarts at that length, and the manager's start/reload timeout is extended
        # too (v236+), since the supervisor's own READY=1 waits for this child.
        g = self.gens.get(ev.gen)
        if g is None or g.state is not GenState.STARTING or ev.usec <= 0:
            return
        self._emit(
            SetTimer(("ready", g.number), ev.usec / 1e6),
            NotifyManager((("EXTEND_TIMEOUT_USEC", str(ev.usec)),)),
        )

    def _on_forward_signal(self, ev: ForwardSignal) -> None:
        if self.active is not None:
            self._emit(Signal(self.active, ev.signum))
