"""sdactivate.adapters.http_server: READY when serving, named socket, SIGTERM drain."""

from __future__ import annotations

import socket
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from _adapter_harness import check_ready_then_serves, check_sigterm_drains, example, running

from sdactivate.adapters import http_server


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
