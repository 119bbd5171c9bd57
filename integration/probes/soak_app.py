"""The chaos soak's HTTP app (integration/soak.py): one thread, one selectors loop, raw sockets.

Not one of sdactivate's adapters on purpose: the soak tests the supervisor, so the app must
not add failures of its own. It takes the sockets `sdactivate run` passes
(``sdactivate.listeners()``), answers each ``GET`` after ``--service-ms`` (work in flight at
every handover) with ``X-Pid: PID`` and a body ``pid=PID version=V``, and before answering
appends ``RID PID`` (RID from the request's ``X-Req-Id:``, loadgen's request id) to
``--log``: the harness then knows which process read every request, also one that failed
because that process was killed.

Signals arrive through ``signal.set_wakeup_fd`` in the loop's own selector, so SIGTERM is
seen within one loop turn whatever the loop waits on. On SIGTERM it stops accepting (its
copy of the listening sockets closes; the queue stays with the supervisor and the socket
unit), answers every connection it accepted, and exits 0.

Its behaviour, the "version", is read from ``--version-file`` at start-up (missing: good):

- ``good``: serve, then READY=1;
- ``exit``: exit with status 3 at start-up, before touching the sockets;
- ``never-ready``: serve (accept) but never send READY=1 (issue 16 item 2);
- ``slow``: ``--slow-start`` seconds of start-up work before serving (a generation to kill
  or stop while it starts; it holds no connection yet); SIGTERM ends it at once.
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import os
import re
import selectors
import signal
import socket
import sys
import time

from sdactivate import listeners, notify
from sdactivate.errors import NotifyError

VERSIONS = ("good", "exit", "never-ready", "slow")
EXIT_STATUS = 3
MAX_HEAD = 8192
IDLE_GRACE = 2.0  # s a connection accepted while draining may wait for its request
_REQ_ID = re.compile(rb"^x-req-id:\s*(\d+)\s*$", re.IGNORECASE | re.MULTILINE)


def _notify(fields: dict[str, str]) -> None:
    """Best effort: after a supervisor SIGKILL its private notify socket is gone."""
    with contextlib.suppress(NotifyError, OSError):
        notify.send(fields)


class App:
    def __init__(self, args: argparse.Namespace, version: str) -> None:
        self.args = args
        self.version = version
        self.pid = os.getpid()
        self.sel = selectors.DefaultSelector()
        self.log_fd = os.open(args.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC)
        self.listening: list[socket.socket] = []
        self.conns: dict[socket.socket, bytes] = {}  # accepted, request not complete yet
        self.accepted_at: dict[socket.socket, float] = {}
        self.due: list[tuple[float, int, socket.socket]] = []  # (answer at, seq, connection)
        self.seq = 0
        self.draining = False
        self.wake_r, wake_w = socket.socketpair()
        self.wake_r.setblocking(False)
        wake_w.setblocking(False)
        self._wake_w = wake_w  # kept open for set_wakeup_fd
        signal.set_wakeup_fd(wake_w.fileno(), warn_on_full_buffer=False)
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: None)  # the wakeup fd carries it
        self.sel.register(self.wake_r, selectors.EVENT_READ, "signal")

    # --- signals --------------------------------------------------------------------------
    def _signals(self) -> set[int]:
        got: set[int] = set()
        with contextlib.suppress(BlockingIOError):
            while chunk := self.wake_r.recv(64):
                got.update(chunk)
        return got

    def wait_start_up(self, seconds: float) -> bool:
        """Start-up work of the ``slow`` version; False if a stop signal came meanwhile."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if self.sel.select(left) and self._signals() & {signal.SIGTERM, signal.SIGINT}:
                return False
        return True

    # --- serving --------------------------------------------------------------------------
    def serve(self, socks: list[socket.socket]) -> None:
        for sock in socks:
            sock.setblocking(False)
            self.sel.register(sock, selectors.EVENT_READ, "accept")
            self.listening.append(sock)
        if self.version != "never-ready":
            _notify({"READY": "1", "STATUS": f"pid {self.pid} serving (version {self.version})"})
        while not (self.draining and not self.conns and not self.due):
            now = time.monotonic()
            timeout = max(0.0, self.due[0][0] - now) if self.due else None
            if self.draining:
                timeout = min(0.1, timeout if timeout is not None else 0.1)
            for key, _ in self.sel.select(timeout):
                if key.data == "accept":
                    self._accept(key.fileobj)  # type: ignore[arg-type]
                elif key.data == "signal":
                    if self._signals() & {signal.SIGTERM, signal.SIGINT}:
                        self._start_drain()
                else:
                    self._read(key.fileobj)  # type: ignore[arg-type]
            self._answer_due(time.monotonic())
            if self.draining:
                self._drop_idle(time.monotonic())

    def _accept(self, sock: socket.socket) -> None:
        for _ in range(64):
            try:
                conn, _ = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                print(f"soak_app: accept: {exc}", file=sys.stderr)
                return
            conn.setblocking(False)
            self.conns[conn] = b""
            self.accepted_at[conn] = time.monotonic()
            self.sel.register(conn, selectors.EVENT_READ, "conn")

    def _read(self, conn: socket.socket) -> None:
        try:
            chunk = conn.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            chunk = b""
        if not chunk:
            self._close(conn)
            return
        buf = self.conns[conn] + chunk
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > MAX_HEAD:
                self._close(conn)
            else:
                self.conns[conn] = buf
            return
        match = _REQ_ID.search(buf[:end])
        if match:
            os.write(self.log_fd, b"%s %d\n" % (match.group(1), self.pid))
        self.sel.unregister(conn)
        del self.conns[conn]
        self.seq += 1
        due = time.monotonic() + self.args.service_ms / 1000
        heapq.heappush(self.due, (due, self.seq, conn))

    def _answer_due(self, now: float) -> None:
        while self.due and self.due[0][0] <= now:
            _, _, conn = heapq.heappop(self.due)
            self.accepted_at.pop(conn, None)
            body = f"pid={self.pid} version={self.version}\n".encode()
            head = (
                f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\nX-Pid: {self.pid}\r\n"
                "Connection: close\r\n\r\n"
            ).encode()
            with contextlib.suppress(OSError):
                conn.send(head + body)  # a few dozen bytes: fits any socket buffer
            conn.close()

    def _close(self, conn: socket.socket) -> None:
        self.sel.unregister(conn)
        self.conns.pop(conn, None)
        self.accepted_at.pop(conn, None)
        conn.close()

    def _start_drain(self) -> None:
        if self.draining:
            return
        self.draining = True
        for sock in self.listening:
            self.sel.unregister(sock)
            sock.close()  # our copy: the queue stays in the supervisor's and systemd's
        self.listening.clear()

    def _drop_idle(self, now: float) -> None:
        for conn, since in list(self.accepted_at.items()):
            if conn in self.conns and now - since > IDLE_GRACE:
                self._close(conn)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--log", required=True, help="append RID PID per request here")
    parser.add_argument("--version-file", required=True)
    parser.add_argument("--service-ms", type=float, default=10.0)
    parser.add_argument("--slow-start", type=float, default=30.0)
    args = parser.parse_args(argv)
    try:
        with open(args.version_file) as f:
            version = f.read().strip() or "good"
    except FileNotFoundError:
        version = "good"
    if version not in VERSIONS:
        print(f"soak_app: unknown version {version!r} in {args.version_file}", file=sys.stderr)
        return 2
    if version == "exit":
        return EXIT_STATUS
    app = App(args, version)
    if version == "slow" and not app.wait_start_up(args.slow_start):
        return 0
    app.serve(listeners())
    return 0


if __name__ == "__main__":
    sys.exit(main())
