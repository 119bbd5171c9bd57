"""Generation plumbing shared by both handovers (``sdactivate run`` and the ``Upgrader``).

* :class:`NotifyInbox` -- the private ``NOTIFY_SOCKET`` a new generation reports to: one
  naming scheme, one receive rule, the sender's credentials checked before anything else,
  a bounded number of reads per loop turn, rate-limited log lines about what it drops;
* :class:`EventQueue` -- how a runner feeds events to its plan and carries out the actions;
* :func:`startup_grace` -- how long a new generation may start at the lower priority;
* :data:`UNREADY_GRACE` -- how long one that failed before its handover gets to stop;
* :func:`describe_status` -- the words for a reaped generation's exit status.
"""

from __future__ import annotations

import array
import contextlib
import logging
import os
import signal
import socket
import struct
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

from ._notify_wire import NOTIFY_BUFFER_MAX, NOTIFY_FD_MAX, parse_message
from .errors import NotifyValueError

__all__ = [
    "LOG_INTERVAL",
    "READS_PER_TURN",
    "UNREADY_GRACE",
    "Datagram",
    "EventQueue",
    "LogLimiter",
    "NotifyInbox",
    "describe_status",
    "receive",
    "startup_grace",
]

T = TypeVar("T")
E = TypeVar("E")
A = TypeVar("A")

# Datagrams read per loop turn: a flood of them (the socket's name is world-readable in
# /proc/net/unix) must not keep a loop from its signals, timers and control requests.
READS_PER_TURN = 32
LOG_INTERVAL = 10.0  # seconds: a dropped-datagram log line, then one summary per interval
# Seconds a new generation that failed before its handover (no READY=1 in time...) gets
# between the stop signal and SIGKILL. Servers often accept before READY=1; a SIGKILL at once
# reset the connections it had taken, where the stop signal lets it answer or close them.
# systemd itself stops a service whose start timed out the same way: TimeoutStartFailureMode=
# terminate (the default, v246+) sends the stop signal, then SIGKILL (systemd.service(5)).
UNREADY_GRACE = 5.0
_UCRED = struct.Struct("iII")  # unix(7) struct ucred: pid, uid, gid
_CMSG_SPACE = socket.CMSG_SPACE(_UCRED.size) + socket.CMSG_SPACE(NOTIFY_FD_MAX * 4)


def describe_status(status: int) -> str:
    """``os.waitstatus_to_exitcode`` value -> words (``exited with status 1``)."""
    if status < 0:
        try:
            name = signal.Signals(-status).name
        except ValueError:
            name = f"signal {-status}"
        return f"killed by {name}"
    return f"exited with status {status}"


def startup_grace(grace: float, ready_timeout: float) -> float:
    """How long a new generation stays at its start-up priority: ``grace``, but at most half
    of its ``ready_timeout`` (SCHED_IDLE on a busy host must not starve it past that)."""
    return min(grace, ready_timeout / 2)


class EventQueue(Generic[E, A]):
    """Hands each event to ``decide`` (a plan's or machine's ``handle``) and carries out the
    actions it returns with ``do``, in order. Events raised while carrying out actions (a
    child started, a spawn that failed at once...) wait until every action of the current
    event is done, so one event's actions never interleave with the next one's."""

    def __init__(self, decide: Callable[[E], Iterable[A]], do: Callable[[A], None]) -> None:
        self._decide = decide
        self._do = do
        self._events: deque[E] = deque()
        self._busy = False

    def feed(self, event: E) -> None:
        self._events.append(event)
        if self._busy:
            return
        self._busy = True
        try:
            while self._events:
                for action in self._decide(self._events.popleft()):
                    self._do(action)
        finally:
            self._busy = False


@dataclass(frozen=True)
class Datagram:
    pid: int  # the sender's, from SCM_CREDENTIALS (0: none attached)
    data: bytes
    truncated: bool  # MSG_TRUNC/MSG_CTRUNC: over NOTIFY_BUFFER_MAX bytes, or too many fds


def receive(sock: socket.socket) -> Datagram | None:
    """One queued datagram of a non-blocking SO_PASSCRED socket, or None when the queue is
    empty. Attached fds are closed at once: nothing is stored here, and closing is also how
    a ``BARRIER=1`` is answered (sd_notify(3)), in order, since datagrams are handled one by
    one."""
    try:
        data, ancdata, flags, _ = sock.recvmsg(NOTIFY_BUFFER_MAX, _CMSG_SPACE)
    except (BlockingIOError, InterruptedError):
        return None
    pid = 0
    fds = array.array("i")
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
            pid = _UCRED.unpack_from(payload)[0]
        elif level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)
    return Datagram(pid, data, bool(flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC)))


class LogLimiter:
    """Warnings of one kind: the first is logged, the rest counted until ``interval`` has
    passed, then one summary line says how many were left out. ``clock``: monotonic seconds."""

    def __init__(
        self,
        log: logging.Logger,
        *,
        interval: float = LOG_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = log
        self._interval = interval
        self._clock = clock
        self._windows: dict[str, tuple[float, int]] = {}  # kind -> (window end, left out)

    def warning(self, kind: str, message: str) -> None:
        now = self._clock()
        self.flush(now)
        window = self._windows.get(kind)
        if window is None:
            self._log.warning("%s", message)
            self._windows[kind] = (now + self._interval, 0)
        else:
            self._windows[kind] = (window[0], window[1] + 1)

    def flush(self, now: float | None = None, *, final: bool = False) -> None:
        """Write the summary of every window that has ended (``final``: of every window,
        when the inbox closes)."""
        now = self._clock() if now is None else now
        for kind, (end, left_out) in list(self._windows.items()):
            if now < end and not final:
                continue
            del self._windows[kind]
            if left_out:
                self._log.warning(
                    "%d more notify messages like the last one (%s) dropped in %g s",
                    left_out,
                    kind,
                    round(self._interval - max(0.0, end - now), 1),
                )

    def deadline(self) -> float | None:
        """When a summary is due (None: nothing left out), to bound a loop's sleep."""
        return min((end for end, n in self._windows.values() if n), default=None)


class NotifyInbox:
    """The private ``NOTIFY_SOCKET`` of the generations a process starts.

    An abstract AF_UNIX datagram socket ``@sdactivate-<kind>/<owner pid>/<random>`` with
    ``SO_PASSCRED``, so every datagram carries the sender's pid (unix(7)). Its name is
    world-readable in ``/proc/net/unix``, so anyone may send to it: :meth:`messages` checks
    the sender first, reads at most ``reads_per_turn`` datagrams per call and rate-limits
    its log lines about what it drops.
    """

    def __init__(
        self,
        kind: str,
        owner: int,
        *,
        log: logging.Logger,
        rcvbuf: int | None = None,
        reads_per_turn: int = READS_PER_TURN,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        # os.urandom, not secrets (the same source): importing secrets (hashlib, random)
        # costs ~4 MB of RSS and ~10 ms, in the supervisor and in every upgrading app.
        name = f"sdactivate-{kind}/{owner}/{os.urandom(8).hex()}"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
            if rcvbuf is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            sock.bind(b"\0" + name.encode())
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self.sock = sock
        self.address = "@" + name
        self.reads_per_turn = reads_per_turn
        self.limiter = LogLimiter(log, clock=clock)

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()
        self.limiter.flush(final=True)

    def messages(
        self, sender: Callable[[int], T | None]
    ) -> Iterator[tuple[T, list[tuple[str, str]]]]:
        """(sender, fields) of the datagrams queued now, at most ``reads_per_turn`` of them.

        ``sender(pid)`` names the sender, or None for one that may not report here: its
        datagram is dropped before anything else is done with it. Truncated datagrams
        (over ``NOTIFY_BUFFER_MAX`` bytes, or more fds than SCM_MAX_FD) are dropped whole,
        as PID 1 drops them (v252 manager.c), never parsed in part; so are malformed ones.
        """
        refused: set[int] = set()  # within one call: ask about a flooding pid once
        for _ in range(self.reads_per_turn):
            got = receive(self.sock)
            if got is None:
                return
            who = None if got.pid in refused else sender(got.pid)
            if who is None:
                refused.add(got.pid)
                self.limiter.warning(
                    "sender", f"notify message from pid {got.pid} ignored: not a generation"
                )
                continue
            if got.truncated:
                self.limiter.warning(
                    "truncated", f"notify message from pid {got.pid} truncated; ignored"
                )
                continue
            try:
                fields = parse_message(got.data)
            except NotifyValueError as exc:
                self.limiter.warning(
                    "malformed", f"malformed notify message from pid {got.pid}: {exc}"
                )
                continue
            yield who, fields
