"""EXTEND_TIMEOUT_USEC= as the release's own PID 1 reads it: the supervisor reads a
generation's value with sdactivate._cint.c_unsigned (parse_extend_timeout), because service.c
reads it with safe_atou64(). integration/probes/extend_timeout.py sends 200 values; PID 1
logs the ones it cannot parse."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from integration.helpers import PYTHON, sandbox_version, wait_state
from integration.sandbox import CODE_DIR, Sandbox, Units, wait_until

_REFUSED = "Failed to parse EXTEND_TIMEOUT_USEC="


def test_extend_timeout_values_pid1_refuses_are_the_ones_we_refuse(
    sandbox: Sandbox, units: Units, measurements: Callable[[str], None]
) -> None:
    """The values PID 1 cannot parse are exactly those parse_extend_timeout() ignores, but
    for 0 and USEC_INFINITY, which both ignore after parsing (leading whitespace, '+',
    0x/0b/0o and C octal taken; trailing text, '-' and past 64 bits not)."""
    probe = f"{CODE_DIR}/integration/probes/extend_timeout.py"
    unit = units.name("sdx-extend.service")
    units.install(
        {
            unit: (
                f"[Service]\nType=notify\nNotifyAccess=all\nEnvironment=PYTHONPATH={CODE_DIR}\n"
                f"ExecStart={PYTHON} {probe}\n"
            )
        }
    )
    sandbox.systemctl("start", unit)
    wait_state(sandbox, unit, "active", sub="running")

    def journal_done() -> str | None:
        out = sandbox.run(["journalctl", "-u", unit, "-o", "cat", "--no-pager"]).stdout
        return out if f"{_REFUSED}sdactivate-end" in out else None

    journal = wait_until(journal_done, timeout=30, what=f"{unit}'s last EXTEND_TIMEOUT_USEC=")
    report: dict[str, Any] = {}
    for line in journal.splitlines():
        if line.startswith("PROBE "):
            report = json.loads(line[len("PROBE ") :])
    assert report, journal
    pid1_refused = {
        line.split(_REFUSED, 1)[1] for line in journal.splitlines() if _REFUSED in line
    } - {"sdactivate-end"}
    parsed_then_ignored = set(report["zero_or_infinity"])
    ours = set(report["ignored"]) - parsed_then_ignored
    measurements(
        f"systemd {sandbox_version(sandbox)}: {len(report['values'])} EXTEND_TIMEOUT_USEC="
        f" values, PID 1 refused {len(pid1_refused)}, we refuse {len(ours)},"
        f" {len(pid1_refused ^ ours)} differ"
    )
    assert pid1_refused == ours, {
        "pid1 only": pid1_refused - ours,
        "ours only": ours - pid1_refused,
    }
    assert parsed_then_ignored and not parsed_then_ignored & pid1_refused
    assert 0 < len(ours) < len(report["values"])  # both answers occur
    sandbox.systemctl("stop", unit)
