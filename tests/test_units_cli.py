"""`sdactivate gen-units` end to end in a subprocess: files, --stdout, --force, bad input."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PY = sys.executable


def gen_units(*args: str, cwd: Path, path: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {"PATH": path if path is not None else os.environ.get("PATH", "/usr/bin:/bin")}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent)
    return subprocess.run(
        [PY, "-m", "sdactivate", "gen-units", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )


def test_writes_the_pair_into_the_output_dir(tmp_path: Path) -> None:
    """Default run writes NAME.socket and NAME.service and says so."""
    out = tmp_path / "out"
    result = gen_units(
        "myapp", "--port", "8080", "--systemd-version", "252", "--output", str(out),
        "--no-preflight",  # this venv's interpreter may live under /root (pyenv)
        "--", PY, "-m", "http.server", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["myapp.service", "myapp.socket"]
    assert f"ExecStart={PY} -m http.server\n" in (out / "myapp.service").read_text()
    assert "create:" in result.stdout


def test_default_program_is_name_on_path(tmp_path: Path) -> None:
    """Without a command, NAME is looked up on PATH and written as an absolute path."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    prog = bindir / "myapp"
    prog.write_text("#!/bin/sh\n")
    prog.chmod(0o755)
    result = gen_units(
        "myapp", "--port", "8080", "--systemd-version", "252", "--stdout",
        "--no-preflight",  # tmp_path is under /tmp, which PrivateTmp= hides
        cwd=tmp_path, path=str(bindir),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"ExecStart={prog}\n" in result.stdout


def test_exec_program_with_arguments_after_dashdash(tmp_path: Path) -> None:
    """--exec PROGRAM takes its arguments from after --; options may follow NAME."""
    result = gen_units(
        "myapp", "--exec", "/bin/echo", "--port", "8080", "--systemd-version", "252",
        "--stdout", "--", "--port", "a b", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert 'ExecStart=/bin/echo --port "a b"\n' in result.stdout


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (("--fdstore", "4"), ["myapp.service"]),
        (
            ("--port", "8080", "--accept", "--max-connections", "8"),
            ["myapp.socket", "myapp@.service"],
        ),
        (("--port", "8080", "--start-limit", "off"), ["myapp.socket", "myapp.service"]),
    ],
    ids=["fdstore-only", "accept", "start-limit-off"],
)
def test_new_shapes_write_their_files_and_record_the_options(
    tmp_path: Path, args: tuple[str, ...], names: list[str]
) -> None:
    """--fdstore alone writes only the service; --accept the socket and the template; the
    header's regenerate command carries the new options."""
    result = gen_units(
        "myapp", *args, "--systemd-version", "252", "--output", str(tmp_path), "--", "/bin/true",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names)
    header = (tmp_path / names[-1]).read_text().splitlines()[1]
    assert " ".join(args) in header


def test_help_documents_fdstore_restart_and_start_limit(tmp_path: Path) -> None:
    """--help says what survives restart vs stop + start, and how the start limit works."""
    result = gen_units("--help", cwd=tmp_path)
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    assert "survive `systemctl restart`" in text and "flushes the store" in text
    assert "--start-limit BURST/SECONDS" in text and "--accept" in text


def test_stdout_writes_no_files(tmp_path: Path) -> None:
    """--stdout previews both files and creates nothing."""
    result = gen_units(
        "myapp", "--port", "8080", "--systemd-version", "252", "--stdout", "--", "/bin/true",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0
    assert "### myapp.socket\n" in result.stdout and "### myapp.service\n" in result.stdout
    assert list(tmp_path.iterdir()) == []


def test_refuses_to_overwrite_a_changed_file_without_force(tmp_path: Path) -> None:
    """A hand-edited unit is not overwritten (exit 2, nothing written) unless --force."""
    args = ("myapp", "--port", "8080", "--systemd-version", "252", "--", "/bin/true")
    assert gen_units(*args, cwd=tmp_path).returncode == 0
    service = tmp_path / "myapp.service"
    socket_unit = tmp_path / "myapp.socket"
    service.write_text(service.read_text() + "# local edit\n")
    socket_before = socket_unit.read_text()
    socket_unit.write_text(socket_before.replace("8080", "8081"))
    result = gen_units(*args, cwd=tmp_path)
    assert result.returncode == 2
    assert "--force" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "8081" in socket_unit.read_text()  # untouched: all-or-nothing
    again = gen_units("--force", *args, cwd=tmp_path)
    assert again.returncode == 0
    assert socket_unit.read_text() == socket_before
    assert "# local edit" not in service.read_text()
    assert "unchanged:" in gen_units(*args, cwd=tmp_path).stdout


BAD = {
    "invalid-name": ("my app", "--port", "80", "--", "/bin/true"),
    "template-name": ("app@", "--port", "80", "--", "/bin/true"),
    "dotdot-name": ("..", "--port", "80", "--", "/bin/true"),
    "port-0": ("myapp", "--port", "0", "--", "/bin/true"),
    "port-70000": ("myapp", "--port", "70000", "--", "/bin/true"),
    "port-text": ("myapp", "--port", "http", "--", "/bin/true"),
    "newline-arg": ("myapp", "--port", "80", "--", "/bin/echo", "a\nb"),
    "dotdot-socket": ("myapp", "--listen", "/run/../etc/x.sock", "--", "/bin/true"),
    "dotdot-workdir": ("myapp", "--port", "80", "--working-dir", "/srv/../etc", "--", "/bin/true"),
    "dotdot-program": ("myapp", "--port", "80", "--", "/usr/../bin/true"),
    "relative-program": ("myapp", "--port", "80", "--", "bin/true"),
    "missing-program": ("nosuchprogram-xyz", "--port", "80"),
    "user-port-80": ("myapp", "--user", "--port", "80", "--", "/bin/true"),
    "bad-fdname": ("myapp", "--listen", "127.0.0.1:80=a:b", "--", "/bin/true"),
    "bad-env": ("myapp", "--port", "80", "--environment", "NOEQUALS", "--", "/bin/true"),
    "bad-version": ("myapp", "--port", "80", "--systemd-version", "two", "--", "/bin/true"),
    "old-version": ("myapp", "--port", "80", "--systemd-version", "219", "--", "/bin/true"),
    "no-listen": ("myapp", "--", "/bin/true"),
    "now-without-install": ("myapp", "--port", "80", "--now", "--", "/bin/true"),
    "zero-watchdog": ("myapp", "--port", "80", "--watchdog", "0", "--", "/bin/true"),
    "unknown-option": ("myapp", "--port", "80", "--frobnicate", "--", "/bin/true"),
    "both-modes": ("myapp", "--port", "80", "--supervise", "--upgrader", "--", "/bin/true"),
    "fdstore-no-network": ("myapp", "--fdstore", "2", "--no-network", "--", "/bin/true"),
    "fdstore-only-supervise": ("myapp", "--fdstore", "2", "--supervise", "--", "/bin/true"),
    "accept-udp": ("myapp", "--listen", "udp:127.0.0.1:53", "--accept", "--", "/bin/true"),
    "accept-watchdog": ("myapp", "--port", "80", "--accept", "--watchdog", "5", "--", "/bin/true"),
    "max-conn-no-accept": ("myapp", "--port", "80", "--max-connections", "5", "--", "/bin/true"),
    "max-conn-text": ("myapp", "--port", "80", "--accept", "--max-connections", "x", "--", "/a"),
    "start-limit-bad": ("myapp", "--port", "80", "--start-limit", "5", "--", "/bin/true"),
    "start-limit-zero": ("myapp", "--port", "80", "--start-limit", "5/0", "--", "/bin/true"),
}
ARGPARSE_ERRORS = {"unknown-option", "both-modes"}  # argparse adds its usage line


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path: Path, case: str) -> None:
    """Invalid names, ports, paths, arguments and options: exit 2, one error line, no files."""
    args = list(BAD[case])
    if "--systemd-version" not in args:
        args[1:1] = ["--systemd-version", "252"]
    result = gen_units(*args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, result.stderr
    if case not in ARGPARSE_ERRORS:
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert result.stderr.startswith("sdactivate: error: ")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["myapp.service", "myapp.socket"])
def test_a_full_unit_name_is_taken_as_its_prefix(tmp_path: Path, name: str) -> None:
    """`gen-units myapp.service` (or .socket) writes myapp.socket and myapp.service, not
    myapp.service.socket; the header's command records the prefix."""
    result = gen_units(
        name, "--port", "8080", "--systemd-version", "252", "--output", str(tmp_path),
        "--", "/bin/true", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["myapp.service", "myapp.socket"]
    assert "sdactivate gen-units myapp --port" in (tmp_path / "myapp.service").read_text()


@pytest.mark.parametrize(
    "args",
    [("--bogus",), ("--port", "80", "--bogus"), ("myapp", "--bogus", "--", "/bin/true")],
    ids=["alone", "before-name", "after-name"],
)
def test_an_unknown_option_is_reported_as_such(tmp_path: Path, args: tuple[str, ...]) -> None:
    """An unknown option is named (argparse's "unrecognized arguments"), even when NAME is
    missing too; it used to say only "NAME is required"."""
    result = gen_units(*args, cwd=tmp_path)
    assert result.returncode == 2
    assert "unrecognized arguments: --bogus" in result.stderr, result.stderr
    assert "required" not in result.stderr


def test_missing_name_is_still_required(tmp_path: Path) -> None:
    """With no NAME and nothing unknown, argparse's "required: NAME" message stays."""
    result = gen_units("--port", "80", cwd=tmp_path)
    assert result.returncode == 2
    assert "the following arguments are required: NAME" in result.stderr


def test_exec_takes_a_program(tmp_path: Path) -> None:
    """--help shows `--exec PROGRAM` (not the optional-looking `[PROGRAM]`), and a bare
    --exec is a usage error."""
    assert "--exec PROGRAM " in gen_units("--help", cwd=tmp_path).stdout
    result = gen_units("myapp", "--port", "80", "--exec", cwd=tmp_path)
    assert result.returncode == 2 and "--exec: expected one argument" in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("--port", "0"),
        ("--port", "70000"),
        ("--listen", "127.0.0.1:0"),
        ("--listen", "[::1]:70000=http"),
        ("--listen", "127.0.0.1:0", "--supervise", "--fdstore", "1"),
    ],
    ids=["port-0", "port-70000", "listen-0", "listen-70000", "supervisor-binds-0"],
)
def test_port_ranges_are_stated_one_way(tmp_path: Path, args: tuple[str, ...]) -> None:
    """Every port gen-units refuses is "not a port number 1..65535" (a unit binds a fixed
    port), whether it came from --port or --listen; 0..65535 is `run`'s range only."""
    result = gen_units("myapp", *args, "--systemd-version", "252", "--", "/bin/true", cwd=tmp_path)
    assert result.returncode == 2
    assert "not a port number 1..65535" in result.stderr, result.stderr
    assert "0..65535" not in result.stderr


def test_run_states_its_port_range_with_the_flag(tmp_path: Path) -> None:
    """`run --listen` binds itself, so 0 is allowed: the message says 0..65535 and names
    the --listen value."""
    result = subprocess.run(
        [PY, "-m", "sdactivate", "run", "--listen", "127.0.0.1:70000", "--", "/bin/true"],
        capture_output=True, text=True, timeout=30, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr == (
        "sdactivate: error: --listen '127.0.0.1:70000': port 70000: not a port number"
        " 0..65535 (0: the kernel picks a free one)\n"
    )


def test_preflight_refuses_before_writing_anything(tmp_path: Path) -> None:
    """A working directory the unit's PrivateTmp= would hide: exit 2, one line naming the
    directive and the fix, no directory created and nothing on stdout (--stdout alike);
    --systemd-version N does not turn the checks off, --no-preflight does."""
    if not str(tmp_path).startswith("/tmp/"):
        pytest.skip("needs pytest's tmp_path under /tmp")
    out = tmp_path / "out"
    args = ("myapp", "--port", "8080", "--systemd-version", "252", "--working-dir", str(tmp_path))
    for where in (("--output", str(out)), ("--stdout",)):
        result = gen_units(*args, *where, "--", "/bin/true", cwd=tmp_path)
        assert result.returncode == 2, result.stderr
        assert result.stdout == "" and not out.exists()
        assert result.stderr == (
            f"sdactivate: error: --working-dir {str(tmp_path)!r} is under /tmp, which"
            " PrivateTmp=yes replaces with an empty directory for the service; move it (e.g."
            " to /srv or /opt), or use --hardening off\n"
        )
    result = gen_units(*args, "--output", str(out), "--no-preflight", "--", "/bin/true",
                       cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["myapp.service", "myapp.socket"]


def test_preflight_checks_absolute_programs(tmp_path: Path) -> None:
    """An absolute program that does not exist is refused like a bare name not on PATH;
    --no-preflight writes it (a unit for another host)."""
    args = ("myapp", "--port", "8080", "--systemd-version", "252", "--stdout")
    result = gen_units(*args, "--", "/opt/sdactivate-nonexistent/bin/app", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr == (
        "sdactivate: error: program '/opt/sdactivate-nonexistent/bin/app' does not exist on"
        " this machine ('/opt/sdactivate-nonexistent' is missing); fix the path, or pass"
        " --no-preflight if the unit is for another host\n"
    )
    result = gen_units(*args, "--no-preflight", "--", "/opt/sdactivate-nonexistent/bin/app",
                       cwd=tmp_path)  # fmt: skip
    assert (
        result.returncode == 0 and "ExecStart=/opt/sdactivate-nonexistent/bin/app" in result.stdout
    )


def test_relative_script_is_refused_even_for_another_host(tmp_path: Path) -> None:
    """`-- python3 app.py` with no --working-dir runs /app.py on any host: refused with
    --no-preflight too, suggesting the absolute path from the current directory."""
    python = shutil.which("python3")
    assert python is not None
    for extra in ((), ("--no-preflight",)):
        result = gen_units(
            "myapp", "--port", "8080", "--systemd-version", "252", "--stdout", *extra,
            "--", "python3", "app.py", cwd=tmp_path,
        )  # fmt: skip
        assert result.returncode == 2
        assert result.stderr == (
            "sdactivate: error: script 'app.py' is relative and the unit has no"
            f" WorkingDirectory= (the service starts in /); pass {tmp_path}/app.py or"
            " --working-dir DIR\n"
        )
