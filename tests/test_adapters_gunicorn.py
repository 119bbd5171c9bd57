"""sdactivate.adapters.gunicorn_conf: READY only once workers loaded the app; SIGTERM drain."""

from __future__ import annotations

import os
from pathlib import Path

from tests._adapter_harness import check_sigterm_drains, example, request, running


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
