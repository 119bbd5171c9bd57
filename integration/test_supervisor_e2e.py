"""`sdactivate run` as a real systemd service: `systemctl reload` hands over, SIGKILL of
the supervisor loses no connection (socket unit or fd store), `systemctl stop` is clean."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from integration.helpers import (
    APP,
    PYTHON,
    SYSTEMD_VERSION,
    gen_units,
    http_get,
    listen_inodes,
    main_pid,
    restart_under_load,
    sigkill_supervisor,
    wait_state,
)
from integration.sandbox import CODE_DIR, Sandbox, Units, free_port, wait_until
from tests.support import CHILD_APP

# The tests' HTTP service (tests/child_app.py), one request at a time on every LISTEN_FDS
# socket: it accepts a connection only when it can answer it at once, so a stop (SIGTERM)
# between requests loses nothing; examples/app.py (asyncio) can hold accepted-but-unanswered
# connections when CPU-starved.
SIMPLE_APP = Path(CHILD_APP).read_text()
SIMPLE_APP_PATH = "/usr/local/lib/sdsup/simple_app.py"


def supervised(name: str, port: int, **kw: object) -> dict[str, str]:
    """`gen-units NAME --listen 127.0.0.1:PORT=http --supervise` for examples/app.py."""
    return gen_units(
        name,
        listens=[(f"127.0.0.1:{port}", "http")],
        options=["--supervise", "--python", PYTHON],
        **kw,  # type: ignore[arg-type]
    )


def app_pids(sandbox: Sandbox, unit: str) -> list[int]:
    """Pids of the unit's processes other than the supervisor (its app generations)."""
    main = main_pid(sandbox, unit)
    ps = sandbox.run(["ps", "-e", "-o", "pid=,ppid=,cgroup="]).stdout.splitlines()
    return sorted(
        int(pid)
        for pid, _, cgroup in (line.split(None, 2) for line in ps if line.count(" ") >= 2)
        if f"/{unit}" in cgroup and int(pid) != main
    )


def test_systemctl_reload_hands_over_under_load(
    sandbox: Sandbox, units: Units, measurements: Callable[[str], None]
) -> None:
    """10 `systemctl reload`s under 500 new connections/s: each returns 0 after the handover,
    MainPID (the supervisor) stays, every generation serves, 0 failed requests."""
    port = free_port()
    units.install(supervised(units.name("sdsup-reload"), port))
    sandbox.systemctl(
        "start", units.name("sdsup-reload.socket"), units.name("sdsup-reload.service")
    )
    state = wait_state(sandbox, units.name("sdsup-reload.service"), "active", sub="running")
    inode = listen_inodes(port)

    run = restart_under_load(
        port,
        lambda: sandbox.systemctl("reload", units.name("sdsup-reload.service")),
        restarts=10,
        rate=500,
    )
    measurements("supervisor reload: " + run.describe())
    run.assert_no_failures()
    assert len([p for p in run.result.pids() if p]) >= 10
    after = sandbox.show(units.name("sdsup-reload.service"), "MainPID", "StatusText", "ActiveState")
    assert after["MainPID"] == state["MainPID"]
    assert after["StatusText"].startswith("generation 11 "), after
    assert listen_inodes(port) == inode
    _, headers, _ = http_get("127.0.0.1", port)
    assert int(headers["x-pid"]) in app_pids(sandbox, units.name("sdsup-reload.service"))


def test_failed_handover_is_reported(sandbox: Sandbox, units: Units) -> None:
    """A new generation that exits before READY: the unit stays active with the old
    generation and StatusText says why; `sdactivate reload --pid` exits 1 on every version.
    `systemctl reload` fails on 252 (its ExecReload= is that command); from 253 the unit is
    Type=notify-reload, whose reload ends with the supervisor's READY=1 either way (systemd
    has no failed-reload notification), so it returns 0."""
    port = free_port()
    marker = "/run/sdsup-broken"
    script = f'if [ -e {marker} ]; then echo "broken build" >&2; exit 3; fi; exec "$@"'
    files = supervised(
        units.name("sdsup-fail"),
        port,
        program="/bin/sh",
        script=None,
        args=["-c", script, "sh", PYTHON, APP],
    )
    units.install(files)
    sandbox.systemctl("start", units.name("sdsup-fail.socket"), units.name("sdsup-fail.service"))
    wait_state(sandbox, units.name("sdsup-fail.service"), "active", sub="running")
    _, before, _ = http_get("127.0.0.1", port)
    supervisor = main_pid(sandbox, units.name("sdsup-fail.service"))

    sandbox.write_file(marker, "")
    try:
        proc = sandbox.systemctl("reload", units.name("sdsup-fail.service"), check=False)
        direct = sandbox.run(
            [PYTHON, "-m", "sdactivate", "reload", "--pid", str(supervisor)],
            check=False,
            env={"PYTHONPATH": CODE_DIR},
        )
    finally:
        sandbox.run(["rm", "-f", marker])
    assert (proc.returncode != 0) == (SYSTEMD_VERSION < 253), proc
    assert direct.returncode == 1 and "reload failed" in direct.stderr, direct
    after = sandbox.show(
        units.name("sdsup-fail.service"), "ActiveState", "SubState", "StatusText", "MainPID"
    )
    assert (after["ActiveState"], after["SubState"]) == ("active", "running")
    assert int(after["MainPID"]) == supervisor
    assert "upgrade failed" in after["StatusText"] and "status 3" in after["StatusText"]
    assert http_get("127.0.0.1", port)[1]["x-pid"] == before["x-pid"]
    assert "upgrade failed" in sandbox.journal(units.name("sdsup-fail.service"))
    # and the next reload, with the build fixed, works (the old generation may still answer
    # a connection it accepted before its stop signal reached it)
    sandbox.systemctl("reload", units.name("sdsup-fail.service"))
    wait_until(
        lambda: http_get("127.0.0.1", port)[1]["x-pid"] != before["x-pid"],
        timeout=10,
        what="an answer from the new generation",
    )


FDSTORE_UNIT = """\
[Unit]
Description=sdactivate run with its socket in the fd store (no socket unit)
StartLimitIntervalSec=0

[Service]
Type=notify
NotifyAccess=main
Environment=PYTHONPATH={code}
ExecStart={py} -m sdactivate run --fdstore --listen 127.0.0.1:{port}=http -- {py} {app}
ExecReload={py} -m sdactivate reload --pid $MAINPID
FileDescriptorStoreMax=4
KillMode=control-group
Restart=on-failure
RestartSec=100ms
TimeoutStopSec=40s
"""


def test_sigkill_supervisor_fdstore_keeps_socket(
    sandbox: Sandbox, units: Units, measurements: Callable[[str], None]
) -> None:
    """F5 without a socket unit: `run --fdstore` parks its socket in PID1's fd store, so a
    SIGKILLed supervisor's successor gets the same socket back; 0 failed requests."""
    port = free_port()
    unit = units.name("sdsup-store.service")
    sandbox.write_file(SIMPLE_APP_PATH, SIMPLE_APP)
    text = FDSTORE_UNIT.format(code=CODE_DIR, py=PYTHON, port=port, app=SIMPLE_APP_PATH)
    units.install({unit: text})
    sandbox.systemctl("start", unit)
    wait_state(sandbox, unit, "active", sub="running")
    wait_until(
        lambda: sandbox.show(unit, "NFileDescriptorStore")["NFileDescriptorStore"] == "1",
        timeout=10,
        what="the listening socket in the fd store",
    )
    inode = listen_inodes(port)
    assert len(inode) == 1

    run = restart_under_load(
        port, sigkill_supervisor(sandbox, unit), restarts=2, rate=500, spacing=1.0, timeout=15
    )
    measurements("supervisor SIGKILL, fd store: " + run.describe())
    run.assert_no_failures()
    assert listen_inodes(port) == inode  # the very same socket, not a rebind
    assert sandbox.show(unit, "NFileDescriptorStore")["NFileDescriptorStore"] == "1"
    sandbox.systemctl("reload", unit)  # and handovers still work after the restart
    assert "generation 2 " in sandbox.show(unit, "StatusText")["StatusText"]


def test_stop_is_clean(sandbox: Sandbox, units: Units) -> None:
    """`systemctl stop`: STOPPING=1, the generation drains, the unit ends inactive (success),
    nothing left in its cgroup."""
    port = free_port()
    unit = units.name("sdsup-stop.service")
    units.install(supervised(units.name("sdsup-stop"), port))
    sandbox.systemctl("start", units.name("sdsup-stop.socket"), unit)
    wait_state(sandbox, unit, "active", sub="running")
    started = time.monotonic()
    sandbox.systemctl("stop", unit)
    took = time.monotonic() - started
    state = sandbox.show(unit, "ActiveState", "Result", "ExecMainStatus")
    assert state == {"ActiveState": "inactive", "Result": "success", "ExecMainStatus": "0"}
    assert took < 10  # drained, not killed at TimeoutStopSec=40s
    journal = sandbox.journal(unit)
    assert "exited with status 0" in journal
