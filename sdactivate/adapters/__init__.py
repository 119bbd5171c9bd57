"""Server adapters: run a server on sdactivate's sockets with systemd-correct lifecycle.

Each adapter takes listening sockets (``LISTEN_FDS`` via :func:`sdactivate.listeners`, an
:class:`~sdactivate.Upgrader`'s, or your own), never re-``listen()``s an inherited socket
with a smaller backlog, sends ``READY=1`` once the server really accepts, and on SIGTERM
sends ``STOPPING=1``, stops accepting, drains in-flight requests and gives up at a hard
deadline ("hammer time"). Server packages are imported inside the adapter functions, so
``import sdactivate.adapters`` loads none of them.

=====================  ===================================================
``http_server``        stdlib ``http.server`` / ``socketserver``
``asyncio_server``     ``asyncio.start_server`` stream handlers
``wsgi``               WSGI apps on ``wsgiref`` or waitress
``asgi``               ASGI apps on uvicorn (``Server.run(sockets=)``) or hypercorn (``fd://``)
``gunicorn_conf``      gunicorn hooks (``-c python:sdactivate.adapters.gunicorn_conf``)
=====================  ===================================================
"""

from __future__ import annotations

from importlib import import_module
from types import ModuleType

__all__ = ["asgi", "asyncio_server", "gunicorn_conf", "http_server", "wsgi"]


def __getattr__(name: str) -> ModuleType:
    if name in __all__:
        return import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
