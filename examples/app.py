"""The sdactivate example app: a tiny asyncio HTTP/1.1 server that restarts losing no request.

Sockets, in order of preference:

1. socket activation: ``sdactivate.listeners_by_name()`` (``--name`` picks one fd name; by
   default every inherited socket is served: listening stream sockets as HTTP servers,
   datagram sockets as an echo, a connected socket from an ``Accept=yes`` unit as one HTTP
   connection, after which the app exits);
2. ``--fdstore``: ``sdactivate.fdstore.listen(ADDR, name=...)`` binds once and parks the
   socket in systemd's fd store (``FileDescriptorStoreMax=``), so ``systemctl restart``
   keeps it -- no socket unit needed;
3. otherwise ``sdactivate.listen(ADDR)`` for each ``--listen`` (a plain bind).

It sends ``READY=1`` (with ``STATUS=``) only once every socket is being served, pings the
watchdog from inside its event loop when ``WatchdogSec=`` is set (so a blocked loop gets the
process killed), answers SIGHUP with ``RELOADING=1`` + ``MONOTONIC_USEC=`` then ``READY=1``,
and on SIGTERM sends ``STOPPING=1``, stops accepting (the queue stays in the socket systemd
holds), finishes the requests it has, and exits.

Every response names the process: body ``pid=N gen=G`` and header ``X-Pid: N``, so a client
can tell generations apart. ``GET /hang`` blocks the event loop for good (a hung server);
``--hang-after S`` does the same S seconds after READY.

Try it: ``systemd-socket-activate -l 127.0.0.1:8080 --fdname=http -E PYTHONPATH=$PWD
python3 examples/app.py --name http`` then ``curl -s 127.0.0.1:8080/``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Sequence
from typing import Any, cast

import sdactivate
from sdactivate import fdstore, notify, watchdog

log = logging.getLogger("app")

MAX_HEAD = 16384


class App:
    """State shared by the handlers: generation, in-flight count, draining flag."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.pid = os.getpid()
        self.gen = 0
        self.draining = False
        self.busy = 0  # requests being answered
        self.idle: set[asyncio.StreamWriter] = set()  # keep-alive connections between requests
        self.connections: set[asyncio.Task[None]] = set()  # one task per accepted connection
        self.listening: list[socket.socket] = []
        self.served = 0

    def body(self) -> bytes:
        return f"pid={self.pid} gen={self.gen}\n".encode()

    def start_accepting(self, sock: socket.socket) -> None:
        """Accept from `sock` in a reader callback.

        Not asyncio.start_server(): it re-calls listen() (shrinking the backlog systemd set)
        and accepts in batches whose connections reach the handler only some loop iterations
        later -- a drain cannot see them, and they would be reset at exit. Here every
        accepted connection has its task before the callback returns, and stop_accepting()
        leaves the rest queued in the socket systemd holds, for the next generation.
        """
        sock.setblocking(False)

        def on_readable() -> None:
            for _ in range(64):  # a bounded batch per wake-up
                try:
                    conn, _ = sock.accept()
                except (BlockingIOError, InterruptedError):
                    return
                except OSError as exc:  # ECONNABORTED, EMFILE...: keep serving
                    log.warning("accept: %s", exc)
                    return
                self.spawn(conn)

        asyncio.get_running_loop().add_reader(sock.fileno(), on_readable)
        self.listening.append(sock)

    def stop_accepting(self) -> None:
        loop = asyncio.get_running_loop()
        for sock in self.listening:
            loop.remove_reader(sock.fileno())
            sock.close()  # our copy only: systemd's (socket unit / fd store) keeps the queue
        self.listening.clear()

    def spawn(self, conn: socket.socket) -> None:
        task = asyncio.get_running_loop().create_task(self.serve_connection(conn))
        self.connections.add(task)
        task.add_done_callback(self.connections.discard)

    async def serve_connection(self, conn: socket.socket) -> None:
        try:
            reader, writer = await asyncio.open_connection(sock=conn)
        except OSError:
            conn.close()
            return
        await self.handle(reader, writer)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve HTTP/1.1 requests on one connection until close, EOF or drain."""
        first = True
        try:
            while True:
                if not first:
                    if self.draining:
                        break
                    self.idle.add(writer)
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                    break
                finally:
                    self.idle.discard(writer)
                first = False
                self.busy += 1
                try:
                    keep = await self._answer(head, reader, writer)
                finally:
                    self.busy -= 1
                if not keep:
                    break
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def _answer(
        self, head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split()
        path = parts[1] if len(parts) > 1 else "/"
        version = parts[2] if len(parts) > 2 else "HTTP/1.0"
        headers = {}
        for line in lines[1:]:
            key, sep, value = line.partition(":")
            if sep:
                headers[key.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0") or "0")
        if length:
            await reader.readexactly(length)
        keep = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
        if path == "/hang":
            log.warning("GET /hang: blocking the event loop (simulated hung server)")
            hang()
        status, body = "200 OK", self.body()
        if path == "/env":
            names = ("LISTEN_FDS", "LISTEN_FDNAMES", "NOTIFY_SOCKET", "WATCHDOG_USEC")
            body = json.dumps({k: os.environ.get(k) for k in names}).encode() + b"\n"
        elif path not in ("/", "/hang"):
            status, body = "404 Not Found", b"not found\n"
        keep = keep and not self.draining
        writer.write(
            f"HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
            f"X-Pid: {self.pid}\r\nConnection: {'keep-alive' if keep else 'close'}\r\n\r\n".encode()
            + body
        )
        await writer.drain()
        self.served += 1
        return keep


class Echo(asyncio.DatagramProtocol):
    """Datagram sockets: answer each datagram with `pid=N <data>`."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # 3.11's selector datagram transport does not subclass DatagramTransport
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[Any, ...] | str | None) -> None:
        if self.transport is not None and addr:
            self.transport.sendto(f"pid={self.app.pid} ".encode() + data, addr)


def hang() -> None:
    """Block the calling thread (the event loop) for an hour: a wedged server."""
    time.sleep(3600)


def acquire(args: argparse.Namespace) -> list[socket.socket]:
    """The sockets to serve: inherited (by name), from the fd store, or freshly bound."""
    if args.fdstore:
        base = args.name or "http"
        names = [base] if len(args.listen) == 1 else [f"{base}{i}" for i in range(len(args.listen))]
        return [fdstore.listen(a, name=n) for a, n in zip(args.listen, names, strict=True)]
    by_name = sdactivate.listeners_by_name()
    if by_name:
        if args.name is None:
            return [s for socks in by_name.values() for s in socks]
        if args.name not in by_name:
            raise SystemExit(f"no inherited socket named {args.name!r}: {sorted(by_name)}")
        return by_name[args.name]
    return [sdactivate.listen(a) for a in args.listen]


def _accepting(sock: socket.socket) -> bool:
    return bool(sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN))


async def serve(args: argparse.Namespace) -> int:
    loop = asyncio.get_running_loop()
    app = App(args)
    socks = acquire(args)
    transports: list[asyncio.BaseTransport] = []
    inetd = False
    for sock in socks:
        if sock.type == socket.SOCK_DGRAM:
            transport, _ = await loop.create_datagram_endpoint(lambda: Echo(app), sock=sock)
            transports.append(transport)
        elif _accepting(sock):
            app.start_accepting(sock)
        else:  # Accept=yes: one connection, then exit
            app.spawn(sock)
            inetd = True
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: reload(app))
    keepalive = watchdog.run_in_loop()  # no-op without WatchdogSec=
    if args.ready_gate:
        while not os.path.exists(args.ready_gate):
            await asyncio.sleep(0.01)
    status = f"serving {len(socks)} socket(s) as pid {app.pid}, gen {app.gen}"
    notify.ready(status=status)
    log.info("READY=1 STATUS=%s", status)
    if args.hang_after is not None:
        loop.call_later(args.hang_after, hang)
    if inetd and not app.listening and not transports:
        await asyncio.wait(set(app.connections))
        return 0
    await stop.wait()
    await drain(app, transports, keepalive)
    return 0


def reload(app: App) -> None:
    """SIGHUP: RELOADING=1 + MONOTONIC_USEC, 'reload' (bump the generation), READY=1."""
    notify.reloading(status=f"reloading: pid {app.pid}")  # + MONOTONIC_USEC
    log.info("RELOADING=1 MONOTONIC_USEC sent")
    app.gen += 1
    status = f"reloaded: pid {app.pid}, gen {app.gen}"
    notify.ready(status=status)
    log.info("READY=1 STATUS=%s", status)


async def drain(
    app: App,
    transports: Sequence[asyncio.BaseTransport],
    keepalive: watchdog.KeepAlive,
) -> None:
    """Stop accepting, answer what was accepted, close idle keep-alives, exit."""
    app.draining = True
    notify.stopping()
    notify.status(f"draining: pid {app.pid}")
    app.stop_accepting()
    for transport in transports:
        transport.close()
    for writer in list(app.idle):
        writer.close()
    deadline = time.monotonic() + app.args.drain_timeout
    while app.connections and time.monotonic() < deadline:
        await asyncio.wait(set(app.connections), timeout=deadline - time.monotonic())
    keepalive.stop()
    log.info("drained after %d requests; exiting", app.served)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--listen",
        action="append",
        metavar="ADDR",
        help="address to bind when not socket-activated (repeatable; default 127.0.0.1:8080)",
    )
    parser.add_argument("--name", help="fd name to serve (activation) / to store (--fdstore)")
    parser.add_argument(
        "--fdstore", action="store_true", help="bind via sdactivate.fdstore.listen()"
    )
    parser.add_argument(
        "--ready-gate", metavar="PATH", help="serve, but send READY=1 only once PATH exists"
    )
    parser.add_argument(
        "--hang-after", type=float, metavar="S", help="block the event loop S s after READY"
    )
    parser.add_argument("--drain-timeout", type=float, default=10.0, metavar="S")
    args = parser.parse_args(argv)
    args.listen = args.listen or ["127.0.0.1:8080"]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="app[%(process)d]: %(message)s")
    args = parse_args(argv)
    code = asyncio.run(serve(args))
    # Drained and closed: skip interpreter teardown (tens of ms). systemd starts the next
    # generation only once this process has exited, so exit time is restart-gap time.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
