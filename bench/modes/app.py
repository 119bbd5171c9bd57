"""The benchmark's HTTP/1.1 service: one asyncio server, four ways to get its socket.

``GET <anything>`` -> ``200`` with ``X-Pid: <pid>`` and body ``pid=<pid>``; keep-alive unless
the client asks ``Connection: close``. It is the same program in every restart mode:

* ``--socket plain:HOST:PORT``        binds itself (no activation; what people do without it);
* ``--socket inherit``                takes ``sdactivate.listeners()`` (socket unit, supervisor);
* ``--socket fdstore:HOST:PORT=NAME`` ``sdactivate.fdstore.listen()`` (fd store, no socket unit);
* ``--socket upgrader:HOST:PORT``     ``sdactivate.Upgrader`` (SIGHUP re-executes this program);
* ``--socket fd:N``                   an inherited listening fd (circus: ``$(circus.sockets.X)``).

``--work-iters N`` adds N iterations of a pure-Python loop to every request (a CPU-bound
handler: bench/workers.py calibrates N to ~1 ms). ``--fault-file PATH`` makes a worker of
``sdactivate run --workers`` misbehave at start-up when PATH names its index
(``$SDACTIVATE_WORKER``): ``exit:I`` exits 3 before READY, ``never-ready:I`` never sends
READY (nor accepts), ``crash:I`` exits 3 ``--crash-after`` s after READY (the requests it
accepted fail); read once at start, so only the generations started while it says so.

It sends READY=1 once it serves (if ``NOTIFY_SOCKET`` is set) and drains on SIGTERM (or when
the Upgrader hands over): stop accepting, finish in-flight requests, answer the next request
on each keep-alive connection with ``Connection: close`` (idle ones get ``--idle-grace`` s),
exit within ``--drain-timeout``. ``--lifetime`` bounds how long any copy can live.

With ``SDACTIVATE_BENCH_TRACE=DIR`` it also records, per request, the loadgen's ``X-Req-Id``
and three ``time.monotonic()`` stamps (the connection's ``connection_made``, the request's
``data_received``, the response written) and writes them at exit to ``DIR/trace-PID.bin``
(native doubles, four per request; see ``read_trace``). The loadgen uses the same clock, so
a slow request splits into client, queue and server time.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys
import threading
import time
from array import array
from pathlib import Path
from typing import Any

_BACKLOG = 4096  # for a socket it binds itself (somaxconn on the measurement VM)
_TRACE_DIR = os.environ.get("SDACTIVATE_BENCH_TRACE")
_trace: array[float] | None = array("d") if _TRACE_DIR else None
_REQ_ID = b"x-req-id:"


def _record(head: bytes, made: float, got: float) -> None:
    """One traced request: (id, connection made, head received, response written)."""
    assert _trace is not None
    at = head.lower().find(_REQ_ID)
    if at < 0:
        return
    end = head.find(b"\r\n", at)
    try:
        rid = int(head[at + len(_REQ_ID) : end if end >= 0 else len(head)])
    except ValueError:
        return
    _trace.extend((rid, made, got, time.monotonic()))


def _save_trace() -> None:
    if _trace is not None and _TRACE_DIR:
        path = Path(_TRACE_DIR) / f"trace-{os.getpid()}.bin"
        with open(path, "wb") as f:
            _trace.tofile(f)


def read_trace(path: str | os.PathLike[str]) -> list[tuple[int, float, float, float]]:
    """The records ``_save_trace`` wrote: (request id, made, received, written) each."""
    data = array("d")
    with open(path, "rb") as f:
        data.frombytes(f.read())
    return [
        (int(data[i]), data[i + 1], data[i + 2], data[i + 3]) for i in range(0, len(data) - 3, 4)
    ]


def _busy(iters: int) -> int:
    """``iters`` turns of a pure-Python loop (the CPU-bound handler's work)."""
    x = 0
    for i in range(iters):
        x ^= i
    return x


class _State:
    def __init__(self, idle_grace: float, work_iters: int = 0) -> None:
        self.work_iters = work_iters
        self.draining = False
        self.conns: set[_Http] = set()
        self.tasks: set[asyncio.Task[None]] = set()  # connect_accepted_socket() in progress
        self.idle_grace = idle_grace
        pid = os.getpid()
        body = b"pid=%d\n" % pid
        head = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Pid: %d\r\n" % pid
        head += b"Content-Length: %d\r\n" % len(body)
        self.keep = head + b"Connection: keep-alive\r\n\r\n" + body
        self.close = head + b"Connection: close\r\n\r\n" + body


class _Http(asyncio.Protocol):
    """One connection: answer each request head; close on request, or when draining."""

    def __init__(self, state: _State) -> None:
        self.state = state
        self.buf = b""
        self.transport: asyncio.Transport | None = None
        self.idle_timer: asyncio.TimerHandle | None = None
        self.made = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        if _trace is not None:
            self.made = time.monotonic()
        self.transport = transport
        self.state.conns.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.state.conns.discard(self)
        if self.idle_timer is not None:
            self.idle_timer.cancel()

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        got = time.monotonic() if _trace is not None else 0.0
        self.buf += data
        while (end := self.buf.find(b"\r\n\r\n")) >= 0:
            head, self.buf = self.buf[:end], self.buf[end + 4 :]
            if self.state.work_iters:
                _busy(self.state.work_iters)
            if b"connection: close" in head.lower() or self.state.draining:
                self.transport.write(self.state.close)
                self.transport.close()
                if _trace is not None:
                    _record(head, self.made, got)
                return
            self.transport.write(self.state.keep)
            if _trace is not None:
                _record(head, self.made, got)
        if len(self.buf) > 65536:
            self.transport.close()

    def drain(self) -> None:
        """Draining: an idle keep-alive connection gets ``idle_grace`` s for one last request."""
        if self.transport is None or self.transport.is_closing():
            return
        loop = asyncio.get_running_loop()
        self.idle_timer = loop.call_later(self.state.idle_grace, self.transport.close)


def _acquire(spec: str) -> tuple[socket.socket, Any]:
    """(listening socket, Upgrader or None) for ``--socket``."""
    if spec.startswith("plain:"):
        host, _, port = spec[len("plain:") :].rpartition(":")
        return socket.create_server((host.strip("[]"), int(port)), backlog=_BACKLOG), None
    if spec == "inherit":
        import sdactivate

        socks = sdactivate.listeners()
        if not socks:
            raise SystemExit("--socket inherit: no LISTEN_FDS for this process")
        return socks[0], None
    if spec.startswith("fdstore:"):
        from sdactivate import fdstore

        addr, _, name = spec[len("fdstore:") :].rpartition("=")
        return fdstore.listen(addr, name=name), None
    if spec.startswith("fd:"):
        return socket.socket(fileno=int(spec[len("fd:") :])), None
    if spec.startswith("upgrader:"):
        import sdactivate

        upg = sdactivate.Upgrader(upgrade_timeout=30.0, stable_time=0.0)
        return upg.listen("tcp", spec[len("upgrader:") :], name="http"), upg
    raise SystemExit(f"unknown --socket {spec!r}")


def _accept_from(loop: asyncio.AbstractEventLoop, sock: socket.socket, state: _State) -> None:
    """Accept in a reader callback, each connection tracked in ``state.conns`` at once.

    Not ``loop.create_server()``: it calls listen() again, and a connection it accepted
    just before ``Server.close()`` reaches its protocol a few loop turns later, when the
    closed server refuses it (``Server._attach`` asserts) and the socket is dropped with the
    request unread: a reset the client sees, logged only in asyncio debug mode.
    """

    def adopt(conn: socket.socket) -> None:
        conn.setblocking(False)
        proto = _Http(state)
        state.conns.add(proto)  # a drain waits for it from now on

        async def connect() -> None:
            try:
                await loop.connect_accepted_socket(lambda: proto, sock=conn)
            except OSError:
                state.conns.discard(proto)
                conn.close()

        state.tasks.add(task := loop.create_task(connect()))
        task.add_done_callback(state.tasks.discard)

    def on_readable() -> None:
        for _ in range(64):  # a bounded batch per wake-up
            try:
                conn, _ = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # ECONNABORTED, EMFILE...: keep serving
                print(f"bench app {os.getpid()}: accept: {exc}", file=sys.stderr)
                return
            adopt(conn)

    loop.add_reader(sock.fileno(), on_readable)


def _fault(path: str | None) -> str:
    """This worker's fault from ``--fault-file`` ("exit", "never-ready", "crash" or "")."""
    if not path:
        return ""
    try:
        kind, _, index = Path(path).read_text().strip().partition(":")
    except OSError:
        return ""
    return kind if index and index == os.environ.get("SDACTIVATE_WORKER") else ""


async def _serve(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    fault = _fault(args.fault_file)
    if fault == "exit":
        print(f"bench app {os.getpid()}: fault: exit at start-up", file=sys.stderr)
        os._exit(3)
    if fault == "never-ready":
        print(f"bench app {os.getpid()}: fault: never ready", file=sys.stderr)
        await asyncio.sleep(args.lifetime)  # the supervisor's ready timeout stops us
        return
    sock, upg = _acquire(args.socket)
    sock.setblocking(False)
    state = _State(args.idle_grace, args.work_iters)
    _accept_from(loop, sock, state)
    stop = asyncio.Event()
    if fault == "crash":
        loop.call_later(args.crash_after, os._exit, 3)
    if upg is not None:
        upg.ready()
        threading.Thread(
            target=lambda: (upg.wait_exit(), loop.call_soon_threadsafe(stop.set)), daemon=True
        ).start()
    else:
        from sdactivate._signals import LoopStopSignals

        signals = LoopStopSignals(loop, lambda _: stop.set())  # before READY: it drains
        if os.environ.get("NOTIFY_SOCKET"):
            from sdactivate import notify

            notify.ready()
    try:
        await asyncio.wait_for(stop.wait(), args.lifetime)
    except TimeoutError:
        print(f"bench app {os.getpid()}: --lifetime reached, exiting", file=sys.stderr)
    # Drain: stop accepting (our copy of the socket only), let in-flight requests finish.
    loop.remove_reader(sock.fileno())
    sock.close()  # our copy: the supervisor's or systemd's keeps the queue for the next one
    state.draining = True
    for conn in list(state.conns):  # one still connecting is drained by the loop below
        conn.drain()
    deadline = time.monotonic() + args.drain_timeout
    while state.conns and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
        for conn in list(state.conns):
            if conn.idle_timer is None:
                conn.drain()
    if upg is not None:
        upg.close()
    else:
        signals.uninstall()  # after SIGTERM a repeat is ignored: it cannot kill us on the way out
    _save_trace()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--socket", required=True)
    p.add_argument("--startup-delay-ms", type=float, default=0.0)
    p.add_argument("--drain-timeout", type=float, default=5.0)
    p.add_argument("--idle-grace", type=float, default=0.3)
    p.add_argument("--lifetime", type=float, default=900.0)
    p.add_argument("--work-iters", type=int, default=0, help="CPU work per request")
    p.add_argument("--fault-file", default=None)
    p.add_argument("--crash-after", type=float, default=0.2)
    args = p.parse_args(argv)
    if args.startup_delay_ms:
        time.sleep(args.startup_delay_ms / 1e3)
    asyncio.run(_serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
