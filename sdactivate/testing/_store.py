"""PID1's fd store for one service, emulated: what ``FDSTORE=1``, ``FDNAME=``,
``FDSTOREREMOVE=1`` and ``FDPOLL=0`` do to the fds a notify message carries.

systemd 252 service.c ``service_notify_message()`` and ``service_add_fd_store()``;
sd_pid_notify_with_fds(3). Not thread-safe: :class:`~sdactivate.testing.NotifyReceiver`
calls it with its lock held, and polls the entries for POLLHUP/POLLERR itself.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from dataclasses import dataclass

from ..activation import valid_fd_name
from ..fdstore import same_fd
from ._messages import Message

__all__ = ["FdStore", "StoredFd", "close_fds"]


@dataclass(frozen=True)
class StoredFd:
    """An fd-store entry. The receiver owns ``fd`` until it is removed or flushed."""

    name: str
    fd: int
    poll: bool
    pid: int


def close_fds(fds: Iterable[int]) -> None:
    """Close each fd, ignoring those already closed."""
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


class FdStore:
    """The stored fds, newest first (service.c LIST_PREPEND). Owns every entry's fd."""

    def __init__(self) -> None:
        self._entries: list[StoredFd] = []
        self._inodes: dict[int, tuple[int, int]] = {}  # stored fd -> (st_dev, st_ino)

    def __len__(self) -> int:
        return len(self._entries)

    def entries(self) -> list[StoredFd]:
        """A copy of the entries, newest first (the order PID1 252 passes them)."""
        return list(self._entries)

    def pollable(self) -> dict[int, StoredFd]:
        """Entries to watch for POLLHUP/POLLERR (all but ``FDPOLL=0`` ones), by fd."""
        return {e.fd: e for e in self._entries if e.poll}

    def discard(self, entries: Iterable[StoredFd]) -> None:
        """Forget ``entries`` without closing their fds (the caller closes or lost them)."""
        drop = list(entries)
        self._entries = [e for e in self._entries if e not in drop]

    def take_all(self) -> list[StoredFd]:
        """Empty the store; the caller now owns (and closes) the returned entries' fds."""
        gone, self._entries = self._entries, []
        return gone

    def dup(self) -> tuple[list[int], list[str]]:
        """Duplicates of the stored fds and their names (for a launch; caller closes)."""
        return [os.dup(e.fd) for e in self._entries], [e.name for e in self._entries]

    def apply(self, message: Message, fds: list[int], *, limit: int) -> None:
        """service.c service_notify_message(): FDSTOREREMOVE=1 then FDSTORE=1.

        Fds taken into the store are removed from ``fds``; the caller closes the rest.
        ``limit`` is ``FileDescriptorStoreMax=``.
        """
        name = message.get("FDNAME")
        if name is not None and not valid_fd_name(name):
            name = None  # "invalid, ignoring": stored under the default name
        if message.has("FDSTOREREMOVE", "1") and name is not None:
            gone = [e for e in self._entries if e.name == name]
            self._entries = [e for e in self._entries if e.name != name]
            close_fds(e.fd for e in gone)
        if not message.has("FDSTORE", "1"):
            return  # sd_notify(3): fds without FDSTORE=1 are closed on reception
        poll = not message.has("FDPOLL", "0")
        for fd in list(fds):
            if len(self._entries) >= limit:
                break  # "Cannot store more fds than FileDescriptorStoreMax=" -> closed
            st = os.fstat(fd)
            inode = (st.st_dev, st.st_ino)
            if any(self._inodes.get(e.fd) == inode and same_fd(e.fd, fd) for e in self._entries):
                continue  # same_fd(): deduped within the store only
            self._inodes[fd] = inode
            fds.remove(fd)
            self._entries.insert(0, StoredFd(name or "stored", fd, poll, message.pid))
