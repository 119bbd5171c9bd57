"""The service manager's file descriptor store: keep sockets and state across restarts.

With ``FileDescriptorStoreMax=N`` (systemd.service(5), v219) a service may hand fds to the
manager (sd_notify(3) ``FDSTORE=1`` + ``FDNAME=``); on the next start they come back through
``LISTEN_FDS``/``LISTEN_FDNAMES`` after any socket-unit fds. So a service that binds its own
sockets keeps them -- and the connections waiting in their backlog -- across a restart, with no
socket unit: :func:`listen` does exactly that.

When the store survives (systemd 252; docs/FILE_DESCRIPTOR_STORE.md, systemctl(1)):

* ``systemctl restart`` (one restart job) and an automatic ``Restart=`` after a crash: **kept**;
  ``daemon-reload``/``daemon-reexec``: kept.
* ``systemctl stop`` then ``systemctl start``, or a crash with no restart pending: **flushed**.
  ``FileDescriptorStorePreserve=`` (v254+) is not available on 252.

What a service cannot know on 252: whether the store is enabled at all (``$FDSTORE`` is v254+),
and whether an fd was accepted -- sd_notify's success only means the datagram was queued; fds
beyond ``FileDescriptorStoreMax=`` or sent to a service without a store are closed silently.
Store entries are duplicates: closing your copy of a connection does not EOF the peer until
the entry is removed too. PID1 dedupes only within the store, so an fd that also comes from a
socket unit must never be stored (it would arrive twice); this module never re-stores an fd it
inherited. Names are visible to unprivileged clients: no secrets in ``FDNAME``.

Not under systemd (``NOTIFY_SOCKET`` unset) every call returns False and does nothing, and
:func:`listen` simply binds. Try it: ``systemd-run -p FileDescriptorStoreMax=8 ...``.
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket
from collections.abc import Iterable
from typing import Protocol

from . import _env
from ._listen_env import fd_name_problem
from .addresses import DEFAULT_BACKLOG, Kind, ListenAddress, parse_address
from .errors import NotifyValueError

__all__ = [
    "RESERVED_NAMES",
    "is_inherited",
    "listen",
    "load_state",
    "prune",
    "remove",
    "same_fd",
    "store",
    "store_state",
    "validate_name",
]

log = logging.getLogger("sdactivate.fdstore")

# sd_listen_fds(3) "Special names": "unknown" (no LISTEN_FDNAMES) and "connection" (Accept=yes)
# mean something else to a receiver, so storing under them is refused. "stored" is what PID1
# names an fd sent without FDNAME=; storing under it explicitly is allowed.
RESERVED_NAMES = frozenset({"unknown", "connection"})


class _HasFileno(Protocol):
    def fileno(self) -> int: ...


FdLike = int | _HasFileno


def validate_name(name: str, *, for_store: bool = True) -> str:
    """Return ``name`` if it is a valid fd name, else raise :class:`NotifyValueError`.

    sd_notify(3): ASCII, no control characters, no ``:``, at most 255 characters (PID1
    silently ignores an invalid ``FDNAME=``). Empty names and, when storing, the special
    names ``unknown`` and ``connection`` are refused too (sd_listen_fds(3) gives them other
    meanings); ``stored``, PID1's name for an fd sent without ``FDNAME=``, is allowed.
    """
    problem = fd_name_problem(name)
    if problem is not None:
        raise NotifyValueError(problem)
    if for_store and name in RESERVED_NAMES:
        raise NotifyValueError(f"fd name {name!r} is reserved by sd_listen_fds(3)")
    return name


def _is_valid(name: str) -> bool:
    try:
        validate_name(name, for_store=False)
    except NotifyValueError:
        return False
    return True


def _fileno(obj: FdLike) -> int:
    fd = obj if isinstance(obj, int) else obj.fileno()
    if fd < 0:
        raise ValueError(f"{obj!r} is closed")
    return fd


_SYS_KCMP = {"x86_64": 312, "aarch64": 272, "i686": 349, "armv7l": 378, "ppc64le": 354}
_KCMP_FILE = 0  # kcmp(2)


def same_fd(a: int, b: int) -> bool:
    """Whether fds ``a`` and ``b`` share one open file description (dup'd or passed).

    systemd's ``same_fd()``, which PID1 uses to dedupe the store: kcmp(2) ``KCMP_FILE`` when
    the kernel has it, else the same inode, mode, status flags and file position.
    """
    if a == b:
        return True
    try:
        sa, sb = os.fstat(a), os.fstat(b)
    except OSError:
        return False
    if (sa.st_dev, sa.st_ino, sa.st_mode) != (sb.st_dev, sb.st_ino, sb.st_mode):
        return False
    verdict = _kcmp(a, b)
    if verdict is not None:
        return verdict
    if fcntl.fcntl(a, fcntl.F_GETFL) != fcntl.fcntl(b, fcntl.F_GETFL):
        return False
    try:
        return os.lseek(a, 0, os.SEEK_CUR) == os.lseek(b, 0, os.SEEK_CUR)
    except OSError:  # not seekable (socket, pipe): same inode and flags is all we can tell
        return True


def _kcmp(a: int, b: int) -> bool | None:
    import ctypes  # lazy: milliseconds, only when comparing two fds on one inode
    import platform

    number = _SYS_KCMP.get(platform.machine())
    if number is None:
        return None
    pid = os.getpid()
    result = ctypes.CDLL(None, use_errno=True).syscall(number, pid, pid, _KCMP_FILE, a, b)
    return None if result < 0 else result == 0


def _inherited(environ: _env.Environ | None, pid: int | None) -> list[tuple[int, str, str]]:
    from . import activation

    return [(e.fd, e.name, e.kind) for e in activation.inherited_fds(environ=environ, pid=pid)]


def is_inherited(
    obj: FdLike, *, environ: _env.Environ | None = None, pid: int | None = None
) -> bool:
    """True if ``obj`` is (a duplicate of) an fd this process got through ``LISTEN_FDS``:
    from a socket unit or back from the store. Compared with :func:`same_fd`."""
    fd = _fileno(obj)
    return any(same_fd(fd, other) for other, _, _ in _inherited(environ, pid))


def store(
    obj: FdLike,
    *,
    name: str,
    poll: bool = True,
    environ: _env.Environ | None = None,
    pid: int | None = None,
) -> bool:
    """Hand ``obj`` (a socket, file object or raw fd) to the manager's store as ``name``.

    Sends ``FDSTORE=1``, ``FDNAME=name`` and, with ``poll=False``, ``FDPOLL=0`` (keep the fd
    even when it reports POLLHUP/POLLERR; v246+). One message per call, because ``FDNAME=``
    names every fd of a message. An fd this process inherited (socket unit or store) is not
    sent again -- PID1 would deliver it twice -- and the call returns True. False when
    ``NOTIFY_SOCKET`` is unset. True does not mean stored: see the module docstring.
    Raises :class:`NotifyValueError` for an invalid name, ``NotifyError`` if undeliverable.
    """
    from . import notify

    validate_name(name)
    fd = _fileno(obj)
    if is_inherited(fd, environ=environ, pid=pid):
        log.debug("fd %d (%s) came from the manager; not storing it again", fd, name)
        return _notify_available(environ)
    fields: list[tuple[str, str]] = [("FDSTORE", "1"), ("FDNAME", name)]
    if not poll:
        fields.append(("FDPOLL", "0"))
    return notify.send(fields, fds=(fd,), environ=environ)


def _notify_available(environ: _env.Environ | None) -> bool:
    return bool(_env.resolve(environ).get("NOTIFY_SOCKET"))


def remove(name: str, *, environ: _env.Environ | None = None) -> bool:
    """Close every store entry named ``name`` (``FDSTOREREMOVE=1``, v236+).

    Your own copies stay open. False when ``NOTIFY_SOCKET`` is unset.
    """
    from . import notify

    validate_name(name, for_store=False)
    return notify.send([("FDSTOREREMOVE", "1"), ("FDNAME", name)], environ=environ)


def listen(
    address: str | ListenAddress,
    *,
    name: str,
    kind: Kind | None = None,
    backlog: int = DEFAULT_BACKLOG,
    poll: bool = True,
    environ: _env.Environ | None = None,
    pid: int | None = None,
) -> socket.socket:
    """A listening socket for ``address`` that survives ``systemctl restart`` without a socket unit.

    1. If ``LISTEN_FDNAMES`` has ``name`` with a socket of the same family/type/address (the
       store gave it back), return it -- it is already stored, nothing is sent.
    2. Else if any inherited socket is bound to ``address`` (a socket unit), return it and do
       not store it (PID1 would pass it twice).
    3. Else bind it (``ListenAddress.bind``) and :func:`store` it as ``name``. A stale entry
       under ``name`` that no longer matches (the address changed) is removed first.

    Port 0 matches an inherited socket of that name on any port (the rule is
    :func:`sdactivate._listen_pick.pick_inherited`'s, the address deciding). Not under
    systemd this just binds. Requires ``FileDescriptorStoreMax=`` >= the number of stored
    fds; on 252 nothing tells you when it is missing (the socket then lives only as long as
    this process).
    """
    from . import activation
    from ._listen_pick import pick_inherited

    validate_name(name)
    addr = address if isinstance(address, ListenAddress) else parse_address(address, kind=kind)
    inherited = activation.named_sockets(environ=environ, pid=pid)
    index = pick_inherited(inherited, addr, name, name_decides=False)
    if index is not None:
        sock, group = inherited[index]
        if group != name:
            log.debug("%s comes from %r (a socket unit?); not storing it", addr, group)
        return sock
    if any(group == name for _, group in inherited):
        log.warning("stored fd %r does not match %s any more; replacing it", name, addr)
        remove(name, environ=environ)
    sock = addr.bind(backlog=backlog)
    try:
        store(sock, name=name, poll=poll, environ=environ, pid=pid)
    except BaseException:
        sock.close()
        raise
    return sock


# --- state blobs in sealed memfds -----------------------------------------------------------
_MEMFD_NAME_MAX = 249  # memfd_create(2): 249 bytes, not counting the terminating NUL
_SEALS = fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE


def _memfd(name: str, data: bytes) -> int:
    label = f"sdactivate:{name}"[:_MEMFD_NAME_MAX]  # only shown in /proc/PID/fd
    fd = os.memfd_create(label, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _SEALS)
    except BaseException:
        os.close(fd)
        raise
    return fd


def store_state(name: str, data: bytes, *, environ: _env.Environ | None = None) -> bool:
    """Keep ``data`` across restarts in a sealed memfd stored as ``name``.

    Replaces any earlier blob of that name (``FDSTOREREMOVE`` first; datagrams are processed
    in order). Sent with ``FDPOLL=0`` (a memfd is not pollable anyway). Counts against
    ``FileDescriptorStoreMax=``. False when ``NOTIFY_SOCKET`` is unset.
    """
    from . import notify

    validate_name(name)
    if not _notify_available(environ):
        return False
    fd = _memfd(name, bytes(data))
    try:
        remove(name, environ=environ)
        fields = [("FDSTORE", "1"), ("FDNAME", name), ("FDPOLL", "0")]
        return notify.send(fields, fds=(fd,), environ=environ)
    finally:
        os.close(fd)


def load_state(
    name: str, *, environ: _env.Environ | None = None, pid: int | None = None
) -> bytes | None:
    """The blob :func:`store_state` kept as ``name`` in an earlier run, or None.

    None when nothing of that name came back (first start, stop+start flushed the store, not
    under systemd). Reads with ``pread`` and leaves the fd open (the store keeps its own copy).
    """
    validate_name(name)
    for fd, fd_name, kind in _inherited(environ, pid):
        if fd_name == name and kind == "file":
            return _read_all(fd)
    return None


def _read_all(fd: int) -> bytes:
    chunks: list[bytes] = []
    offset = 0
    while chunk := os.pread(fd, 1 << 20, offset):
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks)


def prune(
    keep: Iterable[str],
    *,
    environ: _env.Environ | None = None,
    pid: int | None = None,
) -> list[str]:
    """Send ``FDSTOREREMOVE`` for every inherited name not in ``keep``; return those names.

    docs/FILE_DESCRIPTOR_STORE.md recommends this at start-up, so fds a previous version
    stored but this one does not understand do not pile up. Names of socket-unit fds are
    harmless to remove (only the store is affected). Your own copies stay open.
    """
    wanted = set(keep)
    inherited = {n for _, n, _ in _inherited(environ, pid)} - wanted - RESERVED_NAMES
    names = sorted(n for n in inherited if _is_valid(n))
    for name in names:
        remove(name, environ=environ)
    return names
