"""_spawn.spawn(own_process_group=True): the child leads its own process group (setpgid) in
our session, PDEATHSIG still kills it, `sdactivate run` uses it so a terminal's Ctrl-C
reaches only the supervisor, and a child lowered with ``priority`` really yields the CPU
(a session of its own would be an autogroup of its own, sharing the CPU equally)."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from sdactivate._spawn import spawn
from sdactivate.supervisor.client import request_status
from tests.support import checkout_env, wait_until

ROOT = Path(__file__).resolve().parent.parent
REPORT = """
import os, sys
try:
    group = (open("/proc/self/autogroup").read().split() or ["-"])[0]
except OSError:
    group = "-"
open(sys.argv[1], "w").write(f"{os.getsid(0)} {os.getpgrp()} {group}")
"""


def _run_script(code: str, out: Path, **spawn_kw: Any) -> int:
    """Spawn ``python -c code out`` with ``spawn_kw``, wait for it, check it exited 0; its pid."""
    child = spawn([sys.executable, "-c", code, str(out)], [], **spawn_kw)
    try:
        _, status = os.waitpid(child.pid, 0)
    finally:
        os.close(child.pidfd)
    assert os.waitstatus_to_exitcode(status) == 0
    return child.pid


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


@pytest.mark.parametrize("own_group", [False, True], ids=["default", "own-group"])
def test_own_process_group_keeps_our_session(tmp_path: Path, own_group: bool) -> None:
    """With own_process_group=True the child's process group is its own pid, its session
    (and so its autogroup) ours; by default it stays in our process group too."""
    out = tmp_path / "ids"
    child_pid = _run_script(REPORT, out, own_process_group=own_group)
    sid, pgid, autogroup = out.read_text().split(" ", 2)
    assert int(sid) == os.getsid(0)
    assert int(pgid) == (child_pid if own_group else os.getpgrp())
    assert autogroup == _autogroup("self")


def _autogroup(pid: str) -> str:
    """The scheduling autogroup of ``pid``: "-" when the kernel has none, or when the file
    is empty (the task's CPU cgroup is not the root one, as on CI's machine)."""
    try:
        return (Path(f"/proc/{pid}/autogroup").read_text().split() or ["-"])[0]
    except OSError:
        return "-"


def _cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


SPIN = "while True: pass"


def test_lowered_child_yields_the_cpu_to_its_sibling() -> None:
    """Two busy children on one CPU, both in process groups of their own: the one spawned
    with priority (nice 19, SCHED_IDLE) gets a small fraction of the other's CPU time, not
    the equal share it got while every child had a session (an autogroup) of its own."""
    cpu = min(os.sched_getaffinity(0))
    normal = spawn([sys.executable, "-c", SPIN], [], own_process_group=True)
    lowered = spawn([sys.executable, "-c", SPIN], [], own_process_group=True, priority=(19, True))
    children = (normal, lowered)
    try:
        for c in children:
            os.sched_setaffinity(c.pid, {cpu})
        start = [_cpu_ticks(c.pid) for c in children]
        time.sleep(1.0)  # the measurement interval; nothing is ordered by it
        used = [_cpu_ticks(c.pid) - t for c, t in zip(children, start, strict=True)]
    finally:
        for c in children:
            os.kill(c.pid, signal.SIGKILL)
            os.waitpid(c.pid, 0)
            os.close(c.pidfd)
    assert used[0] >= 30, f"the normal child hardly ran ({used[0]} ticks): {used}"
    assert used[1] * 5 < used[0], f"the lowered child took {used[1]} of {sum(used)} ticks"


MIDDLE = """
import sys, time
from sdactivate._shim import Tools
from sdactivate._spawn import spawn
tools = Tools(None, None, None, sys.executable) if sys.argv[1] == "python" else None
c = spawn([sys.executable, "-c", "import time; time.sleep(60)"], [], own_process_group=True,
          tools=tools)
print(c.pid, flush=True)
time.sleep(60)
"""


@pytest.mark.parametrize("shim", ["host", "python"])
def test_pdeathsig_still_kills_a_child_in_its_own_group(shim: str) -> None:
    """A child spawned with own_process_group=True still gets its PDEATHSIG (SIGTERM) when the
    process that spawned it is SIGKILLed: no orphan survives. Set by setpriv(1), or by the
    Python shim where setpriv is missing."""
    middle = subprocess.Popen(
        [sys.executable, "-c", MIDDLE, shim],
        env=checkout_env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert middle.stdout is not None
        grandchild = int(middle.stdout.readline())
        assert os.getpgid(grandchild) == grandchild
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


def _wait_running(sup: subprocess.Popen[Any]) -> dict[str, Any]:
    """The supervisor's status once its phase is "running" (it must not exit before)."""

    def running() -> dict[str, Any] | None:
        assert sup.poll() is None, "supervisor exited"
        try:
            status = request_status(sup.pid, timeout=2)
        except Exception:
            return None
        return status if status["phase"] == "running" else None

    return wait_until(running, timeout=15, interval=0.05, what="the supervisor running")


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
        _wait_running(sup)
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
        status = _wait_running(sup)
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
        _run_script(PRIORITY, out, priority=priority)
        policy, nice = map(int, out.read_text().split())
        if priority is None:
            assert (policy, nice) == (os.sched_getscheduler(0), base)
        else:
            assert nice == priority[0]
            assert policy == (os.SCHED_IDLE if idle else os.sched_getscheduler(0))
