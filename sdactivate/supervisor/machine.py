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

With ``workers`` N > 1 (``sdactivate run --workers N``) a generation is N processes, worker
0..N-1, started with the same sockets; the rules above hold for the generation as a whole,
and these too (:meth:`Machine.check` asserts them, the capacity rules against the actions
of the event):

8. Capacity never drops: a READY worker of the serving generation is signalled only when a
   successor with all N workers READY (and healthy) takes over, or on stop.
9. All or nothing: a generation takes over only once all N of its workers are READY; if one
   exits, misses ``ready_timeout`` or the health check fails, every worker of that generation
   is stopped and the serving one is untouched (rule 3).
10. Bounded start-up: at most ``max_starting`` workers (of any generation) are starting at
    once, each at the lowered start-up priority while others serve. A starting generation's
    ``ready_timeout`` counts from its latest worker start.
11. One crash is one replacement: a serving worker that dies is replaced alone, with its
    index, in the same generation; consecutive crashes of one index back off
    (:func:`.workers.backoff_delay`, shown in STATUS=). At most one process per index is
    alive. A replacement that fails while no worker of the serving generation is READY
    leaves nothing to serve: the supervisor stops with exit status 1 (rule 6).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import assert_never

from .._generation import describe_status, startup_grace
from . import invariants, settings
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
    TimerKey,
    WatchdogPing,
)
from .state import (
    NOT_READY,
    STOPPED,
    UP,
    Generation,
    GenState,
    Phase,
    Worker,
    WorkerState,
)
from .workers import STABLE_AFTER, backoff_delay

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
    "Worker",
    "WorkerState",
    "describe_status",
]


# The longest timeout a Policy takes (settings.MAX_SECONDS: the bound `run` and gen-units parse
# with): anything longer is a typo, or infinity, for which a timeout that never fires would be
# the wrong tool (a hung generation would stay forever).
MAX_TIMEOUT = float(settings.MAX_SECONDS)

# Seconds a generation that missed ready_timeout gets between the stop signal and SIGKILL
# (capped by drain_timeout). Servers often accept before READY=1; a SIGKILL at once reset
# the connections it had taken, where the stop signal lets it answer or close them.
# systemd itself stops a service whose start timed out the same way: TimeoutStartFailureMode=
# terminate (the default, v246+) sends the stop signal, then SIGKILL (systemd.service(5)).
UNREADY_GRACE = 5.0


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
    workers: int = settings.WORKERS  # processes per generation
    max_starting: int | None = None  # workers starting at once; None: all of them

    def __post_init__(self) -> None:
        for name in ("ready_timeout", "drain_timeout", "health_timeout", "startup_grace"):
            value = getattr(self, name)
            if not 0 < value <= MAX_TIMEOUT:  # NaN fails both
                raise ValueError(f"{name} must be > 0 and <= {MAX_TIMEOUT:.0f} s, got {value!r}")
        settings.check_count(self.workers, what="workers")
        if self.max_starting is not None:
            settings.check_count(self.max_starting, what="max_starting")

    @property
    def start_limit(self) -> int:
        return self.workers if self.max_starting is None else self.max_starting


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
        before = invariants.snapshot(self)
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
        invariants.check_actions(self, event, before, self._out)
        out, self._out = self._out, []
        return out

    def check(self) -> None:
        """Assert the invariants in the module docstring that hold in any one state."""
        invariants.check_state(self)

    def generation(self, gen: int) -> Generation | None:
        return self.gens.get(gen)

    def status_text(self) -> str:
        g = self.gens.get(self.active) if self.active is not None else None
        if g is None:
            return "no generation serving"
        if g.size == 1:
            return f"{g.label()} serving"
        text = f"{g.ready()}/{g.size} ready, generation {g.number}"
        for i, delay in sorted(g.waiting.items()):
            text += (
                f"; worker {i} crashed {g.crashes.get(i, 0)} times in a row,"
                f" restarting in {delay:g}s"
            )
        return text

    # --- helpers -------------------------------------------------------------------------
    def _emit(self, *actions: Action) -> None:
        self._out.extend(actions)

    def _grace(self) -> float:
        """How long a new generation stays lowered: at most half of its ready_timeout."""
        return startup_grace(self.policy.startup_grace, self.policy.ready_timeout)

    def _who(self, g: Generation, index: int) -> str:
        """``"worker 2 (pid 7) "`` with several workers; nothing with one."""
        if g.size == 1:
            return ""
        w = g.workers.get(index)
        pid = f" (pid {w.pid})" if w is not None and w.pid is not None else ""
        return f"worker {index}{pid} "

    def _spawn(self) -> int:
        gen = self._next
        self._next += 1
        size = self.policy.workers
        self.gens[gen] = Generation(gen, size=size, unstarted=list(range(size)))
        self.candidate = gen
        lowered = self.active is not None  # nothing serves: start as fast as we can
        self._fill(timers=False)
        self._emit(SetTimer(("ready", gen), self.policy.ready_timeout))
        if lowered:
            self._emit(SetTimer(("lowered", gen), self._grace()))
        return gen

    def _fill(self, *, timers: bool = True) -> None:
        """Start what waits for a start-up slot: the serving generation's replacements
        first (capacity), then the starting generation's next workers."""
        if self.phase not in (Phase.STARTING, Phase.RUNNING):
            return
        order = [n for n in (self.active, self.candidate) if n is not None]
        for number in dict.fromkeys(order):
            g = self.gens[number]
            while g.queued and self._free_slots():
                self._start_replacement(g, g.queued.pop(0))
            started = False
            while g.state is GenState.STARTING and g.unstarted and self._free_slots():
                index = g.unstarted.pop(0)
                g.workers[index] = Worker(index)
                lowered = self.active is not None and not g.promoted
                self._emit(Spawn(g.number, lowered, index))
                started = True
            if started and timers:  # every worker gets ready_timeout from its start
                self._emit(SetTimer(("ready", g.number), self.policy.ready_timeout))

    def _free_slots(self) -> bool:
        return sum(g.starting() for g in self.gens.values()) < self.policy.start_limit

    def _start_replacement(self, g: Generation, index: int) -> None:
        g.workers[index] = Worker(index, restarts=g.restarts.get(index, 0))
        lowered = g.ready() > 0  # the others serve: its start-up must not slow them
        self._emit(
            Spawn(g.number, lowered, index),
            SetTimer(("ready", g.number, index), self.policy.ready_timeout),
            Log("info", f"{g.label()}: starting worker {index} again"),
        )
        if lowered:
            self._emit(SetTimer(("lowered", g.number, index), self._grace()))

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

    def _forget_replacements(self, g: Generation) -> None:
        """``g`` stops serving: the workers it was about to start again never start."""
        self._emit(*(CancelTimer(("respawn", g.number, i)) for i in g.waiting))
        g.waiting.clear()
        g.queued.clear()

    def _take_over(self, g: Generation) -> None:
        old = self.gens.get(self.active) if self.active is not None else None
        g.state = GenState.SERVING
        self.active = g.number
        self.candidate = None
        self._emit(CancelTimer(("lowered", g.number)), Promote(g.number))
        head = f"{g.label()} serving" if g.size == 1 else self.status_text()
        if old is not None:
            old.state = GenState.DRAINING
            self._forget_replacements(old)
            self._emit(
                Signal(old.number, self.policy.stop_signal),
                SetTimer(("drain", old.number), self.policy.drain_timeout),
            )
            text = f"{head}; {old.label()} draining"
        else:
            text = head
        self._emit(Log("info", text))
        if self.phase is Phase.STARTING:
            self.phase = Phase.RUNNING
        if self.waiters or old is not None:
            self.upgrades_ok += 1
        self._emit(NotifyManager((("READY", "1"), ("STATUS", text))))
        self._report(self.waiters, True, text)
        self._maybe_start_pending()

    def _fail(self, g: Generation, why: str) -> None:
        """``g`` failed before taking over: stop every worker it started (those it had not
        never start); fall back to the serving generation, or give up."""
        self._emit(*(CancelTimer((kind, g.number)) for kind in ("ready", "health", "lowered")))
        if g.state is GenState.CHECKING:
            self._emit(CancelHealth(g.number))
        g.unstarted.clear()
        message = f"{g.label()} failed: {why}"
        if g.live() and not g.killed:
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
            g.unstarted.clear()
            self._forget_replacements(g)
            if g.state in (GenState.FAILED, GenState.DRAINING):
                continue  # killed, or signalled with its drain timer running
            if g.state in NOT_READY:
                self._emit(
                    *(CancelTimer((kind, g.number)) for kind in ("ready", "health", "lowered"))
                )
                if g.state is GenState.CHECKING:
                    self._emit(CancelHealth(g.number))
            for w in g.workers.values():  # a replacement starting: its own timers go
                if w.state is WorkerState.STARTING and g.state is GenState.SERVING:
                    self._emit(*(CancelTimer((k, g.number, w.index)) for k in ("ready", "lowered")))
            if g.live():
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

    def _maybe_reap(self, g: Generation) -> None:
        empty = not g.workers and not g.queued and not g.waiting and g.number in self.gens
        if empty and (g.state in STOPPED or g.size == 1 or self.phase is Phase.STOPPING):
            self._reaped(g)

    # --- workers of the serving generation (several workers) ------------------------------
    def _crashed(self, g: Generation, index: int) -> None:
        """Worker ``index`` of the serving ``g`` is gone: start it again, at once after one
        crash, after a growing delay after several in a row."""
        crashes = g.crashes[index] = g.crashes.get(index, 0) + 1
        g.restarts[index] = g.restarts.get(index, 0) + 1
        delay = backoff_delay(crashes)
        if delay == 0:
            g.queued.append(index)
            self._fill()
        else:
            g.waiting[index] = delay
            self._emit(
                SetTimer(("respawn", g.number, index), delay),
                Log(
                    "warning",
                    f"{g.label()}: worker {index} crashed {crashes} times in a row;"
                    f" starting it again in {delay:g}s",
                ),
            )
        self._status(self.status_text())

    def _replacement_failed(self, g: Generation, index: int, why: str) -> None:
        """A replacement of worker ``index`` failed before READY=1 (still alive: it gets the
        stop signal, and is started again once reaped)."""
        w = g.workers.get(index)
        self._emit(*(CancelTimer((k, g.number, index)) for k in ("ready", "lowered")))
        text = f"{g.label()}: worker {index} failed: {why}"
        self._emit(Log("error", text))
        others = [x for x in g.workers.values() if x.index != index]
        if self.candidate is None and not any(x.state in UP for x in others):
            # nothing serves and nothing is on its way: like a lone generation's (rule 6)
            if w is not None and w.pid is not None:
                w.state = WorkerState.STOPPING
            self._give_up(f"{text}; nothing left to serve")
            return
        if w is not None and w.pid is not None:
            w.state = WorkerState.STOPPING
            grace = min(UNREADY_GRACE, self.policy.drain_timeout)
            self._emit(
                Signal(g.number, self.policy.stop_signal, index),
                SetTimer(("drain", g.number, index), grace),
            )
        else:
            g.workers.pop(index, None)
            self._crashed(g, index)

    def _on_worker_deadline(self, g: Generation, kind: str, index: int) -> None:
        w = g.workers.get(index)
        if kind == "respawn" and index in g.waiting and g.state is GenState.SERVING:
            del g.waiting[index]
            g.queued.append(index)
            self._fill()
        elif w is None:
            return
        elif kind == "ready" and w.state is WorkerState.STARTING and g.state is GenState.SERVING:
            self._replacement_failed(g, index, f"no READY=1 within {self.policy.ready_timeout:g}s")
        elif kind == "lowered" and w.state is WorkerState.STARTING:
            self._emit(Promote(g.number, index))
        elif kind == "stable" and w.state is WorkerState.READY:
            g.crashes.pop(index, None)
        elif kind == "drain" and w.state is WorkerState.STOPPING and not w.killed:
            w.killed = True
            self._emit(
                Log("warning", f"{g.label()}: worker {index} ignored the stop signal; SIGKILL"),
                Kill(g.number, index),
            )

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
        w = g.workers.get(ev.worker) if g is not None else None
        if g is not None and w is not None:
            w.pid = ev.pid
            if ev.worker == 0:
                g.pid = ev.pid

    def _on_spawn_failed(self, ev: SpawnFailed) -> None:
        g = self.gens.get(ev.gen)
        if g is None or ev.worker not in g.workers:
            return
        why = f"{self._who(g, ev.worker)}could not start: {ev.reason}"
        if g.state is GenState.SERVING:
            g.workers.pop(ev.worker)
            self._replacement_failed(g, ev.worker, why)
        else:
            g.workers.pop(ev.worker)
            if g.state in NOT_READY:
                self._fail(g, why)
        self._maybe_reap(g)

    def _on_child_ready(self, ev: ChildReady) -> None:
        g = self.gens.get(ev.gen)
        if g is None or self.phase is Phase.STOPPING:
            return
        w = g.workers.get(ev.worker)
        if w is None or w.state is not WorkerState.STARTING:
            return  # a late or repeated READY=1 (e.g. after the app's own reload)
        if g.state is GenState.SERVING:  # a replacement
            w.state = WorkerState.READY
            self._emit(
                *(CancelTimer((k, g.number, w.index)) for k in ("ready", "lowered")),
                Promote(g.number, w.index),
                SetTimer(("stable", g.number, w.index), STABLE_AFTER),
            )
            self._status(self.status_text())
            self._fill()
            return
        if g.state is not GenState.STARTING:
            return
        w.state = WorkerState.READY
        if g.ready() < g.size:
            self._fill()
            return
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
        key: TimerKey = ev.key
        kind, number = key[0], key[1]
        g = self.gens.get(number)
        if g is None:
            return
        if len(key) == 3:
            self._on_worker_deadline(g, kind, key[2])
        elif kind == "lowered" and g.state in NOT_READY:
            g.promoted = True
            self._emit(
                Promote(g.number),
                Log(
                    "warning",
                    f"{g.label()} not ready {self._grace():g}s after its start at"
                    " a lower priority; it gets the supervisor's priority now (a busy host?)",
                ),
            )
        elif kind == "ready" and g.state is GenState.STARTING:
            why = f"no READY=1 within {self.policy.ready_timeout:g}s"
            if g.size > 1:
                late = [
                    str(i) for i, w in sorted(g.workers.items()) if w.state is WorkerState.STARTING
                ]
                why = f"worker {', '.join(late)} sent {why}"
            self._fail(g, why)
        elif kind == "health" and g.state is GenState.CHECKING:
            self._fail(g, f"health check did not finish within {self.policy.health_timeout:g}s")
        elif kind == "drain" and g.state in STOPPED and not g.killed:
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
        if g is None or ev.worker not in g.workers:
            return
        how = describe_status(ev.status)
        who = self._who(g, ev.worker)
        w = g.workers.pop(ev.worker)
        if g.size > 1:
            keys = ("ready", "lowered", "stable", "drain")
            self._emit(*(CancelTimer((k, g.number, ev.worker)) for k in keys))
        if g.state in NOT_READY:
            if w.state is WorkerState.STARTING:
                when = "before READY=1"
            elif g.state is GenState.CHECKING:
                when = "during its health check"
            else:
                when = "before the others were READY"
            self._fail(g, f"{who}{how} {when}")
        elif g.state is GenState.SERVING and g.size == 1:
            self._emit(Log("error", f"{g.label()} {how} while serving"))
            self.active = None
            g.state = GenState.FAILED
            if self.candidate is None:  # otherwise the running upgrade's child takes over
                gen = self._spawn()
                self._status(f"{g.label()} {how}; starting generation {gen}")
        elif g.state is GenState.SERVING:
            if w.state is WorkerState.READY:
                self._emit(Log("error", f"{g.label()}: {who}{how} while serving"))
                self._crashed(g, ev.worker)
            elif w.state is WorkerState.STARTING:
                self._replacement_failed(g, ev.worker, f"{how} before READY=1")
            else:  # a failed replacement, reaped: start it again
                self._crashed(g, ev.worker)
        elif g.size > 1 and g.workers:
            self._emit(Log("info", f"{g.label()}: {who}{how}"))
        else:
            self._emit(CancelTimer(("drain", g.number)), Log("info", f"{g.label()} {how}"))
            if self.phase is Phase.RUNNING and self.active is not None:
                self._status(self.status_text())
        self._maybe_reap(g)

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
        # supervisor, which then forwards nothing) makes systemd's WatchdogSec= fire. With
        # several workers, WATCHDOG=1 passes on once every READY worker sent one since the
        # last: one hung worker stops the pings too (WATCHDOG=trigger passes at once).
        if ev.gen != self.active or self.phase is not Phase.RUNNING:
            return
        g = self.gens[ev.gen]
        w = g.workers.get(ev.worker)
        if g.size > 1 and ev.value != "trigger":
            if w is None or w.state is not WorkerState.READY:
                return
            w.pinged = True
            ready = [x for x in g.workers.values() if x.state is WorkerState.READY]
            if not all(x.pinged for x in ready):
                return
            for x in ready:
                x.pinged = False
        self._emit(NotifyManager((("WATCHDOG", ev.value),)))

    def _on_extend_timeout(self, ev: ExtendTimeout) -> None:
        # sd_notify(3) EXTEND_TIMEOUT_USEC: a slow starter asks for more time. Its ready
        # timer restarts at that length, and the manager's start/reload timeout is extended
        # too (v236+), since the supervisor's own READY=1 waits for this child.
        g = self.gens.get(ev.gen)
        w = g.workers.get(ev.worker) if g is not None else None
        if g is None or w is None or w.state is not WorkerState.STARTING or ev.usec <= 0:
            return
        if g.state is GenState.SERVING:  # a replacement: the manager waits for nothing
            self._emit(SetTimer(("ready", g.number, ev.worker), ev.usec / 1e6))
            return
        if g.state is not GenState.STARTING:
            return
        self._emit(
            SetTimer(("ready", g.number), ev.usec / 1e6),
            NotifyManager((("EXTEND_TIMEOUT_USEC", str(ev.usec)),)),
        )

    def _on_forward_signal(self, ev: ForwardSignal) -> None:
        if self.active is not None:
            self._emit(Signal(self.active, ev.signum))
