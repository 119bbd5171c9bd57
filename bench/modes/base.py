"""What every restart mode shares: the Mode interface, process stats, spawning services.

A mode starts a service on a loopback port, restarts it on demand (returning when the
restart is complete, by that mode's own definition), names the process whose RSS/CPU is the
"supervisor" cost, and stops everything it started -- by pid, never by name.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from bench.loadgen import fast_python
from tests.support import wait_until

T = TypeVar("T")

BENCH = Path(__file__).resolve().parent.parent
ROOT = BENCH.parent
# The services under test run on the fastest stock interpreter (loadgen.fast_python: Debian's
# /usr/bin/python3 on the measurement VM and in CI); gunicorn runs where it is installed.
PYTHON = fast_python()
VENV_PYTHON = sys.executable
# the asyncio (or threaded) HTTP services under test
EXAMPLES_APP = ROOT / "examples" / "app.py"
EXAMPLES_UPGRADER = ROOT / "examples" / "upgrader_app.py"
BENCH_APP = BENCH / "modes" / "app.py"
SERVICE_CPU = 0  # services, supervisors and PID 1 run here; the load generator on CPU 1


class ModeUnavailable(Exception):
    """A piece this mode needs is missing; the message says which (the mode is skipped)."""


@dataclass
class Restart:
    """One restart as the harness saw it (time.monotonic() seconds)."""

    trigger: float
    done: float
    old_pid: int = 0
    new_pid: int = 0
    note: str = ""


@dataclass
class ProcSample:
    pid: int
    rss_kb: int
    hwm_kb: int
    cpu_s: float


@dataclass
class Mode:
    """Base class; subclasses fill in start/restart/stop."""

    id: str = ""
    title: str = ""
    supervisor_label: str = "-"
    port: int = 0
    keepalive: bool = False
    app: str = "examples"  # which service program: "examples" or "bench"
    pin: bool = True  # run the service on SERVICE_CPU
    log: Path | None = None  # the service's stdout/stderr (host modes)
    notes: list[str] = field(default_factory=list)
    # s a restart is known to take at least (uWSGI's chain reload: ~1 s per worker); run.py
    # spaces this mode's restarts by at least that much, so the run keeps its restart count
    restart_hint_s: float = 0.0

    def check(self) -> None:
        """Raise ModeUnavailable if a piece is missing."""

    def start(self) -> None:
        raise NotImplementedError

    def restart(self) -> Restart:
        raise NotImplementedError

    def supervisor_pid(self) -> int | None:
        return None

    def stop(self) -> None:
        raise NotImplementedError


def have_module(name: str, python: str = PYTHON) -> str | None:
    """None if ``name`` imports in ``python``'s environment (the services'), else why not."""
    r = subprocess.run(
        [python, "-c", f"import {name}"], capture_output=True, text=True, cwd=ROOT, check=False
    )
    return None if r.returncode == 0 else (r.stderr.strip().splitlines() or ["?"])[-1]


def proc_sample(pid: int) -> ProcSample | None:
    """RSS, peak RSS (kB) and CPU seconds (user+sys) of ``pid``, or None if it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = {}
    for line in status.splitlines():
        k, _, v = line.partition(":")
        fields[k] = v.strip()
    after = stat.rpartition(")")[2].split()
    tick = os.sysconf("SC_CLK_TCK")
    cpu = (int(after[11]) + int(after[12])) / tick  # proc(5): utime, stime (fields 14, 15)
    return ProcSample(
        pid,
        int(fields.get("VmRSS", "0 kB").split()[0]),
        int(fields.get("VmHWM", "0 kB").split()[0]),
        cpu,
    )


def children(pid: int) -> list[int]:
    """Children of every thread of ``pid`` (proc(5): .../task/<tid>/children is per thread)."""
    out: list[int] = []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            out += [int(x) for x in Path(f"/proc/{pid}/task/{tid}/children").read_text().split()]
        except OSError:
            continue
    return out


def describe(pid: int) -> str:
    """State, kernel wait channel and whether ``pid`` has exec'd (for failure reports)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
        wchan = Path(f"/proc/{pid}/wchan").read_text()
        env = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return f"{pid}: gone"
    execd = b"LISTEN_PID=" in env
    return f"{pid}: state {state}, wchan {wchan}, exec'd with LISTEN_PID: {execd}"


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def kill_pid(pid: int, *, timeout: float = 10.0) -> None:
    """SIGTERM ``pid``, SIGKILL it after ``timeout``; reap it if it is our child."""
    if not pid or not alive(pid):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)

    def gone() -> bool:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # a child of ours is a zombie until reaped
        return not alive(pid)

    with contextlib.suppress(TimeoutError):
        wait_until(gone, timeout=timeout, interval=0.01)
    if alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def kill_tree(pid: int, *, also: Sequence[int] = ()) -> None:
    """Stop a mode's top process (``kill_pid``, 20 s) and then whatever it had started (its
    children as they were before, plus ``also``), so no worker outlives its master."""
    kids = children(pid)
    kill_pid(pid, timeout=20)
    for k in {*kids, *also}:
        with contextlib.suppress(OSError):
            kill_pid(k)


def scratch_dir() -> Path:
    """Where logs and pid files go: $SDACTIVATE_BENCH_SCRATCH or ~/.cache/sdactivate-bench."""
    path = Path(
        os.environ.get("SDACTIVATE_BENCH_SCRATCH")
        or os.path.expanduser("~/.cache/sdactivate-bench")
    )
    path.mkdir(parents=True, exist_ok=True)
    return path


def log_tail(path: Path | None, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path else ""
    except OSError:
        return ""


def popen(
    argv: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    pin: bool = True,
    log: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start a service process (on SERVICE_CPU if ``pin``); stdout+stderr appended to ``log``."""
    full_env = dict(os.environ)
    full_env.pop("NOTIFY_SOCKET", None)
    full_env.pop("LISTEN_FDS", None)
    full_env.pop("LISTEN_PID", None)
    full_env.pop("LISTEN_FDNAMES", None)
    full_env["PYTHONPATH"] = str(ROOT)
    if env:
        full_env.update(env)
    out = open(log, "ab") if log is not None else subprocess.DEVNULL  # noqa: SIM115
    try:
        return subprocess.Popen(
            ["taskset", "-c", str(SERVICE_CPU), *argv] if pin else list(argv),
            env=full_env,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    finally:
        if log is not None and not isinstance(out, int):
            out.close()
