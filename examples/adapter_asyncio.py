"""A raw asyncio HTTP responder on a socket-activated socket (adapters.asyncio_server).

    systemd-socket-activate -l 127.0.0.1:8080 --fdname=http python examples/adapter_asyncio.py
    curl 127.0.0.1:8080/            # ok pid=...

asyncio re-listen()s the socket it is given; the adapter passes the socket's own backlog.
"""

from __future__ import annotations

import asyncio
import os
from urllib.parse import parse_qs, urlsplit

import sdactivate
from sdactivate.adapters import asyncio_server


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        writer.close()
        return
    target = head.split(b" ", 2)[1].decode()
    url = urlsplit(target)
    if url.path == "/sleep":
        sdactivate.notify.status("busy")
        await asyncio.sleep(int(parse_qs(url.query).get("ms", ["100"])[0]) / 1000)
    body = f"ok pid={os.getpid()}\n".encode()
    writer.write(
        b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
    )
    await writer.drain()
    writer.close()


def main() -> None:
    sock = sdactivate.listen("127.0.0.1:8080", name="http")
    asyncio_server.run(handle, sockets=[sock], drain_timeout=5.0)


if __name__ == "__main__":
    main()
