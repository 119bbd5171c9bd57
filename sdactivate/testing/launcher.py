"""Start a child socket-activated, as PID1 starts a service: :func:`launch` and its
:class:`Process`.

Socket fds first, then (with a :class:`~sdactivate.testing.NotifyReceiver`) the fd store's
fds, newest first, names kept: what a restart of a service with a surviving store sees.
The fd moving and exec are :func:`sdactivate._spawn.spawn`'s.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType

from .. import _env
from .._spawn import spawn
from ..addresses import DEFAULT_BACKLOG, ListenAddress, parse_address
from ._store import close_fds
from .receiver import NotifyReceiver

__all__ = ["Process", "launch"]

_MANAGER_KEYS = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


@dataclass
class Process:
    """A launched child, ``subprocess.Popen``-like: ``pid``, ``returncode``, ``poll()``,
    ``wait(timeout)``, ``send_signal()``, ``terminate()``, ``kill()``; a context manager that
    kills and reaps. ``sockets`` are the listening sockets it was given (the parent keeps its
    copies, like a socket unit: pass them to the next :func:`launch`)."""

    args: list[str]
    pid: int
    pidfd: int
    sockets: list[socket.socket]
    names: list[str]
    returncode: int | None = None
    _owned: list[socket.socket] = field(default_factory=list, repr=False)

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self._reaped(status)
        return self.returncode

    def _reaped(self, status: int) -> None:
        self.returncode = os.waitstatus_to_exitcode(status)
        with contextlib.suppress(OSError):
            os.close(self.pidfd)

    def wait(self, timeout: float | None = None) -> int:
        """Wait for exit (pidfd poll, no busy loop); ``subprocess.TimeoutExpired`` on timeout."""
        if self.returncode is None:
            ready = select.select([self.pidfd], [], [], timeout)[0]
            if not ready:
                raise subprocess.TimeoutExpired(self.args, timeout or 0.0)
            self._reaped(os.waitpid(self.pid, 0)[1])
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            signal.pidfd_send_signal(self.pidfd, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def close_sockets(self) -> None:
        """Close the sockets :func:`launch` bound for this child."""
        for sock in self._owned:
            sock.close()

    def __enter__(self) -> Process:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.poll() is None:
            self.kill()
            self.wait(10)


def launch(
    argv: Sequence[str],
    sockets: Sequence[socket.socket | int | str | ListenAddress] = (),
    *,
    names: Sequence[str] | None = None,
    notify: NotifyReceiver | None = None,
    env: Mapping[str, str] | None = None,
    pass_fds: Sequence[int] = (),
    cwd: str | None = None,
    backlog: int = DEFAULT_BACKLOG,
) -> Process:
    """Run ``argv`` socket-activated: fds at 3.., ``LISTEN_FDS``/``LISTEN_PID``/``LISTEN_FDNAMES``.

    ``sockets`` are socket objects, raw fds, or listen addresses (``"127.0.0.1:0"``, bound here
    and kept in ``Process.sockets``). ``names`` default to ``unknown`` each. With ``notify``,
    the child gets ``NOTIFY_SOCKET`` and, after the sockets, the receiver's stored fds with
    their names -- how PID1 starts a service whose fd store survived a restart. ``env``
    defaults to this process's environment without ``LISTEN_*``, ``NOTIFY_SOCKET`` and
    ``WATCHDOG_*`` (a test child never reaches a real manager by accident). The fd moving
    and exec are :func:`sdactivate._spawn.spawn`'s.
    """
    owned: list[socket.socket] = []
    fds: list[int] = []
    held: list[socket.socket] = []
    try:
        for item in sockets:
            if isinstance(item, socket.socket):
                held.append(item)
                fds.append(item.fileno())
            elif isinstance(item, int):
                fds.append(item)
            else:
                address = item if isinstance(item, ListenAddress) else parse_address(item)
                sock = address.bind(backlog=backlog)
                owned.append(sock)
                held.append(sock)
                fds.append(sock.fileno())
        fd_names = list(names) if names is not None else ["unknown"] * len(fds)
        if len(fd_names) != len(fds):
            raise ValueError(f"{len(fds)} sockets but {len(fd_names)} names")
        if env is None:  # a test child must not talk to a real manager by accident
            env = {k: v for k, v in _env.process_environ().items() if k not in _MANAGER_KEYS}
        stored_fds, stored_names = notify._dup_store() if notify is not None else ([], [])
        try:
            child = spawn(
                argv,
                fds + stored_fds,
                names=fd_names + stored_names,
                env=env,
                notify_socket=notify.address if notify is not None else None,
                pass_fds=pass_fds,
                cwd=cwd,
            )
        finally:
            close_fds(stored_fds)
    except BaseException:
        for sock in owned:
            sock.close()
        raise
    if notify is not None:
        notify.main_pid = child.pid  # the ExecStart= process is the main process
    return Process(list(argv), child.pid, child.pidfd, held, fd_names, _owned=owned)
