"""sd_notify(3) in pure Python: tell the service manager about readiness, reloads, status.

Every call returns False and does nothing when ``NOTIFY_SOCKET`` is unset (not under a
manager that listens), True once the datagram is queued. True says nothing about
acceptance: the manager ignores what ``NotifyAccess=`` or ``Type=`` don't allow.

Values are validated before anything is sent (:class:`NotifyValueError`): keys are
``[A-Z0-9_]+``, values UTF-8 text or integers without newline, carriage return or NUL (the
manager splits on ``\\n`` and ``\\r``: no field injection), a datagram at most 4096 bytes
(longer ones are dropped whole by PID1), at most 253 fds. A send never blocks past
``SEND_TIMEOUT`` even when the manager's queue is full; then :class:`NotifyError`.
One sending socket is reused per process: safe across fork (the kernel stamps each
datagram with the sender's credentials) and re-checked before use (see ``_Sender``).

Try it by hand: ``systemd-run --user -p Type=notify python3 -c
'import sdactivate.notify as n; n.ready(status="up")'``.
"""

from __future__ import annotations

import _thread
import array
import atexit
import math
import os
import select
import socket
import time
from collections.abc import Iterable, Mapping

from . import _env
from ._notify_wire import NOTIFY_BUFFER_MAX, NOTIFY_FD_MAX, encode, notify_address, parse_message
from .errors import NotifyError, NotifyValueError

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (milliseconds)
if TYPE_CHECKING:
    from typing import TypeAlias

    from ._fdinfo import HasFileno
    from ._notify_wire import Fields

    Fd: TypeAlias = int | HasFileno

__all__ = [
    "MAX_EXTEND_TIMEOUT",
    "NOTIFY_BUFFER_MAX",
    "NOTIFY_FD_MAX",
    "SEND_TIMEOUT",
    "barrier",
    "encode",
    "errno",
    "extend_timeout",
    "mainpid",
    "parse_message",
    "ready",
    "reloading",
    "send",
    "status",
    "stopping",
    "watchdog",
    "watchdog_trigger",
]

SEND_TIMEOUT = 1.0  # seconds a send may wait for room in the manager's queue


# --- I/O ------------------------------------------------------------------------------


class _Sender:
    """The process's sending socket, reused across messages (sending is most of the cost).

    Safe across fork: the kernel stamps each datagram's credentials with the process that
    sends it, and the manager attributes messages by those (unix(7) SO_PASSCRED). Safe
    against fd recycling (a daemon that closes every fd and opens something else on the
    same number): before each use the fd must still be the same socket (st_dev, st_ino);
    if not, the number is no longer ours and is forgotten, never closed.
    """

    def __init__(self) -> None:
        self.sock: socket.socket | None = None
        self.ident = (0, 0)
        self.target = ""
        self.addr: str | bytes = ""
        self.lock = _thread.allocate_lock()
        self.atexit = False

    def get(self) -> socket.socket:
        sock = self.sock
        if sock is not None and self._ours(sock):
            return sock
        with self.lock:
            sock = self.sock
            if sock is not None and self._ours(sock):
                return sock
            if sock is not None:
                sock.detach()
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK)
            st = os.fstat(sock.fileno())
            self.ident = (st.st_dev, st.st_ino)
            self.sock = sock
            if not self.atexit:
                atexit.register(self.close)
                self.atexit = True
            return sock

    def _ours(self, sock: socket.socket) -> bool:
        try:
            st = os.fstat(sock.fileno())
        except OSError:
            return False
        return (st.st_dev, st.st_ino) == self.ident

    def address(self, target: str) -> str | bytes:
        if target != self.target:
            self.addr, self.target = notify_address(target), target
        return self.addr

    def close(self) -> None:
        with self.lock:
            sock, self.sock = self.sock, None
            if sock is not None:
                if self._ours(sock):
                    sock.close()
                else:
                    sock.detach()


_SENDER = _Sender()


def _deliver(target: str, data: bytes, fds: list[int], timeout: float) -> None:
    addr = _SENDER.address(target)
    try:
        sock = _SENDER.get()
        try:
            if fds:
                scm = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]
                sock.sendmsg([data], scm, 0, addr)
            else:
                sock.sendto(data, addr)
            return
        except BlockingIOError:
            pass  # the manager's queue is full: wait for room, up to the bound
        _deliver_slowly(target, addr, data, fds, timeout)
    except OSError as exc:
        raise NotifyError(f"cannot send to NOTIFY_SOCKET={target!r}: {exc.strerror}") from exc


def _deliver_slowly(
    target: str, addr: str | bytes, data: bytes, fds: list[int], timeout: float
) -> None:
    """Wait for room in the manager's queue, at most ``timeout`` seconds.

    poll(2) reports the receiver's queue only for a connected datagram socket, so this uses
    its own socket (connecting the shared one would break its later ``sendto``).
    """
    scm = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK) as sock:
        sock.connect(addr)
        deadline = time.monotonic() + timeout
        poller = select.poll()
        poller.register(sock, select.POLLOUT)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise NotifyError(
                    f"NOTIFY_SOCKET={target!r}: the manager's queue stayed full for {timeout}s"
                )
            poller.poll(math.ceil(remaining * 1000))
            try:
                sock.sendmsg([data], scm)
                return
            except BlockingIOError:
                continue


def _filenos(fds: Iterable[Fd]) -> list[int]:
    out = [fd if isinstance(fd, int) else fd.fileno() for fd in fds]
    if len(out) > NOTIFY_FD_MAX:
        raise NotifyValueError(f"{len(out)} fds in one notify message (at most {NOTIFY_FD_MAX})")
    for fd in out:
        if isinstance(fd, bool) or fd < 0:
            raise NotifyValueError(f"invalid fd {fd!r}")
    return out


def send(
    fields: Fields,
    *,
    fds: Iterable[Fd] = (),
    environ: Mapping[str, str] | None = None,
    timeout: float = SEND_TIMEOUT,
) -> bool:
    """Send ``fields`` (see :func:`encode`), with ``fds`` attached (``SCM_RIGHTS``) if any.

    For ``FDSTORE=1``/``FDNAME=``, ``FDSTOREREMOVE=1``, ``X_*`` extensions and anything
    without a helper. Returns False, doing nothing, if ``NOTIFY_SOCKET`` is unset; True once
    queued. Raises :class:`NotifyValueError` (bad fields, more than 253 fds) before
    sending, and :class:`NotifyError` (chained to the OSError) if ``NOTIFY_SOCKET`` is not a
    unix address, nobody listens there, or the queue stays full for ``timeout`` seconds.
    sd_pid_notify_with_fds(3).
    """
    data = encode(fields)
    fd_list = _filenos(fds) if fds else []
    target = _env.resolve(environ).get("NOTIFY_SOCKET")
    if target is None:
        return False
    _deliver(target, data, fd_list, timeout)
    return True


def ready(status: str | None = None, *, environ: Mapping[str, str] | None = None) -> bool:
    """``READY=1`` (and ``STATUS=``): start-up or a reload finished (``Type=notify``)."""
    return send(_with_status({"READY": "1"}, status), environ=environ)


def reloading(*, status: str | None = None, environ: Mapping[str, str] | None = None) -> bool:
    """``RELOADING=1`` with ``MONOTONIC_USEC=`` now: a reload began; send :func:`ready`
    when done. ``Type=notify-reload`` (v253+) needs the timestamp, or ``systemctl reload``
    hangs; older managers ignore it.
    """
    usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000  # sd_notify(3) MONOTONIC_USEC
    return send(_with_status({"RELOADING": "1", "MONOTONIC_USEC": usec}, status), environ=environ)


def stopping(*, status: str | None = None, environ: Mapping[str, str] | None = None) -> bool:
    """``STOPPING=1``: shutdown began. PID1 treats it like its own SIGTERM (arms
    ``TimeoutStopSec=``; final since v259): a process draining during an upgrade must not
    send it.
    """
    return send(_with_status({"STOPPING": "1"}, status), environ=environ)


def status(text: str, *, environ: Mapping[str, str] | None = None) -> bool:
    """``STATUS=text``: one line shown by ``systemctl status`` (UTF-8)."""
    return send({"STATUS": text}, environ=environ)


def watchdog(*, environ: Mapping[str, str] | None = None) -> bool:
    """``WATCHDOG=1``: the keep-alive ping for ``WatchdogSec=``."""
    return send({"WATCHDOG": "1"}, environ=environ)


def watchdog_trigger(*, environ: Mapping[str, str] | None = None) -> bool:
    """``WATCHDOG=trigger`` (v243+): fire the watchdog action now."""
    return send({"WATCHDOG": "trigger"}, environ=environ)


# systemd's usec_t (time-util.h): 64 bits, USEC_INFINITY = 2^64-1. service.c ignores an
# EXTEND_TIMEOUT_USEC= of USEC_INFINITY and cannot parse a larger one (v252).
_USEC_MAX = (1 << 64) - 2
MAX_EXTEND_TIMEOUT = _USEC_MAX // 1_000_000


def extend_timeout(seconds: float, *, environ: Mapping[str, str] | None = None) -> bool:
    """``EXTEND_TIMEOUT_USEC=`` (v236+): ask for ``seconds`` more in the current start,
    runtime or stop timeout; send it again before it runs out. ``NotifyValueError`` unless
    ``seconds`` is finite, positive and at most :data:`MAX_EXTEND_TIMEOUT` (about 584,000
    years: systemd's usec_t is 64 bits and the top value means infinity, which it ignores).
    """
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise NotifyValueError(f"extend_timeout({seconds!r}): seconds must be a number")
    if not 0 < seconds <= MAX_EXTEND_TIMEOUT:  # NaN and inf included
        raise NotifyValueError(
            f"extend_timeout({seconds!r}): seconds must be > 0 and <= {MAX_EXTEND_TIMEOUT:.0f}"
        )
    usec = min(max(1, math.ceil(seconds * 1_000_000)), _USEC_MAX)
    return send({"EXTEND_TIMEOUT_USEC": usec}, environ=environ)


def mainpid(pid: int, *, environ: Mapping[str, str] | None = None) -> bool:
    """``MAINPID=pid``: the service's main process is now ``pid`` (a hand-over). Follow it
    with :func:`barrier` before the sender exits so the manager attributes the message.
    """
    if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
        raise NotifyValueError(f"MAINPID={pid!r} is not a pid")
    return send({"MAINPID": pid}, environ=environ)


def errno(n: int, *, environ: Mapping[str, str] | None = None) -> bool:
    """``ERRNO=n``: the errno of a failure, shown as ``StatusErrno``."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise NotifyValueError(f"ERRNO={n!r} is not an errno value")
    return send({"ERRNO": n}, environ=environ)


def barrier(timeout: float | None = 5.0, *, environ: Mapping[str, str] | None = None) -> bool:
    """Wait until the manager has processed every message sent before (``BARRIER=1``, v246+).

    Sends ``BARRIER=1`` alone with the write end of a pipe and waits for the manager to
    close it (POLLHUP), at most ``timeout`` seconds (None: no limit). Use it before exiting
    after :func:`mainpid` or :func:`status`. Returns False if ``NOTIFY_SOCKET`` is unset;
    raises :class:`NotifyError` on timeout. sd_notify_barrier(3).
    """
    if timeout is not None and not (isinstance(timeout, int | float) and timeout >= 0):
        raise NotifyValueError(f"barrier timeout {timeout!r} must be >= 0 or None")
    target = _env.resolve(environ).get("NOTIFY_SOCKET")
    if target is None:
        return False
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    try:
        try:
            _deliver(target, b"BARRIER=1", [write_end], SEND_TIMEOUT)
        finally:
            os.close(write_end)  # only the manager's copy may keep the pipe open
        poller = select.poll()
        poller.register(read_end, 0)  # POLLHUP is always reported
        ms = -1 if timeout is None else math.ceil(timeout * 1000)
        if not poller.poll(ms):
            raise NotifyError(f"NOTIFY_SOCKET={target!r}: no BARRIER=1 answer within {timeout}s")
    finally:
        os.close(read_end)
    return True


def _with_status(fields: dict[str, str | int], status: str | None) -> dict[str, str | int]:
    if status is not None:
        fields["STATUS"] = status
    return fields
