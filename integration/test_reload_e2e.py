"""`systemctl reload` through ExecReload=: RELOADING=1 + MONOTONIC_USEC, then READY=1."""

from __future__ import annotations

import time
from collections.abc import Callable

from integration.helpers import (
    gen_units,
    http_get,
    main_pid,
    restart_under_load,
    sandbox_version,
    wait_state,
)
from integration.sandbox import Sandbox, Units, free_port, wait_until

UNIT = "sdact-rld.service"
EXEC_RELOAD = "[Service]\nExecReload=/bin/kill -HUP $MAINPID\n"


def test_reload_notifies_and_stays_active(
    sandbox: Sandbox, units: Units, measurements: Callable[[str], None]
) -> None:
    """`systemctl reload` returns promptly, the app sends RELOADING=1 + MONOTONIC_USEC then
    READY=1 (its STATUS= reaches systemd), the unit stays active with the same main pid, and
    reloads under load lose nothing."""
    unit = units.name(UNIT)
    port = free_port()
    files = gen_units(units.name("sdact-rld"), listens=[(f"127.0.0.1:{port}", "http")])
    units.install(files | {f"{unit}.d/50-reload.conf": EXEC_RELOAD})
    sandbox.systemctl("start", units.name("sdact-rld.socket"), unit)
    wait_state(sandbox, unit, "active")
    pid = main_pid(sandbox, unit)
    assert http_get("127.0.0.1", port)[2] == f"pid={pid} gen=0\n"

    start = time.monotonic()
    sandbox.systemctl("reload", unit)
    took = time.monotonic() - start
    wait_until(
        lambda: sandbox.show(unit, "StatusText")["StatusText"] == f"reloaded: pid {pid}, gen 1",
        timeout=10,
        what="STATUS= of the READY=1 that ends the reload",
    )
    state = wait_state(sandbox, unit, "active", sub="running")
    assert state["MainPID"] == str(pid) and state["NRestarts"] == "0"
    assert http_get("127.0.0.1", port)[2] == f"pid={pid} gen=1\n"
    log = sandbox.run(["journalctl", "-u", unit, "-o", "cat", "-q"]).stdout
    sent = [line for line in log.splitlines() if "RELOADING=1" in line or "READY=1" in line]
    assert [("RELOADING" in s) for s in sent[-2:]] == [True, False], sent
    assert "MONOTONIC_USEC" in sent[-2]

    run = restart_under_load(
        port,
        lambda: sandbox.systemctl("reload", unit),
        restarts=5,
        rate=300,
        spacing=0.2,
    )
    measurements(f"reload: systemctl reload took {took * 1e3:.0f} ms; under load: {run.describe()}")
    run.assert_no_failures()
    assert run.result.pids() == {pid: run.result.ok}  # one process served everything
    wait_until(
        lambda: http_get("127.0.0.1", port)[2] == f"pid={pid} gen=6\n",
        timeout=10,
        what="the sixth reload to be applied",
    )


def test_generated_reload_units(sandbox: Sandbox, units: Units) -> None:
    """`gen-units --reload` for this systemd: Type=notify-reload from 253 (systemctl reload
    sends SIGHUP and returns after the app's READY=1), Type=notify + ExecReload=kill -HUP on
    252; either way the app reloads in place (same pid, next generation) and stays active."""
    version = sandbox_version(sandbox)
    unit = units.name("sdact-grl.service")
    port = free_port()
    files = gen_units(
        units.name("sdact-grl"),
        listens=[(f"127.0.0.1:{port}", "http")],
        options=["--reload"],
        version=version,
    )
    units.install(files)
    sandbox.systemctl("start", units.name("sdact-grl.socket"), unit)
    wait_state(sandbox, unit, "active", sub="running")
    kind = sandbox.show(unit, "Type", "ExecReload")
    assert kind["Type"] == ("notify-reload" if version >= 253 else "notify"), kind
    assert ("kill" in kind.get("ExecReload", "")) == (version < 253), kind
    pid = main_pid(sandbox, unit)
    for gen in (1, 2):
        sandbox.systemctl("reload", unit)
        wait_until(
            lambda gen=gen: http_get("127.0.0.1", port)[2] == f"pid={pid} gen={gen}\n",
            timeout=10,
            what=f"reload {gen} applied",
        )
        state = wait_state(sandbox, unit, "active", sub="running")
        assert state["MainPID"] == str(pid) and state["NRestarts"] == "0"
