"""stdlib http.server on a socket-activated socket (sdactivate.adapters.http_server).

    systemd-socket-activate -l 127.0.0.1:8080 --fdname=http \
        python examples/adapter_http_server.py
    curl 127.0.0.1:8080/            # ok pid=...

READY=1 once the accept loop runs; SIGTERM: STOPPING=1, in-flight requests finish
(``/sleep?ms=N`` is one), exit within the drain deadline (``EXAMPLE_DRAIN_TIMEOUT``
seconds, default 5). Without activation it binds 127.0.0.1:8080 itself.
"""

from __future__ import annotations

import os
import time
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, urlsplit

import sdactivate
from sdactivate.adapters import http_server


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path == "/sleep":
            sdactivate.notify.status("busy")
            time.sleep(int(parse_qs(url.query).get("ms", ["100"])[0]) / 1000)
        body = f"ok pid={os.getpid()}\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def main() -> None:
    drain = float(os.environ.get("EXAMPLE_DRAIN_TIMEOUT", "5"))
    sock = sdactivate.listen("127.0.0.1:8080", name="http")
    http_server.serve(Handler, sockets=[sock], drain_timeout=drain)


if __name__ == "__main__":
    main()
