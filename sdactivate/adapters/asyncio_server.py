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
import socket
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from .._signals import STOP_SIGNALS, LoopStopSignals
from ._lifecycle import (
    DEFAULT_DRAIN_TIMEOUT,
    announce_ready,
    announce_stopping,
    backlog_of,
    pick,
)

if TYPE_CHECKING:
    from ..upgrade import Upgrader

__all__ = ["on_stop_signals", "run", "serve", "stop_accepting"]

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

    signals: LoopStopSignals | None = None
    if upgrader is not None:
        watcher = loop.run_in_executor(None, upgrader.wait_exit)
        watcher.add_done_callback(lambda _: stop.set())
    else:
        signals = LoopStopSignals(loop, lambda _: stop.set())
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
        await stop_accepting(loop, [sock.fileno() for sock in socks])
        for server in servers:
            server.close()
        while tasks and time.monotonic() < deadline:
            await asyncio.wait(set(tasks), timeout=deadline - time.monotonic())
        for task in list(tasks):  # hammer time
            task.cancel()
        if tasks:
            await asyncio.wait(set(tasks), timeout=1.0)
        if signals is not None:
            signals.uninstall()  # after a stop signal, a repeat is ignored
        if upgrader is not None:
            upgrader.stop("server stopped")


async def stop_accepting(loop: asyncio.AbstractEventLoop, fds: Iterable[int]) -> None:
    """Stop accepting on the listening ``fds``, then give the connections already accepted
    one loop turn to reach their server. Call before ``Server.close()``.

    asyncio accepts in a reader callback and builds each connection's transport in a task
    one turn later; ``Server.close()`` in between makes that transport fail (CPython's
    ``Server._attach`` asserts the server is open) and the connection is closed unanswered:
    about 4 requests in 100 handovers under load. Removing the readers first also cancels
    an accept callback already queued, so what is not accepted stays in the socket for the
    next generation.
    """
    for fd in fds:
        loop.remove_reader(fd)
    # Queued ahead of us: each accepted connection's task (builds the transport), then its
    # protocol's connection_made() (start_server's callback task starts there), then that
    # task's first step: three turns, after which a drain sees every accepted connection.
    for _ in range(3):
        await asyncio.sleep(0)


def run(handler: Handler, **kwargs: Any) -> None:
    """``asyncio.run(serve(handler, **kwargs))``."""
    asyncio.run(serve(handler, **kwargs))


def on_stop_signals(
    callback: Callable[[int], Any], *, signals: Sequence[int] = STOP_SIGNALS
) -> LoopStopSignals:
    """For servers that run their own loop: ``callback(signum)`` in the running loop on each
    SIGTERM/SIGINT, until ``.uninstall()``.

    After a stop signal, ``uninstall()`` leaves the signals *ignored* rather than back at
    their default, in one step: a repeat (``KillMode=control-group`` and ``sdactivate run``
    both send SIGTERM) must not kill the drained process on its way out. asyncio's own
    ``remove_signal_handler()`` goes back to the default, as does closing the loop.
    Call it from a coroutine in the main thread's loop (elsewhere nothing is installed).
    """
    return LoopStopSignals(asyncio.get_running_loop(), callback, signals)
