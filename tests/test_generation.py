"""sdactivate._generation: the notify inbox both handovers use (receive rule, sender first,
bounded reads, rate-limited logs), the start-up grace and the exit-status words."""

from __future__ import annotations

import logging
import os
import socket
import struct
from collections.abc import Iterator
from typing import Any

import pytest

from sdactivate._generation import (
    READS_PER_TURN,
    LogLimiter,
    NotifyInbox,
    describe_status,
    startup_grace,
)

log = logging.getLogger("sdactivate.test_generation")


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture()
def clock() -> Clock:
    return Clock()


@pytest.fixture()
def inbox(clock: Clock) -> Iterator[NotifyInbox]:
    box = NotifyInbox("test", os.getpid(), log=log, rcvbuf=1 << 20, clock=clock)
    try:
        yield box
    finally:
        box.close()


@pytest.fixture()
def sender(inbox: NotifyInbox) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.connect("\0" + inbox.address[1:])
    try:
        yield sock
    finally:
        sock.close()


def ours(pid: int) -> int | None:
    return pid if pid == os.getpid() else None


def nobody(pid: int) -> int | None:
    return None


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == log.name]


def test_inbox_address_is_private_and_random() -> None:
    """@sdactivate-<kind>/<pid>/<16 hex digits>, a new random part for each inbox."""
    a = NotifyInbox("upgrade", 42, log=log)
    b = NotifyInbox("upgrade", 42, log=log)
    try:
        prefix, _, token = a.address.rpartition("/")
        assert prefix == "@sdactivate-upgrade/42" and len(token) == 16
        int(token, 16)
        assert a.address != b.address
    finally:
        a.close()
        b.close()


def test_messages_parse_and_attribute(inbox: NotifyInbox, sender: socket.socket) -> None:
    """A datagram from an accepted sender comes out as (sender, fields)."""
    sender.send(b"READY=1\nSTATUS=up")
    assert list(inbox.messages(ours)) == [(os.getpid(), [("READY", "1"), ("STATUS", "up")])]
    assert list(inbox.messages(ours)) == []


def test_truncated_datagram_is_dropped_whole(
    inbox: NotifyInbox, sender: socket.socket, caplog: pytest.LogCaptureFixture
) -> None:
    """Over 4096 bytes (MSG_TRUNC): dropped, never parsed in part, even when its head is a
    valid READY=1; the next datagram is read normally."""
    caplog.set_level(logging.WARNING, logger=log.name)
    sender.send(b"READY=1\nX=" + b"y" * 5000)
    sender.send(b"STATUS=next")
    assert list(inbox.messages(ours)) == [(os.getpid(), [("STATUS", "next")])]
    assert warnings(caplog) == [f"notify message from pid {os.getpid()} truncated; ignored"]


def test_sender_is_checked_before_anything_else(
    inbox: NotifyInbox, sender: socket.socket, caplog: pytest.LogCaptureFixture
) -> None:
    """A refused sender's datagram is dropped as such: neither its truncation nor its
    content is looked at, and its pid is asked about once per call."""
    caplog.set_level(logging.WARNING, logger=log.name)
    asked: list[int] = []

    def refuse(pid: int) -> int | None:
        asked.append(pid)
        return None

    sender.send(b"READY=1\nX=" + b"y" * 5000)
    sender.send(b"\0not a notify message")
    assert list(inbox.messages(refuse)) == []
    assert asked == [os.getpid()]
    assert warnings(caplog) == [f"notify message from pid {os.getpid()} ignored: not a generation"]


class Flood:
    """Stands in for the inbox's socket: a queue of 10 turns' worth of datagrams from
    ``pid`` (``recvmsg`` calls counted), so the bound does not depend on the host's queue
    length (net.unix.max_dgram_qlen)."""

    def __init__(self, pid: int, data: bytes = b"WATCHDOG=1") -> None:
        self.creds = struct.pack("iII", pid, 65534, 65534)
        self.data = data
        self.calls = 0

    def recvmsg(self, bufsize: int, ancbufsize: int) -> tuple[bytes, list[Any], int, None]:
        if self.calls == 10 * READS_PER_TURN:
            raise BlockingIOError
        self.calls += 1
        return self.data, [(socket.SOL_SOCKET, socket.SCM_CREDENTIALS, self.creds)], 0, None

    def close(self) -> None:
        pass


def test_reads_per_call_are_bounded(inbox: NotifyInbox) -> None:
    """Under a flood each call reads READS_PER_TURN datagrams, accepted or refused, then
    returns to the caller's loop."""
    flood = Flood(os.getpid())
    inbox.sock.close()
    inbox.sock = flood  # type: ignore[assignment]
    assert list(inbox.messages(nobody)) == []  # refused ones count against the bound
    assert flood.calls == READS_PER_TURN
    assert len(list(inbox.messages(ours))) == READS_PER_TURN
    assert flood.calls == 2 * READS_PER_TURN


def test_drop_logs_are_rate_limited(
    inbox: NotifyInbox, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    """The first dropped datagram is logged; the rest of the interval is one summary line
    with the count, written once the interval is over; then the next is logged again."""
    caplog.set_level(logging.WARNING, logger=log.name)
    flood = Flood(4242)
    inbox.sock.close()
    inbox.sock = flood  # type: ignore[assignment]
    list(inbox.messages(nobody))
    list(inbox.messages(nobody))
    first = "notify message from pid 4242 ignored: not a generation"
    assert warnings(caplog) == [first]
    assert inbox.limiter.deadline() == clock.now + 10.0
    clock.now += 9.9
    inbox.limiter.flush()
    assert len(warnings(caplog)) == 1
    clock.now += 0.1
    inbox.limiter.flush()
    summary = (
        f"{2 * READS_PER_TURN - 1} more notify messages like the last one (sender) dropped in 10 s"
    )
    assert warnings(caplog) == [first, summary]
    assert inbox.limiter.deadline() is None
    list(inbox.messages(nobody))
    assert warnings(caplog) == [first, summary, first]


def test_limiter_kinds_are_separate(clock: Clock, caplog: pytest.LogCaptureFixture) -> None:
    """Each kind of drop has its own window: a flood of one does not hide the other."""
    caplog.set_level(logging.WARNING, logger=log.name)
    limiter = LogLimiter(log, interval=5.0, clock=clock)
    for _ in range(3):
        limiter.warning("sender", "a")
        limiter.warning("truncated", "b")
    assert warnings(caplog) == ["a", "b"]
    clock.now += 5
    limiter.warning("sender", "a")
    assert warnings(caplog)[2:] == [
        "2 more notify messages like the last one (sender) dropped in 5 s",
        "2 more notify messages like the last one (truncated) dropped in 5 s",
        "a",
    ]


def test_fds_attached_to_any_datagram_are_closed(inbox: NotifyInbox, sender: socket.socket) -> None:
    """Attached fds are closed whoever sent them (that also answers BARRIER=1)."""
    r, w = os.pipe()
    try:
        socket.send_fds(sender, [b"BARRIER=1"], [w])
        os.close(w)
        assert list(inbox.messages(nobody)) == []
        assert os.read(r, 1) == b""  # every write end is closed: EOF
    finally:
        os.close(r)


@pytest.mark.parametrize(
    ("status", "words"),
    [(0, "exited with status 0"), (3, "exited with status 3"), (-9, "killed by SIGKILL")],
    ids=["zero", "three", "sigkill"],
)
def test_describe_status(status: int, words: str) -> None:
    """Both handovers word an exit status alike."""
    assert describe_status(status) == words


def test_startup_grace_is_at_most_half_the_ready_timeout() -> None:
    """The grace, capped at half of the ready timeout."""
    assert startup_grace(1.0, 60.0) == 1.0
    assert startup_grace(30.0, 20.0) == 10.0


def test_closing_writes_the_pending_summary(
    inbox: NotifyInbox, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    """An inbox closed in the middle of an interval (an upgrade attempt ends) still says
    how many it left out, and over how long."""
    caplog.set_level(logging.WARNING, logger=log.name)
    inbox.sock.close()
    inbox.sock = Flood(4242)  # type: ignore[assignment]
    list(inbox.messages(nobody))
    clock.now += 2.5
    inbox.close()
    assert warnings(caplog)[1:] == [
        f"{READS_PER_TURN - 1} more notify messages like the last one (sender) dropped in 2.5 s"
    ]
