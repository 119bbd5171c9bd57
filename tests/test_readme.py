"""The README's code runs as written (no systemd needed; integration/test_readme_e2e.py runs
the quick start under a real one).

Blocks come from README.md through examples/readme_blocks.py (marked with
``<!-- readme-test: NAME -->``). Where a test changes a block it says so with
``substitute()``, which fails if the text it replaces is gone: the port 8080 becomes a free
one (tests never take a fixed port), nothing else.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench import loadgen
from examples import readme_blocks
from sdactivate.addresses import parse_address
from sdactivate.cli import build_parser
from sdactivate.supervisor.client import request_reload, request_status
from sdactivate.testing import NotifyReceiver, launch
from tests.support import free_dual_stack_port

ROOT = Path(__file__).resolve().parent.parent

TEXT = readme_blocks.README.read_text(encoding="utf-8")
BLOCKS = readme_blocks.marked_blocks(TEXT)
QUICKSTART = (
    "install",
    "quickstart-app",
    "quickstart",
    "quickstart-output",
    "quickstart-supervise",
)
PYTHON_BLOCKS = [b.body for b in readme_blocks.fenced_blocks(TEXT) if b.lang == "python"]


def _env() -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("NOTIFY_", "WATCHDOG_", "LISTEN_"))
    }
    env["PYTHONPATH"] = str(ROOT)
    return env


def _app(tmp_path: Path, port: int) -> Path:
    """The README's quick-start app at tmp_path/app.py, its port 8080 changed to ``port``."""
    body = readme_blocks.substitute(BLOCKS["quickstart-app"].body, [('":8080"', f'":{port}"')])
    path = tmp_path / "app.py"
    path.write_text(body, encoding="utf-8")
    return path


def _get(port: int, path: str = "/") -> tuple[int, str]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.decode("latin-1").partition("\r\n\r\n")
    return int(head.split()[1]), body


@pytest.fixture
def receiver() -> Iterator[NotifyReceiver]:
    with NotifyReceiver(thread=True) as rx:
        yield rx


# --- the blocks are there and are code ----------------------------------------------------


def test_quickstart_blocks_are_marked() -> None:
    """The README marks install, the app and the three quick-start command blocks."""
    assert set(QUICKSTART) <= set(BLOCKS), sorted(BLOCKS)
    assert BLOCKS["quickstart-app"].lang == "python"
    assert TEXT.index("## Install") < TEXT.index("## Quick start") < TEXT.index("## Two commands")


@pytest.mark.parametrize(
    "body", PYTHON_BLOCKS, ids=[f"block{i}" for i in range(len(PYTHON_BLOCKS))]
)
def test_python_blocks_compile(body: str) -> None:
    """Every python block of the README is valid Python."""
    compile(body, "README.md", "exec")


# --- the quick-start app --------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_quickstart_app_runs_bare_and_stops_cleanly(
    tmp_path: Path, receiver: NotifyReceiver, sig: signal.Signals
) -> None:
    """Bare (nothing passed), the app binds its port, says READY=1, answers with a fixed text
    (never a file), and on SIGTERM or Ctrl-C exits 0 with nothing on stderr (no traceback)."""
    port = free_dual_stack_port()
    env = _env() | receiver.environ
    proc = subprocess.Popen(
        [sys.executable, str(_app(tmp_path, port))],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        receiver.wait_for("READY", "1", timeout=15)
        hello = (200, f"hello from myapp, pid {proc.pid}\n")
        assert _get(port) == hello
        (tmp_path / "secret.txt").write_text("a file in the working directory\n")
        assert _get(port, "/secret.txt") == hello  # a fixed response, never a file
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 0
    assert (out, err) == (b"", b"")


def _quickstart_units(block: str, port: int) -> dict[str, str]:
    """The units the block's gen-units line writes, printed with --stdout instead of
    installed (--install/--now/--output dropped), for systemd 252."""
    (argv,) = [
        a for a in readme_blocks.sdactivate_commands(BLOCKS[block].body) if a[0] == "gen-units"
    ]
    return _gen_units_stdout([w.replace("8080", str(port)) for w in argv])


def _gen_units_stdout(argv: list[str]) -> dict[str, str]:
    """`sdactivate gen-units ...` with --stdout instead of --install/--now/--output/--force."""
    split = argv.index("--") if "--" in argv else len(argv)
    opts, command = argv[:split], argv[split:]
    kept: list[str] = []
    skip = False
    for word in opts:
        if skip:
            skip = False
        elif word == "--output":
            skip = True
        elif word not in ("--install", "--now", "--force"):
            kept.append(word)
    # --no-preflight: the README's /opt/myapp and /srv/myapp are not on this machine (the
    # e2e test runs the same lines with the checks, where those paths exist)
    full = [sys.executable, "-m", "sdactivate", *kept, "--systemd-version", "252", "--stdout"]
    if kept[0] == "gen-units":
        full.append("--no-preflight")
    proc = subprocess.run(
        [*full, *command], capture_output=True, text=True, env=_env(), cwd=ROOT, check=False
    )
    assert proc.returncode == 0, f"{full}: {proc.stderr}"
    files: dict[str, str] = {}
    for chunk in proc.stdout.split("### ")[1:]:
        name, _, text = chunk.partition("\n")
        files[name] = text
    return files


def _directive(text: str, key: str) -> list[str]:
    return re.findall(rf"^{key}=(.*)$", text, re.M)


def test_quickstart_app_takes_the_socket_the_quickstart_units_pass(
    tmp_path: Path, receiver: NotifyReceiver
) -> None:
    """The README's gen-units line and the README's app line up: the socket unit's
    ListenStream= (bound as systemd binds it) under the fd name systemd gives it
    (the socket unit's name) is the socket the app serves; READY=1; SIGTERM exits 0."""
    port = free_dual_stack_port()
    files = _quickstart_units("quickstart", port)
    assert _directive(files["myapp.socket"], "ListenStream") == [str(port)]
    assert _directive(files["myapp.socket"], "FileDescriptorName") == []  # default: unit name
    assert _directive(files["myapp.service"], "ExecStart") == [
        "/opt/myapp/venv/bin/python /srv/myapp/app.py"
    ]
    assert _directive(files["myapp.service"], "Type") == ["notify"]
    held = parse_address(_directive(files["myapp.socket"], "ListenStream")[0]).bind()
    proc = launch(
        [sys.executable, str(_app(tmp_path, port))],
        [held],
        names=["myapp.socket"],
        notify=receiver,
        env=_env(),
    )
    try:
        receiver.wait_for("READY", "1", timeout=15)
        assert _get(port) == (200, f"hello from myapp, pid {proc.pid}\n")
        proc.terminate()
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        held.close()


def test_supervise_units_run_the_same_app_under_the_supervisor() -> None:
    """The --supervise block: same socket, ExecStart runs the README's command under
    `sdactivate run`, and ExecReload= makes `systemctl reload` a handover."""
    port = free_dual_stack_port()
    files = _quickstart_units("quickstart-supervise", port)
    assert _directive(files["myapp.socket"], "ListenStream") == [str(port)]
    (exec_start,) = _directive(files["myapp.service"], "ExecStart")
    assert exec_start.endswith(
        " -m sdactivate run --drain-timeout 30 -- /opt/myapp/venv/bin/python /srv/myapp/app.py"
    )
    assert _directive(files["myapp.service"], "ExecReload")[0].endswith(
        " -m sdactivate reload --pid $MAINPID"
    )


HANDOVERS = 10
RATE = 300


def test_quickstart_app_loses_nothing_over_handovers(
    tmp_path: Path, receiver: NotifyReceiver
) -> None:
    """The app under `sdactivate run --listen :P` (as the README says), 10 handovers under
    300 new connections/s: 0 refused, reset, timed out or lost, and every generation served
    (each one drains on SIGTERM: it stops accepting and answers what it accepted)."""
    port = free_dual_stack_port()
    argv = [sys.executable, "-m", "sdactivate", "run", "--listen", f":{port}", "--drain-timeout"]
    argv += ["20", "--", sys.executable, str(_app(tmp_path, port))]
    proc = subprocess.Popen(argv, env=_env() | receiver.environ, stderr=subprocess.PIPE)
    try:
        receiver.wait_for("READY", "1", timeout=15)
        # The load runs until the last generation served 0.5 s (bounded at 60 s).
        load = loadgen.start("127.0.0.1", port, rate=RATE, duration=60.0, timeout=5.0)
        time.sleep(0.5)  # pacing, not ordering: generation 1 serves some load too
        for _ in range(HANDOVERS):
            outcome = request_reload(proc.pid, timeout=30)
            assert outcome.ok, outcome.message
            time.sleep(0.5)  # pacing, not ordering: each generation serves alone a while
        load.stop()
        res = load.result(timeout=30)
        proc.send_signal(signal.SIGINT)  # Ctrl-C on the supervisor: it stops the generation
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    print(f"README app, {HANDOVERS} handovers at {RATE}/s: {res.summary()}")
    assert res.failed == 0, res.summary()
    assert res.ok == res.total > RATE * HANDOVERS * 0.5 * 0.9
    assert len({pid for pid in res.pids() if pid}) == HANDOVERS + 1
    assert proc.returncode == 0, err.decode(errors="replace")
    assert b"Traceback" not in err
    assert b"SIGKILL" not in err  # every generation drained and exited by itself


# --- every sdactivate command line parses ----------------------------------------------------

BLOCK_COMMANDS = list(readme_blocks.block_commands(TEXT))
INLINE_COMMANDS = list(readme_blocks.inline_commands(TEXT))
# Placeholders in prose commands, and what stands in for them here.
PLACEHOLDERS = [
    ("[--timeout S]", "--timeout 5"),
    ("$MAINPID", "4242"),
    ("PID", "4242"),
    ("CMD", "/bin/true"),
    ("ADDR", "127.0.0.1:8080"),
]


def _parses(argv: list[str]) -> None:
    try:
        build_parser().parse_args(argv)
    except SystemExit as exc:
        raise AssertionError(f"`sdactivate {' '.join(argv)}` does not parse") from exc


def test_readme_has_sdactivate_command_lines() -> None:
    """The extraction finds the quick start's and the D-Bus section's command lines."""
    assert sum(a[0] == "gen-units" for a in BLOCK_COMMANDS) >= 3
    assert ["reload", "myapp"] in BLOCK_COMMANDS
    assert any(span.startswith("sdactivate run ") for span in INLINE_COMMANDS)


@pytest.mark.parametrize("argv", BLOCK_COMMANDS, ids=[" ".join(a[:3]) for a in BLOCK_COMMANDS])
def test_block_command_lines_parse(argv: list[str]) -> None:
    """Each `sdactivate ...` line of a shell block parses; gen-units lines also generate."""
    _parses(argv)
    if argv[0] == "gen-units":
        files = _gen_units_stdout(argv)
        assert any(name.endswith(".service") for name in files)


@pytest.mark.parametrize("span", INLINE_COMMANDS)
def test_inline_command_lines_parse(span: str) -> None:
    """Each `sdactivate ...` in the prose parses (placeholders such as PID or CMD filled in);
    gen-units ones also generate."""
    for old, new in PLACEHOLDERS:
        span = span.replace(old, new)
    words = span.split()
    start = next(i for i, w in enumerate(words) if w == "sdactivate" or w.endswith("/sdactivate"))
    argv = words[start + 1 :]
    _parses(argv)
    if argv[0] == "gen-units":
        _gen_units_stdout(argv)


def test_workers_block_serves_on_every_worker_and_hands_over(
    tmp_path: Path, receiver: NotifyReceiver
) -> None:
    """The README's `--workers` line with the quick-start app (auto -> 2, the port a free
    one): READY=1 once both workers are, both serve, 3 handovers under load lose nothing."""
    port = free_dual_stack_port()
    line = readme_blocks.substitute(
        BLOCKS["workers"].body.strip(),
        [("--workers auto", "--workers 2"), (":8080", f":{port}")],
    )
    words = shlex.split(line)
    assert words[:2] == ["sdactivate", "run"] and words[-2:] == ["python3", "app.py"]
    argv = [sys.executable, "-m", "sdactivate", *words[1:-2]]
    argv += [sys.executable, str(_app(tmp_path, port))]
    proc = subprocess.Popen(argv, env=_env() | receiver.environ, stderr=subprocess.PIPE)
    try:
        receiver.wait_for("READY", "1", timeout=15)
        status = request_status(proc.pid, timeout=5)
        assert sorted(w["worker"] for w in status["workers"]) == [0, 1]
        assert status["message"] == "2/2 ready, generation 1"
        load = loadgen.start("127.0.0.1", port, rate=RATE, duration=60.0, timeout=5.0)
        time.sleep(0.5)  # pacing, not ordering: generation 1 serves some load too
        for _ in range(3):
            outcome = request_reload(proc.pid, timeout=30)
            assert outcome.ok, outcome.message
            time.sleep(0.5)  # pacing, not ordering
        load.stop()
        res = load.result(timeout=30)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert res.failed == 0 and res.ok == res.total > 0, res.summary()
    assert len({pid for pid in res.pids() if pid}) >= 4  # two workers, more than one generation
    assert proc.returncode == 0, err.decode(errors="replace")
    assert b"Traceback" not in err
