"""The inode id of a pidfd: what systemd calls a process's "pidfd id" (pidfd_open(2)).

On kernels with pidfs (6.9+) every process has its own pidfd inode, and its number names
the process for good (it is never reused while the system runs): systemd compares it in
``MAINPIDFDID=`` (sd_notify(3), v257) and ``LISTEN_PIDFDID`` (v259) to rule out a recycled
pid. Older kernels give every pidfd one shared anonymous inode; there the number means
nothing and :func:`inode_id` returns None.
"""

from __future__ import annotations

import os
import sys

__all__ = ["inode_id"]


def inode_id(pidfd: int) -> int | None:
    """The pidfs inode number of ``pidfd``, or None without pidfs (or on a 32-bit build,
    whose ``st_ino`` may be truncated: libsystemd uses file handles there)."""
    if sys.maxsize <= 2**32:
        return None
    st = os.fstat(pidfd)
    probe = os.eventfd(0)  # an anonymous inode: pidfds share its st_dev without pidfs
    try:
        anon_dev = os.fstat(probe).st_dev
    finally:
        os.close(probe)
    return None if st.st_dev == anon_dev else st.st_ino
