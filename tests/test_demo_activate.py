"""examples/demo_activate.py (the `make demo` activation part) runs and shows what it should."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

DEMO = Path(__file__).resolve().parent.parent / "examples" / "demo_activate.py"
pytestmark = pytest.mark.skipif(
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
