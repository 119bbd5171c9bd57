"""The in-process upgrader's decisions: a sans-I/O state machine (no sockets, no processes).

Invariants (tableflip-style):

- at most one upgrade at a time: a request while one runs is queued, and queued requests
  coalesce into one;
- a generation hands over only after it has called ``ready()`` itself (a child first needs
  its own handover from its parent);
- a child that exits, or is not ready within ``ready_timeout``, fails the upgrade: it is
  killed and this generation keeps serving;
- a ready child must stay alive for ``stable_time`` before the handover (a version that
  crashes right after READY is treated like one that never got ready);
- after the handover this generation only drains and exits: a request queued meanwhile is
  forwarded to the new generation, never run here.

The shell (:mod:`sdactivate.upgrade`) feeds events with a monotonic ``now`` and executes
the returned actions in order.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = [
    "Action",
    "Finish",
    "ForwardUpgrade",
    "HandOver",
    "Kill",
    "Phase",
    "Report",
    "Spawn",
    "UpgradePlan",
]


class Phase(enum.Enum):
    WAITING_HANDOVER = "waiting for the parent's handover"  # an upgrade child, not primary yet
    SERVING = "serving"
    UPGRADING = "upgrading"  # a child runs, not ready yet
    CONFIRMING = "confirming"  # the child is ready; waiting stable_time before the handover
    EXITING = "exiting"  # handed over, or stopped


@dataclass(frozen=True)
class Spawn:
    """Start the next generation; report back with :meth:`UpgradePlan.child_started`."""

    attempt: int


@dataclass(frozen=True)
class Kill:
    """SIGKILL and reap a failed child."""

    pid: int


@dataclass(frozen=True)
class HandOver:
    """Make ``pid`` the primary: ``MAINPID=`` + barrier under systemd, then tell the child."""

    pid: int


@dataclass(frozen=True)
class ForwardUpgrade:
    """Send the queued upgrade request on to the new primary ``pid`` (SIGHUP)."""

    pid: int


@dataclass(frozen=True)
class Report:
    """Log and publish (``STATUS=``) an outcome; ``ok`` False is a failed upgrade."""

    ok: bool
    text: str
    attempt: int


@dataclass(frozen=True)
class Finish:
    """This generation is done: ``wait_exit()`` returns with ``reason``."""

    reason: str


Action = Spawn | Kill | HandOver | ForwardUpgrade | Report | Finish


class UpgradePlan:
    """What the upgrader does next, given what happened. Times are monotonic seconds."""

    def __init__(self, *, has_parent: bool, ready_timeout: float, stable_time: float) -> None:
        if ready_timeout <= 0:
            raise ValueError(f"ready_timeout must be > 0, got {ready_timeout!r}")
        if stable_time < 0:
            raise ValueError(f"stable_time must be >= 0, got {stable_time!r}")
        self.ready_timeout = ready_timeout
        self.stable_time = stable_time
        self.phase = Phase.WAITING_HANDOVER if has_parent else Phase.SERVING
        self.is_ready = False  # this generation called ready()
        self.pending = False  # an upgrade request is queued
        self.child: int | None = None
        self.attempt = 0  # number of the running (or last) attempt
        self.deadline: float | None = None

    # --- events --------------------------------------------------------------------------
    def request_upgrade(self, now: float) -> list[Action]:
        """An upgrade was asked for (SIGHUP, ``upgrade()``)."""
        if self.phase is Phase.EXITING:
            if self.child is not None:
                return [ForwardUpgrade(self.child)]
            return []
        self.pending = True
        return self._maybe_start(now)

    def ready(self, now: float) -> list[Action]:
        """This generation serves (the app called ``ready()``)."""
        self.is_ready = True
        return self._maybe_start(now)

    def handed_over(self, now: float) -> list[Action]:
        """The parent made us primary (or went away): upgrades are allowed from now on."""
        if self.phase is Phase.WAITING_HANDOVER:
            self.phase = Phase.SERVING
        return self._maybe_start(now)

    def child_started(self, pid: int, now: float) -> list[Action]:
        self.child = pid
        self.deadline = now + self.ready_timeout
        return []

    def spawn_failed(self, text: str, now: float) -> list[Action]:
        """The child could not even be executed."""
        return self._fail(f"cannot start the new generation: {text}", None, now)

    def child_ready(self, pid: int, now: float) -> list[Action]:
        if self.phase is not Phase.UPGRADING or pid != self.child:
            return []
        if self.stable_time > 0:
            self.phase = Phase.CONFIRMING
            self.deadline = now + self.stable_time
            return []
        return self._hand_over()

    def child_exited(self, pid: int, status: str, now: float) -> list[Action]:
        if pid != self.child or self.phase not in (Phase.UPGRADING, Phase.CONFIRMING):
            return []
        when = "after READY" if self.phase is Phase.CONFIRMING else "before READY"
        # The process is gone already: reaped by the shell, nothing to kill.
        return self._fail(f"new generation pid {pid} exited {when} ({status})", None, now)

    def handover_done(self, pid: int) -> list[Action]:
        """The shell made ``pid`` primary: this generation drains and exits."""
        if pid != self.child or self.phase not in (Phase.UPGRADING, Phase.CONFIRMING):
            return []
        self.phase = Phase.EXITING
        actions: list[Action] = [
            Report(True, f"upgraded: new generation pid {pid} is serving", self.attempt),
            Finish(f"upgraded to pid {pid}"),
        ]
        if self.pending:
            self.pending = False
            actions.append(ForwardUpgrade(pid))
        return actions

    def handover_failed(self, pid: int, text: str, now: float) -> list[Action]:
        """The shell could not make the child primary (notify transport failed...)."""
        if pid != self.child or self.phase not in (Phase.UPGRADING, Phase.CONFIRMING):
            return []
        return self._fail(f"handover to pid {pid} failed: {text}", pid, now)

    def tick(self, now: float) -> list[Action]:
        """Time passed; act on an expired deadline."""
        if self.deadline is None or now < self.deadline:
            return []
        if self.phase is Phase.UPGRADING:
            return self._fail(
                f"new generation pid {self.child} not ready within {self.ready_timeout:g} s",
                self.child,
                now,
            )
        if self.phase is Phase.CONFIRMING:
            return self._hand_over()
        return []

    def stop(self, reason: str) -> list[Action]:
        """This generation should exit (SIGTERM, ``stop()``); a running upgrade is aborted."""
        actions: list[Action] = []
        if self.phase in (Phase.UPGRADING, Phase.CONFIRMING) and self.child is not None:
            actions.append(Kill(self.child))
            actions.append(Report(False, f"upgrade aborted: {reason}", self.attempt))
            self.child = None
        if self.phase is not Phase.EXITING:
            self.phase = Phase.EXITING
            self.deadline = None
            actions.append(Finish(reason))
        return actions

    # --- helpers -------------------------------------------------------------------------
    def _maybe_start(self, now: float) -> list[Action]:
        if not (self.pending and self.is_ready and self.phase is Phase.SERVING):
            return []
        self.pending = False
        self.phase = Phase.UPGRADING
        self.attempt += 1
        self.child = None
        self.deadline = now + self.ready_timeout
        return [Spawn(self.attempt)]

    def _fail(self, text: str, kill: int | None, now: float) -> list[Action]:
        actions: list[Action] = []
        if kill is not None:
            actions.append(Kill(kill))
        actions.append(Report(False, f"upgrade failed: {text}; still serving", self.attempt))
        self.phase = Phase.SERVING
        self.child = None
        self.deadline = None
        return actions + self._maybe_start(now)

    def _hand_over(self) -> list[Action]:
        assert self.child is not None
        self.deadline = None
        return [HandOver(self.child)]
