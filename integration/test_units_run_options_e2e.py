"""`gen-units --supervise` with `sdactivate run` options under real systemd: the unit's
timeouts are sized from them, and `systemctl reload` and `stop` give every generation its
--stop-signal and nothing else (INT: KillSignal=SIGINT to the whole unit; QUIT: KillMode=mixed,
the supervisor relays it)."""

from __future__ import annotations

import pytest

from integration.helpers import PYTHON, gen_units, sandbox_version, wait_state
from integration.sandbox import CODE_DIR, Sandbox, Units, free_port, wait_until

PROBE = f"{CODE_DIR}/integration/probes/stop_signal_app.py"


@pytest.mark.parametrize(
    ("sig", "kill_mode", "kill_signal"),
    [("SIGINT", "control-group", "2"), ("SIGQUIT", "mixed", "15")],
    ids=["INT", "QUIT"],
)
def test_stop_signal_reaches_each_generation_alone(
    sandbox: Sandbox, units: Units, sig: str, kill_mode: str, kill_signal: str
) -> None:
    """Start, reload (the old generation gets the stop signal), stop (the new one does):
    two 'got SIG...' lines, both the expected signal, the unit stops cleanly; TimeoutStartSec=
    is drain + ready + health timeouts + 10 s and TimeoutStopSec= drain + 10 s."""
    name = f"sdro-{sig[3:].lower()}"
    unit = f"{name}.service"
    files = gen_units(
        name,
        listens=[(f"127.0.0.1:{free_port()}", "http")],
        options=[
            "--supervise", "--python", PYTHON, "--stop-signal", sig[3:], "--ready-timeout", "20",
            "--health", "test -n \"$SDACTIVATE_HEALTH_ADDR\"", "--health-timeout", "4",
            "--drain-timeout", "5",
        ],
        script=PROBE,
        args=(sig,),
        version=sandbox_version(sandbox),
    )  # fmt: skip
    units.install(files)
    sandbox.systemctl("start", f"{name}.socket", unit)
    wait_state(sandbox, unit, "active", sub="running", timeout=30)
    shown = sandbox.show(
        unit, "TimeoutStartUSec", "TimeoutStopUSec", "KillMode", "KillSignal", "Type"
    )
    assert shown["TimeoutStartUSec"] == "39s"  # 5 + 20 + 4 + 10
    assert shown["TimeoutStopUSec"] == "15s"
    assert (shown["KillMode"], shown["KillSignal"]) == (kill_mode, kill_signal), shown

    sandbox.systemctl("reload", unit)  # returns once the new generation took over
    wait_until(
        lambda: sandbox.journal(unit).count(" got SIG") >= 1,
        timeout=15,
        what="the old generation's stop signal",
    )
    sandbox.systemctl("stop", unit)
    wait_state(sandbox, unit, "inactive", timeout=30)
    journal = sandbox.journal(unit, lines=400)
    got = [line.split(" got ", 1)[1].strip() for line in journal.splitlines() if " got SIG" in line]
    assert got == [sig, sig], journal
    assert "SIGKILL" not in journal and "status=3" not in journal, journal
    assert sandbox.show(unit, "Result")["Result"] == "success"


def test_socket_file_mode_and_owner(sandbox: Sandbox, units: Units) -> None:
    """SocketMode=/SocketUser=/SocketGroup= as generated: the socket file systemd creates
    has them; without the options it is 0666 root:root, as the unit's comment says."""
    version = sandbox_version(sandbox)
    restricted = gen_units(
        "sdro-sock",
        listens=[("/run/sdro-sock.sock", None)],
        options=[
            "--socket-mode",
            "0660",
            "--socket-user",
            "www-data",
            "--socket-group",
            "www-data",
        ],
        version=version,
    )
    default = gen_units("sdro-open", listens=[("/run/sdro-open.sock", None)], version=version)
    assert "SocketMode=0666" in default["sdro-open.socket"]
    units.install({**restricted, **default})
    sandbox.systemctl("start", "sdro-sock.socket", "sdro-open.socket")
    stat = ["stat", "-c", "%a %U %G"]
    assert sandbox.run([*stat, "/run/sdro-sock.sock"]).stdout.split() == [
        "660",
        "www-data",
        "www-data",
    ]
    assert sandbox.run([*stat, "/run/sdro-open.sock"]).stdout.split() == ["666", "root", "root"]
