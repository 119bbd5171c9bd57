"""examples/app.py drains correctly: real processes on loopback (no systemd needed).

On SIGTERM the app stops accepting (the queue stays in the socket the parent holds), answers
every connection it accepted, ends keep-alive connections with ``Connection: close``, closes
idle ones after ``--idle-grace``, honours ``--drain-timeout``, and only then exits. The load
tests hand over under ``sdactivate run`` with bench/loadgen.py's open-loop client.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench import loadgen
from sdactivate.supervisor.client import request_reload
from sdactivate.testing import NotifyReceiver, Process, launch

ROOT = Path(__file__).resolve().parent.parent

APP = str(ROOT / "examples" / "app.py")
BENCH_APP = [str(ROOT / "bench" / "modes" / "app.py"), "--socket", "inherit"]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NOTIFY_", "WATCHDOG_"))}
    env["PYTHONPATH"] = str(ROOT)
    return env


class App:
    """examples/app.py socket-activated on 127.0.0.1:0 (this test holds the socket, like a
    socket unit), with a NotifyReceiver as its manager."""

    def __init__(self, *args: str, sock: socket.socket | None = None) -> None:
        self.rx = NotifyReceiver(thread=True)
        argv = [sys.executable, APP, "--name", "http", *args]
        self.proc: Process = launch(
            argv,
            [sock if sock is not None else "127.0.0.1:0"],
            names=["http"],
            notify=self.rx,
            env=_env(),
        )
        self.sock = self.proc.sockets[0]
        self.port = self.sock.getsockname()[1]
        self.rx.wait_for("READY", "1", timeout=15)

    def terminate(self) -> None:
        """SIGTERM, and wait until the app says it is draining (STOPPING=1)."""
        self.proc.terminate()
        self.rx.wait_for("STOPPING", "1", timeout=10)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.rx.close()


@pytest.fixture
def apps() -> Iterator[list[App]]:
    started: list[App] = []
    try:
        yield started
    finally:
        for app in started:
            app.close()
        for app in started:
            app.proc.close_sockets()


def _request(path: str = "/", *, close: bool = False) -> bytes:
    conn = "close" if close else "keep-alive"
    return f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: {conn}\r\n\r\n".encode()


def _response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One response (status, lower-case headers, body); raises EOFError on a short read."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        data = sock.recv(65536)
        if not data:
            raise EOFError(f"connection closed before a response head: {buf!r}")
        buf += data
    head, _, body = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        key, _, value = line.partition(":")
        headers[key.strip().lower()] = value.strip()
    length = int(headers["content-length"])
    while len(body) < length:
        data = sock.recv(65536)
        if not data:
            raise EOFError("connection closed inside a body")
        body += data
    return int(lines[0].split()[1]), headers, body


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    return sock


def test_idle_keepalive_connection_gets_one_last_request(apps: list[App]) -> None:
    """A keep-alive connection idle when SIGTERM arrives still has its next request answered,
    with Connection: close, and then the app exits 0."""
    app = App("--idle-grace", "5")
    apps.append(app)
    with _connect(app.port) as c:
        c.sendall(_request())
        status, headers, _ = _response(c)
        assert (status, headers["connection"]) == (200, "keep-alive")
        app.terminate()
        c.sendall(_request())
        status, headers, body = _response(c)
        assert (status, headers["connection"]) == (200, "close")
        assert body.startswith(f"pid={app.proc.pid} ".encode())
        assert c.recv(1) == b""  # then a clean close
    assert app.proc.wait(10) == 0


def test_idle_connections_close_after_the_grace(apps: list[App]) -> None:
    """Idle keep-alive connections, and accepted ones that never send, are closed (clean EOF)
    --idle-grace after the drain began, so the app exits long before --drain-timeout."""
    app = App("--idle-grace", "0.2", "--drain-timeout", "60")
    apps.append(app)
    with _connect(app.port) as used, _connect(app.port) as silent:
        used.sendall(_request())
        assert _response(used)[0] == 200
        app.terminate()
        assert app.proc.wait(10) == 0
        assert used.recv(1) == b""
        assert silent.recv(1) == b""


def test_request_in_flight_is_finished(apps: list[App]) -> None:
    """A slow request (/sleep?ms=N) in progress at SIGTERM is answered before the app exits;
    a request sent but not yet read is answered too; then each connection ends cleanly."""
    app = App()
    apps.append(app)
    with _connect(app.port) as slow, _connect(app.port) as unread:
        slow.sendall(_request("/sleep?ms=400"))
        app.proc.send_signal(signal.SIGSTOP)  # the next request waits, unread
        unread.sendall(_request())
        app.proc.send_signal(signal.SIGTERM)
        app.proc.send_signal(signal.SIGCONT)
        for c in (slow, unread):
            status, headers, _ = _response(c)
            assert status == 200
            # A handler thread can answer in the instant between SIGCONT and the main thread
            # running the SIGTERM handler (CPython runs Python handlers there only): then the
            # answer still says keep-alive, and the drain closes the idle connection after it.
            assert headers["connection"] in ("close", "keep-alive")
            assert c.recv(1) == b""  # either way the connection then ends cleanly
    assert app.proc.wait(10) == 0


def test_drains_when_the_manager_is_gone(apps: list[App]) -> None:
    """With its NOTIFY_SOCKET gone (a SIGKILLed supervisor), STOPPING=1 cannot be sent: the
    app logs it and still answers the request in flight, then exits 0."""
    app = App()
    apps.append(app)
    with _connect(app.port) as slow:
        slow.sendall(_request("/sleep?ms=300"))
        app.rx.close()  # the manager's socket disappears
        app.proc.terminate()
        status, headers, _ = _response(slow)
        assert (status, headers["connection"]) == (200, "close")
    assert app.proc.wait(10) == 0


def test_queued_connections_stay_for_the_next_generation(apps: list[App]) -> None:
    """Connections still in the kernel queue at SIGTERM are not touched: the next
    generation, started on the same socket, answers them; every client gets a 200."""
    first = App()
    apps.append(first)
    first.proc.send_signal(signal.SIGSTOP)
    clients = [_connect(first.port) for _ in range(150)]  # queued; some accepted at SIGCONT
    try:
        for c in clients:
            c.sendall(_request(close=True))
        first.proc.send_signal(signal.SIGTERM)
        first.proc.send_signal(signal.SIGCONT)
        assert first.proc.wait(10) == 0
        second = App(sock=first.sock)
        apps.append(second)
        pids = [int(_response(c)[1]["x-pid"]) for c in clients]
    finally:
        for c in clients:
            c.close()
    assert set(pids) <= {first.proc.pid, second.proc.pid}
    assert pids.count(second.proc.pid) > 0


def test_hard_deadline_aborts_what_is_left(apps: list[App]) -> None:
    """A connection whose request never completes is aborted at --drain-timeout; the app
    exits 0 then, not before."""
    app = App("--drain-timeout", "0.5", "--idle-grace", "0.1")
    apps.append(app)
    with _connect(app.port) as c:
        c.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n")  # no end of head
        started = time.monotonic()
        app.terminate()
        assert app.proc.wait(10) == 0
        assert time.monotonic() - started >= 0.4
        with pytest.raises((EOFError, ConnectionResetError)):
            _response(c)


# --- handovers under load, through `sdactivate run` ---------------------------------------

HANDOVERS = 6
RATE = 400  # new connections (or requests) per second; 2 shared cores
SLOW = b"GET /sleep?ms=300 HTTP/1.1\r\nHost: x\r\nX-Req-Id: {id}\r\nConnection: close\r\n\r\n"


def _handovers(
    keepalive: bool, *, slow: bool, app: list[str] | None = None, rate: float = RATE
) -> tuple[loadgen.Result, ...]:
    rx = NotifyReceiver(thread=True)
    argv = [sys.executable, "-m", "sdactivate", "run", "--drain-timeout", "20", "--"]
    argv += [sys.executable, *(app or [APP, "--name", "http"])]
    proc = launch(argv, ["127.0.0.1:0"], names=["http"], notify=rx, env=_env())
    try:
        rx.wait_for("READY", "1", timeout=15)
        port = proc.sockets[0].getsockname()[1]
        # The load runs until the last generation has served 0.5 s (a bound of 60 s), so
        # every generation gets requests however long a handover takes on a busy host.
        kw = {"duration": 60.0, "timeout": 5.0}
        loads = [loadgen.start("127.0.0.1", port, rate=rate, keepalive=keepalive, **kw)]
        if slow:  # W3: a stream of 300 ms requests, so some are in flight at every handover
            loads.append(loadgen.start("127.0.0.1", port, rate=20, request=SLOW, **kw))
        time.sleep(0.7)  # pacing, not ordering: generation 1 serves some of the load too
        for _ in range(HANDOVERS):
            outcome = request_reload(proc.pid, timeout=30)
            assert outcome.ok, outcome.message
            time.sleep(0.5)  # pacing, not ordering: the new generation serves alone a while
        for load in loads:
            load.stop()
        results = tuple(load.result(timeout=30) for load in loads)
        proc.terminate()
        assert proc.wait(30) == 0
        return results
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        rx.close()
        proc.close_sockets()


@pytest.mark.parametrize(
    ("keepalive", "slow"),
    [(False, True), (True, False)],
    ids=["connection-per-request+slow", "keep-alive"],
)
def test_handovers_under_load_lose_nothing(keepalive: bool, slow: bool) -> None:
    """Six `sdactivate run` handovers of examples/app.py under open-loop load (a connection
    per request with slow requests in flight, or keep-alive): 0 refused, reset, timed out or
    lost, and responses came from every generation."""
    results = _handovers(keepalive, slow=slow)
    for res in results:
        assert res.failed == 0, res.summary()
        assert res.ok == res.total > 0
    pids = {pid for pid in results[0].pids() if pid}
    assert len(pids) == HANDOVERS + 1  # every generation served


def test_bench_app_handovers_lose_nothing() -> None:
    """The benchmark's own app (bench/modes/app.py, `MODE@bench`) under the same handovers: it
    accepts by hand, so a connection accepted just before the drain is served, not dropped
    (asyncio's Server.close() refused such late connections: resets the client saw)."""
    # 1000/s: the old accept path reset a request in about one run of three at this rate
    (res,) = _handovers(False, slow=False, app=BENCH_APP, rate=1000)
    assert res.failed == 0, res.summary()
    assert res.ok == res.total > 0
    assert len({pid for pid in res.pids() if pid}) == HANDOVERS + 1
