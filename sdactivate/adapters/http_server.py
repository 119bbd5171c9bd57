"""stdlib ``http.server`` / ``socketserver`` on inherited sockets.

::

    from http.server import BaseHTTPRequestHandler
    from sdactivate.adapters import http_server

    http_server.serve(MyHandler)          # LISTEN_FDS sockets; blocks until SIGTERM

``socketserver`` always creates (and ``server_bind``/``server_activate`` would re-bind and
re-``listen()``) its own socket; :func:`make_server` builds the server without binding,
swaps in the inherited socket and never calls ``listen()``, so the socket unit's
``Backlog=`` stays. Try it::

    systemd-socket-activate -l 127.0.0.1:8080 python examples/adapter_http_server.py
"""

from __future__ import annotations

import contextlib
import logging
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socketserver import BaseRequestHandler, BaseServer
from typing import TYPE_CHECKING, Any, TypeVar

from .._signals import threads_without_stop_signals
from ._http_drain import DEFAULT_IDLE_GRACE, Connections, DrainingHandler
from ._lifecycle import DEFAULT_DRAIN_TIMEOUT, StopTrigger, announce_ready, announce_stopping, pick

if TYPE_CHECKING:
    from ..upgrade import Upgrader

__all__ = ["DEFAULT_IDLE_GRACE", "make_server", "serve"]

ServerT = TypeVar("ServerT", bound=BaseServer)

log = logging.getLogger("sdactivate.adapters.http_server")


def make_server(
    sock: socket.socket,
    handler: type[BaseRequestHandler],
    *,
    server_class: type[ServerT] = ThreadingHTTPServer,  # type: ignore[assignment]
    idle_grace: float = DEFAULT_IDLE_GRACE,
) -> ServerT:
    """A ``socketserver`` server of ``server_class`` serving the listening ``sock``.

    The socket is used as is (no bind, no ``listen()``), made non-blocking so that two
    generations sharing it never block in ``accept()``. Connections are tracked for
    :func:`serve`'s drain; an ``http.server.BaseHTTPRequestHandler`` subclass gets the
    keep-alive drain of ``_http_drain.DrainingHandler`` (``idle_grace`` seconds for a connection
    idle at the drain).
    """
    conns = Connections(idle_grace)
    if isinstance(handler, type) and issubclass(handler, BaseHTTPRequestHandler):
        handler = type(handler.__name__, (DrainingHandler, handler), {})
        handler.__qualname__ = handler.__bases__[1].__qualname__

    class _Server(server_class):  # type: ignore[valid-type,misc]
        def process_request(self, request: Any, client_address: Any) -> None:
            conns.opened(request)  # before the handler thread starts
            if request.family in (socket.AF_INET, socket.AF_INET6):
                # BaseHTTPRequestHandler writes the head and the body in two send()s; with
                # Nagle on, the body waits for the client's delayed ACK (~40 ms a request on
                # keep-alive connections). tcp(7): TCP_NODELAY.
                with contextlib.suppress(OSError):
                    request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            super().process_request(request, client_address)

        def shutdown_request(self, request: Any) -> None:
            try:
                super().shutdown_request(request)
            finally:
                conns.closed(request)

        def handle_error(self, request: Any, client_address: Any) -> None:
            # socketserver prints tracebacks to stderr; a client gone away is routine.
            exc = sys.exc_info()[1]
            if isinstance(exc, ConnectionError):
                log.debug("client %s went away: %s", client_address, exc)
            else:
                log.exception("error handling a request from %s", client_address)

    _Server.__name__ = _Server.__qualname__ = server_class.__name__
    server: Any = _Server(sock.getsockname(), handler, bind_and_activate=False)
    server.socket.close()  # the unbound socket socketserver always creates
    sock.setblocking(False)
    server.socket = sock
    server.server_address = sock.getsockname()
    if isinstance(server.server_address, tuple):  # what HTTPServer.server_bind would set
        server.server_name, server.server_port = server.server_address[:2]
    server.sdactivate_connections = conns
    return server  # type: ignore[no-any-return]


def serve(
    handler: type[BaseRequestHandler],
    *,
    sockets: Sequence[socket.socket] | None = None,
    server_class: type[BaseServer] = ThreadingHTTPServer,
    drain_timeout: float = DEFAULT_DRAIN_TIMEOUT,
    upgrader: Upgrader | None = None,
    status: str | None = None,
    setup: Callable[[Any], None] | None = None,
    idle_grace: float = DEFAULT_IDLE_GRACE,
) -> None:
    """Serve ``handler`` on every socket until SIGTERM/SIGINT (or the upgrader's exit).

    Sockets: ``sockets``, else ``upgrader.sockets()``, else ``LISTEN_FDS``
    (:class:`~sdactivate.ActivationError` if none). READY=1 (with ``status``) once every
    accept loop runs. On stop: STOPPING=1 (no-op after an upgrade handed over), stop
    accepting (connections still queued stay in the socket for whoever shares it), then
    drain keep-alive connections (``http.server`` handlers): responses say ``Connection:
    close``, a connection idle for ``idle_grace`` seconds of the drain is closed; return as
    soon as every accepted connection is closed, or at ``drain_timeout`` seconds anyway
    (hammer time: handler threads are daemons). The sockets are not closed.
    ``setup(server)`` runs on each server before it starts (``wsgi`` uses it to install the
    app).
    """
    socks = pick(sockets, upgrader)
    trigger = StopTrigger(upgrader=upgrader)
    servers: list[Any] = []
    try:
        for sock in socks:
            server = make_server(sock, handler, server_class=server_class, idle_grace=idle_grace)
            if setup is not None:
                setup(server)
            thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": 0.25},
                name=f"sdactivate-http-{sock.fileno()}",
                daemon=True,
            )
            # The accept loop and the handler threads it starts block the stop signals, so
            # they reach this thread, which waits for them.
            with threads_without_stop_signals():
                thread.start()
            servers.append(server)  # only running loops: shutdown() waits for the loop
        announce_ready(upgrader, status)
        trigger.wait()
    finally:
        announce_stopping(drain_timeout)
        deadline = time.monotonic() + drain_timeout
        for server in servers:
            server.sdactivate_connections.start_drain()  # before the accept loop ends
        for server in servers:
            server.shutdown()  # the accept loop ends; handlers keep running
        for server in servers:
            conns = server.sdactivate_connections
            if conns.wait_idle(deadline):
                conns.close()
            else:
                log.warning("drain deadline: %d connection(s) still open, cut off", conns.count)
        trigger.close()
