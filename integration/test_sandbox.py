"""The sandbox itself: it boots a real systemd, isolates the host, and leaves nothing behind."""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path

from integration.conftest import require_sandbox_host
from integration.releases import Release, boot_release
from integration.sandbox import CHECKOUT, CODE_DIR, Sandbox, Units


def test_boots_to_running(sandbox: Sandbox, systemd_version: int) -> None:
    """The shared sandbox reports `running` and runs the release's systemd as its PID 1."""
    assert sandbox.systemctl("is-system-running").stdout.strip() == "running"
    assert sandbox.systemd_version == systemd_version
    comm = sandbox.run(["cat", "/proc/1/comm"]).stdout.strip()
    assert comm == "systemd"
    assert sandbox.run(["sh", "-c", "echo $container"]).stdout.strip() == ""  # clean env
    assert "container=sdactivate-sandbox" in sandbox.read_file("/proc/1/environ").replace(
        "\0", "\n"
    )


def test_dbus_answers(sandbox: Sandbox) -> None:
    """The system bus is up and systemd answers on it."""
    out = sandbox.run(
        [
            "busctl",
            "--system",
            "get-property",
            "org.freedesktop.systemd1",
            "/org/freedesktop/systemd1",
            "org.freedesktop.systemd1.Manager",
            "Version",
        ]
    ).stdout
    assert out.startswith('s "2'), out


def test_checkout_visible_read_only(sandbox: Sandbox) -> None:
    """The checkout is at its own path and at CODE_DIR, read-only."""
    for path in (CHECKOUT, CODE_DIR):
        assert "def boot" in sandbox.read_file(f"{path}/integration/sandbox.py")
        probe = sandbox.run(["touch", f"{path}/.sandbox-write-probe"], check=False)
        assert probe.returncode != 0
    assert not Path(CHECKOUT, ".sandbox-write-probe").exists()


def test_units_fixture_installs_and_starts(sandbox: Sandbox, units: Units) -> None:
    """A unit written through install_units can be started and shown."""
    units.install(
        {
            units.name("sdsandbox-probe.service"): "[Service]\nType=oneshot\nRemainAfterExit=yes\n"
            "ExecStart=/bin/true\n"
        }
    )
    sandbox.systemctl("start", units.name("sdsandbox-probe.service"))
    assert sandbox.show(units.name("sdsandbox-probe.service"), "ActiveState") == {
        "ActiveState": "active"
    }


def test_units_fixture_removes_whatever_carries_its_prefix(sandbox: Sandbox) -> None:
    """Units.name() gives one test's unit names a prefix no other test has; teardown stops
    and removes every unit with that prefix, also one that was not installed through it."""
    first = Units(sandbox)
    name = first.name("sdsandbox-stray.service")
    assert name == first.name(name) != Units(sandbox).name("sdsandbox-stray.service")
    sandbox.write_file(
        f"/etc/systemd/system/{name}",
        "[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/true\n",
    )
    sandbox.systemctl("daemon-reload")
    sandbox.systemctl("start", name)
    first.teardown(failed=False)
    assert sandbox.run(["test", "-e", f"/etc/systemd/system/{name}"], check=False).returncode
    shown = sandbox.show(name, "LoadState", "ActiveState")
    assert shown == {"LoadState": "not-found", "ActiveState": "inactive"}


def test_host_tmp_and_run_untouched(release: Release, measurements: Callable[[str], None]) -> None:
    """A marker in the host's /tmp survives a boot; files the sandbox writes to its /tmp,
    /var/tmp and /run never appear on the host; teardown leaves no process or cgroup."""
    require_sandbox_host()
    token = uuid.uuid4().hex
    fd, marker = tempfile.mkstemp(prefix="sdactivate-marker-", dir="/tmp")
    try:
        os.write(fd, token.encode())
        os.close(fd)
        inside = [f"/tmp/sdprobe-{token}", f"/var/tmp/sdprobe-{token}", f"/run/sdprobe-{token}"]
        with boot_release(release) as box:
            measurements(f"second sandbox booted in {box.boot_seconds * 1000:.0f} ms")
            ls = box.run(["ls", "-A", "/tmp"]).stdout.split()
            assert os.path.basename(marker) not in ls  # fresh /tmp inside
            for path in inside:
                box.write_file(path, "written inside\n")
            pid, pidns, cgroup, workdir = box.pid, box.pidns, box.cgroup, box.workdir
            assert cgroup.is_dir()
        assert Path(marker).read_text() == token
        for path in inside:
            assert not os.path.exists(path), path
        assert not os.path.exists(f"/proc/{pid}")
        assert not cgroup.exists()
        assert not workdir.exists()
        assert _pids_in_pidns(pidns) == []
    finally:
        os.unlink(marker)


def _pids_in_pidns(inode: int) -> list[int]:
    """Host pids whose pid namespace has this inode (the sandbox's, after it died: none)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.stat(f"/proc/{entry}/ns/pid").st_ino == inode:
                found.append(int(entry))
        except OSError:
            continue
    return found
