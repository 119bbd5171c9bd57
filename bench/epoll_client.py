"""The connection-per-request engine of loadgen.py: one epoll loop, no asyncio.

A new connection per request is the workload the restart targets are measured with, at
1000+ conn/s on one pinned CPU. asyncio's ``sock_connect``/``sock_sendall``/``sock_recv``
cost ~220 us of interpreter time per request on the measurement VM (a task, a timeout
context, three futures, a reader/writer registration per step); this loop does the same
work in ~80 us (`make bench` reports the generator's CPU seconds per run).
A generator that needs less of its CPU queues fewer of its own sends behind each other,
and every such delay would be measured as server latency (latency counts from the
scheduled time).

Same schedule, outcomes and Result as ``loadgen.run_async`` (see loadgen's module doc):

* connect: non-blocking; on loopback the handshake finishes inside ``connect()``, so the
  request is sent at once; otherwise it waits for EPOLLOUT and reads SO_ERROR.
* response: read to Content-Length (or to EOF without one), then the socket is closed.
* each request has ``timeout`` s from its send; the run ends by ``t0 + duration + timeout
  + 2 s``, or at ``stop()`` (requests not yet due are dropped, in-flight ones finish).
"""

from __future__ import annotations

import collections
import errno
import math
import select
import socket
import time
from typing import Any

from bench.loadresult import ERROR, LOST, OK, REFUSED, RESET, TIMEOUT, UNSENT, Result
from bench.loadwire import MAX_RESPONSE, PID_BODY, Short, Target, parse_head, raise_nofile

_IN = select.EPOLLIN | select.EPOLLRDHUP
_OUT = select.EPOLLOUT
_RESET_ERRNOS = (errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED)


class _Req:
    __slots__ = ("buf", "due", "out", "rid", "sock")

    def __init__(self, rid: int, sock: socket.socket, out: bytes, due: float) -> None:
        self.rid = rid
        self.sock = sock
        self.out = out  # bytes still to send
        self.buf = b""
        self.due = due  # monotonic time after which it is a timeout


class Engine:
    """One run: ``Engine(...).run()`` -> Result. ``stop()`` may be called from a signal
    handler."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        rate: float,
        duration: float,
        timeout: float = 2.0,
        request: bytes | None = None,
        unix_path: str | None = None,
        max_requests: int | None = None,
        start_at: float | None = None,
    ) -> None:
        if rate <= 0 or duration < 0 or timeout <= 0:
            raise ValueError(f"need rate > 0, duration >= 0, timeout > 0: {rate!r} {duration!r}")
        n = math.ceil(rate * duration)
        if max_requests is not None:
            n = min(n, max_requests)
        self.n = n
        self.target = Target(host, port, unix_path, request, False)
        self.timeout = timeout
        self.t0 = start_at if start_at is not None else time.monotonic() + 0.01
        self.rate = rate
        self.res = Result.planned(rate=rate, duration=duration, keepalive=False, t0=self.t0, n=n)
        self.stopped = False
        self.ep = select.epoll()
        self.live: dict[int, _Req] = {}
        self.expiry: collections.deque[_Req] = collections.deque()

    def stop(self) -> None:
        self.stopped = True

    # --- outcomes -------------------------------------------------------------------------
    def _finish(self, req: _Req, code: int, kind: str = "") -> None:
        """Close ``req`` and record its outcome (``kind`` names a failure)."""
        if self.live.pop(req.sock.fileno(), None) is None:
            return
        req.sock.close()  # also drops it from the epoll set
        if code == OK:
            self.res.outcome[req.rid] = OK
        else:
            self.res.fail(req.rid, code, kind)

    def _fail_errno(self, req: _Req, err: int) -> None:
        if err == errno.ECONNREFUSED:
            self._finish(req, REFUSED, "ECONNREFUSED")
        elif err in _RESET_ERRNOS:
            self._finish(req, RESET, "EPIPE" if err == errno.EPIPE else "ECONNRESET")
        else:
            self._finish(req, ERROR, errno.errorcode.get(err, str(err)))

    def _complete(self, req: _Req, now: float, head_end: int, eof: bool) -> bool:
        """Record the response if it is complete; False if more bytes are needed."""
        buf = req.buf
        try:
            status, length, _close, pid = parse_head(buf[:head_end])
        except Short:
            self._finish(req, RESET, "short")
            return True
        body_start = head_end + 4
        if length is None:
            if not eof:
                return False
            body = buf[body_start:]
        elif len(buf) - body_start < length:
            if eof:
                self._finish(req, RESET, "short")
                return True
            return False
        else:
            body = buf[body_start : body_start + length]
        if not pid:
            bm = PID_BODY.search(body[:256])
            if bm:
                pid = int(bm.group(1))
        res = self.res
        rid = req.rid
        res.status[rid] = status
        res.pid[rid] = pid
        if 200 <= status < 300:
            self._finish(req, OK)
            res.latency[rid] = now - res.scheduled[rid]
            res.ok += 1
        else:
            self._finish(req, LOST, f"http_{status}")
        return True

    # --- socket events --------------------------------------------------------------------
    def _dispatch(self, rid: int, now: float) -> None:
        res = self.res
        res.send_lag[rid] = now - res.scheduled[rid]
        res.sent += 1
        target = self.target
        try:
            sock = socket.socket(target.family, socket.SOCK_STREAM)
        except OSError as exc:
            res.fail(rid, ERROR, errno.errorcode.get(exc.errno or 0, type(exc).__name__))
            return
        sock.setblocking(False)
        if target.family != socket.AF_UNIX:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        req = _Req(rid, sock, target.payload(rid), now + self.timeout)
        self.live[sock.fileno()] = req
        self.expiry.append(req)
        err = sock.connect_ex(target.addr)
        if err in (0, errno.EINPROGRESS, errno.EAGAIN):
            self._send(req, registered=False)
        else:
            self._fail_errno(req, err)

    def _send(self, req: _Req, *, registered: bool) -> None:
        sock = req.sock
        try:
            while req.out:
                sent = sock.send(req.out)
                req.out = req.out[sent:]
        except (BlockingIOError, InterruptedError):
            if not registered:
                self.ep.register(sock.fileno(), _OUT)
            return
        except OSError as exc:
            self._fail_errno(req, exc.errno or errno.EIO)
            return
        if registered:
            self.ep.modify(sock.fileno(), _IN)
        else:
            self.ep.register(sock.fileno(), _IN)

    def _readable(self, req: _Req, now: float) -> None:
        sock = req.sock
        eof = False
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    eof = True
                    break
                req.buf += chunk
                if len(req.buf) > MAX_RESPONSE:
                    self._finish(req, RESET, "short")
                    return
        except (BlockingIOError, InterruptedError):
            pass
        except OSError as exc:
            self._fail_errno(req, exc.errno or errno.EIO)
            return
        end = req.buf.find(b"\r\n\r\n")
        if end >= 0:
            if self._complete(req, now, end, eof):
                return
        elif eof:
            self._finish(req, RESET, "short")

    def _event(self, fd: int, mask: int, now: float) -> None:
        req = self.live.get(fd)
        if req is None:
            return
        if req.out:  # still connecting
            err = req.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                self._fail_errno(req, err)
            else:
                self._send(req, registered=True)
            return
        if mask & (_IN | select.EPOLLHUP | select.EPOLLERR):
            self._readable(req, now)

    def _expire(self, now: float) -> None:
        expiry = self.expiry
        while expiry and expiry[0].due <= now:
            req = expiry.popleft()
            if req.sock.fileno() in self.live and self.live[req.sock.fileno()] is req:
                self._finish(req, TIMEOUT, "timeout")

    # --- the loop -------------------------------------------------------------------------
    def run(self) -> Result:
        res, n = self.res, self.n
        raise_nofile(int(self.rate * self.timeout * 1.5) + 256)
        cpu0 = time.process_time()
        deadline = self.t0 + res.duration + self.timeout + 2.0
        scheduled = res.scheduled
        poll, event = self.ep.poll, self._event
        i = 0
        drain_until = math.inf  # set once nothing more will be sent
        try:
            while True:
                now = time.monotonic()
                if i < n and (self.stopped or now > deadline):
                    n = i  # the rest is never sent: dropped from the run
                while i < n and scheduled[i] <= now:
                    self._dispatch(i, now)
                    i += 1
                if i >= n:
                    if not self.live:
                        break
                    if drain_until == math.inf:
                        drain_until = min(deadline, now + self.timeout + 1.0)
                    if now > drain_until:
                        break
                self._expire(now)
                wait = 0.05
                if i < n:
                    wait = min(wait, scheduled[i] - now)
                if self.expiry:
                    wait = min(wait, self.expiry[0].due - now)
                for fd, mask in poll(max(wait, 0.0)):
                    event(fd, mask, time.monotonic())
        finally:
            for req in list(self.live.values()):
                self._finish(req, TIMEOUT, "timeout")
            self.ep.close()
        res.wall = time.monotonic() - self.t0
        res.cpu_s = time.process_time() - cpu0
        res.truncate(i)
        for j, o in enumerate(res.outcome):
            if o == UNSENT:  # never dispatched: the run was cut short
                res.fail(j, LOST, "unsent")
        return res


def run(host: str, port: int, **kwargs: Any) -> Result:
    """Run the connection-per-request schedule (loadgen.run's arguments, keepalive off)."""
    return Engine(host, port, **kwargs).run()
