"""One upgrade attempt's resources: the child, its notify inbox and the handover socket."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import signal
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .._generation import NotifyInbox
from .._priority import startup_priority
from .link import child_environ

__all__ = ["Attempt", "start_attempt"]

log = logging.getLogger("sdactivate.upgrade")


@dataclass
class Attempt:
    """A started child of this generation, until it is handed over, killed or reaped."""

    pid: int
    pidfd: int  # readable once the child has exited (pidfd_open(2))
    inbox: NotifyInbox  # the child's NOTIFY_SOCKET
    ctl: socket.socket  # our end of the handover socket
    lowered: bool  # started at the start-up priority
    base_nice: int  # ... and this is the priority it gets back
    base_policy: int

    def ready_sent(self) -> bool:
        """Drain (a bounded number of) the inbox's datagrams: did the child send READY=1?"""
        messages = self.inbox.messages(lambda pid: pid if pid == self.pid else None)
        return any(("READY", "1") in fields for _, fields in list(messages))

    def reap(self) -> int | None:
        """Wait for the exited child: ``os.waitstatus_to_exitcode``, None if reaped already."""
        try:
            _, status = os.waitpid(self.pid, 0)
        except ChildProcessError:
            return None
        return os.waitstatus_to_exitcode(status)

    def kill(self) -> None:
        """SIGKILL the child, reap it and close everything."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        self.reap()
        self.close()

    def close(self) -> None:
        """Let go of the child (handed over, or reaped): close our ends."""
        self.inbox.close()
        self.ctl.close()
        os.close(self.pidfd)


def start_attempt(
    argv: Sequence[str],
    sockets: Sequence[tuple[socket.socket, str]],
    *,
    env: Mapping[str, str],
    cwd: str,
    startup_nice: int,
) -> Attempt:
    """Execute the next generation with ``sockets`` as ``LISTEN_FDS``, a fresh notify inbox
    as its ``NOTIFY_SOCKET`` and the child end of the handover socket. Raises
    :class:`~sdactivate.SdActivateError` or ``OSError`` (nothing is left open then)."""
    from .. import _spawn

    fds = [sock.fileno() for sock, _ in sockets]
    names = [name for _, name in sockets]
    inbox = NotifyInbox("upgrade", os.getpid(), log=log)
    parent_ctl, child_ctl = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        # Above 3..3+n-1 so _spawn can keep it at its number (it checks for collisions).
        ctl_fd = fcntl.fcntl(child_ctl.fileno(), fcntl.F_DUPFD_CLOEXEC, 3 + len(fds) + 1)
    finally:
        child_ctl.close()
    priority, base_nice, base_policy = startup_priority(startup_nice)
    try:
        child = _spawn.spawn(
            argv,
            fds,
            names=names,
            env=child_environ(env, parent=os.getpid(), ctl_fd=ctl_fd),
            notify_socket=inbox.address,
            pass_fds=[ctl_fd],
            pdeathsig=None,  # a parent gone before the handover leaves the child primary
            cwd=cwd,
            priority=priority,
        )
    except BaseException:
        inbox.close()
        parent_ctl.close()
        raise
    finally:
        os.close(ctl_fd)
    return Attempt(
        child.pid,
        child.pidfd,
        inbox,
        parent_ctl,
        priority is not None,
        base_nice,
        base_policy,
    )
