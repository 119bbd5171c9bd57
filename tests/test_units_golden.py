"""Every unit shape x every target version, byte for byte against recorded output.

The files under ``tests/golden/units/`` were generated before ``units/build.py`` was split
into one builder per shape (cases added later: when their feature came); they pin the text
(and, for refused combinations, the error) so that a refactoring cannot change a single
byte unnoticed. A deliberate change regenerates
them: ``SDACTIVATE_REGEN_GOLDEN=1 .venv/bin/python -m pytest -q tests/test_units_golden.py``
and the diff is reviewed like code. The sdactivate version in the header is replaced by
``VERSION`` (a release must not rewrite every file).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sdactivate import __version__
from sdactivate.errors import UnitConfigError
from sdactivate.units.build import Options, build
from sdactivate.units.model import RateLimit

GOLDEN = Path(__file__).resolve().parent / "golden" / "units"
VERSIONS = (245, 252, 253, 254, 257, 262)
_PY = "/usr/bin/python3"
_APP = ("/opt/myapp/bin/myapp", "--flag", "a b")

# one entry per shape and per option that changes the text; kwargs of Options
CASES: dict[str, dict[str, object]] = {
    "plain": {},
    "plain-standard": {"hardening": "standard"},
    "plain-off-no-network": {"hardening": "off", "network": False},
    "plain-no-network": {"network": False},
    "plain-user": {"user": True},
    "plain-name-on-path": {"command": ()},
    "plain-exec-program": {"command": ("--x", "%n"), "exec_program": "myapp"},
    "plain-multi-socket": {
        "fdname": "http",
        "listens": (("127.0.0.1:9000", "admin"), ("/run/myapp.sock", "admin"), ("@x", None)),
    },
    "plain-udp-seqpacket": {
        "ports": (),
        "listens": (("udp:[::1]:53", None), ("unix-seqpacket:@s", "q")),
    },
    "plain-env-wd-hostile": {
        "environment": (("GREETING", 'hi "there" 100%'), ("B", "$x\\y")),
        "working_dir": "/srv/myapp",
        "description": "My 100% app",
        "command": (_PY, "-c", "pass", "a b", "%n", "$HOME", ";", "\\", "", "'q'"),
    },
    "plain-watchdog-timeout": {"watchdog": 10, "timeout_stop": 12.5},
    "plain-start-limit-off": {"start_limit": RateLimit.off()},
    "plain-start-limit-100/30": {"start_limit": RateLimit(100, 30)},
    "plain-reload": {"reload": True},
    "plain-type-exec": {"service_type": "exec"},
    "plain-type-simple-user": {"service_type": "simple", "user": True},
    "plain-fdstore": {"fdstore": 4},
    "plain-fdstore-preserve-no": {"fdstore": 4, "fdstore_preserve": "no"},
    "supervise": {"supervise": True},
    "supervise-watchdog-timeout": {"supervise": True, "watchdog": 10, "timeout_stop": 20},
    "supervise-no-nice": {"supervise": True, "startup_nice": 0},
    "supervise-nice-5-standard": {"supervise": True, "startup_nice": 5, "hardening": "standard"},
    "supervise-off": {"supervise": True, "hardening": "off"},
    "supervise-user": {"supervise": True, "user": True, "hardening": "standard"},
    "supervise-python": {"supervise": True, "python": "/opt/venv/bin/python"},
    "supervise-fdstore-sockets": {"supervise": True, "fdstore": 1},
    "supervise-fdstore": {
        "supervise": True,
        "fdstore": 8,
        "fdname": "http",
        "listens": (("[::1]:8081", "admin"), ("@ctl", None)),
    },
    "supervise-fdstore-off": {"supervise": True, "fdstore": 2, "hardening": "off"},
    "supervise-fdstore-user": {"supervise": True, "fdstore": 2, "user": True},
    "supervise-fdstore-preserve-restart": {
        "supervise": True,
        "fdstore": 2,
        "fdstore_preserve": "restart",
    },
    "supervise-multi-socket": {"supervise": True, "listens": (("/run/a.sock", "admin"),)},
    "supervise-run-options": {
        "supervise": True,
        "ready_timeout": 120,
        "drain_timeout": 45,
        "health": "curl -fsS http://$SDACTIVATE_HEALTH_ADDR/ %n",
        "health_timeout": 5,
        "startup_grace": 2.5,
    },
    "supervise-stop-signal-int": {"supervise": True, "stop_signal": 2},
    "supervise-stop-signal-quit": {"supervise": True, "stop_signal": 3, "fdstore": 1},
    "socket-file-mode": {
        "listens": (("/run/myapp.sock", None),),
        "socket_mode": 0o660,
        "socket_user": "www-data",
        "socket_group": "www-data",
    },
    "accept-socket-file-group": {
        "accept": True,
        "ports": (),
        "listens": (("/run/myapp.sock", None),),
        "socket_group": "web",
    },
    "refused-socket-mode-without-file": {"socket_mode": 0o600},
    "refused-socket-user-user-manager": {
        "user": True,
        "listens": (("/run/myapp.sock", None),),
        "socket_user": "www-data",
    },
    "refused-ready-timeout-without-supervise": {"ready_timeout": 5},
    "upgrader": {"upgrader": True},
    "upgrader-fdstore": {"upgrader": True, "fdstore": 4},
    "fdstore-only": {"ports": (), "fdstore": 4},
    "fdstore-only-user": {"ports": (), "fdstore": 4, "user": True},
    "fdstore-only-off": {"ports": (), "fdstore": 1, "hardening": "off"},
    "fdstore-only-preserve-no": {"ports": (), "fdstore": 1, "fdstore_preserve": "no"},
    "fdstore-only-reload": {"ports": (), "fdstore": 2, "reload": True},
    "accept": {"accept": True},
    "accept-max": {"accept": True, "max_connections": 16},
    "accept-unix-no-network": {
        "accept": True,
        "ports": (),
        "listens": (("/run/myapp.sock", None), ("unix-seqpacket:@q", None)),
        "network": False,
    },
    "accept-trigger-limit": {"accept": True, "start_limit": RateLimit(500, 2)},
    "accept-user": {"accept": True, "user": True},
    # refused: the golden file holds the error, so the order of the checks is pinned too
    "refused-supervise-upgrader": {"supervise": True, "upgrader": True},
    "refused-nothing-to-listen": {"ports": ()},
    "refused-accept-supervise": {"accept": True, "supervise": True},
    "refused-fdstore-only-supervise": {"ports": (), "fdstore": 2, "supervise": True},
    "refused-supervise-fdstore-socket-file": {
        "supervise": True,
        "fdstore": 2,
        "listens": (("/run/a.sock", "x"),),
    },
    "refused-bad-port": {"ports": (70000,)},
    "refused-type-exec-supervise": {"service_type": "exec", "supervise": True},
    "refused-nice-without-supervise": {"startup_nice": 3},
    "refused-program-not-found": {"command": ("nosuchprogram",)},
}


def _which(name: str) -> str | None:
    return {"python3": _PY, "myapp": "/opt/myapp/bin/myapp"}.get(name)


def _generate(case: str, version: int) -> str:
    kw: dict[str, object] = {"name": "myapp", "systemd_version": version, "ports": (8080,)}
    kw["command"] = _APP
    kw |= CASES[case]
    try:
        files = build(Options(**kw), which=_which, python="python3")  # type: ignore[arg-type]
    except UnitConfigError as exc:
        return f"! {type(exc).__name__}: {exc}\n"
    text = "".join(f"### {name}\n{body}" for name, body in files.items())
    return text.replace(
        f"Generated by sdactivate {__version__} ", "Generated by sdactivate VERSION "
    )


def _path(case: str, version: int) -> Path:
    return GOLDEN / f"{case.replace('/', '-')}@{version}.txt"


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("case", list(CASES))
def test_output_is_byte_identical_to_the_recorded_one(case: str, version: int) -> None:
    """gen-units writes exactly the recorded text (or refuses with the recorded error)."""
    text = _generate(case, version)
    path = _path(case, version)
    if os.environ.get("SDACTIVATE_REGEN_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert text == path.read_text(encoding="utf-8"), f"{path} differs; see the module docstring"


def test_no_stale_golden_files() -> None:
    """Every recorded file belongs to a case and a version of the table."""
    expected = {_path(case, version).name for case in CASES for version in VERSIONS}
    assert {p.name for p in GOLDEN.glob("*.txt")} == expected
