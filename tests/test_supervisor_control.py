"""The supervisor's control socket and what it takes from generations and clients: no
request, notify field or other user can end the supervisor, squat its socket or make a
legitimate reload fail (issue 16 items 3, 5, 6, 8).

Pure parts (request parsing, EXTEND_TIMEOUT_USEC=, the loop's wait) are property-tested; the
rest runs a real ``sdactivate run`` launched by :func:`sdactivate.testing.launch`, with
attackers as ``nobody`` (setpriv(1), when root). Every wait has a deadline.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sdactivate.errors import SupervisorError
from sdactivate.supervisor import control, runner
from sdactivate.supervisor import machine as m
from sdactivate.supervisor.client import request, request_reload, request_status
from sdactivate.supervisor.events import parse_extend_timeout
from sdactivate.testing import NotifyReceiver, Process, launch
from tests.support import SQUAT

PY = sys.executable
CHECKOUT = str(Path(__file__).resolve().parent.parent)
NOBODY = ("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups")
U64_INFINITY = 2**64 - 1

# Generation 1 sends the notify messages in $APP_MESSAGES (a JSON list) and BARRIER=1 (the
# supervisor closes the fd it carries once every earlier message was handled), then, if
# $APP_FIFO is set, says so on $APP_FIFO.out and waits for EOF on $APP_FIFO.in; then READY=1.
# It serves nothing and exits on SIGTERM.
APP = r"""
import array, json, os, select, signal, socket
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
addr = os.environ["NOTIFY_SOCKET"]
addr = "\0" + addr[1:] if addr.startswith("@") else addr
first = os.environ["SDACTIVATE_GENERATION"] == "1"
with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
    if first:
        for msg in json.loads(os.environ.get("APP_MESSAGES", "[]")):
            s.sendto(msg.encode(), addr)
        r, w = os.pipe()
        fds = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [w]))]
        s.sendmsg([b"BARRIER=1"], fds, 0, addr)  # socket.send_fds() drops the address
        os.close(w)
        select.select([r], [], [], 20)
        if os.environ.get("APP_FIFO"):
            with open(os.environ["APP_FIFO"] + ".out", "w") as out:
                out.write("sent\n")
            open(os.environ["APP_FIFO"] + ".in").read()
    s.sendto(b"READY=1", addr)
signal.sigwait({signal.SIGTERM})
"""


class Supervisor:
    """``sdactivate run`` with :data:`APP` as its generations."""

    def __init__(
        self, tmp_path: Path, *, messages: Sequence[str] = (), wait_ready: bool = True, **env: str
    ) -> None:
        app = tmp_path / "app.py"
        app.write_text(APP)
        self.rx = NotifyReceiver(thread=True)
        environ = {
            k: v for k, v in os.environ.items() if not k.startswith(("NOTIFY_", "WATCHDOG_"))
        }
        environ["APP_MESSAGES"] = json.dumps(list(messages))
        environ.update(env)
        argv = [PY, "-m", "sdactivate", "run", "--ready-timeout", "10", "--drain-timeout", "5",
                "--", PY, str(app)]  # fmt: skip
        self.proc: Process = launch(
            argv, ["127.0.0.1:0"], names=["http"], notify=self.rx, env=environ
        )
        if wait_ready:
            self.rx.wait_for("READY", "1", timeout=20)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
        code = self.proc.wait(20)
        self.close()
        return code

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.rx.close()
        self.proc.close_sockets()


@pytest.fixture
def supervisor(tmp_path: Path) -> Iterator[Supervisor]:
    sup = Supervisor(tmp_path, TMPDIR=str(tmp_path))
    try:
        yield sup
    finally:
        sup.close()


@pytest.fixture
def nobody() -> tuple[str, ...]:
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv(1) to act as another user")
    return NOBODY


def _cli(*args: str, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": CHECKOUT}
    return subprocess.run(
        [*prefix, PY, "-m", "sdactivate", *args],
        capture_output=True, text=True, timeout=60, env=env, cwd="/",
    )  # fmt: skip


# --- the request line (pure) ------------------------------------------------------------------


@given(st.binary(max_size=control.MAX_LINE))
@settings(max_examples=300, deadline=None)
def test_any_request_line_parses_or_is_a_value_error(line: bytes) -> None:
    """parse_request is total: a dict with a str op, or ValueError (never another error)."""
    try:
        req = control.parse_request(line)
    except ValueError:
        return
    assert isinstance(req, dict) and isinstance(req["op"], str)


@given(
    st.recursive(
        st.none() | st.integers() | st.text(), lambda c: st.lists(c) | st.dictionaries(st.text(), c)
    )
)
@settings(max_examples=200, deadline=None)
def test_any_json_value_parses_or_is_a_value_error(value: object) -> None:
    """Well-formed JSON of any shape: only an object with a string op is a request."""
    line = json.dumps(value).encode()
    ok = isinstance(value, dict) and isinstance(value.get("op"), str)
    if ok:
        assert control.parse_request(line) == value
    else:
        with pytest.raises(ValueError):
            control.parse_request(line)


@pytest.mark.parametrize(
    "line",
    [b"[" * 4000, b'{"op":' * 1000, b"{" * 4000, b"9" * 4300, b'{"op": "\xff"}', b"\x00"],
    ids=["brackets", "nested-op", "braces", "huge-int", "bad-utf8", "nul"],
)
def test_hostile_request_lines_are_value_errors(line: bytes) -> None:
    """Deep nesting (RecursionError in the decoder), huge ints, bad UTF-8: ValueError."""
    with pytest.raises(ValueError, match="bad request"):
        control.parse_request(line)


# --- EXTEND_TIMEOUT_USEC= and the loop's wait (pure) ------------------------------------------


@pytest.mark.parametrize(
    ("value", "usec"),
    [
        ("5000000", 5_000_000),
        (str(10**16), 10**16),  # notify.extend_timeout(1e10)
        (str(U64_INFINITY - 1), U64_INFINITY - 1),
        (str(U64_INFINITY), None),  # USEC_INFINITY: systemd ignores it
        (str(U64_INFINITY + 1), None),  # not a u64
        ("9" * 5000, None),
        ("0", None),
        ("\u00b2", None),  # str.isdigit() is true for a superscript two
        ("\u0663", None),  # Arabic-Indic three
        ("-5", None),
        (" 5", 5),
        ("+5", 5),
        ("0x10", 16),
        ("010", 8),
        ("0b11", 3),
        ("-0", None),
        ("5 ", None),
        ("1e6", None),
        ("", None),
        ("0" * 5000 + "5", 5),
    ],
    ids=[
        "5s", "1e10s", "u64-max-1", "usec-infinity", "past-u64", "5000-digits", "zero",
        "superscript", "arabic-indic", "negative", "space", "plus", "hex", "octal", "0b",
        "minus-zero", "trailing-space", "float", "empty", "5000-zeros",
    ],
)  # fmt: skip
def test_extend_timeout_values(value: str, usec: int | None) -> None:
    """What the supervisor acts on is what systemd does: safe_atou64() (C prefixes, leading
    whitespace and '+'), not 0 or USEC_INFINITY (service.c ignores both); tests/
    test_conformance.py checks the same against libsystemd."""
    assert parse_extend_timeout(value) == usec


def _starting_runner(tmp_path: Path) -> runner.Runner:
    """A Runner whose machine has generation 1 starting (nothing spawned, no sockets)."""
    r = runner.Runner(["/bin/true"], [], environ={"TMPDIR": str(tmp_path)}, pid=os.getpid())
    r.machine.handle(m.Start())
    r.machine.handle(m.Spawned(1, 999_999))
    return r


NOTIFY_KEYS = ["READY", "WATCHDOG", "EXTEND_TIMEOUT_USEC", "STATUS", "MAINPID", "ERRNO", "X"]


@given(
    st.lists(
        st.tuples(
            st.sampled_from(NOTIFY_KEYS),
            st.one_of(st.text(max_size=30), st.integers(min_value=-1, max_value=2**70).map(str)),
        ),
        max_size=8,
    )
)
@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_no_notify_fields_break_the_loop(tmp_path: Path, fields: list[tuple[str, str]]) -> None:
    """Whatever a starting generation sends, handling it raises nothing, and the next
    epoll_wait(2) takes the loop's timeout (a huge EXTEND_TIMEOUT_USEC= once overflowed it)."""
    r = _starting_runner(tmp_path)
    a, b = socket.socketpair()
    with a, b, r._sel:
        r._on_child_message(1, fields)
        timeout = r._wait_timeout()
        assert timeout is None or 0 <= timeout <= runner._MAX_WAIT
        b.send(b"x")  # readable: select returns at once, or raises while converting
        r._sel.register(a, 1)
        assert r._sel.select(timeout)


_FIELD = st.tuples(
    st.sampled_from([k.encode() for k in NOTIFY_KEYS]),
    st.binary(max_size=40) | st.integers(min_value=-1, max_value=2**80).map(lambda i: b"%d" % i),
).map(lambda kv: kv[0] + b"=" + kv[1])


@given(st.binary(max_size=4200) | st.lists(_FIELD, max_size=6).map(b"\n".join))
@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_no_notify_datagram_breaks_the_loop(tmp_path: Path, data: bytes) -> None:
    """A starting generation's datagram, as the runner reads it (the manager's parsing,
    then its fields): refused as a whole, or handled without an error, the loop's wait valid."""
    from sdactivate.errors import NotifyValueError
    from sdactivate.notify import parse_message

    r = _starting_runner(tmp_path)
    with r._sel:
        try:
            fields = parse_message(data)
        except NotifyValueError:
            return
        r._on_child_message(1, fields)
        timeout = r._wait_timeout()
        assert timeout is None or 0 <= timeout <= runner._MAX_WAIT


# --- the control directory ---------------------------------------------------------------------


def test_control_socket_is_private_and_unguessable(tmp_path: Path) -> None:
    """A 0700 directory with a random name in $RUNTIME_DIRECTORY first; removed on close."""
    rundir = tmp_path / "run"
    rundir.mkdir()
    env = {"RUNTIME_DIRECTORY": f"{rundir}:/elsewhere", "TMPDIR": str(tmp_path)}
    servers = [control.ControlServer(env) for _ in range(2)]
    try:
        a, b = (Path(s.directory) for s in servers)
        assert a.parent == rundir and a.name.startswith(control.DIR_PREFIX) and a != b
        assert (a.stat().st_mode & 0o7777) == 0o700 and a.stat().st_uid == os.geteuid()
        assert (a / "control").is_socket()
    finally:
        for s in servers:
            s.close()
    assert list(rundir.iterdir()) == []


def test_control_dir_falls_back_when_a_place_is_not_writable(tmp_path: Path) -> None:
    """A RUNTIME_DIRECTORY that cannot take the directory is skipped for the next place."""
    env = {"RUNTIME_DIRECTORY": str(tmp_path / "missing"), "TMPDIR": str(tmp_path)}
    server = control.ControlServer(env)
    try:
        assert Path(server.directory).parent == tmp_path
    finally:
        server.close()


def test_stale_control_dirs_are_swept(tmp_path: Path) -> None:
    """A killed supervisor's directory (socket refusing, old) goes at the next start; a live
    one, a young one and another's name stay."""
    dead = control.ControlServer({"TMPDIR": str(tmp_path)})
    dead.sock.close()  # as if killed: the file stays, nothing listens
    os.close(dead._dirfd)
    live = control.ControlServer({"TMPDIR": str(tmp_path)})
    other = tmp_path / "unrelated"
    other.mkdir()
    try:
        now = time.time()
        assert control.sweep_stale(str(tmp_path), now=now) == []  # both young
        assert control.sweep_stale(str(tmp_path), now=now + 120) == [dead.directory]
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
            [Path(live.directory).name, "unrelated"]
        )
    finally:
        live.close()


def test_accept_is_bounded_per_turn(tmp_path: Path) -> None:
    """One accept() takes at most ACCEPT_PER_TURN connections; the rest wait their turn."""
    server = control.ControlServer({"TMPDIR": str(tmp_path)})
    clients = []
    try:
        for _ in range(control.ACCEPT_PER_TURN + 5):
            c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            c.connect(server.path)
            clients.append(c)
        first, second = server.accept(), server.accept()
        assert (len(first), len(second)) == (control.ACCEPT_PER_TURN, 5)
        for conn in first + second:
            conn.sock.close()
    finally:
        for c in clients:
            c.close()
        server.close()


def test_a_peer_of_another_uid_is_closed_before_any_read(nobody: tuple[str, ...]) -> None:
    """Should another user reach the socket anyway (here: its directory opened up), accept()
    closes that peer at once (SO_PEERCRED) and returns nothing for it."""
    base = tempfile.mkdtemp(prefix="sdactivate-test-")  # tmp_path's parents are 0700
    server = control.ControlServer({"TMPDIR": base})
    try:
        os.chmod(base, 0o755)
        os.chmod(server.directory, 0o755)
        os.chmod(server.path, 0o777)
        script = (
            "import socket, sys; s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]);"
            " print('connected', flush=True); s.settimeout(20); print(repr(s.recv(10)))"
        )
        proc = subprocess.Popen(
            [*nobody, PY, "-c", script, server.path], stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout is not None
        assert proc.stdout.readline() == "connected\n"
        assert server.accept() == []
        assert proc.stdout.readline() == "b''\n"  # EOF at once, not a 20 s timeout
        assert proc.wait(10) == 0
        proc.stdout.close()
    finally:
        server.close()
        os.rmdir(base)


def test_no_place_for_the_control_socket_is_one_line(tmp_path: Path) -> None:
    """`run` where no directory can take the control socket: exit 1, one line, no
    traceback, no generation started."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare(1) for a private read-only /tmp")
    marker = tmp_path / "started"
    script = 'mount -t tmpfs -o ro sdactivate-test /tmp && exec "$@"'
    argv = [PY, "-m", "sdactivate", "run", "--listen", "127.0.0.1:0", "--",
            "/bin/touch", str(marker)]  # fmt: skip
    result = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "-", *argv],
        capture_output=True, text=True, timeout=60,
        env={"PYTHONPATH": CHECKOUT, "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    if "mount" in result.stderr and "sdactivate" not in result.stderr:
        pytest.skip(f"cannot make a read-only mount here: {result.stderr.strip()}")
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot create the control socket's directory" in lines[0], lines
    assert "/tmp: Read-only file system" in lines[0]
    assert not marker.exists()


# --- a live supervisor -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "messages",
    [
        ["EXTEND_TIMEOUT_USEC=" + str(10**16)],  # notify.extend_timeout(1e10)
        ["EXTEND_TIMEOUT_USEC=\u00b2"],
        ["EXTEND_TIMEOUT_USEC=" + "9" * 4000],  # a datagram under 4096 bytes
        ["EXTEND_TIMEOUT_USEC=" + str(U64_INFINITY - 1)],
        ["EXTEND_TIMEOUT_USEC=" + str(U64_INFINITY + 1), "EXTEND_TIMEOUT_USEC=-1"],
    ],
    ids=["1e10s", "superscript", "4000-digits", "u64-max-1", "past-u64"],
)
def test_odd_extend_timeouts_do_not_end_the_supervisor(tmp_path: Path, messages: list[str]) -> None:
    """A starting generation's EXTEND_TIMEOUT_USEC= of any size or shape: the supervisor
    waits with it armed (a status request is answered after an epoll_wait), the generation
    still takes over, a reload works, and SIGTERM ends the supervisor with status 0."""
    fifo = tmp_path / "app"
    os.mkfifo(f"{fifo}.out")
    os.mkfifo(f"{fifo}.in")
    out = os.open(f"{fifo}.out", os.O_RDONLY | os.O_NONBLOCK)
    sup = Supervisor(
        tmp_path, messages=messages, wait_ready=False, TMPDIR=str(tmp_path), APP_FIFO=str(fifo)
    )
    try:
        assert select.select([out], [], [], 20)[0], "generation 1 sent nothing"
        assert request_status(sup.pid, timeout=10)["phase"] == "starting"
        os.close(os.open(f"{fifo}.in", os.O_WRONLY))  # EOF: generation 1 sends READY=1
        sup.rx.wait_for("READY", "1", timeout=20)
        assert request_reload(sup.pid, timeout=20).ok
        assert sup.stop() == 0
    finally:
        os.close(out)
        sup.close()


def _send_raw(pid: int, data: bytes, *, timeout: float = 5.0) -> bytes:
    """Connect to supervisor ``pid`` the way the client does, send ``data``, read to EOF."""
    from sdactivate.supervisor.client import _connect

    with _connect(pid, timeout, os.environ) as s:
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            out = b""
            while chunk := s.recv(65536):
                out += chunk
        except (ConnectionResetError, BrokenPipeError):
            out = b""
        return out


@pytest.mark.parametrize(
    "data",
    [b"[" * 4000 + b"\n", b"{" * 4000 + b"\n", b"x" * 10000, b"\xff\xfe\n", b"[]\n",
     b'{"op": 1}\n', b'{"op": "status"', b"", b"\n\n\n", b"9" * 4300 + b"\n"],
    ids=["brackets", "braces", "too-long", "bad-utf8", "list", "op-int", "no-newline", "empty",
         "blank-lines", "huge-int"],
)  # fmt: skip
def test_malformed_requests_do_not_end_the_supervisor(supervisor: Supervisor, data: bytes) -> None:
    """Each is answered with ok=false or closed; the supervisor keeps answering."""
    answer = _send_raw(supervisor.pid, data)
    if answer:
        assert json.loads(answer)["ok"] is False
    assert request_status(supervisor.pid, timeout=10)["phase"] == "running"


@pytest.fixture(scope="module")
def shared_supervisor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Supervisor]:
    tmp = tmp_path_factory.mktemp("shared")
    sup = Supervisor(tmp, TMPDIR=str(tmp))
    try:
        yield sup
    finally:
        sup.close()


@given(st.binary(max_size=6000))
@settings(max_examples=60, deadline=None)
def test_no_request_ends_the_supervisor(shared_supervisor: Supervisor, data: bytes) -> None:
    """Random bytes on the control socket: the supervisor still answers a status request."""
    _send_raw(shared_supervisor.pid, data)
    assert request_status(shared_supervisor.pid, timeout=10)["phase"] == "running"


def test_idle_clients_cannot_starve_a_reload(supervisor: Supervisor) -> None:
    """More idle (permitted) connections than the supervisor keeps: the oldest are dropped,
    fds stay bounded, and a reload still gets its answer."""
    from sdactivate.supervisor.client import _connect

    before = len(os.listdir(f"/proc/{supervisor.pid}/fd"))
    idle = [_connect(supervisor.pid, 5, os.environ) for _ in range(runner._MAX_READING * 3)]
    try:
        assert request_reload(supervisor.pid, timeout=20).ok
        held = len(os.listdir(f"/proc/{supervisor.pid}/fd"))
        assert held <= before + runner._MAX_READING + 2, (before, held)
    finally:
        for s in idle:
            s.close()


def test_other_users_cannot_reach_the_control_socket(
    supervisor: Supervisor, nobody: tuple[str, ...]
) -> None:
    """`reload --pid` as another user: exit 1, one line saying permission denied (it was a
    ConnectionResetError traceback), and no handover happened."""
    result = _cli("reload", "--pid", str(supervisor.pid), "--timeout", "10", prefix=nobody)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"sdactivate: error: permission denied: the control socket of pid {supervisor.pid} is"
        " only for root and the user it runs as (uid 0); run as one of them (e.g. with sudo)"
    ]
    assert request_status(supervisor.pid, timeout=10)["generation"] == 1


def test_reload_from_another_user_namespace_of_the_same_user(
    supervisor: Supervisor, tmp_path: Path
) -> None:
    """A client of the same user in a user namespace of its own (PrivateUsers= gives each
    process of a unit one, ExecReload= included) may not read /proc/PID/fd; it finds the
    socket among its own control directories ($TMPDIR here) and the reload works."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare(1)")
    probe = subprocess.run(["unshare", "--user", "--map-root-user", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"no user namespaces here: {probe.stderr.decode().strip()}")
    fds = f"/proc/{supervisor.pid}/fd"
    argv = [PY, "-c", f"import os; [os.readlink('{fds}/' + n) for n in os.listdir('{fds}')]"]
    refused = subprocess.run(["unshare", "--user", "--map-root-user", *argv], capture_output=True)
    assert b"PermissionError" in refused.stderr, refused  # the /proc way is closed there
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": CHECKOUT, "TMPDIR": str(tmp_path)}
    result = subprocess.run(
        ["unshare", "--user", "--map-root-user", PY, "-m", "sdactivate", "reload", "--pid",
         str(supervisor.pid), "--timeout", "20"],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert result.returncode == 0 and "handover done" in result.stdout, result
    elsewhere = subprocess.run(
        ["unshare", "--user", "--map-root-user", PY, "-m", "sdactivate", "reload", "--pid",
         str(supervisor.pid), "--timeout", "20"],
        capture_output=True, text=True, timeout=60, env={**env, "TMPDIR": "/nonexistent"},
    )  # fmt: skip
    assert elsewhere.returncode == 1 and "permission denied" in elsewhere.stderr, elsewhere


FLOOD = r"""
import os, socket, sys, time
pid, until = sys.argv[1], time.monotonic() + float(sys.argv[2])
targets = [b"\0sdactivate-run/%d/%s" % (os.stat("/proc/self/ns/pid").st_ino, pid.encode())]
for line in open("/proc/net/unix").read().splitlines()[1:]:  # world-readable names
    fields = line.split()
    if len(fields) >= 8 and "sdactivate-control." in fields[7]:
        targets.append(fields[7])
print(len(targets), flush=True)
n = 0
while time.monotonic() < until:
    for t in targets:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.setblocking(False)
        try:
            s.connect(t)
            n += 1
        except OSError:
            pass
        s.close()
print(n, flush=True)
"""


def test_a_connection_flood_by_another_user_fails_no_reload(
    supervisor: Supervisor, nobody: tuple[str, ...], tmp_path: Path
) -> None:
    """4 processes of `nobody` connect to every control endpoint they can name (the old
    abstract name, any path in /proc/net/unix) as fast as they can, while 10 reloads run:
    every reload succeeds (18 of 22 failed with the abstract socket)."""
    flooders = [
        subprocess.Popen(
            [*nobody, PY, "-c", FLOOD, str(supervisor.pid), "30"], stdout=subprocess.PIPE, text=True
        )
        for _ in range(4)
    ]
    try:
        assert all(f.stdout is not None and int(f.stdout.readline()) >= 1 for f in flooders)
        outcomes = [request_reload(supervisor.pid, timeout=20) for _ in range(10)]
        assert [o.ok for o in outcomes] == [True] * 10, [o.message for o in outcomes]
    finally:
        for f in flooders:
            f.send_signal(signal.SIGKILL)
            f.wait(10)
            if f.stdout is not None:
                f.stdout.close()


def test_a_squatter_cannot_stop_the_supervisor_starting(
    nobody: tuple[str, ...], tmp_path: Path
) -> None:
    """`nobody` binds the control names of the next 3000 pids (the old abstract scheme);
    supervisors still start, serve status and stop (it was an EADDRINUSE traceback)."""
    squatter = subprocess.Popen([*nobody, PY, "-c", SQUAT, "3000"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert squatter.stdout is not None
        first, held = map(int, squatter.stdout.readline().split())
        assert held > 2500
        for i in range(3):
            home = tmp_path / f"s{i}"
            home.mkdir()
            sup = Supervisor(home, TMPDIR=str(home))
            try:
                assert first < sup.pid < first + 3000 or sup.pid < first  # pids wrapped
                assert request_status(sup.pid, timeout=10)["phase"] == "running"
                assert sup.stop() == 0
            finally:
                sup.close()
    finally:
        squatter.kill()
        squatter.wait(10)
        for f in (squatter.stdin, squatter.stdout):
            if f is not None:
                f.close()


def test_reload_of_a_pid_that_is_no_supervisor() -> None:
    """Our own pid has no control directory; a pid that does not exist is said so."""
    with pytest.raises(SupervisorError, match=f"no sdactivate supervisor with pid {os.getpid()}"):
        request(os.getpid(), "status", timeout=2)
    dead = subprocess.Popen(["/bin/true"])
    dead.wait()
    with pytest.raises(SupervisorError, match=f"no process with pid {dead.pid}"):
        request(dead.pid, "status", timeout=2)


# --- out of fds: the control socket's accept ---------------------------------------------------
EMFILE_CHILD = """
import json, os, resource, signal, socket, sys, time
from sdactivate.supervisor import runner
signal.alarm(60)  # a bug here must not hang the test
r = runner.Runner(["/bin/true"], [], environ={"TMPDIR": sys.argv[1]}, pid=os.getpid())
wake_r, wake_w = r._open()
null = os.open("/dev/null", os.O_RDONLY)
highest = max(int(fd) for fd in os.listdir("/proc/self/fd"))
resource.setrlimit(resource.RLIMIT_NOFILE, (highest + 16,
                   resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
fill = []
while True:
    try:
        fill.append(os.dup(null))
    except OSError:
        break
os.close(fill.pop())  # the one free fd is the client's
client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
client.connect(r._control.path)  # queued: the supervisor has no fd left to accept it with
client.sendall(b'{"op": "status"}\\n')
turns, paused, end = 0, False, time.monotonic() + 0.5
while time.monotonic() < end:
    r._step(wake_r)
    turns += 1
    paused = paused or getattr(r._control, "paused_until", None) is not None
for fd in fill:
    os.close(fd)
client.settimeout(0)
answer, end = b"", time.monotonic() + 20
while not answer.endswith(b"\\n") and time.monotonic() < end:
    r._step(wake_r)
    try:
        answer += client.recv(4096)
    except BlockingIOError:
        pass
print(json.dumps({"turns": turns, "paused": paused, "answer": answer.decode()}))
"""


def test_accept_out_of_fds_pauses_instead_of_spinning(tmp_path: Path) -> None:
    """EMFILE on the control socket's accept (RLIMIT_NOFILE exhausted, in a child): the loop
    stops polling the socket for a pause instead of waking at once for ever (a spinning loop
    turns thousands of times in 0.5 s); the queued client is answered once fds free up."""
    out = subprocess.run(
        [sys.executable, "-c", EMFILE_CHILD, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["paused"], result
    assert result["turns"] < 50, result  # 0.01 s doubling: about 6 turns in 0.5 s
    answer = json.loads(result["answer"])
    assert answer["ok"] and answer["phase"] == "starting", answer
    assert out.stderr.count("accept failed (Too many open files)") == 1, out.stderr
