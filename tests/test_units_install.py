"""Installing units: atomic writes, refusal to clobber, systemctl calls; version detection."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest

from sdactivate.errors import ControlError, InstallError, UnitConfigError
from sdactivate.units import install, version

FILES = {"myapp.socket": "[Socket]\nListenStream=80\n", "myapp.service": "[Service]\n"}


def test_install_writes_reloads_and_enables_sockets(tmp_path: Path) -> None:
    """--install: files in the unit dir, then daemon-reload, then enable --now the sockets."""
    calls: list[list[str]] = []
    actions = install.install(
        FILES, user=False, force=False, now=True, directory=tmp_path, run=calls.append
    )
    assert actions == {"myapp.socket": "create", "myapp.service": "create"}
    assert (tmp_path / "myapp.socket").read_text() == FILES["myapp.socket"]
    assert oct((tmp_path / "myapp.service").stat().st_mode & 0o777) == "0o644"
    assert calls == [
        ["systemctl", "daemon-reload"],
        ["systemctl", "enable", "--now", "myapp.socket"],
    ]


def test_install_without_sockets_enables_the_service(tmp_path: Path) -> None:
    """An fd-store-only service has no socket to enable: the service itself is enabled;
    an Accept=yes template never is (its socket is)."""
    calls: list[list[str]] = []
    alone = {"myapp.service": "[Service]\n"}
    install.install(alone, user=False, force=False, now=True, directory=tmp_path, run=calls.append)
    assert calls[-1] == ["systemctl", "enable", "--now", "myapp.service"]
    accept = {"echo.socket": "[Socket]\n", "echo@.service": "[Service]\n"}
    install.install(
        accept, user=False, force=False, now=False, directory=tmp_path, run=calls.append
    )
    assert calls[-1] == ["systemctl", "enable", "echo.socket"]


def test_user_install_uses_systemctl_user(tmp_path: Path) -> None:
    """--user talks to the user manager and installs into ~/.config/systemd/user."""
    calls: list[list[str]] = []
    install.install(
        FILES, user=True, force=False, now=False, directory=tmp_path, run=calls.append,
        environ={"XDG_RUNTIME_DIR": "/run/user/1000"},
    )  # fmt: skip
    assert calls == [
        ["systemctl", "--user", "daemon-reload"],
        ["systemctl", "--user", "enable", "myapp.socket"],
    ]
    home = {"HOME": "/home/u"}
    assert install.unit_directory(user=True, environ=home, is_dir=lambda _: True) == Path(
        "/home/u/.config/systemd/user"
    )
    assert install.unit_directory(user=True, environ={"XDG_CONFIG_HOME": "/c"}) == Path(
        "/c/systemd/user"
    )
    assert install.unit_directory(user=False) == Path("/etc/systemd/system")


@pytest.mark.parametrize(
    ("environ", "why"),
    [
        ({}, "HOME is not set"),
        ({"HOME": ""}, "HOME is not set"),
        ({"HOME": "/nonexistent"}, "HOME='/nonexistent' is not an existing directory"),
        ({"HOME": "relative"}, "HOME='relative' is not an existing directory"),
        ({"HOME": "/nonexistent", "XDG_CONFIG_HOME": "rel"}, "HOME='/nonexistent' is not"),
    ],
    ids=["unset", "empty", "missing", "relative", "relative-xdg"],
)
def test_user_without_a_home_is_refused(environ: dict[str, str], why: str) -> None:
    """A user with no home (unset, relative, missing; a relative XDG_CONFIG_HOME is
    ignored) gets one InstallError naming HOME and the fix, and nothing is created."""
    with pytest.raises(InstallError, match=re.escape(why)) as info:
        install.unit_directory(user=True, environ=environ, is_dir=lambda p: p == "/home/u")
    assert "--output DIR" in str(info.value)


def test_user_install_without_a_user_manager_writes_nothing(tmp_path: Path) -> None:
    """--install --user with no XDG_RUNTIME_DIR (nor session bus) is refused before any
    file is written: systemctl --user would fail after the write."""
    calls: list[Sequence[str]] = []
    with pytest.raises(InstallError, match="XDG_RUNTIME_DIR is not set"):
        install.install(
            FILES, user=True, force=False, now=False, directory=tmp_path, run=calls.append,
            environ={"HOME": str(tmp_path)},
        )  # fmt: skip
    assert calls == [] and list(tmp_path.iterdir()) == []


def test_os_errors_become_one_install_error(tmp_path: Path) -> None:
    """A missing parent that cannot be created, a file in the way of a parent, a read-only
    or forbidden directory: InstallError with the path and the reason, not an OSError."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(InstallError, match=r"cannot create directory .*Not a directory"):
        install.write_files(FILES, blocker / "sub", force=False)
    with pytest.raises(UnitConfigError, match="is not a directory"):
        install.write_files(FILES, blocker, force=False)
    with pytest.raises(InstallError, match="No such file or directory"):
        install.write_files(FILES, Path("/proc/nonexistent"), force=False)


def test_changed_file_blocks_everything_until_force(tmp_path: Path) -> None:
    """A differing file refuses the whole install (no write, no systemctl) without force."""
    (tmp_path / "myapp.service").write_text("[Service]\n# mine\n")
    calls: list[Sequence[str]] = []
    with pytest.raises(UnitConfigError, match="--force"):
        install.install(
            FILES, user=False, force=False, now=False, directory=tmp_path, run=calls.append
        )
    assert calls == [] and not (tmp_path / "myapp.socket").exists()
    actions = install.write_files(FILES, tmp_path, force=True)
    assert actions == {"myapp.socket": "create", "myapp.service": "update"}
    assert install.write_files(FILES, tmp_path, force=False) == {
        "myapp.socket": "unchanged",
        "myapp.service": "unchanged",
    }
    assert sorted(os.listdir(tmp_path)) == ["myapp.service", "myapp.socket"]  # no temp files


def test_refuses_odd_file_names(tmp_path: Path) -> None:
    """Only plain file names are written."""
    with pytest.raises(UnitConfigError):
        install.write_files({"../x.service": ""}, tmp_path, force=False)


def test_systemctl_failure_is_a_control_error() -> None:
    """A failing systemctl surfaces as ControlError (exit 1 from the CLI)."""
    with pytest.raises(ControlError, match="false"):
        install._systemctl(["false"])


@pytest.mark.parametrize(
    ("text", "expected"),
    [("252", 252), ("v253", 253), ("systemd 252 (252.39-1~deb12u2)", 252), (" 257 ", 257)],
)
def test_parse_version(text: str, expected: int) -> None:
    """Versions parse from plain numbers and from `systemctl --version` lines."""
    assert version.parse_version(text) == expected


@pytest.mark.parametrize("text", ["", "abc", "two", "244", "systemd"])
def test_parse_version_refuses(text: str) -> None:
    """Garbage and versions older than MIN_VERSION are refused."""
    with pytest.raises(UnitConfigError):
        version.parse_version(text)


def test_detect_version_reads_systemctl() -> None:
    """detect_version() runs `systemctl --version` and reads its first line."""
    seen: list[Sequence[str]] = []

    def fake(argv: Sequence[str]) -> str:
        seen.append(argv)
        return "systemd 252 (252.39-1~deb12u2)\n+PAM +AUDIT\n"

    assert version.detect_version(run=fake) == 252
    assert seen == [["systemctl", "--version"]]


def test_detect_version_failure_says_what_to_do() -> None:
    """Without systemctl the error suggests --systemd-version."""

    def missing(argv: Sequence[str]) -> str:
        raise FileNotFoundError(2, "No such file", "systemctl")

    with pytest.raises(UnitConfigError, match="--systemd-version"):
        version.detect_version(run=missing)


def test_detect_version_of_this_machine() -> None:
    """On Debian 12 the local systemd is 252 (whatever it is, it parses)."""
    try:
        subprocess.run(["systemctl", "--version"], capture_output=True, check=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        pytest.skip("no systemctl")
    assert version.detect_version() >= version.MIN_VERSION


def test_supported_table() -> None:
    """252 lacks notify-reload, FileDescriptorStorePreserve= and PollLimit*."""
    assert not version.supported("Type", "notify-reload", 252)
    assert version.supported("Type", "notify", 252)
    assert not version.supported("FileDescriptorStorePreserve", "yes", 252)
    assert not version.supported("PollLimitBurst", "10", 254)
    assert version.supported("PollLimitBurst", "10", 255)
    assert version.default_backlog(252) == 128 and version.default_backlog(254) is None
