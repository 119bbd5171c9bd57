"""The caller's side of the control socket: ``request_reload(pid)`` for ``sdactivate reload``."""

from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass
from typing import Any

from ..errors import SupervisorError
from .control import MAX_LINE, control_address, peer_credentials

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


def request(pid: int, op: str, *, timeout: float) -> dict[str, Any]:
    """Send ``{"op": op}`` to supervisor ``pid`` and return its answer (a dict).

    Raises :class:`SupervisorError` if no supervisor listens for ``pid``, if the socket
    belongs to another process, or if no answer arrives within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.settimeout(timeout)
        try:
            sock.connect(control_address(pid))
        except OSError as exc:
            raise SupervisorError(
                f"no sdactivate supervisor with pid {pid} (is it `sdactivate run`?)"
            ) from exc
        peer, _, _ = peer_credentials(sock)
        if peer != pid:
            raise SupervisorError(f"control socket of pid {pid} is held by pid {peer}")
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
        if b"\n" not in buf:
            raise SupervisorError(f"supervisor {pid} closed the connection without answer")
    except TimeoutError as exc:
        raise SupervisorError(f"no answer from supervisor {pid} within {timeout:g}s") from exc
    finally:
        sock.close()
    answer = json.loads(buf.split(b"\n", 1)[0])
    if not isinstance(answer, dict):
        raise SupervisorError(f"malformed answer from supervisor {pid}: {answer!r}")
    return answer


def request_reload(pid: int, *, timeout: float) -> ReloadResult:
    """Ask supervisor ``pid`` for a handover and wait for its outcome.

    Same as SIGHUP (reloads coalesce: a request made during a handover is answered by the
    next one) but with the result. A failed handover is a result (``ok=False``,
    ``exit_code == 1``), not an exception. Raises :class:`SupervisorError` when there is no
    supervisor or no answer within ``timeout`` (the handover may still happen).
    """
    answer = request(pid, "reload", timeout=timeout)
    return ReloadResult(
        ok=bool(answer.get("ok")),
        generation=answer.get("generation"),
        pid=answer.get("pid"),
        message=str(answer.get("message", "")),
    )


def request_status(pid: int, *, timeout: float = 5.0) -> dict[str, Any]:
    """The supervisor's state: phase, serving generation and pid, counters."""
    return request(pid, "status", timeout=timeout)
