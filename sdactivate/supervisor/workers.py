"""``sdactivate run --workers N|auto``: how many workers, and how a crashing one backs off.

Pure except :func:`usable_cpus`, whose every input (the affinity, ``/proc/self/cgroup``, the
cgroup v2 mount) is a parameter, so tests build the files it reads. No pathlib: the
supervisor imports this module, and its idle RSS is measured.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable

__all__ = [
    "BACKOFF_FIRST",
    "BACKOFF_MAX",
    "STABLE_AFTER",
    "backoff_delay",
    "cgroup_cpu_limit",
    "usable_cpus",
]

# A worker that dies while serving is replaced at once; its next consecutive crashes wait
# BACKOFF_FIRST, doubled each time up to BACKOFF_MAX (systemd's RestartSteps= idea, v254+),
# so a crash loop costs the serving workers at most one start-up every BACKOFF_MAX seconds.
BACKOFF_FIRST = 0.5
BACKOFF_MAX = 30.0
# A replacement serving this long without crashing resets its worker's crash count.
STABLE_AFTER = 10.0


def backoff_delay(crashes: int) -> float:
    """Seconds before replacing a worker after its ``crashes``-th consecutive crash:
    0 for the first (one crash is one replacement, at once), then 0.5, 1, 2... at most 30."""
    if crashes <= 1:
        return 0.0
    return min(BACKOFF_MAX, BACKOFF_FIRST * 2.0 ** min(crashes - 2, 32))


def _read(path: str) -> str:
    with open(path, encoding="ascii", errors="replace") as f:
        return f.read()


def cgroup_cpu_limit(cgroup_file: str, mount: str) -> float | None:
    """The CPUs a cgroup v2 quota allows this process, None without one.

    ``cgroup_file`` is ``/proc/self/cgroup`` (cgroups(7): the v2 line is ``0::/path``);
    ``mount`` the cgroup2 mount. The tightest ``cpu.max`` (``QUOTA PERIOD``, or ``max
    PERIOD`` for none; kernel's Documentation/admin-guide/cgroup-v2.rst) of the cgroup and of
    each of its parents counts. Anything unreadable or malformed counts as no limit.
    """
    try:
        lines = _read(cgroup_file).splitlines()
    except OSError:
        return None
    path = next((line[3:] for line in lines if line.startswith("0::")), None)
    if path is None:
        return None
    best: float | None = None
    parts = [p for p in path.strip("/").split("/") if p]
    for depth in range(len(parts), -1, -1):
        try:
            fields = _read(os.path.join(mount, *parts[:depth], "cpu.max")).split()
        except (OSError, ValueError):
            continue
        if len(fields) != 2 or fields[0] == "max":
            continue
        try:
            quota, period = int(fields[0]), int(fields[1])
        except ValueError:
            continue
        if quota > 0 and period > 0:
            cpus = quota / period
            best = cpus if best is None else min(best, cpus)
    return best


def usable_cpus(
    *,
    affinity: Callable[[], set[int]] | None = None,
    cgroup_file: str = "/proc/self/cgroup",
    mount: str = "/sys/fs/cgroup",
) -> int:
    """``--workers auto``: the CPUs this process may run on (sched_getaffinity(2)), capped by
    its cgroup v2 CPU quota rounded up (a 1.5-CPU quota: 2 workers), at least 1."""
    get = affinity or (lambda: os.sched_getaffinity(0))
    try:
        cpus = len(get())
    except OSError:
        cpus = os.cpu_count() or 1
    limit = cgroup_cpu_limit(cgroup_file, mount)
    if limit is not None:
        cpus = min(cpus, math.ceil(limit))
    return max(1, cpus)
