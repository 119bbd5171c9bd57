"""What :func:`sdactivate._spawn.spawn` hands to posix_spawn: the program, or a chain of execs
in the same process (same pid) that ends in the program, for what only the child can do.

sd_listen_fds(3): ``LISTEN_PID`` must be the pid of the process that reads the fds, which
nobody knows before the spawn; prctl(2) ``PR_SET_PDEATHSIG`` and the working directory are
the child's own too; and a child lowered to its start-up priority by its parent must not
exec the program before that. So: ``setpriv --pdeathsig`` (util-linux >= 2.33) first, then
``/bin/sh`` checks the parent is still there, waits on the gate (a socket the parent sends
a line to once it has lowered the child), enters the directory, and execs ``env -i`` with
``LISTEN_PID=$$`` and the child's exact environment as arguments (a shell would drop
variables whose names it cannot hold and rewrite ``PPID``, ``PWD``, ``IFS``...). Where those
tools are missing or cannot run, a Python shim does the same: one interpreter start, ~9 ms
more, in the child. Pure functions, but :meth:`Tools.find`.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .errors import SdActivateError

__all__ = ["PY_SHIM", "Tools", "seccomp_filtered", "shim_command"]

_BIN_DIRS = ("/usr/bin", "/bin")
# argv: parent pid, parent-death signal, gate fd, cwd, listening, program, then the
# environment as NAME=VALUE up to "--", then the program's argv. Empty string: none.
PY_SHIM = """\
import os, sys
parent, sig, gate, cwd, listening, program, *rest = sys.argv[1:]
end = rest.index("--")
env = dict(item.split("=", 1) for item in rest[:end])
try:
    if sig:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, int(sig), 0, 0, 0)  # PR_SET_PDEATHSIG
        if os.getppid() != int(parent):  # the parent died before the prctl took effect
            os._exit(1)
    if gate:
        os.read(int(gate), 1)
        os.close(int(gate))
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


def shim_command(
    program: str,
    argv: Sequence[str],
    env: Mapping[str, str],
    *,
    listening: bool,
    parent: int,
    pdeathsig: int | None,
    gate: int | None,
    cwd: str | None,
    tools: Tools,
) -> tuple[str, list[str], dict[str, str]]:
    """``(path, argv, env)`` for posix_spawn: a chain of execs that ends in
    ``execve(program, argv, env)`` with ``LISTEN_PID`` = that process's pid if ``listening``,
    the parent-death signal set (and the parent still ``parent``), a line (or EOF) read
    from fd ``gate`` and the fd closed, and ``cwd`` entered. ``program`` itself when there
    is nothing to do. The shell waits only on a gate fd of one digit (dash); the Python
    shim on any."""
    if not listening and pdeathsig is None and gate is None and cwd is None:
        return program, list(argv), dict(env)
    pairs = [f"{k}={v}" for k, v in env.items()]
    sig_name = _setpriv_name(pdeathsig)
    if (
        tools.sh is not None
        and tools.env is not None
        and "=" not in program  # env(1) would take it for an assignment
        and (pdeathsig is None or (tools.setpriv is not None and sig_name is not None))
        and (gate is None or 0 <= gate <= 9)
    ):
        script, args = [], []
        if pdeathsig is not None:  # $PPID is read at the shell's start, after the prctl
            script.append(f'[ "$PPID" = {int(parent)} ] || exit 1')
        if gate is not None:
            script.append(f"read -r gate <&{gate}; exec {gate}<&-")
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
    options = [
        str(parent),
        "" if pdeathsig is None else str(int(pdeathsig)),
        "" if gate is None else str(gate),
        cwd or "",
        "1" if listening else "",
    ]
    shim = [tools.python, "-I", "-S", "-c", PY_SHIM, *options, program, *pairs, "--", *argv]
    return tools.python, shim, {}


def _setpriv_name(sig: int | None) -> str | None:
    """``sig`` as setpriv(1) spells it (TERM), or None if it has no plain name."""
    if sig is None:
        return None
    try:
        return signal.Signals(sig).name.removeprefix("SIG")
    except ValueError:
        return None
