"""The pure half of sdactivate.control: unit names, verdicts, failure text, rendering."""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sdactivate.cli import main
from sdactivate.control.errors import BusUnavailableError, UnitNameError
from sdactivate.control.model import (
    JobOutcome,
    Verdict,
    describe_exit,
    failure_reason,
    format_timespan,
    job_unit_name,
    jsonable,
    judge,
    status_unit_names,
    validate_unit_name,
)
from sdactivate.control.status import StatusReport, UnitStatus, render_table


@pytest.mark.parametrize(
    ("given_name", "expected"),
    [
        ("myapp", "myapp.service"),
        ("myapp.service", "myapp.service"),
        ("myapp.socket", "myapp.socket"),
        ("web@8080.service", "web@8080.service"),
        ("a-b_c:d\\x2d.service", "a-b_c:d\\x2d.service"),
        ("dbus", "dbus.service"),
        ("a@b@c.service", "a@b@c.service"),  # instance "b@c", as systemd reads it
    ],
    ids=["bare", "service", "socket", "instance", "escaped", "dbus", "at-in-instance"],
)
def test_job_unit_name(given_name: str, expected: str) -> None:
    """Job commands act on NAME as given, or NAME.service without a type suffix."""
    assert job_unit_name(given_name) == expected


@pytest.mark.parametrize(
    "bad",
    ["", "../x", "my app", "x/y.service", "@.service", "@b@c.service", "x" * 260, "é.service"],
    ids=["empty", "dotdot", "space", "slash", "no-prefix", "at-first", "too-long", "non-ascii"],
)
def test_invalid_unit_names(bad: str) -> None:
    """Names systemd.unit(5) rejects raise UnitNameError (also a ValueError) naming them."""
    with pytest.raises(UnitNameError) as info:
        job_unit_name(bad)
    assert isinstance(info.value, ValueError)
    if bad:
        assert bad[:15] in str(info.value)


def test_validate_requires_suffix() -> None:
    """validate_unit_name wants a unit type suffix; job_unit_name supplies one."""
    with pytest.raises(UnitNameError, match="suffix"):
        validate_unit_name("myapp")


def test_status_unit_names() -> None:
    """status looks up both the service and the socket for a bare name."""
    assert status_unit_names("myapp") == ("myapp.service", "myapp.socket")
    assert status_unit_names("myapp.socket") == ("myapp.socket",)


@pytest.mark.parametrize(
    ("verb", "job", "state", "result", "verdict"),
    [
        ("restart", "done", "active", "success", Verdict.OK),
        ("restart", "done", "activating", "success", Verdict.WAIT),
        ("restart", "done", "failed", "exit-code", Verdict.FAILED),
        ("restart", "failed", "failed", "exit-code", Verdict.FAILED),
        ("restart", "timeout", "failed", "timeout", Verdict.FAILED),
        ("start", "dependency", "inactive", "success", Verdict.FAILED),
        ("start", "done", "inactive", "success", Verdict.OK),
        ("start", "done", "inactive", "exit-code", Verdict.FAILED),
        ("reload", "done", "reloading", "success", Verdict.WAIT),
        ("reload", "done", "active", "success", Verdict.OK),
        ("stop", "done", "inactive", "success", Verdict.OK),
        ("stop", "done", "failed", "exit-code", Verdict.OK),
        ("stop", "done", "deactivating", "success", Verdict.WAIT),
        ("stop", "done", "active", "success", Verdict.FAILED),
        ("stop", "canceled", "active", "success", Verdict.FAILED),
    ],
    ids=[
        "restart-active",
        "restart-activating",
        "restart-unit-failed",
        "restart-job-failed",
        "restart-job-timeout",
        "start-dependency",
        "start-oneshot-done",
        "start-oneshot-failed",
        "reload-reloading",
        "reload-active",
        "stop-inactive",
        "stop-failed-state",
        "stop-deactivating",
        "stop-restarted",
        "stop-canceled",
    ],
)
def test_judge(verb: str, job: str, state: str, result: str, verdict: Verdict) -> None:
    """The verdict table: active (inactive for stop) is the goal, failed ends the wait."""
    assert judge(verb, job, state, result) is verdict


@pytest.mark.parametrize(
    ("verb", "status", "verdict"),
    [
        (
            "reload",
            "upgrade failed: generation 2 (pid 9) failed: exited with status 1",
            Verdict.FAILED,
        ),
        ("reload", "serving generation 2 (pid 9)", Verdict.OK),
        ("reload", "", Verdict.OK),
        ("restart", "upgrade failed: left over from an earlier reload", Verdict.OK),
    ],
    ids=["handover-failed", "handover-done", "no-status", "restart-ignores-it"],
)
def test_judge_reads_a_failed_handover_from_the_status(
    verb: str, status: str, verdict: Verdict
) -> None:
    """Under Type=notify-reload (v253+) a reload job cannot fail: an `sdactivate run`
    supervisor says so in the STATUS= it sends with READY=1, and only a reload reads it."""
    assert judge(verb, "done", "active", "success", status) is verdict


def test_judge_rejects_unknown_verb() -> None:
    """An unknown verb is a programming error, not a verdict."""
    with pytest.raises(ValueError, match="frobnicate"):
        judge("frobnicate", "done", "active")


@pytest.mark.parametrize(
    ("code", "status", "text"),
    [
        (1, 3, "main process exited with status 3"),
        (2, 15, "main process was killed by SIGTERM"),
        (3, 11, "main process dumped core on SIGSEGV"),
        (2, 99, "main process was killed by signal 99"),
        (0, 0, None),
    ],
    ids=["exited", "killed", "dumped", "unknown-signal", "none"],
)
def test_describe_exit(code: int, status: int, text: str | None) -> None:
    """ExecMainCode/ExecMainStatus (waitid si_code/si_status) read as words."""
    assert describe_exit(code, status) == text


def test_failure_reason_collects_everything() -> None:
    """The reason names the job result, state, Result and exit status."""
    reason = failure_reason(
        "restart",
        "failed",
        {
            "ActiveState": "failed",
            "SubState": "failed",
            "Result": "exit-code",
            "ExecMainCode": 1,
            "ExecMainStatus": 3,
        },
    )
    assert reason == (
        "job result 'failed' (the job failed); unit is failed (failed); Result=exit-code; "
        "main process exited with status 3"
    )


def test_failure_reason_skips_stale_exit() -> None:
    """After start-limit-hit the last main process exit (an older stop) is not blamed."""
    reason = failure_reason(
        "restart",
        "failed",
        {
            "ActiveState": "failed",
            "Result": "start-limit-hit",
            "ExecMainCode": 2,
            "ExecMainStatus": 15,
        },
    )
    assert "Result=start-limit-hit" in reason and "SIGTERM" not in reason


def test_failure_reason_quotes_status_text() -> None:
    """The app's last STATUS= text is part of the reason (the supervisor reports there)."""
    reason = failure_reason("reload", "failed", {"ActiveState": "active", "StatusText": "x"})
    assert reason.endswith("unit is active; status 'x'")


def test_outcome_summary() -> None:
    """Summaries show state, pid and time on success and the reason on failure."""
    ok = JobOutcome(
        "restart", "a.service", True, "done", "active", "running", 1.234, "", {"MainPID": 7}
    )
    assert ok.summary() == "a.service: restart ok, active (running), MainPID 7 in 1.23s"
    bad = JobOutcome("start", "a.service", False, "failed", "failed", "failed", 0.5, "boom")
    assert bad.summary() == "a.service: start failed after 0.50s: boom"


@pytest.mark.parametrize(
    ("usec", "text"),
    [
        (0, "0"),
        (1, "1us"),
        (250_000, "250ms"),
        (1_500_000, "1.500000s"),
        (90_000_000, "1min 30s"),
        (3_600_000_001, "1h 1us"),
        (2**64 - 1, "infinity"),
    ],
    ids=["zero", "1us", "ms", "dotted", "min-s", "h-us", "infinity"],
)
def test_format_timespan(usec: int, text: str) -> None:
    """Spans render as systemd prints them."""
    assert format_timespan(usec) == text


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=10**14), min_size=1, max_size=20))
def test_format_timespan_agrees_with_systemd_analyze(values: list[int]) -> None:
    """format_timespan matches `systemd-analyze timespan` (time-util.c) on the same spans."""
    out = subprocess.run(
        ["systemd-analyze", "timespan", *(f"{v}us" for v in values)],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    human = re.findall(r"^\s*Human: (.*)$", out, flags=re.MULTILINE)
    assert human == [format_timespan(v) for v in values]


def test_jsonable() -> None:
    """D-Bus values become JSON values: tuples to lists, bytes to hex."""
    assert jsonable({"a": [("Stream", "x")], "b": b"\x01\xff"}) == {
        "a": [["Stream", "x"]],
        "b": "01ff",
    }


def test_render_table() -> None:
    """The table shows one block per unit with the advertised fields."""
    report = StatusReport(
        "web",
        UnitStatus(
            "web.service",
            {
                "ActiveState": "active",
                "SubState": "running",
                "MainPID": 12,
                "StatusText": "ok",
                "NRestarts": 1,
                "NFileDescriptorStore": 2,
                "FileDescriptorStoreMax": 8,
                "WatchdogUSec": 0,
                "Result": "success",
            },
        ),
        (
            UnitStatus(
                "web.socket",
                {
                    "ActiveState": "active",
                    "SubState": "listening",
                    "Listen": [["Stream", "127.0.0.1:80"], ["Datagram", "/run/x"]],
                    "NAccepted": 0,
                    "NConnections": 0,
                },
            ),
        ),
    )
    assert render_table(report).splitlines() == [
        "web.service  active (running)",
        "  Main PID     12",
        "  Status       'ok'",
        "  Restarts     1",
        "  FD store     2 / 8 (stored / max)",
        "  Watchdog     off",
        "  Result       success",
        "",
        "web.socket  active (listening)",
        "  Listen       127.0.0.1:80 (Stream)",
        "               /run/x (Datagram)",
        "  Accepted     0",
        "  Connections  0",
    ]
    assert report.to_json()["sockets"][0]["unit"] == "web.socket"


def test_user_bus_needs_runtime_dir() -> None:
    """--user without DBUS_SESSION_BUS_ADDRESS or XDG_RUNTIME_DIR is a clear error."""
    from sdactivate.control.bus import bus_address

    with pytest.raises(BusUnavailableError, match="XDG_RUNTIME_DIR"):
        bus_address(user=True, environ={})
    assert bus_address(user=True, environ={"XDG_RUNTIME_DIR": "/run/user/1000"}) == (
        "unix:path=/run/user/1000/bus"
    )
    assert bus_address(environ={}) == "unix:path=/run/dbus/system_bus_socket"


@pytest.mark.parametrize(
    "argv",
    [
        ["restart", "x", "--timeout", "0"],
        ["restart", "x", "--timeout", "soon"],
        ["reload", "--pid", "1"],
        ["status"],
    ],
    ids=["zero-timeout", "word-timeout", "pid-1", "status-no-name"],
)
def test_cli_usage_errors(argv: list[str]) -> None:
    """Bad command lines exit 2 before anything is contacted."""
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2


def test_cli_reload_pid_parses(monkeypatch: pytest.MonkeyPatch) -> None:
    """`reload --pid PID --timeout S` calls the supervisor client with pid and timeout."""
    from sdactivate.supervisor import client

    calls: list[tuple[int, float]] = []

    def fake(pid: int, *, timeout: float) -> client.ReloadResult:
        calls.append((pid, timeout))
        return client.ReloadResult(ok=False, generation=1, pid=10, message="child died")

    monkeypatch.setattr(client, "request_reload", fake)
    assert main(["reload", "--pid", "4321", "--timeout", "7"]) == 1
    assert calls == [(4321, 7.0)]
    monkeypatch.setattr(
        client,
        "request_reload",
        lambda pid, *, timeout: client.ReloadResult(ok=True, generation=2, pid=11, message=""),
    )
    assert main(["reload", "--pid", "4321"]) == 0


def test_argparse_types_are_local() -> None:
    """The CLI module only parses; its helpers reject junk with ArgumentTypeError."""
    from sdactivate.cli import control

    with pytest.raises(argparse.ArgumentTypeError):
        control._positive_seconds("inf")
    assert control._positive_seconds("1.5") == 1.5


def test_jeepney_only_loaded_by_the_commands() -> None:
    """Building the CLI parser (and `import sdactivate`) does not import jeepney or the
    D-Bus layer; `sdactivate.control` does."""
    code = (
        "import sys, sdactivate, sdactivate.cli as c; c.build_parser();"
        "assert 'jeepney' not in sys.modules and 'sdactivate.control' not in sys.modules;"
        "import sdactivate.control; assert 'jeepney' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
