"""sdactivate.Upgrader as a real systemd `Type=notify` service (NotifyAccess=all,
ExecReload=kill -HUP $MAINPID): `systemctl reload` moves MainPID to the new generation with the
unit active throughout and no failed connection; a broken new version leaves the old serving."""

from __future__ import annotations

import threading
from collections.abc import Callable

from integration.helpers import (
    PYTHON,
    http_get,
    listen_inodes,
    main_pid,
    restart_under_load,
    wait_state,
)
from integration.sandbox import CODE_DIR, Sandbox, Units, free_port, wait_until

APP = f"{CODE_DIR}/examples/upgrader_app.py"
FAULT = "/run/sdupg-fault"
# No socket unit: the app binds the port itself, so only the Upgrader's handover keeps it
# open (a socket unit would hide an outage in its backlog). ExecStop= waits for the main
# process: after an upgrade it is not systemd's child ("Supervising process X which is not
# our child"), and systemd 252 does not wait for such a main process after SIGTERM when it is
# alone in the cgroup: it sends SIGKILL at once (unit_kill_context(): an alien main pid is
# not waited for), cutting the drain short. These are the lines `gen-units --upgrader` writes
# (integration/test_upgrader_units_e2e.py runs the generated units).
SERVICE = """\
[Unit]
Description=sdactivate Upgrader example
StartLimitIntervalSec=0

[Service]
Type=notify
NotifyAccess=all
Environment=PYTHONPATH={code}
ExecStart={python} {app} --listen 127.0.0.1:{port} --fault-file {fault} \\
    --upgrade-timeout 3 --stable-time 0.5 --drain-timeout 5
ExecReload=/bin/kill -HUP $MAINPID
ExecStop=-/bin/kill -TERM $MAINPID
ExecStop=-/usr/bin/tail --pid=${{MAINPID}} -s 0.1 -f /dev/null
TimeoutStopSec=10
"""


def install(units: Units, name: str, port: int) -> str:
    unit = f"{name}.service"
    text = SERVICE.format(code=CODE_DIR, python=PYTHON, app=APP, port=port, fault=FAULT)
    units.install({unit: text})
    return unit


class StateWatch:
    """Samples ActiveState/SubState/MainPID while a test runs (proves 'never deactivating')."""

    def __init__(self, sandbox: Sandbox, unit: str) -> None:
        self.sandbox, self.unit = sandbox, unit
        self.seen: set[tuple[str, str]] = set()
        self.pids: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            props = self.sandbox.show(self.unit, "ActiveState", "SubState", "MainPID")
            self.seen.add((props["ActiveState"], props["SubState"]))
            pid = int(props["MainPID"])
            if not self.pids or self.pids[-1] != pid:
                self.pids.append(pid)
            self._stop.wait(0.02)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


def test_reload_moves_mainpid_without_failures(
    sandbox: Sandbox, units: Units, measurements: Callable[[str], None]
) -> None:
    """5 `systemctl reload`s under 300 new connections/s: MainPID moves to each new
    generation, the unit never leaves active/reloading, NRestarts stays 0, 0 failed requests."""
    port = free_port()
    unit = install(units, units.name("sdupg-reload"), port)
    sandbox.write_file(FAULT, "")
    sandbox.systemctl("start", unit)
    first = int(wait_state(sandbox, unit, "active", sub="running")["MainPID"])
    watch = StateWatch(sandbox, unit)
    pids = [first]

    def reload() -> None:
        before = main_pid(sandbox, unit)
        sandbox.systemctl("reload", unit)
        wait_until(lambda: main_pid(sandbox, unit) not in (0, before), timeout=15, what="MainPID")
        pids.append(main_pid(sandbox, unit))

    try:
        run = restart_under_load(port, reload, restarts=5, rate=300, spacing=0.5)
    finally:
        watch.stop()
    measurements("upgrader reload: " + run.describe())
    run.assert_no_failures()
    assert len(set(pids)) == 6, pids  # every reload made a new main process
    assert watch.seen <= {("active", "running"), ("reloading", "reload")}, watch.seen
    after = sandbox.show(unit, "ActiveState", "NRestarts", "MainPID", "StatusText")
    assert after["ActiveState"] == "active" and after["NRestarts"] == "0", after
    assert int(after["MainPID"]) == pids[-1]
    wait_until(  # the previous generation answers until its accept loop has stopped
        lambda: int(http_get("127.0.0.1", port)[1]["x-pid"]) == pids[-1], timeout=10, what="pid"
    )
    sandbox.systemctl("stop", unit)
    assert sandbox.show(unit, "Result")["Result"] == "success"


def test_broken_new_version_keeps_old_mainpid(sandbox: Sandbox, units: Units) -> None:
    """A new version that exits before READY, or never sends it: MainPID and the serving
    pid stay the old ones, StatusText says the upgrade failed; a fixed version then upgrades."""
    port = free_port()
    unit = install(units, units.name("sdupg-broken"), port)
    sandbox.write_file(FAULT, "")
    sandbox.systemctl("start", unit)
    old = int(wait_state(sandbox, unit, "active", sub="running")["MainPID"])
    for fault in ("exit-before-ready", "never-ready"):
        sandbox.write_file(FAULT, fault)
        sandbox.systemctl("reload", unit)
        wait_until(
            lambda: "upgrade failed" in sandbox.show(unit, "StatusText")["StatusText"],
            timeout=15,
            what="StatusText 'upgrade failed'",
        )
        props = sandbox.show(unit, "ActiveState", "MainPID", "NRestarts")
        assert props == {"ActiveState": "active", "MainPID": str(old), "NRestarts": "0"}, props
        _, headers, _ = http_get("127.0.0.1", port)
        assert int(headers["x-pid"]) == old
        sandbox.write_file(FAULT, "")
    sandbox.systemctl("reload", unit)
    wait_until(lambda: main_pid(sandbox, unit) not in (0, old), timeout=15, what="MainPID")
    new = main_pid(sandbox, unit)
    wait_until(
        lambda: int(http_get("127.0.0.1", port)[1]["x-pid"]) == new, timeout=10, what="new pid"
    )


SOCKET = """\
[Socket]
ListenStream=127.0.0.1:{port}
FileDescriptorName=http
Backlog=2048
"""


def test_socket_activated_generations_keep_the_unit_socket(sandbox: Sandbox, units: Units) -> None:
    """Under a socket unit, each generation gets the unit's socket (named http) through
    LISTEN_FDS from its parent: same listening inode after 3 reloads, MainPID moves."""
    port = free_port()
    units.install(
        {
            units.name("sdupg-sock.socket"): SOCKET.format(port=port),
            units.name("sdupg-sock.service"): SERVICE.format(
                code=CODE_DIR, python=PYTHON, app=APP, port=port, fault=FAULT
            ),
        }
    )
    sandbox.write_file(FAULT, "")
    sandbox.systemctl("start", units.name("sdupg-sock.socket"))
    inode = listen_inodes(port)
    assert len(inode) == 1
    http_get("127.0.0.1", port)  # activates the service
    unit = units.name("sdupg-sock.service")
    pids = [int(wait_state(sandbox, unit, "active", sub="running")["MainPID"])]
    for _ in range(3):
        sandbox.systemctl("reload", unit)
        wait_until(lambda: main_pid(sandbox, unit) != pids[-1], timeout=15, what="MainPID")
        pids.append(main_pid(sandbox, unit))
    wait_until(
        lambda: int(http_get("127.0.0.1", port)[1]["x-pid"]) == pids[-1], timeout=10, what="pid"
    )
    assert listen_inodes(port) == inode  # one socket all along: systemd's
    assert len(set(pids)) == 4, pids
    assert sandbox.show(unit, "NRestarts")["NRestarts"] == "0"
