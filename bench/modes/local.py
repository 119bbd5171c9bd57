"""Host modes (no systemd): C0 plain rebind, C3 supervisor, C4 Upgrader, P1 gunicorn."""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sdactivate.testing import NotifyReceiver
from tests.support import wait_until

from .base import (
    BENCH,
    BENCH_APP,
    EXAMPLES_APP,
    EXAMPLES_UPGRADER,
    PYTHON,
    VENV_PYTHON,
    Mode,
    ModeUnavailable,
    Restart,
    alive,
    children,
    describe,
    have_module,
    kill_pid,
    kill_tree,
    popen,
    scratch_dir,
)

READY_TIMEOUT = 30.0
POLL = 0.002  # s: where a restart's end is seen by polling, the poll is its resolution


def app_argv(app: str, how: str, port: int, extra: Sequence[str] = ()) -> list[str]:
    """The service's command line for one way of getting its socket (``extra``: more
    options, for bench/modes/app.py only)."""
    addr = f"127.0.0.1:{port}"
    if app == "examples":
        if how == "plain":
            return [PYTHON, str(EXAMPLES_APP), "--listen", addr]
        if how == "inherit":
            return [PYTHON, str(EXAMPLES_APP)]
        if how == "fdstore":
            return [PYTHON, str(EXAMPLES_APP), "--fdstore", "--listen", addr, "--name", "http"]
        if how == "upgrader":
            return [PYTHON, str(EXAMPLES_UPGRADER), "--listen", addr]
    else:
        spec = {
            "plain": f"plain:{addr}",
            "inherit": "inherit",
            "fdstore": f"fdstore:{addr}=http",
            "upgrader": f"upgrader:{addr}",
        }.get(how, how)  # "fd:N"
        return [PYTHON, str(BENCH_APP), "--socket", spec, *extra]
    raise ValueError(how)


def check_app(app: str, how: str) -> None:
    if app == "examples":
        path = EXAMPLES_UPGRADER if how == "upgrader" else EXAMPLES_APP
        if not path.exists():
            raise ModeUnavailable(f"{path.relative_to(BENCH.parent)} is missing")
    need = {
        "inherit": "sdactivate.activation",
        "fdstore": "sdactivate.fdstore",
        "upgrader": "sdactivate.upgrade",
        "plain": "sdactivate.notify",
    }[how]
    if (why := have_module(need)) is not None:
        raise ModeUnavailable(f"{need}: {why}")


@dataclass
class PlainRestart(Mode):
    """C0: the service binds the port itself; restart = SIGTERM, wait for exit, start again."""

    id: str = "C0"
    title: str = "plain bind + restart"
    proc: subprocess.Popen[bytes] | None = None
    rx: NotifyReceiver | None = None

    def check(self) -> None:
        check_app(self.app, "plain")

    def _spawn(self) -> subprocess.Popen[bytes]:
        assert self.rx is not None
        return popen(
            app_argv(self.app, "plain", self.port),
            env=self.rx.environ,
            pin=self.pin,
            log=self.log,
        )

    def start(self) -> None:
        self.rx = NotifyReceiver(thread=True)
        since = len(self.rx.messages)
        self.proc = self._spawn()
        self.rx.wait_for("READY", "1", since=since, timeout=READY_TIMEOUT)

    def restart(self) -> Restart:
        assert self.proc is not None and self.rx is not None
        old = self.proc
        since = len(self.rx.messages)
        t = time.monotonic()
        old.send_signal(signal.SIGTERM)
        old.wait(timeout=30)
        self.proc = self._spawn()
        self.rx.wait_for("READY", "1", since=since, timeout=READY_TIMEOUT)
        return Restart(t, time.monotonic(), old.pid, self.proc.pid)

    def stop(self) -> None:
        if self.proc is not None:
            kill_pid(self.proc.pid)
        if self.rx is not None:
            self.rx.close()


@dataclass
class SupervisorHandover(Mode):
    """C3: ``sdactivate run --listen ADDR=http -- APP``; restart = SIGHUP to the supervisor.

    ``workers`` > 1 adds ``--workers N`` (issue 15): a restart is then complete once the
    supervisor is READY again and every worker of the old generation has exited.
    """

    id: str = "C3"
    title: str = "sdactivate run handover (SIGHUP)"
    supervisor_label: str = "sdactivate run"
    workers: int = 1
    ready_timeout: float = 30.0
    app_extra: list[str] = field(default_factory=list)  # more options for bench/modes/app.py
    run_extra: list[str] = field(default_factory=list)  # more options for `sdactivate run`
    proc: subprocess.Popen[bytes] | None = None
    rx: NotifyReceiver | None = None

    def __post_init__(self) -> None:
        if self.workers != 1:
            self.title += f", {self.workers} workers"

    def check(self) -> None:
        check_app(self.app, "inherit")
        for mod in ("sdactivate.supervisor.runner", "sdactivate.cli.run"):
            if (why := have_module(mod)) is not None:
                raise ModeUnavailable(f"{mod}: {why}")
        if self.workers != 1 and (why := run_lacks("--workers")) is not None:
            raise ModeUnavailable(why)

    def start(self) -> None:
        self.rx = NotifyReceiver(thread=True)
        argv = [
            PYTHON,
            "-m",
            "sdactivate",
            "run",
            "--listen",
            f"127.0.0.1:{self.port}=http",
            "--ready-timeout",
            f"{self.ready_timeout:g}",
            "--drain-timeout",
            "15",
            *(["--workers", str(self.workers)] if self.workers != 1 else []),
            *self.run_extra,
            "--",
            *app_argv(self.app, "inherit", self.port, self.app_extra),
        ]
        since = len(self.rx.messages)
        self.proc = popen(argv, env=self.rx.environ, pin=self.pin, log=self.log)
        self.rx.wait_for("READY", "1", since=since, timeout=READY_TIMEOUT)

    def restart(self) -> Restart:
        """Done when the new generation is READY *and* the old one has exited (the window
        of restarts-and-measurement.md §4.4: trigger .. the later of the two)."""
        assert self.proc is not None and self.rx is not None
        old = children(self.proc.pid)
        pidfds = []
        for pid in old:
            with contextlib.suppress(OSError):
                pidfds.append(os.pidfd_open(pid))
        try:
            since = len(self.rx.messages)
            t = time.monotonic()
            os.kill(self.proc.pid, signal.SIGHUP)
            f = self.rx.wait_for("READY", "1", since=since, timeout=READY_TIMEOUT)
            ready = time.monotonic()
            for fd in pidfds:  # readable once that process has exited
                select.select([fd], [], [], READY_TIMEOUT)
        finally:
            for fd in pidfds:
                os.close(fd)
        new = [p for p in children(self.proc.pid) if p not in old]
        return Restart(
            t,
            max(ready, time.monotonic()),
            old_pid=old[0] if old else 0,
            new_pid=new[0] if new else 0,
            note=f.get("STATUS") or "",
        )

    def supervisor_pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def stop(self) -> None:
        if self.proc is not None:
            kill_tree(self.proc.pid)
        if self.rx is not None:
            self.rx.close()


def run_lacks(option: str) -> str | None:
    """None if ``sdactivate run`` (the services' interpreter) has ``option``, else why not."""
    r = subprocess.run(
        [PYTHON, "-m", "sdactivate", "run", "--help"],
        capture_output=True,
        text=True,
        cwd=BENCH.parent,
        check=False,
    )
    return None if option in r.stdout else f"`sdactivate run` has no {option} here"


@dataclass
class InProcessUpgrade(Mode):
    """C4: the app owns an ``sdactivate.Upgrader``; restart = SIGHUP to the current main pid,
    complete when the old one announces ``MAINPID=<new>`` (after the new one's READY=1)."""

    id: str = "C4"
    title: str = "in-process Upgrader (SIGHUP)"
    supervisor_label: str = "app (in-process)"
    first: subprocess.Popen[bytes] | None = None
    main: int = 0
    pids: list[int] = field(default_factory=list)
    rx: NotifyReceiver | None = None

    def check(self) -> None:
        check_app(self.app, "upgrader")

    def start(self) -> None:
        self.rx = NotifyReceiver(thread=True)
        since = len(self.rx.messages)
        self.first = popen(
            app_argv(self.app, "upgrader", self.port),
            env=self.rx.environ,
            pin=self.pin,
            log=self.log,
        )
        self.main = self.first.pid
        self.pids.append(self.main)
        self.rx.wait_for("READY", "1", since=since, timeout=READY_TIMEOUT)

    def restart(self) -> Restart:
        assert self.rx is not None
        old = self.main
        since = len(self.rx.messages)
        t = time.monotonic()
        os.kill(old, signal.SIGHUP)
        try:
            f = self.rx.wait_for("MAINPID", since=since, timeout=READY_TIMEOUT)
        except TimeoutError as exc:
            kids = "; ".join(describe(c) for c in children(old))
            raise TimeoutError(f"{exc}; pid {old} alive={alive(old)}, children [{kids}]") from exc
        self.main = int(f.get("MAINPID") or 0)
        self.pids.append(self.main)
        if self.first is not None and self.first.poll() is not None:
            self.first = None
        return Restart(t, time.monotonic(), old, self.main)

    def supervisor_pid(self) -> int | None:
        return self.main or None

    def stop(self) -> None:
        for pid in reversed(self.pids):
            kids = children(pid)  # a new generation of an unfinished upgrade
            kill_pid(pid, timeout=15)
            for k in kids:
                kill_pid(k)
        if self.first is not None:
            kill_pid(self.first.pid)
        if self.rx is not None:
            self.rx.close()


@dataclass
class Gunicorn(Mode):
    """P1: gunicorn (gthread, ``workers`` x 4 threads) on the WSGI twin of the app.

    ``signal_kind="HUP"``: reload (new workers, old ones stop gracefully); complete when
    no old worker is left. ``"USR2"``: new master; once it sent READY=1 and has its
    workers, TERM the old master (graceful); complete when the old master is gone.
    """

    id: str = "P1-HUP"
    title: str = "gunicorn HUP"
    supervisor_label: str = "gunicorn master"
    signal_kind: str = "HUP"
    workers: int = 1
    proc: subprocess.Popen[bytes] | None = None
    master: int = 0
    masters: list[int] = field(default_factory=list)
    rx: NotifyReceiver | None = None
    pidfile: Path | None = None

    def __post_init__(self) -> None:
        self.title += f", {self.workers} worker{'s' if self.workers != 1 else ''} x 4 threads"

    def check(self) -> None:
        if (why := have_module("gunicorn", VENV_PYTHON)) is not None:
            raise ModeUnavailable(f"gunicorn: {why}")
        if not Path(VENV_PYTHON).with_name("gunicorn").exists():
            raise ModeUnavailable("no gunicorn console script next to the interpreter")

    def start(self) -> None:
        import tempfile

        self.rx = NotifyReceiver(thread=True)
        scratch = Path(tempfile.mkdtemp(prefix="gunicorn-", dir=scratch_dir()))
        self.pidfile = scratch / "gunicorn.pid"
        argv = [
            str(Path(VENV_PYTHON).with_name("gunicorn")),
            "-w",
            str(self.workers),
            "-k",
            "gthread",
            "--threads",
            "4",
            "-b",
            f"127.0.0.1:{self.port}",
            "--backlog",
            "4096",
            "--pid",
            str(self.pidfile),
            "--chdir",
            str(BENCH / "modes"),
            "--graceful-timeout",
            "15",
            "--keep-alive",
            "5",
            "--no-control-socket",
            "--worker-tmp-dir",
            str(scratch),
            "wsgi_app:app",
        ]
        since = len(self.rx.messages)
        self.proc = popen(argv, env=self.rx.environ, pin=self.pin, log=self.log)
        self.master = self.proc.pid
        self.masters.append(self.master)
        self.rx.wait_for("READY", "1", since=since, timeout=READY_TIMEOUT)
        wait_until(
            lambda: len(children(self.master)) >= self.workers,
            timeout=READY_TIMEOUT,
            interval=POLL,
            what="workers",
        )

    def restart(self) -> Restart:
        assert self.rx is not None and self.pidfile is not None
        old = self.master
        if self.signal_kind == "HUP":
            before = set(children(old))
            t = time.monotonic()
            os.kill(old, signal.SIGHUP)
            wait_until(
                lambda: not (set(children(old)) & before) and len(children(old)) >= self.workers,
                timeout=READY_TIMEOUT,
                interval=POLL,
                what="gunicorn HUP: new workers, old ones gone",
            )
            return Restart(t, time.monotonic(), old, old)
        t = time.monotonic()
        os.kill(old, signal.SIGUSR2)
        # The new master is a child of the old one (fork + exec); gunicorn has no readiness
        # gate, so "ready" = it has its workers.
        new = wait_until(
            lambda: next((c for c in children(old) if len(children(c)) >= self.workers), 0),
            timeout=READY_TIMEOUT,
            interval=POLL,
            what="a new master with its workers",
        )
        self.masters.append(new)
        os.kill(old, signal.SIGTERM)
        wait_until(
            lambda: not alive(old), timeout=READY_TIMEOUT, interval=POLL, what="old master to exit"
        )
        # gunicorn ignores USR2 while the new master still has a parent master; it promotes
        # itself (renaming its pid file to --pid) on its next loop once the old one is gone.
        wait_until(
            lambda: _pidfile(self.pidfile) == new,
            timeout=READY_TIMEOUT,
            interval=POLL,
            what="new master promoted",
        )
        if self.proc is not None and self.proc.pid == old:
            self.proc.wait(timeout=5)
            self.proc = None
        self.master = new
        return Restart(t, time.monotonic(), old, new)

    def supervisor_pid(self) -> int | None:
        return self.master or None

    def stop(self) -> None:
        for pid in reversed(self.masters):
            kids = children(pid)
            kill_pid(pid, timeout=20)
            for k in kids:
                kill_pid(k)
        if self.proc is not None:
            kill_pid(self.proc.pid)
        if self.rx is not None:
            self.rx.close()
        if self.pidfile is not None:
            shutil.rmtree(self.pidfile.parent, ignore_errors=True)


def _pidfile(path: Path | None) -> int:
    try:
        return int(path.read_text().strip()) if path is not None else 0
    except (OSError, ValueError):
        return 0
