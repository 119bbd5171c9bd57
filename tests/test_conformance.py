"""Conformance with libsystemd (systemd 252 through systemd-python) on the same input.

Activation: our parse and ``systemd.daemon.listen_fds_with_names`` run in one child process
with the same environment, pid and fds (dup'ed onto 3..10 there, never in pytest).
Notify: a child sends the same fields through libsystemd and through us to one receiver
socket; datagrams, attached fds and credentials must match. ``sd_is_*``: same answers
for a grid of sockets and queries.

Deliberate differences (asserted, so a change is noticed): we refuse invalid fd names
(libsystemd passes any bytes), and we read ``LISTEN_PIDFDID`` (v259; older libsystemd
ignores it, so there the two differ on a garbage value; from v259 on both refuse it).
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import sdactivate
from sdactivate.activation import valid_fd_name
from tests.support import DatagramReceiver as Receiver

systemd_daemon = pytest.importorskip("systemd.daemon")

N_OPEN = 8  # fds 3..10 are open in the child

ACTIVATION_CHILD = """
import json, os, sys
import systemd.daemon
from sdactivate.activation import inherited_fds
from sdactivate.errors import ActivationError
r, w = os.pipe()
for fd in range(3, 3 + %(n_open)d):
    if fd not in (r, w):
        os.dup2(r, fd)
me = str(os.getpid())
out = []
for env in json.loads(sys.stdin.read()):
    for key in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "LISTEN_PIDFDID"):
        os.environ.pop(key, None)
    for key, value in env.items():
        os.environ[key] = value.replace("$PID", me)
    try:
        ours = [[e.fd, e.name] for e in inherited_fds(environ=dict(os.environ),
                                                       unset_environment=False)]
    except ActivationError as exc:
        ours = "error"
    try:
        theirs = sorted([fd, name] for fd, name in
                        systemd.daemon.listen_fds_with_names(False).items())
    except OSError as exc:
        theirs = "error"
    out.append([ours, theirs])
print(json.dumps(out))
""".replace("%(n_open)d", str(N_OPEN))


def both_parse(envs: list[dict[str, str]]) -> list[tuple[Any, Any]]:
    """(ours, libsystemd's) for each environment, computed in one child process."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LISTEN_")}
    proc = subprocess.run(
        [sys.executable, "-c", ACTIVATION_CHILD],
        input=json.dumps(envs),
        capture_output=True,
        text=True,
        env=clean,
        timeout=60,
        check=True,
    )
    return [tuple(pair) for pair in json.loads(proc.stdout)]


P = "$PID"
AGREE = [
    ("good", {"LISTEN_PID": P, "LISTEN_FDS": "2"}),
    ("good named", {"LISTEN_PID": P, "LISTEN_FDS": "2", "LISTEN_FDNAMES": "web:dns"}),
    ("all eight", {"LISTEN_PID": P, "LISTEN_FDS": "8"}),
    ("missing pid", {"LISTEN_FDS": "2"}),
    ("missing count", {"LISTEN_PID": P}),
    ("missing everything", {}),
    ("other pid", {"LISTEN_PID": "1", "LISTEN_FDS": "2"}),
    ("other pid, bad count", {"LISTEN_PID": "1", "LISTEN_FDS": "zz"}),
    ("garbage pid", {"LISTEN_PID": "pid", "LISTEN_FDS": "2"}),
    ("empty pid", {"LISTEN_PID": "", "LISTEN_FDS": "2"}),
    ("zero pid", {"LISTEN_PID": "0", "LISTEN_FDS": "2"}),
    ("negative pid", {"LISTEN_PID": "-1", "LISTEN_FDS": "2"}),
    ("huge pid", {"LISTEN_PID": "99999999999999999999", "LISTEN_FDS": "2"}),
    ("pid trailing space", {"LISTEN_PID": P + " ", "LISTEN_FDS": "2"}),
    ("pid leading space", {"LISTEN_PID": " " + P, "LISTEN_FDS": "2"}),
    ("pid plus", {"LISTEN_PID": "+" + P, "LISTEN_FDS": "2"}),
    ("garbage count", {"LISTEN_PID": P, "LISTEN_FDS": "two"}),
    ("empty count", {"LISTEN_PID": P, "LISTEN_FDS": ""}),
    ("zero count", {"LISTEN_PID": P, "LISTEN_FDS": "0"}),
    ("negative count", {"LISTEN_PID": P, "LISTEN_FDS": "-2"}),
    ("count past open fds", {"LISTEN_PID": P, "LISTEN_FDS": "9"}),
    ("huge count", {"LISTEN_PID": P, "LISTEN_FDS": "2000000"}),
    ("count > INT_MAX-3", {"LISTEN_PID": P, "LISTEN_FDS": "2147483645"}),
    ("count > INT_MAX", {"LISTEN_PID": P, "LISTEN_FDS": "2147483648"}),
    ("count > LONG_MAX", {"LISTEN_PID": P, "LISTEN_FDS": "99999999999999999999"}),
    ("hex count", {"LISTEN_PID": P, "LISTEN_FDS": "0x3"}),
    ("octal count", {"LISTEN_PID": P, "LISTEN_FDS": "07"}),
    ("bad octal count", {"LISTEN_PID": P, "LISTEN_FDS": "08"}),
    ("0b count", {"LISTEN_PID": P, "LISTEN_FDS": "0b11"}),
    ("0o count", {"LISTEN_PID": P, "LISTEN_FDS": "0o6"}),
    ("count with space", {"LISTEN_PID": P, "LISTEN_FDS": " 3"}),
    ("count trailing space", {"LISTEN_PID": P, "LISTEN_FDS": "3 "}),
    ("count float", {"LISTEN_PID": P, "LISTEN_FDS": "2.0"}),
    ("names missing", {"LISTEN_PID": P, "LISTEN_FDS": "3"}),
    ("names too few", {"LISTEN_PID": P, "LISTEN_FDS": "3", "LISTEN_FDNAMES": "a:b"}),
    ("names too many", {"LISTEN_PID": P, "LISTEN_FDS": "1", "LISTEN_FDNAMES": "a:b"}),
    ("names empty string", {"LISTEN_PID": P, "LISTEN_FDS": "1", "LISTEN_FDNAMES": ""}),
    ("names all empty", {"LISTEN_PID": P, "LISTEN_FDS": "3", "LISTEN_FDNAMES": "::"}),
    ("names some empty", {"LISTEN_PID": P, "LISTEN_FDS": "3", "LISTEN_FDNAMES": "a::c"}),
    ("names repeat", {"LISTEN_PID": P, "LISTEN_FDS": "2", "LISTEN_FDNAMES": "w:w"}),
    ("names special", {"LISTEN_PID": P, "LISTEN_FDS": "2", "LISTEN_FDNAMES": "a b:x.socket"}),
    ("names, other pid", {"LISTEN_PID": "1", "LISTEN_FDS": "1", "LISTEN_FDNAMES": "a:b"}),
]
STRICTER = [  # we raise ActivationError, libsystemd 252 accepts
    ("name with control char", {"LISTEN_PID": P, "LISTEN_FDS": "1", "LISTEN_FDNAMES": "a\x01"}),
    ("name non-ASCII", {"LISTEN_PID": P, "LISTEN_FDS": "1", "LISTEN_FDNAMES": "caf\u00e9"}),
    ("name too long", {"LISTEN_PID": P, "LISTEN_FDS": "1", "LISTEN_FDNAMES": "n" * 256}),
    ("name DEL", {"LISTEN_PID": P, "LISTEN_FDS": "1", "LISTEN_FDNAMES": "\x7f"}),
]
PIDFDID = [("PIDFDID garbage", {"LISTEN_PID": P, "LISTEN_FDS": "1", "LISTEN_PIDFDID": "x"})]


def libsystemd_version() -> int:
    """The major version of the libsystemd that systemd-python runs on here: the systemd
    installed beside it (one source package), as `systemctl --version` reports it."""
    systemctl = shutil.which("systemctl") or "/bin/systemctl"
    out = subprocess.run([systemctl, "--version"], capture_output=True, text=True, check=True)
    match = re.match(r"systemd (\d+)", out.stdout)
    assert match is not None, out.stdout
    return int(match.group(1))


BACKSLASH = [  # libsystemd 252 reads backslash escapes in LISTEN_FDNAMES; the manager
    # joins names raw (exec-invoke.c strv_join(..., ":")), so we keep them raw
    ("backslash in name", {"LISTEN_PID": P, "LISTEN_FDS": "1", "LISTEN_FDNAMES": "a\\b"}),
    ("escaped colon", {"LISTEN_PID": P, "LISTEN_FDS": "1", "LISTEN_FDNAMES": "a\\:b"}),
    ("lone backslash", {"LISTEN_PID": P, "LISTEN_FDS": "1", "LISTEN_FDNAMES": "\\"}),
    ("lone backslash, not ours", {"LISTEN_PID": "1", "LISTEN_FDS": "1", "LISTEN_FDNAMES": "\\"}),
]
BACKSLASH_EXPECTED = {  # (ours, libsystemd's)
    "backslash in name": ([[3, "a\\b"]], [[3, "ab"]]),
    "escaped colon": ("error", [[3, "a:b"]]),
    "lone backslash": ([[3, "\\"]], "error"),
    "lone backslash, not ours": ([], "error"),
}


@pytest.fixture(scope="module")
def table_results() -> dict[str, tuple[Any, Any]]:
    rows = AGREE + STRICTER + BACKSLASH + PIDFDID
    return dict(zip([r[0] for r in rows], both_parse([r[1] for r in rows]), strict=True))


@pytest.mark.parametrize("row", [r[0] for r in AGREE])
def test_activation_agrees_with_libsystemd(row: str, table_results: Any) -> None:
    """Same result as sd_listen_fds_with_names(): fds and names, or both an error."""
    ours, theirs = table_results[row]
    assert ours == theirs


@pytest.mark.parametrize("row", [r[0] for r in STRICTER])
def test_activation_is_stricter_on_names(row: str, table_results: Any) -> None:
    """Invalid names: we refuse what libsystemd lets through."""
    ours, theirs = table_results[row]
    assert ours == "error"
    assert theirs != "error"


def test_garbage_pidfdid(table_results: Any) -> None:
    """A LISTEN_PIDFDID that is not a number: we refuse it; libsystemd refuses it too from
    v259, which added the variable (sd_listen_fds(3)); older ones ignore it and pass fd 3."""
    ours, theirs = table_results["PIDFDID garbage"]
    assert ours == "error"
    expected = "error" if libsystemd_version() >= 259 else [[3, "unknown"]]
    assert theirs == expected


@pytest.mark.parametrize("row", [r[0] for r in BACKSLASH])
def test_activation_keeps_backslashes_raw(row: str, table_results: Any) -> None:
    """Backslashes: raw names as the manager wrote them, where libsystemd unescapes."""
    assert table_results[row] == BACKSLASH_EXPECTED[row]


def test_table_exercises_both_outcomes(table_results: Any) -> None:
    """The agreement table holds successes, "not for us" and errors alike."""
    outcomes = [theirs for name, (_, theirs) in table_results.items()]
    assert "error" in outcomes and [] in outcomes
    assert any(isinstance(o, list) and o for o in outcomes)


_text = st.text(
    st.characters(min_codepoint=1, max_codepoint=0x2FF, blacklist_categories=("Cs",)), max_size=8
)
_num = st.one_of(
    st.integers(-3, 12).map(str),
    st.sampled_from(["0x2", "0X8", "010", "011", "0b1", "0o3", "+2", " 2", "2 ", "", "-0"]),
    _text,
)
_names = st.one_of(
    st.lists(st.sampled_from(["a", "", "web", "x y", "\u00e9", "\t"]), min_size=1, max_size=9).map(
        ":".join
    ),
    _text,
)


@st.composite
def _env(draw: st.DrawFn) -> dict[str, str]:
    env = {}
    if draw(st.integers(0, 4)):
        env["LISTEN_PID"] = draw(st.sampled_from([P, P, " " + P, "+" + P, "1", "0" + P]) | _num)
    if draw(st.integers(0, 4)):
        env["LISTEN_FDS"] = draw(_num)
    if draw(st.booleans()):
        env["LISTEN_FDNAMES"] = draw(_names)
    return env


@settings(max_examples=8, deadline=None)
@given(st.lists(_env(), min_size=40, max_size=40))
def test_activation_differential(envs: list[dict[str, str]]) -> None:
    """Random environments: we agree with libsystemd except for invalid names (stricter)."""
    for env, (ours, theirs) in zip(envs, both_parse(envs), strict=True):
        if ours == theirs or "\\" in env.get("LISTEN_FDNAMES", ""):
            continue  # backslashes: see test_activation_keeps_backslashes_raw
        assert ours == "error" and theirs != "error", env
        assert not all(valid_fd_name(name) for _, name in theirs), env


# --- notify -----------------------------------------------------------------------------

NOTIFY_CHILD = """
import json, os, sys
import systemd.daemon
from sdactivate import notify
case = json.loads(sys.argv[1])
fds = [os.open("/dev/null", os.O_RDONLY) for _ in range(case["nfds"])]
state = "\\n".join(f"{k}={v}" for k, v in case["fields"])
theirs = systemd.daemon.notify(state, fds=fds)
ours = notify.send([tuple(p) for p in case["fields"]], fds=fds)
print(json.dumps([bool(theirs), ours, os.fstat(fds[0]).st_ino if fds else None]))
"""


@pytest.fixture(params=["path", "abstract"])
def receiver(request: Any, tmp_path: Path) -> Iterator[tuple[Receiver, str]]:
    if request.param == "path":
        rx = Receiver(str(tmp_path / "notify"))
        target = str(tmp_path / "notify")
    else:
        name = f"sdactivate-conformance-{os.getpid()}"
        rx = Receiver(b"\0" + name.encode())
        target = "@" + name
    yield rx, target
    rx.sock.close()


NOTIFY_CASES = [
    ("ready", [("READY", "1")], 0),
    ("ready+status", [("READY", "1"), ("STATUS", "Serving \u2713 caf\u00e9")], 0),
    ("reloading", [("RELOADING", "1"), ("MONOTONIC_USEC", "123456789")], 0),
    ("stopping", [("STOPPING", "1")], 0),
    ("watchdog", [("WATCHDOG", "1")], 0),
    ("extend", [("EXTEND_TIMEOUT_USEC", "5000000")], 0),
    ("vendor", [("X_SDACTIVATE_GEN", "2")], 0),
    ("fdstore 1", [("FDSTORE", "1"), ("FDNAME", "web")], 1),
    ("fdstore 3", [("FDSTORE", "1"), ("FDNAME", "state"), ("FDPOLL", "0")], 3),
    ("4096 bytes", [("STATUS", "s" * 4089)], 0),
]


@pytest.mark.parametrize(
    ("fields", "nfds"), [c[1:] for c in NOTIFY_CASES], ids=[c[0] for c in NOTIFY_CASES]
)
def test_notify_datagrams_match_libsystemd(
    fields: list[tuple[str, str]], nfds: int, receiver: tuple[Receiver, str]
) -> None:
    """Byte-identical datagram, same number of fds naming the same files, same sender pid."""
    rx, target = receiver
    proc = subprocess.run(
        [sys.executable, "-c", NOTIFY_CHILD, json.dumps({"fields": fields, "nfds": nfds})],
        capture_output=True,
        text=True,
        env={**os.environ, "NOTIFY_SOCKET": target},
        timeout=30,
        check=True,
    )
    theirs_ok, ours_ok, ino = json.loads(proc.stdout)
    assert theirs_ok is True and ours_ok is True
    theirs, ours = rx.recv(), rx.recv()
    assert ours[0] == theirs[0]
    assert len(ours[1]) == len(theirs[1]) == nfds
    for fd in ours[1] + theirs[1]:
        assert os.fstat(fd).st_ino == ino
        os.close(fd)
    assert ours[2] == theirs[2] is not None


ERROR_CHILD = """
import json, sys
import systemd.daemon
from sdactivate import notify
from sdactivate.errors import NotifyError
try:
    theirs = bool(systemd.daemon.notify("READY=1"))
except OSError:
    theirs = "error"
try:
    ours = notify.ready()
except NotifyError:
    ours = "error"
print(json.dumps([theirs, ours]))
"""


@pytest.mark.parametrize(
    "target",
    [None, "relative", "", "@", "/nonexistent/notify", "vsock:2:999"],
    ids=["unset", "relative", "empty", "bare-at", "absent", "vsock"],
)
def test_notify_failure_modes_match_libsystemd(target: str | None) -> None:
    """Unset: both False. Unusable address or nobody listening: both an error."""
    env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
    if target is not None:
        env["NOTIFY_SOCKET"] = target
    proc = subprocess.run(
        [sys.executable, "-c", ERROR_CHILD],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
        check=True,
    )
    theirs, ours = json.loads(proc.stdout)
    assert theirs == ours
    assert ours == (False if target is None else "error")


BARRIER_CHILD = """
import ctypes, json
from sdactivate import notify
lib = ctypes.CDLL("libsystemd.so.0")
lib.sd_notify_barrier.argtypes = [ctypes.c_int, ctypes.c_uint64]
theirs = lib.sd_notify_barrier(0, 5_000_000)
ours = notify.barrier(5)
print(json.dumps([theirs, ours]))
"""


def test_barrier_matches_libsystemd(tmp_path: Path) -> None:
    """sd_notify_barrier() and ours send the same BARRIER=1 with one fd and return once closed."""
    rx = Receiver(str(tmp_path / "notify"))
    got: list[tuple[bytes, int]] = []

    def manager() -> None:
        for _ in range(2):
            data, fds, _ = rx.recv()
            got.append((data, len(fds)))
            for fd in fds:
                os.close(fd)

    thread = threading.Thread(target=manager)
    thread.start()
    try:
        proc = subprocess.run(
            [sys.executable, "-c", BARRIER_CHILD],
            capture_output=True,
            text=True,
            env={**os.environ, "NOTIFY_SOCKET": str(tmp_path / "notify")},
            timeout=30,
            check=True,
        )
    finally:
        thread.join(15)
        rx.sock.close()
    theirs, ours = json.loads(proc.stdout)
    assert theirs == 1 and ours is True
    assert got == [(b"BARRIER=1", 1), (b"BARRIER=1", 1)]


# --- sd_is_* ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Sockets of every kind we check, plus a pipe, a FIFO, a file and a message queue."""
    tmp = tmp_path_factory.mktemp("zoo")
    objs: dict[str, Any] = {}
    objs["tcp4-listen"] = socket.create_server(("127.0.0.1", 0))
    objs["tcp4-bound"] = socket.socket()
    objs["tcp4-bound"].bind(("127.0.0.1", 0))
    objs["tcp6-listen"] = socket.create_server(("::1", 0), family=socket.AF_INET6)
    objs["udp4"] = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    objs["udp4"].bind(("127.0.0.1", 0))
    objs["udp6"] = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    objs["udp6"].bind(("::1", 0))
    objs["unix-listen"] = socket.socket(socket.AF_UNIX)
    objs["unix-listen"].bind(str(tmp / "s"))
    objs["unix-listen"].listen()
    objs["unix-unnamed"] = socket.socket(socket.AF_UNIX)
    objs["unix-dgram"] = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    objs["unix-dgram"].bind(str(tmp / "d"))
    objs["unix-seqpacket"] = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    objs["unix-seqpacket"].bind(str(tmp / "q"))
    objs["unix-seqpacket"].listen()
    r, w = os.pipe()
    objs["pipe"] = r
    objs["_pipe_w"] = w
    os.mkfifo(tmp / "fifo")
    objs["fifo"] = os.open(tmp / "fifo", os.O_RDWR)
    objs["file"] = os.open(tmp / "s.txt", os.O_CREAT | os.O_RDWR)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mq_open.restype = ctypes.c_int
    name = b"/sdactivate-zoo-%d" % os.getpid()
    objs["mqueue"] = libc.mq_open(name, os.O_CREAT | os.O_RDWR, 0o600, None)
    assert objs["mqueue"] >= 0
    libc.mq_unlink(name)
    objs["_paths"] = [str(tmp / "s"), str(tmp / "d"), str(tmp / "q"), str(tmp / "fifo"), ""]
    yield objs
    for key, obj in objs.items():
        if key == "_paths":
            continue
        if isinstance(obj, int):
            os.close(obj)
        else:
            obj.close()


def _fd(obj: Any) -> int:
    return obj if isinstance(obj, int) else obj.fileno()


FAMILIES = [0, socket.AF_INET, socket.AF_INET6, socket.AF_UNIX]
TYPES = [0, socket.SOCK_STREAM, socket.SOCK_DGRAM, socket.SOCK_SEQPACKET]
LISTENING = [(None, -1), (True, 1), (False, 0)]


def _things(zoo: dict[str, Any]) -> list[tuple[str, Any]]:
    return [(k, v) for k, v in zoo.items() if not k.startswith("_")]


def test_is_socket_agrees(zoo: dict[str, Any]) -> None:
    """is_socket(family, type, listening) == sd_is_socket() on every fd and query."""
    checked = 0
    for name, obj in _things(zoo):
        for family in FAMILIES:
            for type_ in TYPES:
                for ours_l, theirs_l in LISTENING:
                    ours = sdactivate.is_socket(obj, family=family, type=type_, listening=ours_l)
                    theirs = systemd_daemon.is_socket(_fd(obj), family, type_, theirs_l)
                    assert ours == theirs, (name, family, type_, ours_l)
                    checked += ours
    assert checked > 20


def test_is_socket_inet_agrees(zoo: dict[str, Any]) -> None:
    """is_socket_inet(family, type, listening, port) == sd_is_socket_inet()."""
    for name, obj in _things(zoo):
        ports = [0, 1]
        if isinstance(obj, socket.socket) and obj.family != socket.AF_UNIX:
            ports.append(obj.getsockname()[1])
        for family in FAMILIES[:3]:
            for type_ in TYPES[:3]:
                for ours_l, theirs_l in LISTENING:
                    for port in ports:
                        ours = sdactivate.is_socket_inet(
                            obj, family=family, type=type_, listening=ours_l, port=port
                        )
                        theirs = systemd_daemon.is_socket_inet(
                            _fd(obj), family, type_, theirs_l, port
                        )
                        assert ours == theirs, (name, family, type_, ours_l, port)


def test_is_socket_unix_agrees(zoo: dict[str, Any]) -> None:
    """is_socket_unix(type, listening, path) == sd_is_socket_unix(), paths incl. unnamed."""
    for name, obj in _things(zoo):
        for type_ in TYPES:
            for ours_l, theirs_l in LISTENING:
                for path in [None, *zoo["_paths"]]:
                    ours = sdactivate.is_socket_unix(obj, type=type_, listening=ours_l, path=path)
                    theirs = systemd_daemon.is_socket_unix(_fd(obj), type_, theirs_l, path)
                    assert ours == theirs, (name, type_, ours_l, path)


def test_is_fifo_and_mqueue_agree(zoo: dict[str, Any]) -> None:
    """is_fifo(path) == sd_is_fifo(); kind 'mqueue' exactly where sd_is_mq() says so."""
    from sdactivate._fdinfo import fd_kind

    for name, obj in _things(zoo):
        fd = _fd(obj)
        for path in [None, *zoo["_paths"][3:]]:
            assert sdactivate.is_fifo(obj, path=path) == systemd_daemon.is_fifo(fd, path), name
        assert (fd_kind(fd) == "mqueue") == systemd_daemon.is_mq(fd), name


def test_abstract_unix_path(zoo: dict[str, Any]) -> None:
    """Abstract names (which systemd-python cannot pass) match as '@name' or b'\\0name'."""
    sock = socket.socket(socket.AF_UNIX)
    name = f"sdactivate-abstract-{os.getpid()}"
    sock.bind(b"\0" + name.encode())
    try:
        assert sdactivate.is_socket_unix(sock, path="@" + name)
        assert sdactivate.is_socket_unix(sock.fileno(), path=b"\0" + name.encode())
        assert not sdactivate.is_socket_unix(sock, path="@" + name[:-1])
        assert not sdactivate.is_socket_unix(sock, path="/" + name)
    finally:
        sock.close()


def test_helpers_leave_the_fd_open(zoo: dict[str, Any]) -> None:
    """Probing an int fd borrows it: the descriptor is still open and the same afterwards."""
    fd = zoo["tcp4-listen"].fileno()
    for _ in range(3):
        assert sdactivate.is_socket(fd, listening=True)
    assert os.fstat(fd)
    assert zoo["tcp4-listen"].fileno() == fd


# --- EXTEND_TIMEOUT_USEC= ---------------------------------------------------------------
# service.c reads EXTEND_TIMEOUT_USEC= with safe_atou64() and ignores 0 and USEC_INFINITY;
# libsystemd's sd_watchdog_enabled() reads WATCHDOG_USEC= with exactly that rule (safe_atou64,
# then timestamp_is_set), so it answers for PID 1 here.
EXTEND_CHILD = """
import ctypes, ctypes.util, json, os, sys
from sdactivate.supervisor.events import parse_extend_timeout
lib = ctypes.CDLL("libsystemd.so.0")
lib.sd_watchdog_enabled.argtypes = [ctypes.c_int, ctypes.POINTER(ctypes.c_uint64)]
out = []
for value in json.loads(sys.stdin.read()):
    os.environ["WATCHDOG_USEC"] = value
    usec = ctypes.c_uint64(0)
    r = lib.sd_watchdog_enabled(0, ctypes.byref(usec))
    out.append([parse_extend_timeout(value), usec.value if r > 0 else None])
print(json.dumps(out))
"""

EXTEND_VALUES = [
    "5", "+5", " 5", "\t5", "\n5", "\r5", "\v5", " \v5", "\f5", "- 5", "+ 5", "+-5", "-0",
    "-5", " -5", "\v-5", "0x10", "0X1f", "0x", "0xg", "0x-5", "0x+5", " 0x 5", "010", "08",
    "0b101", "0B1", "0b", "0b2", "0o17", "0O7", "0o8", "-0b1", "+0o7", "1e6", "5 ", "5\n", "",
    "0", "00", "18446744073709551614", "18446744073709551615", "18446744073709551616",
    "0xfffffffffffffffe", "0xffffffffffffffff", "0x10000000000000000", "1" * 5000,
    "0" * 5000 + "5", "\u0663", "\u00b2", "\u00a05", "5_000",
]  # fmt: skip


def both_extend(values: list[str]) -> list[tuple[Any, Any]]:
    """(ours, libsystemd's) usec for each value, computed in one child process."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("WATCHDOG_")}
    proc = subprocess.run(
        [sys.executable, "-c", EXTEND_CHILD],
        input=json.dumps(values),
        capture_output=True,
        text=True,
        env=clean,
        timeout=60,
        check=True,
    )
    return [tuple(pair) for pair in json.loads(proc.stdout)]


def test_extend_timeout_agrees_with_libsystemd() -> None:
    """parse_extend_timeout() takes what systemd's safe_atou64() + timestamp_is_set() take,
    as the same value: signs, whitespace, C prefixes, 0, USEC_INFINITY, past 64 bits."""
    results = both_extend(EXTEND_VALUES)
    assert {v: o for v, (o, t) in zip(EXTEND_VALUES, results, strict=True) if o != t} == {}
    accepted = [o for o, _ in results if o is not None]
    assert 10 < len(accepted) < len(EXTEND_VALUES)  # both answers occur


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(alphabet=" \t\v+-0123456789abfxoXOB", max_size=24), min_size=1))
def test_extend_timeout_differential(values: list[str]) -> None:
    """The same agreement on generated values built from the characters the rule cares about."""
    for value, (ours, theirs) in zip(values, both_extend(values), strict=True):
        assert ours == theirs, value
