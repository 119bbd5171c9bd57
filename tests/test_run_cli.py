"""`sdactivate run` refuses at parse time what gen-units refuses (fd names, --startup-nice),
and what the fd store cannot take (unnamed or reserved names with --fdstore)."""

from __future__ import annotations

import os
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
        (("--listen", "127.0.0.1:0=a\tb"), "invalid fd name 'a\\tb'"),
        (("--listen", "127.0.0.1:0="), "invalid fd name ''"),
        (("--listen", "127.0.0.1:0", "--startup-nice", "99"), "'99': not a nice value 0..19"),
        (("--listen", "127.0.0.1:0", "--startup-nice", "-1"), "'-1': not a nice value 0..19"),
        (("--fdstore", "--listen", "127.0.0.1:0"), "with --fdstore needs a name"),
        (("--fdstore", "--listen", "127.0.0.1:0=unknown"), "'unknown' is reserved"),
        (("--listen", "127.0.0.1:0", "--ready-timeout", "inf"), "'inf': seconds must be > 0"),
        (("--listen", "127.0.0.1:0", "--ready-timeout", "1e300"), "'1e300': seconds must be > 0"),
        (("--listen", "127.0.0.1:0", "--ready-timeout", "nan"), "'nan': seconds must be > 0"),
        (("--listen", "127.0.0.1:0", "--ready-timeout", "-1"), "'-1': seconds must be > 0"),
        (("--listen", "127.0.0.1:0", "--drain-timeout", "inf"), "'inf': seconds must be > 0"),
        (("--listen", "127.0.0.1:0", "--drain-timeout", "0"), "'0': seconds must be > 0"),
        (("--listen", "127.0.0.1:0", "--startup-grace", "1e300"), "'1e300': seconds must be > 0"),
        (("--listen", "127.0.0.1:0", "--health-timeout=-inf"), "'-inf': seconds must be > 0"),
    ],
    ids=[
        "tab",
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


def test_run_reuses_activations_socket_objects_and_matches_port_0_by_name_and_host() -> None:
    """`run --listen` takes the passed sockets as activation's objects (one per fd: it wrapped
    them a second time); port 0 takes the socket of that name only on the same host (the
    copies disagreed: run took a named socket of the same family on any host)."""
    import fcntl
    import json
    import select
    import time

    from sdactivate._spawn import spawn
    from sdactivate.addresses import parse_address

    web, api = (parse_address("127.0.0.1:0").bind() for _ in range(2))
    r, low = os.pipe2(os.O_CLOEXEC)
    w = fcntl.fcntl(low, fcntl.F_DUPFD_CLOEXEC, 100)  # clear of the fds at 3..
    os.close(low)
    code = f"""
import json, os
import sdactivate
from sdactivate.cli import run as run_cli
out = run_cli._listeners(["127.0.0.1:0=web", "127.0.0.2:0=api"])
passed = sdactivate.listeners()
os.write({w}, json.dumps([
    [[lst.sock is p for p in passed] for lst in out],
    [[lst.name, lst.store, lst.sock.getsockname()[0]] for lst in out],
]).encode())
"""
    try:
        child = spawn(
            [PY, "-c", code], [web.fileno(), api.fileno()], names=["web", "api"], pass_fds=(w,)
        )
    finally:
        web.close()
        api.close()
        os.close(w)
    data = b""
    deadline = time.monotonic() + 30
    try:
        while chunk := (os.read(r, 65536) if select.select([r], [], [], 30)[0] else None):
            data += chunk
            assert time.monotonic() < deadline
    finally:
        os.close(r)
        _, status = os.waitpid(child.pid, 0)
        os.close(child.pidfd)
    assert os.waitstatus_to_exitcode(status) == 0, data
    same, rows = json.loads(data)
    assert same == [[True, False], [False, False], [False, True]]
    assert rows == [
        ["web", False, "127.0.0.1"],
        ["api", True, "127.0.0.2"],
        ["api", False, "127.0.0.1"],
    ]
