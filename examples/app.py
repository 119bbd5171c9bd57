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
process killed), and answers SIGHUP with ``RELOADING=1`` + ``MONOTONIC_USEC`` then ``READY=1``.

On SIGTERM (systemd's stop, or ``sdactivate run`` handing over) it drains, then exits:

* ``STOPPING=1``; it stops accepting and closes its copy of the listening sockets -- the
  connections still queued stay in the socket systemd (or the supervisor) holds, for the
  next generation;
* every connection it already accepted is served, including one accepted but not read yet;
  each response from now on says ``Connection: close`` and the connection closes after it;
* a connection with no request in progress is closed once it has been idle for
  ``--idle-grace`` seconds of the drain (a keep-alive client gets that long to send one
  last request; closing an idle connection at once races with a request on its way);
* ``--drain-timeout`` is the hard deadline: what is still open then is aborted (logged).

Every response names the process: body ``pid=N gen=G`` and header ``X-Pid: N``, so a client
can tell generations apart. ``GET /sleep?ms=N`` answers after N ms (a slow request: work in
flight at a handover). ``GET /hang`` blocks the event loop for good (a hung server);
``--hang-after S`` does the same S seconds after READY.

Try it: ``systemd-socket-activate -l 127.0.0.1:8080 --fdname=http -E PYTHONPATH=$PWD
python3 examples/app.py --name http`` then ``curl -s 127.0.0.1:8080/``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, cast

import sdactivate
from sdactivate import fdstore, notify, watchdog
from sdactivate.adapters import asyncio_server
from sdactivate.errors import NotifyError

log = logging.getLogger("app")

MAX_HEAD = 16384  # bytes of request head (431 above)
MAX_BODY = 1 << 20  # request body bytes read and discarded (413 above)
MAX_SLEEP_MS = 60_000


class App:
    """State shared by the connections: generation, open connections, draining flag."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.pid = os.getpid()
        self.gen = 0
        self.draining = False
        self.conns: set[Http] = set()  # every accepted connection until its socket is closed
        self.all_closed = asyncio.Event()  # set while `conns` is empty
        self.all_closed.set()
        self.listening: list[socket.socket] = []
        self.served = 0

    def body(self) -> bytes:
        return f"pid={self.pid} gen={self.gen}\n".encode()

    def start_accepting(self, sock: socket.socket) -> None:
        """Accept from `sock` in a reader callback.

        Not asyncio.start_server(): it re-calls listen() (shrinking the backlog systemd set)
        and accepts in batches whose connections reach the handler only some loop iterations
        later. Here every accepted connection is in ``conns`` before the callback returns, so
        a drain sees it, and stop_accepting() leaves the rest queued in the socket systemd
        holds, for the next generation.
        """
        if self.draining:  # SIGTERM came first (during an await of the start-up)
            sock.close()
            return
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
        """Serve an accepted (or inherited, connected) socket; tracked from this moment."""
        conn.setblocking(False)
        http = Http(self, conn)
        self.track(http)
        loop = asyncio.get_running_loop()
        # connect_accepted_socket() builds the transport at once; its connection_made runs
        # on the next loop iteration, so until then `http` holds the raw socket.
        # The loop keeps only a weak reference to a task: the connection holds it.
        http.connecting = loop.create_task(self._connect(loop, http, conn))

    @staticmethod
    async def _connect(loop: asyncio.AbstractEventLoop, http: Http, conn: socket.socket) -> None:
        try:
            await loop.connect_accepted_socket(lambda: http, sock=conn)
        except OSError as exc:
            log.debug("connection lost before it was served: %s", exc)
            http.connection_lost(exc)

    def track(self, http: Http) -> None:
        self.conns.add(http)
        self.all_closed.clear()

    def untrack(self, http: Http) -> None:
        self.conns.discard(http)
        if not self.conns:
            self.all_closed.set()


class Http(asyncio.Protocol):
    """One HTTP/1.1 connection: requests answered in order, one at a time.

    A connection is *idle* when it has no request in progress and no unanswered bytes:
    only then may a drain close it, and only after ``--idle-grace`` (see the module doc).
    """

    def __init__(self, app: App, sock: socket.socket) -> None:
        self.app = app
        self.sock: socket.socket | None = sock  # until the transport owns it
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.busy = False  # a response is being prepared (e.g. /sleep)
        self.closing = False
        self.eof = False
        self.idle_timer: asyncio.TimerHandle | None = None
        self.closed = False
        self.connecting: asyncio.Task[None] | None = None

    # --- asyncio.Protocol ----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.sock = None
        if self.closing:  # aborted at the drain deadline before it got here
            self.transport.abort()
        elif self.app.draining:
            self.drain()

    def data_received(self, data: bytes) -> None:
        self._cancel_idle_timer()
        self.buf += data
        self._process()

    def eof_received(self) -> bool:
        # The client half-closed: answer what it sent, then close (True keeps the transport
        # open for writing; returning False would close it at once).
        self.eof = True
        if self.busy or self._complete_request_buffered():
            return True
        self._close()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        if self.closed:
            return
        self.closed = True
        self._cancel_idle_timer()
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        self.app.untrack(self)

    # --- draining -------------------------------------------------------------------------
    def drain(self) -> None:
        """The app began to drain: an idle connection gets ``--idle-grace`` s, then closes."""
        if self.transport is not None and self._idle():
            self._arm_idle_timer()

    def abort(self) -> None:
        """The hard deadline: close now, whatever is in progress."""
        self.closing = True
        if self.transport is not None:
            self.transport.abort()
        # else connection_made is still pending: it sees `closing` and aborts there

    def _idle(self) -> bool:
        return not self.busy and not self.buf and not self.closing

    def _arm_idle_timer(self) -> None:
        if self.idle_timer is None:
            loop = asyncio.get_running_loop()
            self.idle_timer = loop.call_later(self.app.args.idle_grace, self._idle_expired)

    def _cancel_idle_timer(self) -> None:
        if self.idle_timer is not None:
            self.idle_timer.cancel()
            self.idle_timer = None

    def _idle_expired(self) -> None:
        self.idle_timer = None
        if self._idle():
            self._close()

    def _close(self) -> None:
        self.closing = True
        self._cancel_idle_timer()
        if self.transport is not None:
            self.transport.close()  # flushes what was written, then FIN

    # --- requests -------------------------------------------------------------------------
    def _complete_request_buffered(self) -> bool:
        return b"\r\n\r\n" in self.buf

    def _process(self) -> None:
        """Answer the buffered requests in order, while none is in progress."""
        assert self.transport is not None
        while not self.busy and not self.closing:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buf) > MAX_HEAD:
                    self._reply("431 Request Header Fields Too Large", b"head too large\n")
                elif self.eof:
                    self._close()
                elif self.app.draining and not self.buf:
                    self._arm_idle_timer()
                return
            head = bytes(self.buf[:end]).decode("latin-1")
            request = parse_head(head)
            if request is None:
                self._reply("400 Bad Request", b"bad request\n")
                return
            method, path, keep, length = request
            if length < 0 or length > MAX_BODY:
                status = "413 Content Too Large" if length > MAX_BODY else "501 Not Implemented"
                self._reply(status, b"unsupported request body\n")
                return
            if len(self.buf) < end + 4 + length:  # the body is still arriving
                if self.eof:
                    self._close()
                return
            del self.buf[: end + 4 + length]
            self._answer(method, path, keep)
        if len(self.buf) > MAX_HEAD + MAX_BODY:  # a pipelining flood: wait for the answers
            self.transport.pause_reading()

    def _answer(self, method: str, path: str, keep: bool) -> None:
        route, _, query = path.partition("?")
        if route == "/hang":
            log.warning("GET /hang: blocking the event loop (simulated hung server)")
            hang()
        if route in ("/", "/hang"):
            self._reply("200 OK", self.app.body(), keep=keep)
        elif route == "/env":
            names = ("LISTEN_FDS", "LISTEN_FDNAMES", "NOTIFY_SOCKET", "WATCHDOG_USEC")
            body = json.dumps({k: os.environ.get(k) for k in names}).encode() + b"\n"
            self._reply("200 OK", body, keep=keep)
        elif route == "/sleep":
            ms = query_int(query, "ms")
            if ms is None or not 0 <= ms <= MAX_SLEEP_MS:
                self._reply("400 Bad Request", b"/sleep?ms=N, 0 <= N <= 60000\n")
                return
            self.busy = True
            loop = asyncio.get_running_loop()
            loop.call_later(ms / 1000, self._finish_sleep, keep)
        else:
            self._reply("404 Not Found", b"not found\n", keep=keep)

    def _finish_sleep(self, keep: bool) -> None:
        self.busy = False
        if self.transport is None or self.transport.is_closing():
            return
        self._reply("200 OK", self.app.body(), keep=keep)
        if not self.closing:
            self.transport.resume_reading()
            self._process()

    def _reply(self, status: str, body: bytes, *, keep: bool = False) -> None:
        """Write one response; the last one on the connection says ``Connection: close``."""
        assert self.transport is not None
        keep = keep and not self.app.draining and not self.eof
        connection = "keep-alive" if keep else "close"
        self.transport.write(
            f"HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
            f"X-Pid: {self.app.pid}\r\nConnection: {connection}\r\n\r\n".encode()
            + body
        )
        self.app.served += 1
        if not keep:
            self._close()


def parse_head(head: str) -> tuple[str, str, bool, int] | None:
    """(method, path, keep-alive wanted, body length; -1: chunked) of a request head, or
    None when it is not HTTP/1.x."""
    lines = head.split("\r\n")
    parts = lines[0].split()
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        return None
    method, path, version = parts
    connection, length = "", 0
    for line in lines[1:]:
        key, sep, value = line.partition(":")
        key = key.strip().lower()
        if not sep:
            continue
        if key == "connection":
            connection = value.strip().lower()
        elif key == "content-length":
            if not value.strip().isdigit():
                return None
            length = int(value)
        elif key == "transfer-encoding":
            length = -1
    # RFC 9112 9.3: HTTP/1.1 is persistent unless "close"; HTTP/1.0 only with "keep-alive"
    keep = "close" not in connection if version == "HTTP/1.1" else "keep-alive" in connection
    return method, path, keep, length


def query_int(query: str, name: str) -> int | None:
    """The integer value of ``name`` in a query string (``ms=500&x=1``), or None."""
    for item in query.split("&"):
        key, _, value = item.partition("=")
        if key == name:
            return int(value) if value.isdigit() else None
    return None


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
    stop = asyncio.Event()

    def on_stop() -> None:
        # Stop accepting in the signal's own callback: every accept from here on would be
        # one more connection to drain, taken from the next generation's queue.
        app.draining = True
        app.stop_accepting()
        stop.set()

    # Before any socket is served: from here on a SIGTERM drains instead of killing.
    stop_signals = asyncio_server.on_stop_signals(lambda _: on_stop())
    loop.add_signal_handler(signal.SIGHUP, lambda: reload(app))
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
    keepalive = watchdog.run_in_loop()  # no-op without WatchdogSec=
    if args.ready_gate:
        while not os.path.exists(args.ready_gate) and not stop.is_set():
            await asyncio.sleep(0.01)
    status = f"serving {len(socks)} socket(s) as pid {app.pid}, gen {app.gen}"
    tell(notify.ready, status=status)
    log.info("READY=1 STATUS=%s", status)
    if args.hang_after is not None:
        loop.call_later(args.hang_after, hang)
    if inetd and not app.listening and not transports:
        stop_task = loop.create_task(stop.wait())
        done_task = loop.create_task(app.all_closed.wait())
        await asyncio.wait({stop_task, done_task}, return_when=asyncio.FIRST_COMPLETED)
        stop_task.cancel()
        done_task.cancel()
    else:
        await stop.wait()
    await drain(app, transports, keepalive)
    # Under `gen-units --supervise` units (KillMode=control-group) SIGTERM comes twice, from
    # systemd and from the supervisor: after a stop signal this leaves it ignored, so a
    # repeat cannot kill us on the way out (closing the loop would restore the default).
    stop_signals.uninstall()
    return 0


def tell(send: Callable[..., bool], **fields: Any) -> None:
    """An sd_notify message that must not stop the app when it cannot be delivered: a
    supervisor that was SIGKILLed took its NOTIFY_SOCKET along, and its generations still
    have connections to drain."""
    try:
        send(**fields)
    except NotifyError as exc:
        log.warning("%s", exc)


def reload(app: App) -> None:
    """SIGHUP: RELOADING=1 + MONOTONIC_USEC, 'reload' (bump the generation), READY=1."""
    tell(notify.reloading, status=f"reloading: pid {app.pid}")  # + MONOTONIC_USEC
    log.info("RELOADING=1 MONOTONIC_USEC sent")
    app.gen += 1
    status = f"reloaded: pid {app.pid}, gen {app.gen}"
    tell(notify.ready, status=status)
    log.info("READY=1 STATUS=%s", status)


async def drain(
    app: App,
    transports: Sequence[asyncio.BaseTransport],
    keepalive: watchdog.KeepAlive,
) -> None:
    """Stop accepting, answer every accepted connection, close idle ones, then return."""
    started = time.monotonic()
    app.draining = True
    tell(notify.stopping, status=f"draining: pid {app.pid}, {len(app.conns)} connection(s)")
    app.stop_accepting()
    for transport in transports:
        transport.close()
    open_at_start = len(app.conns)
    for http in list(app.conns):
        http.drain()
    try:
        await asyncio.wait_for(app.all_closed.wait(), app.args.drain_timeout)
    except TimeoutError:
        log.warning(
            "drain deadline (%gs): aborting %d connection(s)",
            app.args.drain_timeout,
            len(app.conns),
        )
        for http in list(app.conns):
            http.abort()
        # connection_lost runs on the next loop iterations; connections whose transport is
        # not built yet abort in connection_made
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(app.all_closed.wait(), 1.0)
    keepalive.stop()
    log.info(
        "drained %d connection(s) in %.3fs after %d responses; exiting",
        open_at_start,
        time.monotonic() - started,
        app.served,
    )


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
    parser.add_argument(
        "--drain-timeout",
        type=float,
        default=10.0,
        metavar="S",
        help="on SIGTERM, abort what is still open after S s (default 10)",
    )
    parser.add_argument(
        "--idle-grace",
        type=float,
        default=1.0,
        metavar="S",
        help="on SIGTERM, close a connection with no request in progress once idle S s (default 1)",
    )
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
