"""The fd store without a socket unit: the app binds once via sdactivate.fdstore.listen(),
systemd keeps the socket across restarts and crashes, and drops it on stop + start (252)."""

from __future__ import annotations

from collections.abc import Callable

from helpers import (
    APP,
    PYTHON,
    http_get,
    listen_inodes,
    main_pid,
    no_start_limit,
    restart_under_load,
    wait_state,
)
from sandbox import CODE_DIR, Sandbox, Units, free_port, wait_until

UNIT = "sdact-fds.service"


def fdstore_unit(port: int) -> str:
    """A service with an fd store and no socket unit (gen-units needs an address to listen)."""
    return (
        "[Unit]\nDescription=sdactivate fd store e2e\n\n[Service]\nType=notify\n"
        "NotifyAccess=main\n"
        f"ExecStart={PYTHON} {APP} --fdstore --listen 127.0.0.1:{port} --name http\n"
        f"Environment=PYTHONPATH={CODE_DIR}\nFileDescriptorStoreMax=4\n"
        "Restart=on-failure\nRestartSec=100ms\nDynamicUser=yes\nProtectSystem=strict\n"
    )


def test_fdstore_restart_kill_and_stop_start(
    sandbox: Sandbox, units: Units, measurements: Callable[[str], None]
) -> None:
    """restart x20 under load loses nothing and keeps one stored socket; SIGKILL of the main
    process (Restart=on-failure) keeps it too; stop + start flushes it and the app re-binds."""
    port = free_port()
    units.install({UNIT: fdstore_unit(port)} | no_start_limit(UNIT))
    sandbox.systemctl("start", UNIT)
    wait_state(sandbox, UNIT, "active")
    assert sandbox.show(UNIT, "NFileDescriptorStore")["NFileDescriptorStore"] == "1"
    first = listen_inodes(port)
    assert len(first) == 1

    run = restart_under_load(port, lambda: sandbox.systemctl("restart", UNIT), restarts=20)
    measurements("fd store: " + run.describe())
    run.assert_no_failures()
    assert len(run.result.pids()) >= 21
    assert sandbox.show(UNIT, "NFileDescriptorStore")["NFileDescriptorStore"] == "1"
    assert listen_inodes(port) == first  # the very socket the first generation bound

    # SIGKILL: no drain at all; Restart=on-failure brings it back on the stored socket.
    before = main_pid(sandbox, UNIT)

    def kill() -> None:
        sandbox.systemctl("kill", "--signal=SIGKILL", "--kill-who=main", UNIT)
        wait_until(
            lambda: (
                sandbox.show(UNIT, "NRestarts", "SubState", "MainPID")
                == {
                    "NRestarts": "1",
                    "SubState": "running",
                    "MainPID": str(main_pid(sandbox, UNIT)),
                }
                and main_pid(sandbox, UNIT) not in (0, before)
            ),
            timeout=15,
            what="the automatic restart after SIGKILL",
        )

    crash = restart_under_load(port, kill, restarts=1, rate=300, steady=0.5)
    measurements("fd store SIGKILL: " + crash.describe())
    crash.assert_no_failures()
    assert sandbox.show(UNIT, "NFileDescriptorStore")["NFileDescriptorStore"] == "1"
    assert listen_inodes(port) == first

    # stop + start: two jobs, so 252 flushes the store; the app binds a new socket.
    sandbox.systemctl("stop", UNIT)
    assert sandbox.show(UNIT, "NFileDescriptorStore")["NFileDescriptorStore"] == "0"
    assert listen_inodes(port) == set()
    sandbox.systemctl("start", UNIT)
    wait_state(sandbox, UNIT, "active")
    assert sandbox.show(UNIT, "NFileDescriptorStore")["NFileDescriptorStore"] == "1"
    rebound = listen_inodes(port)
    assert len(rebound) == 1 and rebound != first
    assert http_get("127.0.0.1", port)[1]["x-pid"] == str(main_pid(sandbox, UNIT))
