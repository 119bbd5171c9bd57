"""The upgrader's sockets: what a new generation receives, and how ``listen()`` finds them.

Inherited sockets (``LISTEN_FDS`` from systemd or the previous generation) come first, in fd
order, with their names; sockets bound or added here follow. Every one of them is passed on,
claimed or not, so a socket the current code does not use is not lost for the next version.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Mapping
from typing import cast, get_args

from ..addresses import DEFAULT_BACKLOG, Kind, ListenAddress, parse_address
from ..errors import ActivationError, AddressError, UpgradeError

__all__ = ["SocketSet", "check_fd_name"]


class _Entry:
    __slots__ = ("claimed", "name", "sock")

    def __init__(self, sock: socket.socket, name: str, *, claimed: bool) -> None:
        self.sock = sock
        self.name = name
        self.claimed = claimed


class SocketSet:
    """Thread-safe list of (socket, fd name). ``environ`` as for :func:`sdactivate.listeners`."""

    def __init__(self, environ: Mapping[str, str] | None) -> None:
        self._environ = environ
        self._entries: list[_Entry] = []
        self._loaded = False
        self._lock = threading.Lock()

    def listen(
        self,
        network: str,
        address: str | ListenAddress,
        *,
        name: str | None = None,
        backlog: int = DEFAULT_BACKLOG,
    ) -> socket.socket:
        """The inherited socket for ``address`` (by ``name`` if given), else a bound one."""
        if network not in get_args(Kind):
            raise AddressError(f"unknown network {network!r} (one of {', '.join(get_args(Kind))})")
        if isinstance(address, ListenAddress):
            addr = address
        else:
            addr = parse_address(address, kind=cast(Kind, network))
        if name is not None:
            check_fd_name(name)
        with self._lock:
            self._load()
            try:
                entry = self._match(addr, name)
            except ActivationError as exc:
                raise UpgradeError(str(exc)) from exc
            if entry is not None:
                entry.claimed = True
                return entry.sock
            sock = addr.bind(backlog=backlog)
            self._entries.append(_Entry(sock, name or "unknown", claimed=True))
            return sock

    def add(self, sock: socket.socket, name: str) -> None:
        check_fd_name(name)
        with self._lock:
            self._entries.append(_Entry(sock, name, claimed=True))

    def snapshot(self) -> list[tuple[socket.socket, str]]:
        """Every (socket, name), in the ``LISTEN_FDS`` order a new generation gets."""
        with self._lock:
            self._load()
            return [(e.sock, e.name) for e in self._entries]

    def close(self) -> None:
        with self._lock:
            for entry in self._entries:
                entry.sock.close()
            self._entries.clear()

    def _load(self) -> None:
        if self._loaded:
            return
        from .. import activation

        pairs = activation.named_sockets(environ=self._environ)
        self._entries[:0] = [_Entry(sock, name, claimed=False) for sock, name in pairs]
        self._loaded = True

    def _match(self, addr: ListenAddress, name: str | None) -> _Entry | None:
        """The unclaimed entry for ``addr``/``name``: :func:`pick_inherited`'s rule, the name
        deciding (a unit's ``FileDescriptorName=``); so a port-0 address takes the unclaimed
        sockets of its kind and host in call order."""
        from .._listen_pick import pick_inherited

        free = [e for e in self._entries if not e.claimed]
        index = pick_inherited([(e.sock, e.name) for e in free], addr, name, name_decides=True)
        return None if index is None else free[index]


def check_fd_name(name: str) -> None:
    """Raise :class:`UpgradeError` unless ``name`` is a non-empty fd name
    (:func:`sdactivate._listen_env.fd_name_problem`)."""
    from .._listen_env import fd_name_problem

    problem = fd_name_problem(name)
    if problem is not None:
        raise UpgradeError(problem)
