"""The README's quick start as written, under a real systemd 252.

The blocks come from README.md (examples/readme_blocks.py). What a test changes, it changes
with ``substitute()`` (which fails if the README no longer has the text), and only:

- ``myapp`` -> a name of its own (unit names, /opt/NAME/venv, /srv/NAME/app.py): tests share
  one sandbox;
- ``8080`` -> a free port: the sandbox shares the host's network. The socket still listens on
  every address, as the README's ``--port`` says (the load only uses 127.0.0.1);
- the "install" block (pip wheel + pip install) -> a venv whose site-packages points at the
  checkout, with the ``sdactivate`` script pip would write: no package index needed.
  test_walkthrough_script runs the real install (a wheel built from the checkout) through
  examples/newcomer-walkthrough.sh.

Everything else runs as written, inside the sandbox: the gen-units lines (with --install
--now), curl, systemctl.
"""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from bench import loadgen
from examples import readme_blocks
from integration.helpers import RestartRun, main_pid, restart_under_load, wait_state
from integration.sandbox import CHECKOUT, CODE_DIR, Sandbox, Units, wait_until
from tests.support import free_dual_stack_port

BLOCKS = readme_blocks.marked_blocks(readme_blocks.README.read_text(encoding="utf-8"))
ROUNDS = 10
RATE = 300

# What `pip install` writes as bin/sdactivate (the [project.scripts] entry point).
_SCRIPT = """#!{python}
import sys
from sdactivate.cli import main
sys.exit(main())
"""


def _subs(name: str, port: int) -> list[tuple[str, str]]:
    return [("myapp", name), ("8080", str(port))]


def _block(name: str, subs: list[tuple[str, str]]) -> str:
    return readme_blocks.substitute(BLOCKS[name].body, subs)


def _install_venv(sandbox: Sandbox, name: str) -> str:
    """Instead of the "install" block: /opt/NAME/venv seeing the checkout; its python."""
    venv = f"/opt/{name}/venv"
    sandbox.run(["/usr/bin/python3", "-m", "venv", "--without-pip", venv])
    code = "import sysconfig; print(sysconfig.get_path('purelib'))"
    site = sandbox.run([f"{venv}/bin/python", "-c", code]).stdout.strip()
    sandbox.write_file(f"{site}/sdactivate-checkout.pth", f"{CODE_DIR}\n")
    sandbox.write_file(f"{venv}/bin/sdactivate", _SCRIPT.format(python=f"{venv}/bin/python"), 0o755)
    return f"{venv}/bin/python"


def _run_block(sandbox: Sandbox, block: str) -> list[str]:
    """Run each command of a shell block inside the sandbox, in order; their outputs."""
    outputs = []
    for argv in readme_blocks.shell_lines(block):
        outputs.append(sandbox.run(argv, timeout=120).stdout)
    return outputs


def _setup(sandbox: Sandbox, units: Units, name: str, app: str) -> None:
    """The venv (for the "install" block) and the app at /srv/NAME/app.py."""
    units.track([f"{name}.socket", f"{name}.service"])
    _install_venv(sandbox, name)
    sandbox.write_file(f"/srv/{name}/app.py", app)


def _summary(label: str, run: RestartRun) -> str:
    res = run.result
    steady = loadgen.steady_stats(res, run.windows).latency
    inside = loadgen.window_stats(res, run.windows).latency

    def ms(stats: dict[str, float]) -> str:
        return "/".join(f"{stats[k] * 1e3:.1f}" for k in ("p50", "p99", "max"))

    took = sorted(run.restart_seconds)
    return (
        f"{label}: {res.total} requests at {RATE}/s, ok {res.ok}, failed {res.failed},"
        f" {len({p for p in res.pids() if p})} app pids; latency p50/p99/max ms:"
        f" steady {ms(steady)}, in the {len(took)} windows {ms(inside)};"
        f" systemctl took median {took[len(took) // 2] * 1e3:.0f} ms, max {took[-1] * 1e3:.0f} ms"
    )


def test_readme_quickstart_restarts_and_reloads_lose_nothing(
    sandbox: Sandbox, units: Units, measurements: Callable[[str], None]
) -> None:
    """The README's app and commands: gen-units --install --now, curl (socket activation),
    restart; 10 x `systemctl restart` at 300 new connections/s: 0 failed; then the
    --supervise block and 10 x `systemctl reload`: 0 failed, MainPID (the supervisor) kept,
    a new app pid each time; latency reported against the steady state of the same run."""
    name, port = units.name("rdme-qs"), free_dual_stack_port()
    subs = _subs(name, port)
    _setup(sandbox, units, name, _block("quickstart-app", subs))
    service = f"{name}.service"

    first, restarted_curl = (
        out for out in _run_block(sandbox, _block("quickstart", subs)) if out.startswith("hello")
    )
    assert first.startswith(f"hello from {name}, pid ")
    assert restarted_curl.startswith(f"hello from {name}, pid ") and restarted_curl != first
    assert sandbox.systemctl("is-enabled", f"{name}.socket").stdout.strip() == "enabled"
    wait_state(sandbox, service, "active", sub="running")
    assert sandbox.show(service, "DynamicUser", "Type") == {"DynamicUser": "yes", "Type": "notify"}

    restarts = restart_under_load(
        port,
        lambda: sandbox.systemctl("restart", service),
        restarts=ROUNDS,
        rate=RATE,
        spacing=0.5,
        timeout=15,
    )
    measurements(_summary("README quick start, systemctl restart", restarts))
    restarts.assert_no_failures()
    assert len({p for p in restarts.result.pids() if p}) >= ROUNDS + 1

    outs = _run_block(sandbox, _block("quickstart-supervise", subs))
    assert any("update:" in out or "create:" in out for out in outs), outs
    wait_state(sandbox, service, "active", sub="running")
    supervisor = main_pid(sandbox, service)
    reloads = restart_under_load(
        port,
        lambda: sandbox.systemctl("reload", service),
        restarts=ROUNDS,
        rate=RATE,
        spacing=0.5,
        timeout=15,
    )
    measurements(_summary("README --supervise, systemctl reload", reloads))
    reloads.assert_no_failures()
    assert main_pid(sandbox, service) == supervisor
    assert len({p for p in reloads.result.pids() if p}) >= ROUNDS + 1
    # Every app process drained and exited on its own: none was killed at a stop deadline
    # (systemd's "timed out. Killing", the supervisor's "sending SIGKILL").
    journal = sandbox.journal(service, lines=5000)
    for bad in ("Traceback", "timed out", "SIGKILL", "killed by"):
        assert bad not in journal, journal


def test_readme_app_in_a_unit_that_passes_another_socket_fails_at_once(
    sandbox: Sandbox, units: Units, measurements: Callable[[str], None]
) -> None:
    """The issue's case: the README's units (--port P: one socket named NAME.socket on
    [::]:P) with the old README app, which asks for 127.0.0.1:P by the name http. The service
    fails at its first start with the mismatch message in the journal (what it got, what it
    looked for, --fdname): no bind, no "Address already in use"."""
    name, port = units.name("rdme-mis"), free_dual_stack_port()
    subs = _subs(name, port)
    app = readme_blocks.substitute(
        _block("quickstart-app", subs),
        [(f'sdactivate.listen(":{port}")', f'sdactivate.listen("127.0.0.1:{port}", name="http")')],
    )
    _setup(sandbox, units, name, app)
    (install,) = readme_blocks.shell_lines(_block("quickstart", subs))[:1]
    sandbox.run(install)
    service = f"{name}.service"
    sandbox.systemctl("start", "--no-block", service)
    wanted = (
        f"listen('127.0.0.1:{port}', name='http'): sockets were passed (LISTEN_FDS) but none"
        f" is a socket named 'http' or bound to '127.0.0.1:{port}';"
        f" got fd 3 named '{name}.socket' on [::]:{port}."
    )

    def failed_with_message() -> bool:
        journal = sandbox.run(["journalctl", "-u", service, "-o", "cat", "--no-pager"]).stdout
        return wanted in journal and "--fdname http" in journal

    wait_until(failed_with_message, timeout=30, what="the mismatch error in the journal")

    # The unit's record of the last exit (the manager's "Main process exited ..." line is not
    # logged at info level on every version: 257 does not). Between a failed start and the
    # next (RestartSec=) it says exited, status 1; read it there, before stopping anything.
    def exited_1() -> bool:
        shown = sandbox.show(service, "ExecMainCode", "ExecMainStatus")
        return (shown["ExecMainCode"], shown["ExecMainStatus"]) == ("1", "1")

    wait_until(
        exited_1,
        timeout=30,
        interval=0.02,
        what="the last exit recorded as exited, status 1",
    )
    sandbox.systemctl("stop", f"{name}.socket", service)
    journal = sandbox.run(["journalctl", "-u", service, "-o", "cat", "--no-pager"]).stdout
    assert "Address already in use" not in journal, journal
    assert "Traceback" in journal and "ActivationError" in journal, journal
    measurements(f"mismatched unit and app: {next(x for x in journal.splitlines() if wanted in x)}")


def _offline_wheels() -> dict[str, str]:
    """pip settings that need no network inside the sandbox: $SDACTIVATE_TEST_PIP_INDEX (a
    file:// index) if set, else a wheelhouse under the checkout (seen at CODE_DIR inside)
    with the build backend and the one dependency, fetched here by the host's pip (from its
    cache, or the package registry, as `make setup` did), at the versions this venv has."""
    given = os.environ.get("SDACTIVATE_TEST_PIP_INDEX")
    if given:
        return {"PIP_INDEX_URL": given}
    house = Path(CHECKOUT) / ".cache" / "wheelhouse"
    wanted = [f"{dist}=={importlib.metadata.version(dist)}" for dist in ("setuptools", "jeepney")]
    pip = [sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check"]
    subprocess.run(
        [*pip, "--no-deps", "--only-binary=:all:", "-d", str(house), *wanted],
        check=True,
        timeout=300,
    )
    inside = f"{CODE_DIR}/{house.relative_to(CHECKOUT)}"
    return {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": inside}


def test_walkthrough_script(
    sandbox: Sandbox, units: Units, measurements: Callable[[str], None]
) -> None:
    """examples/newcomer-walkthrough.sh inside the sandbox: wheel built from the checkout,
    installed into a fresh venv, the README's quick start, 10 restarts and 10 reloads under
    a curl loop, 0 failed, everything removed afterwards. pip inside reads only local
    files (network traffic stays on loopback)."""
    pip_env = _offline_wheels()
    name, port = units.name("rdme-wt"), free_dual_stack_port()
    units.track([f"{name}.socket", f"{name}.service"])
    env = {
        "NAME": name,
        "PORT": str(port),
        "CHECKOUT": CODE_DIR,
        "PIP_CONFIG_FILE": "/dev/null",
        **pip_env,
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }
    proc = sandbox.run(
        ["bash", f"{CODE_DIR}/examples/newcomer-walkthrough.sh"], env=env, timeout=600, check=False
    )
    print(proc.stdout, proc.stderr)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for line in proc.stdout.splitlines():
        if line.startswith(("restarts:", "reloads:", "(")):
            measurements(f"walkthrough: {line}")
    assert "walkthrough: OK" in proc.stdout
    left = sandbox.run(["ls", "/opt", "/srv", "/etc/systemd/system"]).stdout
    assert name not in left
