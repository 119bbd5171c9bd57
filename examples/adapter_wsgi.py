"""A WSGI app on a socket-activated socket, served by waitress or wsgiref (adapters.wsgi).

    systemd-socket-activate -l 127.0.0.1:8080 --fdname=http \
        python examples/adapter_wsgi.py waitress      # or: wsgiref
    curl 127.0.0.1:8080/            # ok pid=...
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

import sdactivate
from sdactivate.adapters import wsgi


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    if environ["PATH_INFO"] == "/sleep":
        sdactivate.notify.status("busy")
        time.sleep(int(parse_qs(environ["QUERY_STRING"]).get("ms", ["100"])[0]) / 1000)
    body = f"ok pid={os.getpid()}\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def main() -> None:
    server = sys.argv[1] if len(sys.argv) > 1 else "waitress"
    sock = sdactivate.listen("127.0.0.1:8080", name="http")
    if server == "waitress":
        wsgi.serve_waitress(app, sockets=[sock], drain_timeout=5.0, threads=4)
    else:
        wsgi.serve_wsgiref(app, sockets=[sock], drain_timeout=5.0)


if __name__ == "__main__":
    main()
