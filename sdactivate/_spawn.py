"""The one place that moves fds to 3..n and starts a child with ``LISTEN_*`` set.

No Python code runs in the child before its exec, so spawning is safe in a process with
other threads (a fork would copy locks they hold; Python >= 3.12 warns about it):
:func:`os.posix_spawn` (glibc: clone(CLONE_VM|CLONE_VFORK), only libc code until execve(2))
moves the fds and sets the process group, the signal mask and dispositions. What only the
child can set (``LISTEN_PID``, the parent-death signal, the working directory) a chain of
execs in the same process does before the program (:mod:`sdactivate._shim`); the start-up
priority is set by us on the new pid while that chain waits. Used by the testing launcher,
the supervisor and the in-process upgrader.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import signal
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ._listen_env import SD_LISTEN_FDS_START, fd_name_problem, listen_env
from ._shim import Tools, shim_command
from .errors import SdActivateError

# SD_LISTEN_FDS_START and listen_env are _listen_env's, importable here as before
__all__ = ["SD_LISTEN_FDS_START", "Child", "listen_env", "spawn"]

# As subprocess's restore_signals: exec keeps the blocked mask and SIG_IGN (Python ignores
# these two). glibc's child ignores its internal signals 32 and 33, and exec keeps that.
_SIGNALS: dict[str, Any] = {"setsigmask": (), "setsigdef": (signal.SIGPIPE, signal.SIGXFSZ)}


@dataclass(frozen=True)
class Child:
    """A started child: its pid and a pidfd (pidfd_open(2)) to wait on without polling."""

    pid: int
    pidfd: int


def spawn(
    argv: Sequence[str],
    fds: Sequence[int],
    *,
    names: Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
    notify_socket: str | None = None,
    pass_fds: Sequence[int] = (),
    pdeathsig: int | None = signal.SIGTERM,
    cwd: str | None = None,
    own_process_group: bool = False,
    priority: tuple[int, bool] | None = None,
    tools: Tools | None = None,
) -> Child:
    """Start ``argv`` with ``fds`` at 3.. and correct ``LISTEN_FDS/PID/FDNAMES``.

    ``names`` defaults to ``unknown`` for each fd. ``pass_fds`` are extra fds kept at their
    own numbers (after the listen fds; they must not collide with 3..3+n-1). ``pdeathsig``
    (PR_SET_PDEATHSIG) makes the child die with this thread's process.
    ``own_process_group`` puts the child in a process group of its own (setpgid(2)), so
    signals a terminal sends to its foreground process group (Ctrl-C, Ctrl-\\) reach only
    this process, not the child; PR_SET_PDEATHSIG is unaffected. Not a session of its own
    (setsid(2)): with sched_autogroup_enabled (the default on most distributions) every new
    session gets a scheduling group that shares the CPU equally with ours, so a child lowered
    with ``priority`` would still take half a busy CPU from its siblings.
    ``priority`` = ``(nice, idle)`` lowers the child before it execs the program (so the
    exec and the whole start-up run at it): setpriority(2) to ``nice``, and SCHED_IDLE
    (sched(7)) if ``idle``, set by us on the new pid while its shim waits for a line on a
    socket we then send it. Lowering is always allowed; a seccomp filter that refuses it
    leaves the child as it is. The signal mask is emptied and SIGPIPE and SIGXFSZ get their
    default action (as subprocess's restore_signals). A missing program or ``cwd`` raises
    :class:`SdActivateError` (chained to the OSError); a failure later in the shim (the
    program vanished meanwhile) is an exit with status 126 or 127 and a line on stderr.
    With a shim the program's ``argv[0]`` is its path. ``tools``: what a shim may be made
    of (default: :meth:`~._shim.Tools.find`).
    """
    if not argv:
        raise SdActivateError("empty command line")
    names = list(names) if names is not None else ["unknown"] * len(fds)
    if len(names) != len(fds):
        raise SdActivateError(f"{len(fds)} fds but {len(names)} names")
    for name in names:  # a ':' would split it in two: the child would refuse the count
        problem = fd_name_problem(name, empty_ok=True)
        if problem is not None:
            raise SdActivateError(problem)
    top = SD_LISTEN_FDS_START + len(fds)
    for fd in pass_fds:
        if SD_LISTEN_FDS_START <= fd < top:
            raise SdActivateError(f"extra fd {fd} collides with the listen fds 3..{top - 1}")
    child_env = listen_env(os.environ if env is None else env, names, notify_socket=notify_socket)
    for key in child_env:
        if not key or "=" in key:
            raise SdActivateError(f"invalid environment variable name {key!r}")
    program = _which(argv[0], child_env)
    _check_startable(argv[0], program, cwd)
    targets = {*range(SD_LISTEN_FDS_START, top), *pass_fds}
    # the gate's number in the child: one digit if we can (the shell takes no other)
    gate = None
    if priority is not None:
        gate = next((n for n in range(3, 10) if n not in targets), max(targets, default=2) + 1)
    path, args, spawn_env = shim_command(
        program,
        argv,
        child_env,
        listening=bool(fds),
        parent=os.getpid(),
        pdeathsig=pdeathsig,
        gate=gate,
        cwd=cwd,
        tools=Tools.find() if tools is None else tools,
    )
    # Every fd lands on its number through a close-on-exec copy above all of them (so no
    # dup2 clobbers another's source, and a spawn in another thread inherits none of them);
    # dup2(2) onto another number clears FD_CLOEXEC in the child.
    floor = max([*targets, gate or 0]) + 1
    copies: list[int] = []
    gate_socks: tuple[socket.socket, socket.socket] | None = None
    try:
        actions: list[tuple[int, int, int]] = []
        for target, fd in [*enumerate(fds, SD_LISTEN_FDS_START), *((f, f) for f in pass_fds)]:
            copies.append(fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, floor))
            actions.append((os.POSIX_SPAWN_DUP2, copies[-1], target))
        if gate is not None:  # a socket pair, not a pipe: send() can refuse SIGPIPE
            gate_socks = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            copies.append(fcntl.fcntl(gate_socks[0].fileno(), fcntl.F_DUPFD_CLOEXEC, floor))
            actions.append((os.POSIX_SPAWN_DUP2, copies[-1], gate))
        if own_process_group:  # setpgroup=None is refused (3.11)
            pid = os.posix_spawn(
                path, args, spawn_env, file_actions=actions, setpgroup=0, **_SIGNALS
            )
        else:
            pid = os.posix_spawn(path, args, spawn_env, file_actions=actions, **_SIGNALS)
        if priority is not None and gate_socks is not None:
            _lower(pid, *priority)
            # a line, not EOF (a fork elsewhere may hold a copy of our end)
            with contextlib.suppress(OSError):
                gate_socks[1].send(b"\n", socket.MSG_NOSIGNAL)
    except OSError as exc:
        raise SdActivateError(f"cannot start {argv[0]!r}: {exc.strerror or exc}") from exc
    except ValueError as exc:  # a NUL byte in an argument or the environment
        raise SdActivateError(f"cannot start {argv[0]!r}: {exc}") from exc
    finally:
        for fd in copies:
            os.close(fd)
        for sock in gate_socks or ():
            sock.close()
    return Child(pid, os.pidfd_open(pid))


def _lower(pid: int, nice: int, idle: bool) -> None:
    """Start-up priority of ``pid`` (single-threaded: its shim); both survive execve(2).

    sched(7): a SCHED_IDLE thread is preempted as soon as a normal one wakes up, so a
    serving process never waits behind the newcomer's time slice (with nice alone it can,
    for a slice of a few ms, under both CFS and EEVDF). Threads it starts inherit both.
    """
    try:
        os.setpriority(os.PRIO_PROCESS, pid, nice)
        if idle:
            os.sched_setscheduler(pid, os.SCHED_IDLE, os.sched_param(0))
    except OSError:
        pass


def _which(program: str, env: Mapping[str, str]) -> str:
    if "/" in program:
        return program
    for entry in env.get("PATH", os.defpath).split(os.pathsep):
        candidate = os.path.join(entry or ".", program)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise SdActivateError(f"cannot start {program!r}: not found on PATH")


def _check_startable(name: str, program: str, cwd: str | None) -> None:
    """What execve(2) and chdir(2) would refuse, checked here: a shim fails only later."""
    if cwd is not None and not os.path.isdir(cwd):
        code = errno.ENOTDIR if os.path.exists(cwd) else errno.ENOENT
        raise SdActivateError(
            f"cannot start {name!r}: working directory {cwd!r}: {os.strerror(code)}"
        ) from OSError(code, os.strerror(code), cwd)
    path = os.path.join(cwd, program) if cwd is not None else program
    if not os.path.exists(path):
        code = errno.ENOENT
    elif os.path.isdir(path) or not os.access(path, os.X_OK):
        code = errno.EACCES
    else:
        return
    raise SdActivateError(f"cannot start {name!r}: {os.strerror(code)}") from OSError(
        code, os.strerror(code), path
    )
