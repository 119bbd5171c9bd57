"""What an inherited file descriptor is: its kind, and the ``sd_is_*`` checks.

Pure inspection: nothing here closes, dups or changes a descriptor. The checks mirror
sd_is_socket(3) (``sd_is_socket``, ``sd_is_socket_inet``, ``sd_is_socket_unix``,
``sd_is_fifo``), with keyword-only options and ``None`` for "don't care".
"""

from __future__ import annotations

import os
import socket
import stat

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (notify stays light)
if TYPE_CHECKING:
    from typing import Literal, Protocol, TypeAlias

__all__ = ["fd_kind", "is_fifo", "is_socket", "is_socket_inet", "is_socket_unix"]

if TYPE_CHECKING:
    FdKind: TypeAlias = Literal["socket", "fifo", "file", "dir", "char", "block", "mqueue", "other"]

    class HasFileno(Protocol):
        def fileno(self) -> int: ...

    class _Test(Protocol):
        def __call__(self, sock: socket.socket, /) -> bool: ...


def _fileno(obj: int | HasFileno) -> int:
    return obj if isinstance(obj, int) else obj.fileno()


def fd_kind(fd: int, mode: int | None = None) -> FdKind:
    """The kind of ``fd`` from fstat(2); ``mode`` is its ``st_mode`` if already known.

    POSIX message queues are regular files on the mqueue filesystem; they are told apart
    with mq_getattr(3), as sd_is_mq(3) does, but only for regular files on a filesystem that
    reports no blocks and no inodes (mqueue, proc...), so ordinary files cost nothing extra.
    Raises ``OSError`` (EBADF) if ``fd`` is not open.
    """
    if mode is None:
        mode = os.fstat(fd).st_mode
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISFIFO(mode):  # pipes too, as sd_is_fifo(3)
        return "fifo"
    if stat.S_ISREG(mode):
        return "mqueue" if _is_mqueue(fd) else "file"
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISCHR(mode):
        return "char"
    if stat.S_ISBLK(mode):
        return "block"
    return "other"  # anon inodes (eventfd, pidfd, signalfd...), O_PATH symlinks


def _is_mqueue(fd: int) -> bool:
    try:
        fs = os.fstatvfs(fd)
    except OSError:
        return False
    if fs.f_blocks or fs.f_files:  # a real filesystem (ext4, tmpfs/memfd...)
        return False
    import ctypes  # lazy: only for the rare regular file on a size-less filesystem

    attr = ctypes.create_string_buffer(64)  # struct mq_attr: 4 longs + 4 reserved
    mq_getattr = ctypes.CDLL(None, use_errno=True).mq_getattr  # glibc >= 2.34: in libc
    return bool(mq_getattr(fd, attr) == 0)


def _probe(fd: int) -> socket.socket | None:
    """A borrowed socket object for ``fd`` (caller must ``detach()``), or None."""
    if not stat.S_ISSOCK(os.fstat(fd).st_mode):
        return None
    return socket.socket(fileno=fd)


def _check(sock: socket.socket, family: int, type: int, listening: bool | None) -> bool:
    if family and sock.family != family:
        return False
    if type and sock.type != type:
        return False
    if listening is not None:
        accepting = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
        if bool(accepting) != listening:
            return False
    return True


def _with_socket(obj: int | HasFileno, test: _Test) -> bool:
    if isinstance(obj, socket.socket):
        return test(obj)
    fd = _fileno(obj)
    sock = _probe(fd)
    if sock is None:
        return False
    try:
        return test(sock)
    finally:
        sock.detach()  # borrowed: never close the caller's descriptor


def is_socket(
    fd: int | HasFileno, *, family: int = 0, type: int = 0, listening: bool | None = None
) -> bool:
    """True if ``fd`` is a socket of this ``family``/``type`` (0 = any) and, unless
    ``listening`` is None, in the listening state or not. sd_is_socket(3).

    Accepts an int or an object with ``fileno()``. Raises ``OSError`` (EBADF) for a closed fd.
    """
    return _with_socket(fd, lambda s: _check(s, family, type, listening))


def is_socket_inet(
    fd: int | HasFileno,
    *,
    family: int = 0,
    type: int = 0,
    listening: bool | None = None,
    port: int = 0,
) -> bool:
    """True if ``fd`` is an AF_INET/AF_INET6 socket (``family`` narrows it to one) of this
    ``type``, listening state and bound ``port`` (0 = any). sd_is_socket_inet(3).

    Raises ``ValueError`` if ``family`` is neither 0, AF_INET nor AF_INET6.
    """
    if family not in (0, socket.AF_INET, socket.AF_INET6):
        raise ValueError(f"family must be 0, AF_INET or AF_INET6, got {family!r}")
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port!r} out of range 0..65535")

    def test(sock: socket.socket) -> bool:
        if sock.family not in (socket.AF_INET, socket.AF_INET6):
            return False
        if not _check(sock, family, type, listening):
            return False
        return not port or sock.getsockname()[1] == port

    return _with_socket(fd, test)


def is_socket_unix(
    fd: int | HasFileno,
    *,
    type: int = 0,
    listening: bool | None = None,
    path: str | bytes | None = None,
) -> bool:
    """True if ``fd`` is an AF_UNIX socket of this ``type`` and listening state, bound to
    ``path`` unless it is None. sd_is_socket_unix(3).

    ``path`` is a filesystem path, or an abstract name as ``"@name"`` or ``b"\\0name"``;
    it is compared byte for byte with the bound address, as libsystemd does.
    """
    want: str | bytes | None = path
    if isinstance(want, str) and want.startswith("@"):
        want = b"\0" + os.fsencode(want[1:])
    elif isinstance(want, bytes) and not want.startswith(b"\0"):
        want = os.fsdecode(want)

    def test(sock: socket.socket) -> bool:
        if sock.family != socket.AF_UNIX or not _check(sock, 0, type, listening):
            return False
        return want is None or sock.getsockname() == want

    return _with_socket(fd, test)


def is_fifo(fd: int | HasFileno, *, path: str | None = None) -> bool:
    """True if ``fd`` is a FIFO (or a pipe) and, if ``path`` is given, the FIFO at that path
    (same device and inode). sd_is_fifo(3). A missing ``path`` gives False.
    """
    st = os.fstat(_fileno(fd))
    if not stat.S_ISFIFO(st.st_mode):
        return False
    if path is None:
        return True
    try:
        other = os.stat(path)
    except FileNotFoundError:
        return False
    return (st.st_dev, st.st_ino) == (other.st_dev, other.st_ino)
