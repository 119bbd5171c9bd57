"""sdactivate.control against python-dbusmock's ``systemd`` template on a private bus.

The template lacks LoadUnit/RestartUnit/ReloadUnit/Subscribe, job signals with results
and the Service/Socket interfaces; the fixture adds them with ``AddMethod`` so the mock
behaves like systemd 252 for what the client uses (org.freedesktop.systemd1(5)).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

dbus = pytest.importorskip("dbus")
dbusmock = pytest.importorskip("dbusmock")
pytest.importorskip("gi")
pytest.importorskip("jeepney")

from dbusmock.testcase import BusType, PrivateDBus, SpawnedMock  # noqa: E402

from sdactivate import control  # noqa: E402
from sdactivate.cli import main  # noqa: E402
from sdactivate.control import (  # noqa: E402
    BusUnavailableError,
    ControlTimeoutError,
    NoSuchUnitError,
    PermissionDeniedError,
    UnitNameError,
    render_table,
    run_job,
    unit_status,
)
from sdactivate.control.bus import Systemd  # noqa: E402

pytestmark = pytest.mark.skipif(shutil.which("dbus-daemon") is None, reason="needs dbus-daemon")

MANAGER = "org.freedesktop.systemd1.Manager"
UNIT = "org.freedesktop.systemd1.Unit"
SERVICE = "org.freedesktop.systemd1.Service"
SOCKET = "org.freedesktop.systemd1.Socket"
MOCK = "org.freedesktop.DBus.Mock"

# Code run inside the mock process (dbusmock's AddMethod: `self`, `args`, `dbus_method`,
# `objects`, `dbus` are in scope). One body serves all four job methods. Behaviour per test
# comes from self.behaviour = (job result, final ActiveState, delay ms, settle ms, final Result):
# JobRemoved after `delay` ms; the state stays "activating" for `settle` ms more.
_JOB_CODE = """
from gi.repository import GLib
name = str(args[0])
if getattr(self, 'deny', False):
    raise dbus.exceptions.DBusException(
        'Interactive authentication required.',
        name='org.freedesktop.DBus.Error.InteractiveAuthorizationRequired')
if name not in self.units:
    raise dbus.exceptions.DBusException(
        'Unit %s not found.' % name, name='org.freedesktop.systemd1.NoSuchUnit')
result, final, delay, settle, unit_result = self.behaviour
job_id = self.next_job_id
self.next_job_id += 1
job = dbus.ObjectPath('/org/freedesktop/systemd1/job/%d' % job_id)
unit = objects[self.units[name]]
going = 'deactivating' if dbus_method == 'StopUnit' else 'activating'
unit.UpdateProperties('org.freedesktop.systemd1.Unit', {'ActiveState': going})

def settle_state(u=unit, f=final, r=unit_result):
    u.UpdateProperties('org.freedesktop.systemd1.Unit', {'ActiveState': f, 'SubState': f})
    iface = 'org.freedesktop.systemd1.Service'
    if iface in u.props:
        u.UpdateProperties(iface, {'Result': r})
    return False

def finish(m=self, i=job_id, j=job, n=name, r=result, s=settle, done=settle_state, g=GLib):
    if s == 0:
        done()
    m.EmitSignal('org.freedesktop.systemd1.Manager', 'JobRemoved', 'uoss', [i, j, n, r])
    if s > 0:
        g.timeout_add(s, done)
    return False

if result != 'never':
    GLib.timeout_add(delay, finish)
ret = job
"""

_LOAD_UNIT_CODE = """
name = str(args[0])
if name not in self.units:
    raise dbus.exceptions.DBusException(
        'Unit %s not found.' % name, name='org.freedesktop.systemd1.NoSuchUnit')
ret = dbus.ObjectPath(self.units[name])
"""

_SERVICE_PROPS: dict[str, Any] = {
    "Type": "notify",
    "Result": "success",
    "MainPID": dbus.UInt32(4242),
    "StatusText": "Serving on 2 sockets",
    "StatusErrno": dbus.Int32(0),
    "NRestarts": dbus.UInt32(3),
    "NFileDescriptorStore": dbus.UInt32(2),
    "FileDescriptorStoreMax": dbus.UInt32(16),
    "WatchdogUSec": dbus.UInt64(10_000_000),
    "WatchdogTimestamp": dbus.UInt64(1_700_000_000_000_000),
    "ExecMainCode": dbus.Int32(0),
    "ExecMainStatus": dbus.Int32(0),
    "ActiveEnterTimestamp": dbus.UInt64(0),
    "TriggeredBy": dbus.Array(["myapp.socket"], signature="s"),
}
_SOCKET_PROPS: dict[str, Any] = {
    "Result": "success",
    "Listen": dbus.Array(
        [("Stream", "127.0.0.1:8080"), ("Stream", "/run/myapp.sock")], signature="(ss)"
    ),
    "Accept": False,
    "NAccepted": dbus.UInt32(12),
    "NConnections": dbus.UInt32(1),
    "NRefused": dbus.UInt32(0),
    "FileDescriptorName": "http",
    "Triggers": dbus.Array(["myapp.service"], signature="s"),
}


class Mock:
    """Handle on the spawned mock: configure behaviour and unit state per test."""

    def __init__(self, address: str, obj: Any, bus: Any) -> None:
        self.address = address
        self.obj = obj
        self.bus = bus
        self.environ = {"DBUS_SYSTEM_BUS_ADDRESS": address}

    def unit(self, name: str) -> Any:
        path = self.obj.GetUnit(name, dbus_interface=MANAGER)
        return self.bus.get_object("org.freedesktop.systemd1", path)

    def behave(
        self,
        result: str = "done",
        final: str = "active",
        *,
        delay_ms: int = 20,
        settle_ms: int = 0,
        unit_result: str = "success",
    ) -> None:
        code = f"self.behaviour = {(result, final, delay_ms, settle_ms, unit_result)!r}"
        self.obj.AddMethod(MOCK, "Behave", "", "", code, dbus_interface=MOCK)
        self.obj.Behave(dbus_interface=MOCK)

    def set(self, unit: str, interface: str, props: dict[str, Any]) -> None:
        self.unit(unit).UpdateProperties(interface, props, dbus_interface=MOCK)


def _private_bus_env(mp: pytest.MonkeyPatch, tmp: Path) -> None:
    """PrivateDBus and SpawnedMock use os.environ and tempfile; keep both to this test
    (restored by ``mp``) and its temporary directory."""
    mp.setenv("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/nonexistent")
    mp.setenv("TMPDIR", str(tmp))
    mp.setattr(tempfile, "tempdir", str(tmp))


@pytest.fixture(scope="module")
def mock_bus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mock]:
    """A private system bus with the extended systemd mock, shared by this module."""
    with pytest.MonkeyPatch.context() as mp:
        _private_bus_env(mp, tmp_path_factory.mktemp("dbus"))
        with (
            PrivateDBus(BusType.SYSTEM) as private,
            SpawnedMock.spawn_with_template(
                "systemd", stdout=subprocess.DEVNULL, stderr=None
            ) as mock,
        ):
            obj = mock.obj
            for method in ("StartUnit", "StopUnit", "RestartUnit", "ReloadUnit"):
                obj.AddMethod(MANAGER, method, "ss", "o", _JOB_CODE, dbus_interface=MOCK)
            obj.AddMethod(MANAGER, "LoadUnit", "s", "o", _LOAD_UNIT_CODE, dbus_interface=MOCK)
            obj.AddMethod(MANAGER, "Subscribe", "", "", "", dbus_interface=MOCK)
            handle = Mock(private.address, obj, BusType.SYSTEM.get_connection())
            for name in ("myapp.service", "myapp.socket", "lonely.service", "ghost.service"):
                obj.AddMockUnit(name, dbus_interface=MOCK)
                handle.unit(name).AddProperties(
                    UNIT, {"SubState": "dead", "Description": name}, dbus_interface=MOCK
                )
            lonely = {**_SERVICE_PROPS, "TriggeredBy": dbus.Array([], signature="s")}
            for name, props in (("myapp.service", _SERVICE_PROPS), ("lonely.service", lonely)):
                handle.unit(name).AddProperties(SERVICE, props, dbus_interface=MOCK)
            handle.unit("myapp.socket").AddProperties(SOCKET, _SOCKET_PROPS, dbus_interface=MOCK)
            handle.set("ghost.service", UNIT, {"LoadState": "not-found"})
            yield handle


@pytest.fixture
def systemd(mock_bus: Mock, monkeypatch: pytest.MonkeyPatch) -> Mock:
    """The shared mock with default behaviour, units reset, and the CLI pointed at it."""
    mock_bus.obj.AddMethod(MOCK, "Allow", "", "", "self.deny = False", dbus_interface=MOCK)
    mock_bus.obj.Allow(dbus_interface=MOCK)
    mock_bus.behave()
    for name in ("myapp.service", "myapp.socket", "lonely.service"):
        mock_bus.set(name, UNIT, {"ActiveState": "active", "SubState": "running"})
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", mock_bus.address)
    # The CLI reads the unit's journal on failure; never the host's journal in tests.
    monkeypatch.setattr(control, "journal_tail", lambda unit, user, lines: [f"journal of {unit}"])
    return mock_bus


def test_restart_success(systemd: Mock) -> None:
    """A restart whose job is done and whose unit ends active is ok, with the unit's state."""
    outcome = run_job("restart", "myapp", timeout=10, environ=systemd.environ, journal=None)
    assert outcome.ok, outcome.reason
    assert (outcome.unit, outcome.job_result, outcome.active_state) == (
        "myapp.service",
        "done",
        "active",
    )
    assert outcome.properties["MainPID"] == 4242


def test_waits_for_active_after_the_job(systemd: Mock) -> None:
    """After JobRemoved the client keeps waiting while the unit is still activating."""
    systemd.behave(settle_ms=400)
    started = time.monotonic()
    outcome = run_job("start", "myapp.service", timeout=10, environ=systemd.environ, journal=None)
    assert outcome.ok and outcome.active_state == "active"
    assert time.monotonic() - started >= 0.4


def test_job_failure_reports_result_and_journal(systemd: Mock) -> None:
    """A failed job yields ok=False with job result, Result, exit status and journal lines."""
    systemd.behave("failed", "failed", unit_result="exit-code")
    systemd.set("myapp.service", SERVICE, {"ExecMainCode": 1, "ExecMainStatus": 3})
    try:
        seen: list[tuple[str, bool, int]] = []

        def journal(unit: str, user: bool, lines: int) -> list[str]:
            seen.append((unit, user, lines))
            return ["myapp[1]: boom"]

        outcome = run_job("restart", "myapp", timeout=10, environ=systemd.environ, journal=journal)
    finally:
        systemd.set("myapp.service", SERVICE, {"ExecMainCode": 0, "ExecMainStatus": 0})
    assert not outcome.ok
    assert "job result 'failed'" in outcome.reason
    assert "Result=exit-code" in outcome.reason
    assert "exited with status 3" in outcome.reason
    assert outcome.journal == ("myapp[1]: boom",)
    assert seen == [("myapp.service", False, 20)]


def test_done_job_but_unit_failed(systemd: Mock) -> None:
    """A 'done' start whose unit then fails is reported as a failure."""
    systemd.behave("done", "failed", settle_ms=100, unit_result="signal")
    outcome = run_job("start", "myapp", timeout=10, environ=systemd.environ, journal=None)
    assert not outcome.ok
    assert outcome.active_state == "failed"
    assert "Result=signal" in outcome.reason


def test_stop_reaches_inactive(systemd: Mock) -> None:
    """stop waits for inactive."""
    systemd.behave("done", "inactive")
    outcome = run_job("stop", "myapp", timeout=10, environ=systemd.environ, journal=None)
    assert outcome.ok and outcome.active_state == "inactive"


def test_job_timeout(systemd: Mock) -> None:
    """A job that never finishes raises ControlTimeoutError at the deadline."""
    systemd.behave("never")
    started = time.monotonic()
    with pytest.raises(ControlTimeoutError, match="still running"):
        run_job("restart", "myapp", timeout=0.5, environ=systemd.environ, journal=None)
    assert 0.5 <= time.monotonic() - started < 5


def test_state_timeout(systemd: Mock) -> None:
    """A done job whose unit stays activating past the deadline raises ControlTimeoutError."""
    systemd.behave(settle_ms=60_000)
    with pytest.raises(ControlTimeoutError, match="still activating"):
        run_job("restart", "myapp", timeout=0.5, environ=systemd.environ, journal=None)


def test_unknown_unit(systemd: Mock) -> None:
    """An unknown unit raises NoSuchUnitError (NoSuchUnit from LoadUnit)."""
    with pytest.raises(NoSuchUnitError, match=r"nosuch\.service"):
        run_job("restart", "nosuch", timeout=5, environ=systemd.environ, journal=None)


def test_not_found_load_state(systemd: Mock) -> None:
    """A unit whose LoadState is not-found raises NoSuchUnitError before any job."""
    with pytest.raises(NoSuchUnitError, match=r"ghost\.service"):
        run_job("start", "ghost", timeout=5, environ=systemd.environ, journal=None)


def test_permission_denied(systemd: Mock) -> None:
    """A refused job raises PermissionDeniedError suggesting --user or root."""
    systemd.obj.AddMethod(MOCK, "Deny", "", "", "self.deny = True", dbus_interface=MOCK)
    systemd.obj.Deny(dbus_interface=MOCK)
    with pytest.raises(PermissionDeniedError, match="--user"):
        run_job("restart", "myapp", timeout=5, environ=systemd.environ, journal=None)


def test_bus_unavailable(tmp_path: Path) -> None:
    """A missing bus socket raises BusUnavailableError naming the address."""
    environ = {"DBUS_SYSTEM_BUS_ADDRESS": f"unix:path={tmp_path}/missing"}
    with pytest.raises(BusUnavailableError, match="missing"):
        run_job("restart", "myapp", timeout=5, environ=environ, journal=None)


def test_bus_refuses(tmp_path: Path) -> None:
    """A bus socket nobody accepts on (stale file) raises BusUnavailableError."""
    path = tmp_path / "stale"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(path))
    with pytest.raises(BusUnavailableError, match="stale"):
        unit_status("myapp", environ={"DBUS_SYSTEM_BUS_ADDRESS": f"unix:path={path}"})


def test_bus_rejects_authentication(tmp_path: Path) -> None:
    """A bus that rejects our SASL EXTERNAL login raises PermissionDeniedError."""
    path = tmp_path / "rejecting"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(path))
        server.listen(1)

        def reject() -> None:
            conn, _ = server.accept()
            with conn:
                conn.settimeout(10)
                data = b""
                while b"\r\n" not in data:
                    chunk = conn.recv(1024)
                    if not chunk:
                        return
                    data += chunk
                conn.sendall(b"REJECTED EXTERNAL\r\n")

        thread = threading.Thread(target=reject)
        thread.start()
        try:
            with pytest.raises(PermissionDeniedError, match="REJECTED"):
                unit_status("myapp", environ={"DBUS_SYSTEM_BUS_ADDRESS": f"unix:path={path}"})
        finally:
            thread.join(timeout=10)


def test_unsupported_bus_address() -> None:
    """A bus address jeepney cannot use (tcp:) raises BusUnavailableError naming it."""
    environ = {"DBUS_SYSTEM_BUS_ADDRESS": "tcp:host=127.0.0.1,port=1"}
    with pytest.raises(BusUnavailableError, match="tcp:host"):
        unit_status("myapp", environ=environ)


def test_no_systemd_on_the_bus(tmp_path_factory: pytest.TempPathFactory) -> None:
    """A bus without org.freedesktop.systemd1 raises BusUnavailableError after the wait."""
    with pytest.MonkeyPatch.context() as mp:
        _private_bus_env(mp, tmp_path_factory.mktemp("db"))  # short: sun_path is 108 bytes
        with PrivateDBus(BusType.SYSTEM) as private:
            environ = {"DBUS_SYSTEM_BUS_ADDRESS": private.address}
            started = time.monotonic()
            with pytest.raises(BusUnavailableError, match=r"systemd is not on .*waited 0\.5s"):
                unit_status("myapp", environ=environ, timeout=0.5)
            assert 0.5 <= time.monotonic() - started < 5


def test_waits_for_systemd_to_join_the_bus(tmp_path_factory: pytest.TempPathFactory) -> None:
    """A client that connects before systemd joins the bus (socket-activated dbus) waits
    for NameOwnerChanged and then succeeds."""
    with pytest.MonkeyPatch.context() as mp:
        _private_bus_env(mp, tmp_path_factory.mktemp("db"))  # short: sun_path is 108 bytes
        with PrivateDBus(BusType.SYSTEM) as private:
            environ = {"DBUS_SYSTEM_BUS_ADDRESS": private.address}
            bus = Systemd._open(user=False, environ=environ)
            try:
                result: list[object] = []
                waiter = threading.Thread(
                    target=lambda: result.append(bus.wait_for_systemd(timeout=30))
                )
                waiter.start()
                with SpawnedMock.spawn_with_template(
                    "systemd", stdout=subprocess.DEVNULL, stderr=None
                ):
                    waiter.join(timeout=30)
                    owner = BusType.SYSTEM.get_connection().get_name_owner(
                        "org.freedesktop.systemd1"
                    )
            finally:
                bus.close()
    assert result == [owner]


def test_invalid_unit_name() -> None:
    """A name systemd would reject raises UnitNameError before touching the bus."""
    with pytest.raises(UnitNameError):
        run_job("restart", "../etc/passwd", environ={}, journal=None)


def test_status_bare_name(systemd: Mock) -> None:
    """status NAME finds NAME.service and NAME.socket with the advertised properties."""
    report = unit_status("myapp", environ=systemd.environ)
    assert report.service is not None and report.service.unit == "myapp.service"
    assert [s.unit for s in report.sockets] == ["myapp.socket"]
    svc = report.service.properties
    assert (svc["MainPID"], svc["StatusText"], svc["NRestarts"]) == (
        4242,
        "Serving on 2 sockets",
        3,
    )
    assert (svc["NFileDescriptorStore"], svc["FileDescriptorStoreMax"]) == (2, 16)
    sock = report.sockets[0].properties
    assert sock["Listen"] == [["Stream", "127.0.0.1:8080"], ["Stream", "/run/myapp.sock"]]
    assert (sock["NAccepted"], sock["NConnections"], sock["NRefused"]) == (12, 1, 0)
    table = render_table(report)
    assert "127.0.0.1:8080 (Stream)" in table and "2 / 16" in table and "10s" in table


def test_status_service_only(systemd: Mock) -> None:
    """A service without a socket reports no sockets."""
    report = unit_status("lonely", environ=systemd.environ)
    assert report.service is not None and report.sockets == ()


def test_status_socket_finds_its_service(systemd: Mock) -> None:
    """status NAME.socket also shows the service it triggers."""
    report = unit_status("myapp.socket", environ=systemd.environ)
    assert report.service is not None and report.service.unit == "myapp.service"


def test_status_unknown(systemd: Mock) -> None:
    """status of an unknown name raises NoSuchUnitError naming both candidates."""
    with pytest.raises(NoSuchUnitError, match=r"nosuch\.service or nosuch\.socket"):
        unit_status("nosuch", environ=systemd.environ)


def test_cli_status_json(systemd: Mock, capsys: pytest.CaptureFixture[str]) -> None:
    """`status NAME --json` prints systemd property names and values."""
    assert main(["status", "myapp", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["service"]["MainPID"] == 4242
    assert data["sockets"][0]["NAccepted"] == 12


def test_cli_restart_exit_codes(systemd: Mock, capsys: pytest.CaptureFixture[str]) -> None:
    """restart exits 0 on success, 1 on a failed unit, 2 on a bad name."""
    assert main(["restart", "myapp", "--timeout", "10"]) == 0
    assert "restart ok" in capsys.readouterr().out
    systemd.behave("failed", "failed", unit_result="exit-code")
    assert main(["restart", "myapp", "--timeout", "10"]) == 1
    err = capsys.readouterr().err
    assert "Result=exit-code" in err and "journal of myapp.service" in err
    assert main(["restart", "bad/name"]) == 2


def test_cli_timeout_exit_1(systemd: Mock, capsys: pytest.CaptureFixture[str]) -> None:
    """A job still running at --timeout exits 1 with the error and the unit's journal."""
    systemd.behave("never")
    assert main(["restart", "myapp", "--timeout", "0.3"]) == 1
    err = capsys.readouterr().err
    assert "still running after 0.3s" in err
    assert "journal of myapp.service" in err


def test_cli_unknown_unit_exit_1(systemd: Mock, capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown unit is a runtime failure: exit 1 with the error on stderr."""
    assert main(["start", "nosuch"]) == 1
    assert "nosuch.service" in capsys.readouterr().err


def test_cli_reload_needs_name_or_pid(capsys: pytest.CaptureFixture[str]) -> None:
    """reload without NAME or --pid (or with both) is a usage error."""
    assert main(["reload"]) == 2
    assert main(["reload", "myapp", "--pid", str(os.getpid())]) == 2
