"""sdactivate.adapters.gunicorn_conf: READY only once workers loaded the app; SIGTERM drain."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest

from tests._adapter_harness import check_sigterm_drains, example, request, running

EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "examples"


def _has_control_socket() -> bool:
    try:
        from gunicorn.config import ControlSocket  # noqa: F401  (gunicorn 25.1+)
    except ImportError:
        return False
    return True


needs_control_socket = pytest.mark.skipif(
    not _has_control_socket(), reason="gunicorn < 25.1 has no control socket"
)


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LISTEN_", "NOTIFY_"))}
    env["EXAMPLE_MARKER"] = str(tmp_path / "loaded")
    env["EXAMPLE_LOAD_MS"] = "400"
    return env


def test_ready_only_after_workers_loaded_app(tmp_path: Path) -> None:
    """READY=1 comes after both workers loaded the app (gunicorn alone says it before)."""
    marker = tmp_path / "loaded"
    with running(example("adapter_gunicorn.py"), env=_env(tmp_path), decoy=False) as run:
        msg = run.rx.wait_for("READY", "1", timeout=30)
        assert msg.pid == run.proc.pid  # the arbiter (main pid), not a worker
        loaded = marker.read_text().split() if marker.exists() else []
        assert len(loaded) == 2, loaded
        status, body = request(run.port)
        assert status == 200 and body.startswith(b"ok pid="), body
        assert run.rx.count("READY") == 1


def test_sigterm_drains_in_flight_request(tmp_path: Path) -> None:
    """SIGTERM: STOPPING=1 from the arbiter, the slow request completes, gunicorn exits."""
    with running(example("adapter_gunicorn.py"), env=_env(tmp_path), decoy=False) as run:
        check_sigterm_drains(run, head_first=True, deadline=15)


def test_sighup_reloading_then_ready(tmp_path: Path) -> None:
    """SIGHUP: RELOADING=1 with MONOTONIC_USEC, then READY=1 once the new workers loaded."""
    import signal

    marker = tmp_path / "loaded"
    with running(example("adapter_gunicorn.py"), env=_env(tmp_path), decoy=False) as run:
        run.rx.wait_for("READY", "1", timeout=30)
        n = len(run.rx.messages)
        run.proc.send_signal(signal.SIGHUP)
        reloading = run.rx.wait_for("RELOADING", "1", timeout=10, since=n)
        assert reloading.get("MONOTONIC_USEC", "").isdigit()
        run.rx.wait_for("READY", "1", timeout=30, since=n + 1)
        assert len(marker.read_text().split()) == 4  # two new workers loaded the app
        status, _ = request(run.port)
        assert status == 200


def _gunicorn_without_runtime_dir(home: str, tmp_path: Path) -> list[str]:
    """gunicorn with the adapter, one worker, info logging; HOME=home, no XDG_RUNTIME_DIR:
    its control socket's default is then HOME/.gunicorn/gunicorn.ctl (gunicorn 25.1+)."""
    return [
        "env", "-u", "XDG_RUNTIME_DIR", f"HOME={home}", sys.executable, "-m", "gunicorn",
        "-c", "python:sdactivate.adapters.gunicorn_conf", "--chdir", str(EXAMPLES_DIR),
        "--workers", "1", "--log-level", "info", "adapter_gunicorn:app",
    ]  # fmt: skip


@needs_control_socket
def test_no_control_server_error_where_home_is_not_writable(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """Under a hardened unit the home is read-only: gunicorn 27 logged '[ERROR] Control
    server error: ... /.gunicorn' at every start. The adapter switches the control socket
    off there, before gunicorn starts it, and says so once (here HOME=/proc, where no one
    may create a directory)."""
    argv = _gunicorn_without_runtime_dir("/proc", tmp_path)
    with running(argv, env=_env(tmp_path), decoy=False) as run:
        run.rx.wait_for("READY", "1", timeout=30)
        run.proc.send_signal(signal.SIGTERM)
        assert run.proc.wait(timeout=20) == 0
    err = capfd.readouterr().err
    assert "Control server error" not in err and "Failed to start control socket" not in err
    assert "control socket (gunicornc) off: /proc/.gunicorn/gunicorn.ctl" in err, err


@needs_control_socket
def test_control_socket_kept_where_it_can_be_created(tmp_path: Path) -> None:
    """With a writable home the adapter leaves gunicorn's control socket alone."""
    home = tmp_path / "home"
    home.mkdir()
    argv = _gunicorn_without_runtime_dir(str(home), tmp_path)
    ctl = home / ".gunicorn" / "gunicorn.ctl"
    with running(argv, env=_env(tmp_path), decoy=False) as run:
        run.rx.wait_for("READY", "1", timeout=30)
        deadline = time.monotonic() + 20
        while not ctl.is_socket():  # the control server starts in a thread of its own
            assert time.monotonic() < deadline, "no control socket within 20 s"
            time.sleep(0.05)
        run.proc.send_signal(signal.SIGTERM)
        assert run.proc.wait(timeout=20) == 0
