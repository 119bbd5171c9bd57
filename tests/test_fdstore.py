"""sdactivate.fdstore against the testing receiver's fd-store emulator (PID1's rules)."""

from __future__ import annotations

import fcntl
import os
import socket
import sys
import textwrap
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sdactivate import fdstore
from sdactivate.errors import NotifyValueError
from sdactivate.testing import NotifyReceiver, Process, launch

ME = os.getpid()


@pytest.fixture
def rx() -> Iterator[NotifyReceiver]:
    with NotifyReceiver(fdstore_max=8, thread=True) as receiver:
        yield receiver


@pytest.mark.parametrize(
    "name",
    ["web", "stored", "a.b-c_d@e f", "x" * 255, "~!#$%^&*()"],
    ids=["plain", "stored", "punctuation-space", "255-chars", "symbols"],
)
def test_valid_names(name: str) -> None:
    """ASCII printable names without ':' up to 255 characters are accepted."""
    assert fdstore.validate_name(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "",
        "a:b",
        "tab\there",
        "new\nline",
        "del\x7f",
        "caf\u00e9",
        "x" * 256,
        "unknown",
        "connection",
    ],
    ids=["empty", "colon", "tab", "newline", "del", "non-ascii", "256-chars", "unknown", "conn"],
)
def test_invalid_names_raise(name: str) -> None:
    """Names PID1 would ignore, or that mean something else to receivers, are refused."""
    with pytest.raises(NotifyValueError):
        fdstore.validate_name(name)


def test_remove_accepts_special_names() -> None:
    """remove() may name 'unknown'/'connection' (harmless), but not malformed names."""
    assert fdstore.validate_name("unknown", for_store=False) == "unknown"
    with pytest.raises(NotifyValueError):
        fdstore.validate_name("a:b", for_store=False)


def test_not_under_systemd_everything_is_a_noop() -> None:
    """Without NOTIFY_SOCKET: store/remove/store_state return False, listen just binds."""
    with socket.socket() as sock:
        assert fdstore.store(sock, name="web", environ={}) is False
    assert fdstore.remove("web", environ={}) is False
    assert fdstore.store_state("state", b"x", environ={}) is False
    assert fdstore.load_state("state", environ={}) is None
    sock = fdstore.listen("127.0.0.1:0", name="web", environ={})
    with sock:
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1


@pytest.mark.parametrize("poll", [True, False], ids=["poll", "fdpoll0"])
def test_store_socket_arrives_with_name(rx: NotifyReceiver, poll: bool) -> None:
    """store() sends FDSTORE=1 + FDNAME (+ FDPOLL=0 when asked) with the socket itself."""
    with socket.create_server(("127.0.0.1", 0)) as sock:
        assert fdstore.store(sock, name="web", poll=poll, environ=rx.environ) is True
        msg = rx.wait_for("FDSTORE", "1", timeout=5)
        assert msg.get("FDNAME") == "web" and msg.nfds == 1
        assert msg.has("FDPOLL", "0") is (not poll)
        [entry] = rx.store
        assert entry.name == "web" and entry.poll is poll and entry.pid == ME
        assert fdstore.same_fd(entry.fd, sock.fileno())


def test_store_file_object_and_raw_fd(rx: NotifyReceiver, tmp_path: os.PathLike[str]) -> None:
    """Any object with fileno() or an int fd can be stored, one message per name."""
    path = os.path.join(os.fspath(tmp_path), "data")
    with open(path, "wb") as fobj:
        r, w = os.pipe2(os.O_CLOEXEC)
        try:
            assert fdstore.store(fobj, name="log", environ=rx.environ)
            assert fdstore.store(r, name="pipe", poll=False, environ=rx.environ)
            rx.wait_until(lambda: len(rx.store) == 2, timeout=5)
            assert sorted(rx.stored_by_name()) == ["log", "pipe"]
        finally:
            os.close(r)
            os.close(w)


def test_store_refuses_bad_name_before_sending(rx: NotifyReceiver) -> None:
    """An invalid name raises NotifyValueError and nothing reaches the manager."""
    with socket.socket() as sock, pytest.raises(NotifyValueError, match="':'"):
        fdstore.store(sock, name="a:b", environ=rx.environ)
    fdstore.remove("marker", environ=rx.environ)
    rx.wait_for("FDSTOREREMOVE", timeout=5)
    assert len(rx.messages) == 1 and rx.dropped == []


def test_remove_closes_store_entries(rx: NotifyReceiver) -> None:
    """remove(name) sends FDSTOREREMOVE=1 + FDNAME and the entries of that name go away."""
    with socket.create_server(("127.0.0.1", 0)) as a, socket.create_server(("127.0.0.1", 0)) as b:
        fdstore.store(a, name="old", environ=rx.environ)
        fdstore.store(b, name="new", environ=rx.environ)
        assert fdstore.remove("old", environ=rx.environ)
        rx.wait_for("FDSTOREREMOVE", "1", timeout=5)
        assert list(rx.stored_by_name()) == ["new"]


def test_listen_binds_and_stores(rx: NotifyReceiver) -> None:
    """listen() with nothing inherited binds the address and stores the socket under name."""
    sock = fdstore.listen("127.0.0.1:0", name="web", environ=rx.environ)
    with sock:
        rx.wait_for("FDSTORE", timeout=5)
        [entry] = rx.store
        assert entry.name == "web" and fdstore.same_fd(entry.fd, sock.fileno())
        assert sock.getsockname()[0] == "127.0.0.1"


def test_store_state_is_a_sealed_memfd(rx: NotifyReceiver) -> None:
    """store_state() stores a sealed memfd holding the bytes, with FDPOLL=0, replacing old."""
    assert fdstore.store_state("state", b"v1", environ=rx.environ)
    assert fdstore.store_state("state", b"v2" * 1000, environ=rx.environ)
    rx.wait_until(lambda: rx.count("FDSTORE") == 2, timeout=5)
    [entry] = rx.store
    assert entry.name == "state" and entry.poll is False
    assert os.pread(entry.fd, 10_000, 0) == b"v2" * 1000
    seals = fcntl.fcntl(entry.fd, fcntl.F_GET_SEALS)
    assert seals & fcntl.F_SEAL_WRITE and seals & fcntl.F_SEAL_SEAL
    with pytest.raises(OSError):
        os.pwrite(entry.fd, b"tamper", 0)


PRELUDE = textwrap.dedent(
    """
    import os, socket, sys, time
    from sdactivate import fdstore, notify

    def report(**fields):
        notify.send([("X_" + k.upper(), str(v)) for k, v in fields.items()])
    """
)

GENERATION = PRELUDE + textwrap.dedent(
    """
    sock = fdstore.listen("127.0.0.1:0", name="web", backlog=16)
    report(port=sock.getsockname()[1], fd=sock.fileno(), state=fdstore.load_state("state"))
    fdstore.store_state("state", b"generation " + sys.argv[1].encode())
    notify.send({"READY": "1"})
    if sys.argv[1] == "2":
        sock.settimeout(10)
        conn, _ = sock.accept()
        conn.sendall(conn.recv(100).upper())
        conn.close()
    else:
        time.sleep(60)
    """
)


def _generation(rx: NotifyReceiver, n: int) -> tuple[Process, dict[str, str]]:
    since = len(rx.messages)
    child = launch([sys.executable, "-c", GENERATION, str(n)], notify=rx)
    rx.wait_for("READY", "1", since=since, timeout=20)
    report = next(m for m in rx.messages[since:] if m.pid == child.pid and "X_PORT" in m)
    return child, dict(report.fields)


def test_restart_keeps_listening_socket_and_pending_connection() -> None:
    """Simulated `systemctl restart`: generation 2 gets the stored socket back (not re-stored)
    and accepts the connection that queued while generation 1 was going away."""
    with NotifyReceiver(fdstore_max=4, thread=True) as rx:
        gen1, first = _generation(rx, 1)
        with gen1:
            assert first["X_STATE"] == "None"
            client = socket.create_connection(("127.0.0.1", int(first["X_PORT"])), timeout=10)
            client.sendall(b"hello")  # queued in the backlog: nobody accepts in generation 1
            gen1.terminate()
            gen1.wait(10)
        with client:
            gen2, second = _generation(rx, 2)
            with gen2:
                assert client.recv(100) == b"HELLO"
                assert gen2.wait(10) == 0
            rx.sync()
        assert second["X_PORT"] == first["X_PORT"]
        assert second["X_FD"] in ("3", "4")  # came back through LISTEN_FDS (with the state)
        assert second["X_STATE"] == "b'generation 1'"  # the memfd state survived too
        restored = [m for m in rx.messages if m.pid == gen2.pid and m.has("FDNAME", "web")]
        assert restored == [], "generation 2 stored an fd it got from the manager again"
        assert sorted(rx.stored_by_name()) == ["state", "web"]


def test_stop_then_start_flushes_the_store() -> None:
    """After a flush (stop + start on 252), the next generation binds and stores anew."""
    with NotifyReceiver(fdstore_max=4, thread=True) as rx:
        gen1, _ = _generation(rx, 1)
        with gen1:
            gen1.terminate()
            gen1.wait(10)
        rx.flush_store()
        assert rx.store == []
        gen3, third = _generation(rx, 3)
        with gen3:
            assert third["X_STATE"] == "None"
            stored = [m for m in rx.messages if m.pid == gen3.pid and m.has("FDNAME", "web")]
            assert len(stored) == 1


SOCKET_UNIT_CHILD = PRELUDE + textwrap.dedent(
    """
    port = int(sys.argv[1])
    a = fdstore.listen(f"127.0.0.1:{port}", name="web")          # same name as the unit gave
    b = fdstore.listen(f"127.0.0.1:{port}", name="other-name")   # same address, other name
    again = fdstore.store(a, name="copy")                        # an explicit store is skipped
    report(a=a.fileno(), b=b.fileno(), again=again)
    notify.send({"READY": "1"})
    """
)


def test_inherited_socket_unit_fds_are_never_stored(rx: NotifyReceiver) -> None:
    """Sockets from a socket unit come back as is and are not pushed into the store
    (PID1 dedupes only within the store: they would be delivered twice)."""
    with socket.create_server(("127.0.0.1", 0)) as unit_socket:
        port = unit_socket.getsockname()[1]
        argv = [sys.executable, "-c", SOCKET_UNIT_CHILD, str(port)]
        with launch(argv, [unit_socket], names=["web"], notify=rx) as child:
            msg = rx.wait_for("X_A", timeout=20)
            assert child.wait(10) == 0
    rx.sync()  # everything the child sent is recorded: the absence below is real
    assert (msg.get("X_A"), msg.get("X_B"), msg.get("X_AGAIN")) == ("3", "3", "True")
    assert rx.count("FDSTORE") == 0 and rx.store == []


PRUNE_CHILD = PRELUDE + textwrap.dedent(
    """
    removed = fdstore.prune(keep=["web"])
    report(removed=",".join(removed))
    notify.send({"READY": "1"})
    """
)


def test_prune_removes_names_the_new_version_does_not_know(rx: NotifyReceiver) -> None:
    """prune(keep=...) sends FDSTOREREMOVE for every other inherited name."""
    with (
        socket.create_server(("127.0.0.1", 0)) as web,
        socket.create_server(("127.0.0.1", 0)) as old,
    ):
        fdstore.store(web, name="web", environ=rx.environ)
        fdstore.store(old, name="legacy", environ=rx.environ)
        rx.wait_until(lambda: len(rx.store) == 2, timeout=5)
        with launch([sys.executable, "-c", PRUNE_CHILD], notify=rx) as child:
            msg = rx.wait_for("X_REMOVED", timeout=20)
            child.wait(10)
        rx.wait_for("FDSTOREREMOVE", timeout=5)
    assert msg.get("X_REMOVED") == "legacy"
    assert list(rx.stored_by_name()) == ["web"]


_NAME_CHARS = st.characters(min_codepoint=32, max_codepoint=126, exclude_characters=":")
_GOOD_NAMES = st.text(_NAME_CHARS, min_size=1, max_size=255).filter(
    lambda n: n not in fdstore.RESERVED_NAMES
)
_BAD_CHARS = st.one_of(
    st.just(":"),
    st.characters(max_codepoint=31),
    st.characters(min_codepoint=127, exclude_categories=("Cs",)),
)


@settings(max_examples=100, deadline=None)
@given(name=_GOOD_NAMES)
def test_valid_names_property(name: str) -> None:
    """Every ASCII printable name without ':' of 1..255 characters is accepted."""
    assert fdstore.validate_name(name) == name


@settings(max_examples=100, deadline=None)
@given(
    prefix=st.text(_NAME_CHARS, max_size=20),
    bad=_BAD_CHARS,
    suffix=st.text(_NAME_CHARS, max_size=20),
)
def test_invalid_names_property(prefix: str, bad: str, suffix: str) -> None:
    """Any ':', control or non-ASCII character makes a name invalid."""
    with pytest.raises(NotifyValueError):
        fdstore.validate_name(prefix + bad + suffix)


@settings(max_examples=40, deadline=None)
@given(name=_GOOD_NAMES.filter(lambda n: len(n) < 200))
def test_stored_name_round_trips_through_the_manager(name: str) -> None:
    """A name store() accepts is exactly the name the manager files the fd under."""
    with NotifyReceiver(fdstore_max=1) as rx, socket.socket() as sock:
        assert fdstore.store(sock, name=name, environ=rx.environ)
        rx.wait_for("FDSTORE", timeout=5)
        assert [e.name for e in rx.store] == [name]


def test_store_state_with_a_255_character_name(rx: NotifyReceiver) -> None:
    """The longest valid name works for a state blob (memfd names are capped at 249 bytes)."""
    name = "s" * 255
    assert fdstore.store_state(name, b"data", environ=rx.environ)
    rx.wait_for("FDSTORE", timeout=5)
    assert [e.name for e in rx.store] == [name]
