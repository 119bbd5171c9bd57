"""What every adapter shares: which sockets, when to say READY/STOPPING, when to stop.

Not public: adapters import it; apps use the adapters.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterable, Sequence
from types import FrameType
from typing import TYPE_CHECKING, Any

from .._signals import STOP_SIGNALS, restored
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
    """

    def __init__(
        self, *, upgrader: Upgrader | None = None, signals: Iterable[int] = STOP_SIGNALS
    ) -> None:
        self.event = threading.Event()
        self.reason = ""
        self._saved: dict[int, Any] = {}
        self._signalled = False
        self._watcher: threading.Thread | None = None
        if upgrader is not None:
            self._watcher = threading.Thread(
                target=self._watch, args=(upgrader,), name="sdactivate-stop", daemon=True
            )
            self._watcher.start()
        elif threading.current_thread() is threading.main_thread():
            for signum in signals:
                self._saved[signum] = signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signalled = True
        self.set(f"signal {signal.Signals(signum).name}")

    def _watch(self, upgrader: Upgrader) -> None:
        upgrader.wait_exit()
        self.set(upgrader.exit_reason or "upgrader exit")

    def set(self, reason: str) -> None:
        if not self.event.is_set():
            self.reason = reason
            self.event.set()

    def wait(self, timeout: float | None = None) -> bool:
        return self.event.wait(timeout)

    def close(self) -> None:
        for signum, previous in self._saved.items():
            with contextlib.suppress(ValueError, TypeError):
                signal.signal(signum, restored(previous, self._signalled))
        self._saved.clear()
