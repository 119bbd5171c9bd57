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
from ._http_drain import DEFAULT_IDLE_GRACE
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
_JOIN_TIMEOUT = 1.0  # seconds for waitress's loop and workers to end after the drain


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
    idle_grace: float = DEFAULT_IDLE_GRACE,
    **adjustments: Any,
) -> None:
    """Serve ``app`` with waitress until SIGTERM/SIGINT (or the upgrader's exit).

    ``adjustments`` are waitress settings (``threads=``, ``channel_timeout=``...; not
    ``host``/``port``/``listen``/``sockets``). READY=1 once the server is built and its
    loop runs. On stop: STOPPING=1, the listeners stop accepting, requests being read,
    handled or written get ``drain_timeout`` seconds, and a connection without one gets
    ``idle_grace`` seconds (from the drain's start or its last activity) for one; then
    waitress's loop ends (what is still connected is closed) and it returns once that
    thread and the idle workers are joined (a worker still in a request is left behind
    after 1 s: daemon threads, exit the process). The sockets are not closed.
    """
    from waitress.server import create_server

    socks = pick(sockets, upgrader)
    trigger = StopTrigger(upgrader=upgrader)
    server: Any = None
    loop: threading.Thread | None = None
    try:
        adjustments.setdefault("backlog", backlog_of(socks))
        # waitress's worker threads (started by create_server) and its loop block the stop
        # signals, so they reach this thread, which waits for them
        with _signals.threads_without_stop_signals():
            server = create_server(app, sockets=socks, **adjustments)
            loop = threading.Thread(target=server.run, name="sdactivate-waitress", daemon=True)
            loop.start()
        announce_ready(upgrader, status)
        trigger.wait()
    finally:
        announce_stopping(drain_timeout)
        trigger.close()
        if server is not None:
            _stop_waitress(server, loop, time.monotonic() + drain_timeout, idle_grace)


def _stop_waitress(
    server: Any, loop: threading.Thread | None, deadline: float, idle_grace: float
) -> None:
    """Stop accepting, drain until ``deadline``, then end waitress's loop and its workers.

    The loop thread and the workers are joined (bounded): a loop left polling sockets the
    caller closes next logs "Bad file descriptor" and dies with them. The listening sockets
    are the caller's and stay open; connections still open at the deadline are closed.
    """
    from waitress.server import BaseWSGIServer

    socket_map: dict[int, Any] = server.map if hasattr(server, "map") else server._map
    listeners = [d for d in _snapshot(socket_map) if isinstance(d, BaseWSGIServer)]
    if loop is not None and listeners:
        _end_loop(socket_map, listeners, loop, deadline, idle_grace)
    # Idle workers exit at once; one still running a request at the deadline is left
    # (daemon threads) after a short wait rather than holding up the exit.
    server.task_dispatcher.shutdown(cancel_pending=True, timeout=_JOIN_TIMEOUT)


def _end_loop(
    socket_map: dict[int, Any],
    listeners: list[Any],
    loop: threading.Thread,
    deadline: float,
    idle_grace: float,
) -> None:
    from waitress.server import BaseWSGIServer

    in_loop = listeners[0].trigger.pull_trigger  # runs a callable in the loop thread

    stopped = threading.Event()

    def stop_accepting() -> None:
        for listener in listeners:
            listener.accepting = False
        stopped.set()

    in_loop(stop_accepting)
    # Until the loop thread has run it, the loop may still accept: a connection accepted
    # then and judged after an "idle" look taken before would be closed with its request
    # unread (a reset, about one per 100 handovers under load).
    stopped.wait(max(0.0, deadline - time.monotonic()))
    started = time.time()  # waitress times its channels' activity with time.time()
    while time.monotonic() < deadline and not _idle(socket_map, started, idle_grace):
        time.sleep(_DRAIN_POLL)

    def end_loop() -> None:  # waitress's loop returns once its map is empty
        for dispatcher in list(socket_map.values()):
            if isinstance(dispatcher, BaseWSGIServer):
                dispatcher.del_channel()  # out of the map; the socket stays open
            else:
                dispatcher.close()  # connections cut off at the deadline, the trigger

    in_loop(end_loop)
    loop.join(_JOIN_TIMEOUT)
    if loop.is_alive():
        log.warning("waitress loop still running %gs after the drain", _JOIN_TIMEOUT)


def _snapshot(socket_map: dict[int, Any]) -> list[Any]:
    while True:
        try:
            return list(socket_map.values())
        except RuntimeError:  # changed size during iteration (the loop thread)
            continue


def _idle(socket_map: dict[int, Any], started: float, idle_grace: float) -> bool:
    """Nothing left to drain: no request being read, run or answered, and no connection
    that had activity less than ``idle_grace`` s ago or since the drain started (a request
    may be on its way: a connection accepted just before the drain has not been read yet,
    and closing it with its request unread resets it)."""
    from waitress.channel import HTTPChannel

    dispatcher = None
    quiet_since = time.time() - idle_grace
    for channel in _snapshot(socket_map):
        if isinstance(channel, HTTPChannel):
            dispatcher = channel.server.task_dispatcher
            if channel.requests or channel.total_outbufs_len or channel.request is not None:
                return False
            if max(started, channel.last_activity) > quiet_since:
                return False
    return dispatcher is None or not dispatcher.queue
