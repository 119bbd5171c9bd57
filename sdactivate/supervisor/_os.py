"""Small Linux helpers of the supervisor's runner: notify datagrams, /proc, addresses."""

from __future__ import annotations

import array
import contextlib
import logging
import os
import socket
import struct

from .._notify_wire import NOTIFY_BUFFER_MAX, NOTIFY_FD_MAX

__all__ = [
    "parent_pid",
    "receive_notify",
    "sockname",
]

log = logging.getLogger("sdactivate.supervisor")

_UCRED = struct.Struct("iII")  # unix(7) struct ucred: pid, uid, gid
_CMSG_SPACE = socket.CMSG_SPACE(_UCRED.size) + socket.CMSG_SPACE(NOTIFY_FD_MAX * 4)


def receive_notify(sock: socket.socket) -> tuple[int, bytes, bool] | None:
    """One queued datagram of a non-blocking SO_PASSCRED socket: (sender pid, payload,
    truncated), or None when the queue is empty. Attached fds are closed at once: nothing
    is stored here, and closing is also how a ``BARRIER=1`` is answered (sd_notify(3)),
    in order, since datagrams are handled one by one."""
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
    return pid, data, bool(flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC))


def parent_pid(pid: int) -> int | None:
    """The parent of ``pid`` (proc(5) /proc/PID/stat field 4), None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        return int(stat[stat.rindex(b")") + 2 :].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def sockname(sock: socket.socket) -> str:
    """A socket's local address in listen-address syntax (``127.0.0.1:80``, ``@name``)."""
    try:
        name = sock.getsockname()
    except OSError:
        return "?"
    if isinstance(name, tuple):
        host, port = name[:2]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if isinstance(name, bytes):  # abstract
        return "@" + name[1:].decode(errors="replace")
    return str(name)
