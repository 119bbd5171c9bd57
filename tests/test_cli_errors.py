"""The CLI never shows a traceback for environment problems: one line on stderr and the
documented exit status (1: the system refused, 2: usage or configuration).

In-process through ``main([...])`` where the condition can be built in a temporary
directory; in a subprocess (``python -m sdactivate``) where it needs another user, a
read-only mount, a missing module or a closed pipe.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from sdactivate.cli import main

PY = sys.executable
CHECKOUT = str(Path(__file__).resolve().parent.parent)
GEN = ("gen-units", "myapp", "--port", "8080", "--systemd-version", "252")
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def _one_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("sdactivate: error: "), stderr
    return lines[0]


def _cli(*args: str, prefix: tuple[str, ...] = (), **env: str) -> subprocess.CompletedProcess[str]:
    environ = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": CHECKOUT, **env}
    return subprocess.run(
        [*prefix, PY, "-m", "sdactivate", *args],
        capture_output=True, text=True, timeout=60, env=environ, cwd="/",
    )  # fmt: skip


def _main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    status = main(list(args))
    return status, capsys.readouterr().err


@pytest.fixture
def unprivileged() -> Iterator[tuple[str, ...]]:
    """argv prefix that runs a command as an unprivileged user (nobody, when root), who
    can still import this checkout. setpriv(1) keeps its capabilities until it execs the
    interpreter (so an interpreter under /root still starts); the command itself runs
    with none (CapEff 0), so every permission check it meets is a real one."""
    prefix = tuple(NOBODY) if os.geteuid() == 0 else ()
    if prefix and shutil.which("setpriv") is None:
        pytest.skip("needs setpriv (util-linux) to drop root")
    probe = _cli("--version", prefix=prefix)
    if probe.returncode != 0:
        pytest.skip(f"an unprivileged user cannot run this checkout: {probe.stderr.strip()}")
    yield prefix


# --- gen-units: where the files go ---------------------------------------------------------


@pytest.mark.parametrize(
    ("where", "status", "message"),
    [
        ("/proc/nonexistent", 1, "cannot create directory '/proc/nonexistent': No such file"),
        ("{tmp}/file", 2, "'{tmp}/file' is not a directory"),
        ("{tmp}/file/sub", 1, "cannot create directory '{tmp}/file/sub': Not a directory"),
    ],
    ids=["proc", "a-file", "under-a-file"],
)
def test_output_directory_problems_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str, status: int, message: str
) -> None:
    """--output into /proc, onto a file or under a file: one line naming the path."""
    (tmp_path / "file").write_text("x")
    output = where.format(tmp=tmp_path)
    code, err = _main(capsys, *GEN, "--output", output, "--", "/bin/true")
    assert code == status
    assert message.format(tmp=tmp_path) in _one_line(err)


def test_output_problem_in_a_subprocess_has_no_traceback() -> None:
    """`python -m sdactivate gen-units --output /proc/nonexistent`: exit 1, one line."""
    result = _cli(*GEN, "--output", "/proc/nonexistent", "--", "/bin/true")
    assert result.returncode == 1
    _one_line(result.stderr)


def test_install_as_non_root_says_it_needs_root(unprivileged: tuple[str, ...]) -> None:
    """--install by a user who may not write /etc/systemd/system: exit 1, one line that
    says root (sudo), --user or --output."""
    if os.access("/etc/systemd/system", os.W_OK) and not unprivileged:
        pytest.skip("this user may write /etc/systemd/system")
    result = _cli(*GEN, "--install", "--", "/bin/true", prefix=unprivileged)
    assert result.returncode == 1, result.stderr
    line = _one_line(result.stderr)
    assert "/etc/systemd/system" in line and "sudo" in line and "--output DIR" in line, line


def test_output_without_permission(unprivileged: tuple[str, ...], tmp_path: Path) -> None:
    """--output into a directory the user may not write: exit 1, one line."""
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    tmp_path.chmod(0o755)
    result = _cli(*GEN, "--output", str(locked), "--", "/bin/true", prefix=unprivileged)
    assert result.returncode == 1, result.stderr
    assert "Permission denied" in _one_line(result.stderr)


@pytest.mark.parametrize("home", [None, "missing"], ids=["unset", "missing"])
def test_install_user_without_a_home(tmp_path: Path, home: str | None) -> None:
    """--install --user for a user with no home (HOME unset, or a directory that does not
    exist): exit 1, one line naming HOME, nothing created."""
    missing = tmp_path / "no-home"
    env = {"XDG_RUNTIME_DIR": str(tmp_path)} | ({} if home is None else {"HOME": str(missing)})
    result = _cli(*GEN, "--user", "--install", "--", "/bin/true", **env)
    assert result.returncode == 1, result.stderr
    line = _one_line(result.stderr)
    if home is None:
        assert "HOME is not set" in line
    else:
        assert f"HOME={str(missing)!r} is not an existing directory" in line
    assert not missing.exists()


def test_read_only_file_system(tmp_path: Path) -> None:
    """--output on a read-only mount: exit 1, one line naming the file system."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare(1) for a private read-only mount")
    target = tmp_path / "ro"
    target.mkdir()
    script = 'mount -t tmpfs -o ro sdactivate-test "$0" && shift && exec "$@"'
    argv = [PY, "-m", "sdactivate", *GEN, "--output", str(target), "--", "/bin/true"]
    unshare = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script]
    result = subprocess.run(
        [*unshare, str(target), "-", *argv],
        capture_output=True, text=True, timeout=60,
        env={"PYTHONPATH": CHECKOUT, "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    if "mount" in result.stderr and "sdactivate" not in result.stderr:
        pytest.skip(f"cannot make a read-only mount here: {result.stderr.strip()}")
    assert result.returncode == 1, result.stderr
    assert "Read-only file system" in _one_line(result.stderr)


def test_closed_stdout_is_not_a_traceback() -> None:
    """`gen-units --stdout` into a pipe nobody reads (`| head` that has exited): no
    BrokenPipeError traceback, exit 1."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # closed before the child writes: EPIPE on its first write
    try:
        result = subprocess.run(
            [PY, "-m", "sdactivate", *GEN, "--stdout", "--", "/bin/true"],
            stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=60,
            env={"PYTHONPATH": CHECKOUT, "PATH": "/usr/bin:/bin"},
        )  # fmt: skip
    finally:
        os.close(write_end)
    assert result.returncode == 1
    assert result.stderr == "", result.stderr


# --- D-Bus commands --------------------------------------------------------------------------


def test_no_jeepney_is_one_line() -> None:
    """Without jeepney on sys.path (python -S: no site-packages, only the checkout), every
    D-Bus command says what to install; `reload --pid` does not need it."""
    probe = subprocess.run(
        [PY, "-S", "-c", "import jeepney"], capture_output=True, text=True, timeout=60,
        env={"PYTHONPATH": CHECKOUT},
    )  # fmt: skip
    assert "No module named 'jeepney'" in probe.stderr, "the premise: jeepney not importable"
    for verb in ("status", "start", "stop", "restart", "reload"):
        result = subprocess.run(
            [PY, "-S", "-m", "sdactivate", verb, "myapp"],
            capture_output=True, text=True, timeout=60, env={"PYTHONPATH": CHECKOUT},
        )  # fmt: skip
        assert result.returncode == 1, (verb, result.stderr)
        assert result.stderr == (
            "sdactivate: error: D-Bus commands need jeepney: pip install jeepney\n"
        ), (verb, result.stderr)
    result = subprocess.run(
        [PY, "-S", "-m", "sdactivate", "reload", "--pid", str(os.getpid())],
        capture_output=True, text=True, timeout=60, env={"PYTHONPATH": CHECKOUT},
    )  # fmt: skip
    assert result.returncode == 1 and "no sdactivate supervisor" in _one_line(result.stderr)


@pytest.fixture
def hangup_bus(tmp_path: Path) -> Iterator[str]:
    """A unix socket that accepts nothing: its listen queue takes the connection, and the
    socket closes it (the server end) before a reply."""
    path = tmp_path / "bus"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)
    server.close()  # the path stays, the listener is gone: connect() is refused
    yield f"unix:path={path}"


@pytest.mark.parametrize(
    ("address", "message"),
    [
        ("unix:path=/nonexistent/bus", "no D-Bus system bus at 'unix:path=/nonexistent/bus'"),
        ("garbage", "cannot use the system bus at 'garbage'"),
        ("tcp:host=127.0.0.1,port=1", "cannot use the system bus"),
    ],
    ids=["no-socket", "garbage", "tcp"],
)
def test_no_bus_is_one_line(address: str, message: str) -> None:
    """No bus at the address, or an address jeepney cannot use: exit 1, one line."""
    for verb in ("status", "restart"):
        result = _cli(verb, "myapp", DBUS_SYSTEM_BUS_ADDRESS=address)
        assert result.returncode == 1, result.stderr
        assert message in _one_line(result.stderr)


def test_dead_bus_socket_is_one_line(hangup_bus: str) -> None:
    """A bus socket file with no listener behind it: exit 1, one line."""
    result = _cli("status", "myapp", DBUS_SYSTEM_BUS_ADDRESS=hangup_bus)
    assert result.returncode == 1
    assert "Connection refused" in _one_line(result.stderr)


def test_bus_permission_denied_is_one_line(unprivileged: tuple[str, ...], tmp_path: Path) -> None:
    """A bus socket the user may not reach: exit 1, one line suggesting root or --user."""
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    tmp_path.chmod(0o755)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(str(private / "bus"))
        server.listen(1)
        result = _cli(
            "status", "myapp", prefix=unprivileged,
            DBUS_SYSTEM_BUS_ADDRESS=f"unix:path={private}/bus",
        )  # fmt: skip
    if not unprivileged and os.access(private, os.X_OK):
        pytest.skip("this user can reach the socket")
    assert result.returncode == 1, result.stderr
    line = _one_line(result.stderr)
    assert "Permission denied" in line and "--user" in line, line


def test_user_bus_without_a_session_is_one_line() -> None:
    """--user with neither XDG_RUNTIME_DIR nor DBUS_SESSION_BUS_ADDRESS: exit 1, one line."""
    result = _cli("status", "--user", "myapp")
    assert result.returncode == 1
    assert "no user bus" in _one_line(result.stderr)


# --- run -------------------------------------------------------------------------------------


def test_run_with_a_missing_program_is_one_line() -> None:
    """`run -- /nonexistent`: exit 1, the reason on one line, no traceback."""
    result = _cli("run", "--listen", "127.0.0.1:0", "--", "/nonexistent/program")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "cannot start '/nonexistent/program': No such file or directory" in result.stderr


def test_run_cannot_bind_is_one_line(tmp_path: Path) -> None:
    """`run --listen` on a path in a missing directory: exit 1, one line."""
    result = _cli("run", "--listen", f"{tmp_path}/missing/x.sock=a", "--", "/bin/true")
    assert result.returncode == 1
    assert "cannot bind" in _one_line(result.stderr)
