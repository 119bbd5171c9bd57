"""Socket activation: the file descriptors a service manager passed (sd_listen_fds(3)).

The protocol part is :func:`parse_listen_env`, a pure function of an environment and a
pid. The rest is a thin shell that checks the fds are open, sets FD_CLOEXEC, wraps sockets
with ``socket.socket(fileno=fd)`` and caches the result for the process.

Try it by hand::

    systemd-socket-activate -l 127.0.0.1:8080 --fdname=http \\
        python3 -c 'import sdactivate; print(sdactivate.listeners_by_name())'
    # then, in another terminal: nc 127.0.0.1 8080
"""

from __future__ import annotations

import _thread
import os
import socket
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

from . import _env
from ._fdinfo import fd_kind, is_fifo, is_socket, is_socket_inet, is_socket_unix
from .errors import ActivationError

if TYPE_CHECKING:
    from ._fdinfo import FdKind
    from .addresses import Kind, ListenAddress

__all__ = [
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

SD_LISTEN_FDS_START = 3  # sd_listen_fds(3)
FDNAME_MAX = 255  # sd_listen_fds(3), systemd.socket(5) FileDescriptorName=
_INT_MAX = 2**31 - 1
_LISTEN_KEYS = ("LISTEN_PID", "LISTEN_PIDFDID", "LISTEN_FDS", "LISTEN_FDNAMES")
_DIGITS = {2: "01", 8: "01234567", 10: "0123456789", 16: "0123456789abcdefABCDEF"}
_NR_OPEN_DEFAULT = 1 << 20  # proc(5) fs.nr_open default: no process can hold a higher fd


@dataclass(frozen=True, slots=True)
class InheritedFd:
    """One passed descriptor: its number, its ``LISTEN_FDNAMES`` name and what it is."""

    fd: int
    name: str
    kind: FdKind


class ListenEnv(NamedTuple):
    """A parsed ``LISTEN_*`` environment that is meant for this process."""

    names: tuple[str, ...]  # one per fd, in fd order
    pidfd_id: int | None = None  # LISTEN_PIDFDID (v259+), if the manager sent it

    @property
    def fds(self) -> range:
        return range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + len(self.names))


# --- the pure protocol part ---------------------------------------------------------------


def _c_integer(text: str) -> int | None:
    """``text`` read as libsystemd's safe_atoi()/safe_atolu() read it, or None.

    That is strtol(3) with base 0 after systemd's own prefixes: leading whitespace, a sign,
    ``0x`` hex, ``0b`` binary, ``0o`` and C's leading-``0`` octal; nothing may follow.
    Matching it exactly is what keeps us in agreement with libsystemd on odd input.
    """
    if text.isdigit() and text.isascii() and text[0] != "0":
        return int(text)  # the only spelling managers write
    s = text.lstrip(" \t\n\r")  # systemd's WHITESPACE
    base = 0
    if s[:2] in ("0b", "0B"):
        base, s = 2, s[2:]
    elif s[:2] in ("0o", "0O"):
        base, s = 8, s[2:]
    s = s.lstrip(" \t\n\v\f\r")  # strtol's isspace()
    negative = s[:1] == "-"
    if s[:1] in ("+", "-"):
        s = s[1:]
    if base == 0:
        if s[:2] in ("0x", "0X") and s[2:3] and s[2] in "0123456789abcdefABCDEF":
            base, s = 16, s[2:]
        else:
            base = 8 if s[:1] == "0" else 10
    digits = _DIGITS[base]
    if not s or any(c not in digits for c in s):
        return None
    value = int(s, base)
    return -value if negative else value


def valid_fd_name(name: str) -> bool:
    """True if ``name`` is a valid fd name: ASCII without control characters, no ``:``,
    at most 255 characters (systemd.socket(5) FileDescriptorName=, sd_notify(3) FDNAME=).
    Empty names are valid: libsystemd keeps empty ``LISTEN_FDNAMES`` fields.
    """
    # str.isprintable() on ASCII is exactly 0x20..0x7e
    return len(name) <= FDNAME_MAX and name.isascii() and name.isprintable() and ":" not in name


def parse_listen_env(
    environ: Mapping[str, str],
    pid: int,
    *,
    own_pidfd_id: int | None = None,
    fd_ceiling: int = _NR_OPEN_DEFAULT,
) -> ListenEnv | None:
    """Parse ``LISTEN_PID``/``LISTEN_PIDFDID``/``LISTEN_FDS``/``LISTEN_FDNAMES``: pure.

    Returns None when the environment is not for the process ``pid`` (``LISTEN_PID`` unset
    or another pid, ``LISTEN_PIDFDID`` differs from ``own_pidfd_id``, ``LISTEN_FDS`` unset),
    as sd_listen_fds(3) returns 0. ``own_pidfd_id`` None means "cannot tell", and the
    ``LISTEN_PIDFDID`` comparison is skipped, as libsystemd does on kernels without pidfs.

    Raises :class:`ActivationError` naming the variable and value when it is for us but
    malformed: an unparsable ``LISTEN_PID`` or ``LISTEN_PIDFDID``; ``LISTEN_FDS`` not a
    positive integer, or so large its last fd would be at or above ``fd_ceiling`` (the
    kernel's fs.nr_open: no process can hold such an fd, and refusing early keeps a
    corrupt value from costing memory); a ``LISTEN_FDNAMES`` count that differs from
    ``LISTEN_FDS`` (libsystemd: -EINVAL); an invalid name (see :func:`valid_fd_name`;
    stricter than libsystemd, which takes any bytes). Missing ``LISTEN_FDNAMES`` names
    every fd ``unknown``. Numbers are read as libsystemd reads them (see ``_c_integer``).
    Names are split on ``:`` and kept raw, as the manager joins them; libsystemd 252 reads
    backslash escapes there (``a\\b`` -> ``ab``; a lone trailing one fails even when the
    environment is not for it), which we do not copy.
    """
    text = environ.get("LISTEN_PID")
    if text is None:
        return None
    listen_pid = _c_integer(text)
    if listen_pid is None or not 0 < listen_pid <= _INT_MAX:  # parse_pid(): a valid pid_t
        raise ActivationError(f"LISTEN_PID={text!r} is not a valid pid")
    if listen_pid != pid:
        return None  # sd_listen_fds(3): "Is this for us?"
    pidfd_id = None
    text = environ.get("LISTEN_PIDFDID")  # v259+
    if text is not None:
        pidfd_id = _c_integer(text)
        if pidfd_id is None or not 0 <= pidfd_id < 2**64:
            raise ActivationError(f"LISTEN_PIDFDID={text!r} is not a pidfd inode id")
        if own_pidfd_id is not None and own_pidfd_id != pidfd_id:
            return None  # same pid number, another process: pid reuse
    text = environ.get("LISTEN_FDS")
    if text is None:
        return None
    count = _c_integer(text)
    if count is None or not 0 < count <= _INT_MAX - SD_LISTEN_FDS_START:
        raise ActivationError(f"LISTEN_FDS={text!r} is not a positive integer")
    if SD_LISTEN_FDS_START + count > fd_ceiling:
        raise ActivationError(
            f"LISTEN_FDS={text!r} would put fds above the kernel's limit of {fd_ceiling}"
            " (fs.nr_open)"
        )
    joined = environ.get("LISTEN_FDNAMES")
    if joined is None:
        names = ("unknown",) * count  # sd_listen_fds_with_names(3)
    else:
        names = tuple(joined.split(":"))  # empty fields are kept, as libsystemd does
        if len(names) != count:
            raise ActivationError(
                f"LISTEN_FDNAMES={joined!r} has {len(names)} names for LISTEN_FDS={text!r}"
            )
        # every name is valid if the whole string is short printable ASCII (':' splits)
        if len(joined) > FDNAME_MAX or not (joined.isascii() and joined.isprintable()):
            for name in names:
                if not valid_fd_name(name):
                    raise ActivationError(
                        f"LISTEN_FDNAMES={joined!r}: invalid name {name!r} (ASCII without"
                        f" control characters or ':', at most {FDNAME_MAX} characters)"
                    )
    return ListenEnv(names, pidfd_id)


# --- the I/O shell ----------------------------------------------------------------------


class _Inherited:
    """What one read of the environment produced: entries, and socket objects by fd."""

    __slots__ = ("fds", "sockets")

    def __init__(self, fds: tuple[InheritedFd, ...], sockets: dict[int, socket.socket]):
        self.fds = fds
        self.sockets = sockets


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
            with open("/proc/sys/fs/nr_open", "rb") as f:
                _STATE.fd_ceiling = int(f.read())
        except (OSError, ValueError):
            _STATE.fd_ceiling = _NR_OPEN_DEFAULT
    return _STATE.fd_ceiling


def _pidfd_id(pid: int) -> int | None:
    """The inode id of ``pid``'s pidfd, or None where the kernel has no pidfs (< 6.9):
    there every pidfd shares one anonymous inode and the id means nothing.
    """
    if pid in _STATE.pidfd_ids:
        return _STATE.pidfd_ids[pid]
    value: int | None = None
    if sys.maxsize > 2**32:  # 32-bit st_ino is truncated (libsystemd uses file handles)
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:
            pidfd = -1
        if pidfd >= 0:
            try:
                st = os.fstat(pidfd)
                probe = os.eventfd(0)  # an anonymous inode, for comparison
                try:
                    anon_dev = os.fstat(probe).st_dev
                finally:
                    os.close(probe)
                if st.st_dev != anon_dev:
                    value = st.st_ino
            finally:
                os.close(pidfd)
    _STATE.pidfd_ids[pid] = value
    return value


def _read(environ: Mapping[str, str], pid: int, cloexec: bool) -> _Inherited:
    own_id = _pidfd_id(pid) if "LISTEN_PIDFDID" in environ else None
    parsed = parse_listen_env(environ, pid, own_pidfd_id=own_id, fd_ceiling=_fd_ceiling())
    if parsed is None:
        return _NOTHING
    modes = []
    for fd in parsed.fds:  # check everything before touching anything
        try:
            modes.append(os.fstat(fd).st_mode)
        except OSError as exc:
            raise ActivationError(
                f"LISTEN_FDS={len(parsed.names)}: fd {fd} is not open ({exc.strerror})"
            ) from exc
    entries = []
    sockets: dict[int, socket.socket] = {}
    created = []
    try:
        for fd, name, mode in zip(parsed.fds, parsed.names, modes, strict=True):
            os.set_inheritable(fd, not cloexec)  # sd_listen_fds(3) sets FD_CLOEXEC
            kind = fd_kind(fd, mode)
            entries.append(InheritedFd(fd, name, kind))
            if kind != "socket":
                continue
            sock = _STATE.sockets.get(fd)
            if sock is None or sock.fileno() != fd:
                sock = socket.socket(fileno=fd)  # family/type/proto from the kernel
                created.append(sock)
                if not os.get_blocking(fd):  # NonBlocking=yes: say so (timeout 0)
                    sock.setblocking(False)
            sockets[fd] = sock
    except BaseException:
        for sock in created:
            sock.detach()  # the fds are the manager's: never close them on our error
        raise
    for sock in created:
        _STATE.sockets[sock.fileno()] = sock
    return _Inherited(tuple(entries), sockets)


def _unset_listen_env() -> None:
    environ = _env.process_environ()
    for key in _LISTEN_KEYS:
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
                    for entry in _STATE.result.fds:
                        os.set_inheritable(entry.fd, True)
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
    servers that exec workers), on every call that says so.

    Raises :class:`ActivationError` if the environment is for us but malformed
    (see :func:`parse_listen_env`) or a passed fd is not open. sd_listen_fds(3).
    """
    return list(_acquire(environ, pid, unset_environment, cloexec).fds)


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
    got = _acquire(environ, pid, unset_environment, cloexec)
    return [got.sockets[e.fd] for e in got.fds if e.kind == "socket"]


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
    for entry in got.fds:
        if entry.kind == "socket":
            by_name.setdefault(entry.name, []).append(got.sockets[entry.fd])
    return by_name


def listen(
    address: str | ListenAddress,
    *,
    name: str | None = None,
    kind: Kind | None = None,
    backlog: int | None = None,
    environ: Mapping[str, str] | None = None,
    pid: int | None = None,
) -> socket.socket:
    """The socket for ``address``: inherited when socket-activated, else bound here.

    The same application code runs under systemd, under ``sdactivate run`` and bare:
    ``sock = sdactivate.listen("127.0.0.1:8080", name="http")``. With ``name``, the passed
    socket of that name wins whatever its address (the unit decides where to listen); if
    several share the name, the one bound to ``address`` is taken. Without a name, or when
    no socket has it, a passed socket bound to ``address`` is taken. Otherwise the address
    is bound (``ListenAddress.bind``, listening with ``backlog``; for inherited sockets the
    unit's ``Backlog=`` applies). ``kind`` selects the socket kind when ``address`` is text
    (``tcp`` by default, ``udp``...).

    Raises :class:`ActivationError` for a malformed environment, a named fd that is not a
    socket or not of the address's type, or an ambiguous name; ``AddressError`` for a bad
    address; ``OSError`` from bind(2).
    """
    from .addresses import DEFAULT_BACKLOG, ListenAddress, parse_address

    if isinstance(address, ListenAddress):
        addr = address
        if kind is not None and kind != addr.kind:
            raise ValueError(f"kind={kind!r} contradicts the address {str(addr)!r}")
    else:
        addr = parse_address(address, kind=kind)
    got = _acquire(environ, pid, True, True)
    if name is not None:
        named = [e for e in got.fds if e.name == name]
        for entry in named:
            if entry.kind != "socket":
                raise ActivationError(
                    f"fd {entry.fd} named {name!r} is a {entry.kind}, not a socket"
                )
        socks = [got.sockets[e.fd] for e in named]
        bound_here = [s for s in socks if addr.matches(s)]
        if bound_here:
            return bound_here[0]
        if len(socks) == 1:
            if socks[0].type != addr.type:
                raise ActivationError(
                    f"fd {named[0].fd} named {name!r} is {socks[0].type.name}, but"
                    f" {str(addr)!r} needs {addr.type.name}"
                )
            return socks[0]
        if socks:
            raise ActivationError(
                f"{len(socks)} passed sockets are named {name!r} and none is bound to {str(addr)!r}"
            )
    for sock in got.sockets.values():
        if addr.matches(sock):
            return sock
    return addr.bind(backlog=DEFAULT_BACKLOG if backlog is None else backlog)
