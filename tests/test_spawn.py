"""_spawn.spawn: no fork (posix_spawn, so no Python code runs in the child before its exec),
the child's exact environment, argv and fds through each shim, and what cannot start."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import warnings
from pathlib import Path
from typing import Any

import pytest

from sdactivate import _spawn
from sdactivate._shim import Tools
from sdactivate._spawn import spawn
from sdactivate.errors import SdActivateError
from tests.support import checkout_env

ROOT = Path(__file__).resolve().parent.parent
FOUND = Tools.find()
TOOLS = {
    "host": FOUND,
    "python": Tools(None, None, None, sys.executable),
    "no-setpriv": Tools(FOUND.sh, FOUND.env, None, sys.executable),
}

# The child reports its argv (after the output path), environment, pid, cwd, the identity
# of each open fd, and its blocked signals.
REPORT = r"""
import json, os, sys
fds = {}
for name in os.listdir("/proc/self/fd"):
    try:
        st = os.fstat(int(name))
    except OSError:  # the directory's own fd, closed by now
        continue
    fds[name] = [st.st_dev, st.st_ino]
with open("/proc/self/status") as f:
    status = dict(line.split(":", 1) for line in f.read().splitlines())
json.dump({"argv": sys.argv[2:], "env": dict(os.environ), "pid": os.getpid(),
           "cwd": os.getcwd(), "fds": fds, "blocked": int(status["SigBlk"], 16)},
          open(sys.argv[1], "w"))
"""
# Names a shell cannot hold or rewrites (PPID, PWD, IFS, OPTIND), quoting, an empty value.
ODD_ENV = {
    "A.B": "1",
    "FOO-BAR": "2",
    "1X": "3",
    "PPID": "77",
    "PWD": "/nowhere",
    "IFS": "x",
    "OPTIND": "5",
    "CDPATH": "/",
    "Q": 'it\'s "$HOME" `id` $(id)\nnext line',
    "EMPTY": "",
    "LC_ALL": "C.UTF-8",  # or Python (the reporter) coerces the C locale into LC_CTYPE
}
ODD_ARGS = ["a b", "$HOME", "--", "-v", "k=v", "", "'", "\n"]


def _report(child: _spawn.Child, out: Path) -> dict[str, Any]:
    try:
        _, status = os.waitpid(child.pid, 0)
    finally:
        os.close(child.pidfd)
    assert os.waitstatus_to_exitcode(status) == 0
    report: dict[str, Any] = json.loads(out.read_text())
    return report


def inherited_by_us() -> set[str]:
    """Our own inheritable fds (from whoever started pytest): every child has them."""
    return {f for f in os.listdir("/proc/self/fd") if _inheritable(int(f))}


def _inheritable(fd: int) -> bool:
    try:
        return os.get_inheritable(fd)
    except OSError:
        return False


def _ident(fd: int) -> list[int]:
    st = os.fstat(fd)
    return [st.st_dev, st.st_ino]


@pytest.mark.parametrize("kind", list(TOOLS), ids=list(TOOLS))
def test_child_gets_exactly_its_environment_argv_and_fds(tmp_path: Path, kind: str) -> None:
    """Through each shim (the host's tools, the Python fallback, no setpriv) the program
    gets exactly the given environment plus LISTEN_FDS/FDNAMES/PID (its own pid) and
    NOTIFY_SOCKET, its arguments unchanged, the fds at 3.. and the extra fd at its number
    (and not the gate's), ``cwd``, and an empty signal mask even when ours blocks signals."""
    out, work = tmp_path / "report", tmp_path / "work"
    work.mkdir()
    a, b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM), socket.socket(socket.AF_UNIX)
    extra_r, extra_w = os.pipe()
    extra = os.dup(extra_w) if extra_w > 4 else os.dup(os.dup(extra_w))  # above 3..4
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGUSR1])
    try:
        child = spawn(
            [sys.executable, "-c", REPORT, str(out), *ODD_ARGS],
            [b.fileno(), a.fileno()],
            names=["web", "admin"],
            env=ODD_ENV,
            notify_socket="@notify",
            pass_fds=[extra],
            cwd=str(work),
            priority=(os.getpriority(os.PRIO_PROCESS, 0), False),  # a gate, nothing lowered
            tools=TOOLS[kind],
        )
        report = _report(child, out)
        expected_fds = {"3": _ident(b.fileno()), "4": _ident(a.fileno()), str(extra): _ident(extra)}
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        for fd in (extra_r, extra_w, extra):
            os.close(fd)
        a.close()
        b.close()
    assert report["pid"] == child.pid
    assert report["env"] == dict(
        ODD_ENV,
        LISTEN_FDS="2",
        LISTEN_FDNAMES="web:admin",
        LISTEN_PID=str(child.pid),
        NOTIFY_SOCKET="@notify",
    )
    assert report["argv"] == ODD_ARGS
    assert report["cwd"] == str(work)
    for fd, ident in expected_fds.items():
        assert report["fds"][fd] == ident, f"fd {fd}"
    assert not set(report["fds"]) - {"0", "1", "2", *expected_fds} - inherited_by_us()
    assert report["blocked"] == 0


SHUFFLE = r"""
import fcntl, json, os, socket, sys
from sdactivate._spawn import spawn
high = []
for _ in range(4):
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        high.append(fcntl.fcntl(s.fileno(), fcntl.F_DUPFD_CLOEXEC, 20))
for fd, target in zip(high, (5, 3, 4, 6)):  # sources inside the targets 3..5, none on its own
    os.dup2(fd, target, inheritable=False)
print(json.dumps([os.fstat(fd).st_ino for fd in (5, 3, 4, 6)]), flush=True)
code = "import json, os; print(json.dumps([os.fstat(fd).st_ino for fd in (3, 4, 5, 6)]))"
child = spawn([sys.executable, "-c", code], [5, 3, 4], pass_fds=[6], env={})
_, status = os.waitpid(child.pid, 0)
sys.exit(os.waitstatus_to_exitcode(status))
"""


def test_fds_inside_the_target_range_land_where_asked() -> None:
    """Listen fds that already sit on 3..5 in another order (5, 3, 4) reach the child as
    3, 4, 5: no move clobbers another's source; the extra fd 6 keeps its number."""
    proc = subprocess.run(
        [sys.executable, "-c", SHUFFLE],
        env=checkout_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    ours, childs = (json.loads(line) for line in proc.stdout.splitlines())
    assert childs == ours


def test_spawn_never_forks_this_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Beside another thread, with every option that needs a shim (fds, parent-death
    signal, cwd, priority): no os.fork (it would run Python code in the child), no
    warning (Python >= 3.12 warns about fork in a process with threads)."""

    def no_fork() -> int:
        raise AssertionError("os.fork() called")

    monkeypatch.setattr(os, "fork", no_fork)
    out, stop = tmp_path / "report", threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        with warnings.catch_warnings(record=True) as caught, socket.socket() as sock:
            warnings.simplefilter("always")
            child = spawn(
                [sys.executable, "-c", REPORT, str(out)],
                [sock.fileno()],
                cwd=str(tmp_path),
                priority=(os.getpriority(os.PRIO_PROCESS, 0), True),
            )
            report = _report(child, out)
    finally:
        stop.set()
        other.join()
    assert report["env"]["LISTEN_PID"] == str(child.pid)
    assert [str(w.message) for w in caught] == []


LOCKED = r"""
import os, socket, sys, threading, warnings
from sdactivate._spawn import spawn
lock, held = threading.Lock(), threading.Event()
def hold():
    with lock:
        held.set()
        threading.Event().wait()  # for the life of the process
threading.Thread(target=hold, daemon=True).start()
held.wait()
# Python code a forked child runs before anything else (as logging's lock re-init does)
os.register_at_fork(after_in_child=lock.acquire)
check = "import os; assert os.environ['LISTEN_PID'] == str(os.getpid())"
with warnings.catch_warnings(record=True) as caught, socket.socket() as sock:
    warnings.simplefilter("always")  # os.fork warns beside threads (Python >= 3.12)
    child = spawn([sys.executable, "-c", check], [sock.fileno()])
    _, status = os.waitpid(child.pid, 0)
print(os.waitstatus_to_exitcode(status), [str(w.message) for w in caught])
"""


def test_a_lock_held_by_another_thread_cannot_block_the_child() -> None:
    """Another thread holds a lock for good while we spawn; a forked child that ran any
    Python code needing it (here an at-fork hook) would wait forever before its exec. The
    child execs and exits 0, and no warning is raised (Python >= 3.12 warns on a fork
    beside threads)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", LOCKED],
        env=checkout_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        process_group=0,  # a blocked child is killed with it
    )
    try:
        out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail("spawn() blocked: the child ran Python code between fork and exec")
    assert (proc.returncode, out.strip()) == (0, "0 []"), err


def _not_executable(tmp_path: Path) -> str:
    path = tmp_path / "script"
    path.write_text("#!/bin/sh\n")
    return str(path)


@pytest.mark.parametrize(
    ("argv", "kwargs", "message"),
    [
        (lambda p: ["sdactivate-no-such-program"], {}, "not found on PATH"),
        (lambda p: [str(p / "missing")], {}, "No such file or directory"),
        (lambda p: [_not_executable(p)], {}, "Permission denied"),
        (lambda p: [str(p)], {}, "Permission denied"),
        (lambda p: [sys.executable], {"cwd": "gone"}, "working directory"),
        (lambda p: [sys.executable], {"env": {"A": "x\0y"}}, "null"),
        (lambda p: [sys.executable], {"env": {"A=B": "1"}}, "invalid environment variable"),
        (lambda p: [sys.executable], {"names": ["a:b"]}, "invalid fd name 'a:b'"),
    ],
    ids=["not-on-path", "missing", "not-executable", "directory", "no-cwd", "nul", "name", "fd"],
)
def test_what_cannot_start_is_an_error(
    tmp_path: Path, argv: Any, kwargs: dict[str, Any], message: str
) -> None:
    """A program that cannot start, a missing working directory or an environment no
    exec takes raise SdActivateError naming the program, from spawn() itself (not as an
    exit of the shim later), chained to the OSError where there is one."""
    if kwargs.get("cwd"):
        kwargs = dict(kwargs, cwd=str(tmp_path / kwargs["cwd"]))
    with socket.socket() as sock, pytest.raises(SdActivateError, match=message) as info:
        spawn(argv(tmp_path), [sock.fileno()], **kwargs)
    assert (
        repr(argv(tmp_path)[0]) in str(info.value)
        or "environment variable" in message
        or ("fd name" in message)
    )


PRIORITY = (
    "import os, sys; open(sys.argv[1], 'w')"
    ".write(f'{os.sched_getscheduler(0)} {os.getpriority(os.PRIO_PROCESS, 0)}')"
)


@pytest.mark.parametrize("listen_fds", [1, 7], ids=["gate-fd-4", "gate-fd-10"])
def test_program_starts_lowered_and_we_are_not(tmp_path: Path, listen_fds: int) -> None:
    """priority=(nice, idle): the program's first statement already runs at that nice value
    under SCHED_IDLE, set on the child while its shim waited on the gate (through the shell
    when the gate fits in one digit, else the Python shim); the spawning thread keeps its
    own priority throughout."""
    base, policy = os.getpriority(os.PRIO_PROCESS, 0), os.sched_getscheduler(0)
    nice, out = min(19, base + 5), tmp_path / "prio"
    socks = [socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) for _ in range(listen_fds)]
    try:
        child = spawn(
            [sys.executable, "-c", PRIORITY, str(out)],
            [s.fileno() for s in socks],
            priority=(nice, True),
        )
        os.waitpid(child.pid, 0)
        os.close(child.pidfd)
    finally:
        for s in socks:
            s.close()
    assert out.read_text() == f"{os.SCHED_IDLE} {nice}"
    assert (os.getpriority(os.PRIO_PROCESS, 0), os.sched_getscheduler(0)) == (base, policy)
