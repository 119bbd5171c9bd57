"""Shared checks for the server adapter tests (tests/test_adapters_*.py).

Each adapter example serves ``GET /`` (``ok pid=N``) and ``GET /sleep?ms=N`` (sends
``STATUS=busy`` first, so a test knows the request is in flight without sleeping), on the
passed socket named ``http``; it is launched socket-activated with a decoy socket named
``other`` first, and a NotifyReceiver standing in for PID 1.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from sdactivate.testing import NotifyReceiver, Process, launch

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@dataclass
class Running:
    proc: Process
    rx: NotifyReceiver
    port: int


def _listening() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    return sock


@contextmanager
def running(
    argv: Sequence[str], *, env: dict[str, str] | None = None, decoy: bool = True
) -> Iterator[Running]:
    """Launch ``argv`` with sockets [other, http] (names passed; ``decoy=False``: only
    http) and a notify receiver standing in for PID 1."""
    socks = [_listening(), _listening()] if decoy else [_listening()]
    names = ["other", "http"] if decoy else ["http"]
    with NotifyReceiver(thread=True) as rx:
        try:
            proc = launch(argv, socks, names=names, notify=rx, env=env)
        finally:
            port = socks[-1].getsockname()[1]
            for sock in socks:
                sock.close()
        with proc:
            yield Running(proc, rx, port)


@contextmanager
def sharing(
    argv: Sequence[str], count: int, *, env: dict[str, str] | None = None
) -> Iterator[list[Running]]:
    """Launch ``count`` copies of ``argv`` on one listening socket named http (as two
    generations share a socket unit's socket), each with its own notify receiver, all READY."""
    sock = _listening()
    with ExitStack() as stack:
        runs: list[Running] = []
        try:
            for _ in range(count):
                rx = stack.enter_context(NotifyReceiver(thread=True))
                proc = stack.enter_context(launch(argv, [sock], names=["http"], notify=rx, env=env))
                runs.append(Running(proc, rx, sock.getsockname()[1]))
        finally:
            sock.close()
        for run in runs:
            run.rx.wait_for("READY", "1", timeout=20)
        yield runs


def example(name: str) -> list[str]:
    return [sys.executable, str(EXAMPLES / name)]


def request(port: int, path: str = "/", *, timeout: float = 10.0) -> tuple[int, bytes]:
    """One HTTP/1.1 request on a new connection: (status, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn:
        conn.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
        return read_response(conn)


def read_response(conn: socket.socket, data: bytes = b"") -> tuple[int, bytes]:
    while chunk := conn.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/"):
        raise AssertionError(f"no HTTP response: {data[:200]!r}")
    if b"chunked" in head.lower():
        body = _unchunk(body)
    return int(head.split()[1]), body


def _unchunk(body: bytes) -> bytes:
    out = b""
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += rest[:size]
        body = rest[size + 2 :]
    return out


def check_ready_then_serves(run: Running) -> None:
    """READY=1 arrives from the server's pid and a request made right then succeeds."""
    msg = run.rx.wait_for("READY", "1", timeout=20)
    assert msg.pid == run.proc.pid or run.proc.poll() is None
    status, body = request(run.port)
    assert status == 200, body
    assert body.startswith(b"ok pid="), body


def check_sigterm_drains(
    run: Running, *, deadline: float = 10.0, head_first: bool = False, exit_code: int = 0
) -> None:
    """SIGTERM with a slow request in flight: STOPPING=1, the request completes, the process
    exits with ``exit_code`` (uvicorn re-raises the signal: -15).

    The request is known to be in flight from ``STATUS=busy``, or (``head_first``) from the
    first bytes of the response.
    """
    run.rx.wait_for("READY", "1", timeout=20)
    conn = socket.create_connection(("127.0.0.1", run.port), timeout=10)
    conn.sendall(b"GET /sleep?ms=700 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    first = b""
    if head_first:
        first = conn.recv(65536)
        assert first, "connection closed before the response"
    else:
        run.rx.wait_for("STATUS", "busy", timeout=10)  # the request is in the handler now
    n = len(run.rx.messages)
    run.proc.terminate()
    run.rx.wait_for("STOPPING", "1", timeout=10, since=n)
    status, body = read_response(conn, first)
    conn.close()
    assert status == 200 and body.startswith(b"ok pid="), body
    code = run.proc.wait(deadline)
    assert code == exit_code, code


def check_repeated_sigterm_exits_cleanly(
    start: Callable[[], AbstractContextManager[Running]],
    *,
    timeout: float = 15.0,
    attempts: int = 5,
) -> int:
    """SIGTERM again and again (every ~0.2 ms) until the server exits; return its exit code.

    Under ``gen-units --supervise`` units every stop is signalled twice (systemd's SIGTERM
    to the whole cgroup, then the supervisor's): a repeat that lands after the drain, when
    the handler is gone, must not kill the process on its way out.

    ``start()`` launches a fresh server. A run in which it was gone before the second signal
    tested no repeat (on a busy host this process may not run again until the server has
    exited): it is inconclusive and run again, up to ``attempts`` runs.
    """
    for _ in range(attempts):
        with start() as run:
            run.rx.wait_for("READY", "1", timeout=20)
            deadline = time.monotonic() + timeout
            sent = 0
            while run.proc.poll() is None and time.monotonic() < deadline:
                os.kill(run.proc.pid, signal.SIGTERM)  # a zombie until reaped: the pid stays ours
                sent += 1
                time.sleep(0.0002)  # pacing the storm, not ordering anything
            code = run.proc.wait(5)
        if sent > 1:
            return code
    raise AssertionError(f"in {attempts} runs the server exited before a second SIGTERM")


def check_request_just_after_stop_is_answered(run: Running, *, exit_code: int = 0) -> None:
    """A connection the server accepted before SIGTERM, whose request is sent only after
    STOPPING=1 (a client between connect() and send()), is answered, not reset."""
    run.rx.wait_for("READY", "1", timeout=20)
    fds = f"/proc/{run.proc.pid}/fd"

    def sockets() -> int:
        return sum(os.readlink(f"{fds}/{fd}").startswith("socket:") for fd in os.listdir(fds))

    before = sockets()
    with socket.create_connection(("127.0.0.1", run.port), timeout=10) as conn:
        deadline = time.monotonic() + 10
        while sockets() <= before:  # accepted: one more socket in the server
            assert time.monotonic() < deadline, "the server did not accept the connection"
            time.sleep(0.005)  # polling a state, with a deadline
        n = len(run.rx.messages)
        run.proc.terminate()
        run.rx.wait_for("STOPPING", "1", timeout=10, since=n)
        conn.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        status, body = read_response(conn)
    assert status == 200 and body.startswith(b"ok pid="), body
    assert run.proc.wait(15) == exit_code
