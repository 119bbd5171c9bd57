"""Small Linux helpers of the supervisor's runner: /proc, addresses."""

from __future__ import annotations

import socket

__all__ = [
    "parent_pid",
    "sockname",
]


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
