"""The bytes both load engines send and parse: the request, the response head, the server's
pid, and how a failed request is classified. No I/O loop here (loadgen.py: asyncio;
epoll_client.py: epoll).
"""

from __future__ import annotations

import contextlib
import errno
import re
import resource
import socket
from typing import Any

from bench.loadresult import ERROR, REFUSED, RESET, TIMEOUT

__all__ = ["MAX_RESPONSE", "PID_BODY", "Short", "Target", "classify", "parse_head", "raise_nofile"]

MAX_RESPONSE = 1 << 20
_PID_HEADER = re.compile(rb"^x-(?:server-)?pid:\s*(\d+)\s*$", re.IGNORECASE | re.MULTILINE)
PID_BODY = re.compile(rb"\bpid\W{0,3}(\d+)", re.IGNORECASE)
_CONTENT_LENGTH = re.compile(rb"^content-length:\s*(\d+)\s*$", re.IGNORECASE | re.MULTILINE)
_CONN_CLOSE = re.compile(rb"^connection:\s*close\s*$", re.IGNORECASE | re.MULTILINE)


def classify(exc: BaseException) -> tuple[int, str]:
    """A failed request's outcome code and kind (Result.fail's arguments) from its error."""
    if isinstance(exc, ConnectionRefusedError):
        return REFUSED, "ECONNREFUSED"
    if isinstance(exc, ConnectionResetError):
        return RESET, "ECONNRESET"
    if isinstance(exc, BrokenPipeError):
        return RESET, "EPIPE"
    if isinstance(exc, TimeoutError):
        return TIMEOUT, "timeout"
    if isinstance(exc, Short):
        return RESET, "short"
    if isinstance(exc, OSError) and exc.errno is not None:
        return ERROR, errno.errorcode.get(exc.errno, str(exc.errno))
    return ERROR, type(exc).__name__


class Short(Exception):
    """The peer closed before a complete response."""


def parse_head(head: bytes) -> tuple[int, int | None, bool, int]:
    """(status, content-length or None, connection-close, pid) from a response head."""
    line, _, rest = head.partition(b"\r\n")
    parts = line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        raise Short("bad status line")
    m = _CONTENT_LENGTH.search(rest)
    pm = _PID_HEADER.search(rest)
    return (
        int(parts[1]),
        int(m.group(1)) if m else None,
        bool(_CONN_CLOSE.search(rest)),
        int(pm.group(1)) if pm else 0,
    )


class Target:
    __slots__ = ("addr", "family", "request")

    def __init__(
        self, host: str, port: int, unix_path: str | None, request: bytes | None, ka: bool
    ) -> None:
        if unix_path is not None:
            self.family = socket.AF_UNIX
            self.addr: Any = unix_path
        else:
            info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
            self.family = info[0]
            self.addr = info[4]
        if request is None:
            conn = b"keep-alive" if ka else b"close"
            request = b"GET / HTTP/1.1\r\nHost: x\r\nX-Req-Id: {id}\r\nConnection: %s\r\n\r\n" % (
                conn
            )
        self.request = request

    def payload(self, rid: int) -> bytes:
        if b"{id}" in self.request:
            return self.request.replace(b"{id}", str(rid).encode())
        return self.request


def raise_nofile(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        new = need if hard == resource.RLIM_INFINITY else min(need, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
