"""_shim.shim_command, a pure function: which chain of execs a spawn gets, and when the
Python shim stands in; _shim.seccomp_filtered reads proc(5)."""

from __future__ import annotations

import signal
from typing import Any

import pytest

from sdactivate import _shim
from sdactivate._shim import Tools, shim_command
from sdactivate.errors import SdActivateError

SH = Tools("/bin/sh", "/usr/bin/env", "/usr/bin/setpriv", "/usr/bin/python3")


def _chain(program: str = "/bin/app", tools: Tools = SH, **kw: Any) -> tuple[str, list[str]]:
    options: dict[str, Any] = {
        "listening": True,
        "parent": 42,
        "pdeathsig": None,
        "gate": None,
        "cwd": None,
    }
    path, argv, env = shim_command(program, [program, "x"], {"A": "1"}, tools=tools, **options | kw)
    if path != program:
        assert env == {}  # the environment travels as arguments
    return path, argv


def test_shim_is_skipped_when_there_is_nothing_to_set() -> None:
    """No fds, no parent-death signal, no priority to wait for, no cwd: posix_spawn runs
    the program itself."""
    assert shim_command(
        "/bin/app",
        ["app", "x"],
        {"A": "1"},
        listening=False,
        parent=42,
        pdeathsig=None,
        gate=None,
        cwd=None,
        tools=SH,
    ) == ("/bin/app", ["app", "x"], {"A": "1"})


def test_shim_with_a_parent_death_signal_starts_with_setpriv() -> None:
    """setpriv sets PR_SET_PDEATHSIG first; the shell then checks the parent is still ours
    (else exits), waits for the line on the gate (our priority set), enters cwd, and execs
    env -i with LISTEN_PID=$$ and the environment."""
    path, argv = _chain(pdeathsig=signal.SIGTERM, gate=5, cwd="/srv")
    assert path == "/usr/bin/setpriv"
    assert argv[:4] == ["/usr/bin/setpriv", "--pdeathsig=TERM", "--", "/bin/sh"]
    assert argv[5].split("; ") == [
        '[ "$PPID" = 42 ] || exit 1',
        "read -r gate <&5",
        "exec 5<&-",
        'cd -P -- "$1" || exit 127',
        "shift",
        'exec /usr/bin/env -i -- LISTEN_PID=$$ "$@"',
    ]
    assert argv[6:] == ["sdactivate", "/srv", "A=1", "/bin/app", "x"]


@pytest.mark.parametrize(
    ("kw", "why"),
    [
        ({"program": "/opt/a=b/app"}, "env(1) would take the program for an assignment"),
        ({"pdeathsig": signal.SIGRTMIN + 2}, "setpriv(1) has no name for the signal"),
        ({"tools": Tools("/bin/sh", "/usr/bin/env", None, "/py")}, "no setpriv(1)"),
        ({"tools": Tools(None, "/usr/bin/env", None, "/py"), "pdeathsig": None}, "no sh"),
        ({"gate": 10}, "dash reads no fd above 9"),
    ],
    ids=["equals-in-program", "unnamed-signal", "no-setpriv", "no-sh", "gate-fd-10"],
)
def test_shim_falls_back_to_python(kw: dict[str, Any], why: str) -> None:
    """Where the shell chain cannot do it, the Python shim does (one interpreter start)."""
    kw = {"pdeathsig": signal.SIGTERM} | kw
    path, argv = _chain(**kw)
    python = kw.get("tools", SH).python
    assert path == python, why
    assert argv[:5] == [python, "-I", "-S", "-c", _shim.PY_SHIM]


def test_shim_without_any_tool_is_an_error() -> None:
    """No shell chain and no Python: SdActivateError saying what is missing."""
    with pytest.raises(SdActivateError, match="no /bin/sh and env"):
        _chain(tools=Tools(None, None, None, None))


@pytest.mark.parametrize(
    ("status", "filtered"),
    [
        (b"Name:\tx\nSeccomp:\t0\nSeccomp_filters:\t0\n", False),
        (b"Name:\tx\nSeccomp:\t2\nSeccomp_filters:\t3\n", True),
        (b"Name:\tx\nSeccomp:\t1", True),
        (b"Name:\tx\nNoNewPrivs:\t1\n", False),
    ],
    ids=["none", "filter", "strict-last-line", "no-seccomp-kernel"],
)
def test_seccomp_filter_is_read_from_proc_status(status: bytes, filtered: bool) -> None:
    """proc(5) Seccomp: 0 none, 2 filter (then setpriv is not used: it always calls
    capset(2), which systemd's SystemCallFilter=~@privileged refuses), 1 strict; no line
    on a kernel without seccomp."""
    assert _shim.seccomp_filtered(status) is filtered
