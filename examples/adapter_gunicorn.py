"""A WSGI app under gunicorn with sdactivate's config module (adapters.gunicorn_conf).

    systemd-socket-activate -l 127.0.0.1:8080 python examples/adapter_gunicorn.py
    curl 127.0.0.1:8080/            # ok pid=<worker pid>

``main()`` execs gunicorn in place (same pid, so ``LISTEN_PID`` stays right)::

    gunicorn -c python:sdactivate.adapters.gunicorn_conf --chdir examples adapter_gunicorn:app

READY=1 is sent once every worker has loaded this module (gunicorn alone says READY when
the arbiter boots, before any worker exists). Loading takes ``EXAMPLE_LOAD_MS`` (default
300) to make that visible; ``EXAMPLE_MARKER=path`` gets a line per loaded worker.
``GET /sleep?ms=N`` sends the head and ``ok``, then the rest of the body N ms later.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

time.sleep(int(os.environ.get("EXAMPLE_LOAD_MS", "300")) / 1000)  # a slow app import
if os.environ.get("EXAMPLE_MARKER") and __name__ != "__main__":
    with open(os.environ["EXAMPLE_MARKER"], "a") as marker:
        marker.write(f"{os.getpid()}\n")


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterator[bytes]:
    body = f"ok pid={os.getpid()}\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    if environ["PATH_INFO"] == "/sleep":
        yield body[:2]  # the head goes out with it: the request is visibly in flight
        time.sleep(int(parse_qs(environ["QUERY_STRING"]).get("ms", ["100"])[0]) / 1000)
        body = body[2:]
    yield body


def main() -> None:
    here = Path(__file__).resolve().parent
    argv = [sys.executable, "-m", "gunicorn", "-c", "python:sdactivate.adapters.gunicorn_conf"]
    argv += ["--chdir", str(here), "--workers", "2", "--graceful-timeout", "5"]
    argv += ["--log-level", "warning", "adapter_gunicorn:app"]
    os.execv(sys.executable, argv)


if __name__ == "__main__":
    main()
