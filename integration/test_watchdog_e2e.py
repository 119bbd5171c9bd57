"""WatchdogSec=: the in-loop keep-alive keeps a healthy app up; a blocked loop gets killed."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

from integration.helpers import gen_units, http_get, main_pid, wait_state
from integration.sandbox import Sandbox, Units, free_port, wait_until

UNIT = "sdact-wd.service"


def test_watchdog_keepalive_and_hung_loop(
    sandbox: Sandbox, units: Units, measurements: Callable[[str], None]
) -> None:
    """With WatchdogSec=1 the app stays up 5 s (pings arrive); after GET /hang blocks its
    event loop, systemd's watchdog kills it, Restart= brings a new pid, and the socket kept
    accepting meanwhile (a request sent during the hang is answered by the new process)."""
    unit = units.name(UNIT)
    port = free_port()
    units.install(
        gen_units(
            units.name("sdact-wd"),
            listens=[(f"127.0.0.1:{port}", "http")],
            options=["--watchdog", "1"],
        )
    )
    sandbox.systemctl("start", units.name("sdact-wd.socket"), unit)
    wait_state(sandbox, unit, "active")
    pid = main_pid(sandbox, unit)
    assert sandbox.show(unit, "WatchdogUSec")["WatchdogUSec"] == "1s"

    # Observe for 5 s (five watchdog periods): same pid, no restart, pings keep landing.
    stamps = set()
    end = time.monotonic() + 5.0
    while time.monotonic() < end:
        props = sandbox.show(unit, "MainPID", "NRestarts", "WatchdogTimestampMonotonic")
        assert props["MainPID"] == str(pid) and props["NRestarts"] == "0", props
        stamps.add(props["WatchdogTimestampMonotonic"])
        time.sleep(0.25)
    assert len(stamps) >= 3, stamps  # the last-ping timestamp keeps moving (pings land)

    hang = socket.create_connection(("127.0.0.1", port), timeout=5)
    hang.sendall(b"GET /hang HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    wait_until(
        lambda: (
            "blocking the event loop"
            in sandbox.run(["journalctl", "-u", unit, "-o", "cat", "-q"]).stdout
        ),
        timeout=10,
        what="the app to block its loop",
    )
    started = time.monotonic()
    status, headers, _ = http_get("127.0.0.1", port, timeout=20)  # queued while hung
    waited = time.monotonic() - started
    hang.close()
    assert status == 200
    new = int(headers["x-pid"])
    assert new != pid
    state = wait_state(sandbox, unit, "active", sub="running")
    assert state["NRestarts"] == "1" and state["MainPID"] == str(new)
    log = sandbox.journal(unit)
    assert "Watchdog timeout" in log, log
    measurements(
        f"watchdog: {len(stamps)} distinct ping timestamps in 5 s; hung pid {pid} killed and"
        f" replaced by {new}; a request queued during the hang waited {waited * 1e3:.0f} ms"
    )
