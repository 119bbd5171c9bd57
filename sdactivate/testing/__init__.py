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

Re-exports only: the receiver (``receiver.py``), its pure checks (``_messages.py``), the
fd-store emulation (``_store.py``) and the launcher (``launcher.py``).
"""

from __future__ import annotations

from ._messages import NOTIFY_BUFFER_MAX, Dropped, Message, check_datagram
from ._messages import NOTIFY_FD_MAX as NOTIFY_FD_MAX  # importable as before; not in __all__
from ._store import StoredFd
from .launcher import Process, launch
from .receiver import NotifyAccess as NotifyAccess  # importable as before; not in __all__
from .receiver import NotifyReceiver

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
