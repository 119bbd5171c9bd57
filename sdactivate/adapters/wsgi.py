"""WSGI apps on inherited sockets: stdlib ``wsgiref`` or waitress.

::

    from sdactivate.adapters import wsgi
    wsgi.serve_waitress(app)     # or wsgi.serve_wsgiref(app); blocks until SIGTERM + drain

waitress takes pre-bound sockets (``create_server(app, sockets=[...])``, waitress >= 1.2)
but calls ``listen(adj.backlog)`` on them; the adapter passes the socket's own backlog. It
cannot mix AF_UNIX with AF_INET sockets (waitress ``Adjustments``). ``wsgiref`` runs on a
threading ``WSGIServer`` that never binds or re-``listen()``s. Try it::

    systemd-socket-activate -l 127.0.0.1:8080 --fdname=http python examples/adapter_waitress.py
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING, Any

from .. import _signals
from . import http_server
from ._lifecycle import (
    DEFAULT_DRAIN_TIMEOUT,
    StopTrigger,
    announce_ready,
    announce_stopping,
    backlog_of,
    pick,
)

if TYPE_CHECKING:
    from ..upgrade import Upgrader

__all__ = ["serve_waitress", "serve_wsgiref"]

log = logging.getLogger("sdactivate.adapters.wsgi")

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
_DRAIN_POLL = 0.05  # seconds between drain checks (only while stopping)


def serve_wsgiref(
    app: WSGIApp,
    *,
    sockets: Sequence[socket.socket] | None = None,
    drain_timeout: float = DEFAULT_DRAIN_TIMEOUT,
    upgrader: Upgrader | None = None,
    status: str | None = None,
) -> None:
    """Serve ``app`` with ``wsgiref`` (one thread per connection) until SIGTERM.

    Same lifecycle as :func:`sdactivate.adapters.http_server.serve`.
    """
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

    class ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
        daemon_threads = True

    class QuietHandler(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            log.debug("%s " + format, self.address_string(), *args)

    def setup(server: Any) -> None:
        server.setup_environ()  # what WSGIServer.server_bind would do
        server.set_app(app)

    http_server.serve(
        QuietHandler,
        sockets=sockets,
        server_class=ThreadingWSGIServer,
        drain_timeout=drain_timeout,
        upgrader=upgrader,
        status=status,
        setup=setup,
    )


def serve_waitress(
    app: WSGIApp,
    *,
    sockets: Sequence[socket.socket] | None = None,
    drain_timeout: float = DEFAULT_DRAIN_TIMEOUT,
    upgrader: Upgrader | None = None,
    status: str | None = None,
    **adjustments: Any,
) -> None:
    """Serve ``app`` with waitress until SIGTERM/SIGINT (or the upgrader's exit).

    ``adjustments`` are waitress settings (``threads=``, ``channel_timeout=``...; not
    ``host``/``port``/``listen``/``sockets``). READY=1 once the server is built and its
    loop runs. On stop: STOPPING=1, the listeners stop accepting, requests being handled
    or written get ``drain_timeout`` seconds, then it returns (waitress threads are
    daemons: exit the process).
    """
    from waitress.server import BaseWSGIServer, create_server

    socks = pick(sockets, upgrader)
    trigger = StopTrigger(upgrader=upgrader)
    try:
        adjustments.setdefault("backlog", backlog_of(socks))
        # waitress's worker threads (started by create_server) and its loop block the stop
        # signals, so they reach this thread, which waits for them
        with _signals.threads_without_stop_signals():
            server: Any = create_server(app, sockets=socks, **adjustments)
            socket_map: dict[int, Any] = server.map if hasattr(server, "map") else server._map
            loop = threading.Thread(target=server.run, name="sdactivate-waitress", daemon=True)
            loop.start()
        announce_ready(upgrader, status)
        trigger.wait()
    finally:
        announce_stopping(drain_timeout)
        trigger.close()
    deadline = time.monotonic() + drain_timeout
    listeners = [d for d in _snapshot(socket_map) if isinstance(d, BaseWSGIServer)]

    def stop_accepting() -> None:  # runs in the waitress loop thread
        for listener in listeners:
            listener.accepting = False

    listeners[0].trigger.pull_trigger(stop_accepting)
    while time.monotonic() < deadline and not _idle(socket_map):
        time.sleep(_DRAIN_POLL)


def _snapshot(socket_map: dict[int, Any]) -> list[Any]:
    while True:
        try:
            return list(socket_map.values())
        except RuntimeError:  # changed size during iteration (the loop thread)
            continue


def _idle(socket_map: dict[int, Any]) -> bool:
    from waitress.channel import HTTPChannel

    dispatcher = None
    for channel in _snapshot(socket_map):
        if isinstance(channel, HTTPChannel):
            dispatcher = channel.server.task_dispatcher
            if channel.requests or channel.total_outbufs_len:
                return False
    return dispatcher is None or not dispatcher.queue
