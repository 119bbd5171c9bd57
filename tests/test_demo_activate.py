"""examples/demo_activate.py (the `make demo` activation part) runs and shows what it should."""

from __future__ import annotations

import json
import os
import re
import select
import socket
import struct
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path

import pytest

from sdactivate.testing import NotifyReceiver, launch

DEMO = Path(__file__).resolve().parent.parent / "examples" / "demo_activate.py"
DEADLINE = 10.0


@pytest.mark.skipif(
    not os.path.exists("/usr/bin/systemd-socket-activate"), reason="no systemd-socket-activate"
)
def test_demo_activate(tmp_path: Path) -> None:
    """The demo app gets http+ctl by name, answers both, and its READY/STOPPING reach us."""
    proc = subprocess.run(
        [sys.executable, str(DEMO)],
        capture_output=True,
        text=True,
        env={**os.environ, "TMPDIR": str(tmp_path)},
        timeout=60,
    )
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert re.search(r"fd 3  name=http  socket  AF_INET/SOCK_STREAM 127\.0\.0\.1:\d+", out)
    assert re.search(r"fd 4  name=ctl   socket  AF_UNIX/SOCK_STREAM .*/ctl\.sock", out)
    assert "returned the inherited sockets: [True, True]" in out
    assert "LISTEN_* left in the app's environment: none" in out
    assert "['echo: hello over the inherited unix socket', 'bye']" in out
    pid = re.search(r"app pid (\d+) received", out)
    assert pid is not None
    notified = re.findall(r"  pid (\d+): (.*)", out)
    assert [p for p, _ in notified] == [pid.group(1)] * 3
    assert [fields.split()[0] for _, fields in notified] == [
        "STATUS=started",
        "READY=1",
        "STOPPING=1",
    ]
    assert "DROPPED" not in out
    assert out.rstrip().endswith("OK")
    assert os.listdir(tmp_path) == []  # the temporary directory was removed


def test_demo_app_outlives_a_client_that_resets(tmp_path: Path) -> None:
    """A client that resets mid-request costs only its own connection: the request queued
    behind it is answered. (The app used to exit on the reset, and the kernel then reset every
    connection still queued: the demo's ConnectionResetError.)"""
    argv = [sys.executable, str(DEMO), "--app"]
    with (
        ExitStack() as defer,
        NotifyReceiver(thread=True) as rx,
        launch(
            argv, ["127.0.0.1:0", str(tmp_path / "ctl")], names=["http", "ctl"], notify=rx
        ) as app,
    ):
        defer.callback(app.close_sockets)
        rx.wait_for("READY", "1", timeout=DEADLINE)
        port = app.sockets[0].getsockname()[1]
        stray = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)
        stray.sendall(b"GET / HTTP/1.1\r\n")  # half a request, then an abortive close
        stray.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        stray.close()
        with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as conn:
            conn.sendall(b"GET / HTTP/1.1\r\nHost: demo\r\nConnection: close\r\n\r\n")
            response = b""
            while True:
                ready, _, _ = select.select([conn, app.pidfd], [], [], DEADLINE)
                assert conn in ready, f"no answer; the app exited: {app.poll()}"
                if not (chunk := conn.recv(65536)):
                    break
                response += chunk
        assert response.startswith(b"HTTP/1.1 200 OK\r\n")
        assert json.loads(response.partition(b"\r\n\r\n")[2])["pid"] == app.pid
        with socket.socket(socket.AF_UNIX) as ctl:
            ctl.settimeout(DEADLINE)
            ctl.connect(str(tmp_path / "ctl"))
            ctl.sendall(b"quit\n")
            assert ctl.recv(16) == b"bye\n"
        assert app.wait(DEADLINE) == 0
