"""The benchmark load generator against tiny in-process servers (hermetic, loopback only)."""

from __future__ import annotations

import array
import contextlib
import gc
import itertools
import math
import os
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bench import loadgen
from tests.support import wait_until

Handler = Callable[[socket.socket], None]


def _respond(status: str = "200 OK", pid: int = 4242, close: bool = True) -> bytes:
    body = b"ok\n"
    conn = b"Connection: close\r\n" if close else b""
    return (
        b"HTTP/1.1 %s\r\nContent-Length: %d\r\nX-Pid: %d\r\n%s\r\n"
        % (status.encode(), len(body), pid, conn)
        + body
    )


class _Server:
    """A threaded loopback server: one accept loop, one thread per connection."""

    def __init__(self, handler: Handler, *, family: int = socket.AF_INET, path: str = "") -> None:
        if family == socket.AF_UNIX:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.bind(path)
        else:
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(512)
        self.sock.settimeout(0.05)
        self.port = self.sock.getsockname()[1] if family != socket.AF_UNIX else 0
        self.handler = handler
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                c, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            c.settimeout(5.0)
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c: socket.socket) -> None:
        try:
            self.handler(c)
        except OSError:
            pass
        finally:
            c.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5.0)
        self.sock.close()


def _read_request(c: socket.socket) -> bytes:
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = c.recv(4096)
        if not chunk:
            return b""
        buf += chunk
    return buf


def _ok(c: socket.socket) -> None:
    if _read_request(c):
        c.sendall(_respond())


@pytest.fixture(params=["epoll", "asyncio"])
def run(request: pytest.FixtureRequest) -> Callable[..., loadgen.Result]:
    """loadgen.run with each engine for a new connection per request: both must agree."""
    engine = request.param

    def go(*args: object, **kwargs: object) -> loadgen.Result:
        return loadgen.run(*args, engine=engine, **kwargs)  # type: ignore[arg-type]

    return go


@pytest.fixture
def server() -> Iterator[Callable[..., _Server]]:
    made: list[_Server] = []

    def make(handler: Handler, **kw: object) -> _Server:
        s = _Server(handler, **kw)  # type: ignore[arg-type]
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


def test_all_ok_with_pid_and_ids(
    server: Callable[..., _Server], run: Callable[..., loadgen.Result]
) -> None:
    """Every scheduled request gets a record; ok ones carry latency and the server's pid."""
    srv = server(_ok)
    res = run("127.0.0.1", srv.port, rate=200, duration=0.5)
    assert res.total == 100
    assert (res.sent, res.ok, res.failed) == (100, 100, 0)
    recs = list(res.records)
    assert [r.id for r in recs] == list(range(100))
    assert all(r.outcome == "ok" and r.pid == 4242 and r.status == 200 for r in recs)
    assert all(r.latency_s is not None and r.latency_s > 0 for r in recs)
    gaps = {round(b.scheduled - a.scheduled, 6) for a, b in itertools.pairwise(recs)}
    assert gaps == {0.005}
    assert srv.connections == 100
    assert res.pids() == {4242: 100}


def test_request_ids_reach_the_server(
    server: Callable[..., _Server], run: Callable[..., loadgen.Result]
) -> None:
    """The default request carries X-Req-Id with the request's id, one connection each."""
    seen: list[bytes] = []

    def handler(c: socket.socket) -> None:
        req = _read_request(c)
        seen.append(req)
        c.sendall(_respond())

    srv = server(handler)
    run("127.0.0.1", srv.port, rate=100, duration=0.1)
    ids = sorted(int(r.split(b"X-Req-Id: ")[1].split(b"\r\n")[0]) for r in seen)
    assert ids == list(range(10))
    assert all(r.startswith(b"GET / HTTP/1.1\r\n") and b"Connection: close" in r for r in seen)


def test_refused_counted(run: Callable[..., loadgen.Result]) -> None:
    """A bound but not listening port refuses every request: all ECONNREFUSED."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    try:
        res = run("127.0.0.1", s.getsockname()[1], rate=100, duration=0.2)
    finally:
        s.close()
    assert (res.total, res.refused, res.ok) == (20, 20, 0)
    assert res.errors == {"ECONNREFUSED": 20}
    assert all(r.latency_s is None for r in res.records)


def test_reset_counted(server: Callable[..., _Server], run: Callable[..., loadgen.Result]) -> None:
    """A server that aborts connections (RST) yields resets, not errors or timeouts."""

    def rst(c: socket.socket) -> None:
        _read_request(c)
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    srv = server(rst)
    res = run("127.0.0.1", srv.port, rate=100, duration=0.2)
    assert (res.total, res.reset, res.ok) == (20, 20, 0)
    assert set(res.errors) <= {"ECONNRESET", "EPIPE", "short"}


def test_short_response_is_reset(
    server: Callable[..., _Server], run: Callable[..., loadgen.Result]
) -> None:
    """A clean close before a complete response counts as reset (kind 'short')."""

    def half(c: socket.socket) -> None:
        _read_request(c)
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")

    srv = server(half)
    res = run("127.0.0.1", srv.port, rate=100, duration=0.1)
    assert (res.reset, res.errors) == (10, {"short": 10})


def test_timeout_counted_and_bounded(
    server: Callable[..., _Server], run: Callable[..., loadgen.Result]
) -> None:
    """A server that never answers: every request times out and the run still ends."""
    gate = threading.Event()

    def silent(c: socket.socket) -> None:
        gate.wait(5.0)

    srv = server(silent)
    try:
        res = run("127.0.0.1", srv.port, rate=50, duration=0.2, timeout=0.2)
    finally:
        gate.set()
    assert (res.total, res.timeout, res.ok) == (10, 10, 0)
    assert res.errors == {"timeout": 10}


def test_non_2xx_is_lost(
    server: Callable[..., _Server], run: Callable[..., loadgen.Result]
) -> None:
    """A 503 answer is not ok: counted as lost with kind http_503."""

    def busy(c: socket.socket) -> None:
        _read_request(c)
        c.sendall(_respond("503 Service Unavailable"))

    srv = server(busy)
    res = run("127.0.0.1", srv.port, rate=100, duration=0.1)
    assert (res.lost, res.ok, res.errors) == (10, 0, {"http_503": 10})


def test_latency_measured_from_schedule(server: Callable[..., _Server]) -> None:
    """Requests queued behind a stalled server get latency from their scheduled time."""
    release = threading.Event()

    def stalled(c: socket.socket) -> None:
        _read_request(c)
        release.wait(5.0)
        c.sendall(_respond())

    srv = server(stalled)
    h = loadgen.start("127.0.0.1", srv.port, rate=100, duration=0.3, timeout=3.0)
    # Release once every request was sent (each waits on the gate until then).
    wait_until(lambda: srv.connections >= 30, timeout=5, interval=0.01, what="30 connections")
    release.set()
    res = h.result()
    assert res.ok == 30
    recs = list(res.records)
    # request 0 was scheduled >= 0.29 s before request 29, and both finished after the release
    assert recs[0].latency_s is not None and recs[29].latency_s is not None
    assert recs[0].latency_s - recs[29].latency_s >= 0.28


def test_keepalive_reuses_a_small_pool(server: Callable[..., _Server]) -> None:
    """Keep-alive mode sends many requests over at most pool_size connections."""

    def persistent(c: socket.socket) -> None:
        while _read_request(c):
            c.sendall(_respond(close=False))

    srv = server(persistent)
    res = loadgen.run("127.0.0.1", srv.port, rate=200, duration=0.5, keepalive=True, pool_size=4)
    assert res.ok == 100
    assert 1 <= srv.connections <= 4


def test_keepalive_connection_closed_while_idle_is_not_reused(
    server: Callable[..., _Server],
) -> None:
    """A keep-alive connection the server closed while idle is seen as stale before reuse
    (as HTTP clients do) and replaced by a new one: nothing was sent on it, nothing fails."""

    def one_then_close(c: socket.socket) -> None:
        if _read_request(c):
            c.sendall(_respond(close=False))
        # closes without Connection: close: the client's next request on it is short/reset

    srv = server(one_then_close)
    # 50 ms between requests: the server's close follows its response within microseconds,
    # unless a busy host preempts it for longer than the gap (then the reuse race is real)
    res = loadgen.run("127.0.0.1", srv.port, rate=20, duration=1.5, keepalive=True, pool_size=1)
    assert res.ok == res.total == 30 and res.reset == 0, res.summary()


def test_unix_socket(
    server: Callable[..., _Server], tmp_path: Path, run: Callable[..., loadgen.Result]
) -> None:
    """unix_path targets an AF_UNIX stream server."""
    path = str(tmp_path / "s.sock")
    server(_ok, family=socket.AF_UNIX, path=path)
    res = run("", 0, rate=100, duration=0.1, unix_path=path)
    assert res.ok == 10


def test_max_requests_caps_the_schedule(
    server: Callable[..., _Server], run: Callable[..., loadgen.Result]
) -> None:
    """max_requests bounds the count regardless of rate * duration."""
    srv = server(_ok)
    res = run("127.0.0.1", srv.port, rate=1000, duration=10, max_requests=7)
    assert (res.total, res.ok) == (7, 7)


def test_background_stop_truncates(server: Callable[..., _Server]) -> None:
    """stop() ends a long run early; unscheduled requests are dropped, not counted as lost."""
    srv = server(_ok)
    h = loadgen.start("127.0.0.1", srv.port, rate=100, duration=60)
    wait_until(lambda: srv.connections >= 10, timeout=5, interval=0.01, what="10 connections")
    h.stop()
    res = h.result(timeout=10)
    assert 10 <= res.total < 6000
    assert res.ok == res.total and res.lost == 0
    assert res.t0 == h.t0


def test_result_closes_its_pipe_once() -> None:
    """After result() the handle holds no fd: a file that takes the number of the handle's
    pipe afterwards stays open when the handle is collected (a second close of that number
    hit a later run's pipe: EBADF, or "pickle data was truncated")."""
    with socket.socket() as s:  # a port nobody listens on: refused, and no server threads
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    before = set(os.listdir("/proc/self/fd"))
    h = loadgen.start("127.0.0.1", port, rate=100, duration=0.05)
    during = set(os.listdir("/proc/self/fd"))
    assert h.result().total == 5
    freed = sorted(int(fd) for fd in during - before - set(os.listdir("/proc/self/fd")))
    assert freed, "result() closed no fd"
    null = os.open(os.devnull, os.O_RDONLY)
    try:
        for fd in freed:  # a later file on each number result() gave back
            os.dup2(null, fd, inheritable=False)
        del h
        gc.collect()
        still_open = []
        for fd in freed:
            try:
                os.fstat(fd)
                still_open.append(fd)
            except OSError:
                pass
        assert still_open == freed
    finally:
        for fd in [null, *freed]:
            with contextlib.suppress(OSError):
                os.close(fd)


def _synthetic() -> loadgen.Result:
    res = loadgen.Result(rate=10, duration=1, keepalive=False, t0=100.0, wall=1.0)
    res.scheduled = array.array("d", [100.0 + i / 10 for i in range(10)])
    lat = [0.001] * 10
    lat[5] = 0.050
    lat[6] = math.nan
    res.latency = array.array("d", lat)
    res.outcome = array.array("b", [0] * 6 + [1] + [0] * 3)
    res.status = array.array("h", [200] * 10)
    res.pid = array.array("l", [1] * 10)
    res.send_lag = array.array("d", [0.0] * 10)
    res.ok, res.refused = 9, 1
    return res


def test_window_and_steady_stats() -> None:
    """Requests scheduled inside windows are split from the steady state; added latency."""
    res = _synthetic()
    wins = [(100.45, 100.65)]  # ids 5, 6
    w = loadgen.window_stats(res, wins)
    s = loadgen.steady_stats(res, wins)
    assert (w.total, w.counts["ok"], w.counts["refused"], w.failed) == (2, 1, 1, 1)
    assert (s.total, s.failed) == (8, 0)
    assert w.latency["max"] == 0.050 and s.latency["max"] == 0.001
    assert loadgen.added_latency(res, wins) == pytest.approx(0.049)


def test_percentiles_nearest_rank() -> None:
    """p50/p99/p99.9/max follow nearest-rank; empty input gives nan."""
    p = loadgen.percentiles(float(i) for i in range(1, 1001))
    assert (p["p50"], p["p99"], p["p99.9"], p["max"]) == (500.0, 990.0, 999.0, 1000.0)
    assert math.isnan(loadgen.percentiles([])["p99"])


def test_engine_choice(server: Callable[..., _Server]) -> None:
    """auto: epoll for a new connection per request; epoll refuses keep-alive; bad names fail."""
    srv = server(_ok)
    with pytest.raises(ValueError, match="keepalive"):
        loadgen.run("127.0.0.1", srv.port, rate=10, duration=0.1, engine="epoll", keepalive=True)
    with pytest.raises(ValueError, match="engine"):
        loadgen.run("127.0.0.1", srv.port, rate=10, duration=0.1, engine="uvloop")
    assert loadgen._epoll_kwargs("auto", {"keepalive": False, "pool_size": 3}) == {}
    assert loadgen._epoll_kwargs("auto", {"keepalive": True}) is None
    res = loadgen.run("127.0.0.1", srv.port, rate=100, duration=0.1, keepalive=False, pool_size=3)
    assert res.ok == 10


def test_child_result_is_written_whole_past_short_writes() -> None:
    """write(2) to a pipe may write fewer bytes than asked (a signal mid-write, under
    PYTHONUNBUFFERED's raw stdout): the child's result is written to its last byte."""
    r, w = os.pipe()
    calls: list[int] = []

    def short(fd: int, data: bytes) -> int:  # at most 1000 bytes a call, as a pipe may
        calls.append(len(data))
        return os.write(fd, bytes(data[:1000]))

    payload = bytes(range(256)) * 20  # 5120 bytes: fits the pipe buffer
    try:
        loadgen.write_all(w, payload, short)
        os.close(w)
        got = b""
        while chunk := os.read(r, 65536):
            got += chunk
    finally:
        os.close(r)
    assert got == payload
    assert len(calls) == 6
