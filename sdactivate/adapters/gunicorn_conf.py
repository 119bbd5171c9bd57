"""A gunicorn config module: systemd readiness that means "workers serve".

::

    gunicorn -c python:sdactivate.adapters.gunicorn_conf app:app

or, to add your own settings, in your config file::

    from sdactivate.adapters.gunicorn_conf import *  # noqa: F403  (hooks)
    workers = 4

Unit: ``Type=notify``, ``NotifyAccess=main``, ``ExecReload=/bin/kill -HUP $MAINPID``, and a
socket unit. gunicorn takes the ``LISTEN_FDS`` sockets natively (it ignores their names
and serves every one) and, since 23.0, does not re-``listen()`` an already listening socket,
so ``Backlog=`` is kept.

What this module changes (gunicorn issues #2502/#2778, PR #3419):

- gunicorn sends ``READY=1`` when the arbiter boots, before any worker exists. Importing
  this module takes ``NOTIFY_SOCKET`` out of gunicorn's environment (its own notify goes
  nowhere; workers inherit no notify socket) and sends ``READY=1`` itself once
  ``workers`` workers have loaded the app (``post_worker_init``);
- SIGHUP (reload): ``RELOADING=1`` + ``MONOTONIC_USEC``, then ``READY=1`` once the new
  workers are up (sd_notify(3); PID 1 keeps the unit in "reloading" until then);
- SIGTERM / SIGINT / SIGQUIT: ``STOPPING=1`` first (gunicorn's ``graceful_timeout`` is the
  hard deadline for in-flight requests on SIGTERM);
- gunicorn 25.1+'s control socket stays at its default where that can be created, and is
  switched off (one info line) where it cannot, as under a hardened unit's read-only home.

USR2 re-exec is not covered (the new master would need ``MAINPID=``): use
:class:`sdactivate.Upgrader` or ``sdactivate run`` for binary upgrades.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Iterable
from typing import Any

from .. import notify
from .._signals import threads_without_stop_signals
from ..errors import NotifyError

__all__ = ["on_reload", "post_worker_init", "when_ready"]

log = logging.getLogger("sdactivate.adapters.gunicorn")


class _Readiness:
    """Arbiter-side state: which workers loaded the app, and what PID 1 was told."""

    def __init__(self, notify_socket: str | None) -> None:
        self.environ = {"NOTIFY_SOCKET": notify_socket} if notify_socket else {}
        self.expected = 1
        self.ready: set[int] = set()
        self.before: set[int] = set()  # workers of the previous configuration
        self.announced = False
        self.pipe_r, self.pipe_w = os.pipe()  # workers are forked: they inherit pipe_w
        self.lock = threading.Lock()

    def send(self, fields: dict[str, str | int]) -> None:
        try:
            notify.send(fields, environ=self.environ)
        except NotifyError as exc:
            log.warning("cannot notify systemd (%s): %s", fields, exc)

    def start(self, expected: int, signals: Iterable[int]) -> None:
        self.expected = max(1, expected)
        reader = threading.Thread(target=self._read, name="sdactivate-gunicorn", daemon=True)
        # The arbiter's signals stay with its main thread, which handles them (its Python
        # handlers run there only: see sdactivate._signals.threads_without_stop_signals).
        with threads_without_stop_signals(signals):
            reader.start()

    def _read(self) -> None:
        buffer = b""
        while chunk := os.read(self.pipe_r, 512):
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                self.worker_ready(int(line))

    def worker_ready(self, pid: int) -> None:
        with self.lock:
            if pid in self.before:
                return
            self.ready.add(pid)
            if self.announced or len(self.ready) < self.expected:
                return
            self.announced = True
        self.send({"READY": 1, "STATUS": f"{len(self.ready)} workers serving"})

    def reloading(self) -> None:
        with self.lock:
            self.before |= self.ready
            self.ready = set()
            self.announced = False
        self.send({"RELOADING": 1, "MONOTONIC_USEC": time.monotonic_ns() // 1000})

    def stopping(self) -> None:
        self.send({"STOPPING": 1})


# gunicorn reads NOTIFY_SOCKET when it sends its own READY=1 (Arbiter.start()): hide it.
_state = _Readiness(os.environ.pop("NOTIFY_SOCKET", None))


def when_ready(server: Any) -> None:
    """Arbiter booted (sockets open, no worker yet): start counting; hook the signals."""
    _control_socket(server)
    _state.start(server.num_workers, [*server.SIGNALS, signal.SIGCHLD])

    def wrap(name: str, before: Any) -> None:
        original = getattr(server, name)

        def handler() -> None:
            before()
            original()

        setattr(server, name, handler)  # the arbiter looks handlers up by name

    for name in ("handle_term", "handle_int", "handle_quit"):
        wrap(name, _state.stopping)
    wrap("handle_hup", _state.reloading)


def _control_socket(server: Any) -> None:
    """gunicorn 25.1+ serves a control socket (for gunicornc) once its workers run, by
    default at ``$XDG_RUNTIME_DIR/gunicorn.ctl``, else ``~/.gunicorn/gunicorn.ctl``. A
    hardened system service has no XDG_RUNTIME_DIR and a read-only home (``/`` for
    DynamicUser=, ProtectSystem=strict), and gunicorn logs ``[ERROR] Control server error:
    Read-only file system: '/.gunicorn'`` at every start. Left at that default and not
    creatable here, it is switched off with one line; a path the configuration sets (e.g.
    ``control_socket = "/run/myapp/gunicorn.ctl"`` with ``RuntimeDirectory=myapp``) is kept."""
    settings = getattr(server.cfg, "settings", {})
    if "control_socket" not in settings or server.cfg.control_socket_disable:
        return  # gunicorn < 25.1, or switched off already
    path = server.cfg.control_socket
    if path != settings["control_socket"].default:
        return
    directory = os.path.dirname(path)
    try:  # what gunicorn's server does first (ctl/server.py), here where a failure is quiet
        os.makedirs(directory, mode=0o700, exist_ok=True)
        writable = os.access(directory, os.W_OK | os.X_OK)  # EROFS on a read-only mount
    except OSError:
        writable = False
    if writable:
        return
    server.cfg.set("control_socket_disable", True)
    server.log.info(
        "control socket (gunicornc) off: %s cannot be created here; set control_socket to"
        " a writable path to have it",
        path,
    )


def on_reload(server: Any) -> None:
    """After SIGHUP re-read the configuration: wait for that many new workers."""
    _state.expected = max(1, server.num_workers)


def post_worker_init(worker: Any) -> None:
    """In a worker that has loaded the app and is about to accept: tell the arbiter."""
    os.write(_state.pipe_w, f"{os.getpid()}\n".encode())
