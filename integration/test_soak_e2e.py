"""The chaos soak, short (integration/soak.py; `make soak` runs it for 300 s): one round of
every fault kind under 500 new connections/s against generated `--supervise` units."""

from __future__ import annotations

from collections.abc import Callable

from sandbox import Sandbox, Units
from soak import Config, Soak

SEED = 1
# The first round of faults runs whole whatever this says: 25-30 s for seed 1 on the 2-core
# machine (a SIGSTOPped generation takes --ready-timeout, plus the supervisor's grace from
# issue 16 item 2's fix); a shorter budget adds nothing after it.
SECONDS = 20.0


def test_short_chaos_soak(
    sandbox: Sandbox, units: Units, measurements: Callable[[str], None]
) -> None:
    """Kill serving and starting generations, stop one past --ready-timeout, versions that
    exit or never get ready, SIGHUP and reload bursts, supervisor SIGKILL: no request fails
    but those a SIGKILLed serving generation had accepted, no stuck drain, no zombie, no fd
    growth in the supervisor, the same listening socket, and nothing left after stop."""
    config = Config(seconds=SECONDS, seed=SEED)
    units.track([f"{config.name}.socket", config.unit])
    report = Soak(sandbox, config).run()
    print(report.table())
    allowed = len(report.attributed) - len(report.not_allowed())
    measurements(
        f"systemd {report.systemd}, seed {SEED}: {len(report.faults)} faults in"
        f" {report.seconds:.0f} s, {report.requests} requests, {report.requests - report.ok}"
        f" failed ({allowed} accepted by a SIGKILLed serving generation)"
    )
    assert not report.violations(), (
        "\n".join(report.violations()) + "\n" + report.failures() + "\n" + report.table()
    )
