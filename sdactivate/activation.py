"""Socket activation: the file descriptors a service manager passed (sd_listen_fds(3)).

The protocol part is :func:`parse_listen_env` (in ``_listen_env``), a pure function of an
environment and a pid. This module is a thin shell that checks the fds are open, sets
FD_CLOEXEC, wraps sockets with ``socket.socket(fileno=fd)`` and caches the result for the
process.

Try it by hand::

    systemd-socket-activate -l 127.0.0.1:8080 --fdname=http \\
        python3 -c 'import sdactivate; print(sdactivate.listeners_by_name())'
    # then, in another terminal: nc 127.0.0.1 8080
"""

from __future__ import annotations

import _thread
import errno
import os
import socket
import stat
from collections.abc import Mapping

from . import _env
from ._fdinfo import fd_kind, is_fifo, is_socket, is_socket_inet, is_socket_unix
from ._listen_env import (
    FDNAME_MAX,
    LISTEN_KEYS,
    NR_OPEN_DEFAULT,
    SD_LISTEN_FDS_START,
    ListenEnv,
    parse_listen_env,
    valid_fd_name,
)
from .errors import ActivationError

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (milliseconds)
if TYPE_CHECKING:
    from typing import NoReturn

    from ._fdinfo import FdKind
    from .addresses import Kind, ListenAddress

__all__ = [
    "FDNAME_MAX",
    "SD_LISTEN_FDS_START",
    "InheritedFd",
    "ListenEnv",
    "inherited_fds",
    "is_fifo",
    "is_socket",
    "is_socket_inet",
    "is_socket_unix",
    "listen",
    "listeners",
    "listeners_by_name",
    "parse_listen_env",
    "valid_fd_name",
]


class InheritedFd:
    """One passed descriptor: its number, its ``LISTEN_FDNAMES`` name and what it is.

    Immutable, compared and hashed by value: a frozen dataclass, written out so that
    importing this module does not import ``dataclasses`` (and ``inspect``: ~10 ms).
    """

    __slots__ = ("fd", "kind", "name")
    __match_args__ = ("fd", "name", "kind")
    fd: int
    name: str
    kind: FdKind

    def __init__(self, fd: int, name: str, kind: FdKind) -> None:
        object.__setattr__(self, "fd", fd)
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "kind", kind)

    def __setattr__(self, key: str, value: object) -> NoReturn:
        raise AttributeError(f"cannot assign to field {key!r} of a frozen InheritedFd")

    def __delattr__(self, key: str) -> NoReturn:
        raise AttributeError(f"cannot delete field {key!r} of a frozen InheritedFd")

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not InheritedFd:
            return NotImplemented
        assert isinstance(other, InheritedFd)
        return (self.fd, self.name, self.kind) == (other.fd, other.name, other.kind)

    def __hash__(self) -> int:
        return hash((self.fd, self.name, self.kind))

    def __repr__(self) -> str:
        return f"InheritedFd(fd={self.fd!r}, name={self.name!r}, kind={self.kind!r})"

    def __reduce__(self) -> tuple[type[InheritedFd], tuple[int, str, FdKind]]:
        return (InheritedFd, (self.fd, self.name, self.kind))


# --- the I/O shell ----------------------------------------------------------------------


class _Inherited:
    """What one read of the environment produced: (fd, name, kind) rows, socket objects by
    fd, and the :class:`InheritedFd` entries, built on first use (listeners() needs none).
    """

    __slots__ = ("_entries", "rows", "sockets")

    def __init__(
        self, rows: tuple[tuple[int, str, FdKind], ...], sockets: dict[int, socket.socket]
    ):
        self.rows = rows
        self.sockets = sockets
        self._entries: tuple[InheritedFd, ...] | None = None

    @property
    def entries(self) -> tuple[InheritedFd, ...]:
        if self._entries is None:
            self._entries = tuple(InheritedFd(*row) for row in self.rows)
        return self._entries


_NOTHING = _Inherited((), {})


class _ProcessState:
    """Per-process memory (it survives fork, which copies the fds and these objects, and
    ends at exec): the result of reading the process environment, and the one socket
    object per fd number, so no fd is ever wrapped twice (two objects would close it twice).
    """

    def __init__(self) -> None:
        self.lock = _thread.allocate_lock()
        self.result: _Inherited | ActivationError | None = None
        self.sockets: dict[int, socket.socket] = {}
        self.unset_done = False  # LISTEN_* removed from the process environment
        self.fd_ceiling: int | None = None
        self.pidfd_ids: dict[int, int | None] = {}


_STATE = _ProcessState()


def _fd_ceiling() -> int:
    if _STATE.fd_ceiling is None:
        try:
            fd = os.open("/proc/sys/fs/nr_open", os.O_RDONLY | os.O_CLOEXEC)
            try:
                _STATE.fd_ceiling = int(os.read(fd, 32))
            finally:
                os.close(fd)
        except (OSError, ValueError):
            _STATE.fd_ceiling = NR_OPEN_DEFAULT
    return _STATE.fd_ceiling


def _pidfd_id(pid: int) -> int | None:
    """The inode id of ``pid``'s pidfd (:func:`sdactivate._pidfd.inode_id`), or None where
    it means nothing (no pidfs) or the process is gone; remembered per pid."""
    if pid in _STATE.pidfd_ids:
        return _STATE.pidfd_ids[pid]
    from . import _pidfd  # only when LISTEN_PIDFDID is set (v259+)

    value: int | None = None
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        pidfd = -1
    if pidfd >= 0:
        try:
            value = _pidfd.inode_id(pidfd)
        finally:
            os.close(pidfd)
    _STATE.pidfd_ids[pid] = value
    return value


def _read(environ: Mapping[str, str], pid: int, cloexec: bool) -> _Inherited:
    own_id = _pidfd_id(pid) if "LISTEN_PIDFDID" in environ else None
    parsed = parse_listen_env(environ, pid, own_pidfd_id=own_id, fd_ceiling=_fd_ceiling())
    if parsed is None:
        return _NOTHING
    fd = -1
    try:
        for fd in parsed.fds:  # like libsystemd: fail at the first fd that is not open
            os.set_inheritable(fd, not cloexec)  # sd_listen_fds(3) sets FD_CLOEXEC
    except OSError as exc:
        raise ActivationError(
            f"LISTEN_FDS={len(parsed.names)}: fd {fd} is not open ({exc.strerror})"
        ) from exc
    rows: list[tuple[int, str, FdKind]] = []
    sockets: dict[int, socket.socket] = {}
    created = []
    registry = _STATE.sockets
    try:
        for fd, name in zip(parsed.fds, parsed.names, strict=True):
            sock = registry.get(fd)
            if sock is not None and sock.fileno() == fd:  # wrapped before: still a socket?
                if stat.S_ISSOCK(os.fstat(fd).st_mode):
                    rows.append((fd, name, "socket"))
                    sockets[fd] = sock
                    continue
                del registry[fd]
                sock.detach()  # the number was closed and reused behind our back
            try:
                sock = socket.socket(fileno=fd)  # family/type/proto from the kernel
            except OSError as exc:
                if exc.errno != errno.ENOTSOCK:
                    raise ActivationError(
                        f"fd {fd} ({name!r}) is a socket Python cannot wrap: {exc.strerror}"
                    ) from exc
                rows.append((fd, name, fd_kind(fd)))
                continue
            created.append(sock)
            if not os.get_blocking(fd):  # NonBlocking=yes: say so (timeout 0)
                sock.setblocking(False)
            rows.append((fd, name, "socket"))
            sockets[fd] = sock
    except BaseException:
        for sock in created:
            sock.detach()  # the fds are the manager's: never close them on our error
        raise
    for sock in created:
        registry[sock.fileno()] = sock
    return _Inherited(tuple(rows), sockets)


def _unset_listen_env() -> None:
    environ = _env.process_environ()
    for key in LISTEN_KEYS:
        if key in environ:
            del environ[key]
    _STATE.unset_done = True


def _acquire(
    environ: Mapping[str, str] | None, pid: int | None, unset_environment: bool, cloexec: bool
) -> _Inherited:
    injected = environ is not None or pid is not None
    result = _STATE.result
    if result is None or injected or not cloexec or (unset_environment and not _STATE.unset_done):
        with _STATE.lock:
            if injected:  # no result cache
                try:
                    return _read(
                        _env.resolve(environ), _env.getpid() if pid is None else pid, cloexec
                    )
                finally:
                    if unset_environment and environ is None:
                        _unset_listen_env()
            if _STATE.result is None:
                try:
                    _STATE.result = _read(_env.process_environ(), _env.getpid(), cloexec)
                except ActivationError as exc:
                    _STATE.result = exc
                finally:
                    if unset_environment:  # sd_listen_fds(3): whether or not it succeeded
                        _unset_listen_env()
            else:
                if unset_environment and not _STATE.unset_done:
                    _unset_listen_env()
                if not cloexec and isinstance(_STATE.result, _Inherited):
                    for row in _STATE.result.rows:
                        os.set_inheritable(row[0], True)
            result = _STATE.result
    if isinstance(result, ActivationError):
        raise ActivationError(*result.args) from result.__cause__
    return result


def inherited_fds(
    *,
    environ: Mapping[str, str] | None = None,
    pid: int | None = None,
    unset_environment: bool = True,
    cloexec: bool = True,
) -> list[InheritedFd]:
    """Every descriptor passed by the service manager, in fd order, sockets or not.

    Kinds: ``socket``, ``fifo`` (also pipes), ``file``, ``dir``, ``char``, ``block``,
    ``mqueue``, ``other``. Not under socket activation (no ``LISTEN_PID``, another
    process's): ``[]``.

    The first call that reads the process environment remembers the result for the
    process (a forked child keeps it, along with the fds); later calls return the same
    entries and the same socket objects, even though ``LISTEN_*`` (including
    ``LISTEN_PIDFDID``) is unset by default so children don't inherit it. An ActivationError
    is remembered too. ``environ``/``pid`` inject values (tests, re-reading); an injected
    ``environ`` is never modified and its result is not remembered.

    Received fds get FD_CLOEXEC; ``cloexec=False`` makes them inheritable instead (pre-fork
    servers that exec workers), on every call that says so. Nothing here closes a passed fd:
    the socket objects are kept for the life of the process, so fds 3..n stay reserved
    (closing one yourself is yours to undo; a closed object is still what is returned).

    Raises :class:`ActivationError` if the environment is for us but malformed
    (see :func:`parse_listen_env`) or a passed fd is not open. sd_listen_fds(3).
    """
    return list(_acquire(environ, pid, unset_environment, cloexec).entries)


def listeners(
    *,
    environ: Mapping[str, str] | None = None,
    pid: int | None = None,
    unset_environment: bool = True,
    cloexec: bool = True,
) -> list[socket.socket]:
    """The passed sockets as ``socket.socket`` objects, in fd order.

    Built with ``socket.socket(fileno=fd)``, so family, type and protocol are what the
    kernel says (TCP/UDP over IPv4/IPv6, unix stream/dgram/seqpacket...). A socket the
    manager made non-blocking (``NonBlocking=yes``) has timeout 0. Non-socket fds (FIFOs,
    files, message queues) are skipped: see :func:`inherited_fds`. Calling again returns
    the same objects. Do not ``shutdown()`` them: the manager holds the same socket.
    Not under socket activation: ``[]``. Raises :class:`ActivationError` as
    :func:`inherited_fds` does.
    """
    return list(_acquire(environ, pid, unset_environment, cloexec).sockets.values())


def listeners_by_name(
    *,
    environ: Mapping[str, str] | None = None,
    pid: int | None = None,
    unset_environment: bool = True,
    cloexec: bool = True,
) -> dict[str, list[socket.socket]]:
    """The passed sockets grouped by ``LISTEN_FDNAMES`` name (names repeat: a socket unit's
    ``FileDescriptorName=`` names all its fds; the default name is the unit's, e.g.
    ``app.socket``; ``unknown`` when the launcher sent no names). See :func:`listeners`.
    """
    got = _acquire(environ, pid, unset_environment, cloexec)
    by_name: dict[str, list[socket.socket]] = {}
    for fd, name, kind in got.rows:
        if kind == "socket":
            by_name.setdefault(name, []).append(got.sockets[fd])
    return by_name


def named_sockets(
    *, environ: Mapping[str, str] | None = None, pid: int | None = None
) -> list[tuple[socket.socket, str]]:
    """(socket, ``LISTEN_FDNAMES`` name) for every passed socket, in fd order: the objects
    :func:`listeners` returns (one per fd), for the other users of
    :func:`sdactivate._listen_pick.pick_inherited`. Not in ``__all__``."""
    got = _acquire(environ, pid, True, True)
    return [(got.sockets[fd], name) for fd, name, kind in got.rows if kind == "socket"]


def listen(
    address: str | ListenAddress,
    *,
    name: str | None = None,
    kind: Kind | None = None,
    backlog: int | None = None,
    environ: Mapping[str, str] | None = None,
    pid: int | None = None,
) -> socket.socket:
    """The socket for ``address``: the one passed when socket-activated, else bound here.

    The same application code runs under systemd, under ``sdactivate run`` and bare:
    ``sock = sdactivate.listen(":8080")`` takes the socket of
    ``sdactivate gen-units myapp --port 8080`` (``ListenStream=8080``, ``[::]:8080``),
    ``sdactivate run --listen :8080`` or ``systemd-socket-activate -l 8080``, and binds
    ``[::]:8080`` (dual-stack) itself when nothing was passed.

    With ``name``, the passed socket of that name wins whatever its address (the unit
    decides where to listen); if several share the name, the one bound to ``address`` is
    taken. Without a name, or when no socket has it, a passed socket bound to ``address``
    is taken (``:8080`` or ``8080`` matches ``[::]:8080`` and ``0.0.0.0:8080``). Port 0
    matches any port of the same kind and host (``sdactivate run --listen 127.0.0.1:0``
    passes a socket on the port the kernel picked), by name only when ``name`` is given.

    Binding happens only when no socket was passed at all (not socket-activated, or only
    FIFOs/files were passed): then the address is bound (``ListenAddress.bind``, listening
    with ``backlog``; for passed sockets the unit's ``Backlog=`` applies). When sockets were
    passed but none has the name or the address, the unit and the app disagree, and binding
    would fail with ``EADDRINUSE`` on every ``Restart=`` (or listen where no client
    connects): this raises :class:`ActivationError` at once, naming each passed socket (fd
    name and address), what was asked for, and the fix. To listen on an extra address of
    your own while socket-activated, bind it deliberately:
    ``sdactivate.parse_address("127.0.0.1:9100").bind()``.

    ``kind`` selects the socket kind when ``address`` is text (``tcp`` by default,
    ``udp``...). Try it by hand::

        systemd-socket-activate -l 8080 python3 -c \
            'import sdactivate; print(sdactivate.listen(":8080"))'

    Raises :class:`ActivationError` for a malformed environment, a named fd that is not a
    socket or not of the address's type, an ambiguous name, or passed sockets none of which
    fits; ``AddressError`` for a bad address; ``OSError`` from bind(2). sd_listen_fds(3).
    """
    from ._listen_pick import pick_passed
    from .addresses import DEFAULT_BACKLOG, ListenAddress, parse_address
    from .errors import AddressError

    if isinstance(address, ListenAddress):
        addr = address
        if kind is not None and kind != addr.kind:
            raise AddressError(f"kind={kind!r} contradicts the address {str(addr)!r}")
    else:
        addr = parse_address(address, kind=kind)
    got = _acquire(environ, pid, True, True)
    passed = pick_passed(got.rows, got.sockets, addr, name)
    if passed is not None:
        return passed
    return addr.bind(backlog=DEFAULT_BACKLOG if backlog is None else backlog)
