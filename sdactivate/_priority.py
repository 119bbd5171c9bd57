"""Start-up priorities of new generations (supervisor and Upgrader alike).

A new generation is spawned with ``priority=(nice + N, SCHED_IDLE)`` (see
:func:`sdactivate._spawn.spawn`), so its exec and interpreter start-up only use CPU the
serving generation leaves idle; once it is READY it gets the spawner's priority back with
:func:`renice_tree`. Raising a priority back needs CAP_SYS_NICE or an RLIMIT_NICE allowing
it (setpriority(2), sched(7)): :func:`can_raise_priority` says whether to lower at all.
"""

from __future__ import annotations

import logging
import os
import resource

__all__ = ["can_raise_priority", "renice_tree", "startup_priority", "valid_startup_nice"]

log = logging.getLogger("sdactivate")

_CAP_SYS_NICE = 23  # capabilities(7)


def valid_startup_nice(value: object) -> bool:
    """The one rule for a start-up nice increment (``sdactivate run --startup-nice``,
    ``gen-units --startup-nice``, ``Upgrader(startup_nice=)``): an int 0..19, the range
    of nice values above the default (setpriority(2)); 0 turns the lowering off."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 19


def can_raise_priority(nice: int) -> bool:
    """Whether this process may set a child's nice value back down to ``nice``
    (setpriority(2): an RLIMIT_NICE allowing ``nice``, or CAP_SYS_NICE)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NICE)
    if soft == resource.RLIM_INFINITY or nice >= 20 - soft:
        return True
    try:  # proc(5) CapEff; read as bytes: this runs at every spawn with a priority
        fd = os.open("/proc/self/status", os.O_RDONLY | os.O_CLOEXEC)
        try:
            status = os.read(fd, 16384)
        finally:
            os.close(fd)
        start = status.index(b"\nCapEff:") + 8
        return bool(int(status[start : status.index(b"\n", start)], 16) >> _CAP_SYS_NICE & 1)
    except (OSError, ValueError):
        return False


def renice_tree(pid: int, nice: int, *, policy: int | None = None) -> None:
    """Set every thread of ``pid`` and of its descendants to ``nice`` (nice is per thread),
    and a thread that is under SCHED_IDLE back to ``policy`` (the start-up priority a
    new generation gets from :func:`sdactivate._spawn.spawn`'s ``priority``)."""
    todo = [pid]
    while todo:
        proc = todo.pop()
        try:
            tids = os.listdir(f"/proc/{proc}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                if policy is not None and os.sched_getscheduler(int(tid)) == os.SCHED_IDLE:
                    # sched(7): leaving SCHED_IDLE needs the same allowance as the renice
                    os.sched_setscheduler(int(tid), policy, os.sched_param(0))
                os.setpriority(os.PRIO_PROCESS, int(tid), nice)
                # proc(5) children, read through /proc/TID/: opening the same file under
                # /proc/PID/task/TID/ made reaping PID cost the reaper ~1-2 ms of CPU in
                # wait4 for a Go generation's threads (kernel 6.18; bench/handover_cpu.py)
                with open(f"/proc/{tid}/task/{tid}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
            except OSError as exc:
                log.debug("cannot renice thread %s of pid %d: %s", tid, proc, exc)


def startup_priority(startup_nice: int) -> tuple[tuple[int, bool] | None, int, int]:
    """``(priority for spawn(), base nice, base policy)`` of the calling process: no
    priority when ``startup_nice`` is 0 or could not be undone later."""
    base = os.getpriority(os.PRIO_PROCESS, 0)
    policy = os.sched_getscheduler(0)
    if not startup_nice or not can_raise_priority(base):
        return None, base, policy
    idle_ok = policy in (os.SCHED_OTHER, os.SCHED_BATCH)
    return (min(19, base + startup_nice), idle_ok), base, policy
