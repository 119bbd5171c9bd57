"""Testing aids: a manager-side notify socket with PID1's rules, an fd-store emulator, a launcher.

Test socket activation, sd_notify, the watchdog and the fd store in CI without systemd::

    with NotifyReceiver(fdstore_max=8, thread=True) as rx:
        gen1 = launch([sys.executable, "app.py"], ["127.0.0.1:0"], names=["web"], notify=rx)
        rx.wait_for("READY", "1")
        gen1.terminate(); gen1.wait(5)
        gen2 = launch([sys.executable, "app.py"], gen1.sockets, names=["web"], notify=rx)

:class:`NotifyReceiver` enforces what systemd 252's manager enforces (manager.c
``manager_dispatch_notify_fd()``, service.c ``service_notify_message()``; sd_notify(3)):
credentials required (``SO_PASSCRED``), a datagram over 4096 bytes dropped whole, NUL bytes
refused (one trailing NUL tolerated), fds closed unless the message has ``FDSTORE=1`` and the
store has room, ``BARRIER=1`` alone with exactly one fd. Its fd store keeps stored fds by
``FDNAME=`` (default ``stored``), dedupes within the store, honours ``FDSTOREREMOVE=1`` and
drops pollable entries on POLLHUP/POLLERR unless ``FDPOLL=0``. :func:`launch` passes socket fds
first, then the stored fds (newest first, as PID1 252 keeps them), names kept: a restart.
:meth:`NotifyReceiver.flush_store` is ``systemctl stop`` + ``start`` (the store is flushed).
"""

from __future__ import annotations

import array
import contextlib
import os
import secrets
import select
import signal
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Literal

from . import _env
from ._spawn import spawn
from .activation import valid_fd_name
from .addresses import DEFAULT_BACKLOG, ListenAddress, parse_address
from .errors import NotifyValueError
from .fdstore import same_fd

__all__ = [
    "NOTIFY_BUFFER_MAX",
    "Dropped",
    "Message",
    "NotifyReceiver",
    "Process",
    "StoredFd",
    "check_datagram",
    "launch",
]

NOTIFY_BUFFER_MAX = 4096  # constants.h NOTIFY_BUFFER_MAX = PIPE_BUF; longer datagrams dropped
NOTIFY_FD_MAX = 768  # constants.h: the manager's control buffer
_NOTIFY_RCVBUF_SIZE = 8 * 1024 * 1024  # manager.c
_SO_RCVBUFFORCE = 33  # socket(7); not exported by Python's socket module
_UCRED = struct.Struct("iII")  # struct ucred: pid, uid, gid (unix(7) SCM_CREDENTIALS)
_MANAGER_KEYS = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


NotifyAccess = Literal["all", "main", "none"]


@dataclass(frozen=True)
class Message:
    """An accepted notify datagram: its fields in order and the sender's credentials."""

    pid: int
    uid: int
    gid: int
    fields: tuple[tuple[str, str], ...]
    nfds: int = 0

    def get(self, key: str, default: str | None = None) -> str | None:
        """The first value for ``key`` (PID1 uses the first match too)."""
        for k, v in self.fields:
            if k == key:
                return v
        return default

    def __contains__(self, key: object) -> bool:
        return any(k == key for k, _ in self.fields)

    def has(self, key: str, value: str | None = None) -> bool:
        return any(k == key and (value is None or v == value) for k, v in self.fields)


@dataclass(frozen=True)
class Dropped:
    """A datagram the manager would ignore, and why."""

    reason: str
    pid: int | None
    data: bytes
    nfds: int


@dataclass(frozen=True)
class StoredFd:
    """An fd-store entry. The receiver owns ``fd`` until it is removed or flushed."""

    name: str
    fd: int
    poll: bool
    pid: int


def check_datagram(data: bytes, flags: int, pid: int | None) -> str | None:
    """PID1's transport checks, as a pure function: a drop reason, or None to accept.

    ``flags`` are recvmsg's msg_flags; ``pid`` is from SCM_CREDENTIALS (None: none came).
    """
    if flags & socket.MSG_TRUNC:
        return f"longer than {NOTIFY_BUFFER_MAX} bytes"  # v252 manager.c: dropped whole
    if flags & socket.MSG_CTRUNC:
        return "control data truncated"
    if pid is None or pid <= 0:
        return "no credentials"  # "Received notify message without valid credentials"
    body = data[:-1] if data.endswith(b"\0") else data  # one trailing NUL is tolerated
    if b"\0" in body:
        return "embedded NUL byte"
    return None


def _grow_rcvbuf(sock: socket.socket) -> None:
    """PID1 raises its notify socket's receive buffer to 8 MiB (manager.c
    ``NOTIFY_RCVBUF_SIZE``); ``SO_RCVBUFFORCE`` needs CAP_NET_ADMIN, else best effort."""
    for option in (_SO_RCVBUFFORCE, socket.SO_RCVBUF):
        try:
            sock.setsockopt(socket.SOL_SOCKET, option, _NOTIFY_RCVBUF_SIZE)
            return
        except PermissionError:
            continue


def _close_all(fds: Iterable[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


class NotifyReceiver:
    """A manager-side ``NOTIFY_SOCKET`` (AF_UNIX datagram, ``SO_PASSCRED``) with PID1's rules.

    ``path=None`` binds a random abstract name (nothing on the filesystem); otherwise a
    socket file at ``path``. ``fdstore_max`` is ``FileDescriptorStoreMax=`` (default 0, as in
    systemd: stored fds are closed). ``thread=True`` processes datagrams in a background
    thread; otherwise :meth:`pump` (or :meth:`wait_for`, which pumps) does it.

    ``notify_access`` is ``NotifyAccess=``: ``all`` (default), ``main`` (only ``main_pid``,
    which :func:`launch` sets to its child and an accepted ``MAINPID=`` moves; PID1's check
    that the new pid is in the unit's cgroup is not emulated) or ``none``.

    ``messages`` are the accepted :class:`Message` objects in arrival order, ``dropped`` the
    rejected ones, ``barriers`` the number of barriers honoured, ``store`` the fd store.
    Give a child :attr:`environ` (or ``launch(..., notify=rx)``).
    """

    def __init__(
        self,
        *,
        path: str | None = None,
        fdstore_max: int = 0,
        notify_access: NotifyAccess = "all",
        thread: bool = False,
    ) -> None:
        if notify_access not in ("all", "main", "none"):
            raise ValueError(f"notify_access must be 'all', 'main' or 'none': {notify_access!r}")
        self.address = path if path is not None else f"@sdactivate-test/{secrets.token_hex(8)}"
        self.fdstore_max = fdstore_max
        self.notify_access = notify_access
        self.main_pid: int | None = None
        self.messages: list[Message] = []
        self.dropped: list[Dropped] = []
        self.barriers = 0
        self._store: list[StoredFd] = []  # newest first (service.c LIST_PREPEND)
        self._inodes: dict[int, tuple[int, int]] = {}  # stored fd -> (st_dev, st_ino)
        self._cond = threading.Condition()
        self._lock = threading.Lock()  # one pumper at a time
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
            _grow_rcvbuf(sock)
            if self.address.startswith("@"):
                sock.bind(b"\0" + self.address[1:].encode())
            else:
                sock.bind(self.address)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._closed = False
        self._thread: threading.Thread | None = None
        if thread:
            self.start()

    # --- what a child needs ------------------------------------------------------------
    @property
    def environ(self) -> dict[str, str]:
        """``{"NOTIFY_SOCKET": address}``: merge it into a child's environment."""
        return {"NOTIFY_SOCKET": self.address}

    # --- processing -----------------------------------------------------------------------
    def start(self) -> None:
        """Process datagrams in a daemon thread until :meth:`close`."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="sdactivate-notify-receiver", daemon=True
            )
            self._thread.start()

    def _run(self) -> None:
        while not self._closed:
            self.pump(timeout=None)

    def pump(self, timeout: float | None = 0.0) -> int:
        """Wait up to ``timeout`` seconds (None: until something happens) for datagrams, then
        process every queued one. Also drops POLLHUP/POLLERR store entries. Returns how many
        datagrams were processed."""
        with self._lock:
            if self._closed:
                return 0
            poller = select.poll()
            poller.register(self._sock, select.POLLIN)
            poller.register(self._wake_r, select.POLLIN)
            watched = {e.fd: e for e in self._store if e.poll}
            for fd in watched:
                poller.register(fd, 0)  # like PID1's epoll: only HUP/ERR (service.c)
            ms = None if timeout is None else max(0, int(timeout * 1000))
            events = poller.poll(ms)
            hung = [watched[fd] for fd, ev in events if fd in watched and ev & _HUP_ERR]
            gone = [watched[fd] for fd, ev in events if fd in watched and ev & select.POLLNVAL]
            if hung or gone:  # gone: closed behind our back; drop it, never poll it again
                with self._cond:
                    self._store = [e for e in self._store if e not in hung and e not in gone]
                    self._cond.notify_all()
                _close_all(e.fd for e in hung)
            count = 0
            while self._receive_one():
                count += 1
            with contextlib.suppress(BlockingIOError):
                os.read(self._wake_r, 512)
            return count

    def _receive_one(self) -> bool:
        ancsize = socket.CMSG_SPACE(NOTIFY_FD_MAX * 4) + socket.CMSG_SPACE(_UCRED.size)
        try:
            data, ancdata, flags, _ = self._sock.recvmsg(
                NOTIFY_BUFFER_MAX, ancsize, socket.MSG_CMSG_CLOEXEC
            )
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            if self._closed:
                return False
            raise
        fds: list[int] = []
        pid = uid = gid = None
        for level, kind, payload in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                arr = array.array("i")
                arr.frombytes(payload[: len(payload) - len(payload) % arr.itemsize])
                fds.extend(arr)
            elif level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                pid, uid, gid = _UCRED.unpack(payload[: _UCRED.size])
        try:
            self._process(data, flags, pid, uid or 0, gid or 0, fds)
        finally:
            _close_all(fds)  # whatever the store did not take
        return True

    def _process(
        self, data: bytes, flags: int, pid: int | None, uid: int, gid: int, fds: list[int]
    ) -> None:
        from .notify import parse_message

        reason = check_datagram(data, flags, pid)
        fields: list[tuple[str, str]] = []
        if reason is None:
            try:
                fields = parse_message(data.rstrip(b"\0"))
            except NotifyValueError as exc:
                reason = f"unparsable: {exc}"
        if reason is None and ("BARRIER", "1") in fields:
            # manager.c manager_process_barrier_fd(): the message is consumed either way and
            # its fd closed now, after every earlier datagram was processed.
            if len(fields) != 1:
                reason = "BARRIER=1 mixed with other assignments"
            elif len(fds) != 1:
                reason = f"BARRIER=1 with {len(fds)} fds, not 1"
            else:
                with self._cond:
                    self.barriers += 1
                    self._cond.notify_all()
                return
        if reason is None:
            reason = self._access_denied(pid)
        if reason is not None:
            with self._cond:
                self.dropped.append(Dropped(reason, pid, data, len(fds)))
                self._cond.notify_all()
            return
        assert pid is not None
        message = Message(pid, uid, gid, tuple(fields), len(fds))
        with self._cond:
            self._apply_store(message, fds)
            new_main = message.get("MAINPID") or ""
            if new_main.isdigit() and int(new_main) > 0:
                self.main_pid = int(new_main)
            self.messages.append(message)
            self._cond.notify_all()

    def _access_denied(self, pid: int | None) -> str | None:
        """systemd.service(5) ``NotifyAccess=`` (checked after the barrier, as manager.c does)."""
        if self.notify_access == "none":
            return "NotifyAccess=none"
        if self.notify_access == "main" and pid != self.main_pid:
            return f"NotifyAccess=main and pid {pid} is not the main pid {self.main_pid}"
        return None

    def _apply_store(self, message: Message, fds: list[int]) -> None:
        """service.c service_notify_message(): FDSTOREREMOVE=1 then FDSTORE=1 (caller locks)."""
        name = message.get("FDNAME")
        if name is not None and not valid_fd_name(name):
            name = None  # "invalid, ignoring": stored under the default name
        if message.has("FDSTOREREMOVE", "1") and name is not None:
            gone = [e for e in self._store if e.name == name]
            self._store = [e for e in self._store if e.name != name]
            _close_all(e.fd for e in gone)
        if not message.has("FDSTORE", "1"):
            return  # sd_notify(3): fds without FDSTORE=1 are closed on reception
        poll = not message.has("FDPOLL", "0")
        for fd in list(fds):
            if len(self._store) >= self.fdstore_max:
                break  # "Cannot store more fds than FileDescriptorStoreMax=" -> closed
            st = os.fstat(fd)
            inode = (st.st_dev, st.st_ino)
            if any(self._inodes.get(e.fd) == inode and same_fd(e.fd, fd) for e in self._store):
                continue  # same_fd(): deduped within the store only
            self._inodes[fd] = inode
            fds.remove(fd)
            self._store.insert(0, StoredFd(name or "stored", fd, poll, message.pid))

    # --- inspection -----------------------------------------------------------------------
    @property
    def store(self) -> list[StoredFd]:
        """A snapshot of the fd store, newest first (the order PID1 252 passes them)."""
        with self._cond:
            return list(self._store)

    def stored_by_name(self) -> dict[str, list[int]]:
        """Store fds grouped by name (the receiver still owns them)."""
        out: dict[str, list[int]] = {}
        for entry in self.store:
            out.setdefault(entry.name, []).append(entry.fd)
        return out

    def _dup_store(self) -> tuple[list[int], list[str]]:
        """Duplicates of the stored fds and their names, taken atomically (for launch)."""
        with self._cond:
            return [os.dup(e.fd) for e in self._store], [e.name for e in self._store]

    def flush_store(self) -> None:
        """Close every stored fd: what ``systemctl stop`` then ``start`` does (v252; no
        ``FileDescriptorStorePreserve=`` before v254)."""
        with self._cond:
            gone, self._store = self._store, []
        _close_all(e.fd for e in gone)

    def count(self, key: str, value: str | None = None, *, since: int = 0) -> int:
        """How many accepted messages from index ``since`` carry ``key`` (= ``value``)."""
        with self._cond:
            return sum(1 for m in self.messages[since:] if m.has(key, value))

    def wait_until(
        self, predicate: Callable[[], bool], *, timeout: float = 5.0, what: str = "condition"
    ) -> None:
        """Wait (pumping if there is no thread) until ``predicate()`` holds; ``TimeoutError``
        after ``timeout`` seconds. ``predicate`` runs with the receiver locked."""
        deadline = time.monotonic() + timeout
        while True:
            with self._cond:
                if predicate():
                    return
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(
                        f"{what} not seen within {timeout}s; got {len(self.messages)} messages"
                        f" ({self._summary()}), {len(self.dropped)} dropped"
                    )
                if self._thread is not None:
                    self._cond.wait(remaining)
                    continue
            self.pump(timeout=remaining)

    def _summary(self) -> str:
        return "; ".join(
            ", ".join(f"{k}={v}" for k, v in m.fields)[:80] for m in self.messages[-5:]
        )

    def wait_for(
        self, key: str, value: str | None = None, *, timeout: float = 5.0, since: int = 0
    ) -> Message:
        """The first accepted message from index ``since`` with ``key`` (= ``value``); waits
        up to ``timeout`` seconds, then raises ``TimeoutError``."""
        found: list[Message] = []

        def match() -> bool:
            found[:] = [m for m in self.messages[since:] if m.has(key, value)][:1]
            return bool(found)

        label = key if value is None else f"{key}={value}"
        self.wait_until(match, timeout=timeout, what=label)
        return found[0]

    # --- lifetime -------------------------------------------------------------------------
    def close(self) -> None:
        """Stop the thread, close the socket and every stored fd (idempotent)."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5.0)
        with self._lock:
            self._sock.close()
            _close_all((self._wake_r, self._wake_w))
        self.flush_store()
        if not self.address.startswith("@"):
            with contextlib.suppress(OSError):
                os.unlink(self.address)

    def __enter__(self) -> NotifyReceiver:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


_HUP_ERR = select.POLLHUP | select.POLLERR


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
            _close_all(stored_fds)
    except BaseException:
        for sock in owned:
            sock.close()
        raise
    if notify is not None:
        notify.main_pid = child.pid  # the ExecStart= process is the main process
    return Process(list(argv), child.pid, child.pidfd, held, fd_names, _owned=owned)
