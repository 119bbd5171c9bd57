"""The Upgrader's vocabulary: events the runner feeds to the plan, actions it returns.

Plain frozen values, like :mod:`sdactivate.supervisor.events`. The names differ from the
supervisor's where the meaning does: the supervisor numbers *generations* and spawns, kills
and promotes them by number; the Upgrader is one generation that runs numbered *attempts*
at starting its successor, whose *pid* it kills or lifts.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "Action",
    "AppReady",
    "ChildGone",
    "ChildSentReady",
    "ChildStartFailed",
    "ChildStarted",
    "Event",
    "Finish",
    "ForwardUpgrade",
    "HandOver",
    "HandoverDone",
    "HandoverFailed",
    "KillChild",
    "LiftPriority",
    "Log",
    "Outcome",
    "ParentHandedOver",
    "StartChild",
    "StopAsked",
    "StopChild",
    "Tick",
    "UpgradeRequested",
]


# --- events ------------------------------------------------------------------------------
@dataclass(frozen=True)
class UpgradeRequested:
    """An upgrade was asked for (SIGHUP, ``upgrade()``)."""


@dataclass(frozen=True)
class AppReady:
    """This generation serves (the app called ``ready()``)."""


@dataclass(frozen=True)
class ParentHandedOver:
    """The previous generation made us primary (or went away): we may upgrade in turn."""


@dataclass(frozen=True)
class ChildStarted:
    """The attempt's child runs as ``pid``; ``lowered``: at the start-up priority."""

    pid: int
    lowered: bool = False


@dataclass(frozen=True)
class ChildStartFailed:
    """The child could not even be executed."""

    reason: str


@dataclass(frozen=True)
class ChildSentReady:
    """``READY=1`` on the private notify socket, from ``pid``."""

    pid: int


@dataclass(frozen=True)
class ChildGone:
    """The child was reaped; ``status`` as ``os.waitstatus_to_exitcode`` (None: it had
    been reaped elsewhere)."""

    pid: int
    status: int | None


@dataclass(frozen=True)
class HandoverDone:
    """The runner made ``pid`` primary: this generation drains and exits."""

    pid: int


@dataclass(frozen=True)
class HandoverFailed:
    """The runner could not make ``pid`` primary (the notify transport failed...)."""

    pid: int
    reason: str


@dataclass(frozen=True)
class Tick:
    """Time passed: act on an expired deadline."""


@dataclass(frozen=True)
class StopAsked:
    """This generation should exit (SIGTERM, ``stop()``); a running upgrade is aborted."""

    reason: str


Event = (
    UpgradeRequested
    | AppReady
    | ParentHandedOver
    | ChildStarted
    | ChildStartFailed
    | ChildSentReady
    | ChildGone
    | HandoverDone
    | HandoverFailed
    | Tick
    | StopAsked
)


# --- actions -----------------------------------------------------------------------------
@dataclass(frozen=True)
class StartChild:
    """Run attempt ``attempt``: start the next generation (``lowered``: at the start-up
    priority); answer with :class:`ChildStarted` or :class:`ChildStartFailed`."""

    attempt: int
    lowered: bool = True


@dataclass(frozen=True)
class StopChild:
    """Send ``signum`` (the stop signal) to the attempt's child ``pid``, which failed or is
    aborted; keep watching it: its exit comes as :class:`ChildGone`, or the plan sends
    :class:`KillChild` when its grace is over."""

    pid: int
    signum: int


@dataclass(frozen=True)
class KillChild:
    """SIGKILL and reap the attempt's child ``pid``."""

    pid: int


@dataclass(frozen=True)
class LiftPriority:
    """Give ``pid`` this process's priority back: it is ready, or its start-up ran long."""

    pid: int


@dataclass(frozen=True)
class HandOver:
    """Make ``pid`` the primary: ``MAINPID=`` + barrier under systemd, then tell the child;
    answer with :class:`HandoverDone` or :class:`HandoverFailed`."""

    pid: int


@dataclass(frozen=True)
class ForwardUpgrade:
    """Send the queued upgrade request on to the new primary ``pid`` (SIGHUP)."""

    pid: int


@dataclass(frozen=True)
class Outcome:
    """Log and publish (``STATUS=``) how attempt ``attempt`` ended; answer its callers."""

    ok: bool
    text: str
    attempt: int


@dataclass(frozen=True)
class Log:
    level: str  # "info" | "warning" | "error"
    message: str


@dataclass(frozen=True)
class Finish:
    """This generation is done: ``wait_exit()`` returns with ``reason``."""

    reason: str


Action = (
    StartChild
    | StopChild
    | KillChild
    | LiftPriority
    | HandOver
    | ForwardUpgrade
    | Outcome
    | Log
    | Finish
)
