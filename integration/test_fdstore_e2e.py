"""The fd store without a socket unit: the app binds once via sdactivate.fdstore.listen(),
systemd keeps the socket across restarts and crashes; stop + start drops it on 252, 254 and
257 (the generated FileDescriptorStorePreserve=yes keeps it from 262 on)."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable

from integration.helpers import (
    SYSTEMD_VERSION,
    gen_units,
    http_get,
    listen_inodes,
    main_pid,
    restart_under_load,
    start_limit,
    wait_state,
)
from integration.sandbox import Sandbox, Units, free_port, wait_until

UNIT = "sdact-fds.service"
# the generated fd-store-only unit, nothing referencing it: `stop` + `start` keeps its store?
KEPT_BY_STOP_START = {252: False, 254: False, 257: False, 262: True}


def fdstore_units(units: Units, port: int) -> dict[str, str]:
    """`gen-units sdact-fds --fdstore 4` (this test's name) for the example app binding
    127.0.0.1:`port` itself: one service, no socket unit."""
    unit = units.name(UNIT)
    files = gen_units(
        units.name("sdact-fds"),
        options=["--fdstore", "4"],
        args=["--fdstore", "--listen", f"127.0.0.1:{port}", "--name", "http"],
    )
    assert list(files) == [unit]
    assert "FileDescriptorStoreMax=4\n" in files[unit] and "Requires=" not in files[unit]
    return files


def accepted_by_pid(port: int, client_port: int) -> bool:
    """Whether the server side of the connection from `client_port` to `port` is held by a
    process (accepted), not only in the listening socket's queue."""
    out = subprocess.run(
        ["ss", "-Htnp", "state", "established", f"( sport = :{port} and dport = :{client_port} )"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return "pid=" in out


def test_fdstore_restart_kill_and_stop_start(
    sandbox: Sandbox, units: Units, measurements: Callable[[str], None]
) -> None:
    """With the units gen-units writes: restart x20 under load loses nothing and keeps one
    stored socket; SIGKILL of the main process (Restart=on-failure) keeps it too and fails
    only the requests that process had in flight; stop + start flushes it and the app
    re-binds."""
    unit = units.name(UNIT)
    port = free_port()
    units.install(fdstore_units(units, port))
    sandbox.systemctl("start", unit)
    wait_state(sandbox, unit, "active")
    # gen-units' default start limit: 20 quick restarts must not fail the service
    assert start_limit(sandbox, unit) == ("30", "1min")
    assert sandbox.show(unit, "NFileDescriptorStore")["NFileDescriptorStore"] == "1"
    first = listen_inodes(port)
    assert len(first) == 1

    run = restart_under_load(port, lambda: sandbox.systemctl("restart", unit), restarts=20)
    measurements("fd store: " + run.describe())
    run.assert_no_failures()
    assert len(run.result.pids()) >= 21
    assert sandbox.show(unit, "NFileDescriptorStore")["NFileDescriptorStore"] == "1"
    assert listen_inodes(port) == first  # the very socket the first generation bound

    # SIGKILL: no drain at all; Restart=on-failure brings it back on the stored socket.
    before = main_pid(sandbox, unit)

    killed: list[tuple[float, float]] = []
    held: list[socket.socket] = []

    def kill() -> None:
        # One request the app holds for 5 s (accepted: its socket has an owner in `ss -p`).
        # SIGKILL must cut it: there is no drain.
        held.append(socket.create_connection(("127.0.0.1", port), timeout=10))
        held[0].sendall(b"GET /sleep?ms=5000 HTTP/1.1\r\nHost: t\r\n\r\n")
        client_port = held[0].getsockname()[1]
        wait_until(
            lambda: accepted_by_pid(port, client_port),
            timeout=5,
            what="the app accepting the slow request",
        )
        start = time.monotonic()
        sandbox.systemctl("kill", "--signal=SIGKILL", "--kill-who=main", unit)
        killed.append((start, time.monotonic()))
        wait_until(
            lambda: (
                sandbox.show(unit, "NRestarts", "SubState", "MainPID")
                == {
                    "NRestarts": "1",
                    "SubState": "running",
                    "MainPID": str(main_pid(sandbox, unit)),
                }
                and main_pid(sandbox, unit) not in (0, before)
            ),
            timeout=15,
            what="the automatic restart after SIGKILL",
        )

    crash = restart_under_load(port, kill, restarts=1, rate=300, steady=0.5)
    measurements("fd store SIGKILL: " + crash.describe())
    # SIGKILL gives no drain: a request the app had accepted and not answered yet fails (a
    # reset, or EOF). Everything still in the stored socket's queue is answered by the next
    # process: nothing refused, nothing sent after the kill fails.
    crash.assert_only_in_flight_failed(killed[0])
    with held[0]:
        try:
            cut = held[0].recv(4096)
        except ConnectionResetError:
            cut = b""
    assert cut == b"", f"the slow request was answered after SIGKILL: {cut!r}"
    assert sandbox.show(unit, "NFileDescriptorStore")["NFileDescriptorStore"] == "1"
    assert listen_inodes(port) == first

    # stop + start: two jobs. 252 flushes the store; 254 and 257 keep it only while the unit
    # stays loaded (FileDescriptorStorePreserve=yes) and unload this unreferenced one; 262
    # keeps it. Where it is flushed the app binds a new socket.
    kept = KEPT_BY_STOP_START[SYSTEMD_VERSION]
    sandbox.systemctl("stop", unit)
    wait_until(
        lambda: (
            sandbox.show(unit, "NFileDescriptorStore")["NFileDescriptorStore"]
            == ("1" if kept else "0")
        ),
        timeout=10,
        what="the store kept or flushed",
    )
    assert listen_inodes(port) == (first if kept else set())
    sandbox.systemctl("start", unit)
    wait_state(sandbox, unit, "active")
    assert sandbox.show(unit, "NFileDescriptorStore")["NFileDescriptorStore"] == "1"
    rebound = listen_inodes(port)
    assert len(rebound) == 1 and (rebound == first) == kept
    assert http_get("127.0.0.1", port)[1]["x-pid"] == str(main_pid(sandbox, unit))
