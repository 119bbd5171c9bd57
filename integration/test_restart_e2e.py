"""`systemctl restart` under open-loop load: the socket unit holds the queue, nothing is lost;
the start limit gen-units writes lets deliberate restarts through and still stops a crash loop."""

from __future__ import annotations

import socket
from collections.abc import Callable

from integration.helpers import (
    PYTHON,
    gen_units,
    http_get,
    listen_inodes,
    restart_under_load,
    start_limit,
    wait_state,
)
from integration.sandbox import Sandbox, Units, free_port, wait_until


def test_restart_x20_under_load_loses_nothing(
    sandbox: Sandbox, units: Units, measurements: Callable[[str], None]
) -> None:
    """20 `systemctl restart`s while 500 new connections/s arrive: 0 refused, 0 reset, 0 lost,
    every restart served by a new pid (systemd's own start limit, 5 per 10 s, would fail the
    service at the 6th: the generated 30 per 60 s does not); prints the added tail latency."""
    port = free_port()
    files = gen_units(units.name("sdact-rst"), listens=[(f"127.0.0.1:{port}", "http")])
    units.install(files)
    sandbox.systemctl("start", units.name("sdact-rst.socket"), units.name("sdact-rst.service"))
    wait_state(sandbox, units.name("sdact-rst.service"), "active")
    assert start_limit(sandbox, units.name("sdact-rst.service")) == ("30", "1min")
    inode = listen_inodes(port)
    assert len(inode) == 1

    run = restart_under_load(
        port,
        lambda: sandbox.systemctl("restart", units.name("sdact-rst.service")),
        restarts=20,
        rate=500,
    )
    measurements("socket unit: " + run.describe())
    run.assert_no_failures()
    assert len(run.result.pids()) >= 21  # every generation answered some requests
    assert listen_inodes(port) == inode  # the same socket throughout
    state = wait_state(sandbox, units.name("sdact-rst.service"), "active", sub="running")
    assert http_get("127.0.0.1", port)[1]["x-pid"] == state["MainPID"]
    assert sandbox.show(units.name("sdact-rst.socket"), "ActiveState")["ActiveState"] == "active"


def test_crash_loop_still_hits_the_start_limit(sandbox: Sandbox, units: Units) -> None:
    """A service that exits 1 at every start (`--start-limit 3/60`): Restart= tries until the
    limit, then the service fails and its socket with it (service-start-limit-hit, refused)."""
    port = free_port()
    files = gen_units(
        units.name("sdact-crash"),
        listens=[(f"127.0.0.1:{port}", None)],
        program=PYTHON,
        script=None,
        args=["-c", "raise SystemExit(1)"],
        options=["--start-limit", "3/60"],
    )
    units.install(files)
    assert start_limit(sandbox, units.name("sdact-crash.service")) == ("3", "1min")
    sandbox.systemctl("start", units.name("sdact-crash.socket"))
    with socket.create_connection(("127.0.0.1", port), timeout=10):
        pass  # queued in the socket; it triggers the first start
    wait_state(sandbox, units.name("sdact-crash.service"), "failed", timeout=30)
    # 252 keeps the service's Result of the last run (exit-code); the 4th start was refused
    # ("Start request repeated too quickly"), which the socket reports as its own result
    assert sandbox.show(units.name("sdact-crash.service"), "NRestarts")["NRestarts"] == "3"
    wait_until(
        lambda: (
            sandbox.show(units.name("sdact-crash.socket"), "Result")["Result"]
            == "service-start-limit-hit"
        ),
        timeout=10,
        what="the socket failing with its service",
    )
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    except ConnectionRefusedError:
        pass
    else:
        raise AssertionError("the failed socket still accepted a connection")
