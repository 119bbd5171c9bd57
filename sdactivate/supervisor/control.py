"""The supervisor's control socket: ``sdactivate reload --pid PID`` asks for a handover here.

Where: a path socket named ``control`` in a directory of its own that only the supervisor's
user may enter: ``sdactivate-control.<random>``, mode 0700, made at start in
``$RUNTIME_DIRECTORY`` (systemd.exec(5) RuntimeDirectory=), else ``$XDG_RUNTIME_DIR``, else
``$TMPDIR`` or ``/tmp`` (private to the unit under PrivateTmp=). So no other user can name it
in advance (nothing to squat), and another user's connect(2) fails on the directory's
permission (unix(7): connecting needs search permission on every directory of the path)
before it takes a slot in the backlog (nothing to flood). Accepted peers are still checked
with SO_PEERCRED before anything is read.

Finding it: the supervisor keeps the directory open (O_PATH), and a client that knows only
the pid finds it among ``/proc/PID/fd`` by its name and connects through that fd
(``/proc/self/fd/N/control``). proc(5): /proc/PID/fd follows ptrace access mode rules, so
only root and the supervisor's own user get that far, from any mount namespace (PrivateTmp=
included).

Protocol: one JSON object per line each way. Requests: ``{"op": "reload"}`` (answered when the
handover succeeded or failed) and ``{"op": "status"}`` (answered at once). Answers:
``{"ok": bool, "generation": int|null, "pid": int|null, "message": str, ...}``.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import socket
import struct
import time
from collections.abc import Mapping
from typing import Any

from ..errors import SupervisorError

__all__ = [
    "DIR_PREFIX",
    "MAX_LINE",
    "SOCKET_NAME",
    "Connection",
    "ControlServer",
    "candidate_dirs",
    "parse_request",
    "peer_credentials",
    "sweep_stale",
]

MAX_LINE = 4096
DIR_PREFIX = "sdactivate-control."
SOCKET_NAME = "control"
# Connections accepted per loop turn: the rest wait in the backlog for the next turn, so a
# flood of (permitted) connections cannot hold up signals, timers and child exits.
ACCEPT_PER_TURN = 32
BACKLOG = 128
# accept(2) errors that leave the connection in the queue (EMFILE: our RLIMIT_NOFILE, ENFILE:
# the system's, ENOBUFS/ENOMEM: memory): the listener stays readable, and a loop that polled
# it again at once would spin until fds free up. The listener is left out of the poll for a
# pause instead, doubling from ACCEPT_PAUSE_MIN to ACCEPT_PAUSE_MAX while the error lasts (Go's
# net/http does the same); clients wait in the backlog meanwhile.
_EXHAUSTED = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
ACCEPT_PAUSE_MIN = 0.01
ACCEPT_PAUSE_MAX = 1.0
_SUN_PATH_MAX = 107  # unix(7): sun_path is 108 bytes with the NUL

log = logging.getLogger("sdactivate.supervisor")


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the peer (unix(7) SO_PEERCRED)."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    return pid, uid, gid


def parse_request(line: bytes) -> dict[str, Any]:
    """The request in one line (without its newline); ``ValueError`` for anything else.

    Pure, and total: any bytes give a dict with a str ``"op"`` or a ``ValueError`` (nesting
    deep enough for ``RecursionError`` in the JSON decoder included).
    """
    try:
        request = json.loads(line)
    except RecursionError:
        raise ValueError(f"bad request {line[:100]!r}: nested too deep") from None
    except ValueError as exc:  # json.JSONDecodeError, UnicodeDecodeError, int digit limit
        raise ValueError(f"bad request {line[:100]!r}: {exc}") from None
    if not isinstance(request, dict) or not isinstance(request.get("op"), str):
        raise ValueError(f"bad request {line[:100]!r}: not an object with an op")
    return request


class Connection:
    """One client: reads one request line, later gets one answer line."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._buf = b""

    def fileno(self) -> int:
        return self.sock.fileno()

    def read_request(self) -> dict[str, Any] | None:
        """The request once a whole line arrived; None while incomplete (one recv a call).

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
        return parse_request(self._buf.split(b"\n", 1)[0])

    def answer(self, reply: dict[str, Any]) -> None:
        """Send the answer and close. Never blocks: an answer is far smaller than an empty
        socket buffer, and a client that left or stopped reading gets nothing."""
        with contextlib.suppress(OSError):
            self.sock.send(json.dumps(reply).encode() + b"\n", socket.MSG_DONTWAIT)
        self.sock.close()


def candidate_dirs(environ: Mapping[str, str]) -> list[str]:
    """Where the control directory may go, best first (absolute paths only)."""
    out: list[str] = []
    # systemd.exec(5): $RUNTIME_DIRECTORY lists RuntimeDirectory= paths, ':'-separated
    out += environ.get("RUNTIME_DIRECTORY", "").split(":")
    out.append(environ.get("XDG_RUNTIME_DIR", ""))
    out.append(environ.get("TMPDIR", ""))
    out.append("/tmp")
    seen: list[str] = []
    for path in out:
        if path.startswith("/") and path not in seen:
            seen.append(path)
    return seen


class ControlServer:
    """The listening control socket in a fresh private directory (bound at once,
    non-blocking). Only root and this process's euid are served."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._uid = os.geteuid()
        self.paused_until: float | None = None  # monotonic: not polled until then
        self._pause = 0.0
        errors: list[str] = []
        for base in candidate_dirs(environ):
            sweep_stale(base, now=time.time())
            try:
                self.directory, self._dirfd = _private_dir(base)
            except OSError as exc:
                errors.append(f"{base}: {exc.strerror or exc}")
                continue
            break
        else:
            raise SupervisorError(
                "cannot create the control socket's directory (" + "; ".join(errors) + "):"
                " make one of them writable, e.g. RuntimeDirectory= in the unit"
            )
        self.path = os.path.join(self.directory, SOCKET_NAME)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            # a long $TMPDIR: bind through the directory fd (unix(7) sun_path limit)
            short = len(os.fsencode(self.path)) <= _SUN_PATH_MAX
            self.sock.bind(self.path if short else f"/proc/self/fd/{self._dirfd}/{SOCKET_NAME}")
            self.sock.listen(BACKLOG)
            self.sock.setblocking(False)
        except OSError as exc:
            self.close()
            raise SupervisorError(
                f"cannot listen on the control socket {self.path!r}: {exc.strerror or exc}"
            ) from exc

    def fileno(self) -> int:
        return self.sock.fileno()

    def accept(self, *, now: float | None = None) -> list[Connection]:
        """Up to ``ACCEPT_PER_TURN`` pending connections of permitted peers; the others
        are closed at once, before anything is read from them. Out of fds (or memory), it
        sets :attr:`paused_until`: the caller stops polling the socket until then."""
        out: list[Connection] = []
        for _ in range(ACCEPT_PER_TURN):
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                if exc.errno in _EXHAUSTED:
                    self._paused(exc, time.monotonic() if now is None else now)
                    break
                continue  # ECONNABORTED...: that connection is gone, the next may be fine
            if self._pause:
                log.info("control socket: accepting again")
                self._pause = 0.0
            try:
                _, uid, _ = peer_credentials(conn)
            except OSError:
                uid = -1
            if uid not in (0, self._uid):
                conn.close()
                continue
            conn.setblocking(False)
            out.append(Connection(conn))
        return out

    def resume_due(self, now: float) -> bool:
        """Whether a pause is over (then it ends: poll the socket again)."""
        if self.paused_until is None or now < self.paused_until:
            return False
        self.paused_until = None
        return True

    def _paused(self, exc: OSError, now: float) -> None:
        if not self._pause:  # one line per episode, not one per retry
            log.warning(
                "control socket: accept failed (%s); retrying in %g s, then less often",
                exc.strerror or exc,
                ACCEPT_PAUSE_MIN,
            )
        self._pause = min(ACCEPT_PAUSE_MAX, max(ACCEPT_PAUSE_MIN, self._pause * 2))
        self.paused_until = now + self._pause

    def close(self) -> None:
        """Close the socket and remove it and its directory (best effort)."""
        if hasattr(self, "sock"):
            self.sock.close()
        with contextlib.suppress(OSError):
            os.unlink(SOCKET_NAME, dir_fd=self._dirfd)
        with contextlib.suppress(OSError):
            os.rmdir(self.directory)
        with contextlib.suppress(OSError):
            os.close(self._dirfd)


def sweep_stale(base: str, *, now: float, min_age: float = 60.0) -> list[str]:
    """Remove the control directories in ``base`` that a supervisor of this uid left when it
    was killed: its socket refuses connections (or was never bound), and it is older than
    ``min_age`` seconds, so a supervisor between its mkdir and listen is never touched.
    Returns what was removed."""
    removed: list[str] = []
    uid = os.geteuid()
    try:
        names = [n for n in os.listdir(base) if n.startswith(DIR_PREFIX)]
    except OSError:
        return removed
    for name in names:
        path = os.path.join(base, name)
        sock_path = os.path.join(path, SOCKET_NAME)
        try:
            st = os.lstat(path)
            if st.st_uid != uid or now - st.st_mtime < min_age:
                continue
            if os.path.lexists(sock_path) and _listening(sock_path):
                continue
            with contextlib.suppress(FileNotFoundError):
                os.unlink(sock_path)
            os.rmdir(path)
        except OSError:
            continue
        removed.append(path)
    return removed


def _listening(path: str) -> bool:
    """Whether something listens on the unix socket ``path`` (anything but ECONNREFUSED
    counts, so only a socket known to be dead is removed)."""
    if len(os.fsencode(path)) > _SUN_PATH_MAX:
        return True
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as probe:
        probe.setblocking(False)
        try:
            probe.connect(path)
        except ConnectionRefusedError:
            return False
        except OSError:
            return True
        return True


def _private_dir(base: str) -> tuple[str, int]:
    """A new directory in ``base`` with an unguessable name and mode 0700, and an O_PATH fd
    of it (the handle clients find it by)."""
    for _ in range(8):
        # os.urandom, not secrets/tempfile: their imports cost megabytes of RSS
        path = os.path.join(base, DIR_PREFIX + os.urandom(8).hex())
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            continue
        try:
            fd = os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC | os.O_NOFOLLOW)
            os.chmod(f"/proc/self/fd/{fd}", 0o700)  # a umask may have taken bits away
        except OSError:
            with contextlib.suppress(OSError):
                os.rmdir(path)
            raise
        return path, fd
    raise FileExistsError(f"no free name in {base!r}")
