"""The keep-alive drain of :mod:`sdactivate.adapters.http_server` (``http.server``).

A drain that waits for every connection to close is held to its deadline by any idle
keep-alive client; one that drops connections at once races with requests already on the
wire. What it does instead, per connection:

* a response written once the drain has begun says ``Connection: close`` (if the connection
  would otherwise stay open) and the connection closes after it (RFC 9112 9.6);
* a connection waiting for its next request gets ``idle_grace`` seconds (from the drain's
  start, or from its last response if later) for one more, then is closed with a FIN;
* the server's count of open connections reaches 0 as soon as that is done.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
import time
from http.server import BaseHTTPRequestHandler

__all__ = ["DEFAULT_IDLE_GRACE", "Connections", "DrainingHandler", "connections_of"]

# seconds a connection idle at the drain gets for one more request: closing it at once races
# with a request already on its way (the client then sees the connection close unanswered)
DEFAULT_IDLE_GRACE = 1.0


class Connections:
    """The connections a server has accepted, and its drain.

    A connection counts from ``process_request`` (in the accept loop, before its handler
    thread starts) to ``shutdown_request`` (after its socket is closed), so a drain never
    misses one accepted a moment before. :meth:`start_drain` makes ``fileno()`` readable for
    good: every handler waiting for a request wakes up (see :class:`DrainingHandler`).
    """

    def __init__(self, idle_grace: float) -> None:
        if isinstance(idle_grace, bool) or not (
            isinstance(idle_grace, int | float) and 0 <= idle_grace < float("inf")
        ):
            raise ValueError(f"idle_grace: {idle_grace!r} is not a number of seconds >= 0")
        self.idle_grace = idle_grace
        self.drain_started: float | None = None
        self._cond = threading.Condition()
        self._open: set[int] = set()
        self._wake_r, self._wake_w = os.pipe()  # non-inheritable (PEP 446)

    def fileno(self) -> int:
        return self._wake_r

    def opened(self, request: object) -> None:
        with self._cond:
            self._open.add(id(request))

    def closed(self, request: object) -> None:
        with self._cond:
            self._open.discard(id(request))
            self._cond.notify_all()

    def start_drain(self) -> None:
        with self._cond:
            if self.drain_started is None:
                self.drain_started = time.monotonic()
                os.write(self._wake_w, b"d")

    def wait_idle(self, deadline: float) -> bool:
        """Wait until every connection is closed (or ``deadline``): True if they are."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._open, deadline - time.monotonic())

    @property
    def count(self) -> int:
        return len(self._open)

    def close(self) -> None:
        """Release the wake-up pipe (only once no handler can be waiting on it)."""
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)


class DrainingHandler(BaseHTTPRequestHandler):
    """Mixed in before an app's ``BaseHTTPRequestHandler`` subclass by :func:`make_server`.

    Between requests the handler thread waits for the next request's first byte *and* the
    drain (``select.poll``), so the decision to close an idle connection is taken by the
    thread that would read the request: no request is cut half-read. Once draining:

    * a response that would keep the connection open says ``Connection: close`` (and the
      connection closes after it): the client knows not to send another request;
    * a connection waiting for a request gets ``idle_grace`` seconds (from when it became
      idle, or from the drain's start) for one more, then is closed (FIN): a request already
      on the wire when the drain began is still answered.

    The handler's own ``timeout`` (if set) still ends an idle wait, as in ``http.server``.
    """

    def handle(self) -> None:
        # wsgiref's handler reads its one request in handle(), not handle_one_request()
        if self._sdactivate_next_request():
            super().handle()

    def handle_one_request(self) -> None:
        if self._sdactivate_next_request():
            super().handle_one_request()

    def send_response_only(self, code: int, message: str | None = None) -> None:
        self._sdactivate_status = code
        self._sdactivate_connection_sent = False
        super().send_response_only(code, message)

    def send_header(self, keyword: str, value: str) -> None:
        if keyword.lower() == "connection":
            self._sdactivate_connection_sent = True
        super().send_header(keyword, value)

    def end_headers(self) -> None:
        conns = connections_of(self.server)
        if (
            conns is not None
            and conns.drain_started is not None
            and not self.close_connection
            and getattr(self, "_sdactivate_status", 0) >= 200  # not a 1xx interim response
            and not getattr(self, "_sdactivate_connection_sent", True)
        ):
            self.send_header("Connection", "close")  # sets close_connection (http.server)
        super().end_headers()

    def _sdactivate_next_request(self) -> bool:
        """Wait until the next request starts: True to read it, False to close instead."""
        conns = connections_of(self.server)
        if conns is None or self._sdactivate_buffered():
            return True
        sock = self.connection
        timeout = sock.gettimeout()  # the handler's own `timeout`, None for none
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        idle_since = time.monotonic()
        if conns.drain_started is None:
            poller.register(conns, select.POLLIN)
            ready = poller.poll(None if timeout is None else timeout * 1000)
            if not ready:
                self.close_connection = True  # http.server's request timeout
                return False
            if any(fd == sock.fileno() for fd, _ in ready):
                return True
            poller.unregister(conns)
        started = conns.drain_started
        assert started is not None
        remaining = max(idle_since, started) + conns.idle_grace - time.monotonic()
        if remaining > 0 and poller.poll(remaining * 1000):
            return True
        self.close_connection = True  # idle at the drain: FIN, no response
        return False

    def _sdactivate_buffered(self) -> bool:
        """Whether the next request's first bytes are already here (read ahead into
        ``rfile``, or in the kernel): a non-blocking ``peek``."""
        peek = getattr(self.rfile, "peek", None)
        if peek is None:  # unbuffered (rbufsize=0): nothing read ahead
            return False
        sock = self.connection
        timeout = sock.gettimeout()
        sock.setblocking(False)
        try:
            return bool(peek(1))
        except OSError:
            return True  # let http.server meet the error
        finally:
            sock.settimeout(timeout)


def connections_of(server: object) -> Connections | None:
    conns = getattr(server, "sdactivate_connections", None)
    return conns if isinstance(conns, Connections) else None
