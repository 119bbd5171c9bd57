"""``asyncio.start_server`` stream handlers on inherited sockets.

::

    async def handle(reader, writer): ...
    asyncio_server.run(handle)           # LISTEN_FDS sockets; returns after SIGTERM + drain

``loop.create_server(sock=)`` re-``listen()``s with its ``backlog`` (default 100, CPython
``base_events.Server._start_serving``); the adapter passes the socket's current backlog so
the socket unit's ``Backlog=`` is kept. Try it::

    systemd-socket-activate -l 127.0.0.1:8080 python examples/adapter_asyncio.py
"""

from __future__ import annotations

import asyncio
import signal
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from ._lifecycle import (
    DEFAULT_DRAIN_TIMEOUT,
    announce_ready,
    announce_stopping,
    backlog_of,
    pick,
)

if TYPE_CHECKING:
    from ..upgrade import Upgrader

__all__ = ["run", "serve"]

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def serve(
    handler: Handler,
    *,
    sockets: Sequence[socket.socket] | None = None,
    drain_timeout: float = DEFAULT_DRAIN_TIMEOUT,
    upgrader: Upgrader | None = None,
    status: str | None = None,
    stop: asyncio.Event | None = None,
    **start_server_kwargs: Any,
) -> None:
    """Serve ``handler`` (an ``asyncio.start_server`` callback) until told to stop.

    Stop: SIGTERM/SIGINT (handlers installed on the running loop unless an ``upgrader``
    handles them), the upgrader's exit, or ``stop`` being set. Sockets: ``sockets``, else
    ``upgrader.sockets()``, else ``LISTEN_FDS``. READY=1 once every socket accepts; on stop
    STOPPING=1, the listening sockets close (other generations keep their copies), running
    handlers get ``drain_timeout`` seconds and are then cancelled.
    """
    socks = pick(sockets, upgrader)
    loop = asyncio.get_running_loop()
    stop = stop if stop is not None else asyncio.Event()
    tasks: set[asyncio.Task[Any]] = set()

    async def tracked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        try:
            await handler(reader, writer)
        finally:
            tasks.discard(task)

    installed: list[signal.Signals] = []
    if upgrader is not None:
        watcher = loop.run_in_executor(None, upgrader.wait_exit)
        watcher.add_done_callback(lambda _: stop.set())
    else:
        for signum in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(signum, stop.set)
                installed.append(signum)
            except (ValueError, RuntimeError):  # not the main thread's loop
                pass
    backlog = backlog_of(socks)
    servers: list[asyncio.base_events.Server] = []
    try:
        for sock in socks:
            servers.append(
                await asyncio.start_server(
                    tracked, sock=sock, backlog=backlog, **start_server_kwargs
                )
            )
        announce_ready(upgrader, status)
        await stop.wait()
    finally:
        announce_stopping(drain_timeout)
        deadline = time.monotonic() + drain_timeout
        for server in servers:
            server.close()  # stop accepting
        while tasks and time.monotonic() < deadline:
            await asyncio.wait(set(tasks), timeout=deadline - time.monotonic())
        for task in list(tasks):  # hammer time
            task.cancel()
        if tasks:
            await asyncio.wait(set(tasks), timeout=1.0)
        for signum in installed:
            loop.remove_signal_handler(signum)
        if upgrader is not None:
            upgrader.stop("server stopped")


def run(handler: Handler, **kwargs: Any) -> None:
    """``asyncio.run(serve(handler, **kwargs))``."""
    asyncio.run(serve(handler, **kwargs))
