"""The WSGI twin of the bench service for gunicorn (P1): 200, ``X-Pid``, body ``pid=N``."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    pid = os.getpid()
    body = b"pid=%d\n" % pid
    start_response(
        "200 OK",
        [
            ("Content-Type", "text/plain"),
            ("Content-Length", str(len(body))),
            ("X-Pid", str(pid)),
        ],
    )
    return [body]
