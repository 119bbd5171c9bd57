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
import os
import select
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socketserver import BaseRequestHandler, BaseServer
from typing import TYPE_CHECKING, Any, TypeVar

from ._lifecycle import DEFAULT_DRAIN_TIMEOUT, StopTrigger, announce_ready, announce_stopping, pick

if TYPE_CHECKING:
    from ..upgrade import Upgrader

__all__ = ["make_server", "serve"]

ServerT = TypeVar("ServerT", bound=BaseServer)

log = logging.getLogger("sdactivate.adapters.http_server")

# seconds a connection idle at the drain gets for one more request: closing it at once races
# with a request already on its way (the client then sees the connection close unanswered)
DEFAULT_IDLE_GRACE = 1.0


class _Connections:
    """The connections a server has accepted, and its drain.

    A connection counts from ``process_request`` (in the accept loop, before its handler
    thread starts) to ``shutdown_request`` (after its socket is closed), so a drain never
    misses one accepted a moment before. :meth:`start_drain` makes ``fileno()`` readable for
    good: every handler waiting for a request wakes up (see :class:`_DrainingHandler`).
    """

    def __init__(self, idle_grace: float) -> None:
        self.idle_grace = idle_grace
        self.drain_started: float | None = None
        self._cond = threading.Condition()
        self._open: set[int] = set()
        self._wake_r, self._wake_w = os.pipe()  # non-inheritable (PEP 446)

    def fileno(self) -> int:
        return self._wake_r

    def opened(self, request: object) -> None:
        with self._cond:
            self._open.add(id(request))

    def closed(self, request: object) -> None:
        with self._cond:
            self._open.discard(id(request))
            self._cond.notify_all()

    def start_drain(self) -> None:
        with self._cond:
            if self.drain_started is None:
                self.drain_started = time.monotonic()
                os.write(self._wake_w, b"d")

    def wait_idle(self, deadline: float) -> bool:
        """Wait until every connection is closed (or ``deadline``): True if they are."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._open, deadline - time.monotonic())

    @property
    def count(self) -> int:
        return len(self._open)

    def close(self) -> None:
        """Release the wake-up pipe (only once no handler can be waiting on it)."""
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)


class _DrainingHandler(BaseHTTPRequestHandler):
    """Mixed in before an app's ``BaseHTTPRequestHandler`` subclass by :func:`make_server`.

    Between requests the handler thread waits for the next request's first byte *and* the
    drain (``select.poll``), so the decision to close an idle connection is taken by the
    thread that would read the request: no request is cut half-read. Once draining:

    * a response that would keep the connection open says ``Connection: close`` (and the
      connection closes after it): the client knows not to send another request;
    * a connection waiting for a request gets ``idle_grace`` seconds (from when it became
      idle, or from the drain's start) for one more, then is closed (FIN): a request already
      on the wire when the drain began is still answered.

    The handler's own ``timeout`` (if set) still ends an idle wait, as in ``http.server``.
    """

    def handle(self) -> None:
        # wsgiref's handler reads its one request in handle(), not handle_one_request()
        if self._sdactivate_next_request():
            super().handle()

    def handle_one_request(self) -> None:
        if self._sdactivate_next_request():
            super().handle_one_request()

    def send_response_only(self, code: int, message: str | None = None) -> None:
        self._sdactivate_status = code
        self._sdactivate_connection_sent = False
        super().send_response_only(code, message)

    def send_header(self, keyword: str, value: str) -> None:
        if keyword.lower() == "connection":
            self._sdactivate_connection_sent = True
        super().send_header(keyword, value)

    def end_headers(self) -> None:
        conns = _connections_of(self.server)
        if (
            conns is not None
            and conns.drain_started is not None
            and not self.close_connection
            and getattr(self, "_sdactivate_status", 0) >= 200  # not a 1xx interim response
            and not getattr(self, "_sdactivate_connection_sent", True)
        ):
            self.send_header("Connection", "close")  # sets close_connection (http.server)
        super().end_headers()

    def _sdactivate_next_request(self) -> bool:
        """Wait until the next request starts: True to read it, False to close instead."""
        conns = _connections_of(self.server)
        if conns is None or self._sdactivate_buffered():
            return True
        sock = self.connection
        timeout = sock.gettimeout()  # the handler's own `timeout`, None for none
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        idle_since = time.monotonic()
        if conns.drain_started is None:
            poller.register(conns, select.POLLIN)
            ready = poller.poll(None if timeout is None else timeout * 1000)
            if not ready:
                self.close_connection = True  # http.server's request timeout
                return False
            if any(fd == sock.fileno() for fd, _ in ready):
                return True
            poller.unregister(conns)
        started = conns.drain_started
        assert started is not None
        remaining = max(idle_since, started) + conns.idle_grace - time.monotonic()
        if remaining > 0 and poller.poll(remaining * 1000):
            return True
        self.close_connection = True  # idle at the drain: FIN, no response
        return False

    def _sdactivate_buffered(self) -> bool:
        """Whether the next request's first bytes are already here (read ahead into
        ``rfile``, or in the kernel): a non-blocking ``peek``."""
        peek = getattr(self.rfile, "peek", None)
        if peek is None:  # unbuffered (rbufsize=0): nothing read ahead
            return False
        sock = self.connection
        timeout = sock.gettimeout()
        sock.setblocking(False)
        try:
            return bool(peek(1))
        except OSError:
            return True  # let http.server meet the error
        finally:
            sock.settimeout(timeout)


def _connections_of(server: object) -> _Connections | None:
    conns = getattr(server, "sdactivate_connections", None)
    return conns if isinstance(conns, _Connections) else None


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
    keep-alive drain of :class:`_DrainingHandler` (``idle_grace`` seconds for a connection
    idle at the drain).
    """
    conns = _Connections(idle_grace)
    if isinstance(handler, type) and issubclass(handler, BaseHTTPRequestHandler):
        handler = type(handler.__name__, (_DrainingHandler, handler), {})
        handler.__qualname__ = handler.__bases__[1].__qualname__

    class _Server(server_class):  # type: ignore[valid-type,misc]
        def process_request(self, request: Any, client_address: Any) -> None:
            conns.opened(request)  # before the handler thread starts
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
