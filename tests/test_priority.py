"""_priority.renice_tree: every thread of a generation and of its descendants gets the
spawner's nice value and policy back, children of non-leader threads included."""

from __future__ import annotations

import os
import select
import signal
import sys
from pathlib import Path

import pytest

from sdactivate._priority import can_raise_priority, renice_tree
from sdactivate._spawn import spawn

# A thread that is not the leader starts the grandchild (a child of that thread, listed
# in /proc/PID/task/TID/children only); the grandchild runs a second thread too. Both
# report once they are up, then wait to be killed.
TREE = r"""
import os, subprocess, sys, threading
out = int(sys.argv[1])
GRANDCHILD = (
    "import threading, time; threading.Thread(target=time.sleep, args=(60,)).start();"
    " print('up', flush=True); time.sleep(60)"
)
def start():  # stays alive: its children would move to the leader when it exits
    p = subprocess.Popen([sys.executable, "-c", GRANDCHILD], stdout=subprocess.PIPE)
    p.stdout.readline()
    os.write(out, f"{p.pid}\n".encode())
    threading.Event().wait(60)
threading.Thread(target=start).start()
threading.Event().wait(60)
"""


def _read_line(fd: int, timeout: float) -> str:
    data = b""
    while not data.endswith(b"\n"):
        ready, _, _ = select.select([fd], [], [], timeout)
        assert ready, f"no line within {timeout}s (got {data!r})"
        chunk = os.read(fd, 64)
        assert chunk, f"EOF after {data!r}"
        data += chunk
    return data.decode().strip()


def _threads(pid: int) -> list[int]:
    return [int(t) for t in os.listdir(f"/proc/{pid}/task")]


def test_renice_tree_reaches_children_of_other_threads(tmp_path: Path) -> None:
    """A generation started at nice +5 under SCHED_IDLE whose non-leader thread started a
    process with two threads: after renice_tree every one of those threads has our nice
    value and policy back."""
    base, policy = os.getpriority(os.PRIO_PROCESS, 0), os.sched_getscheduler(0)
    if not can_raise_priority(base) or policy not in (os.SCHED_OTHER, os.SCHED_BATCH):
        pytest.skip("lowering a child needs the right to undo it (CAP_SYS_NICE or RLIMIT_NICE)")
    r, w = os.pipe()
    child = spawn(
        [sys.executable, "-c", TREE, str(w)], [], pass_fds=[w], priority=(min(19, base + 5), True)
    )
    os.close(w)
    grandchild = 0
    try:
        grandchild = int(_read_line(r, 30))
        threads = [(child.pid, t) for t in _threads(child.pid)]
        threads += [(grandchild, t) for t in _threads(grandchild)]
        assert len(threads) == 4
        assert all(os.sched_getscheduler(t) == os.SCHED_IDLE for _, t in threads)
        renice_tree(child.pid, base, policy=policy)
        got = {
            t: (os.getpriority(os.PRIO_PROCESS, t), os.sched_getscheduler(t)) for _, t in threads
        }
        assert got == {t: (base, policy) for _, t in threads}
    finally:
        os.close(r)
        for pid in (grandchild, child.pid):
            if pid:
                os.kill(pid, signal.SIGKILL)
        os.waitpid(child.pid, 0)
        os.close(child.pidfd)
