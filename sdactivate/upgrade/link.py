"""The private channel between two generations of an upgrading process.

Parent side: a stream socketpair whose child end is inherited: one byte on it is the
handover (the child's ``NOTIFY_SOCKET`` is a :class:`sdactivate._generation.NotifyInbox`
that only the child's own pid may use). Child
side: the environment says it is an upgrade child (``SDACTIVATE_UPGRADE_*``) and where
systemd's own ``NOTIFY_SOCKET`` is, to restore after the handover.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass

from ..errors import UpgradeError

__all__ = [
    "ENV_FD",
    "ENV_NOTIFY",
    "ENV_PARENT",
    "HANDOVER",
    "ParentLink",
    "child_environ",
    "recv_some",
    "take_parent",
]

ENV_PARENT = "SDACTIVATE_UPGRADE_PARENT"  # parent's pid: "you are an upgrade child"
ENV_FD = "SDACTIVATE_UPGRADE_FD"  # the child's end of the handover socket
ENV_NOTIFY = "SDACTIVATE_UPGRADE_NOTIFY_SOCKET"  # systemd's NOTIFY_SOCKET, restored on handover
HANDOVER = b"H"


@dataclass
class ParentLink:
    """What an upgrade child knows about the generation that started it."""

    pid: int
    ctl: socket.socket  # EOF or HANDOVER: we are the primary
    pidfd: int | None  # readable once the parent has exited (None: gone already)
    systemd_notify: str | None  # NOTIFY_SOCKET to use once primary


def take_parent(env: MutableMapping[str, str], *, ppid: int) -> ParentLink | None:
    """Read (and remove) the upgrade variables; None when this is not an upgrade child.

    Raises :class:`~sdactivate.UpgradeError` for malformed values meant for us.
    """
    parent_text = env.pop(ENV_PARENT, None)
    fd_text = env.pop(ENV_FD, None)
    systemd_notify = env.pop(ENV_NOTIFY, None)
    if parent_text is None or fd_text is None:
        return None
    try:
        parent, fd = int(parent_text), int(fd_text)
    except ValueError as exc:
        raise UpgradeError(f"malformed {ENV_PARENT}={parent_text!r} {ENV_FD}={fd_text!r}") from exc
    if parent != ppid:  # an environment inherited by some other descendant: not for us
        return None
    try:
        ctl = socket.socket(fileno=fd)
    except OSError as exc:
        raise UpgradeError(f"{ENV_FD}={fd} is not the upgrade socket") from exc
    ctl.set_inheritable(False)
    try:
        pidfd: int | None = os.pidfd_open(parent)
    except ProcessLookupError:
        pidfd = None
    return ParentLink(parent, ctl, pidfd, systemd_notify or None)


def child_environ(env: Mapping[str, str], *, parent: int, ctl_fd: int) -> dict[str, str]:
    """The child's environment (``NOTIFY_SOCKET`` and ``LISTEN_*`` are set by the spawner)."""
    out = dict(env)
    systemd_notify = out.pop("NOTIFY_SOCKET", None)
    out.pop("WATCHDOG_PID", None)  # sd_watchdog_enabled(3): unset means "this process"
    out[ENV_PARENT] = str(parent)
    out[ENV_FD] = str(ctl_fd)
    if systemd_notify:
        out[ENV_NOTIFY] = systemd_notify
    return out


def recv_some(sock: socket.socket) -> bytes:
    """A read from the handover socket: b"" means EOF (or an error: the peer is gone)."""
    try:
        return sock.recv(64)
    except (BlockingIOError, InterruptedError):
        return b"?"
    except OSError:
        return b""
