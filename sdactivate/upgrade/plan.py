"""The Upgrader's decisions: a sans-I/O state machine (no sockets, no clocks, no processes).

The runner (:mod:`.runner`) feeds it events with a monotonic ``now``
(``plan.handle(event, now) -> list[action]``) and carries out the actions it returns, in
order; the events and actions are in :mod:`.events`. One generation, numbered attempts.

Invariants (tableflip-style; checked after every event by :meth:`UpgradePlan.check`):

1. At most one upgrade at a time, and at most one child: a request while one runs is
   queued, and queued requests coalesce into one; the next attempt starts once a failed
   child is gone; a queued request never waits while an upgrade could start.
2. A generation hands over only after it has called ``ready()`` itself (a child first needs
   its own handover from its parent).
3. A child that exits, is not ready within ``ready_timeout`` or cannot be handed over
   fails the upgrade, and this generation keeps serving. A failed child still alive (or
   one aborted by a stop) may already have accepted connections on the shared sockets (a
   server that accepts before ``ready()``): it gets the stop signal, then SIGKILL after
   ``stop_grace`` if it has not exited by then, never SIGKILL at once.
4. A ready child must stay alive for ``stable_time`` before the handover (a version that
   crashes right after READY is treated like one that never got ready).
5. A child starts at the start-up priority and gets ours back at READY, or after
   ``startup_grace`` (at most half of ``ready_timeout``) if it is still starting.
6. After the handover this generation only drains and exits: a request queued meanwhile is
   forwarded to the new generation, never run here.
"""

from __future__ import annotations

import enum
import signal
from typing import assert_never

from .._generation import UNREADY_GRACE, describe_status, startup_grace
from .events import (
    Action,
    AppReady,
    ChildGone,
    ChildSentReady,
    ChildStarted,
    ChildStartFailed,
    Event,
    Finish,
    ForwardUpgrade,
    HandOver,
    HandoverDone,
    HandoverFailed,
    KillChild,
    LiftPriority,
    Log,
    Outcome,
    ParentHandedOver,
    StartChild,
    StopAsked,
    StopChild,
    Tick,
    UpgradeRequested,
)

__all__ = ["Stage", "UpgradePlan"]


class Stage(enum.Enum):
    WAITING_HANDOVER = "waiting for the parent's handover"  # an upgrade child, not primary yet
    SERVING = "serving"
    UPGRADING = "upgrading"  # a child runs, not ready yet
    CONFIRMING = "confirming"  # the child is ready; waiting stable_time before the handover
    EXITING = "exiting"  # handed over, or stopped


_ATTEMPT = (Stage.UPGRADING, Stage.CONFIRMING)


class UpgradePlan:
    """What the Upgrader does next, given what happened. Times are monotonic seconds."""

    def __init__(
        self,
        *,
        has_parent: bool,
        ready_timeout: float,
        stable_time: float,
        startup_grace: float = 1.0,
        stop_signal: int = signal.SIGTERM,
        stop_grace: float = UNREADY_GRACE,
    ) -> None:
        if ready_timeout <= 0:
            raise ValueError(f"ready_timeout must be > 0, got {ready_timeout!r}")
        if stable_time < 0:
            raise ValueError(f"stable_time must be >= 0, got {stable_time!r}")
        if startup_grace <= 0:
            raise ValueError(f"startup_grace must be > 0, got {startup_grace!r}")
        if not stop_grace > 0:  # NaN fails too
            raise ValueError(f"stop_grace must be > 0, got {stop_grace!r}")
        self.ready_timeout = ready_timeout
        self.stable_time = stable_time
        self.startup_grace = startup_grace
        self.stop_signal = int(stop_signal)
        self.stop_grace = stop_grace
        self.stage = Stage.WAITING_HANDOVER if has_parent else Stage.SERVING
        self.is_ready = False  # this generation called ready()
        self.pending = False  # an upgrade request is queued
        self.child: int | None = None
        self.attempt = 0  # number of the running (or last) attempt
        self.deadline: float | None = None  # of the attempt's current wait
        self.lowered_until: float | None = None  # the child is at its start-up priority
        self.stopping: int | None = None  # a failed child, sent the stop signal, not gone yet
        self.kill_at: float | None = None  # ... SIGKILLed then

    # --- public --------------------------------------------------------------------------
    def handle(self, event: Event, now: float) -> list[Action]:
        match event:
            case UpgradeRequested():
                out = self._on_upgrade_requested(now)
            case AppReady():
                out = self._on_app_ready(now)
            case ParentHandedOver():
                out = self._on_parent_handed_over(now)
            case ChildStarted():
                out = self._on_child_started(event, now)
            case ChildStartFailed():
                out = self._fail(f"cannot start the new generation: {event.reason}", None, now)
            case ChildSentReady():
                out = self._on_child_sent_ready(event, now)
            case ChildGone():
                out = self._on_child_gone(event, now)
            case HandoverDone():
                out = self._on_handover_done(event)
            case HandoverFailed():
                out = self._on_handover_failed(event, now)
            case Tick():
                out = self._on_tick(now)
            case StopAsked():
                out = self._on_stop_asked(event, now)
            case _:
                assert_never(event)
        self.check()
        return out

    def check(self) -> None:
        """Assert the invariants in the module docstring."""
        queued_idle = self.pending and self._can_start()
        assert not queued_idle, "a queued upgrade waits while one could start"
        assert self.child is None or self.stopping is None, "two children"
        assert (self.stopping is None) == (self.kill_at is None), (self.stopping, self.kill_at)
        if self.stage in _ATTEMPT:
            assert self.attempt > 0 and self.deadline is not None, (self.stage, self.deadline)
        else:
            assert self.deadline is None, (self.stage, self.deadline)
        if self.stage is Stage.CONFIRMING:
            assert self.child is not None, "confirming no child"
        if self.stage in (Stage.SERVING, Stage.WAITING_HANDOVER):
            assert self.child is None, (self.stage, self.child)
        if self.lowered_until is not None:
            assert self.stage is Stage.UPGRADING and self.child is not None, "lowered, not starting"

    def wake_at(self) -> float | None:
        """The next time :class:`Tick` has something to do (None: nothing to wait for)."""
        times = [t for t in (self.deadline, self.lowered_until, self.kill_at) if t is not None]
        return min(times, default=None)

    # --- event handlers ------------------------------------------------------------------
    def _on_upgrade_requested(self, now: float) -> list[Action]:
        if self.stage is Stage.EXITING:
            if self.child is not None:
                return [ForwardUpgrade(self.child)]
            return []
        self.pending = True
        return self._maybe_start(now)

    def _on_app_ready(self, now: float) -> list[Action]:
        self.is_ready = True
        return self._maybe_start(now)

    def _on_parent_handed_over(self, now: float) -> list[Action]:
        if self.stage is Stage.WAITING_HANDOVER:
            self.stage = Stage.SERVING
        return self._maybe_start(now)

    def _on_child_started(self, ev: ChildStarted, now: float) -> list[Action]:
        self.child = ev.pid
        self.deadline = now + self.ready_timeout
        if ev.lowered:
            self.lowered_until = now + startup_grace(self.startup_grace, self.ready_timeout)
        return []

    def _on_child_sent_ready(self, ev: ChildSentReady, now: float) -> list[Action]:
        if ev.pid != self.child:
            return []
        actions: list[Action] = []
        if self.lowered_until is not None:  # it serves from now on: our priority back first
            self.lowered_until = None
            actions.append(LiftPriority(ev.pid))
        if self.stage is not Stage.UPGRADING:
            return actions
        if self.stable_time > 0:
            self.stage = Stage.CONFIRMING
            self.deadline = now + self.stable_time
            return actions
        return actions + self._hand_over()

    def _on_child_gone(self, ev: ChildGone, now: float) -> list[Action]:
        if ev.pid == self.stopping:  # it exited within its grace
            self.stopping = self.kill_at = None
            return self._maybe_start(now)
        if ev.pid != self.child or self.stage not in _ATTEMPT:
            return []
        when = "after READY" if self.stage is Stage.CONFIRMING else "before READY"
        how = "already reaped" if ev.status is None else describe_status(ev.status)
        # The process is gone already: reaped by the runner, nothing to kill.
        return self._fail(f"new generation pid {ev.pid} {how} {when}", None, now)

    def _on_handover_done(self, ev: HandoverDone) -> list[Action]:
        if ev.pid != self.child or self.stage not in _ATTEMPT:
            return []
        self.stage = Stage.EXITING
        self.deadline = None
        actions: list[Action] = [
            Outcome(True, f"upgraded: new generation pid {ev.pid} is serving", self.attempt),
            Finish(f"upgraded to pid {ev.pid}"),
        ]
        if self.pending:
            self.pending = False
            actions.append(ForwardUpgrade(ev.pid))
        return actions

    def _on_handover_failed(self, ev: HandoverFailed, now: float) -> list[Action]:
        if ev.pid != self.child or self.stage not in _ATTEMPT:
            return []
        return self._fail(f"handover to pid {ev.pid} failed: {ev.reason}", ev.pid, now)

    def _on_tick(self, now: float) -> list[Action]:
        out: list[Action] = []
        if self.kill_at is not None and now >= self.kill_at:
            assert self.stopping is not None
            out += [
                Log(
                    "warning",
                    f"new generation pid {self.stopping} still running {self.stop_grace:g} s"
                    " after the stop signal; sending SIGKILL",
                ),
                KillChild(self.stopping),  # carried out at once: killed and reaped
            ]
            self.stopping = self.kill_at = None
            out += self._maybe_start(now)
        return out + self._on_attempt_tick(now)

    def _on_attempt_tick(self, now: float) -> list[Action]:
        if self.deadline is not None and now >= self.deadline:
            if self.stage is Stage.UPGRADING:
                return self._fail(
                    f"new generation pid {self.child} not ready within {self.ready_timeout:g} s",
                    self.child,
                    now,
                )
            if self.stage is Stage.CONFIRMING and self.child is not None:
                return self._hand_over()
        if self.lowered_until is not None and now >= self.lowered_until:
            assert self.child is not None
            self.lowered_until = None
            grace = startup_grace(self.startup_grace, self.ready_timeout)
            return [
                Log(
                    "warning",
                    f"new generation pid {self.child} not ready {grace:g}s after its start at"
                    " a lower priority; it gets ours now (a busy host?)",
                ),
                LiftPriority(self.child),
            ]
        return []

    def _on_stop_asked(self, ev: StopAsked, now: float) -> list[Action]:
        actions: list[Action] = []
        if self.stage in _ATTEMPT and self.child is not None:
            actions += self._stop_child(self.child, now)
            actions.append(Outcome(False, f"upgrade aborted: {ev.reason}", self.attempt))
            self.child = None
            self.lowered_until = None
        if self.stage is not Stage.EXITING:
            self.stage = Stage.EXITING
            self.deadline = None
            actions.append(Finish(ev.reason))
        return actions

    # --- helpers -------------------------------------------------------------------------
    def _can_start(self) -> bool:
        return self.is_ready and self.stage is Stage.SERVING and self.stopping is None

    def _maybe_start(self, now: float) -> list[Action]:
        if not (self.pending and self._can_start()):
            return []
        self.pending = False
        self.stage = Stage.UPGRADING
        self.attempt += 1
        self.child = None
        self.deadline = now + self.ready_timeout
        # This generation serves while the child starts: the child yields the CPU to it.
        return [StartChild(self.attempt, lowered=True)]

    def _fail(self, text: str, alive: int | None, now: float) -> list[Action]:
        """The attempt failed; ``alive``: its child, still running (None: gone, or none)."""
        actions: list[Action] = [] if alive is None else self._stop_child(alive, now)
        actions.append(Outcome(False, f"upgrade failed: {text}; still serving", self.attempt))
        self.stage = Stage.SERVING
        self.child = None
        self.deadline = None
        self.lowered_until = None
        return actions + self._maybe_start(now)

    def _stop_child(self, pid: int, now: float) -> list[Action]:
        self.stopping = pid
        self.kill_at = now + self.stop_grace
        return [StopChild(pid, self.stop_signal)]

    def _hand_over(self) -> list[Action]:
        assert self.child is not None
        # The deadline stays armed until HandoverDone/HandoverFailed: the runner answers
        # HandOver at once, in the same turn.
        return [HandOver(self.child)]
