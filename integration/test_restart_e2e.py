"""`systemctl restart` under open-loop load: the socket unit holds the queue, nothing is lost."""

from __future__ import annotations

from collections.abc import Callable

from helpers import (
    gen_units,
    http_get,
    listen_inodes,
    no_start_limit,
    restart_under_load,
    wait_state,
)
from sandbox import Sandbox, Units, free_port


def test_restart_x20_under_load_loses_nothing(
    sandbox: Sandbox, units: Units, measurements: Callable[[str], None]
) -> None:
    """20 `systemctl restart`s while 500 new connections/s arrive: 0 refused, 0 reset, 0 lost,
    every restart served by a new pid; prints the added tail latency of the restart windows."""
    port = free_port()
    files = gen_units("sdact-rst", listens=[(f"127.0.0.1:{port}", "http")])
    units.install(files | no_start_limit("sdact-rst.service"))
    sandbox.systemctl("start", "sdact-rst.socket", "sdact-rst.service")
    wait_state(sandbox, "sdact-rst.service", "active")
    inode = listen_inodes(port)
    assert len(inode) == 1

    run = restart_under_load(
        port, lambda: sandbox.systemctl("restart", "sdact-rst.service"), restarts=20, rate=500
    )
    measurements("socket unit: " + run.describe())
    run.assert_no_failures()
    assert len(run.result.pids()) >= 21  # every generation answered some requests
    assert listen_inodes(port) == inode  # the same socket throughout
    state = wait_state(sandbox, "sdact-rst.service", "active", sub="running")
    assert http_get("127.0.0.1", port)[1]["x-pid"] == state["MainPID"]
