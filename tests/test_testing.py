"""sdactivate.testing: the notify receiver enforces PID1's rules; the launcher sets LISTEN_*."""

from __future__ import annotations

import array
import os
import select
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from sdactivate.testing import NotifyReceiver, check_datagram, launch


def sendraw(rx: NotifyReceiver, data: bytes, fds: Sequence[int] = ()) -> None:
    """Send one datagram to the receiver the way sd_notify does (no library code)."""
    address = b"\0" + rx.address[1:].encode() if rx.address.startswith("@") else rx.address
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())]
        sock.sendmsg([data], anc if fds else [], 0, address)


def hung_up(fd: int, timeout: float) -> bool:
    """True if the pipe read end ``fd`` sees POLLHUP (every write end closed) within timeout."""
    poller = select.poll()
    poller.register(fd, 0)
    return bool(poller.poll(int(timeout * 1000)))


@pytest.fixture
def rx() -> Iterator[NotifyReceiver]:
    with NotifyReceiver(fdstore_max=4) as receiver:
        yield receiver


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    r, w = os.pipe2(os.O_CLOEXEC)
    yield r, w
    for fd in (r, w):
        try:
            os.close(fd)
        except OSError:
            pass


def test_records_fields_and_sender_pid(rx: NotifyReceiver) -> None:
    """An accepted message keeps its fields in order and the sender's pid from SCM_CREDENTIALS."""
    sendraw(rx, b"READY=1\nSTATUS=up and running")
    msg = rx.wait_for("READY", "1", timeout=5)
    assert msg.fields == (("READY", "1"), ("STATUS", "up and running"))
    assert (msg.pid, msg.uid) == (os.getpid(), os.getuid())
    assert msg.get("STATUS") == "up and running" and msg.get("MAINPID") is None


@pytest.mark.parametrize(
    ("size", "accepted"), [(4096, True), (4097, False)], ids=["4096-kept", "4097-dropped"]
)
def test_size_limit_drops_whole_datagram(rx: NotifyReceiver, size: int, accepted: bool) -> None:
    """A datagram over 4096 bytes is dropped whole (MSG_TRUNC), never truncated and parsed."""
    data = b"STATUS=" + b"x" * (size - len(b"STATUS="))
    sendraw(rx, data)
    sendraw(rx, b"X_MARK=1")
    rx.wait_for("X_MARK", timeout=5)
    assert rx.count("STATUS") == (1 if accepted else 0)
    assert [d.reason for d in rx.dropped] == ([] if accepted else ["longer than 4096 bytes"])


@pytest.mark.parametrize(
    ("data", "accepted"),
    [(b"STATUS=a\0b", False), (b"\0STATUS=a", False), (b"STATUS=a\0", True)],
    ids=["inner-nul", "leading-nul", "one-trailing-nul"],
)
def test_nul_bytes(rx: NotifyReceiver, data: bytes, accepted: bool) -> None:
    """Embedded NUL drops the message; one trailing NUL is tolerated, as in PID1."""
    sendraw(rx, data)
    sendraw(rx, b"X_MARK=1")
    rx.wait_for("X_MARK", timeout=5)
    assert rx.count("STATUS") == (1 if accepted else 0)
    assert len(rx.dropped) == (0 if accepted else 1)


@pytest.mark.parametrize(
    ("data", "flags", "pid", "reason"),
    [
        (b"READY=1", 0, 1234, None),
        (b"READY=1", 0, None, "no credentials"),
        (b"READY=1", 0, 0, "no credentials"),
        (b"READY=1", socket.MSG_TRUNC, 1234, "longer than 4096 bytes"),
        (b"READY=1", socket.MSG_CTRUNC, 1234, "control data truncated"),
        (b"READY=1\0\0", 0, 1234, "embedded NUL byte"),
    ],
    ids=["ok", "no-creds", "pid-0", "trunc", "ctrunc", "two-trailing-nuls"],
)
def test_check_datagram_table(data: bytes, flags: int, pid: int | None, reason: str | None) -> None:
    """The pure transport checks: credentials required, truncation and NULs refused."""
    assert check_datagram(data, flags, pid) == reason


def test_fds_without_fdstore_are_closed(rx: NotifyReceiver, pipe: tuple[int, int]) -> None:
    """fds sent without FDSTORE=1 are closed on reception (sd_notify(3))."""
    r, w = pipe
    sendraw(rx, b"STATUS=with an fd", [w])
    os.close(w)
    rx.wait_for("STATUS", timeout=5)
    assert hung_up(r, 5), "the receiver kept an fd that came without FDSTORE=1"
    assert rx.store == []


def test_fdstore_disabled_by_default_closes_fds(pipe: tuple[int, int]) -> None:
    """FileDescriptorStoreMax= defaults to 0: FDSTORE=1 fds are closed, the message kept."""
    r, w = pipe
    with NotifyReceiver() as rx0:
        sendraw(rx0, b"FDSTORE=1\nFDNAME=x", [w])
        os.close(w)
        rx0.wait_for("FDSTORE", timeout=5)
        assert rx0.store == []
        assert hung_up(r, 5)


def test_fdstore_keeps_names_and_honours_max(pipe: tuple[int, int]) -> None:
    """Stored fds keep FDNAME (default 'stored'); fds beyond the max are closed silently."""
    r, w = pipe
    extra_r, extra_w = os.pipe2(os.O_CLOEXEC)
    try:
        with NotifyReceiver(fdstore_max=2) as rx2:
            sendraw(rx2, b"FDSTORE=1\nFDNAME=a", [w])
            sendraw(rx2, b"FDSTORE=1", [r])
            sendraw(rx2, b"FDSTORE=1\nFDNAME=c", [extra_w])
            os.close(extra_w)
            rx2.wait_until(lambda: len(rx2.messages) == 3, timeout=5)
            assert sorted(rx2.stored_by_name()) == ["a", "stored"]
            assert hung_up(extra_r, 5), "an fd beyond FileDescriptorStoreMax= was kept"
            assert [e.name for e in rx2.store] == ["stored", "a"]  # newest first, like PID1
    finally:
        os.close(extra_r)


def test_fdstore_invalid_name_falls_back_to_stored(rx: NotifyReceiver) -> None:
    """PID1 ignores an invalid FDNAME= and stores under the default name."""
    r, w = os.pipe2(os.O_CLOEXEC)
    try:
        sendraw(rx, b"FDSTORE=1\nFDNAME=has:colon", [w])
        rx.wait_for("FDSTORE", timeout=5)
        assert list(rx.stored_by_name()) == ["stored"]
    finally:
        os.close(r)
        os.close(w)


def test_fdstore_dedupes_within_store_and_removes_by_name(
    rx: NotifyReceiver, pipe: tuple[int, int]
) -> None:
    """The same fd stored twice is kept once; FDSTOREREMOVE=1 closes every entry of a name."""
    r, w = pipe
    sendraw(rx, b"FDSTORE=1\nFDNAME=p\nFDPOLL=0", [w])
    sendraw(rx, b"FDSTORE=1\nFDNAME=p\nFDPOLL=0", [w])
    os.close(w)
    rx.wait_until(lambda: len(rx.messages) == 2, timeout=5)
    assert len(rx.store) == 1 and rx.store[0].poll is False
    assert not hung_up(r, 0)
    sendraw(rx, b"FDSTOREREMOVE=1\nFDNAME=p")
    rx.wait_for("FDSTOREREMOVE", timeout=5)
    assert rx.store == []
    assert hung_up(r, 5)


@pytest.mark.parametrize(("poll", "kept"), [(True, False), (False, True)], ids=["poll", "fdpoll0"])
def test_fdpoll_hangup_drops_entry(rx: NotifyReceiver, poll: bool, kept: bool) -> None:
    """A pollable stored fd that reports POLLHUP is dropped unless stored with FDPOLL=0."""
    r, w = os.pipe2(os.O_CLOEXEC)
    try:
        sendraw(rx, b"FDSTORE=1\nFDNAME=r" + (b"" if poll else b"\nFDPOLL=0"), [r])
        rx.wait_for("FDSTORE", timeout=5)
        assert len(rx.store) == 1
        os.close(w)  # the read end now reports POLLHUP
        sendraw(rx, b"X_MARK=1")  # wakes the pump; HUP is checked on the same pass
        rx.wait_for("X_MARK", timeout=5)
        if not kept:
            rx.wait_until(lambda: not rx._store, timeout=5, what="store entry dropped")
        rx.pump(0)
        assert len(rx.store) == (1 if kept else 0)
    finally:
        os.close(r)
        try:
            os.close(w)
        except OSError:
            pass


@pytest.mark.parametrize(
    ("data", "nfds"),
    [(b"BARRIER=1\nSTATUS=x", 1), (b"BARRIER=1", 0), (b"BARRIER=1", 2)],
    ids=["mixed", "no-fd", "two-fds"],
)
def test_barrier_protocol_violations_are_dropped(
    rx: NotifyReceiver, data: bytes, nfds: int
) -> None:
    """BARRIER=1 must come alone with exactly one fd; otherwise the message is ignored."""
    pipes = [os.pipe2(os.O_CLOEXEC) for _ in range(nfds)]
    try:
        sendraw(rx, data, [w for _, w in pipes])
        sendraw(rx, b"X_MARK=1")
        rx.wait_for("X_MARK", timeout=5)
        assert rx.barriers == 0 and rx.count("STATUS") == 0
        assert len(rx.dropped) == 1 and "BARRIER" in rx.dropped[0].reason
    finally:
        for pair in pipes:
            for fd in pair:
                os.close(fd)


def test_barrier_fd_closed_only_after_earlier_messages() -> None:
    """The barrier fd is closed after every earlier datagram was processed (not before)."""
    with NotifyReceiver() as rx:
        r, w = os.pipe2(os.O_CLOEXEC)
        try:
            sendraw(rx, b"STATUS=before the barrier")
            sendraw(rx, b"BARRIER=1", [w])
            os.close(w)
            assert not hung_up(r, 0), "barrier released before the manager processed anything"
            rx.start()  # now process in the background thread
            assert hung_up(r, 5)
            assert rx.count("STATUS", "before the barrier") == 1  # already recorded at HUP time
            assert rx.barriers == 1 and rx.dropped == []
        finally:
            os.close(r)


@pytest.mark.parametrize("thread", [True, False], ids=["thread", "pump"])
@pytest.mark.parametrize("access", ["all", "main"])
def test_sync_waits_for_everything_a_finished_child_sent(
    thread: bool, access: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a child has exited, ``sync()`` returns only once all it sent is recorded (here
    each datagram takes the receiver 30 ms); the marker itself is neither recorded, nor
    dropped, nor subject to NotifyAccess=."""
    n = 8  # an unread queue holds net.unix.max_dgram_qlen datagrams (10 by default)
    with NotifyReceiver(thread=thread, notify_access=access) as rx:  # type: ignore[arg-type]
        process = rx._process

        def slow(*args: Any) -> None:
            time.sleep(0.03)
            process(*args)

        monkeypatch.setattr(rx, "_process", slow)
        code = f"from sdactivate import notify\nfor i in range({n}): notify.status(str(i))"
        child = launch([sys.executable, "-c", code], notify=rx)
        assert child.wait(30) == 0
        rx.sync(timeout=10)
        assert [m.get("STATUS") for m in rx.messages] == [str(i) for i in range(n)]
        assert rx.dropped == [] and rx.barriers == 0
        rx.sync()  # again: each call waits for its own marker
        assert len(rx.messages) == n


def test_sync_times_out_when_the_marker_is_never_processed(
    rx: NotifyReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """sync() raises TimeoutError at its deadline, and RuntimeError once closed."""
    monkeypatch.setattr(rx, "_process", lambda *args: None)
    with pytest.raises(TimeoutError, match="sync marker"):
        rx.sync(timeout=0.2)
    rx.close()
    with pytest.raises(RuntimeError, match="closed"):
        rx.sync()


def test_close_records_what_was_queued_before() -> None:
    """close() processes the datagrams already queued, so nothing sent before it is lost."""
    rx = NotifyReceiver()  # no thread, never pumped
    for i in range(5):
        sendraw(rx, f"STATUS={i}".encode())
    rx.close()
    assert [m.get("STATUS") for m in rx.messages] == ["0", "1", "2", "3", "4"]


def test_wait_for_times_out_with_a_description(rx: NotifyReceiver) -> None:
    """wait_for raises TimeoutError at its deadline, naming what it waited for."""
    sendraw(rx, b"STATUS=not ready")
    with pytest.raises(TimeoutError, match="READY=1"):
        rx.wait_for("READY", "1", timeout=0.2)


def test_filesystem_path_receiver(tmp_path: os.PathLike[str]) -> None:
    """A receiver bound to a path gives NOTIFY_SOCKET=/path and removes the file on close."""
    path = os.path.join(os.fspath(tmp_path), "notify.sock")
    with NotifyReceiver(path=path, thread=True) as rx:
        assert rx.environ == {"NOTIFY_SOCKET": path}
        sendraw(rx, b"READY=1")
        rx.wait_for("READY", timeout=5)
    assert not os.path.exists(path)


CHILD_REPORT = textwrap.dedent(
    """
    import os, socket
    def send(text):
        addr = os.environ["NOTIFY_SOCKET"]
        addr = "\\0" + addr[1:] if addr.startswith("@") else addr
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.sendto(text.encode(), addr)
    n = int(os.environ.get("LISTEN_FDS", "0"))
    kinds = []
    for fd in range(3, 3 + n):
        s = socket.socket(fileno=fd)
        kinds.append(f"{s.family.name}/{s.type.name}")
        s.detach()
    send("\\n".join([
        "X_PID_OK=" + str(os.environ.get("LISTEN_PID") == str(os.getpid())),
        "X_FDS=" + str(n),
        "X_NAMES=" + os.environ.get("LISTEN_FDNAMES", "-"),
        "X_KINDS=" + ",".join(kinds),
        "READY=1",
    ]))
    """
)


def test_launch_sets_listen_env_and_notify_socket(tmp_path: os.PathLike[str]) -> None:
    """launch() gives the child fds 3.. with its own LISTEN_PID, names and NOTIFY_SOCKET."""
    unix_path = os.path.join(os.fspath(tmp_path), "app.sock")
    with (
        NotifyReceiver(thread=True) as rx,
        launch(
            [sys.executable, "-c", CHILD_REPORT],
            ["127.0.0.1:0", "udp:[::1]:0", unix_path],
            names=["web", "dns", "admin"],
            notify=rx,
        ) as child,
    ):
        msg = rx.wait_for("READY", "1", timeout=10)
        assert child.wait(10) == 0
        child.close_sockets()
    assert msg.pid == child.pid
    assert msg.get("X_PID_OK") == "True"
    assert msg.get("X_FDS") == "3" and msg.get("X_NAMES") == "web:dns:admin"
    assert msg.get("X_KINDS") == "AF_INET/SOCK_STREAM,AF_INET6/SOCK_DGRAM,AF_UNIX/SOCK_STREAM"


def test_launch_passes_stored_fds_after_sockets(rx: NotifyReceiver) -> None:
    """Like PID1 on restart: socket fds first, then the store's fds with their names."""
    stored = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    stored.bind(("127.0.0.1", 0))
    stored.listen()
    try:
        sendraw(rx, b"FDSTORE=1\nFDNAME=kept", [stored.fileno()])
        rx.wait_for("FDSTORE", timeout=5)
        rx.start()
        with launch(
            [sys.executable, "-c", CHILD_REPORT], ["127.0.0.1:0"], names=["sock"], notify=rx
        ) as child:
            msg = rx.wait_for("READY", timeout=10)
            child.wait(10)
            child.close_sockets()
        assert msg.get("X_NAMES") == "sock:kept"
        assert msg.get("X_FDS") == "2"
    finally:
        stored.close()


def test_launch_hides_a_real_notify_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without notify=, a launched child does not inherit this process's NOTIFY_SOCKET."""
    monkeypatch.setenv("NOTIFY_SOCKET", "/nonexistent/real-manager")
    monkeypatch.setenv("WATCHDOG_PID", "1")
    prog = (
        "import os, sys; sys.exit(sum(k in os.environ for k in ('NOTIFY_SOCKET', 'WATCHDOG_USEC')))"
    )
    with launch([sys.executable, "-c", prog]) as child:
        assert child.wait(10) == 0


def test_process_wait_timeout_and_terminate() -> None:
    """Process.wait raises TimeoutExpired at its deadline; terminate() ends the child."""
    with launch([sys.executable, "-c", "import time; time.sleep(60)"]) as child:
        with pytest.raises(subprocess.TimeoutExpired):
            child.wait(0.1)
        child.terminate()
        assert child.wait(10) == -15
        assert child.poll() == -15


def test_libsystemd_client_is_accepted(rx: NotifyReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    """Conformance: libsystemd's sd_pid_notify_with_fds (python-systemd) lands as PID1 sees it."""
    daemon = pytest.importorskip("systemd.daemon")
    monkeypatch.setenv("NOTIFY_SOCKET", rx.address)
    with socket.create_server(("127.0.0.1", 0)) as sock:
        assert daemon.notify("FDSTORE=1\nFDNAME=lib", fds=[sock.fileno()])
        assert daemon.notify("READY=1\nSTATUS=via libsystemd")
        msg = rx.wait_for("READY", "1", timeout=5)
        assert msg.pid == os.getpid() and msg.get("STATUS") == "via libsystemd"
        [entry] = rx.store
        assert entry.name == "lib"


def test_systemd_notify_binary_barrier_completes() -> None:
    """Conformance: Debian's systemd-notify (252) waits on BARRIER=1; our receiver releases it
    only after recording the message it sent first."""
    binary = "/usr/bin/systemd-notify"
    if not os.path.exists(binary):
        pytest.skip("systemd-notify not installed")
    with NotifyReceiver(thread=True) as rx:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **rx.environ}
        done = subprocess.run(
            [binary, "--ready", "--status=from systemd-notify"],
            env=env,
            timeout=20,
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr
        assert rx.count("READY", "1") == 1  # recorded before the barrier was released
        assert rx.barriers == 1 and rx.dropped == []
        assert rx.messages[0].get("STATUS") == "from systemd-notify"
        assert rx.messages[0].pid == os.getpid()  # it speaks for its parent (privileged)


def test_notify_access_main_follows_mainpid() -> None:
    """NotifyAccess=main: only the main pid is heard; an accepted MAINPID= moves it; barriers
    are honoured for anyone (manager.c handles them before the unit's access check)."""
    with NotifyReceiver(notify_access="main") as rx:
        rx.main_pid = 1  # someone else is the main process
        sendraw(rx, b"STATUS=ignored")
        r, w = os.pipe2(os.O_CLOEXEC)
        sendraw(rx, b"BARRIER=1", [w])
        os.close(w)
        assert hung_up(r, 0) is False
        rx.wait_until(lambda: rx.barriers == 1, timeout=5)
        os.close(r)
        assert rx.count("STATUS") == 0 and "NotifyAccess=main" in rx.dropped[0].reason
        rx.main_pid = os.getpid()
        sendraw(rx, b"STATUS=heard\nMAINPID=12345")
        rx.wait_for("STATUS", "heard", timeout=5)
        assert rx.main_pid == 12345
        sendraw(rx, b"STATUS=ignored again")
        rx.wait_until(lambda: len(rx.dropped) == 2, timeout=5)
        assert rx.count("STATUS") == 1


def test_launch_makes_the_child_the_main_pid() -> None:
    """launch(notify=rx) records the child as main pid, like PID1 for ExecStart=."""
    with NotifyReceiver(notify_access="main", thread=True) as rx:
        with launch([sys.executable, "-c", CHILD_REPORT], notify=rx) as child:
            msg = rx.wait_for("READY", timeout=10)
            child.wait(10)
        assert rx.main_pid == child.pid == msg.pid


@pytest.mark.parametrize(
    ("value", "main_pid"),
    [("4242", 4242), ("0x1092", 4242), ("010222", 4242), (" 4242", 4242), ("\uff14\uff12", 7)],
    ids=["decimal", "hex", "octal", "space", "fullwidth-digits"],
)
def test_mainpid_is_read_as_pid1_reads_it(value: str, main_pid: int) -> None:
    """MAINPID= is read as service.c's parse_pid() reads it (strtoul base 0: hex, C octal,
    leading space; Unicode digits are not digits), the one reader of sdactivate._cint. (The
    receiver read isdigit() decimals: 0x1092 ignored, 010222 as 10222, fullwidth 42 taken.)"""
    with NotifyReceiver() as rx:
        rx.main_pid = 7
        sendraw(rx, f"STATUS=sent\nMAINPID={value}".encode())
        rx.wait_for("STATUS", "sent", timeout=5)
        assert rx.main_pid == main_pid
