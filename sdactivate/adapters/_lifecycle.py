"""What every adapter shares: which sockets, when to say READY/STOPPING, when to stop.

Not public: adapters import it; apps use the adapters.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import select
import signal
import threading
import time
from collections.abc import Iterable, Sequence
from types import FrameType
from typing import TYPE_CHECKING, Any

from .._signals import (
    STOP_SIGNALS,
    claim_wakeup_fd,
    release_wakeup_fd,
    restored,
    threads_without_stop_signals,
)
from ..errors import ActivationError, NotifyError

if TYPE_CHECKING:
    import socket

    from ..upgrade import Upgrader

__all__ = [
    "DEFAULT_DRAIN_TIMEOUT",
    "StopTrigger",
    "announce_ready",
    "announce_stopping",
    "backlog_of",
    "pick",
]

log = logging.getLogger("sdactivate.adapters")

DEFAULT_DRAIN_TIMEOUT = 30.0  # seconds; below systemd's DefaultTimeoutStopSec=90s
_EXTEND_MARGIN = 5.0  # seconds beyond the drain deadline asked from PID 1
# seconds between looks for a stop signal while the app holds the wakeup fd (StopTrigger)
_FALLBACK_POLL = 0.1


def pick(sockets: Sequence[socket.socket] | None, upgrader: Upgrader | None) -> list[socket.socket]:
    """The sockets to serve: given ones, else the upgrader's, else ``LISTEN_FDS``.

    Raises :class:`~sdactivate.ActivationError` when there is none (not socket-activated).
    """
    if sockets is not None:
        chosen = list(sockets)
    elif upgrader is not None:
        chosen = upgrader.sockets()
    else:
        from .. import activation

        chosen = activation.listeners()
    if not chosen:
        raise ActivationError(
            "no listening sockets: not socket-activated (LISTEN_FDS unset); pass sockets= "
            "or run under systemd-socket-activate / sdactivate run"
        )
    return chosen


def backlog_of(socks: Sequence[socket.socket]) -> int:
    """The largest backlog the sockets already have, for servers that re-``listen()``.

    asyncio, uvicorn, hypercorn, waitress and gunicorn call ``listen(backlog)`` on the
    sockets they are given; passing this keeps the socket unit's ``Backlog=`` (never a
    smaller one). TCP reports it in ``TCP_INFO`` (tcp_get_info(): ``tcpi_sacked`` holds
    ``sk_max_ack_backlog`` on a listening socket); for other families the kernel cap
    ``net.core.somaxconn`` is used: listen(2) never grants more than that anyway.
    """
    import socket as socket_module
    import struct

    best = 0
    for sock in socks:
        if sock.family in (socket_module.AF_INET, socket_module.AF_INET6):
            try:
                info = sock.getsockopt(socket_module.IPPROTO_TCP, socket_module.TCP_INFO, 104)
                best = max(best, struct.unpack_from("8B6I", info)[13])
                continue
            except (OSError, struct.error):
                pass
        best = max(best, _somaxconn())
    return best or _somaxconn()


def _somaxconn() -> int:
    try:
        with open("/proc/sys/net/core/somaxconn") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 4096  # the kernel default since 5.4


def announce_ready(upgrader: Upgrader | None, status: str | None) -> None:
    """READY=1 (through the upgrader when there is one: it may be talking to a parent)."""
    if upgrader is not None:
        upgrader.ready(status=status)
        return
    from .. import notify

    notify.ready(status=status)


def announce_stopping(drain_timeout: float) -> None:
    """STOPPING=1 plus ``EXTEND_TIMEOUT_USEC`` covering the drain (sd_notify(3), v236+).

    A failure to notify never prevents the drain: it is logged.
    """
    from .. import notify

    usec = int((drain_timeout + _EXTEND_MARGIN) * 1_000_000)
    try:
        notify.send({"STOPPING": 1, "EXTEND_TIMEOUT_USEC": usec})
    except NotifyError as exc:
        log.warning("could not send STOPPING=1: %s", exc)


class StopTrigger:
    """Set when the server should stop: SIGTERM/SIGINT, the upgrader's exit, or :meth:`set`.

    With an upgrader, its own stop signals apply (it handles SIGTERM). Otherwise the signal
    handlers are installed here (main thread only) and restored by :meth:`close`; after a
    stop signal, a default disposition comes back as "ignore" (a repeat must not kill the
    drained process while it exits: :func:`~sdactivate._signals.restored`).

    :meth:`wait` sleeps in ``poll()`` on a pipe, never in a lock: Python runs signal handlers
    in the main thread only, and a stop signal that another thread took (the kernel gives a
    process-directed signal to any thread not blocking it; signal(7)) does not interrupt a
    lock's wait, so ``Event.wait()`` slept on past it until SIGKILL (issue 16). The pipe is
    the process's wakeup fd (``signal.set_wakeup_fd``), which CPython's C handler writes in
    whichever thread ran it: the wait ends as soon as the main thread gets the GIL back. If
    the app holds the wakeup fd, the wait looks for a signal every ``_FALLBACK_POLL`` s.
    The handler only stores a flag and writes to the pipe. It may interrupt the main thread
    anywhere, so it takes no lock that thread could be holding but a reentrant one
    (``Event.set()`` from a handler deadlocks when the signal lands while the main thread
    is inside ``Event.wait()``, which holds the event's plain lock on its way in and out).
    """

    def __init__(
        self, *, upgrader: Upgrader | None = None, signals: Iterable[int] = STOP_SIGNALS
    ) -> None:
        self.reason = ""
        self._set = False
        self._saved: dict[int, Any] = {}
        self._signalled = False
        self._wakeup = False  # our pipe is the process's wakeup fd
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._pipe_lock = threading.RLock()  # set() from other threads vs close()
        self._watcher: threading.Thread | None = None
        if upgrader is not None:
            self._watcher = threading.Thread(
                target=self._watch, args=(upgrader,), name="sdactivate-stop", daemon=True
            )
            with threads_without_stop_signals():  # signals are the upgrader's business
                self._watcher.start()
        elif threading.current_thread() is threading.main_thread():
            self._wakeup = claim_wakeup_fd(self._wake_w)
            for signum in signals:
                self._saved[signum] = signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signalled = True
        self.set(f"signal {signal.Signals(signum).name}")

    def _watch(self, upgrader: Upgrader) -> None:
        upgrader.wait_exit()
        self.set(upgrader.exit_reason or "upgrader exit")

    def _mark(self, reason: str) -> None:
        if not self._set:
            self.reason = reason
            self._set = True

    def set(self, reason: str) -> None:
        """Stop, for ``reason`` (the first one given is kept). Any thread, or a handler."""
        self._mark(reason)
        with self._pipe_lock:  # reentrant: a handler may run inside set() in the main thread
            if self._wake_w >= 0:
                with contextlib.suppress(BlockingIOError):  # full: the waiter wakes anyway
                    os.write(self._wake_w, b"\0")  # 0: not a signal number

    def is_set(self) -> bool:
        return self._set

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until set (or ``timeout`` seconds): True if it is."""
        deadline = None if timeout is None else time.monotonic() + timeout
        poll_every = _FALLBACK_POLL if self._saved and not self._wakeup else None
        poller = select.poll()
        poller.register(self._wake_r, select.POLLIN)
        while not self._set:
            wait = poll_every
            if deadline is not None:
                left = max(0.0, deadline - time.monotonic())
                wait = left if wait is None else min(wait, left)
            if poller.poll(None if wait is None else math.ceil(wait * 1000)):
                self._take_wakeups()
            elif deadline is not None and time.monotonic() >= deadline:
                break
            # Back in Python code: the interpreter runs pending handlers in this thread now.
        return self._set

    def _take_wakeups(self) -> None:
        with contextlib.suppress(BlockingIOError):
            for signum in os.read(self._wake_r, 4096):
                if signum in self._saved:  # the C handler's byte: ours is a stop signal
                    self._signalled = True
                    self._mark(f"signal {signal.Signals(signum).name}")

    def close(self) -> None:
        """Put the signal handlers and the wakeup fd back, release the pipe."""
        for signum, previous in self._saved.items():
            with contextlib.suppress(ValueError, TypeError):
                signal.signal(signum, restored(previous, self._signalled))
        self._saved.clear()
        if self._wakeup:
            release_wakeup_fd(self._wake_w)
            self._wakeup = False
        with self._pipe_lock:
            for fd in (self._wake_r, self._wake_w):
                if fd >= 0:
                    os.close(fd)
            self._wake_r = self._wake_w = -1
