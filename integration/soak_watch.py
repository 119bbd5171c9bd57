"""What the chaos soak (integration/soak.py) sees of the service under test.

- systemd's view of the unit (`systemctl show`, `list-jobs`) inside the sandbox;
- the processes in the unit's cgroup, read on the host: the sandbox's cgroup tree is a
  subtree of the host's, its `cgroup.procs` lists host pids, and /proc/PID/status's NSpid
  gives each one's pid inside the sandbox (the pid systemd, the supervisor and the app
  report). Signals go to host pids through a pidfd, so a reused pid is never hit;
- the unit's journal: the supervisor's own lines say when a handover started, was queued,
  ended, and which process it killed and why; systemd's say whom it SIGKILLed at
  TimeoutStopSec=. Journal timestamps are CLOCK_MONOTONIC (no time namespace here), the
  clock of the harness and of loadgen.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from integration.sandbox import Sandbox
from integration.soak_plan import (
    DIED_SERVING,
    KILLED_BY_SYSTEMD,
    KILLED_DRAINING,
    KILLED_NOT_READY,
    Death,
)

__all__ = [
    "FAILED",
    "State",
    "Watcher",
    "deaths_from_journal",
    "drain_seconds",
    "fd_count",
    "ns_pid",
    "read_request_log",
    "send_signal",
    "zombie_children",
]

# supervisor/machine.py's STATUS= and log lines
_SERVING = re.compile(r"generation (\d+) \(pid (\d+)\) serving$")
_STARTED = re.compile(r"upgrade: starting generation \d+$")
_QUEUED = re.compile(r"reload queued until the current transition ends$")
FAILED = re.compile(r"upgrade failed: generation \d+ \(pid \d+\) failed: ")
_TAKEN_OVER = re.compile(r"serving; generation \d+ \(pid (\d+)\) draining$")
_GONE = re.compile(r"generation \d+ \(pid (\d+)\) (?:exited with status -?\d+|killed by \w+)$")
_DEATHS = (
    (re.compile(r"generation \d+ \(pid (\d+)\) failed: no READY=1"), KILLED_NOT_READY),
    (re.compile(r"generation \d+ \(pid (\d+)\) still running .* SIGKILL"), KILLED_DRAINING),
    (re.compile(r"generation \d+ \(pid (\d+)\) (?:killed|exited) .* while serving"), DIED_SERVING),
    # systemd's unit_kill_context(): "Killing process PID (COMM) with signal SIGKILL."
    (re.compile(r"Killing process (\d+) \(.*\) with signal SIGKILL"), KILLED_BY_SYSTEMD),
)


@dataclass
class State:
    """One look at the unit: systemd's view and the app processes in its cgroup."""

    main: int  # MainPID (sandbox pid namespace)
    restarts: int  # NRestarts
    sub: str  # SubState
    status: str  # StatusText: the supervisor's STATUS=
    jobs: bool  # a job for the unit is queued or running
    apps: dict[int, int]  # the app's processes: sandbox pid -> host pid
    main_host: int | None = None  # the supervisor's host pid
    at: float = field(default_factory=time.monotonic)

    def serving(self) -> tuple[int, int] | None:
        """(generation, pid) the supervisor says serves, unless a handover is under way."""
        m = _SERVING.search(self.status)
        if m is None or self.status.startswith("upgrading"):
            return None
        return int(m.group(1)), int(m.group(2))

    def generation(self) -> int:
        """The serving generation's number, 0 if none."""
        got = self.serving()
        return got[0] if got else 0

    def settled(self) -> bool:
        """Running, one generation serving and alone in the cgroup, no job under way."""
        got = self.serving()
        return (
            got is not None
            and self.sub == "running"
            and not self.jobs
            and set(self.apps) == {got[1]}
        )


class Watcher:
    """Looks at ``unit`` in ``sandbox`` (see the module doc); ``app`` names the app's
    script, which tells its processes from the supervisor's (whose argv has ``run``)."""

    def __init__(self, sandbox: Sandbox, unit: str, *, app: str) -> None:
        self.box = sandbox
        self.unit = unit
        self.cgroup = sandbox.cgroup / "system.slice" / unit
        self._app = app.encode()

    def state(self) -> State:
        shown = self.box.show(self.unit, "MainPID", "NRestarts", "SubState", "StatusText")
        jobs = self.box.run(["systemctl", "list-jobs", "--no-legend", self.unit]).stdout
        apps: dict[int, int] = {}
        main = int(shown["MainPID"])
        main_host = None
        for host in self.procs():
            with contextlib.suppress(OSError):
                ns = ns_pid(host)
                argv = Path(f"/proc/{host}/cmdline").read_bytes().split(b"\0")
                if ns == main:
                    main_host = host
                elif any(a.endswith(self._app) for a in argv) and b"run" not in argv:
                    apps[ns] = host
        return State(
            main=main,
            restarts=int(shown["NRestarts"]),
            sub=shown["SubState"],
            status=shown["StatusText"],
            jobs=bool(jobs.strip()),
            apps=apps,
            main_host=main_host,
        )

    def procs(self) -> list[int]:
        """Host pids of every process in the unit's cgroup."""
        try:
            return [int(p) for p in (self.cgroup / "cgroup.procs").read_text().split()]
        except FileNotFoundError:
            return []

    def journal(self, lines: int | None = None) -> list[tuple[float, str]]:
        """(monotonic seconds, message) of the unit's journal entries (the last ``lines``)."""
        argv = ["journalctl", "--no-pager", "-o", "json", "-u", self.unit]
        argv += ["--output-fields=MESSAGE,__MONOTONIC_TIMESTAMP"]
        if lines is not None:
            argv += ["-n", str(lines)]
        entries = []
        for line in self.box.run(argv, timeout=120).stdout.splitlines():
            with contextlib.suppress(ValueError, KeyError, TypeError):
                entry = json.loads(line)
                entries.append((int(entry["__MONOTONIC_TIMESTAMP"]) / 1e6, str(entry["MESSAGE"])))
        return entries

    def logged(self, pattern: re.Pattern[str], since: float) -> int:
        """How many of the unit's recent journal lines since ``since`` match ``pattern``."""
        return sum(1 for at, msg in self.journal(200) if at >= since and pattern.search(msg))

    def quiet(self, since: float) -> bool:
        """By the supervisor's log since ``since``: no handover under way or queued. A reload
        starts one or, during one, queues one more (logged once: any number coalesce, and
        the kernel may merge back-to-back SIGHUPs anyway); every start ends in a takeover
        or a failure."""
        recent = [msg for at, msg in self.journal(200) if at >= since]
        starts = sum(1 for msg in recent if _STARTED.search(msg))
        queued = sum(1 for msg in recent if _QUEUED.search(msg))
        ended = sum(1 for msg in recent if _TAKEN_OVER.search(msg) or FAILED.search(msg))
        return starts >= 1 + queued and ended >= starts


def send_signal(host_pid: int, signum: int) -> bool:
    """Signal a host pid through a pidfd; False if the process is gone."""
    try:
        fd = os.pidfd_open(host_pid)
    except ProcessLookupError:
        return False
    try:
        signal.pidfd_send_signal(fd, signum)
        return True
    except ProcessLookupError:
        return False
    finally:
        os.close(fd)


def ns_pid(host_pid: int) -> int:
    """The pid of ``host_pid`` in its innermost pid namespace (proc(5) NSpid:)."""
    for line in Path(f"/proc/{host_pid}/status").read_text().splitlines():
        if line.startswith("NSpid:"):
            return int(line.split()[-1])
    raise OSError(f"no NSpid line for pid {host_pid}")


def fd_count(host_pid: int) -> int:
    return len(os.listdir(f"/proc/{host_pid}/fd"))


def zombie_children(host_pid: int) -> set[int]:
    """Host pids of the children of ``host_pid`` (of any of its threads) that are zombies."""
    out: set[int] = set()
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{host_pid}/task"):
            with contextlib.suppress(OSError):
                for child in Path(f"/proc/{host_pid}/task/{tid}/children").read_text().split():
                    with contextlib.suppress(OSError):
                        stat = Path(f"/proc/{child}/stat").read_text()
                        if stat.rsplit(")", 1)[1].split()[0] == "Z":
                            out.add(int(child))
    return out


def deaths_from_journal(entries: Iterable[tuple[float, str]]) -> list[Death]:
    """Processes the supervisor or systemd killed, or that died serving, by their logs."""
    out = []
    for at, message in entries:
        for pattern, cause in _DEATHS:
            m = pattern.search(message)
            if m:
                out.append(Death(int(m.group(1)), at, cause))
    return out


def drain_seconds(entries: Iterable[tuple[float, str]]) -> dict[int, float]:
    """Pid -> seconds from its successor's takeover (the stop signal) to its end, for every
    generation the supervisor drained and saw end."""
    since: dict[int, float] = {}
    out: dict[int, float] = {}
    for at, message in entries:
        m = _TAKEN_OVER.search(message)
        if m:
            since[int(m.group(1))] = at
            continue
        m = _GONE.search(message)
        if m and int(m.group(1)) in since:
            pid = int(m.group(1))
            out[pid] = at - since.pop(pid)
    return out


def read_request_log(text: str) -> dict[int, int]:
    """soak_app.py's log (``RID PID`` lines): request id -> pid of the process that read it."""
    out: dict[int, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0].isdigit() and parts[1].isdigit():
            out[int(parts[0])] = int(parts[1])
    return out
