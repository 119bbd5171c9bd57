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
