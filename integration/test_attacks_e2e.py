"""Attacks on a generated `--supervise` service by another local user (`nobody`, via
setpriv(1)) under real systemd (issue 16 items 3 and 5): a squatter holding the control
socket names of the next pids, and a connection flood on every control endpoint it can
name. The service still starts, `systemctl reload` and `sdactivate reload --pid` succeed
and `systemctl stop` completes, each within a deadline; `reload --pid` as `nobody` is one
line saying permission denied.

The notify-socket flood belongs to the supervisor's notify inbox and is tested with it.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

from integration.helpers import PYTHON, gen_units, http_get, main_pid, sandbox_version, wait_state
from integration.sandbox import CODE_DIR, Sandbox, Units, free_port
from tests.support import SQUAT

NOBODY = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
CLI_ENV = {"PYTHONPATH": CODE_DIR}


# Connects as fast as it can, until stdin closes, to every control endpoint of supervisor
# PID it can name: the old abstract name, and any sdactivate-control path in the
# world-readable /proc/net/unix. Prints how many endpoints it found, then (at the end) how
# many connects succeeded.
FLOOD = r"""
import os, select, socket, sys
pid = sys.argv[1]
targets = [b"\0sdactivate-run/%d/%s" % (os.stat("/proc/self/ns/pid").st_ino, pid.encode())]
for line in open("/proc/net/unix").read().splitlines()[1:]:
    fields = line.split()
    if len(fields) >= 8 and "sdactivate-control." in fields[7]:
        targets.append(fields[7])
print(len(targets), flush=True)
n = 0
while not select.select([sys.stdin], [], [], 0)[0]:
    for t in targets:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.setblocking(False)
        try:
            s.connect(t)
            n += 1
        except OSError:
            pass
        s.close()
print(n, flush=True)
"""


def _supervised(sandbox: Sandbox, name: str, port: int) -> dict[str, str]:
    return gen_units(
        name,
        listens=[(f"127.0.0.1:{port}", "http")],
        options=["--supervise", "--python", PYTHON],
        version=sandbox_version(sandbox),
    )


@contextmanager
def _as_nobody(sandbox: Sandbox, script: str, *args: str) -> Iterator[subprocess.Popen[str]]:
    proc = sandbox.popen(
        [*NOBODY, PYTHON, "-c", script, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait(10)
        for f in (proc.stdin, proc.stdout):
            if f is not None and not f.closed:
                f.close()


def _reload_pid(
    sandbox: Sandbox, pid: int, *, nobody: bool = False
) -> subprocess.CompletedProcess[str]:
    argv = [PYTHON, "-m", "sdactivate", "reload", "--pid", str(pid), "--timeout", "30"]
    return sandbox.run([*NOBODY, *argv] if nobody else argv, env=CLI_ENV, check=False, timeout=40)


def _reload_stop(sandbox: Sandbox, unit: str, port: int) -> None:
    """Two `systemctl reload`s and two `sdactivate reload --pid` as root, each answered
    (deadlines: the subprocess timeouts), serving throughout; then `systemctl stop`."""
    supervisor = main_pid(sandbox, unit)
    before = int(http_get("127.0.0.1", port)[1]["x-pid"])
    for _ in range(2):
        sandbox.run(["systemctl", "reload", unit], timeout=40)
        direct = _reload_pid(sandbox, supervisor)
        assert direct.returncode == 0 and "handover done" in direct.stdout, direct
    assert main_pid(sandbox, unit) == supervisor
    assert int(http_get("127.0.0.1", port)[1]["x-pid"]) != before
    sandbox.run(["systemctl", "stop", unit], timeout=40)
    wait_state(sandbox, unit, "inactive")


def test_a_squatter_cannot_stop_the_service_starting(sandbox: Sandbox, units: Units) -> None:
    """`nobody` holds the control names of the next 3000 pids: the service still starts at
    once (no restart), reloads and stops (it was an EADDRINUSE crash loop that took the
    socket unit down)."""
    port = free_port()
    name = "sdatk-squat"
    unit = f"{name}.service"
    units.install(_supervised(sandbox, name, port))
    with _as_nobody(sandbox, SQUAT, "3000") as squatter:
        assert squatter.stdout is not None
        first, held = map(int, squatter.stdout.readline().split())
        assert held > 2500, held
        sandbox.run(["systemctl", "start", f"{name}.socket", unit], timeout=40)
        state = wait_state(sandbox, unit, "active", sub="running")
        assert state["NRestarts"] == "0", state
        assert first < int(state["MainPID"]) <= first + 3000, (first, state)  # a squatted pid
        _reload_stop(sandbox, unit, port)


def test_a_connection_flood_fails_no_reload(sandbox: Sandbox, units: Units) -> None:
    """4 processes of `nobody` connect to every control endpoint they can name, while the
    service reloads (systemctl and `sdactivate reload --pid`) and stops: every reload is
    answered and succeeds (18 of 22 `reload --pid` failed with the abstract socket), and
    no connect of the flood got through."""
    port = free_port()
    name = "sdatk-flood"
    unit = f"{name}.service"
    units.install(_supervised(sandbox, name, port))
    sandbox.run(["systemctl", "start", f"{name}.socket", unit], timeout=40)
    wait_state(sandbox, unit, "active", sub="running")
    supervisor = str(main_pid(sandbox, unit))
    with ExitStack() as stack:
        flooders = [stack.enter_context(_as_nobody(sandbox, FLOOD, supervisor)) for _ in range(4)]
        for f in flooders:
            assert f.stdout is not None and int(f.stdout.readline()) >= 1
        _reload_stop(sandbox, unit, port)
        connected = []
        for f in flooders:
            assert f.stdin is not None and f.stdout is not None
            f.stdin.close()
            connected.append(int(f.stdout.readline()))
            f.wait(10)
    assert connected == [0, 0, 0, 0], connected


def test_reload_pid_as_another_user_is_one_line(sandbox: Sandbox, units: Units) -> None:
    """`sdactivate reload --pid` as `nobody`: exit 1 and one line saying permission denied
    (it was a ConnectionResetError traceback); the service did not reload."""
    port = free_port()
    name = "sdatk-perm"
    unit = f"{name}.service"
    units.install(_supervised(sandbox, name, port))
    sandbox.run(["systemctl", "start", f"{name}.socket", unit], timeout=40)
    wait_state(sandbox, unit, "active", sub="running")
    before = http_get("127.0.0.1", port)[1]["x-pid"]
    supervisor = main_pid(sandbox, unit)
    result = _reload_pid(sandbox, supervisor, nobody=True)
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        f"sdactivate: error: permission denied: the control socket of pid {supervisor} is only"
        " for root and the user it runs as"
    ), result.stderr
    assert http_get("127.0.0.1", port)[1]["x-pid"] == before
    sandbox.run(["systemctl", "stop", unit], timeout=40)
