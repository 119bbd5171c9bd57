"""sdactivate.adapters.http_server: READY when serving, named socket, SIGTERM drain."""

from __future__ import annotations

import os
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from bench import loadgen
from sdactivate.adapters import http_server
from tests._adapter_harness import (
    Running,
    check_ready_then_serves,
    check_sigterm_drains,
    example,
    running,
    sharing,
)

KEEP_ALIVE = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"


def _env(drain_timeout: float) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LISTEN_", "NOTIFY_"))}
    env["EXAMPLE_DRAIN_TIMEOUT"] = str(drain_timeout)
    return env


def _response(conn: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One response with a Content-Length from a keep-alive connection."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        assert chunk, f"connection closed before a response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
    while len(body) < int(headers["content-length"]):
        chunk = conn.recv(65536)
        assert chunk, "connection closed inside a body"
        body += chunk
    return int(lines[0].split()[1]), headers, body


def _sigterm(run: Running) -> None:
    n = len(run.rx.messages)
    run.proc.terminate()
    run.rx.wait_for("STOPPING", "1", timeout=10, since=n)


def test_ready_when_serving_on_named_socket() -> None:
    """READY=1 only once serving; the socket named 'http' (not the decoy) is served."""
    with running(example("adapter_http_server.py")) as run:
        check_ready_then_serves(run)


def test_sigterm_drains_in_flight_request() -> None:
    """SIGTERM: STOPPING=1, the slow request completes, the process exits."""
    with running(example("adapter_http_server.py")) as run:
        check_sigterm_drains(run)


def test_make_server_keeps_backlog_and_socket() -> None:
    """make_server uses the given socket as is: same fd, no re-listen (backlog unchanged)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(7)
    try:
        server = http_server.make_server(sock, BaseHTTPRequestHandler)
        assert isinstance(server, ThreadingHTTPServer)
        assert server.socket is sock
        assert server.server_address == sock.getsockname()
        from sdactivate.adapters._lifecycle import backlog_of

        assert backlog_of([sock]) == 7
    finally:
        sock.close()


def test_hammer_time_ends_a_request_longer_than_the_drain() -> None:
    """A request longer than drain_timeout does not hold the process: it exits at the
    deadline (well before the request would end) and that request gets no answer."""
    import os
    import socket as socket_module

    env = {k: v for k, v in os.environ.items() if not k.startswith(("LISTEN_", "NOTIFY_"))}
    env["EXAMPLE_DRAIN_TIMEOUT"] = "0.5"
    with running(example("adapter_http_server.py"), env=env) as run:
        run.rx.wait_for("READY", "1", timeout=20)
        conn = socket_module.create_connection(("127.0.0.1", run.port), timeout=30)
        conn.sendall(b"GET /sleep?ms=60000 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        run.rx.wait_for("STATUS", "busy", timeout=10)
        run.proc.terminate()
        assert run.proc.wait(20) == 0  # the 60 s request would hold it far longer
        assert conn.recv(65536) == b""  # cut off at hammer time: no response
        conn.close()


def test_idle_keepalive_connection_does_not_hold_the_exit() -> None:
    """A keep-alive connection idle at SIGTERM is closed (clean EOF) after the idle grace:
    the process exits long before its 30 s drain deadline."""
    with running(example("adapter_http_server.py"), env=_env(30)) as run:
        run.rx.wait_for("READY", "1", timeout=20)
        with socket.create_connection(("127.0.0.1", run.port), timeout=30) as conn:
            conn.sendall(KEEP_ALIVE)
            status, headers, _ = _response(conn)
            assert status == 200 and headers.get("connection") != "close", headers
            started = time.monotonic()
            _sigterm(run)
            assert run.proc.wait(10) == 0  # hammer time would be 30 s
            assert conn.recv(1) == b""  # closed by the server, not reset
        assert time.monotonic() - started < 10


def test_busy_keepalive_connection_gets_connection_close() -> None:
    """A keep-alive request in progress at SIGTERM is answered with Connection: close, the
    connection then closes, and the process exits without waiting for the deadline."""
    with running(example("adapter_http_server.py"), env=_env(30)) as run:
        run.rx.wait_for("READY", "1", timeout=20)
        with socket.create_connection(("127.0.0.1", run.port), timeout=30) as conn:
            conn.sendall(b"GET /sleep?ms=700 HTTP/1.1\r\nHost: t\r\n\r\n")
            run.rx.wait_for("STATUS", "busy", timeout=10)
            _sigterm(run)
            status, headers, body = _response(conn)
            assert (status, headers.get("connection")) == (200, "close"), headers
            assert body.startswith(b"ok pid="), body
            assert conn.recv(1) == b""
        assert run.proc.wait(10) == 0


def test_request_on_an_idle_connection_right_after_sigterm_is_answered() -> None:
    """A request sent on an idle keep-alive connection just after SIGTERM (within the idle
    grace) is still answered, and the connection is closed after it."""
    with running(example("adapter_http_server.py"), env=_env(30)) as run:
        run.rx.wait_for("READY", "1", timeout=20)
        with socket.create_connection(("127.0.0.1", run.port), timeout=30) as conn:
            conn.sendall(KEEP_ALIVE)
            assert _response(conn)[0] == 200
            _sigterm(run)
            conn.sendall(KEEP_ALIVE)
            status, _, body = _response(conn)
            assert status == 200 and body.startswith(b"ok pid="), body
            assert conn.recv(1) == b""  # Connection: close, or closed after the grace
        assert run.proc.wait(10) == 0


def test_sigterm_of_one_of_two_processes_under_keepalive_load() -> None:
    """Two processes share the socket; open-loop keep-alive load; SIGTERM to one: it drains
    and exits while the load goes on (its keep-alive connections do not hold it to the
    deadline), the other serves on, and no request fails."""
    with sharing(example("adapter_http_server.py"), 2, env=_env(30)) as (first, second):
        load = loadgen.start("127.0.0.1", first.port, rate=300, duration=20, keepalive=True)
        try:
            time.sleep(1.0)  # load on both processes first (shapes the run, orders nothing)
            _sigterm(first)
            assert first.proc.wait(10) == 0  # the load is still running
            time.sleep(1.0)  # and goes on against the other process alone
        finally:
            load.stop()
        res = load.result()
        assert second.proc.poll() is None
    assert res.failed == 0 and res.ok == res.total > 600, res.summary()
    # Which process accepts each pooled connection is the kernel's choice; the one that
    # stays must have served (the other one may have, or may not).
    assert second.proc.pid in res.pids(), res.pids()


class _Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST

    def log_message(self, format: str, *args: object) -> None:
        pass


def _in_process(idle_grace: float) -> tuple[Any, socket.socket]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    server = http_server.make_server(sock, _Echo, idle_grace=idle_grace)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    return server, sock


def test_drain_answers_with_connection_close_but_not_on_100_continue() -> None:
    """Once draining, a request on an open keep-alive connection and a new connection's
    request (through a 100 Continue interim response) are answered with Connection: close
    on the final response only; then every connection is closed."""
    server, sock = _in_process(idle_grace=5)
    try:
        port = sock.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port), timeout=10) as kept:
            kept.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nab")
            assert _response(kept)[1].get("connection") is None  # kept alive
            conns = server.sdactivate_connections
            conns.start_drain()
            kept.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\ncd")
            status, headers, body = _response(kept)
            assert (status, headers.get("connection"), body) == (200, "close", b"cd")
            assert kept.recv(1) == b""
        with socket.create_connection(("127.0.0.1", port), timeout=10) as new:
            new.sendall(
                b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n"
            )
            interim = b""
            while b"\r\n\r\n" not in interim:
                interim += new.recv(1)
            assert interim.startswith(b"HTTP/1.1 100") and b"onnection" not in interim, interim
            new.sendall(b"ef")
            status, headers, body = _response(new)
            assert (status, headers.get("connection"), body) == (200, "close", b"ef")
        assert conns.wait_idle(time.monotonic() + 10)
    finally:
        server.shutdown()
        sock.close()


def test_idle_grace_zero_closes_idle_connections_at_the_drain() -> None:
    """idle_grace=0: a keep-alive connection idle when the drain starts is closed (FIN) at
    once and the server has no connection left; a negative grace is refused."""
    server, sock = _in_process(idle_grace=0)
    try:
        with socket.create_connection(("127.0.0.1", sock.getsockname()[1]), timeout=10) as c:
            c.sendall(KEEP_ALIVE)
            assert _response(c)[0] == 200
            server.sdactivate_connections.start_drain()
            assert c.recv(1) == b""
        assert server.sdactivate_connections.wait_idle(time.monotonic() + 10)
    finally:
        server.shutdown()
        sock.close()
    with pytest.raises(ValueError, match="idle_grace"):
        http_server.make_server(sock, _Echo, idle_grace=-1)


class _NoDelay(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        value = self.connection.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        body = str(value).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_accepted_tcp_connections_have_nagle_off() -> None:
    """Accepted TCP connections get TCP_NODELAY: the handler's separate head and body writes
    must not wait for the client's delayed ACK on keep-alive connections."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    server = http_server.make_server(sock, _NoDelay)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        with socket.create_connection(("127.0.0.1", sock.getsockname()[1]), timeout=10) as c:
            c.sendall(KEEP_ALIVE)
            status, _, body = _response(c)
            assert (status, body) == (200, b"1")
    finally:
        server.shutdown()
        sock.close()
