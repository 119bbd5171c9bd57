"""ASGI apps on inherited sockets: uvicorn or hypercorn.

::

    from sdactivate.adapters import asgi
    asgi.serve_uvicorn(app)      # or asgi.serve_hypercorn(app); blocks until SIGTERM + drain

uvicorn: ``Server.run(sockets=[...])`` with the real socket objects (not ``--fd``, which
labels every fd ``AF_UNIX``); READY=1 once ``Server.started`` (vllm's fix for uvicorn
#678). hypercorn: ``config.bind = ["fd://N"]`` on a duplicate of each fd (hypercorn wraps
and closes the number it is given); READY=1 when hypercorn awaits its shutdown trigger,
which it does only after every server accepts. Both re-``listen()`` with
``config.backlog``: the adapter passes the socket's own. Try it::

    systemd-socket-activate -l 127.0.0.1:8080 --fdname=http \
        python examples/adapter_asgi.py uvicorn
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from .._signals import LoopStopSignals
from ._http_drain import DEFAULT_IDLE_GRACE
from ._lifecycle import DEFAULT_DRAIN_TIMEOUT, announce_ready, announce_stopping, backlog_of, pick
from .asyncio_server import stop_accepting

if TYPE_CHECKING:
    from ..upgrade import Upgrader

__all__ = ["serve_hypercorn", "serve_uvicorn"]

ASGIApp = Callable[..., Awaitable[None]]
_IDLE_POLL = 0.01  # seconds between looks at uvicorn's connections (only while stopping)


def serve_uvicorn(
    app: ASGIApp | str,
    *,
    sockets: Sequence[socket.socket] | None = None,
    drain_timeout: float = DEFAULT_DRAIN_TIMEOUT,
    upgrader: Upgrader | None = None,
    status: str | None = None,
    idle_grace: float = DEFAULT_IDLE_GRACE,
    **config: Any,
) -> None:
    """Run ``app`` with uvicorn on the sockets until SIGTERM/SIGINT or the upgrader's exit.

    ``config`` goes to ``uvicorn.Config`` (``log_level=``, ``lifespan=``...; not
    ``host``/``port``/``fd``/``uds``). READY=1 after startup (lifespan done, servers
    accepting); STOPPING=1 when shutdown begins; the listeners stop accepting, a connection
    that has not sent its first request yet gets up to ``idle_grace`` seconds for it, then
    uvicorn closes idle connections, asks busy keep-alive ones to close and cancels what
    still runs after ``drain_timeout`` (``timeout_graceful_shutdown``). uvicorn handles
    SIGTERM/SIGINT itself and re-raises the signal after the drain (exit status -15 under
    systemd counts as clean).
    """
    import uvicorn

    socks = pick(sockets, upgrader)
    config.setdefault("backlog", backlog_of(socks))
    config.setdefault("timeout_graceful_shutdown", drain_timeout)

    class Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets=sockets)
            if self.started and not self.should_exit:
                announce_ready(upgrader, status)

        async def on_tick(self, counter: int) -> bool:
            if upgrader is not None and upgrader.wait_exit(0):
                self.should_exit = True
            return bool(await super().on_tick(counter))

        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            announce_stopping(drain_timeout)
            loop = asyncio.get_running_loop()
            fds = [sock.fileno() for server in self.servers for sock in server.sockets]
            await stop_accepting(loop, fds)
            # uvicorn's shutdown closes every connection with no request in progress, also
            # one accepted a moment ago whose request is still on its way (its client then
            # sees a reset): those (no request yet: ``cycle`` None) get idle_grace first.
            deadline = loop.time() + idle_grace
            while loop.time() < deadline and any(
                getattr(conn, "cycle", False) is None for conn in self.server_state.connections
            ):
                await asyncio.sleep(_IDLE_POLL)
            await super().shutdown(sockets=sockets)

    Server(uvicorn.Config(app, **config)).run(sockets=socks)


def serve_hypercorn(
    app: ASGIApp,
    *,
    sockets: Sequence[socket.socket] | None = None,
    drain_timeout: float = DEFAULT_DRAIN_TIMEOUT,
    upgrader: Upgrader | None = None,
    status: str | None = None,
    config: Any = None,
) -> None:
    """Run ``app`` with hypercorn (asyncio) until SIGTERM/SIGINT or the upgrader's exit.

    ``config`` is a ``hypercorn.config.Config`` (its ``bind`` is replaced by ``fd://``
    entries, ``backlog`` and ``graceful_timeout`` are set). READY=1 once hypercorn serves
    every socket; on stop STOPPING=1, hypercorn stops accepting and waits up to
    ``drain_timeout`` for running requests.
    """
    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    socks = pick(sockets, upgrader)
    cfg = config if config is not None else Config()
    fds = [os.dup(sock.fileno()) for sock in socks]  # hypercorn owns and closes these
    identities = [_identity(fd) for fd in fds]
    cfg.bind = [f"fd://{fd}" for fd in fds]
    cfg.insecure_bind = []
    cfg.backlog = backlog_of(socks)
    cfg.graceful_timeout = drain_timeout

    async def shutdown_trigger() -> None:
        # hypercorn awaits this only once every server accepts: the moment to say READY.
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        signals: LoopStopSignals | None = None
        if upgrader is not None:
            waiter = loop.run_in_executor(None, upgrader.wait_exit)
            waiter.add_done_callback(lambda _: stop.set())
        else:
            signals = LoopStopSignals(loop, lambda _: stop.set())
        announce_ready(upgrader, status)
        try:
            await stop.wait()
        finally:
            if signals is not None:
                signals.uninstall()  # after a stop signal, a repeat is ignored
            announce_stopping(drain_timeout)
            await stop_accepting(loop, fds)  # hypercorn serves the fd:// numbers as they are

    try:
        asyncio.run(serve(app, cfg, shutdown_trigger=shutdown_trigger))
    finally:
        for fd, identity in zip(fds, identities, strict=True):
            if _identity(fd) == identity:  # hypercorn did not close it (and not reused)
                os.close(fd)
        if upgrader is not None:
            upgrader.stop("server stopped")


def _identity(fd: int) -> tuple[int, int] | None:
    try:
        st = os.fstat(fd)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)
