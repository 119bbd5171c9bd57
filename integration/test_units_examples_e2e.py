"""The checked-in units/ run under real systemd exactly as written (only the port moves
to a free loopback address: tests never bind every address of the host)."""

from __future__ import annotations

from pathlib import Path

from integration.helpers import (
    SYSTEMD_VERSION,
    gen_units,
    http_get,
    listen_inodes,
    main_pid,
    wait_state,
)
from integration.sandbox import CHECKOUT, CODE_DIR, Sandbox, Units, free_port, wait_until

UNITS = Path(CHECKOUT) / "units"


def _install(units: Units, prefix: str, port: int, new_port: int) -> None:
    files = {p.name: p.read_text(encoding="utf-8") for p in UNITS.glob(f"{prefix}.*")}
    socket_unit = files[f"{prefix}.socket"]
    assert f"\nListenStream={port}\n" in socket_unit
    files[f"{prefix}.socket"] = socket_unit.replace(
        f"\nListenStream={port}\n", f"\nListenStream=127.0.0.1:{new_port}\n"
    )
    units.install(files)


def _pid_of_response(port: int) -> int:
    status, headers, _ = http_get("127.0.0.1", port)
    assert status == 200
    return int(headers["x-pid"])


def test_example_units_serve_hardened_and_watched(sandbox: Sandbox, units: Units) -> None:
    """units/myapp.*: the first request starts the service, which is active (READY=1) as a
    dynamic user with the watchdog armed and the fd named http."""
    port = free_port()
    _install(units, "myapp", 8080, port)
    sandbox.systemctl("start", "myapp.socket")
    assert _pid_of_response(port) == main_pid(sandbox, "myapp.service")
    props = wait_state(sandbox, "myapp.service", "active", sub="running")
    assert props["MainPID"] != "0"
    shown = sandbox.show("myapp.service", "WatchdogUSec", "DynamicUser", "NotifyAccess")
    assert shown == {"WatchdogUSec": "10s", "DynamicUser": "yes", "NotifyAccess": "main"}
    status = sandbox.read_file(f"/proc/{props['MainPID']}/status")
    uid = next(line.split()[1] for line in status.splitlines() if line.startswith("Uid:"))
    assert uid != "0"


def test_supervised_example_reloads_to_a_new_generation(sandbox: Sandbox, units: Units) -> None:
    """units/myapp-supervised.*: `systemctl reload` runs ExecReload (sdactivate reload --pid
    $MAINPID) inside the sandboxing; a new app process answers, the supervisor stays."""
    port = free_port()
    _install(units, "myapp-supervised", 8081, port)
    sandbox.systemctl("start", "myapp-supervised.socket")
    first = _pid_of_response(port)
    wait_state(sandbox, "myapp-supervised.service", "active", sub="running")
    supervisor = main_pid(sandbox, "myapp-supervised.service")
    assert first != supervisor  # the app is the supervisor's child
    sandbox.systemctl("reload", "myapp-supervised.service")
    second = wait_until(
        lambda: (pid := _pid_of_response(port)) != first and pid,
        timeout=15,
        what="a response from the new generation",
    )
    assert second != first
    assert main_pid(sandbox, "myapp-supervised.service") == supervisor


def test_install_now_enables_and_starts_the_socket(sandbox: Sandbox, units: Units) -> None:
    """`gen-units --install --now` inside the sandbox writes /etc/systemd/system, reloads,
    enables and starts the socket; a second identical run changes nothing; a hand edit
    blocks a third run (exit 2) until --force."""
    port = free_port()
    units.track(["sdinstall.socket", "sdinstall.service"])
    argv = [
        "/usr/bin/python3", "-m", "sdactivate", "gen-units", "sdinstall",
        "--listen", f"127.0.0.1:{port}=http", "--environment", f"PYTHONPATH={CODE_DIR}",
        "--systemd-version", str(SYSTEMD_VERSION), "--install", "--now",
        "--", "/usr/bin/python3", f"{CODE_DIR}/examples/app.py",
    ]  # fmt: skip
    env = {"PYTHONPATH": CODE_DIR}
    first = sandbox.run(argv, env=env)
    assert "create: sdinstall.socket" in first.stdout
    assert sandbox.show("sdinstall.socket", "ActiveState", "UnitFileState") == {
        "ActiveState": "active",
        "UnitFileState": "enabled",
    }
    assert _pid_of_response(port) == main_pid(sandbox, "sdinstall.service")
    assert "unchanged: sdinstall.service" in sandbox.run(argv, env=env).stdout
    path = "/etc/systemd/system/sdinstall.service"
    sandbox.write_file(path, sandbox.read_file(path) + "# local edit\n")
    refused = sandbox.run(argv, env=env, check=False)
    assert refused.returncode == 2 and "--force" in refused.stderr
    assert sandbox.read_file(path).endswith("# local edit\n")
    forced = sandbox.run([*argv[:5], "--force", *argv[5:]], env=env)
    assert "update: sdinstall.service" in forced.stdout


def test_upgrader_units_reload_in_place(sandbox: Sandbox, units: Units) -> None:
    """`gen-units --upgrader` for examples/upgrader_app.py: `systemctl reload` sends SIGHUP,
    the new process takes over as the unit's main pid, and the socket keeps serving."""
    port = free_port()
    files = gen_units(
        "sdupgrader",
        listens=[(f"127.0.0.1:{port}", "http")],
        script=f"{CODE_DIR}/examples/upgrader_app.py",
        options=["--upgrader"],
    )
    assert "ExecReload=/bin/kill -HUP $MAINPID\n" in files["sdupgrader.service"]
    units.install(files)
    sandbox.systemctl("start", "sdupgrader.socket")
    first = _pid_of_response(port)
    wait_state(sandbox, "sdupgrader.service", "active", sub="running")
    assert main_pid(sandbox, "sdupgrader.service") == first
    sandbox.systemctl("reload", "sdupgrader.service")
    second = wait_until(
        lambda: (pid := main_pid(sandbox, "sdupgrader.service")) != first and pid,
        timeout=20,
        what="MainPID to move to the new generation",
    )
    wait_until(lambda: _pid_of_response(port) == second, timeout=20, what="new pid answers")
    wait_state(sandbox, "sdupgrader.service", "active", sub="running")


def test_fdstore_only_example_keeps_its_socket_across_restart(
    sandbox: Sandbox, units: Units
) -> None:
    """units/myapp-fdstore.service (no socket unit): started by itself, the app binds and
    stores its socket; `systemctl restart` gives a new pid the very same socket."""
    port = free_port()
    text = (UNITS / "myapp-fdstore.service").read_text(encoding="utf-8")
    assert " --listen 8082 " in text
    units.install(
        {"myapp-fdstore.service": text.replace(" --listen 8082 ", f" --listen 127.0.0.1:{port} ")}
    )
    sandbox.systemctl("start", "myapp-fdstore.service")
    wait_state(sandbox, "myapp-fdstore.service", "active", sub="running")
    first = _pid_of_response(port)
    inodes = listen_inodes(port)
    sandbox.systemctl("restart", "myapp-fdstore.service")
    second = _pid_of_response(port)
    assert second != first and second == main_pid(sandbox, "myapp-fdstore.service")
    assert listen_inodes(port) == inodes and len(inodes) == 1
    assert sandbox.show("myapp-fdstore.service", "NFileDescriptorStore") == {
        "NFileDescriptorStore": "1"
    }


def test_accept_example_runs_one_instance_per_connection(sandbox: Sandbox, units: Units) -> None:
    """units/myapp-accept.*: each request is answered by a fresh myapp-accept@ instance."""
    port = free_port()
    files = {p.name: p.read_text(encoding="utf-8") for p in UNITS.glob("myapp-accept[.@]*")}
    assert sorted(files) == ["myapp-accept.socket", "myapp-accept@.service"]
    assert "\nListenStream=8083\n" in files["myapp-accept.socket"]
    files["myapp-accept.socket"] = files["myapp-accept.socket"].replace(
        "\nListenStream=8083\n", f"\nListenStream=127.0.0.1:{port}\n"
    )
    units.install(files)
    sandbox.systemctl("start", "myapp-accept.socket")
    pids = {_pid_of_response(port) for _ in range(2)}
    assert len(pids) == 2
