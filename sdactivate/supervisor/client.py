"""The caller's side of the control socket: ``request_reload(pid)`` for ``sdactivate reload``."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .. import _env
from ..errors import SupervisorError
from .control import DIR_PREFIX, MAX_LINE, SOCKET_NAME, candidate_dirs, peer_credentials

__all__ = ["ReloadResult", "request", "request_reload", "request_status"]


@dataclass(frozen=True)
class ReloadResult:
    """Outcome of one handover: ``ok``, the generation and pid now serving, and why."""

    ok: bool
    generation: int | None
    pid: int | None
    message: str

    @property
    def exit_code(self) -> int:
        """0 when the new generation took over, 1 when it failed (the old one kept serving)."""
        return 0 if self.ok else 1


def _denied(pid: int) -> SupervisorError:
    try:
        owner = f" (uid {os.stat(f'/proc/{pid}').st_uid})"
    except OSError:
        owner = ""
    return SupervisorError(
        f"permission denied: the control socket of pid {pid} is only for root and the"
        f" user it runs as{owner}; run as one of them (e.g. with sudo)"
    )


def _control_dir(pid: int) -> int:
    """An O_PATH fd of supervisor ``pid``'s control directory (see :mod:`.control`)."""
    fd_dir = f"/proc/{pid}/fd"
    try:
        fds = os.listdir(fd_dir)
    except FileNotFoundError:
        raise SupervisorError(
            f"no process with pid {pid} (or /proc hides it from this user)"
        ) from None
    except PermissionError:
        raise _denied(pid) from None
    except OSError as exc:
        raise SupervisorError(f"cannot read {fd_dir}: {exc.strerror}") from exc
    for name in fds:
        link = f"{fd_dir}/{name}"
        try:
            target = os.path.basename(os.readlink(link))
            # proc(5): the link of a removed directory ends in " (deleted)"
            if not target.startswith(DIR_PREFIX) or target.endswith(" (deleted)"):
                continue
            return os.open(link, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        except PermissionError:
            raise _denied(pid) from None
        except OSError:  # closed meanwhile, or not a directory
            continue
    raise SupervisorError(f"no sdactivate supervisor with pid {pid} (is it `sdactivate run`?)")


def _connect(pid: int, timeout: float, environ: Mapping[str, str]) -> socket.socket:
    """A socket connected to supervisor ``pid``'s control socket, found through
    ``/proc/PID/fd``, else among the caller's own control directories."""
    try:
        dirfd = _control_dir(pid)
    except SupervisorError:
        # The same user in another user namespace: systemd.exec(5) PrivateUsers= gives
        # each process of the unit (ExecReload= too) a namespace of its own, and ptrace
        # rules refuse /proc/PID/fd across them. Same mount namespace, same directories.
        sock = _connect_by_scan(pid, environ)
        if sock is None:
            raise
        return sock
    try:
        return _connect_in(pid, dirfd, timeout)
    finally:
        os.close(dirfd)


def _connect_in(pid: int, dirfd: int, timeout: float) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.settimeout(timeout)
        sock.connect(f"/proc/self/fd/{dirfd}/{SOCKET_NAME}")
    except TimeoutError as exc:
        sock.close()
        raise SupervisorError(
            f"supervisor {pid} accepted no connection within {timeout:g}s"
        ) from exc
    except OSError as exc:
        sock.close()
        if exc.errno in (errno.EACCES, errno.EPERM):
            raise _denied(pid) from exc
        if exc.errno in (errno.ENOENT, errno.ECONNREFUSED):
            raise SupervisorError(
                f"supervisor {pid} takes no control requests (starting or exiting?)"
            ) from exc
        raise SupervisorError(f"cannot reach supervisor {pid}: {exc.strerror}") from exc
    return sock


def _connect_by_scan(pid: int, environ: Mapping[str, str]) -> socket.socket | None:
    """The control socket of ``pid`` among the control directories this user owns where a
    supervisor with this environment makes them; the listener's SO_PEERCRED pid decides
    (a listener's credentials are those of the process that called listen(2), unix(7))."""
    uid = os.geteuid()
    for base in candidate_dirs(environ):
        try:
            names = [n for n in os.listdir(base) if n.startswith(DIR_PREFIX)]
        except OSError:
            continue
        for name in names:
            try:
                dirfd = os.open(
                    os.path.join(base, name),
                    os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                )
            except OSError:
                continue
            try:
                if os.fstat(dirfd).st_uid != uid:  # another user's: not even a connect
                    continue
                sock = _connect_in(pid, dirfd, 0.0)  # non-blocking: a full backlog is skipped
            except (OSError, SupervisorError):
                continue
            finally:
                os.close(dirfd)
            if peer_credentials(sock)[0] == pid:
                return sock
            sock.close()
    return None


def request(
    pid: int, op: str, *, timeout: float, environ: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Send ``{"op": op}`` to supervisor ``pid`` and return its answer (a dict).

    Raises :class:`SupervisorError` if no supervisor runs as ``pid``, if the caller may not
    reach it (only root and the supervisor's user may), if the socket belongs to another
    process, or if no answer arrives within ``timeout`` seconds. ``environ`` (default: the
    process environment) says where the caller's own control directories are, for a
    caller that may not read ``/proc/PID/fd`` (see :func:`_connect`).
    """
    deadline = time.monotonic() + timeout
    sock = _connect(pid, timeout, _env.resolve(environ))
    try:
        peer, _, _ = peer_credentials(sock)
        if peer != pid:
            raise SupervisorError(f"control socket of pid {pid} is held by pid {peer}")
        sock.settimeout(timeout)
        sock.sendall(json.dumps({"op": op}).encode() + b"\n")
        buf = b""
        while True:  # to EOF: the supervisor closes right after answering
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            sock.settimeout(left)
            chunk = sock.recv(MAX_LINE)
            if not chunk:
                break
            buf += chunk
            if len(buf) > 16 * MAX_LINE:
                raise SupervisorError(f"answer from supervisor {pid} too long")
    except TimeoutError as exc:
        raise SupervisorError(f"no answer from supervisor {pid} within {timeout:g}s") from exc
    except (ConnectionResetError, BrokenPipeError) as exc:
        # it closes a peer it does not serve at once (SO_PEERCRED): another uid, e.g. a
        # process with CAP_SYS_PTRACE that is not root
        raise SupervisorError(
            f"supervisor {pid} closed the connection before answering (it serves only root"
            " and its own user)"
        ) from exc
    except OSError as exc:
        raise SupervisorError(f"control socket of supervisor {pid}: {exc.strerror}") from exc
    finally:
        sock.close()
    if b"\n" not in buf:
        raise SupervisorError(f"supervisor {pid} closed the connection without answer")
    line = buf.split(b"\n", 1)[0]
    answer: object = None
    with contextlib.suppress(ValueError, RecursionError):
        answer = json.loads(line)
    if not isinstance(answer, dict):
        raise SupervisorError(f"malformed answer from supervisor {pid}: {line[:200]!r}")
    return answer


def request_reload(pid: int, *, timeout: float) -> ReloadResult:
    """Ask supervisor ``pid`` for a handover and wait for its outcome.

    Same as SIGHUP (reloads coalesce: a request made during a handover is answered by the
    next one) but with the result. A failed handover is a result (``ok=False``,
    ``exit_code == 1``), not an exception. Raises :class:`SupervisorError` when there is no
    supervisor, no permission, or no answer within ``timeout`` (the handover may still
    happen).
    """
    answer = request(pid, "reload", timeout=timeout)
    generation, serving = answer.get("generation"), answer.get("pid")
    return ReloadResult(
        ok=answer.get("ok") is True,
        generation=generation if isinstance(generation, int) else None,
        pid=serving if isinstance(serving, int) else None,
        message=str(answer.get("message", "")),
    )


def request_status(pid: int, *, timeout: float = 5.0) -> dict[str, Any]:
    """The supervisor's state: phase, serving generation and pid, counters."""
    return request(pid, "status", timeout=timeout)
