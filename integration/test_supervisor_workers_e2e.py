"""`gen-units --supervise --workers 4` units as generated, running examples/app.py under real
systemd: `systemctl reload` x10 under load hands all four workers over with 0 failed requests
and the same MainPID (`sdactivate status` lists the workers); a SIGKILLed supervisor is
restarted by systemd, the socket unit keeps the queue, 0 failed requests."""

from __future__ import annotations

import json
from collections.abc import Callable

from integration.helpers import (
    main_pid,
    restart_under_load,
    sandbox_version,
    sigkill_supervisor,
    wait_state,
)
from integration.sandbox import Sandbox, Units, free_port, wait_until
from integration.test_control_e2e import sdactivate
from integration.test_supervisor_units_e2e import app_pids, supervised

WORKERS = ("--workers", "4", "--max-starting", "2")


def _four_workers(sandbox: Sandbox, unit: str, generation: int | None = None) -> list[int]:
    """The unit's app processes, once there are exactly 4 and STATUS= says 4/4 ready."""

    def settled() -> list[int] | None:
        pids = app_pids(sandbox, unit)
        text = sandbox.show(unit, "StatusText")["StatusText"]
        want = "4/4 ready, generation " + ("" if generation is None else f"{generation}")
        ok = len(pids) == 4 and text.startswith(want)
        return pids if ok else None

    return wait_until(
        settled,
        timeout=30,
        interval=0.1,
        what=lambda: (
            f"4 workers of {unit}: {app_pids(sandbox, unit)}, "
            f"{sandbox.show(unit, 'StatusText')['StatusText']!r}"
        ),
    )


def test_reload_x10_under_load_hands_over_all_workers(
    sandbox: Sandbox, units: Units, measurements: Callable[[str], None]
) -> None:
    """10 x `systemctl reload` under 500 new connections/s: 0 failed requests, MainPID
    unchanged, and afterwards 4 workers of generation 11, none of the first ones."""
    port = free_port()
    unit = units.name("sdsw-reload.service")
    files = supervised(units.name("sdsw-reload"), port, *WORKERS, version=sandbox_version(sandbox))
    assert "--workers 4 --max-starting 2" in files[unit]
    units.install(files)
    sandbox.systemctl("start", units.name("sdsw-reload.socket"), unit)
    wait_state(sandbox, unit, "active", sub="running")
    first = _four_workers(sandbox, unit, 1)
    main = main_pid(sandbox, unit)

    run = restart_under_load(
        port,
        lambda: sandbox.systemctl("reload", unit),
        restarts=10,
        rate=500,
        spacing=0.5,
        timeout=15,
    )
    measurements("--workers 4, systemctl reload x10: " + run.describe())
    run.assert_no_failures()
    assert main_pid(sandbox, unit) == main
    last = _four_workers(sandbox, unit, 11)
    assert not set(last) & set(first)
    # `sdactivate status NAME` lists them, from the supervisor's control socket
    code, out, err, _ = sdactivate(sandbox, "status", units.name("sdsw-reload"), "--json")
    assert code == 0, err
    workers = json.loads(out)["workers"]
    assert sorted(w["pid"] for w in workers) == last
    assert sorted(w["worker"] for w in workers) == [0, 1, 2, 3]
    assert {(w["generation"], w["state"], w["restarts"]) for w in workers} == {(11, "ready", 0)}
    code, table, err, _ = sdactivate(sandbox, "status", units.name("sdsw-reload"))
    assert code == 0 and "Workers" in table and "generation 11, ready" in table, table + err


def test_sigkill_supervisor_with_workers_loses_nothing(
    sandbox: Sandbox, units: Units, measurements: Callable[[str], None]
) -> None:
    """SIGKILL the supervisor of 4 workers (steady, and mid-handover) under load: systemd
    SIGTERMs the workers, restarts the service; the socket unit keeps the queue: 0 failed
    requests, and 4 new workers serve."""
    port = free_port()
    unit = units.name("sdsw-kill.service")
    units.install(
        supervised(units.name("sdsw-kill"), port, *WORKERS, version=sandbox_version(sandbox))
    )
    sandbox.systemctl("start", units.name("sdsw-kill.socket"), unit)
    wait_state(sandbox, unit, "active", sub="running")
    old = _four_workers(sandbox, unit)

    run = restart_under_load(
        port,
        sigkill_supervisor(sandbox, unit, mid_handover=True),
        restarts=2,
        rate=500,
        spacing=1.0,
        timeout=15,
    )
    measurements("--workers 4, supervisor SIGKILL x2: " + run.describe())
    run.assert_no_failures()
    assert not set(_four_workers(sandbox, unit)) & set(old)
