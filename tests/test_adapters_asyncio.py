"""sdactivate.adapters.asyncio_server: READY when serving, backlog kept, SIGTERM drain."""

from __future__ import annotations

import asyncio
import socket

import pytest

from sdactivate.adapters import asyncio_server
from sdactivate.adapters._lifecycle import backlog_of
from tests._adapter_harness import check_ready_then_serves, check_sigterm_drains, example, running


def test_ready_when_serving_on_named_socket() -> None:
    """READY=1 only once serving; the socket named 'http' (not the decoy) is served."""
    with running(example("adapter_asyncio.py")) as run:
        check_ready_then_serves(run)


def test_sigterm_drains_in_flight_request() -> None:
    """SIGTERM: STOPPING=1, the slow request completes, the process exits."""
    with running(example("adapter_asyncio.py")) as run:
        check_sigterm_drains(run)


def test_backlog_is_not_shrunk(monkeypatch: pytest.MonkeyPatch) -> None:
    """asyncio re-listen()s; the adapter passes the socket's own backlog (4000, not 100)."""
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(4000)
    address = sock.getsockname()

    async def main() -> int:
        stop, served = asyncio.Event(), asyncio.Event()

        async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            served.set()
            w.close()

        task = asyncio.create_task(asyncio_server.serve(handler, sockets=[sock], stop=stop))
        _, writer = await asyncio.wait_for(asyncio.open_connection(*address), 5)
        await asyncio.wait_for(served.wait(), 5)  # serving: listen() has been called again
        seen = backlog_of([sock])
        writer.close()
        stop.set()
        await asyncio.wait_for(task, 5)
        return seen

    try:
        assert asyncio.run(main()) == 4000
    finally:
        sock.close()


def test_connection_accepted_as_the_stop_comes_is_answered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A connection accepted in the loop turn the stop arrives in is served, not dropped:
    asyncio builds its transport one turn later, and Server.close() before that made it fail
    (Server._attach) and closed the connection unanswered."""
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    address = sock.getsockname()

    async def main() -> bytes:
        stop = asyncio.Event()

        async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            w.write(b"answer to " + await r.readline())
            await w.drain()
            w.close()

        task = asyncio.create_task(asyncio_server.serve(handler, sockets=[sock], stop=stop))
        _, writer = await asyncio.wait_for(asyncio.open_connection(*address), 5)
        writer.write(b"warm-up\n")  # its answer means the server accepts
        await writer.drain()
        writer.close()
        # A blocking connect completes in the kernel; the loop sees the listening socket
        # readable in its next turn, after this task's step, in which the stop is set: the
        # accept runs in the same turn as the stop's wake-up, ahead of serve() resuming.
        with socket.create_connection(address, timeout=10) as client:
            client.sendall(b"late\n")
            await asyncio.sleep(0)
            stop.set()
            await asyncio.wait_for(task, 10)
            return client.recv(100)

    try:
        assert asyncio.run(main()) == b"answer to late\n"
    finally:
        sock.close()
