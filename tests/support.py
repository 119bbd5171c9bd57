"""What the tests (hermetic, integration) and the bench share: where the checkout is, child
environments, the tests' HTTP service, the one deadline poll, free ports, a raw notify
receiver and a way to fill its queue.

The checkout root is the one import root of the project: `sdactivate`, `bench`, `examples`,
`integration` and `tests` are packages in it. pytest puts it on sys.path (pyproject
`[tool.pytest.ini_options] pythonpath`); a child interpreter gets it as PYTHONPATH
(:func:`checkout_env`), whatever site-packages that interpreter has.
"""

from __future__ import annotations

import array
import os
import select
import socket
import struct
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

CHECKOUT = str(Path(__file__).resolve().parent.parent)
# The tests' tiny HTTP service (a file: it also runs inside the sandbox, on the release's
# python3); its options and faults are in its docstring.
CHILD_APP = str(Path(__file__).resolve().parent / "child_app.py")


def checkout_env(env: Mapping[str, str] | None = None, **extra: str) -> dict[str, str]:
    """`env` (default: this process's environment) plus `extra`, with the checkout as
    PYTHONPATH: a child interpreter imports this checkout's packages (not an installed copy)."""
    return {**(os.environ if env is None else env), **extra, "PYTHONPATH": CHECKOUT}


def wait_until(
    predicate: Callable[[], T],
    *,
    timeout: float,
    interval: float = 0.02,
    what: str | Callable[[], str] = "",
) -> T:
    """Poll ``predicate`` every ``interval`` s until it returns something truthy, and return
    that; ``TimeoutError`` after ``timeout`` s, naming ``what`` (a text, or a callable for the
    state at that moment). The one poll of the tests: every wait has a deadline, and a wait
    for a notify message or a process exit uses its own event instead (NotifyReceiver,
    pidfd)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            label = what() if callable(what) else what
            raise TimeoutError(f"timed out after {timeout} s waiting for {label or predicate!r}")
        time.sleep(interval)


def free_port(host: str = "127.0.0.1", *, kind: int = socket.SOCK_STREAM) -> int:
    """A port on ``host`` that nothing is bound to right now (the kernel picks it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, kind) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def free_dual_stack_port() -> int:
    """A TCP port free on every address right now, IPv4 and IPv6 (for an app or a socket
    unit that binds ``[::]:PORT`` dual-stack, as the README's do)."""
    with socket.socket(socket.AF_INET6) as probe:
        probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        probe.bind(("::", 0))
        port: int = probe.getsockname()[1]
        return port


class DatagramReceiver:
    """A raw manager-side notify socket (AF_UNIX datagram, ``SO_PASSCRED``) for tests of the
    wire protocol: each datagram as bytes, its fds and its sender's pid, nothing judged
    (:class:`sdactivate.testing.NotifyReceiver` applies PID1's rules). ``address``: a path,
    or an abstract name as bytes starting with NUL."""

    def __init__(self, address: str | bytes | os.PathLike[str]) -> None:
        bound = address if isinstance(address, bytes) else os.fspath(address)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(bound)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        name = bound.decode() if isinstance(bound, bytes) else bound
        self.env = {"NOTIFY_SOCKET": "@" + name[1:] if name.startswith("\0") else name}

    def recv(self, timeout: float = 10.0) -> tuple[bytes, list[int], int | None]:
        """The next datagram, the fds it carried and the sender's pid (SCM_CREDENTIALS);
        AssertionError if none comes within ``timeout`` s, or if it was truncated."""
        ready, _, _ = select.select([self.sock], [], [], timeout)
        assert ready, f"nothing received within {timeout}s"
        fds = array.array("i")
        # SCM_MAX_FD (253) fds and a struct ucred: the most one datagram can carry
        space = socket.CMSG_SPACE(253 * fds.itemsize) + socket.CMSG_SPACE(12)
        data, ancdata, flags, _ = self.sock.recvmsg(8192, space)
        assert not flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC)
        pid = None
        for level, kind, payload in ancdata:
            assert level == socket.SOL_SOCKET
            if kind == socket.SCM_RIGHTS:
                fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
            elif kind == socket.SCM_CREDENTIALS:
                pid = struct.unpack("iII", payload[:12])[0]
        return data, list(fds), pid

    def empty(self) -> bool:
        """Whether nothing is queued right now."""
        ready, _, _ = select.select([self.sock], [], [], 0)
        return not ready

    def close(self) -> None:
        self.sock.close()


# Filling a unix datagram socket's receive queue for real, whatever the host's settings.
#
# Linux refuses a unix datagram with EAGAIN for one of two reasons (net/unix/af_unix.c,
# ``unix_dgram_sendmsg``): the sender's own buffer is spent (a queued datagram stays charged
# to the sender's ``SO_SNDBUF`` until it is read: about 278 small ones at the default
# ``net.core.wmem_default`` of 208 KiB), or the receiver's queue already holds more than
# ``net.unix.max_dgram_qlen`` datagrams (unix(7); the value in the receiver's network
# namespace when the receiver socket was made). The kernel default is 10, but systemd's PID 1
# raises it to 512 at boot (src/core/main.c ``bump_unix_max_dgram_qlen()``): more than one
# sender's buffer holds, so a single sender stops short of a full queue. :func:`fill` sends
# from fresh sockets until one cannot send even its first datagram: with nothing of its own
# queued, only a full receiver queue refuses it.

FILLER = b"X_FILL=1"


def fill(address: str | bytes, *, limit: int = 100_000) -> int:
    """Queue :data:`FILLER` datagrams at ``address`` until its queue is full; how many it took.

    Raises AssertionError if more than ``limit`` fit (a ``max_dgram_qlen`` that large is not a
    host this is meant for, and the loop must end).
    """
    queued = 0
    while True:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK) as sender:
            sent = 0
            try:
                while queued + sent <= limit:
                    sender.sendto(FILLER, address)
                    sent += 1
            except BlockingIOError:
                pass
            else:
                raise AssertionError(f"{address!r} still took datagrams after {limit}")
        # Closing the sender leaves its datagrams queued (they hold the socket until read).
        if sent == 0:
            return queued
        queued += sent


# The squatter of issue 16: binds the control names the supervisor used before
# (`\0sdactivate-run/<pid-ns>/<pid>`, abstract, so no permission applies) for the next
# argv[1] pids; prints the first pid and how many it holds, then keeps them until stdin closes.
# Run as another user (setpriv) against a supervisor started after it.
SQUAT = r"""
import os, socket, sys
ns = os.stat("/proc/self/ns/pid").st_ino
first = int(open("/proc/sys/kernel/ns_last_pid").read())
held = []
for pid in range(first + 1, first + int(sys.argv[1])):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.bind(b"\0sdactivate-run/%d/%d" % (ns, pid))
        s.listen(1)
        held.append(s)
    except OSError:
        s.close()
print(first, len(held), flush=True)
sys.stdin.read()
"""
