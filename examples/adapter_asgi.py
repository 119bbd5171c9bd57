"""An ASGI app on a socket-activated socket, served by uvicorn or hypercorn (adapters.asgi).

    systemd-socket-activate -l 127.0.0.1:8080 --fdname=http \
        python examples/adapter_asgi.py uvicorn      # or: hypercorn
    curl 127.0.0.1:8080/            # ok pid=...
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs

import sdactivate
from sdactivate.adapters import asgi


async def app(
    scope: dict[str, Any],
    receive: Callable[[], Awaitable[dict[str, Any]]],
    send: Callable[[dict[str, Any]], Awaitable[None]],
) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["path"] == "/sleep":
        sdactivate.notify.status("busy")
        ms = int(parse_qs(scope["query_string"].decode()).get("ms", ["100"])[0])
        await asyncio.sleep(ms / 1000)
    body = f"ok pid={os.getpid()}\n".encode()
    headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def main() -> None:
    server = sys.argv[1] if len(sys.argv) > 1 else "uvicorn"
    sock = sdactivate.listen("127.0.0.1:8080", name="http")
    if server == "uvicorn":
        asgi.serve_uvicorn(app, sockets=[sock], drain_timeout=5.0, log_level="warning")
    else:
        asgi.serve_hypercorn(app, sockets=[sock], drain_timeout=5.0)


if __name__ == "__main__":
    main()
