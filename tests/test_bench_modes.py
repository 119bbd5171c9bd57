"""bench/modes: ``MODE:N@APP`` ids, and a peer that is not installed is a skipped mode."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import modes
from bench.modes import peers


@pytest.mark.parametrize(
    ("mode_id", "want"),
    [
        ("C3", ("C3", 1, "")),
        ("C3:4", ("C3", 4, "")),
        ("C3:4@bench", ("C3", 4, "bench")),
        ("C3@bench:4", ("C3", 4, "bench")),
        ("C4@bench", ("C4", 1, "bench")),
        ("P2-chain:4", ("P2-chain", 4, "")),
    ],
    ids=["plain", "workers", "workers-app", "app-workers", "app", "peer"],
)
def test_split_id(mode_id: str, want: tuple[str, int, str]) -> None:
    """A mode id names its base mode, its worker count (default 1) and its app."""
    assert modes.split_id(mode_id) == want


@pytest.mark.parametrize("mode_id", ["C0:2", "C3:0", "C3:x"], ids=["single", "zero", "nan"])
def test_split_id_refuses(mode_id: str) -> None:
    """Workers for a one-process mode, or not a positive number: an error naming the id."""
    with pytest.raises(ValueError, match=mode_id):
        modes.split_id(mode_id)


@pytest.mark.parametrize("mode_id", ["P2-chain", "P3-circus"])
def test_missing_peer_is_unavailable(
    mode_id: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A peer absent from the bench's venv skips its mode with the reason, no crash."""
    monkeypatch.setattr(peers, "VENV_PYTHON", str(tmp_path / "python"))
    (tmp_path / "python").symlink_to("/bin/false")  # imports nothing
    m = modes.make(mode_id, port=1, keepalive=False, app="bench", pool=None, workers=4)  # type: ignore[arg-type]
    with pytest.raises(modes.ModeUnavailable, match="make bench"):
        m.check()
    assert "4" in m.title


@pytest.mark.parametrize(
    ("text", "worker", "want"),
    [
        ("exit:3", "3", "exit"),
        ("exit:3", "2", ""),
        ("never-ready:3", "3", "never-ready"),
        ("crash:0", "0", "crash"),
        ("", "3", ""),
        ("exit:3", None, ""),
    ],
    ids=["match", "other-worker", "never-ready", "crash", "empty", "no-index"],
)
def test_app_fault_file(
    text: str, worker: str | None, want: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bench app's fault applies only to the worker whose $SDACTIVATE_WORKER it names."""
    from bench.modes import app

    (tmp_path / "fault").write_text(text)
    if worker is None:
        monkeypatch.delenv("SDACTIVATE_WORKER", raising=False)
    else:
        monkeypatch.setenv("SDACTIVATE_WORKER", worker)
    assert app._fault(str(tmp_path / "fault")) == want
    assert app._fault(str(tmp_path / "missing")) == ""


def _run(mode: str, workload: str, added: float, wmax: float, restart: float) -> dict[str, object]:
    return {
        "mode": mode,
        "title": mode,
        "workload": workload,
        "workers": modes.split_id(mode)[1],
        "counts": {"failed": 0},
        "window_ms": {"max": wmax},
        "added_ms": {"p99.9": added},
        "restart_ms": {"median": restart},
    }


def test_peers_table_pairs_each_peer_with_c3_of_its_worker_count() -> None:
    """A peer's row sits beside C3 with as many workers and the same workload; ratios are
    peer / C3; a peer without its C3 run has no row."""
    from bench import report

    runs = [
        _run("C3", "new", 0.3, 4.0, 100.0),
        _run("C3:4", "new", 1.0, 10.0, 400.0),
        _run("P3-circus:4", "new", 150.0, 200.0, 300.0),
        _run("P1-HUP", "new", 25.0, 40.0, 200.0),
        _run("P2-chain", "keepalive", 0.0, 5.0, 2000.0),  # no C3 keepalive run
    ]
    text = "\n".join(report.peers_table(runs))
    assert "| 4 | new | P3-circus:4 | 0 / 0 | 150.0 / 1.0 | 200.0 / 10.0 (20.0x) |" in text
    assert "| 1 | new | P1-HUP | 0 / 0 | 25.0 / 0.3 | 40.0 / 4.0 (10.0x) | 200.0 / 100.0" in text
    assert "P2-chain" not in text
    assert report.peers_table([_run("C3", "new", 0.3, 4.0, 100.0)]) == []
