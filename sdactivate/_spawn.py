"""The one place that moves fds to 3..n and execs a child with ``LISTEN_*`` set.

sd_listen_fds(3): fds start at ``SD_LISTEN_FDS_START`` (3); ``LISTEN_PID`` must be the pid
of the process that reads them, so it is set in the child after fork, never guessed.
Used by the testing launcher, the supervisor and the in-process upgrader.
"""

from __future__ import annotations

import fcntl
import os
import signal
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from .errors import SdActivateError

__all__ = ["SD_LISTEN_FDS_START", "Child", "listen_env", "spawn"]

SD_LISTEN_FDS_START = 3  # sd_listen_fds(3)
_PR_SET_PDEATHSIG = 1  # prctl(2)
_LISTEN_KEYS = ("LISTEN_PID", "LISTEN_PIDFDID", "LISTEN_FDS", "LISTEN_FDNAMES")


def _prctl() -> Callable[..., int]:
    import ctypes  # lazy: ctypes costs milliseconds of import time

    prctl: Callable[..., int] = ctypes.CDLL(None, use_errno=True).prctl
    return prctl


@dataclass(frozen=True)
class Child:
    """A started child: its pid and a pidfd (pidfd_open(2)) to wait on without polling."""

    pid: int
    pidfd: int


def listen_env(
    base: Mapping[str, str], names: Sequence[str], *, notify_socket: str | None = None
) -> dict[str, str]:
    """The child's environment minus ``LISTEN_PID`` (set after fork): a pure function."""
    env = {k: v for k, v in base.items() if k not in _LISTEN_KEYS}
    if names:
        env["LISTEN_FDS"] = str(len(names))
        env["LISTEN_FDNAMES"] = ":".join(names)
    if notify_socket is not None:
        env["NOTIFY_SOCKET"] = notify_socket
    return env


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
) -> Child:
    """Fork and exec ``argv`` with ``fds`` at 3.. and correct ``LISTEN_FDS/PID/FDNAMES``.

    ``names`` defaults to ``unknown`` for each fd. ``pass_fds`` are extra fds kept at their
    own numbers (after the listen fds; they must not collide with 3..3+n-1). ``pdeathsig``
    (PR_SET_PDEATHSIG) makes the child die with this thread's process.
    ``own_process_group`` puts the child in a process group of its own (setpgid(2)), so
    signals a terminal sends to its foreground process group (Ctrl-C, Ctrl-\\) reach only
    this process, not the child; PR_SET_PDEATHSIG is unaffected. Not a session of its own
    (setsid(2)): with sched_autogroup_enabled (the default on most distributions) every new
    session gets a scheduling group that shares the CPU equally with ours, so a child lowered
    with ``priority`` would still take half a busy CPU from its siblings.
    ``priority`` = ``(nice, idle)`` lowers the child before it execs (so the exec and the
    whole start-up run at it):
    setpriority(2) to ``nice``, and SCHED_IDLE (sched(7)) if ``idle``; lowering is always
    allowed, a seccomp filter that refuses it leaves the child as it is. Exec failures
    (missing program...) are raised here as :class:`SdActivateError` chained to the OSError.
    """
    if not argv:
        raise SdActivateError("empty command line")
    names = list(names) if names is not None else ["unknown"] * len(fds)
    if len(names) != len(fds):
        raise SdActivateError(f"{len(fds)} fds but {len(names)} names")
    top = SD_LISTEN_FDS_START + len(fds)
    for fd in pass_fds:
        if SD_LISTEN_FDS_START <= fd < top:
            raise SdActivateError(f"extra fd {fd} collides with the listen fds 3..{top - 1}")
    child_env = listen_env(os.environ if env is None else env, names, notify_socket=notify_socket)
    program = _which(argv[0], child_env)
    env_items = [(k.encode(), v.encode()) for k, v in child_env.items()]
    parent = os.getpid()
    prctl = _prctl() if pdeathsig is not None else None
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child; reports failures over err_w
        _child(
            program,
            argv,
            fds,
            pass_fds,
            env_items,
            bool(fds),
            top,
            parent,
            prctl,
            pdeathsig,
            cwd,
            own_process_group,
            priority,
            err_w,
        )
    os.close(err_w)
    try:
        report = b""
        while chunk := os.read(err_r, 512):
            report += chunk
    finally:
        os.close(err_r)
    if report:
        os.waitpid(pid, 0)
        code, _, text = report.decode(errors="replace").partition(":")
        raise SdActivateError(f"cannot start {argv[0]!r}: {text}") from OSError(int(code), text)
    return Child(pid, os.pidfd_open(pid))


def _which(program: str, env: Mapping[str, str]) -> str:
    if "/" in program:
        return program
    for entry in env.get("PATH", os.defpath).split(os.pathsep):
        candidate = os.path.join(entry or ".", program)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise SdActivateError(f"cannot start {program!r}: not found on PATH")


def _lower(nice: int, idle: bool) -> None:  # pragma: no cover - between fork and exec
    """The calling process's start-up priority; both survive execve(2). No logging here.

    sched(7): a SCHED_IDLE thread is preempted as soon as a normal one wakes up, so a
    serving process never waits behind the newcomer's time slice (with nice alone it can,
    for a slice of a few ms, under both CFS and EEVDF). Threads it starts inherit both.
    """
    try:
        os.setpriority(os.PRIO_PROCESS, 0, nice)
        if idle:
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except OSError:
        pass


def _child(
    program: str,
    argv: Sequence[str],
    fds: Sequence[int],
    pass_fds: Sequence[int],
    env_items: list[tuple[bytes, bytes]],
    listening: bool,
    top: int,
    parent: int,
    prctl: Callable[..., int] | None,
    pdeathsig: int | None,
    cwd: str | None,
    own_process_group: bool,
    priority: tuple[int, bool] | None,
    err_w: int,
) -> None:  # pragma: no cover - runs between fork and exec
    try:
        if own_process_group:
            os.setpgid(0, 0)
        if priority is not None:
            _lower(*priority)
        if prctl is not None and pdeathsig is not None:
            prctl(_PR_SET_PDEATHSIG, int(pdeathsig), 0, 0, 0)
            if os.getppid() != parent:  # the parent died before prctl took effect
                os._exit(1)
        # Like subprocess's restore_signals: exec keeps SIG_IGN and the blocked mask.
        for sig in (signal.SIGPIPE, signal.SIGXFSZ):
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, ())
        # Move sources above every target number first, so no dup2 clobbers a source.
        floor = max(top, max(pass_fds, default=0) + 1)
        moved = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, floor) for fd in fds]
        for i, fd in enumerate(moved):
            os.dup2(fd, SD_LISTEN_FDS_START + i, inheritable=True)
            os.close(fd)
        for fd in pass_fds:
            os.set_inheritable(fd, True)
        if cwd is not None:
            os.chdir(cwd)
        env = dict(env_items)
        if listening:
            env[b"LISTEN_PID"] = str(os.getpid()).encode()
        os.execve(program, list(argv), env)
    except OSError as exc:
        os.write(err_w, f"{exc.errno or 0}:{exc.strerror or exc}".encode())
    except BaseException as exc:
        os.write(err_w, f"0:{exc!r}".encode())
    os._exit(127)
