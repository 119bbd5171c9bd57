"""Small Linux helpers of the supervisor's runner: notify datagrams, /proc, priorities."""

from __future__ import annotations

import array
import contextlib
import logging
import os
import resource
import socket
import struct

__all__ = [
    "can_raise_priority",
    "deprioritize",
    "parent_pid",
    "receive_notify",
    "renice_tree",
    "sockname",
]

log = logging.getLogger("sdactivate.supervisor")

NOTIFY_MAX = 4096  # v252 manager.c: NOTIFY_BUFFER_MAX = PIPE_BUF; longer is dropped whole
_UCRED = struct.Struct("iII")  # unix(7) struct ucred: pid, uid, gid
_CMSG_SPACE = socket.CMSG_SPACE(_UCRED.size) + socket.CMSG_SPACE(253 * 4)  # 253: SCM_MAX_FD
_CAP_SYS_NICE = 23  # capabilities(7)


def receive_notify(sock: socket.socket) -> tuple[int, bytes, bool] | None:
    """One queued datagram of a non-blocking SO_PASSCRED socket: (sender pid, payload,
    truncated), or None when the queue is empty. Attached fds are closed at once: nothing
    is stored here, and closing is also how a ``BARRIER=1`` is answered (sd_notify(3)),
    in order, since datagrams are handled one by one."""
    try:
        data, ancdata, flags, _ = sock.recvmsg(NOTIFY_MAX, _CMSG_SPACE)
    except (BlockingIOError, InterruptedError):
        return None
    pid = 0
    fds = array.array("i")
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
            pid = _UCRED.unpack_from(payload)[0]
        elif level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)
    return pid, data, bool(flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC))


def parent_pid(pid: int) -> int | None:
    """The parent of ``pid`` (proc(5) /proc/PID/stat field 4), None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        return int(stat[stat.rindex(b")") + 2 :].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def can_raise_priority(nice: int) -> bool:
    """Whether this process may set a child's nice value back down to ``nice``
    (setpriority(2): CAP_SYS_NICE, or an RLIMIT_NICE allowing ``nice``)."""
    try:
        with open("/proc/self/status") as f:
            cap_eff = next(line for line in f if line.startswith("CapEff:"))
        if int(cap_eff.split()[1], 16) >> _CAP_SYS_NICE & 1:
            return True
    except (OSError, StopIteration, ValueError):
        pass
    soft, _ = resource.getrlimit(resource.RLIMIT_NICE)
    return soft == resource.RLIM_INFINITY or nice >= 20 - soft


def deprioritize(pid: int, nice: int, *, idle: bool) -> None:
    """Start-up priority of a new generation: ``nice``, and SCHED_IDLE if ``idle``.

    sched(7): a SCHED_IDLE thread is preempted as soon as a normal one wakes up, so a
    serving process never waits behind the newcomer's time slice (with nice alone it
    can, for a slice of a few ms, under both CFS and EEVDF). Threads the child starts
    later inherit both. Failures (a seccomp filter, EPERM) leave the child as it is.
    """
    try:
        os.setpriority(os.PRIO_PROCESS, pid, nice)
    except OSError as exc:
        log.debug("pid %d: cannot lower its priority: %s", pid, exc)
        return
    if idle:
        try:
            os.sched_setscheduler(pid, os.SCHED_IDLE, os.sched_param(0))
        except OSError as exc:
            log.debug("pid %d: cannot set SCHED_IDLE: %s", pid, exc)


def renice_tree(pid: int, nice: int, *, policy: int | None = None) -> None:
    """Set every thread of ``pid`` and of its descendants to ``nice`` (nice is per thread),
    and a thread that is under SCHED_IDLE back to ``policy`` (see :func:`deprioritize`)."""
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
                with open(f"/proc/{proc}/task/{tid}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
            except OSError as exc:
                log.debug("cannot renice thread %s of pid %d: %s", tid, proc, exc)


def sockname(sock: socket.socket) -> str:
    """A socket's local address in listen-address syntax (``127.0.0.1:80``, ``@name``)."""
    try:
        name = sock.getsockname()
    except OSError:
        return "?"
    if isinstance(name, tuple):
        host, port = name[:2]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if isinstance(name, bytes):  # abstract
        return "@" + name[1:].decode(errors="replace")
    return str(name)
