"""A tiny HTTP service that upgrades itself in place on SIGHUP (sdactivate.Upgrader).

Run it alone, under ``systemd-socket-activate``, or as a systemd ``Type=notify`` service
(``NotifyAccess=all``, ``ExecReload=/bin/kill -HUP $MAINPID``)::

    python examples/upgrader_app.py --listen 127.0.0.1:8080 &
    curl -s 127.0.0.1:8080/            # ok pid=<pid>
    kill -HUP %1                       # a new process takes over, no request fails
    curl -s 127.0.0.1:8080/            # ok pid=<new pid>

``GET /sleep?ms=N`` sends the response head at once and the body N ms later (in-flight
work for drain tests). Every response
carries ``X-Pid``. ``--fault-file PATH``: each generation reads PATH at start-up and
misbehaves as it says (fault injection for tests and benchmarks): ``exit-before-ready``,
``never-ready``, ``crash-after-ready[:MS]`` (a fatal error MS ms after start-up: the
process stops accepting, finishes in-flight requests, exits 1), ``abort-after-ready[:MS]``
(``os._exit(4)``: in-flight requests of this process fail).
"""

from __future__ import annotations

import argparse
import logging
import os
import resource
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, urlsplit

import sdactivate
from sdactivate.adapters import http_server


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        body = f"ok pid={os.getpid()}\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Pid", str(os.getpid()))
        self.end_headers()
        if url.path == "/sleep":  # the head first: a client sees the request is in flight
            self.wfile.flush()
            time.sleep(int(parse_qs(url.query).get("ms", ["100"])[0]) / 1000)
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def read_fault(path: str | None) -> str:
    if not path:
        return ""
    try:
        with open(path) as f:
            return f.read().strip()
    except FileNotFoundError:
        return ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="127.0.0.1:8080")
    parser.add_argument("--name", default="http", help="fd name (FileDescriptorName=)")
    parser.add_argument("--upgrade-timeout", type=float, default=10.0)
    parser.add_argument("--stable-time", type=float, default=0.3)
    parser.add_argument("--drain-timeout", type=float, default=10.0)
    parser.add_argument("--startup-delay-ms", type=int, default=0)
    parser.add_argument("--fault-file")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="[%(process)d] %(name)s: %(message)s", stream=sys.stderr
    )
    # systemd gives services a soft RLIMIT_NOFILE of 1024 (select() compatibility) and a
    # high hard limit; one fd per open connection needs more under load.
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    fault = read_fault(args.fault_file)
    if fault == "exit-before-ready":
        return 3
    time.sleep(args.startup_delay_ms / 1000)
    with sdactivate.Upgrader(
        upgrade_timeout=args.upgrade_timeout, stable_time=args.stable_time
    ) as upg:
        upg.listen("tcp", args.listen, name=args.name)
        if fault == "never-ready":
            upg.wait_exit()  # serves nothing, never READY: the parent stops it at the timeout
            return 0
        if fault.startswith(("crash-after-ready", "abort-after-ready")):
            ms = int(fault.partition(":")[2] or 100)
            if fault.startswith("crash"):  # a fatal error: stop, finish in-flight work, exit 1
                threading.Timer(ms / 1000, upg.stop, args=("injected crash",)).start()
            else:
                threading.Timer(ms / 1000, os._exit, args=(4,)).start()
        http_server.serve(
            Handler,
            upgrader=upg,
            drain_timeout=args.drain_timeout,
            status=f"serving, pid {os.getpid()}",
        )
        if upg.exit_reason == "injected crash":
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
