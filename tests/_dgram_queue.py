"""Fill a unix datagram socket's receive queue for real, whatever the host's settings.

Linux refuses a unix datagram with EAGAIN for one of two reasons (net/unix/af_unix.c,
``unix_dgram_sendmsg``): the sender's own buffer is spent (a queued datagram stays charged to
the sender's ``SO_SNDBUF`` until it is read: about 278 small ones at the default
``net.core.wmem_default`` of 208 KiB), or the receiver's queue already holds more than
``net.unix.max_dgram_qlen`` datagrams (unix(7); the value in the receiver's network namespace
when the receiver socket was made). The kernel default is 10, but systemd's PID 1 raises it to
512 at boot (src/core/main.c ``bump_unix_max_dgram_qlen()``): more than one sender's buffer
holds, so a single sender stops short of a full queue. :func:`fill` sends from fresh sockets
until one cannot send even its first datagram: with nothing of its own queued, only a full
receiver queue refuses it.
"""

from __future__ import annotations

import socket

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
