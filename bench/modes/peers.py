"""The other peers of issue 15: P2 uWSGI chain reload, P3 circus reload (P1 gunicorn is in
local.py). Both are installed by ``make bench`` (pinned), never by ``make test``; a peer that
is not installed is a ModeUnavailable (the mode is skipped with the reason).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.support import wait_until

from .base import (
    BENCH,
    ROOT,
    VENV_PYTHON,
    Mode,
    ModeUnavailable,
    Restart,
    alive,
    children,
    have_module,
    kill_tree,
    popen,
    scratch_dir,
)
from .local import READY_TIMEOUT, app_argv

POLL = 0.005  # s: a restart's end is seen by polling (process table, log), at this resolution
_CHAIN_DONE = b"chain reloading complete"


def _backlog() -> int:
    """4096, or less if the host's somaxconn is lower (uWSGI refuses a larger --listen)."""
    try:
        return min(4096, int(Path("/proc/sys/net/core/somaxconn").read_text()))
    except (OSError, ValueError):
        return 128


def _script(name: str) -> Path:
    """A console script installed beside the harness's interpreter (the bench venv)."""
    return Path(VENV_PYTHON).with_name(name)


def _answers(port: int) -> bool:
    """True once ``GET /`` on ``port`` gets a 200 (a worker serves, not only a bound socket)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            return s.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


@dataclass
class UwsgiChain(Mode):
    """P2: uWSGI, a master and ``workers`` processes (one thread each, ``--lazy-apps``) on the
    WSGI twin of the app, serving ``--http-socket`` (every response closes its connection,
    and says so: the keep-alive workload reconnects). Restart = chain reload: ``c``
    written to the master FIFO; the master stops one worker gracefully, respawns it, waits
    until it accepts, then the next one. Complete when the master logs "chain reloading
    complete" and no old worker is left.
    """

    id: str = "P2-chain"
    title: str = "uWSGI chain reload (master FIFO c)"
    supervisor_label: str = "uWSGI master"
    workers: int = 1
    proc: subprocess.Popen[bytes] | None = None
    scratch: Path | None = None

    def __post_init__(self) -> None:
        self.title += f", {self.workers} worker{'s' if self.workers != 1 else ''}"
        # uWSGI's master steps the chain on its 1 s tick: ~2 s per worker measured here
        self.restart_hint_s = 0.5 + 2.0 * self.workers

    def check(self) -> None:
        if not _script("uwsgi").exists():
            raise ModeUnavailable(
                f"uwsgi is not installed beside {VENV_PYTHON} (make bench pip-installs it)"
            )

    def start(self) -> None:
        self.scratch = Path(tempfile.mkdtemp(prefix="uwsgi-", dir=scratch_dir()))
        if self.log is None:
            self.log = self.scratch / "uwsgi.log"
        if self.keepalive:
            self.notes.append("uWSGI --http-socket closes every response: clients reconnect")
        argv = [
            str(_script("uwsgi")),
            "--master",
            "--processes",
            str(self.workers),
            "--http-socket",
            f"127.0.0.1:{self.port}",
            "--listen",
            str(_backlog()),
            "--lazy-apps",  # chain reload loads the app in each new worker
            "--master-fifo",
            str(self.scratch / "fifo"),
            "--chdir",
            str(BENCH / "modes"),
            "--module",
            "wsgi_app:app",
            "--need-app",
            "--die-on-term",
            "--disable-logging",  # request logs; the master's own lines stay
            # --http-socket closes the connection after each response but says nothing (an
            # HTTP/1.1 response with a length): a client would reuse it and race the close
            "--add-header",
            "Connection: close",
            "--worker-reload-mercy",
            "15",
        ]
        self.proc = popen(argv, pin=self.pin, log=self.log)
        wait_until(
            lambda: len(children(self.proc.pid)) >= self.workers if self.proc else False,
            timeout=READY_TIMEOUT,
            interval=POLL,
            what="uWSGI workers",
        )
        wait_until(lambda: _answers(self.port), timeout=READY_TIMEOUT, what="uWSGI serving")

    def _chains_done(self) -> int:
        try:
            return (self.log.read_bytes() if self.log else b"").count(_CHAIN_DONE)
        except OSError:
            return 0

    def restart(self) -> Restart:
        assert self.proc is not None and self.scratch is not None
        master = self.proc.pid
        old = set(children(master))
        done = self._chains_done()
        t = time.monotonic()
        fd = os.open(self.scratch / "fifo", os.O_WRONLY | os.O_NONBLOCK)
        try:
            os.write(fd, b"c")
        finally:
            os.close(fd)
        wait_until(
            lambda: (
                self._chains_done() > done
                and not (set(children(master)) & old)
                and len(children(master)) >= self.workers
            ),
            timeout=READY_TIMEOUT + 5.0 * self.workers,
            interval=POLL,
            what="uWSGI chain reload complete, old workers gone",
        )
        return Restart(t, time.monotonic(), master, master)

    def supervisor_pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def stop(self) -> None:
        if self.proc is not None:
            kill_tree(self.proc.pid)
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)


_CIRCUS_INI = """\
[circus]
endpoint = ipc://{scratch}/endpoint
pubsub_endpoint = ipc://{scratch}/pubsub
statsd = False
check_delay = 5
loglevel = INFO

[watcher:web]
cmd = {cmd}
use_sockets = True
numprocesses = {workers}
copy_env = True
working_dir = {root}
graceful_timeout = 15
stop_signal = TERM

[socket:web]
host = 127.0.0.1
port = {port}
backlog = {backlog}
"""


@dataclass
class CircusReload(Mode):
    """P3: circusd owns the listening socket (``[socket:web]``) and runs ``workers`` copies of
    the bench app on it (``--socket fd:$(circus.sockets.web)``, the fd circus passes).
    Restart = a graceful, non-sequential ``reload`` of the watcher over circus's ZMQ endpoint
    (what ``circusctl reload web --waiting`` sends): circus spawns N new processes, then
    stops the N oldest at once; it has no readiness protocol, so the old ones stop while the
    new ones still start. Complete when circus answered and the old processes have exited.
    """

    id: str = "P3-circus"
    title: str = "circus reload (graceful)"
    supervisor_label: str = "circusd"
    workers: int = 1
    proc: subprocess.Popen[bytes] | None = None
    scratch: Path | None = None
    pids: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.title += f", {self.workers} process{'es' if self.workers != 1 else ''} [bench app]"

    def check(self) -> None:
        if (why := have_module("circus.client", VENV_PYTHON)) is not None:
            raise ModeUnavailable(f"circus: {why} (make bench pip-installs it)")
        if not _script("circusd").exists():
            raise ModeUnavailable(f"no circusd console script beside {VENV_PYTHON}")

    def _endpoint(self) -> str:
        assert self.scratch is not None
        return f"ipc://{self.scratch}/endpoint"

    def start(self) -> None:
        self.scratch = Path(tempfile.mkdtemp(prefix="circus-", dir=scratch_dir()))
        cmd = " ".join(app_argv("bench", "fd:$(circus.sockets.web)", self.port))
        ini = self.scratch / "circus.ini"
        ini.write_text(
            _CIRCUS_INI.format(
                scratch=self.scratch,
                cmd=cmd,
                workers=self.workers,
                root=ROOT,
                port=self.port,
                backlog=_backlog(),
            )
        )
        self.proc = popen([str(_script("circusd")), str(ini)], pin=self.pin, log=self.log)
        wait_until(
            lambda: len(children(self.proc.pid)) >= self.workers if self.proc else False,
            timeout=READY_TIMEOUT,
            interval=POLL,
            what="circus processes",
        )
        wait_until(lambda: _answers(self.port), timeout=READY_TIMEOUT, what="circus serving")

    def restart(self) -> Restart:
        from circus.client import CircusClient  # installed by `make bench` only

        assert self.proc is not None
        arbiter = self.proc.pid
        old = set(children(arbiter))
        self.pids |= old
        client = CircusClient(endpoint=self._endpoint(), timeout=READY_TIMEOUT)
        try:
            t = time.monotonic()
            answer = client.call(
                {
                    "command": "reload",
                    "properties": {
                        "name": "web",
                        "graceful": True,
                        "sequential": False,
                        "waiting": True,
                    },
                }
            )
        finally:
            client.stop()
        if answer.get("status") != "ok":
            raise RuntimeError(f"circus reload: {answer!r}")
        wait_until(
            lambda: not any(alive(p) for p in old) and len(children(arbiter)) >= self.workers,
            timeout=READY_TIMEOUT,
            interval=POLL,
            what="circus: old processes gone",
        )
        return Restart(t, time.monotonic(), arbiter, arbiter)

    def supervisor_pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def stop(self) -> None:
        if self.proc is not None:
            kill_tree(self.proc.pid, also=self.pids)
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)
