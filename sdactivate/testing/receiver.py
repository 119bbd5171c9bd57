"""The manager side of ``NOTIFY_SOCKET``: :class:`NotifyReceiver`, with PID1's rules.

Reads datagrams with credentials and fds, applies systemd 252's acceptance rules (manager.c
``manager_dispatch_notify_fd()``, service.c ``service_notify_message()``; sd_notify(3)),
records what it accepts and drops, and feeds ``FDSTORE=1`` fds to the fd-store emulation
(:mod:`sdactivate.testing._store`). The checks themselves are pure
(:func:`~sdactivate.testing.check_datagram`).
"""

from __future__ import annotations

import array
import contextlib
import os
import select
import socket
import struct
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Literal

from .._cint import parse_pid
from ..errors import NotifyValueError
from ._messages import NOTIFY_BUFFER_MAX, NOTIFY_FD_MAX, Dropped, Message, check_datagram
from ._store import FdStore, StoredFd, close_fds

__all__ = ["NotifyAccess", "NotifyReceiver"]

_NOTIFY_RCVBUF_SIZE = 8 * 1024 * 1024  # manager.c
_SO_RCVBUFFORCE = 33  # socket(7); not exported by Python's socket module
_UCRED = struct.Struct("iII")  # struct ucred: pid, uid, gid (unix(7) SCM_CREDENTIALS)
_HUP_ERR = select.POLLHUP | select.POLLERR
_SYNC_PREFIX = b"\0sdactivate-receiver-sync "  # PID1 drops any NUL: no real message

NotifyAccess = Literal["all", "main", "none"]


def _grow_rcvbuf(sock: socket.socket) -> None:
    """PID1 raises its notify socket's receive buffer to 8 MiB (manager.c
    ``NOTIFY_RCVBUF_SIZE``); ``SO_RCVBUFFORCE`` needs CAP_NET_ADMIN, else best effort."""
    for option in (_SO_RCVBUFFORCE, socket.SO_RCVBUF):
        try:
            sock.setsockopt(socket.SOL_SOCKET, option, _NOTIFY_RCVBUF_SIZE)
            return
        except PermissionError:
            continue


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
        # os.urandom(8).hex() is secrets.token_hex(8) without importing secrets (~5 ms)
        self.address = path if path is not None else f"@sdactivate-test/{os.urandom(8).hex()}"
        self.fdstore_max = fdstore_max
        self.notify_access = notify_access
        self.main_pid: int | None = None
        self.messages: list[Message] = []
        self.dropped: list[Dropped] = []
        self.barriers = 0
        self._store = FdStore()
        self._syncs: set[bytes] = set()  # sync() markers processed, not yet collected
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
            watched = self._store.pollable()
            for fd in watched:
                poller.register(fd, 0)  # like PID1's epoll: only HUP/ERR (service.c)
            ms = None if timeout is None else max(0, int(timeout * 1000))
            events = poller.poll(ms)
            hung = [watched[fd] for fd, ev in events if fd in watched and ev & _HUP_ERR]
            gone = [watched[fd] for fd, ev in events if fd in watched and ev & select.POLLNVAL]
            if hung or gone:  # gone: closed behind our back; drop it, never poll it again
                with self._cond:
                    self._store.discard(hung + gone)
                    self._cond.notify_all()
                close_fds(e.fd for e in hung)
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
            close_fds(fds)  # whatever the store did not take
        return True

    def _process(
        self, data: bytes, flags: int, pid: int | None, uid: int, gid: int, fds: list[int]
    ) -> None:
        from ..notify import parse_message

        if data.startswith(_SYNC_PREFIX) and pid == os.getpid():  # our own sync() marker
            with self._cond:
                self._syncs.add(data)
                self._cond.notify_all()
            return
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
            self._store.apply(message, fds, limit=self.fdstore_max)
            new_main = parse_pid(message.get("MAINPID") or "")  # as service.c reads it
            if new_main is not None:
                self.main_pid = new_main
            self.messages.append(message)
            self._cond.notify_all()

    def _access_denied(self, pid: int | None) -> str | None:
        """systemd.service(5) ``NotifyAccess=`` (checked after the barrier, as manager.c does)."""
        if self.notify_access == "none":
            return "NotifyAccess=none"
        if self.notify_access == "main" and pid != self.main_pid:
            return f"NotifyAccess=main and pid {pid} is not the main pid {self.main_pid}"
        return None

    # --- inspection -----------------------------------------------------------------------
    @property
    def store(self) -> list[StoredFd]:
        """A snapshot of the fd store, newest first (the order PID1 252 passes them)."""
        with self._cond:
            return self._store.entries()

    def stored_by_name(self) -> dict[str, list[int]]:
        """Store fds grouped by name (the receiver still owns them)."""
        out: dict[str, list[int]] = {}
        for entry in self.store:
            out.setdefault(entry.name, []).append(entry.fd)
        return out

    def _dup_store(self) -> tuple[list[int], list[str]]:
        """Duplicates of the stored fds and their names, taken atomically (for launch)."""
        with self._cond:
            return self._store.dup()

    def flush_store(self) -> None:
        """Close every stored fd: what ``systemctl stop`` then ``start`` does (v252; no
        ``FileDescriptorStorePreserve=`` before v254)."""
        with self._cond:
            gone = self._store.take_all()
        close_fds(e.fd for e in gone)

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

    def sync(self, timeout: float = 5.0) -> None:
        """Wait until every datagram queued before this call has been processed.

        One socket's datagrams are received in the order they were queued, so a marker sent
        now is behind whatever a child sent before it answered on another channel (a control
        socket, a pipe, its exit): after ``sync()``, ``messages`` holds them all. The marker
        is neither recorded nor counted; ``TimeoutError`` if it is not processed in time.
        """
        from .._notify_wire import notify_address

        if self._closed:
            raise RuntimeError("sync() on a closed NotifyReceiver")
        marker = _SYNC_PREFIX + os.urandom(8).hex().encode()
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(marker, notify_address(self.address))

        def seen() -> bool:
            if marker in self._syncs:
                self._syncs.discard(marker)
                return True
            return False

        self.wait_until(seen, timeout=timeout, what="sync marker")

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
        """Stop the thread, record the datagrams still queued, close the socket and every
        stored fd (idempotent)."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5.0)
        with self._lock:
            with contextlib.suppress(OSError):  # record what was sent before close()
                while self._receive_one():
                    pass
            self._sock.close()
            close_fds((self._wake_r, self._wake_w))
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
