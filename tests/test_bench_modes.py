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
