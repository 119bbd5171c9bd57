"""gen-units' checks against the machine, in a real systemd 252: each unit it now refuses
really fails there (forced with --no-preflight, or by hand where no flag allows it), and
the layout it accepts (app under /srv, venv under /opt) really serves.

gen-units runs inside the sandbox (Debian's /usr/bin/python3, the checkout at CODE_DIR), so
its checks read the file system the units run on. Scratch files live in the sandbox's
overlay (/srv, /opt, /root, /home) and its private /tmp, never on the host.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Sequence
from pathlib import Path

import pytest

from integration.helpers import APP, PYTHON, http_get, split_stdout, wait_state
from integration.sandbox import CODE_DIR, Sandbox, Units, free_port, wait_until
from tests.support import CHILD_APP

# The tests' HTTP service with NO_READY: it never sends READY=1 and serves "ok" anyway.
NO_READY_APP = Path(CHILD_APP).read_text()
NO_READY = ("--no-ready", "--body", "ok")


def gen(
    sandbox: Sandbox, name: str, port: int, command: Sequence[str], *options: str
) -> subprocess.CompletedProcess[str]:
    """`sdactivate gen-units NAME --listen 127.0.0.1:PORT=http ... --stdout -- COMMAND`
    inside the sandbox (not checked)."""
    argv = [
        PYTHON, "-m", "sdactivate", "gen-units", name, "--listen", f"127.0.0.1:{port}=http",
        "--environment", f"PYTHONPATH={CODE_DIR}", "--systemd-version", "252", "--stdout",
        *options, "--", *command,
    ]  # fmt: skip
    return sandbox.run(argv, env={"PYTHONPATH": CODE_DIR}, check=False)


def refused(proc: subprocess.CompletedProcess[str], message: str) -> None:
    assert proc.returncode == 2, proc
    assert proc.stdout == "" and "Traceback" not in proc.stderr, proc
    assert proc.stderr.startswith("sdactivate: error: ") and proc.stderr.count("\n") == 1, proc
    assert message in proc.stderr, proc.stderr


def start_fails(sandbox: Sandbox, units: Units, files: dict[str, str], name: str) -> str:
    """Install ``files``, start NAME.service: it must fail; returns its journal."""
    units.install(files)
    service = f"{name}.service"
    assert sandbox.systemctl("start", service, check=False).returncode != 0
    return sandbox.journal(service)


def setup(sandbox: Sandbox, script: str) -> None:
    sandbox.run(["/bin/sh", "-c", script])


@pytest.fixture
def tag() -> str:
    return uuid.uuid4().hex[:8]


def test_relative_script_refused_and_really_fails(sandbox: Sandbox, units: Units, tag: str) -> None:
    """`-- python3 app.py` with no --working-dir: refused (with or without --no-preflight);
    the unit as gen-units used to write it fails with "can't open file '//app.py'"."""
    name, port, workdir = units.name(f"sdpf-rel-{tag}"), free_port(), f"/srv/sdpf-{tag}"
    setup(sandbox, f"mkdir -p {workdir} && cp {APP} {workdir}/app.py")
    for extra in ((), ("--no-preflight",)):
        proc = gen(sandbox, name, port, [PYTHON, "app.py"], *extra)
        refused(proc, "script 'app.py' is relative and the unit has no WorkingDirectory=")
    proc = gen(sandbox, name, port, [PYTHON, "app.py"], "--working-dir", workdir)
    assert proc.returncode == 0, proc.stderr
    files = split_stdout(proc.stdout)
    old = {
        n: text.replace(f"WorkingDirectory={workdir}\n", "") for n, text in files.items()
    }  # what the generator wrote before: no WorkingDirectory=
    assert old != files
    journal = start_fails(sandbox, units, old, name)
    assert "can't open file '//app.py'" in journal, journal


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ("/root", "is under /root, which ProtectHome=yes hides from the service"),
        ("/home", "is under /home, which ProtectHome=yes hides from the service"),
    ],
    ids=["root", "home"],
)
def test_home_directories_refused_and_really_hidden(
    sandbox: Sandbox, units: Units, tag: str, where: str, message: str
) -> None:
    """A script under /root or /home: refused under strict (ProtectHome=yes); forced, the
    service cannot open it. Under /home (0755) the suggested --hardening standard serves."""
    name, port, home = units.name(f"sdpf-home-{tag}"), free_port(), f"{where}/sdpf-{tag}"
    setup(sandbox, f"mkdir -p -m 0755 {home} && cp {APP} {home}/app.py")
    command = [PYTHON, f"{home}/app.py"]
    proc = gen(sandbox, name, port, command)
    refused(proc, f"script '{home}/app.py' {message}")
    if where == "/home":
        assert proc.stderr.endswith("or use --hardening standard\n"), proc.stderr
    forced = gen(sandbox, name, port, command, "--no-preflight")
    journal = start_fails(sandbox, units, split_stdout(forced.stdout), name)
    assert f"can't open file '{home}/app.py': [Errno 13] Permission denied" in journal, journal
    if where == "/home":
        units.install(
            split_stdout(gen(sandbox, name, port, command, "--hardening", "standard").stdout)
        )
        sandbox.systemctl("reset-failed", f"{name}.service", check=False)
        sandbox.systemctl("restart", f"{name}.socket")
        assert http_get("127.0.0.1", port)[0] == 200


def test_supervise_venv_in_tmp_refused_and_really_203(
    sandbox: Sandbox, units: Units, tag: str
) -> None:
    """--supervise --python in a venv under /tmp: refused (PrivateTmp=yes); forced, the
    service fails with 203/EXEC."""
    name, port, venv = units.name(f"sdpf-tmp-{tag}"), free_port(), f"/tmp/sdpf-venv-{tag}"
    setup(sandbox, f"{PYTHON} -m venv --without-pip {venv}")
    command = [PYTHON, APP]
    options = ("--supervise", "--python", f"{venv}/bin/python")
    refused(
        gen(sandbox, name, port, command, *options),
        f"interpreter for `sdactivate run` (--python) '{venv}/bin/python' is under /tmp, which"
        " PrivateTmp=yes replaces with an empty directory for the service",
    )
    forced = gen(sandbox, name, port, command, *options, "--no-preflight")
    journal = start_fails(sandbox, units, split_stdout(forced.stdout), name)
    assert "status=203/EXEC" in journal, journal


@pytest.mark.parametrize("case", ["missing", "not-executable"])
def test_bad_absolute_program_refused_and_really_203(
    sandbox: Sandbox, units: Units, tag: str, case: str
) -> None:
    """An absolute program that does not exist, or is not executable: refused; forced, the
    service fails with 203/EXEC."""
    name, port = units.name(f"sdpf-prog-{tag}"), free_port()
    if case == "missing":
        program, message = f"/opt/sdpf-{tag}/bin/app", "does not exist on this machine"
    else:
        program, message = f"/srv/sdpf-{tag}/run.sh", "is not executable (mode 0644)"
        sandbox.write_file(program, "#!/bin/sh\nexit 0\n", mode=0o644)
    refused(gen(sandbox, name, port, [program]), f"program '{program}' {message}")
    forced = gen(sandbox, name, port, [program], "--no-preflight")
    journal = start_fails(sandbox, units, split_stdout(forced.stdout), name)
    assert "status=203/EXEC" in journal, journal


def test_dynamic_user_cannot_enter_refused_and_really_denied(
    sandbox: Sandbox, units: Units, tag: str
) -> None:
    """A script in a 0750 directory: the dynamic user (no supplementary groups) cannot
    enter it: refused naming the directory and `chmod o+x`; forced, Permission denied."""
    name, port, private = units.name(f"sdpf-perm-{tag}"), free_port(), f"/srv/sdpf-private-{tag}"
    setup(sandbox, f"mkdir -p -m 0750 {private} && cp {APP} {private}/app.py")
    command = [PYTHON, f"{private}/app.py"]
    refused(
        gen(sandbox, name, port, command),
        f"script '{private}/app.py': the service's dynamic user (DynamicUser=yes) cannot enter"
        f" '{private}' (mode 0750); chmod o+x '{private}'",
    )
    forced = gen(sandbox, name, port, command, "--no-preflight")
    journal = start_fails(sandbox, units, split_stdout(forced.stdout), name)
    assert "Permission denied" in journal, journal


@pytest.mark.parametrize("supervise", [False, True], ids=["plain", "supervise"])
def test_typical_layout_is_accepted_and_serves(
    sandbox: Sandbox, units: Units, tag: str, supervise: bool
) -> None:
    """The app under /srv, a venv under /opt (made from Debian's python3): gen-units
    accepts it with every check on, and the units serve (with --supervise too)."""
    name, port = units.name(f"sdpf-ok-{tag}"), free_port()
    app, venv = f"/srv/sdpf-{tag}/app.py", f"/opt/sdpf-venv-{tag}"
    setup(
        sandbox,
        f"mkdir -p /srv/sdpf-{tag} && cp {APP} {app} && {PYTHON} -m venv --without-pip {venv}",
    )
    options = ("--supervise", "--python", f"{venv}/bin/python") if supervise else ()
    proc = gen(sandbox, name, port, [f"{venv}/bin/python", app], *options)
    assert proc.returncode == 0, proc.stderr
    units.install(split_stdout(proc.stdout))
    sandbox.systemctl("start", f"{name}.socket")
    assert http_get("127.0.0.1", port)[0] == 200
    wait_state(sandbox, f"{name}.service", "active")


def test_type_exec_serves_an_app_that_never_sends_ready(
    sandbox: Sandbox, units: Units, tag: str
) -> None:
    """--type exec: an app that never sends READY=1 is active as soon as it runs, serves,
    and restarts; under the default Type=notify the same app stays "activating"."""
    name, port, app = units.name(f"sdpf-exec-{tag}"), free_port(), f"/srv/sdpf-{tag}/noready.py"
    sandbox.write_file(app, NO_READY_APP)
    proc = gen(sandbox, name, port, [PYTHON, app, *NO_READY], "--type", "exec")
    assert proc.returncode == 0, proc.stderr
    files = split_stdout(proc.stdout)
    assert "Type=exec\n" in files[f"{name}.service"]
    units.install(files)
    service = f"{name}.service"
    sandbox.systemctl("start", service)  # returns once the program runs
    assert sandbox.show(service, "ActiveState")["ActiveState"] == "active"
    assert http_get("127.0.0.1", port)[0] == 200
    sandbox.systemctl("restart", service)
    assert http_get("127.0.0.1", port)[2] == "ok"
    sandbox.systemctl("stop", service, f"{name}.socket")

    notify = split_stdout(gen(sandbox, name, port, [PYTHON, app, *NO_READY]).stdout)
    units.install(notify)
    sandbox.systemctl("start", f"{name}.socket")  # listening before the --no-block start
    sandbox.systemctl("start", "--no-block", service)
    assert http_get("127.0.0.1", port)[0] == 200  # it serves...
    # ...but without READY=1 the start job waits (TimeoutStartSec=, 90 s by default)
    assert wait_until(
        lambda: sandbox.show(service, "ActiveState")["ActiveState"] == "activating",
        timeout=10,
        what=f"{service} activating",
    )
