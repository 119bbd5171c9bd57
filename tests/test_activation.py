"""sdactivate.activation: the pure LISTEN_* parser, and the shell in child processes.

fd-level behaviour runs in ``python -c`` children started by ``_spawn.spawn`` (fds at 3..):
nothing here dup2s onto fd 3 of the pytest process.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import select
import signal
import socket
import sys
import textwrap
import time
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sdactivate._cint import c_integer as _c_integer
from sdactivate._spawn import spawn
from sdactivate.activation import (
    InheritedFd,
    ListenEnv,
    inherited_fds,
    listen,
    listeners,
    parse_listen_env,
    valid_fd_name,
)
from sdactivate.addresses import parse_address
from sdactivate.errors import ActivationError
from tests.support import free_dual_stack_port

PID = 4242

# --- children -------------------------------------------------------------------------


def run_child(
    code: str,
    fds: Sequence[int] = (),
    *,
    names: Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 20.0,
) -> Any:
    """Run ``code`` in a child with ``fds`` at 3.. (LISTEN_* set); return what it reports.

    The child calls ``report(obj)`` to send JSON back over a pipe.
    """
    read_end, low = os.pipe2(os.O_CLOEXEC)
    write_end = fcntl.fcntl(low, fcntl.F_DUPFD_CLOEXEC, 100)  # clear of the fds at 3..
    os.close(low)
    prelude = textwrap.dedent(
        f"""
        import json, os, sys
        def report(obj):
            os.write({write_end}, json.dumps(obj).encode())
            os.close({write_end})
        """
    )
    base = dict(os.environ if env is None else env)
    child = spawn(
        [sys.executable, "-c", prelude + textwrap.dedent(code)],
        fds,
        names=names,
        env=base,
        pass_fds=(write_end,),
    )
    os.close(write_end)
    data = b""
    deadline = time.monotonic() + timeout
    try:
        while True:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"child {child.pid} did not report within {timeout}s"
            ready, _, _ = select.select([read_end], [], [], remaining)
            if ready:
                chunk = os.read(read_end, 65536)
                if not chunk:
                    break
                data += chunk
        exited, _, _ = select.select([child.pidfd], [], [], max(0.0, deadline - time.monotonic()))
        if not exited:
            os.kill(child.pid, signal.SIGKILL)
        _, status = os.waitpid(child.pid, 0)
        assert exited, f"child {child.pid} did not exit within {timeout}s"
        assert os.waitstatus_to_exitcode(status) == 0, f"child failed: {data!r}"
    finally:
        os.close(read_end)
        os.close(child.pidfd)
    assert data, "child reported nothing"
    return json.loads(data)


@pytest.fixture
def sockets() -> Any:
    """A TCP listener, a UDP socket and a unix stream listener (abstract)."""
    tcp = socket.create_server(("127.0.0.1", 0))
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    unix.bind(b"\0sdactivate-test-%d" % os.getpid())
    unix.listen()
    yield tcp, udp, unix
    for s in (tcp, udp, unix):
        s.close()


# --- the pure parser --------------------------------------------------------------------

OK, NONE = "ok", "none"

PARSE_TABLE = [
    ("no LISTEN_PID", {"LISTEN_FDS": "1"}, NONE, None),
    ("other pid", {"LISTEN_PID": "1", "LISTEN_FDS": "1"}, NONE, None),
    ("other pid, garbage count", {"LISTEN_PID": "1", "LISTEN_FDS": "x"}, NONE, None),
    ("ours, no LISTEN_FDS", {"LISTEN_PID": str(PID)}, NONE, None),
    ("one fd", {"LISTEN_PID": str(PID), "LISTEN_FDS": "1"}, OK, ("unknown",)),
    (
        "named",
        {"LISTEN_PID": str(PID), "LISTEN_FDS": "2", "LISTEN_FDNAMES": "web:web"},
        OK,
        ("web", "web"),
    ),
    (
        "empty names kept",
        {"LISTEN_PID": str(PID), "LISTEN_FDS": "3", "LISTEN_FDNAMES": "a::"},
        OK,
        ("a", "", ""),
    ),
    (
        "empty FDNAMES is one empty name",
        {"LISTEN_PID": str(PID), "LISTEN_FDS": "1", "LISTEN_FDNAMES": ""},
        OK,
        ("",),
    ),
    ("leading space", {"LISTEN_PID": f" {PID}", "LISTEN_FDS": "\t2"}, OK, ("unknown",) * 2),
    ("hex count", {"LISTEN_PID": str(PID), "LISTEN_FDS": "0x2"}, OK, ("unknown",) * 2),
    ("C octal count", {"LISTEN_PID": str(PID), "LISTEN_FDS": "010"}, OK, ("unknown",) * 8),
    ("0b count", {"LISTEN_PID": str(PID), "LISTEN_FDS": "0b11"}, OK, ("unknown",) * 3),
    ("plus sign", {"LISTEN_PID": f"+{PID}", "LISTEN_FDS": "+1"}, OK, ("unknown",)),
    ("garbage pid", {"LISTEN_PID": "abc", "LISTEN_FDS": "1"}, "LISTEN_PID='abc'", None),
    ("empty pid", {"LISTEN_PID": "", "LISTEN_FDS": "1"}, "LISTEN_PID=''", None),
    ("zero pid", {"LISTEN_PID": "0", "LISTEN_FDS": "1"}, "LISTEN_PID='0'", None),
    ("negative pid", {"LISTEN_PID": "-5", "LISTEN_FDS": "1"}, "LISTEN_PID='-5'", None),
    ("pid > pid_t", {"LISTEN_PID": "4294967296"}, "LISTEN_PID='4294967296'", None),
    ("trailing space pid", {"LISTEN_PID": f"{PID} "}, "LISTEN_PID=", None),
    ("garbage count", {"LISTEN_PID": str(PID), "LISTEN_FDS": "two"}, "LISTEN_FDS='two'", None),
    ("zero count", {"LISTEN_PID": str(PID), "LISTEN_FDS": "0"}, "LISTEN_FDS='0'", None),
    ("negative count", {"LISTEN_PID": str(PID), "LISTEN_FDS": "-1"}, "LISTEN_FDS='-1'", None),
    ("9 is not octal", {"LISTEN_PID": str(PID), "LISTEN_FDS": "09"}, "LISTEN_FDS='09'", None),
    (
        "count > INT_MAX",
        {"LISTEN_PID": str(PID), "LISTEN_FDS": "2147483648"},
        "LISTEN_FDS='2147483648'",
        None,
    ),
    (
        "count above nr_open",
        {"LISTEN_PID": str(PID), "LISTEN_FDS": "2000000"},
        "fs.nr_open",
        None,
    ),
    (
        "too few names",
        {"LISTEN_PID": str(PID), "LISTEN_FDS": "2", "LISTEN_FDNAMES": "a"},
        "LISTEN_FDNAMES='a' has 1 names",
        None,
    ),
    (
        "too many names",
        {"LISTEN_PID": str(PID), "LISTEN_FDS": "1", "LISTEN_FDNAMES": "a:b"},
        "LISTEN_FDNAMES='a:b'",
        None,
    ),
    (
        "control char in name",
        {"LISTEN_PID": str(PID), "LISTEN_FDS": "1", "LISTEN_FDNAMES": "a\x01"},
        "invalid name 'a\\x01'",
        None,
    ),
    (
        "non-ASCII name",
        {"LISTEN_PID": str(PID), "LISTEN_FDS": "1", "LISTEN_FDNAMES": "caf\u00e9"},
        "invalid name",
        None,
    ),
    (
        "256-char name",
        {"LISTEN_PID": str(PID), "LISTEN_FDS": "1", "LISTEN_FDNAMES": "n" * 256},
        "invalid name",
        None,
    ),
]


@pytest.mark.parametrize(
    ("env", "outcome", "names"), [r[1:] for r in PARSE_TABLE], ids=[r[0] for r in PARSE_TABLE]
)
def test_parse_table(env: dict[str, str], outcome: str, names: tuple[str, ...] | None) -> None:
    """Each environment parses to "not for us", the expected names, or a named error."""
    if outcome == NONE:
        assert parse_listen_env(env, PID) is None
    elif outcome == OK:
        parsed = parse_listen_env(env, PID)
        assert parsed == ListenEnv(names or ())
        assert parsed.fds == range(3, 3 + len(parsed.names))
    else:
        with pytest.raises(ActivationError, match=None) as info:
            parse_listen_env(env, PID)
        assert outcome in str(info.value)


def test_parse_does_not_touch_its_input() -> None:
    """The parser reads the mapping and never changes it."""
    env = {"LISTEN_PID": str(PID), "LISTEN_FDS": "1", "LISTEN_FDNAMES": "x"}
    before = dict(env)
    parse_listen_env(env, PID)
    assert env == before


@pytest.mark.parametrize(
    ("own", "listen", "expected"),
    [(7, "7", OK), (7, "8", NONE), (None, "8", OK), (7, "0x7", OK), (None, "nope", "error")],
    ids=["same", "pid-reused", "cannot-tell", "hex", "garbage"],
)
def test_pidfdid(own: int | None, listen: str, expected: str) -> None:
    """LISTEN_PIDFDID (v259): a different id is someone else's; unknown own id skips it."""
    env = {"LISTEN_PID": str(PID), "LISTEN_FDS": "1", "LISTEN_PIDFDID": listen}
    if expected == "error":
        with pytest.raises(ActivationError, match="LISTEN_PIDFDID='nope'"):
            parse_listen_env(env, PID, own_pidfd_id=own)
        return
    parsed = parse_listen_env(env, PID, own_pidfd_id=own)
    assert (parsed is not None) == (expected == OK)


def test_pidfdid_mismatch_wins_over_a_bad_count() -> None:
    """As in libsystemd, a foreign LISTEN_PIDFDID is checked before LISTEN_FDS is read."""
    env = {"LISTEN_PID": str(PID), "LISTEN_FDS": "junk", "LISTEN_PIDFDID": "9"}
    assert parse_listen_env(env, PID, own_pidfd_id=8) is None


def test_fd_ceiling() -> None:
    """A count whose last fd reaches the kernel ceiling is refused; one below it is fine."""
    env = {"LISTEN_PID": str(PID), "LISTEN_FDS": "7"}
    assert parse_listen_env(env, PID, fd_ceiling=10) is not None
    with pytest.raises(ActivationError, match=r"fs\.nr_open"):
        parse_listen_env({**env, "LISTEN_FDS": "8"}, PID, fd_ceiling=10)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("12", 12),
        (" 12", 12),
        ("\v12", 12),
        ("+12", 12),
        ("-12", -12),
        ("0x1f", 31),
        ("0X1F", 31),
        ("017", 15),
        ("0", 0),
        ("00", 0),
        ("0b101", 5),
        ("0o17", 15),
        ("12 ", None),
        ("", None),
        ("0x", None),
        ("1e3", None),
        ("08", None),
        ("\u0661", None),
        ("1_000", None),
        ("+", None),
        ("--1", None),
        ("0b2", None),
        ("1" * 5000, None),  # past 64 bits (and past CPython's int() digit limit)
        ("0x" + "f" * 5000, None),
        ("0" * 5000 + "17", 15),
    ],
)
def test_c_integer(text: str, value: int | None) -> None:
    """Numbers read as systemd's safe_atoi (strtol base 0 plus 0b/0o)."""
    assert _c_integer(text) == value


def test_huge_listen_fds_is_an_activation_error() -> None:
    """LISTEN_FDS of 5,000 digits is "for us but broken" (an ActivationError naming it), not
    the ValueError int() raises past 4,300 digits."""
    env = {"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": "1" * 5000}
    with pytest.raises(ActivationError, match="LISTEN_FDS"):
        listeners(environ=env)


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("web", True),
        ("", True),
        ("a b~", True),
        ("x" * 255, True),
        ("x" * 256, False),
        ("a:b", False),
        ("tab\t", False),
        ("del\x7f", False),
        ("\u00e9", False),
    ],
)
def test_valid_fd_name(name: str, ok: bool) -> None:
    """fd names: printable ASCII, no ':', at most 255 (systemd.socket(5))."""
    assert valid_fd_name(name) is ok


# --- Hypothesis: arbitrary LISTEN_* values ------------------------------------------------

_numbers = st.one_of(
    st.integers(min_value=-(2**66), max_value=2**66).map(str),
    st.integers(min_value=0, max_value=12).map(str),
    st.sampled_from(["", " ", "0", "00", "0x", "0x3", "0b1", "0o7", "+1", "-0", "1 ", " 1", "4"]),
    st.text(max_size=12),
)
_name = st.text(st.characters(min_codepoint=0, max_codepoint=0x7F), max_size=8)
_names = st.one_of(st.lists(_name, max_size=6).map(":".join), st.text(max_size=40))


@st.composite
def _listen_env(draw: st.DrawFn) -> dict[str, str]:
    env: dict[str, str] = {}
    pid = draw(st.sampled_from([str(PID), f" {PID}", f"0{PID}", "1", "", "x"]) | _numbers)
    for key, strategy in (
        ("LISTEN_PID", st.just(pid)),
        ("LISTEN_FDS", _numbers),
        ("LISTEN_FDNAMES", _names),
        ("LISTEN_PIDFDID", _numbers),
    ):
        if draw(st.booleans()):
            env[key] = draw(strategy)
    return env


@settings(max_examples=400, deadline=None)
@given(_listen_env(), st.none() | st.integers(min_value=0, max_value=2**64))
def test_parse_never_fails_otherwise(env: dict[str, str], own_id: int | None) -> None:
    """Any LISTEN_* values: None, a result naming only fds 3..3+LISTEN_FDS-1, or ActivationError."""
    try:
        parsed = parse_listen_env(env, PID, own_pidfd_id=own_id)
    except ActivationError as exc:
        assert any(key in str(exc) for key in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"))
        return
    if parsed is None:
        return
    count = _c_integer(env["LISTEN_FDS"])
    assert count is not None and count >= 1
    assert parsed.fds == range(3, 3 + count)
    assert len(parsed.names) == count
    assert all(valid_fd_name(n) for n in parsed.names)
    assert _c_integer(env["LISTEN_PID"]) == PID


HYPOTHESIS_CHILD = """
import os
from hypothesis import given, settings, strategies as st
from sdactivate.activation import _pidfd_id, inherited_fds
from sdactivate.errors import ActivationError
passed = set(range(3, 3 + int(os.environ["N_PASSED"])))
me = os.getpid()
own = str(_pidfd_id(me) or 0)
pid = st.sampled_from([str(me), f" {me}", "1", "", "x", str(me + 1)])
num = st.one_of(st.integers(-3, 9).map(str), st.text(max_size=6),
                st.sampled_from(["0x2", "010", "2147483648", "+3"]))
name = st.sampled_from(["a", "web", "", "b:c", "caf\u00e9", "x" * 256, "t\\t"])
names = st.one_of(st.lists(name, max_size=7).map(":".join), st.text(max_size=9))
@st.composite
def envs(draw):
    # half well-formed with one variable replaced, half anything
    n = draw(st.integers(1, 3))
    env = {"LISTEN_PID": str(me), "LISTEN_FDS": str(n), "LISTEN_FDNAMES": ":".join(["a"] * n),
           "LISTEN_PIDFDID": own}
    for key, strategy in (("LISTEN_PID", pid), ("LISTEN_FDS", num), ("LISTEN_FDNAMES", names),
                          ("LISTEN_PIDFDID", num)):
        choice = draw(st.sampled_from(["keep", "keep", "drop", "replace"]))
        if choice == "drop":
            del env[key]
        elif choice == "replace":
            env[key] = draw(strategy)
    return env
seen = []
@settings(max_examples=300, deadline=None, database=None)
@given(envs())
def check(env):
    try:
        got = inherited_fds(environ=env, unset_environment=False)
    except ActivationError:
        seen.append("error")
        return
    assert {e.fd for e in got} <= passed, (env, got)
    seen.append(len(got))
check()
report(sorted(set(map(str, seen))))
"""


def test_shell_never_returns_an_fd_that_was_not_passed(sockets: Any) -> None:
    """Hypothesis in a child with 3 fds passed: only ActivationError, only fds 3..5."""
    seen = run_child(
        HYPOTHESIS_CHILD,
        [s.fileno() for s in sockets],
        env={**os.environ, "N_PASSED": "3"},
        timeout=120,
    )
    assert {"error", "0"} <= set(seen) and set(seen) & {"1", "2", "3"}  # every path was taken


# --- the shell, in children ---------------------------------------------------------------

REPEAT_CHILD = """
import socket, sdactivate, sdactivate.activation
os.environ["LISTEN_PIDFDID"] = str(sdactivate.activation._pidfd_id(os.getpid()) or 0)
a = sdactivate.listeners()
b = sdactivate.listeners()
by_name = sdactivate.listeners_by_name()
raw = sdactivate.inherited_fds()
left = sorted(k for k in os.environ if k.startswith("LISTEN_"))
report({
    "same": all(x is y for x, y in zip(a, b)) and len(a) == len(b) == 3,
    "by_name_same": [s is a[s.fileno() - 3] for s in by_name["web"] + by_name["dns"]],
    "names": {k: [s.fileno() for s in v] for k, v in by_name.items()},
    "raw": [[e.fd, e.name, e.kind] for e in raw],
    "left": left,
    "cloexec": [not os.get_inheritable(fd) for fd in (3, 4, 5)],
    "types": [[s.family.name, s.type.name, s.proto] for s in a],
})
"""


def test_repeat_calls_return_the_same_objects_and_unset_env(sockets: Any) -> None:
    """Second call: same socket objects, though LISTEN_* (incl. PIDFDID) is gone; CLOEXEC set."""
    out = run_child(
        REPEAT_CHILD,
        [s.fileno() for s in sockets],
        names=["web", "dns", "web"],
    )
    assert out["same"] is True
    assert out["by_name_same"] == [True, True, True]
    assert out["names"] == {"web": [3, 5], "dns": [4]}
    assert out["raw"] == [[3, "web", "socket"], [4, "dns", "socket"], [5, "web", "socket"]]
    assert out["left"] == []
    assert out["cloexec"] == [True, True, True]
    assert out["types"] == [
        ["AF_INET", "SOCK_STREAM", socket.IPPROTO_TCP],
        ["AF_INET", "SOCK_DGRAM", socket.IPPROTO_UDP],
        ["AF_UNIX", "SOCK_STREAM", 0],
    ]


def test_unset_environment_false_keeps_env_and_cloexec_false_keeps_inheritable(
    sockets: Any,
) -> None:
    """Opt-outs: LISTEN_* stays for a re-read; cloexec=False leaves the fds inheritable."""
    out = run_child(
        """
        import sdactivate
        got = sdactivate.listeners(unset_environment=False, cloexec=False)
        report({"left": sorted(k for k in os.environ if k.startswith("LISTEN_")),
                "inheritable": os.get_inheritable(3), "n": len(got)})
        """,
        [sockets[0].fileno()],
    )
    assert out == {
        "left": ["LISTEN_FDNAMES", "LISTEN_FDS", "LISTEN_PID"],
        "inheritable": True,
        "n": 1,
    }


def test_kinds_and_listeners_skip_non_sockets(tmp_path: Any) -> None:
    """inherited_fds() reports fifo/file/dir/char/mqueue/other; listeners() only sockets."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.mq_open.restype = ctypes.c_int
    qname = b"/sdactivate-test-%d" % os.getpid()
    mq = libc.mq_open(qname, os.O_CREAT | os.O_RDWR, 0o600, None)
    assert mq >= 0, os.strerror(ctypes.get_errno())
    libc.mq_unlink(qname)
    r, w = os.pipe()
    path = tmp_path / "f"
    path.write_text("x")
    opened = [
        os.open(path, os.O_RDONLY),
        os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY),
        os.open("/dev/null", os.O_RDWR),
        mq,
        os.eventfd(0),
    ]
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        out = run_child(
            """
            import sdactivate
            report({"raw": [e.kind for e in sdactivate.inherited_fds()],
                    "socks": [s.fileno() for s in sdactivate.listeners()],
                    "types": [s.type.name for s in sdactivate.listeners()]})
            """,
            [r, *opened, sock.fileno()],
        )
    finally:
        for fd in (r, w, *opened):
            os.close(fd)
        sock.close()
    assert out["raw"] == ["fifo", "file", "dir", "char", "mqueue", "other", "socket"]
    assert out["socks"] == [9]
    assert out["types"] == ["SOCK_SEQPACKET"]


def test_fd_not_open_is_an_error_and_is_remembered(sockets: Any) -> None:
    """LISTEN_FDS beyond the open fds: ActivationError naming the fd; again on a re-call."""
    out = run_child(
        """
        import sdactivate
        os.environ["LISTEN_FDS"] = "40"
        del os.environ["LISTEN_FDNAMES"]
        errors = []
        for _ in range(2):
            try:
                sdactivate.listeners()
            except sdactivate.ActivationError as exc:
                errors.append(str(exc))
        report({"errors": errors, "left": [k for k in os.environ if k.startswith("LISTEN_")]})
        """,
        [sockets[0].fileno()],
    )
    assert len(out["errors"]) == 2
    assert re.search(r"LISTEN_FDS=40: fd \d+ is not open \(Bad file descriptor\)", out["errors"][0])
    assert out["errors"][0] == out["errors"][1]
    assert out["left"] == []


def test_forked_child_sees_the_same_objects(sockets: Any) -> None:
    """After fork the cache (and the fds) carry over: the child gets the parent's objects."""
    out = run_child(
        """
        import sdactivate
        first = sdactivate.listeners()[0]
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            again = sdactivate.listeners()
            os.write(w, b"1" if again[0] is first and again[0].fileno() == 3 else b"0")
            os._exit(0)
        os.close(w)
        answer = os.read(r, 1)
        os.waitpid(pid, 0)
        report(answer.decode())
        """,
        [sockets[0].fileno()],
    )
    assert out == "1"


def test_nonblocking_socket_reports_timeout_zero(sockets: Any) -> None:
    """A socket passed with O_NONBLOCK (NonBlocking=yes) is a timeout-0 socket object."""
    tcp = sockets[0]
    tcp.setblocking(False)
    out = run_child(
        """
        import sdactivate
        s, u = sdactivate.listeners()
        report([s.getblocking(), s.gettimeout(), u.getblocking()])
        """,
        [tcp.fileno(), sockets[1].fileno()],
    )
    assert out == [False, 0.0, True]


def test_pidfdid_in_a_child(sockets: Any) -> None:
    """Own pidfd inode id: accepted; another id: not for us; garbage: ActivationError."""
    out = run_child(
        """
        import sdactivate.activation as a
        me = os.getpid()
        own = a._pidfd_id(me)
        base = {"LISTEN_PID": str(me), "LISTEN_FDS": "1"}
        def run(value):
            try:
                return len(a.inherited_fds(environ={**base, "LISTEN_PIDFDID": value}))
            except a.ActivationError:
                return "error"
        report({"own": own, "same": run(str(own or 0)), "other": run(str((own or 0) + 1)),
                "garbage": run("zz")})
        """,
        [sockets[0].fileno()],
    )
    assert out["garbage"] == "error"
    if out["own"] is None:  # kernel without pidfs: the check is skipped, as libsystemd
        assert out["same"] == out["other"] == 1
    else:
        assert (out["same"], out["other"]) == (1, 0)


def test_injected_environ_is_not_modified_and_not_cached(sockets: Any) -> None:
    """environ= is read only; the process environment stays; objects are still shared."""
    out = run_child(
        """
        import sdactivate
        env = {"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": "1"}
        a = sdactivate.listeners(environ=dict(env))
        b = sdactivate.listeners(environ=env)
        c = sdactivate.listeners()
        report({"env": env, "same": a[0] is b[0] is c[0],
                "process_env_was_read": len(c)})
        """,
        [sockets[0].fileno()],
    )
    assert out["same"] is True
    assert out["env"]["LISTEN_FDS"] == "1"
    assert out["process_env_was_read"] == 1


def test_not_activated_in_this_process() -> None:
    """pytest itself: another pid or no LISTEN_PID gives [] without touching any fd."""
    env = {"LISTEN_PID": str(os.getpid() + 1), "LISTEN_FDS": "3"}
    assert listeners(environ=env) == []
    assert inherited_fds(environ={}) == []


# --- listen() -----------------------------------------------------------------------------


def test_listen_binds_when_not_activated() -> None:
    """Bare: listen() binds the address itself (here port 0 on loopback)."""
    sock = listen("127.0.0.1:0", environ={})
    try:
        assert sock.getsockname()[0] == "127.0.0.1"
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1
    finally:
        sock.close()


LISTEN_CHILD = """
import sdactivate
from sdactivate.errors import ActivationError
socks = sdactivate.listeners()
def where(address, **kw):
    try:
        got = sdactivate.listen(address, **kw)
    except ActivationError as exc:
        return "error: " + str(exc)
    if any(got is s for s in socks):
        return got.fileno()
    got.close()
    return "bound"
tcp_addr = "%s:%d" % socks[0].getsockname()
report({
    "by_name": where("127.0.0.1:1", name="web"),
    "by_address": where(tcp_addr),
    "name_absent_address_matches": where(tcp_addr, name="nope"),
    "udp_by_name": where("udp:127.0.0.1:1", name="dns"),
    "wrong_type": where("127.0.0.1:1", name="dns"),
    "shared_name": where("127.0.0.1:1", name="twice"),
    "fifo": where("127.0.0.1:1", name="pipe"),
    "mismatch": where("127.0.0.1:1"),
})
"""


def test_listen_under_activation(sockets: Any) -> None:
    """listen(): name wins, then address; wrong type/ambiguity/non-socket are errors."""
    tcp, udp, unix = sockets
    r, w = os.pipe()
    try:
        out = run_child(
            LISTEN_CHILD,
            [tcp.fileno(), udp.fileno(), unix.fileno(), unix.fileno(), r],
            names=["web", "dns", "twice", "twice", "pipe"],
        )
    finally:
        os.close(r)
        os.close(w)
    assert out["by_name"] == 3
    assert out["by_address"] == 3
    assert out["name_absent_address_matches"] == 3
    assert out["udp_by_name"] == 4
    assert out["wrong_type"].startswith("error: fd 4 named 'dns' is SOCK_DGRAM")
    assert out["shared_name"].startswith("error: 2 passed sockets are named 'twice'")
    assert out["fifo"] == "error: fd 7 named 'pipe' is a fifo, not a socket"
    assert out["mismatch"].startswith("error: listen('127.0.0.1:1'): sockets were passed")


WILDCARD_CHILD = """
import sdactivate
(sock,) = sdactivate.listeners()
port = sock.getsockname()[1]
report([sdactivate.listen(text % port) is sock for text in (":%d", "%d")])
"""


@pytest.mark.parametrize(
    "bind",
    [
        lambda port: parse_address(f":{port}").bind(),  # what `sdactivate run --listen :P` binds
        lambda port: _bound(socket.AF_INET6, "::", port, v6only=0),  # ListenStream=P
        lambda port: _bound(socket.AF_INET6, "::", port, v6only=1),  # BindIPv6Only=ipv6-only
        lambda port: _bound(socket.AF_INET, "0.0.0.0", port),  # ListenStream=0.0.0.0:P
    ],
    ids=["sdactivate-run", "dual-stack", "v6only", "ipv4-any"],
)
def test_listen_wildcard_port_takes_every_address_socket(bind: Any) -> None:
    """listen(":P") and listen("P") take a passed socket on every address of port P, however
    it was bound (gen-units --port P, sdactivate run --listen :P, 0.0.0.0:P)."""
    port = free_dual_stack_port()
    sock = bind(port)
    try:
        out = run_child(WILDCARD_CHILD, [sock.fileno()], names=["myapp.socket"])
    finally:
        sock.close()
    assert out == [True, True]


MISMATCH_CHILD = """
import sdactivate
from sdactivate.errors import ActivationError
try:
    sdactivate.listen(*ARGS, **KW)
except ActivationError as exc:
    report(str(exc))
else:
    report("no error")
"""


def _mismatch(sock: socket.socket, fd_name: str, *args: Any, **kw: Any) -> str:
    code = MISMATCH_CHILD.replace("ARGS", repr(args)).replace("KW", repr(kw))
    out = run_child(code, [sock.fileno()], names=[fd_name])
    assert isinstance(out, str)
    return out


def test_listen_refuses_a_name_and_address_that_no_passed_socket_has() -> None:
    """The issue's case: gen-units myapp --port P passes 'myapp.socket' on [::]:P; an app
    asking for 127.0.0.1:8080 by the name 'http' gets an error naming both sides and the
    fixes, and never binds (no EADDRINUSE crash loop)."""
    port = free_dual_stack_port()
    sock = parse_address(str(port)).bind()
    try:
        msg = _mismatch(sock, "myapp.socket", "127.0.0.1:8080", name="http")
    finally:
        sock.close()
    assert msg.startswith(
        "listen('127.0.0.1:8080', name='http'): sockets were passed (LISTEN_FDS) but none is"
        " a socket named 'http' or bound to '127.0.0.1:8080';"
        f" got fd 3 named 'myapp.socket' on [::]:{port}."
    )
    for fix in (
        "`gen-units NAME --listen ADDR=http`",
        "`--port PORT --fdname http`",
        "FileDescriptorName=http",
        "`sdactivate run --listen ADDR=http`",
        f"listen(':{port}')",
        "sdactivate.parse_address(ADDR).bind()",
    ):
        assert fix in msg


def test_listen_refuses_an_address_no_passed_socket_has() -> None:
    """Without a name: the error says which address to pass in the unit (ListenStream=) or
    which passed one to ask for."""
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    try:
        msg = _mismatch(sock, "unknown", ":8080")
    finally:
        sock.close()
    assert msg.startswith(
        "listen(':8080'): sockets were passed (LISTEN_FDS) but none is a socket bound to"
        f" '8080'; got fd 3 named 'unknown' on 127.0.0.1:{port}."
    )
    for fix in (
        "`gen-units NAME --listen 8080`",
        "ListenStream=8080 in the .socket unit",
        "`sdactivate run --listen 8080`",
        f"listen('127.0.0.1:{port}')",
    ):
        assert fix in msg


def test_listen_mismatch_names_unix_and_udp_sockets(tmp_path: Any) -> None:
    """Every passed socket is listed with its own address (path, udp:host:port)."""
    path = str(tmp_path / "ctl.sock")
    unix = parse_address(path).bind()
    udp = parse_address("udp:127.0.0.1:0").bind()
    udp_port = udp.getsockname()[1]
    try:
        code = MISMATCH_CHILD.replace("ARGS", repr(("udp:127.0.0.1:1",))).replace("KW", "{}")
        msg = run_child(code, [unix.fileno(), udp.fileno()], names=["ctl", "dns"])
    finally:
        unix.close()
        udp.close()
    assert f"got fd 3 named 'ctl' on {path}, fd 4 named 'dns' on udp:127.0.0.1:{udp_port}." in msg
    assert "ListenDatagram=127.0.0.1:1" in msg
    assert f"listen({path!r}) or listen('udp:127.0.0.1:{udp_port}')" in msg


def test_listen_binds_when_only_non_sockets_were_passed(tmp_path: Any) -> None:
    """A passed FIFO is not a socket: nothing to mismatch, listen() binds the address."""
    r, w = os.pipe()
    try:
        out = run_child(
            """
            import sdactivate
            sock = sdactivate.listen("127.0.0.1:0")
            report([sock.fileno() > 3, sock.getsockname()[0]])
            """,
            [r],
            names=["pipe"],
        )
    finally:
        os.close(r)
        os.close(w)
    assert out == [True, "127.0.0.1"]


def test_listen_binds_when_the_environment_is_another_process() -> None:
    """LISTEN_PID of another process: not for us, so listen() binds (no mismatch error)."""
    env = {"LISTEN_PID": str(os.getpid() + 1), "LISTEN_FDS": "1", "LISTEN_FDNAMES": "x"}
    sock = listen("127.0.0.1:0", name="http", environ=env)
    try:
        assert sock.getsockname()[0] == "127.0.0.1"
    finally:
        sock.close()


def _bound(family: socket.AddressFamily, host: str, port: int, *, v6only: int = 0) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, v6only)
        sock.bind((host, port))
        sock.listen()
    except BaseException:
        sock.close()
        raise
    return sock


def test_inherited_fd_is_frozen() -> None:
    """InheritedFd values cannot be changed after creation."""
    entry = InheritedFd(3, "web", "socket")
    with pytest.raises(AttributeError):
        entry.fd = 4  # type: ignore[misc]


def test_listen_accepts_a_listen_address_and_refuses_a_contradicting_kind() -> None:
    """listen(ListenAddress) binds it; kind= that contradicts it is an AddressError."""
    from sdactivate.addresses import parse_address
    from sdactivate.errors import AddressError

    addr = parse_address("udp:127.0.0.1:0")
    sock = listen(addr, environ={})
    try:
        assert sock.type == socket.SOCK_DGRAM
    finally:
        sock.close()
    with pytest.raises(AddressError, match="contradicts"):
        listen(addr, kind="tcp", environ={})


def test_foreign_environment_is_unset_too(sockets: Any) -> None:
    """LISTEN_PID of another process: [] and, as sd_listen_fds(3), LISTEN_* is unset anyway."""
    out = run_child(
        """
        import sdactivate
        os.environ["LISTEN_PID"] = "1"
        got = sdactivate.listeners()
        report({"got": len(got), "left": sorted(k for k in os.environ if k.startswith("LISTEN_")),
                "fd3_inheritable": os.get_inheritable(3)})
        """,
        [sockets[0].fileno()],
    )
    assert out == {"got": 0, "left": [], "fd3_inheritable": True}  # untouched: not ours


def test_recycled_fd_number_is_not_reported_as_the_old_socket(sockets: Any) -> None:
    """fd 3 closed behind our back and reused by a pipe: a re-read says fifo, and the old
    object is detached (it will never close the pipe)."""
    out = run_child(
        """
        import sdactivate
        env = {"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": "1"}
        old = sdactivate.listeners(environ=env)[0]
        r, w = os.pipe()
        os.dup2(r, 3)
        again = sdactivate.inherited_fds(environ=env)
        report({"kinds": [e.kind for e in again], "socks": len(sdactivate.listeners(environ=env)),
                "old_fileno": old.fileno(), "pipe_open": os.get_inheritable(3) is not None})
        """,
        [sockets[0].fileno()],
    )
    assert out == {"kinds": ["fifo"], "socks": 0, "old_fileno": -1, "pipe_open": True}


# --- the one rule for "the inherited socket for this address" ---------------------------


@pytest.fixture
def pick_pool() -> Any:
    """(socket, name) in fd order: tcp 127.0.0.1 'web', tcp 127.0.0.1 'api', tcp [::1]
    'web', udp 127.0.0.1 'dns'; all on ports the kernel picked."""
    specs = [("127.0.0.1:0", "web"), ("127.0.0.1:0", "api"), ("[::1]:0", "web")]
    pool = [(parse_address(text).bind(), name) for text, name in specs]
    pool.append((parse_address("udp:127.0.0.1:0").bind(), "dns"))
    yield pool
    for sock, _ in pool:
        sock.close()


PICKS = [
    # (address, name, name_decides, expected index, or an error's words)
    ("127.0.0.1:0", None, True, 0),  # port 0: any port of the kind and host, fd order
    ("127.0.0.1:0", "api", True, 1),
    ("127.0.0.1:0", "api", False, 1),
    ("127.0.0.1:0", "nope", False, None),  # port 0 with a name: by that name only
    ("127.0.0.1:0", "nope", True, None),
    ("[::1]:0", None, False, 2),
    ("udp:127.0.0.1:0", None, False, 3),
    (":0", None, True, None),  # every address: no wildcard socket here
    ("127.0.0.1:PORT1", "web", False, 1),  # the address decides, whatever the name
    ("127.0.0.1:PORT1", "api", True, 1),
    ("127.0.0.1:9", "api", True, 1),  # the name decides: the unit says where
    ("127.0.0.1:9", "api", False, None),
    ("127.0.0.1:9", "web", True, "2 passed sockets are named 'web'"),
    ("127.0.0.1:9", "dns", True, "is SOCK_DGRAM, but '127.0.0.1:9' needs SOCK_STREAM"),
]


@pytest.mark.parametrize(
    ("text", "name", "name_decides", "expected"),
    PICKS,
    ids=[f"{t}-{n}-{'name' if d else 'addr'}" for t, n, d, _ in PICKS],
)
def test_pick_inherited(
    pick_pool: Any, text: str, name: str | None, name_decides: bool, expected: Any
) -> None:
    """pick_inherited: name and address, the name deciding or not, port 0 (one rule)."""
    from sdactivate._listen_pick import pick_inherited

    addr = parse_address(text.replace("PORT1", str(pick_pool[1][0].getsockname()[1])))
    if isinstance(expected, str):
        with pytest.raises(ActivationError, match=re.escape(expected)):
            pick_inherited(pick_pool, addr, name, name_decides=name_decides)
    else:
        assert pick_inherited(pick_pool, addr, name, name_decides=name_decides) == expected


def test_listen_port_0_takes_the_passed_socket_of_its_host() -> None:
    """listen('127.0.0.1:0') takes a passed socket on 127.0.0.1 whatever its port (as from
    `sdactivate run --listen 127.0.0.1:0`); another host is still a mismatch. (The copies
    disagreed: listen() refused port 0 as a mismatch, the Upgrader took the socket.)"""
    sock = parse_address("127.0.0.1:0").bind()
    try:
        out = run_child(
            """
            import sdactivate
            from sdactivate.errors import ActivationError
            got = sdactivate.listen("127.0.0.1:0")
            try:
                sdactivate.listen("127.0.0.2:0")
                other = "bound"
            except ActivationError as exc:
                other = str(exc)
            report([got.fileno(), got is sdactivate.listeners()[0], other])
            """,
            [sock.fileno()],
        )
    finally:
        sock.close()
    assert out[:2] == [3, True]
    assert "none is a socket bound to '127.0.0.2:0'" in out[2]
