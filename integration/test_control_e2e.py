"""`sdactivate status|restart|reload|stop` against a real systemd over its system bus.

Each command runs inside the sandbox (`python -m sdactivate ...` through nsenter) on the
release's own Python, so it reaches the sandbox's bus at /run/dbus/system_bus_socket like
it would on a host.
"""

from __future__ import annotations

import json
import socket
import sys
import time
from collections.abc import Callable

import pytest

from integration.releases import selected
from integration.sandbox import CODE_DIR, Sandbox, Units, free_port, wait_until

# The release's own interpreter, with the checkout at CODE_DIR (readable by anyone, unlike
# a checkout under /root) on PYTHONPATH. A release's tree has Debian's python3-jeepney; the
# host's root (252) has jeepney only in this checkout's venv (same Python minor version).
PYTHON = "/usr/bin/python3"
SITE_PACKAGES = f"lib/python{sys.version_info[0]}.{sys.version_info[1]}/site-packages"
CLI_PATH = CODE_DIR if not selected().is_host else f"{CODE_DIR}:{CODE_DIR}/.venv/{SITE_PACKAGES}"
CLI_ENV = {"PYTHONPATH": CLI_PATH}
APP_DIR = "/usr/local/lib/sdctl-test"

# A Type=notify app: optional delay, READY=1 with a status text, then serve until killed;
# SIGHUP makes it report the reload (RELOADING=1 ... READY=1, sd_notify(3)); it exits 1 at
# once if the file named by its optional second argument exists.
NOTIFY_APP = r"""
import os, signal, socket, sys, time
delay = float(sys.argv[1])
if len(sys.argv) > 2 and os.path.exists(sys.argv[2]):
    sys.exit("fail marker %s present, exiting 1" % sys.argv[2])
addr = os.environ["NOTIFY_SOCKET"]
addr = "\0" + addr[1:] if addr.startswith("@") else addr
sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
def notify(text):
    sock.sendto(text.encode(), addr)
def on_hup(signum, frame):
    notify("RELOADING=1")
    notify("READY=1\nSTATUS=reloaded")
signal.signal(signal.SIGHUP, on_hup)
print("app starting, READY in", delay, "s", flush=True)
time.sleep(max(delay, 0))
if delay >= 0:
    notify("READY=1\nSTATUS=serving after %.1fs" % delay)
while True:
    time.sleep(3600)
"""


@pytest.fixture(scope="module", autouse=True)
def systemd_on_bus(sandbox: Sandbox) -> None:
    """dbus.service is socket-activated in the sandbox and PID 1 joins the bus only once it
    runs; start it and wait until org.freedesktop.systemd1 answers, as on a booted host."""
    sandbox.systemctl("start", "dbus.service")
    probe = [
        "busctl",
        "--system",
        "status",
        "org.freedesktop.systemd1",
    ]
    wait_until(
        lambda: sandbox.run(probe, check=False).returncode == 0,
        timeout=20,
        interval=0.1,
        what="systemd on the sandbox's system bus",
    )


def sdactivate(sandbox: Sandbox, *args: str, timeout: float = 60) -> tuple[int, str, str, float]:
    """Run `python -m sdactivate ARGS` in the sandbox: (status, stdout, stderr, seconds)."""
    started = time.monotonic()
    proc = sandbox.run(
        [PYTHON, "-m", "sdactivate", *args], check=False, timeout=timeout, env=CLI_ENV
    )
    return proc.returncode, proc.stdout, proc.stderr, time.monotonic() - started


def notify_unit(delay: float, extra: str = "") -> str:
    return (
        "[Service]\nType=notify\n"
        f"ExecStart=/usr/bin/python3 {APP_DIR}/app.py {delay}\n"
        "ExecReload=/bin/kill -HUP $MAINPID\n"
        f"TimeoutStartSec=30\n{extra}"
    )


def install_app(sandbox: Sandbox) -> None:
    sandbox.write_file(f"{APP_DIR}/app.py", NOTIFY_APP)


def test_restart_waits_for_ready(
    sandbox: Sandbox, units: Units, measurements: Callable[[str], None]
) -> None:
    """restart of a notify service that sleeps 1 s before READY takes >= 1 s and reports
    active, with the new MainPID and StatusText visible afterwards."""
    install_app(sandbox)
    units.install({units.name("sdctl-slow.service"): notify_unit(1.0)})
    sandbox.systemctl("start", units.name("sdctl-slow.service"))
    old_pid = sandbox.show(units.name("sdctl-slow.service"), "MainPID")["MainPID"]

    code, out, err, seconds = sdactivate(
        sandbox, "restart", units.name("sdctl-slow"), "--timeout", "20"
    )
    assert code == 0, err
    assert seconds >= 1.0
    assert f"{units.name('sdctl-slow.service')}: restart ok, active (running)" in out
    shown = sandbox.show(units.name("sdctl-slow.service"), "ActiveState", "MainPID", "StatusText")
    assert shown["ActiveState"] == "active"
    assert shown["MainPID"] != old_pid
    assert f"MainPID {shown['MainPID']}" in out
    assert shown["StatusText"] == "serving after 1.0s"
    measurements(f"sdactivate restart with a 1 s READY delay took {seconds:.2f} s")


def test_failed_start_exits_nonzero_with_reason(sandbox: Sandbox, units: Units) -> None:
    """A service whose process exits 3 before READY makes restart exit 1, naming the job
    result, the exit status and the unit's last journal lines."""
    units.install(
        {
            units.name("sdctl-broken.service"): "[Service]\nType=notify\n"
            "ExecStart=/bin/sh -c 'echo sdctl-broken-says-goodbye; exit 3'\n"
        }
    )
    code, out, err, _ = sdactivate(
        sandbox, "restart", units.name("sdctl-broken.service"), "--timeout", "20"
    )
    assert code == 1, (out, err)
    assert "restart failed" in err
    assert "job result 'failed'" in err
    assert "Result=exit-code" in err
    assert "main process exited with status 3" in err
    assert "sdctl-broken-says-goodbye" in err  # from the journal


def test_start_timeout(sandbox: Sandbox, units: Units) -> None:
    """start of a notify service that never sends READY gives up at --timeout with exit 1."""
    install_app(sandbox)
    units.install({units.name("sdctl-never.service"): notify_unit(-1.0)})
    code, _out, err, seconds = sdactivate(
        sandbox, "start", units.name("sdctl-never"), "--timeout", "1"
    )
    assert code == 1
    assert "still running after 1s" in err
    assert "app starting" in err  # the unit's journal, shown on timeout too
    assert 1.0 <= seconds < 15
    assert (
        sandbox.show(units.name("sdctl-never.service"), "ActiveState")["ActiveState"]
        == "activating"
    )


def test_reload_and_stop(sandbox: Sandbox, units: Units) -> None:
    """reload waits for the ExecReload job and the unit to be active again; stop waits
    for inactive."""
    install_app(sandbox)
    units.install({units.name("sdctl-reload.service"): notify_unit(0.0)})
    sandbox.systemctl("start", units.name("sdctl-reload.service"))
    code, out, err, _ = sdactivate(sandbox, "reload", units.name("sdctl-reload"), "--timeout", "20")
    assert code == 0, err
    assert "reload ok, active (running)" in out
    code, out, err, _ = sdactivate(sandbox, "stop", units.name("sdctl-reload"), "--timeout", "20")
    assert code == 0, err
    assert "stop ok, inactive (dead)" in out


def test_unknown_unit(sandbox: Sandbox) -> None:
    """A unit systemd does not know is reported with exit 1."""
    code, _out, err, _ = sdactivate(sandbox, "restart", "sdctl-nosuch-unit")
    assert code == 1
    assert "sdctl-nosuch-unit.service" in err and "not found" in err


def test_reload_not_applicable(sandbox: Sandbox, units: Units) -> None:
    """reload of a unit without ExecReload= exits 1 with systemd's reason."""
    units.install({units.name("sdctl-noreload.service"): "[Service]\nExecStart=/bin/sleep 3600\n"})
    sandbox.systemctl("start", units.name("sdctl-noreload.service"))
    code, _out, err, _ = sdactivate(sandbox, "reload", units.name("sdctl-noreload"))
    assert code == 1
    assert "JobTypeNotApplicable" in err and "not applicable" in err


def test_permission_denied_for_unprivileged_user(sandbox: Sandbox, units: Units) -> None:
    """An unprivileged caller gets a permission error suggesting --user or root."""
    units.install({units.name("sdctl-perm.service"): "[Service]\nExecStart=/bin/sleep 3600\n"})
    proc = sandbox.run(
        [
            "setpriv",
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            PYTHON,
            "-m",
            "sdactivate",
            "start",
            units.name("sdctl-perm"),
        ],
        env=CLI_ENV,
        check=False,
    )
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert "--user" in proc.stderr and "root" in proc.stderr
    assert (
        sandbox.show(units.name("sdctl-perm.service"), "ActiveState")["ActiveState"] == "inactive"
    )


def test_no_bus(sandbox: Sandbox) -> None:
    """With no bus socket at the address the command exits 1 saying so."""
    proc = sandbox.run(
        [PYTHON, "-m", "sdactivate", "status", "dbus"],
        env={**CLI_ENV, "DBUS_SYSTEM_BUS_ADDRESS": "unix:path=/run/sdctl-no-bus"},
        check=False,
    )
    assert proc.returncode == 1
    assert "no D-Bus system bus" in proc.stderr


STATUS_PROPS = {
    "service": (
        "ActiveState",
        "SubState",
        "MainPID",
        "StatusText",
        "NRestarts",
        "NFileDescriptorStore",
        "FileDescriptorStoreMax",
        "Result",
        "Type",
    ),
    "socket": ("ActiveState", "SubState", "NAccepted", "NConnections", "NRefused", "Result"),
}


def test_status_json_matches_systemctl_show(sandbox: Sandbox, units: Units) -> None:
    """status --json of a socket-activated notify service agrees with `systemctl show`
    on every shared property, including the socket's Listen addresses."""
    install_app(sandbox)
    port = free_port()
    units.install(
        {
            units.name("sdctl-web.socket"): f"[Socket]\nListenStream=127.0.0.1:{port}\n",
            units.name("sdctl-web.service"): notify_unit(0.0, "FileDescriptorStoreMax=4\n"),
        }
    )
    sandbox.systemctl("start", units.name("sdctl-web.socket"))
    with socket.create_connection(("127.0.0.1", port), timeout=10):
        pass  # activates the service
    wait_until(
        lambda: (
            sandbox.show(units.name("sdctl-web.service"), "ActiveState")["ActiveState"] == "active"
        ),
        timeout=20,
        what=f"{units.name('sdctl-web.service')} active",
    )
    code, out, err, _ = sdactivate(sandbox, "status", units.name("sdctl-web"), "--json")
    assert code == 0, err
    data = json.loads(out)
    views = {"service": data["service"], "socket": data["sockets"][0]}
    assert views["socket"]["unit"] == units.name("sdctl-web.socket")
    for kind, props in STATUS_PROPS.items():
        unit = views[kind]["unit"]
        shown = sandbox.show(unit, *props)
        mine = {p: str(views[kind][p]) for p in props if p in shown}
        assert mine == {p: shown[p] for p in mine}, unit
        assert len(mine) >= len(props) - 1  # NRefused may be absent on older managers
    listen = sandbox.show(units.name("sdctl-web.socket"), "Listen")["Listen"]
    assert [f"{addr} ({kind})" for kind, addr in views["socket"]["Listen"]] == [listen]
    assert views["service"]["FileDescriptorStoreMax"] == 4

    code, table, err, _ = sdactivate(sandbox, "status", units.name("sdctl-web"))
    assert code == 0, err
    assert f"127.0.0.1:{port} (Stream)" in table
    assert "0 / 4 (stored / max)" in table


def test_reload_of_supervised_unit_waits_for_handover(sandbox: Sandbox, units: Units) -> None:
    """`sdactivate reload NAME` on a `gen-units --supervise` unit returns once the new
    generation serves: the supervisor (MainPID) stays, the app answering is a new process."""
    from integration.helpers import PYTHON as SANDBOX_PYTHON
    from integration.helpers import gen_units, http_get

    port = free_port()
    files = gen_units(
        units.name("sdctl-sup"),
        listens=[(f"127.0.0.1:{port}", "http")],
        options=["--supervise", "--python", SANDBOX_PYTHON],
    )
    units.install(files)
    sandbox.systemctl("start", units.name("sdctl-sup.socket"), units.name("sdctl-sup.service"))
    supervisor = sandbox.show(units.name("sdctl-sup.service"), "MainPID")["MainPID"]
    _, before, _ = http_get("127.0.0.1", port)

    code, out, err, _ = sdactivate(sandbox, "reload", units.name("sdctl-sup"), "--timeout", "60")
    assert code == 0, (out, err)
    assert f"{units.name('sdctl-sup.service')}: reload ok, active (running)" in out
    _, after, _ = http_get("127.0.0.1", port)
    assert after["x-pid"] != before["x-pid"]  # the handover finished before reload returned
    assert sandbox.show(units.name("sdctl-sup.service"), "MainPID")["MainPID"] == supervisor


def test_reload_of_supervised_unit_reports_failed_handover(
    sandbox: Sandbox, units: Units, systemd_version: int
) -> None:
    """When the new generation dies before READY, `sdactivate reload NAME` exits 1 with the
    failed reload job and the supervisor's reason, and the old generation keeps serving."""
    from integration.helpers import PYTHON as SANDBOX_PYTHON
    from integration.helpers import gen_units

    install_app(sandbox)
    marker = "/run/sdctl-fail-marker"
    files = gen_units(
        units.name("sdctl-supfail"),
        listens=[(f"127.0.0.1:{free_port()}", "http")],
        options=["--supervise", "--python", SANDBOX_PYTHON],
        script=f"{APP_DIR}/app.py",
        args=["0", marker],
    )
    units.install(files)
    sandbox.systemctl("start", units.name("sdctl-supfail.service"))
    before = sandbox.show(units.name("sdctl-supfail.service"), "MainPID", "StatusText")
    sandbox.write_file(marker, "")
    try:
        code, out, err, _ = sdactivate(
            sandbox, "reload", units.name("sdctl-supfail"), "--timeout", "60"
        )
    finally:
        sandbox.run(["rm", "-f", marker])
    assert code == 1, (out, err)
    assert "reload failed" in err
    if systemd_version >= 253:  # Type=notify-reload: the job is done, the supervisor's STATUS= says
        assert "the supervisor's handover failed" in err and "upgrade failed:" in err
    else:  # Type=notify + ExecReload=`sdactivate reload --pid`, which exits 1: the job fails
        assert "job result 'failed'" in err
    assert "unit is active (running)" in err
    assert "fail marker" in err  # the new generation's last words, from the journal
    after = sandbox.show(
        units.name("sdctl-supfail.service"), "ActiveState", "MainPID", "StatusText"
    )
    assert after["ActiveState"] == "active"
    assert after["MainPID"] == before["MainPID"]


def test_user_manager(sandbox: Sandbox) -> None:
    """--user drives root's user manager (user@0.service) over the user bus at
    $XDG_RUNTIME_DIR/bus: restart waits for READY and status agrees with systemctl --user."""
    install_app(sandbox)
    env = {**CLI_ENV, "XDG_RUNTIME_DIR": "/run/user/0"}
    unit_path = "/etc/systemd/user/sdctl-user.service"
    sandbox.systemctl("start", "user@0.service")
    try:
        sandbox.write_file(unit_path, notify_unit(0.5))
        sandbox.run(["systemctl", "--user", "daemon-reload"], env=env)
        argv = [PYTHON, "-m", "sdactivate", "restart", "--user", "sdctl-user", "--timeout", "20"]
        proc = sandbox.run(argv, env=env, check=False)
        assert proc.returncode == 0, proc.stderr
        assert "sdctl-user.service: restart ok, active (running)" in proc.stdout
        argv = [PYTHON, "-m", "sdactivate", "status", "--user", "sdctl-user", "--json"]
        data = json.loads(sandbox.run(argv, env=env).stdout)
        shown = sandbox.run(
            ["systemctl", "--user", "show", "sdctl-user.service", "-p", "MainPID", "--value"],
            env=env,
        ).stdout.strip()
        assert str(data["service"]["MainPID"]) == shown != "0"
        # The system manager has no such unit: --user really switched managers.
        code, _out, err, _ = sdactivate(sandbox, "status", "sdctl-user")
        assert code == 1 and "no unit" in err
    finally:
        sandbox.run(["rm", "-f", unit_path], check=False)
        sandbox.systemctl("stop", "user@0.service", check=False)


def test_first_client_on_a_cold_bus(sandbox: Sandbox) -> None:
    """With dbus.service stopped (only dbus.socket listening), the first command starts
    the bus by connecting and waits for PID 1 to join it instead of failing. PID 1 joins
    only once dbus.service is running, so an ExecStartPost= delay holds it off for 1.5 s."""
    dropin = "/run/systemd/system/dbus.service.d/sdctl-late-join.conf"
    sandbox.write_file(dropin, "[Service]\nExecStartPost=/bin/sleep 1.5\n")
    sandbox.systemctl("daemon-reload")
    try:
        sandbox.systemctl("stop", "dbus.service")
        assert sandbox.show("dbus.service", "ActiveState")["ActiveState"] == "inactive"
        code, out, err, seconds = sdactivate(sandbox, "status", "dbus")
        assert code == 0, err
        assert "dbus.service  active (running)" in out
        assert seconds >= 1.0  # it really had to wait for systemd
    finally:
        sandbox.run(["rm", "-f", dropin])
        sandbox.systemctl("daemon-reload")
        sandbox.systemctl("start", "dbus.service")
