"""A child started by Debian's real ``systemd-socket-activate`` gets the right objects.

The launcher binds the sockets, waits for the first connection or datagram, then execs the
child (``LISTEN_PID`` is the child's own pid). The child reports as JSON in a file (the
launcher renumbers fds from 3, so an inherited pipe could be clobbered).
"""

from __future__ import annotations

import json
import os
import select
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support import free_port

LAUNCHER = shutil.which("systemd-socket-activate") or "/usr/bin/systemd-socket-activate"
pytestmark = pytest.mark.skipif(not os.path.exists(LAUNCHER), reason="no systemd-socket-activate")

CHILD = """
import json, os, socket, sdactivate
from sdactivate.errors import ActivationError
try:
    by_name = sdactivate.listeners_by_name()
    again = sdactivate.listeners()
    out = {
        "sockets": [
            [name, s.fileno(), s.family.name, s.type.name, s.proto, repr(s.getsockname())]
            for name, socks in by_name.items() for s in socks
        ],
        "same": [s is t for s, t in zip(sorted((s for v in by_name.values() for s in v),
                                                key=lambda s: s.fileno()), again)],
        "listening": [s.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) for s in again],
        "env_left": sorted(k for k in os.environ if k.startswith("LISTEN_")),
    }
except ActivationError as exc:
    out = {"error": str(exc)}
tmp = os.environ["REPORT"] + ".tmp"
with open(tmp, "w") as f:
    json.dump(out, f)
os.replace(tmp, os.environ["REPORT"])
"""


def activate(
    tmp_path: Path,
    args: list[str],
    trigger: tuple[socket.SocketKind, str],
    tries: int = 3,
    child: str = CHILD,
) -> dict[str, Any]:
    """Run ``child`` under systemd-socket-activate ``args``; poke ``trigger``; return the report."""
    report = tmp_path / "report.json"
    expected = args.count("-l")
    for _ in range(tries):
        proc = subprocess.Popen(
            [LAUNCHER, *args, f"--setenv=REPORT={report}", sys.executable, "-c", child],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        try:
            early = _wait_listening(proc, expected)
            if early is None:
                _poke(trigger)
                output, _ = proc.communicate(timeout=20)
                assert proc.returncode == 0, output.decode(errors="replace")
                return dict(json.loads(report.read_text()))
            if b"Address already in use" not in early:  # else another test took our port
                raise AssertionError(early.decode(errors="replace"))
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
    raise AssertionError("could not bind the launcher's ports")


def _wait_listening(proc: subprocess.Popen[bytes], count: int) -> bytes | None:
    """Read the launcher's "Listening on ... as N." lines: None once all ``count`` are
    there, or its output if it exited first."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    seen = b""
    deadline = time.monotonic() + 15
    while seen.count(b"Listening on ") < count:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"launcher not listening within 15s: {seen!r}"
        ready, _, _ = select.select([fd], [], [], remaining)
        chunk = os.read(fd, 4096) if ready else b""
        if ready and not chunk:
            proc.wait(5)
            return seen
        seen += chunk
    return None


def _poke(trigger: tuple[socket.SocketKind, str]) -> None:
    """Connect to (or send a datagram to) the launcher's unix socket: it then execs."""
    kind, path = trigger
    with socket.socket(socket.AF_UNIX, kind) as sock:
        if kind == socket.SOCK_DGRAM:
            sock.sendto(b"wake", path)
        else:
            sock.connect(path)


def test_stream_sockets_tcp4_tcp6_unix(tmp_path: Path) -> None:
    """-l 127.0.0.1:P -l [::1]:Q -l /path with --fdname: right families, names, listening."""
    p4 = free_port("127.0.0.1")
    p6 = free_port("::1")
    path = str(tmp_path / "ctl.sock")
    out = activate(
        tmp_path,
        ["-l", f"127.0.0.1:{p4}", "-l", f"[::1]:{p6}", "-l", path, "--fdname=web:web6:ctl"],
        (socket.SOCK_STREAM, path),
    )
    assert out["sockets"] == [
        ["web", 3, "AF_INET", "SOCK_STREAM", socket.IPPROTO_TCP, repr(("127.0.0.1", p4))],
        ["web6", 4, "AF_INET6", "SOCK_STREAM", socket.IPPROTO_TCP, repr(("::1", p6, 0, 0))],
        ["ctl", 5, "AF_UNIX", "SOCK_STREAM", 0, repr(path)],
    ]
    assert out["same"] == [True, True, True]
    assert out["listening"] == [1, 1, 1]
    assert out["env_left"] == []


def test_datagram_sockets_udp_and_unix_dgram(tmp_path: Path) -> None:
    """-d: UDP over IPv4/IPv6 and a unix datagram socket, each with its name."""
    p4 = free_port("127.0.0.1", kind=socket.SOCK_DGRAM)
    p6 = free_port("::1", kind=socket.SOCK_DGRAM)
    path = str(tmp_path / "log.sock")
    out = activate(
        tmp_path,
        ["-d", "-l", f"127.0.0.1:{p4}", "-l", f"[::1]:{p6}", "-l", path, "--fdname=dns:dns6:log"],
        (socket.SOCK_DGRAM, path),
    )
    assert out["sockets"] == [
        ["dns", 3, "AF_INET", "SOCK_DGRAM", socket.IPPROTO_UDP, repr(("127.0.0.1", p4))],
        ["dns6", 4, "AF_INET6", "SOCK_DGRAM", socket.IPPROTO_UDP, repr(("::1", p6, 0, 0))],
        ["log", 5, "AF_UNIX", "SOCK_DGRAM", 0, repr(path)],
    ]
    assert out["listening"] == [0, 0, 0]


def test_seqpacket_socket(tmp_path: Path) -> None:
    """--seqpacket: a unix SOCK_SEQPACKET listener."""
    path = str(tmp_path / "seq.sock")
    out = activate(
        tmp_path, ["--seqpacket", "-l", path, "--fdname=seq"], (socket.SOCK_SEQPACKET, path)
    )
    assert out["sockets"] == [["seq", 3, "AF_UNIX", "SOCK_SEQPACKET", 0, repr(path)]]


def test_without_fdname_every_fd_is_unknown(tmp_path: Path) -> None:
    """No --fdname: the launcher sets no LISTEN_FDNAMES, so every name is 'unknown'."""
    a, b = str(tmp_path / "a.sock"), str(tmp_path / "b.sock")
    out = activate(tmp_path, ["-l", a, "-l", b], (socket.SOCK_STREAM, a))
    assert [s[0] for s in out["sockets"]] == ["unknown", "unknown"]


def test_single_fdname_is_copied_to_every_fd(tmp_path: Path) -> None:
    """One --fdname for two sockets: both carry it (names repeat)."""
    a, b = str(tmp_path / "a.sock"), str(tmp_path / "b.sock")
    out = activate(tmp_path, ["-l", a, "-l", b, "--fdname=api"], (socket.SOCK_STREAM, b))
    assert [s[:2] for s in out["sockets"]] == [["api", 3], ["api", 4]]


def test_fdname_count_mismatch_is_an_activation_error(tmp_path: Path) -> None:
    """Two names for three sockets: the launcher only warns; we raise, as libsystemd does."""
    paths = [str(tmp_path / f"{n}.sock") for n in "abc"]
    args = [x for p in paths for x in ("-l", p)] + ["--fdname=x:y"]
    out = activate(tmp_path, args, (socket.SOCK_STREAM, paths[0]))
    assert out == {"error": "LISTEN_FDNAMES='x:y' has 2 names for LISTEN_FDS='3'"}


LISTEN_CHILD = """
import json, os, sdactivate
from sdactivate.errors import ActivationError
port = int(os.environ["PORT"])
out = {"wildcard": sdactivate.listen(f":{port}").fileno(),
       "bare_port": sdactivate.listen(str(port)).fileno()}
try:
    sdactivate.listen("127.0.0.1:8080", name="http")
except ActivationError as exc:
    out["mismatch"] = str(exc)
with open(os.environ["REPORT"] + ".tmp", "w") as f:
    json.dump(out, f)
os.replace(os.environ["REPORT"] + ".tmp", os.environ["REPORT"])
"""


def test_listen_wildcard_port_takes_the_launchers_bare_port(tmp_path: Path) -> None:
    """`systemd-socket-activate -l P` (what a bare ListenStream=P gives): listen(":P") and
    listen("P") take its socket; an app asking for another address and name gets the
    mismatch error naming the launcher's [::]:P."""
    port = free_port("::1")
    path = str(tmp_path / "wake.sock")
    out = activate(
        tmp_path,
        ["-l", str(port), "-l", path, f"--setenv=PORT={port}"],
        (socket.SOCK_STREAM, path),
        child=LISTEN_CHILD,
    )
    assert out["wildcard"] == out["bare_port"] == 3
    assert f"fd 3 named 'unknown' on [::]:{port}" in out["mismatch"]
