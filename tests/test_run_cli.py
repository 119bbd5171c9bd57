"""`sdactivate run` refuses at parse time what gen-units refuses (fd names, --startup-nice),
and what the fd store cannot take (unnamed or reserved names with --fdstore)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sdactivate.cli import run as run_cli
from sdactivate.errors import UnitConfigError
from sdactivate.units.build import Options, build

PY = sys.executable

FD_NAMES = ["http", "a.b-c_d", "x" * 255, "", "a b", "a:b", "é", "x" * 256, "tab\tx"]


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PY, "-m", "sdactivate", "run", *args], capture_output=True, text=True, timeout=30, cwd=cwd
    )


def _gen_units_accepts(name: str) -> bool:
    options = Options(name="myapp", systemd_version=252, listens=(("127.0.0.1:8080", name),))
    try:
        build(options, which=lambda _: "/usr/bin/true", python="/usr/bin/python3")
    except UnitConfigError:
        return False
    return True


def _run_accepts(name: str) -> bool:
    try:
        run_cli._listen_specs([f"127.0.0.1:0={name}"], fdstore=False)
    except UnitConfigError:
        return False
    return True


@pytest.mark.parametrize("name", FD_NAMES, ids=[repr(n)[:20] for n in FD_NAMES])
def test_run_and_gen_units_take_the_same_fd_names(name: str) -> None:
    """An fd name `run --listen ADDR=NAME` takes is one gen-units takes, and the reverse."""
    assert _run_accepts(name) == _gen_units_accepts(name)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--listen", "127.0.0.1:0=a b"), "invalid fd name 'a b'"),
        (("--listen", "127.0.0.1:0="), "invalid fd name ''"),
        (("--listen", "127.0.0.1:0", "--startup-nice", "99"), "'99': not a nice value 0..19"),
        (("--listen", "127.0.0.1:0", "--startup-nice", "-1"), "'-1': not a nice value 0..19"),
        (("--fdstore", "--listen", "127.0.0.1:0"), "with --fdstore needs a name"),
        (("--fdstore", "--listen", "127.0.0.1:0=unknown"), "'unknown' is reserved"),
        (("--listen", "127.0.0.1:0", "--ready-timeout", "inf"), "'inf': must be a number"),
        (("--listen", "127.0.0.1:0", "--ready-timeout", "1e300"), "'1e300': must be a number"),
        (("--listen", "127.0.0.1:0", "--ready-timeout", "nan"), "'nan': must be a number"),
        (("--listen", "127.0.0.1:0", "--ready-timeout", "-1"), "'-1': must be a number"),
        (("--listen", "127.0.0.1:0", "--drain-timeout", "inf"), "'inf': must be a number"),
        (("--listen", "127.0.0.1:0", "--drain-timeout", "0"), "'0': must be a number"),
        (("--listen", "127.0.0.1:0", "--startup-grace", "1e300"), "'1e300': must be a number"),
        (("--listen", "127.0.0.1:0", "--health-timeout=-inf"), "'-inf': must be a number"),
    ],
    ids=[
        "space",
        "empty",
        "nice-99",
        "nice-negative",
        "fdstore-unnamed",
        "fdstore-unknown",
        "ready-inf",
        "ready-1e300",
        "ready-nan",
        "ready-negative",
        "drain-inf",
        "drain-0",
        "grace-1e300",
        "health-minus-inf",
    ],
)
def test_run_refuses_at_parse_time(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    """Exit 2 with one line naming the value, before anything is bound or started."""
    result = _run(*args, "--", "/bin/true", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr


def test_run_without_fdstore_still_names_unnamed_sockets_unknown() -> None:
    """Without --fdstore an unnamed --listen is passed as 'unknown' (sd_listen_fds(3))."""
    assert run_cli._listen_specs(["127.0.0.1:0", "[::1]:80=http"], fdstore=False) == [
        ("127.0.0.1:0", "unknown"),
        ("[::1]:80", "http"),
    ]
