"""The Upgrader's I/O shell: one thread with a ``poll`` loop around :class:`~.plan.UpgradePlan`.

Everything it waits on is a file descriptor: commands from the app's threads and signal
numbers come through a wake-up pipe (:class:`Mailbox`), the parent's handover through the
inherited control socket, the child's READY=1 through its notify inbox, its exit through its
pidfd. The plan's deadlines bound the ``poll`` timeout. Events raised while carrying out
actions (``ChildStarted`` from a ``StartChild``...) are queued until every action of the
current event is done, as in :mod:`sdactivate.supervisor.runner`.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import select
import threading
import time
from collections.abc import MutableMapping, Sequence
from typing import Any, assert_never

from .. import _pidfd
from .._generation import EventQueue
from .._priority import renice_tree
from ..errors import NotifyError, SdActivateError
from . import events as ev
from .attempt import Attempt, start_attempt
from .link import HANDOVER, ParentLink, recv_some
from .plan import Stage, UpgradePlan
from .signals import SignalOwner
from .sockets import SocketSet
from .waiters import Waiter, Waiters

__all__ = ["Mailbox", "Runner"]

log = logging.getLogger("sdactivate.upgrade")


class Mailbox:
    """Commands for the runner's thread, posted from any thread or a signal handler."""

    def __init__(self) -> None:
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._commands: collections.deque[tuple[str, Any]] = collections.deque()

    def post(self, command: str, arg: Any, *, wake: bool = True) -> None:
        # Safe from signal handlers: deque.append is atomic, the pipe write never blocks.
        self._commands.append((command, arg))
        if wake:
            with contextlib.suppress(BlockingIOError, OSError):
                os.write(self.wake_w, b"\0")

    def take(self) -> tuple[str, Any] | None:
        return self._commands.popleft() if self._commands else None

    def close(self) -> None:
        os.close(self.wake_r)
        os.close(self.wake_w)


class Runner:
    """The worker thread's state: the plan, the running attempt, the waiting callers."""

    def __init__(
        self,
        *,
        plan: UpgradePlan,
        mailbox: Mailbox,
        signals: SignalOwner,
        env: MutableMapping[str, str],
        sockets: SocketSet,
        argv: Sequence[str],
        cwd: str,
        startup_nice: int,
        upgrade_signal: int | None,
        parent: ParentLink | None,
    ) -> None:
        self.plan = plan
        self._mailbox = mailbox
        self._signals = signals
        self._env = env
        self._sockets = sockets
        self._argv = list(argv)
        self._cwd = cwd
        self._startup_nice = startup_nice
        self._upgrade_signal = upgrade_signal
        self._parent_ctl = parent.ctl if parent else None
        self._systemd_notify = parent.systemd_notify if parent else None
        self._attempt: Attempt | None = None
        self._waiters = Waiters()
        self._events: EventQueue[ev.Event, ev.Action] = EventQueue(
            lambda event: self.plan.handle(event, time.monotonic()), self._do
        )
        self.exited = threading.Event()
        self.exit_reason: str | None = None
        self.last_error: str | None = None

    # --- the loop ------------------------------------------------------------------------
    def run(self) -> None:
        poller = select.poll()
        registered: set[int] = set()
        while True:
            wanted = {self._mailbox.wake_r}
            if self._parent_ctl is not None:
                wanted.add(self._parent_ctl.fileno())
            if self._attempt is not None:
                wanted |= {self._attempt.inbox.fileno(), self._attempt.pidfd}
            for fd in registered - wanted:
                poller.unregister(fd)
            for fd in wanted - registered:
                poller.register(fd, select.POLLIN)
            registered = wanted
            events = poller.poll(self._poll_timeout())
            try:
                if self._step({fd for fd, _ in events}):
                    break
            except Exception:  # a bug here must not leave wait_exit() hanging forever
                log.exception("upgrader failed")
                self._kill_attempt()
                self._finish("upgrader failed")
                break
        self._waiters.resolve_all("upgrader closed")

    def _poll_timeout(self) -> int | None:
        """Milliseconds until the plan's next deadline or a due log summary (None: none)."""
        wake = self.plan.wake_at()
        due = [] if wake is None else [wake]
        if self._attempt is not None and (summary := self._attempt.inbox.limiter.deadline()):
            due.append(summary)  # a summary of dropped notify messages
        if not due:
            return None
        return int(max(0.0, (min(due) - time.monotonic()) * 1000)) + 1

    def _step(self, ready_fds: set[int]) -> bool:
        """Handle one wake-up; True when the worker should end."""
        if self._mailbox.wake_r in ready_fds:
            with contextlib.suppress(BlockingIOError):
                for signum in os.read(self._mailbox.wake_r, 4096):  # 0: a posted command
                    if (posted := self._signals.from_wakeup(signum)) is not None:
                        self._mailbox.post(*posted, wake=False)  # handled just below
        while (command := self._mailbox.take()) is not None:
            name, arg = command
            if name == "close":
                self._close_attempt()
                return True
            if name == "upgrade":
                log.info("upgrade requested (%s)", arg if isinstance(arg, str) else "upgrade()")
                if isinstance(arg, Waiter):  # a signal: nobody waits
                    self._add_waiter(arg)
                self._feed(ev.UpgradeRequested())
            elif name == "ready":
                self._feed(ev.AppReady())
            elif name == "stop":
                self._feed(ev.StopAsked(str(arg)))
            else:
                raise AssertionError(name)
        if self._parent_ctl is not None and self._parent_ctl.fileno() in ready_fds:
            data = recv_some(self._parent_ctl)
            if data.startswith(HANDOVER):
                self._became_primary("handover from the previous generation")
            elif not data:
                self._became_primary("the previous generation went away before the handover")
        attempt = self._attempt
        if attempt is not None and attempt.inbox.fileno() in ready_fds and attempt.ready_sent():
            self._feed(ev.ChildSentReady(attempt.pid))
        attempt = self._attempt
        if attempt is not None and attempt.pidfd in ready_fds:
            status = attempt.reap()
            self._drop_attempt()  # before reporting: the outcome is final once it is published
            self._feed(ev.ChildGone(attempt.pid, status))
        if self._attempt is not None:
            self._attempt.inbox.limiter.flush()
        self._feed(ev.Tick())
        return False

    def _feed(self, event: ev.Event) -> None:
        """Hand ``event`` to the plan and carry out its actions, in order (see the module)."""
        self._events.feed(event)

    def _do(self, action: ev.Action) -> None:
        match action:
            case ev.StartChild():
                self._start_child(action.attempt, lowered=action.lowered)
            case ev.StopChild():
                if self._attempt is not None and self._attempt.pid == action.pid:
                    # Kept (its pidfd polled) until it exits: ChildGone, or KillChild.
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(action.pid, action.signum)
            case ev.KillChild():
                if self._attempt is not None and self._attempt.pid == action.pid:
                    self._kill_attempt()
            case ev.LiftPriority():
                if self._attempt is not None and self._attempt.pid == action.pid:
                    attempt = self._attempt
                    renice_tree(attempt.pid, attempt.base_nice, policy=attempt.base_policy)
            case ev.HandOver():
                self._hand_over(action.pid)
            case ev.ForwardUpgrade():
                self._forward(action.pid)
            case ev.Outcome():
                self._outcome(action)
            case ev.Log():
                getattr(log, action.level)("%s", action.message)
            case ev.Finish():
                self._finish(action.reason)
            case _:
                assert_never(action)

    # --- actions -------------------------------------------------------------------------
    def _start_child(self, number: int, *, lowered: bool) -> None:
        try:
            attempt = start_attempt(
                self._argv,
                self._sockets.snapshot(),
                env=self._env,
                cwd=self._cwd,
                startup_nice=self._startup_nice if lowered else 0,
            )
        except (SdActivateError, OSError) as exc:
            self._feed(ev.ChildStartFailed(str(exc)))
            return
        log.info("upgrade %d: started new generation pid %d", number, attempt.pid)
        self._attempt = attempt
        self._feed(ev.ChildStarted(attempt.pid, attempt.lowered))

    def _hand_over(self, pid: int) -> None:
        from .. import notify

        attempt = self._attempt
        assert attempt is not None and attempt.pid == pid
        try:
            fields: dict[str, str | int] = {"MAINPID": pid}
            # sd_notify(3) v257: MAINPIDFD=1 with the child's pidfd attached takes precedence
            # over MAINPID= and names that very process; MAINPIDFDID= (its pidfs inode id,
            # kernel 6.9+) makes PID 1 refuse MAINPID= if the pid is another process by then.
            # Before 257 both are unknown: MAINPID= applies, the fd is closed, nothing is
            # logged (measured on 252 and 254; integration/test_versions_e2e.py).
            fdid = _pidfd.inode_id(attempt.pidfd)
            if fdid is not None:
                fields["MAINPIDFDID"] = fdid
            fields["MAINPIDFD"] = 1
            fields["STATUS"] = f"serving, pid {pid} (upgraded from {os.getpid()})"
            if notify.send(fields, fds=[attempt.pidfd], environ=self._env):
                notify.barrier(environ=self._env)  # PID 1 processed MAINPID before we go on
            attempt.ctl.sendall(HANDOVER)
        except (NotifyError, OSError) as exc:
            with contextlib.suppress(NotifyError, OSError):
                notify.send({"MAINPID": os.getpid()}, environ=self._env)
            self._feed(ev.HandoverFailed(pid, str(exc)))
            return
        # Mute: a draining old generation must never reach PID 1 (STOPPING=1 would stop
        # the unit). sd_notify(3) calls after this are no-ops.
        self._env.pop("NOTIFY_SOCKET", None)
        self._drop_attempt()  # the child is the primary now: never killed or reaped here
        self._feed(ev.HandoverDone(pid))

    def _forward(self, pid: int) -> None:
        if self._upgrade_signal is None:
            log.warning("queued upgrade dropped: no upgrade signal to forward to pid %d", pid)
            self._waiters.resolve(self.plan.attempt + 1, None, "upgrade signals disabled")
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, self._upgrade_signal)
        log.info("queued upgrade forwarded to the new generation pid %d", pid)
        self._waiters.resolve(self.plan.attempt + 1, pid, None)

    def _outcome(self, outcome: ev.Outcome) -> None:
        from .. import notify

        if outcome.ok:
            log.info("%s", outcome.text)
            self._waiters.resolve(outcome.attempt, self.plan.child, None)
            return
        log.warning("%s", outcome.text)
        self.last_error = outcome.text
        if self.plan.stage is not Stage.WAITING_HANDOVER:
            with contextlib.suppress(NotifyError):
                notify.status(outcome.text, environ=self._env)
        self._waiters.resolve(outcome.attempt, None, outcome.text)

    def _finish(self, reason: str) -> None:
        if not self.exited.is_set():
            self.exit_reason = reason
            log.info("generation pid %d exits: %s", os.getpid(), reason)
            self.exited.set()

    def close(self) -> None:
        """After the thread ended: close what it may have left open."""
        if self._parent_ctl is not None:
            self._parent_ctl.close()
            self._parent_ctl = None

    # --- helpers -------------------------------------------------------------------------
    def _became_primary(self, why: str) -> None:
        """Point NOTIFY_SOCKET back at systemd's (or nowhere): we are the main process now."""
        if self._systemd_notify:
            self._env["NOTIFY_SOCKET"] = self._systemd_notify
        else:
            self._env.pop("NOTIFY_SOCKET", None)
        if self._parent_ctl is not None:
            self._parent_ctl.close()
            self._parent_ctl = None
        log.info("now the primary generation (pid %d): %s", os.getpid(), why)
        self._feed(ev.ParentHandedOver())

    def _add_waiter(self, waiter: Waiter) -> None:
        if self.plan.stage is Stage.EXITING and self.plan.child is None:
            waiter.resolve(None, f"this generation is exiting ({self.exit_reason})")
            return
        self._waiters.add(self.plan.attempt + 1, waiter)

    def _close_attempt(self) -> None:
        """The upgrader closes: a child still stopping gets the rest of its grace to exit."""
        attempt, kill_at = self._attempt, self.plan.kill_at
        if attempt is not None and kill_at is not None and attempt.pid == self.plan.stopping:
            timeout = max(0.0, kill_at - time.monotonic())
            select.select([attempt.pidfd], [], [], timeout)
        self._kill_attempt()

    def _kill_attempt(self) -> None:
        if self._attempt is not None:
            self._attempt.kill()
            self._attempt = None

    def _drop_attempt(self) -> None:
        if self._attempt is not None:
            self._attempt.close()
            self._attempt = None
