"""What the notify receiver records, and PID1's transport checks as a pure function.

No I/O: :mod:`sdactivate.testing.receiver` reads the socket and applies these.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

from .._notify_wire import NOTIFY_BUFFER_MAX  # PID1 drops longer datagrams whole

__all__ = ["NOTIFY_BUFFER_MAX", "NOTIFY_FD_MAX", "Dropped", "Message", "check_datagram"]

NOTIFY_FD_MAX = 768  # constants.h: the manager's control buffer


@dataclass(frozen=True)
class Message:
    """An accepted notify datagram: its fields in order and the sender's credentials."""

    pid: int
    uid: int
    gid: int
    fields: tuple[tuple[str, str], ...]
    nfds: int = 0

    def get(self, key: str, default: str | None = None) -> str | None:
        """The first value for ``key`` (PID1 uses the first match too)."""
        for k, v in self.fields:
            if k == key:
                return v
        return default

    def __contains__(self, key: object) -> bool:
        return any(k == key for k, _ in self.fields)

    def has(self, key: str, value: str | None = None) -> bool:
        return any(k == key and (value is None or v == value) for k, v in self.fields)


@dataclass(frozen=True)
class Dropped:
    """A datagram the manager would ignore, and why."""

    reason: str
    pid: int | None
    data: bytes
    nfds: int


def check_datagram(data: bytes, flags: int, pid: int | None) -> str | None:
    """PID1's transport checks, as a pure function: a drop reason, or None to accept.

    ``flags`` are recvmsg's msg_flags; ``pid`` is from SCM_CREDENTIALS (None: none came).
    """
    if flags & socket.MSG_TRUNC:
        return f"longer than {NOTIFY_BUFFER_MAX} bytes"  # v252 manager.c: dropped whole
    if flags & socket.MSG_CTRUNC:
        return "control data truncated"
    if pid is None or pid <= 0:
        return "no credentials"  # "Received notify message without valid credentials"
    body = data[:-1] if data.endswith(b"\0") else data  # one trailing NUL is tolerated
    if b"\0" in body:
        return "embedded NUL byte"
    return None
