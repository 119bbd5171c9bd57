"""sdactivate.notify: encoding, the manager-side parse, and delivery to a receiver socket."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sdactivate import notify
from sdactivate.errors import NotifyError, NotifyValueError
from tests.support import FILLER, checkout_env, fill
from tests.support import DatagramReceiver as Receiver


@pytest.fixture
def rx(tmp_path: Path) -> Iterator[Receiver]:
    receiver = Receiver(tmp_path / "notify")
    yield receiver
    receiver.close()


# --- encode -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "data"),
    [
        ({"READY": "1"}, b"READY=1"),
        ({"READY": 1, "STATUS": "caf\u00e9 \u2615"}, "READY=1\nSTATUS=caf\u00e9 \u2615".encode()),
        ([("FDNAME", "a"), ("FDNAME", "b")], b"FDNAME=a\nFDNAME=b"),
        ({"X_APP_1": ""}, b"X_APP_1="),
        ({"STATUS": "=="}, b"STATUS==="),
    ],
    ids=["ready", "utf8", "repeated", "empty-value", "equals-in-value"],
)
def test_encode(fields: Any, data: bytes) -> None:
    """Fields become KEY=VALUE lines joined by newlines, UTF-8."""
    assert notify.encode(fields) == data


BAD_FIELDS = [
    ({"STATUS": "a\nREADY=1"}, "newline"),
    ({"STATUS": "a\rREADY=1"}, "carriage return"),
    ({"STATUS": "a\0b"}, "NUL"),
    ({"status": "x"}, "not [A-Z0-9_]+"),
    ({"READY=1\nX": "1"}, "not [A-Z0-9_]+"),
    ({"": "1"}, "not [A-Z0-9_]+"),
    ({"READY": True}, "str or int"),
    ({"READY": 1.0}, "str or int"),
    ({"READY": b"1"}, "str or int"),
    ({"STATUS": "\udcff"}, "UTF-8"),
    ({}, "no notify fields"),
    ({"STATUS": "x" * 4090}, "exceeds 4096"),
]


@pytest.mark.parametrize(("fields", "message"), BAD_FIELDS, ids=[m for _, m in BAD_FIELDS])
def test_bad_fields_raise_and_send_nothing(fields: Any, message: str, rx: Receiver) -> None:
    """Injection, bad keys, bad types, oversize: NotifyValueError, nothing reaches the socket."""
    with pytest.raises(NotifyValueError) as info:
        notify.send(fields, environ=rx.env)
    assert message in str(info.value)
    assert rx.empty()


def test_exactly_4096_bytes_is_allowed(rx: Receiver) -> None:
    """The limit is inclusive: PID1 reads 4096 bytes and drops only longer datagrams."""
    fields = {"STATUS": "x" * (4096 - len("STATUS="))}
    assert notify.send(fields, environ=rx.env)
    assert len(rx.recv()[0]) == 4096
    with pytest.raises(NotifyValueError):
        notify.encode({"STATUS": "x" * (4097 - len("STATUS="))})


def test_fields_must_be_a_mapping_or_pairs() -> None:
    """A bare string is a TypeError, not 22 one-letter fields."""
    with pytest.raises(TypeError):
        notify.encode("READY=1")  # type: ignore[arg-type]


def test_too_many_fds_refused_before_sending(rx: Receiver) -> None:
    """More than 253 fds (SCM_MAX_FD) is refused up front, as libsystemd's -E2BIG."""
    with pytest.raises(NotifyValueError, match="254 fds"):
        notify.send({"FDSTORE": 1}, fds=[0] * 254, environ=rx.env)
    assert rx.empty()


# --- parse_message ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "pairs"),
    [
        (b"READY=1", [("READY", "1")]),
        (b"READY=1\n", [("READY", "1")]),
        (b"READY=1\0", [("READY", "1")]),
        (b"READY=1\r\nSTATUS=a=b\n\n", [("READY", "1"), ("STATUS", "a=b")]),
        (b"JUNK\nWATCHDOG=1", [("WATCHDOG", "1")]),
        (b"X_A=\xff", [("X_A", "\udcff")]),
        (b"", []),
    ],
    ids=["one", "trailing-nl", "trailing-nul", "crlf-empty-lines", "no-equals", "x-bytes", "empty"],
)
def test_parse_message(data: bytes, pairs: list[tuple[str, str]]) -> None:
    """The manager splits on \\n and \\r, skips empty and '='-less lines, allows one NUL."""
    assert notify.parse_message(data) == pairs


@pytest.mark.parametrize(
    "data",
    [b"READY=1\0STATUS=x", b"\0\0", b"STATUS=\xff", b"X=" + b"y" * 4095],
    ids=["inner-nul", "two-nuls", "status-not-utf8", "4097-bytes"],
)
def test_parse_message_refuses(data: bytes) -> None:
    """Messages PID1 would ignore raise NotifyValueError."""
    with pytest.raises(NotifyValueError):
        notify.parse_message(data)


_key = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_", min_size=1, max_size=12)
_value = st.one_of(
    st.text(
        st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\r\0"), max_size=40
    ),
    st.integers(min_value=-(2**63), max_value=2**64),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_key, _value), min_size=1, max_size=8))
def test_encode_parse_round_trip(fields: list[tuple[str, str | int]]) -> None:
    """What encode() accepts, the manager reads back as the same pairs."""
    data = notify.encode(fields)
    assert notify.parse_message(data) == [(k, str(v)) for k, v in fields]


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(max_size=6), st.text(max_size=12), max_size=4))
def test_encode_never_lets_a_line_through(fields: dict[str, str]) -> None:
    """Arbitrary text: either refused, or every field parses back alone (no injection)."""
    try:
        data = notify.encode(fields)
    except NotifyValueError:
        return
    assert notify.parse_message(data) == list(fields.items())


# --- delivery -----------------------------------------------------------------------------


def test_unset_returns_false_and_does_nothing() -> None:
    """No NOTIFY_SOCKET: every call returns False."""
    env: dict[str, str] = {}
    assert notify.ready(environ=env) is False
    assert notify.reloading(environ=env) is False
    assert notify.stopping(environ=env) is False
    assert notify.status("x", environ=env) is False
    assert notify.watchdog(environ=env) is False
    assert notify.watchdog_trigger(environ=env) is False
    assert notify.extend_timeout(1, environ=env) is False
    assert notify.mainpid(1, environ=env) is False
    assert notify.errno(5, environ=env) is False
    assert notify.barrier(environ=env) is False
    assert notify.send({"X_A": 1}, environ=env) is False


def test_helpers_send_the_documented_fields(rx: Receiver) -> None:
    """Each helper sends its sd_notify(3) assignment; credentials carry our pid."""
    calls = [
        (lambda: notify.ready(status="up", environ=rx.env), b"READY=1\nSTATUS=up"),
        (lambda: notify.stopping(environ=rx.env), b"STOPPING=1"),
        (lambda: notify.status("half", environ=rx.env), b"STATUS=half"),
        (lambda: notify.watchdog(environ=rx.env), b"WATCHDOG=1"),
        (lambda: notify.watchdog_trigger(environ=rx.env), b"WATCHDOG=trigger"),
        (lambda: notify.extend_timeout(2.5, environ=rx.env), b"EXTEND_TIMEOUT_USEC=2500000"),
        (lambda: notify.mainpid(1234, environ=rx.env), b"MAINPID=1234"),
        (lambda: notify.errno(5, environ=rx.env), b"ERRNO=5"),
    ]
    for call, expected in calls:
        assert call() is True
        data, fds, pid = rx.recv()
        assert (data, fds, pid) == (expected, [], os.getpid())


def test_reloading_carries_monotonic_usec(rx: Receiver) -> None:
    """RELOADING=1 always comes with MONOTONIC_USEC= read from CLOCK_MONOTONIC."""
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert notify.reloading(environ=rx.env)
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    pairs = dict(notify.parse_message(rx.recv()[0]))
    assert pairs["RELOADING"] == "1"
    assert before <= int(pairs["MONOTONIC_USEC"]) <= after


@pytest.mark.parametrize(
    ("seconds", "usec"),
    [(1e10, 10**16), (notify.MAX_EXTEND_TIMEOUT, notify.MAX_EXTEND_TIMEOUT * 10**6), (1e-9, 1)],
    ids=["1e10", "max", "tiny"],
)
def test_extend_timeout_sends_what_systemd_parses(seconds: float, usec: int, rx: Receiver) -> None:
    """The usec sent fits systemd's usec_t below USEC_INFINITY (2^64-1), which it ignores."""
    assert notify.extend_timeout(seconds, environ=rx.env) is True
    data, _, _ = rx.recv()
    assert data == b"EXTEND_TIMEOUT_USEC=%d" % usec
    assert 0 < usec < 2**64 - 1


@pytest.mark.parametrize(
    ("call", "arg"),
    [
        (notify.extend_timeout, 0),
        (notify.extend_timeout, -1),
        (notify.extend_timeout, float("inf")),
        (notify.extend_timeout, float("nan")),
        (notify.extend_timeout, 1e300),
        (notify.extend_timeout, notify.MAX_EXTEND_TIMEOUT + 1),
        (notify.mainpid, 0),
        (notify.mainpid, True),
        (notify.errno, -1),
    ],
    ids=[
        "timeout-0",
        "timeout-neg",
        "timeout-inf",
        "timeout-nan",
        "timeout-1e300",
        "timeout-past-u64",
        "pid-0",
        "pid-bool",
        "errno",
    ],
)
def test_helper_argument_checks(call: Any, arg: Any, rx: Receiver) -> None:
    """Nonsense arguments raise NotifyValueError and send nothing."""
    with pytest.raises(NotifyValueError):
        call(arg, environ=rx.env)
    assert rx.empty()


def test_abstract_address(tmp_path: Path) -> None:
    """NOTIFY_SOCKET=@name reaches the abstract socket 'name'."""
    name = f"sdactivate-test-{os.getpid()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(b"\0" + name.encode())
    try:
        assert notify.ready(environ={"NOTIFY_SOCKET": "@" + name})
        assert sock.recv(100) == b"READY=1"
    finally:
        sock.close()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("vsock:2:1234", "AF_VSOCK"),
        ("vsock-stream:2:1", "AF_VSOCK"),
        ("relative/path", "neither an absolute path nor @abstract"),
        ("", "neither"),
        ("@", "neither"),
        ("/" + "x" * 108, "too long"),
    ],
    ids=["vsock", "vsock-stream", "relative", "empty", "bare-at", "too-long"],
)
def test_unsupported_addresses(value: str, message: str) -> None:
    """Addresses we cannot speak to raise NotifyError with the reason."""
    with pytest.raises(NotifyError, match=message):
        notify.ready(environ={"NOTIFY_SOCKET": value})


def test_unreachable_socket_is_a_chained_error(tmp_path: Path) -> None:
    """Set but nobody listening: NotifyError chained to the OSError."""
    with pytest.raises(NotifyError) as info:
        notify.ready(environ={"NOTIFY_SOCKET": str(tmp_path / "absent")})
    assert isinstance(info.value.__cause__, FileNotFoundError)


def test_fds_travel_with_scm_rights(rx: Receiver) -> None:
    """send(fds=) attaches the descriptors; the receiver gets the same open files."""
    r, w = os.pipe()
    try:
        assert notify.send([("FDSTORE", 1), ("FDNAME", "p")], fds=[r, w], environ=rx.env)
        data, fds, _ = rx.recv()
        assert data == b"FDSTORE=1\nFDNAME=p"
        assert [os.fstat(fd).st_ino for fd in fds] == [os.fstat(r).st_ino] * 2
        for fd in fds:
            os.close(fd)
    finally:
        os.close(r)
        os.close(w)


def test_full_queue_is_bounded(rx: Receiver) -> None:
    """A manager whose queue is full and never read: the send waits its timeout, then
    NotifyError (the queue is filled for real whatever the host's max_dgram_qlen)."""
    queued = fill(rx.env["NOTIFY_SOCKET"])
    start = time.monotonic()
    with pytest.raises(NotifyError, match=r"queue stayed full for 0\.2s"):
        notify.send({"READY": 1}, environ=rx.env, timeout=0.2)
    waited = time.monotonic() - start
    assert 0.2 <= waited < 5  # waited for room, and no longer than bounded
    assert queued > 0
    assert [rx.recv()[0] for _ in range(queued)] == [FILLER] * queued
    assert rx.empty()  # the refused READY=1 was never queued


def test_full_queue_send_completes_when_room_appears(rx: Receiver) -> None:
    """A send waiting on a full queue goes through once the manager reads."""
    queued = fill(rx.env["NOTIFY_SOCKET"])
    result: list[object] = []
    sender = threading.Thread(
        target=lambda: result.append(notify.send({"READY": 1}, environ=rx.env, timeout=10))
    )
    sender.start()
    got = [rx.recv()[0] for _ in range(queued + 1)]
    sender.join(10)
    assert result == [True]
    assert got == [FILLER] * queued + [b"READY=1"]


# The same scenario in a network namespace of its own, where the test sets
# net.unix.max_dgram_qlen: the kernel default (10) and systemd's (512, more than one sender's
# buffer holds). Needs root (CAP_SYS_ADMIN for unshare(2), CAP_NET_ADMIN in the namespace).
_NETNS_SCENARIO = r"""
import ctypes, json, os, socket, sys, time
qlen, path = int(sys.argv[1]), sys.argv[2]
libc = ctypes.CDLL(None, use_errno=True)
def check(ret):
    if ret != 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
try:
    check(libc.unshare(0x40000000 | 0x00020000))  # CLONE_NEWNET | CLONE_NEWNS
    # A read-only /proc/sys (a container's, or our integration sandbox's) becomes writable
    # in this mount namespace of our own; mount(2): MS_REC|MS_PRIVATE, then MS_REMOUNT|MS_BIND.
    check(libc.mount(None, b"/", None, 0x4000 | 0x40000, None))
    libc.mount(None, b"/proc/sys", None, 0x20 | 0x1000, None)  # not a mount: open() says
    with open("/proc/sys/net/unix/max_dgram_qlen", "w") as f:
        f.write(str(qlen))
except OSError as exc:
    print(json.dumps({"skip": f"no network namespace with max_dgram_qlen={qlen}: {exc}"}))
    raise SystemExit(0)
from tests.support import fill
from sdactivate import notify
from sdactivate.errors import NotifyError
rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
rx.bind(path)
queued = fill(path)
start = time.monotonic()
try:
    notify.send({"READY": 1}, environ={"NOTIFY_SOCKET": path}, timeout=0.2)
    error = None
except NotifyError as exc:
    error = str(exc)
print(json.dumps({"queued": queued, "error": error, "waited": time.monotonic() - start}))
"""


def _on_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


@pytest.mark.parametrize("qlen", [8, 512], ids=["qlen-8", "qlen-512"])
def test_full_queue_is_bounded_whatever_max_dgram_qlen(qlen: int, tmp_path: Path) -> None:
    """In a network namespace with max_dgram_qlen set, the queue is really full (qlen + 1
    datagrams: unix_recvq_full() is "more than") and the send gives up after its timeout."""
    if os.geteuid() != 0:
        pytest.skip("setting max_dgram_qlen in a network namespace of its own needs root")
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            _NETNS_SCENARIO,
            str(qlen),
            str(tmp_path / "notify"),
        ],
        env=checkout_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    if "skip" in report:
        if _on_ci():  # CI runs as root: there this must run, not skip
            pytest.fail(report["skip"])
        pytest.skip(report["skip"])
    assert report["queued"] == qlen + 1
    assert (
        report["error"]
        == f"NOTIFY_SOCKET={str(tmp_path / 'notify')!r}: the manager's queue stayed full for 0.2s"
    )
    assert 0.2 <= report["waited"] < 5


def test_no_descriptor_leak(rx: Receiver) -> None:
    """Sending holds one socket per process, not one per message; failures leak nothing."""
    notify.watchdog(environ=rx.env)
    rx.recv()
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(20):
        notify.watchdog(environ=rx.env)
        rx.recv()
        with pytest.raises(NotifyError):
            notify.watchdog(environ={"NOTIFY_SOCKET": "/nonexistent/sock"})
    assert len(os.listdir("/proc/self/fd")) == before


# --- barrier ------------------------------------------------------------------------------


def test_barrier_waits_for_the_manager(rx: Receiver) -> None:
    """BARRIER=1 goes alone with one fd (a pipe's write end); closing it releases us."""
    seen: list[tuple[bytes, int]] = []

    def manager() -> None:
        data, fds, _ = rx.recv()
        seen.append((data, len(fds)))
        for fd in fds:
            os.close(fd)

    thread = threading.Thread(target=manager)
    thread.start()
    assert notify.barrier(5, environ=rx.env) is True
    thread.join(5)
    assert seen == [(b"BARRIER=1", 1)]


def test_barrier_times_out(rx: Receiver) -> None:
    """A manager that keeps the fd open: NotifyError after the timeout."""
    with pytest.raises(NotifyError, match=r"no BARRIER=1 answer within 0\.1s"):
        notify.barrier(0.1, environ=rx.env)
    _, fds, _ = rx.recv()
    assert len(fds) == 1
    os.close(fds[0])


def test_barrier_rejects_a_bad_timeout(rx: Receiver) -> None:
    """A negative timeout is a NotifyValueError, nothing sent."""
    with pytest.raises(NotifyValueError):
        notify.barrier(-1, environ=rx.env)
    assert rx.empty()


# --- the reused sending socket ------------------------------------------------------------

SENDER_CHILD = """
import json, os, sys
from sdactivate import notify
env = {"NOTIFY_SOCKET": sys.argv[1]}
notify.status("first", environ=env)
fd = notify._SENDER.sock.fileno()
notify.status("second", environ=env)
same = notify._SENDER.sock.fileno() == fd
# a daemon closes every fd and something else gets the number
r, w = os.pipe()
os.close(fd)
os.dup2(w, fd)
notify.status("third", environ=env)
os.set_blocking(r, False)
try:
    leaked = os.read(r, 100).decode()
except BlockingIOError:
    leaked = ""
still_open = os.fstat(fd) is not None
pid = os.fork()
if pid == 0:
    notify.status("from the child", environ=env)
    os._exit(0)
os.waitpid(pid, 0)
print(json.dumps({"same": same, "leaked": leaked, "still_open": still_open, "child": pid}))
"""


def test_sender_is_reused_fork_safe_and_never_writes_to_a_recycled_fd(rx: Receiver) -> None:
    """One socket serves every message; after its fd is recycled a new one is made (the
    impostor fd gets nothing and stays open); a forked child's message carries its pid."""
    proc = subprocess.run(
        [sys.executable, "-c", SENDER_CHILD, rx.env["NOTIFY_SOCKET"]],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    out = json.loads(proc.stdout)
    assert out["same"] is True
    assert out["leaked"] == ""
    assert out["still_open"] is True
    got = [rx.recv() for _ in range(4)]
    assert [d for d, _, _ in got] == [
        b"STATUS=first",
        b"STATUS=second",
        b"STATUS=third",
        b"STATUS=from the child",
    ]
    assert got[3][2] == out["child"] != got[0][2]
