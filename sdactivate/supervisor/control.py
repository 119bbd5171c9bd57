"""The supervisor's control socket: ``sdactivate reload --pid PID`` asks for a handover here.

Transport: an AF_UNIX stream socket in the abstract namespace named after the supervisor's pid
and pid namespace (``control_address``), so a client that knows ``$MAINPID`` finds it with no
file anywhere; two supervisors with the same pid in different pid namespaces cannot collide.
The client also checks the server's SO_PEERCRED pid. Only root or the supervisor's own uid
may send requests (SO_PEERCRED on accept).

Protocol: one JSON object per line each way. Requests: ``{"op": "reload"}`` (answered when the
handover succeeded or failed) and ``{"op": "status"}`` (answered at once). Answers:
``{"ok": bool, "generation": int|null, "pid": int|null, "message": str, ...}``.
"""

from __future__ import annotations

import json
import os
import socket
import struct
from typing import Any

__all__ = ["MAX_LINE", "Connection", "ControlServer", "control_address", "peer_credentials"]

MAX_LINE = 4096


def control_address(pid: int) -> bytes:
    """Abstract socket address of the supervisor with ``pid`` in this pid namespace."""
    ns = os.stat("/proc/self/ns/pid").st_ino
    return f"\0sdactivate-run/{ns}/{pid}".encode()


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the peer (unix(7) SO_PEERCRED)."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    return pid, uid, gid


class Connection:
    """One client: reads one request line, later gets one answer line."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._buf = b""

    def fileno(self) -> int:
        return self.sock.fileno()

    def read_request(self) -> dict[str, Any] | None:
        """The request once a whole line arrived; None while incomplete.

        Raises ``ValueError`` for a malformed request and ``EOFError`` if the peer left.
        """
        chunk = self.sock.recv(MAX_LINE)
        if not chunk:
            raise EOFError
        self._buf += chunk
        if b"\n" not in self._buf:
            if len(self._buf) > MAX_LINE:
                raise ValueError("request too long")
            return None
        line = self._buf.split(b"\n", 1)[0]
        request = json.loads(line)
        if not isinstance(request, dict) or not isinstance(request.get("op"), str):
            raise ValueError(f"bad request {line[:100]!r}")
        return request

    def answer(self, reply: dict[str, Any]) -> None:
        """Send the answer (best effort: a client that left is ignored) and close."""
        try:
            self.sock.setblocking(True)
            self.sock.settimeout(1.0)
            self.sock.sendall(json.dumps(reply).encode() + b"\n")
        except OSError:
            pass
        finally:
            self.sock.close()


class ControlServer:
    """The listening control socket of supervisor ``pid`` (bound at once, non-blocking)."""

    def __init__(self, pid: int) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            self.sock.bind(control_address(pid))
            self.sock.listen(16)
            self.sock.setblocking(False)
        except BaseException:
            self.sock.close()
            raise
        self._uid = os.geteuid()

    def fileno(self) -> int:
        return self.sock.fileno()

    def accept(self) -> Connection | None:
        """A new permitted connection, or None (nothing pending, or a refused peer)."""
        try:
            conn, _ = self.sock.accept()
        except (BlockingIOError, InterruptedError):
            return None
        _, uid, _ = peer_credentials(conn)
        if uid not in (0, self._uid):
            conn.close()
            return None
        conn.setblocking(False)
        return Connection(conn)

    def close(self) -> None:
        self.sock.close()
