"""_spawn.spawn(new_session=True): the child leads its own session (setsid), PDEATHSIG still
kills it, and `sdactivate run` uses it so a terminal's Ctrl-C reaches only the supervisor."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sdactivate._spawn import spawn
from sdactivate.supervisor.client import request_status

ROOT = Path(__file__).resolve().parent.parent
REPORT = "import os, sys; open(sys.argv[1], 'w').write(f'{os.getsid(0)} {os.getpgrp()}')"


def _wait_gone(pid: int, timeout: float) -> bool:
    """Whether ``pid`` (not necessarily our child) exits within ``timeout`` seconds."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        return bool(select.select([fd], [], [], timeout)[0])
    finally:
        os.close(fd)


@pytest.mark.parametrize("new_session", [False, True], ids=["default", "new-session"])
def test_new_session_makes_the_child_a_session_leader(tmp_path: Path, new_session: bool) -> None:
    """With new_session=True the child's session and process group are its own pid; by
    default it stays in ours."""
    out = tmp_path / "ids"
    child = spawn([sys.executable, "-c", REPORT, str(out)], [], new_session=new_session)
    try:
        _, status = os.waitpid(child.pid, 0)
    finally:
        os.close(child.pidfd)
    assert os.waitstatus_to_exitcode(status) == 0
    sid, pgid = map(int, out.read_text().split())
    if new_session:
        assert (sid, pgid) == (child.pid, child.pid)
    else:
        assert (sid, pgid) == (os.getsid(0), os.getpgrp())


MIDDLE = """
import sys, time
sys.path.insert(0, sys.argv[1])
from sdactivate._spawn import spawn
c = spawn([sys.executable, "-c", "import time; time.sleep(60)"], [], new_session=True)
print(c.pid, flush=True)
time.sleep(60)
"""


def test_pdeathsig_still_kills_a_child_in_its_own_session() -> None:
    """A child spawned with new_session=True still gets its PDEATHSIG (SIGTERM) when the
    process that spawned it is SIGKILLed: no orphan survives."""
    middle = subprocess.Popen(
        [sys.executable, "-c", MIDDLE, str(ROOT)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert middle.stdout is not None
        grandchild = int(middle.stdout.readline())
        assert os.getsid(grandchild) == grandchild
        middle.kill()
        middle.wait(10)
        assert _wait_gone(grandchild, 10), f"pid {grandchild} outlived its parent"
    finally:
        middle.kill()
        middle.wait(10)


CHILD = r"""
import os, signal, socket, sys
log = sys.argv[1]
def record(signum, frame):
    with open(log, "a") as f:
        f.write(signal.Signals(signum).name + "\n")
    if signum == signal.SIGTERM:
        sys.exit(0)
signal.signal(signal.SIGINT, record)
signal.signal(signal.SIGTERM, record)
addr = os.environ["NOTIFY_SOCKET"]
with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as n:
    n.sendto(b"READY=1", "\0" + addr[1:] if addr.startswith("@") else addr)
while True:
    signal.pause()
"""


def test_ctrl_c_reaches_only_the_supervisor(tmp_path: Path) -> None:
    """SIGINT to the supervisor's process group (a terminal's Ctrl-C) is not delivered to
    the generation; the supervisor stops it with its stop signal (SIGTERM) and exits 0."""
    app, log = tmp_path / "child.py", tmp_path / "signals"
    app.write_text(CHILD)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NOTIFY_", "LISTEN_"))}
    env["PYTHONPATH"] = str(ROOT)
    argv = [sys.executable, "-m", "sdactivate", "run", "--listen", "127.0.0.1:0=http"]
    argv += ["--", sys.executable, str(app), str(log)]
    # its own process group, like a shell's foreground job
    sup = subprocess.Popen(argv, env=env, cwd=tmp_path, start_new_session=True)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                if request_status(sup.pid, timeout=2)["phase"] == "running":
                    break
            except Exception:
                pass
            assert time.monotonic() < deadline, "supervisor not running within 15s"
            assert sup.poll() is None, "supervisor exited"
            time.sleep(0.05)  # polling a status, bounded by the deadline
        os.killpg(sup.pid, signal.SIGINT)
        assert sup.wait(15) == 0
        assert log.read_text() == "SIGTERM\n"
    finally:
        if sup.poll() is None:
            sup.kill()
            sup.wait(10)


def test_generation_exiting_at_stop_is_not_replaced(tmp_path: Path) -> None:
    """KillMode=control-group stops every process at once: when the generation's exit is
    seen before the supervisor's own SIGTERM (here: supervisor stopped, both signalled, the
    child gone first), the supervisor still takes it as a stop, starts no replacement, and
    exits 0."""
    app, log = tmp_path / "child.py", tmp_path / "signals"
    app.write_text(CHILD)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NOTIFY_", "LISTEN_"))}
    env["PYTHONPATH"] = str(ROOT)
    argv = [sys.executable, "-m", "sdactivate", "run", "--listen", "127.0.0.1:0=http"]
    argv += ["--", sys.executable, str(app), str(log)]
    sup = subprocess.Popen(argv, env=env, cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                status = request_status(sup.pid, timeout=2)
                if status["phase"] == "running":
                    break
            except Exception:
                pass
            assert time.monotonic() < deadline, "supervisor not running within 15s"
            assert sup.poll() is None, "supervisor exited"
            time.sleep(0.05)  # polling a status, bounded by the deadline
        child = status["pid"]
        sup.send_signal(signal.SIGSTOP)
        sup.send_signal(signal.SIGTERM)  # pending until SIGCONT, like systemd's main-first
        os.kill(child, signal.SIGTERM)
        assert _wait_gone(child, 10)
        sup.send_signal(signal.SIGCONT)
        _, err = sup.communicate(timeout=15)
        assert sup.returncode == 0, err
        assert "generation 2" not in err and "while serving" not in err, err
    finally:
        if sup.poll() is None:
            sup.kill()
            sup.wait(10)


PRIORITY = (
    "import os, sys; open(sys.argv[1], 'w').write("
    "f'{os.sched_getscheduler(0)} {os.getpriority(os.PRIO_PROCESS, 0)}')"
)


@pytest.mark.parametrize("idle", [False, True], ids=["nice", "nice+idle"])
def test_priority_is_set_before_exec(tmp_path: Path, idle: bool) -> None:
    """priority=(nice, idle) is in place before the exec: the program's first statement
    already runs at that nice value (and SCHED_IDLE), so the exec and the interpreter's
    start-up yield the CPU to a serving process; without it the child keeps ours."""
    base = os.getpriority(os.PRIO_PROCESS, 0)
    out = tmp_path / "prio"
    for priority in (None, (min(19, base + 7), idle)):
        child = spawn([sys.executable, "-c", PRIORITY, str(out)], [], priority=priority)
        try:
            _, status = os.waitpid(child.pid, 0)
        finally:
            os.close(child.pidfd)
        assert os.waitstatus_to_exitcode(status) == 0
        policy, nice = map(int, out.read_text().split())
        if priority is None:
            assert (policy, nice) == (os.sched_getscheduler(0), base)
        else:
            assert nice == priority[0]
            assert policy == (os.SCHED_IDLE if idle else os.sched_getscheduler(0))
