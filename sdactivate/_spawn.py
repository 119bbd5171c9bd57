"""The one place that moves fds to 3..n and starts a child with ``LISTEN_*`` set.

No Python code runs in the child before its exec, so spawning is safe in a process with
other threads (a fork would copy locks they hold; Python >= 3.12 warns about it):
:func:`os.posix_spawn` (glibc: clone(CLONE_VM|CLONE_VFORK), only libc code until execve(2))
moves the fds, sets the process group, signal mask and dispositions and SCHED_IDLE.

sd_listen_fds(3): fds start at ``SD_LISTEN_FDS_START`` (3) and ``LISTEN_PID`` must be the
pid of the process that reads them, which nobody knows before the spawn. So when there are
fds (or a parent-death signal, or a working directory) the spawned program is a shim that
ends in an exec of the real one, keeping the pid: ``/bin/sh`` puts its ``$$`` into
``LISTEN_PID`` and execs ``env -i`` with the child's exact environment as arguments (a
shell would drop variables whose names it cannot hold and rewrite ``PPID``, ``PWD``,
``IFS``...); ``setpriv --pdeathsig`` (util-linux >= 2.33) goes first when the child must
die with its parent. Where these tools are missing, or setpriv cannot run (a seccomp filter,
see :meth:`Tools.find`), a Python shim does the same (one interpreter start, ~9 ms more, in
the child). Used by the testing launcher, the supervisor and the in-process upgrader.
"""

from __future__ import annotations

import errno
import fcntl
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import SdActivateError

__all__ = [
    "SD_LISTEN_FDS_START",
    "Child",
    "Tools",
    "listen_env",
    "seccomp_filtered",
    "shim_command",
    "spawn",
]

SD_LISTEN_FDS_START = 3  # sd_listen_fds(3)
_LISTEN_KEYS = ("LISTEN_PID", "LISTEN_PIDFDID", "LISTEN_FDS", "LISTEN_FDNAMES")
_BIN_DIRS = ("/usr/bin", "/bin")
# As subprocess's restore_signals: exec keeps the blocked mask and SIG_IGN (Python ignores
# these two). glibc's child ignores its internal signals 32 and 33, and exec keeps that.
_SIGNALS: dict[str, Any] = {"setsigmask": (), "setsigdef": (signal.SIGPIPE, signal.SIGXFSZ)}
# The fallback shim: argv is parent pid, parent-death signal, cwd, listening, program,
# then the environment as NAME=VALUE up to "--", then the child's argv.
_PY_SHIM = """\
import os, sys
parent, sig, cwd, listening, program, *rest = sys.argv[1:]
end = rest.index("--")
env = dict(item.split("=", 1) for item in rest[:end])
try:
    if sig:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, int(sig), 0, 0, 0)  # PR_SET_PDEATHSIG
        if os.getppid() != int(parent):  # the parent died before the prctl took effect
            os._exit(1)
    if cwd:
        os.chdir(cwd)
    if listening:
        env["LISTEN_PID"] = str(os.getpid())
    os.execve(program, rest[end + 1 :], env)
except OSError as exc:
    sys.stderr.write(f"sdactivate: cannot start {program!r}: {exc.strerror}\\n")
    os._exit(127)
"""


@dataclass(frozen=True)
class Child:
    """A started child: its pid and a pidfd (pidfd_open(2)) to wait on without polling."""

    pid: int
    pidfd: int


@dataclass(frozen=True)
class Tools:
    """Programs a shim can be made of; ``None`` where missing or unusable."""

    sh: str | None
    env: str | None
    setpriv: str | None
    python: str | None

    @classmethod
    def find(cls) -> Tools:
        """This host's, in /usr/bin or /bin (not on PATH: the child's PATH is the user's).
        No setpriv under a seccomp filter: setpriv(1) always calls capset(2), and a filter
        such as systemd's ``SystemCallFilter=~@privileged`` refuses it (setpriv exits 127)."""

        def tool(name: str) -> str | None:
            for d in _BIN_DIRS:
                if os.access(path := f"{d}/{name}", os.X_OK):
                    return path
            return None

        setpriv = None if _seccomp_filtered() else tool("setpriv")
        return cls(tool("sh"), tool("env"), setpriv, sys.executable or None)


def _seccomp_filtered() -> bool:
    """Whether this process runs under a seccomp filter, which the child inherits; True
    where /proc cannot tell."""
    try:
        fd = os.open("/proc/self/status", os.O_RDONLY | os.O_CLOEXEC)
        try:
            return seccomp_filtered(os.read(fd, 16384))
        finally:
            os.close(fd)
    except OSError:
        return True


def seccomp_filtered(status: bytes) -> bool:
    """From proc(5) ``/proc/PID/status``: ``Seccomp: 2`` is filter mode (1 strict mode);
    no such line: a kernel without seccomp."""
    start = status.find(b"\nSeccomp:")
    if start < 0:
        return False
    end = status.find(b"\n", start + 1)
    return status[start + 9 : end if end >= 0 else None].strip() != b"0"


def listen_env(
    base: Mapping[str, str], names: Sequence[str], *, notify_socket: str | None = None
) -> dict[str, str]:
    """The child's environment minus ``LISTEN_PID`` (set in the child): a pure function."""
    env = {k: v for k, v in base.items() if k not in _LISTEN_KEYS}
    if names:
        env["LISTEN_FDS"] = str(len(names))
        env["LISTEN_FDNAMES"] = ":".join(names)
    if notify_socket is not None:
        env["NOTIFY_SOCKET"] = notify_socket
    return env


def shim_command(
    program: str,
    argv: Sequence[str],
    env: Mapping[str, str],
    *,
    listening: bool,
    parent: int,
    pdeathsig: int | None,
    cwd: str | None,
    tools: Tools,
) -> tuple[str, list[str], dict[str, str]]:
    """``(path, argv, env)`` for posix_spawn: a chain of execs, all in the same process,
    that ends in ``execve(program, argv, env)`` with ``LISTEN_PID`` = that process's pid
    if ``listening``, the parent-death signal set (and the parent still ``parent``) and
    ``cwd`` entered. ``program`` itself when there is nothing to do. A pure function."""
    if not listening and pdeathsig is None and cwd is None:
        return program, list(argv), dict(env)
    pairs = [f"{k}={v}" for k, v in env.items()]
    sig_name = _setpriv_name(pdeathsig)
    if (
        tools.sh is not None
        and tools.env is not None
        and "=" not in program  # env(1) would take it for an assignment
        and (pdeathsig is None or (tools.setpriv is not None and sig_name is not None))
    ):
        script, args = [], []
        if pdeathsig is not None:  # $PPID is read at the shell's start, after the prctl
            script.append(f'[ "$PPID" = {int(parent)} ] || exit 1')
        if cwd is not None:
            script.append('cd -P -- "$1" || exit 127; shift')
            args.append(cwd)
        listen_pid = " LISTEN_PID=$$" if listening else ""
        script.append(f'exec {tools.env} -i --{listen_pid} "$@"')
        chain = [tools.sh, "-c", "; ".join(script), "sdactivate", *args, *pairs, program]
        chain += argv[1:]
        if pdeathsig is not None:
            assert tools.setpriv is not None
            chain = [tools.setpriv, f"--pdeathsig={sig_name}", "--", *chain]
        return chain[0], chain, {}
    if tools.python is None:
        raise SdActivateError(
            f"cannot start {argv[0]!r}: no /bin/sh and env(1) (or setpriv(1) for a"
            " parent-death signal) to set LISTEN_PID with, and no Python interpreter either"
        )
    sig = "" if pdeathsig is None else str(int(pdeathsig))
    shim = [
        tools.python,
        "-I",
        "-S",
        "-c",
        _PY_SHIM,
        str(parent),
        sig,
        cwd or "",
        "1" if listening else "",
    ]
    return tools.python, [*shim, program, *pairs, "--", *argv], {}


def _setpriv_name(sig: int | None) -> str | None:
    """``sig`` as setpriv(1) spells it (TERM), or None if it has no plain name."""
    if sig is None:
        return None
    try:
        return signal.Signals(sig).name.removeprefix("SIG")
    except ValueError:
        return None


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
    ``priority`` = ``(nice, idle)`` lowers the child before its first exec (so the execs and
    the whole start-up run at it): it inherits the nice value and, if ``idle``, SCHED_IDLE
    (sched(7)) from this thread, which runs at them during the call. Only where this thread
    may come back (CAP_SYS_NICE or RLIMIT_NICE, see :func:`~._priority.can_raise_priority`),
    and SCHED_IDLE only from SCHED_OTHER/SCHED_BATCH; else, or where a seccomp filter
    refuses it, the child keeps our priority. The signal mask is emptied and SIGPIPE and
    SIGXFSZ get their default action (as subprocess's restore_signals). A missing program
    or ``cwd`` raises
    :class:`SdActivateError` (chained to the OSError); a failure later in the shim (the
    program vanished meanwhile) is an exit with status 126 or 127 and a line on stderr.
    With a shim the program's ``argv[0]`` is its path. ``tools``: what a shim may be made
    of (default: :meth:`Tools.find`).
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
    for key in child_env:
        if not key or "=" in key:
            raise SdActivateError(f"invalid environment variable name {key!r}")
    program = _which(argv[0], child_env)
    _check_startable(argv[0], program, cwd)
    path, args, spawn_env = shim_command(
        program,
        argv,
        child_env,
        listening=bool(fds),
        parent=os.getpid(),
        pdeathsig=pdeathsig,
        cwd=cwd,
        tools=Tools.find() if tools is None else tools,
    )
    # Every fd lands on its number through a close-on-exec copy above all of them (so no
    # dup2 clobbers another's source, and a spawn in another thread inherits none of them);
    # dup2(2) onto another number clears FD_CLOEXEC in the child.
    floor = max(top, max(pass_fds, default=0) + 1)
    copies: list[int] = []
    try:
        actions: list[tuple[int, int, int]] = []
        for target, fd in [*enumerate(fds, SD_LISTEN_FDS_START), *((f, f) for f in pass_fds)]:
            copies.append(fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, floor))
            actions.append((os.POSIX_SPAWN_DUP2, copies[-1], target))
        pid = _posix_spawn(path, args, spawn_env, actions, own_process_group, priority)
    except OSError as exc:
        raise SdActivateError(f"cannot start {argv[0]!r}: {exc.strerror or exc}") from exc
    except ValueError as exc:  # a NUL byte in an argument or the environment
        raise SdActivateError(f"cannot start {argv[0]!r}: {exc}") from exc
    finally:
        for fd in copies:
            os.close(fd)
    return Child(pid, os.pidfd_open(pid))


def _posix_spawn(
    path: str,
    args: list[str],
    env: Mapping[str, str],
    actions: list[tuple[int, int, int]],
    own_process_group: bool,
    priority: tuple[int, bool] | None,
) -> int:
    # glibc's posix_spawnattr_setschedpolicy takes only SCHED_OTHER/FIFO/RR (EINVAL for
    # SCHED_IDLE): the child inherits the policy and nice value of this thread instead.
    restore = _lower_this_thread(*priority) if priority is not None else None
    try:
        if own_process_group:  # setpgroup=None is refused (3.11)
            return os.posix_spawn(path, args, env, file_actions=actions, setpgroup=0, **_SIGNALS)
        return os.posix_spawn(path, args, env, file_actions=actions, **_SIGNALS)
    finally:
        if restore is not None:
            _restore_this_thread(*restore)


def _lower_this_thread(nice: int, idle: bool) -> tuple[int, int] | None:
    """Set this thread to ``nice`` (and SCHED_IDLE if ``idle``) if it may come back
    (setpriority(2), sched(7): both per thread on Linux; leaving SCHED_IDLE needs the same
    allowance as a lower nice value); ``(nice, policy)`` to come back to, or None."""
    from ._priority import can_raise_priority

    here = os.getpriority(os.PRIO_PROCESS, 0)  # 0: the calling thread
    policy = os.sched_getscheduler(0)
    if not can_raise_priority(min(here, nice)):
        return None
    try:
        if nice != here:
            os.setpriority(os.PRIO_PROCESS, 0, nice)
        if idle and policy in (os.SCHED_OTHER, os.SCHED_BATCH):
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except OSError:  # a seccomp filter: the child stays as it is
        _restore_this_thread(here, policy)
        return None
    return here, policy


def _restore_this_thread(nice: int, policy: int) -> None:
    if os.sched_getscheduler(0) != policy:  # first, while the nice value is the higher one
        os.sched_setscheduler(0, policy, os.sched_param(0))
    if os.getpriority(os.PRIO_PROCESS, 0) != nice:
        os.setpriority(os.PRIO_PROCESS, 0, nice)


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
