"""bench/run.py --placebo-ms: a control trigger restarts nothing and marks a window of the
asked length, noted once in the mode's notes."""

from __future__ import annotations

import argparse
from pathlib import Path

from bench import modes, run

ROOT = Path(__file__).resolve().parent.parent


class _Mode:
    def __init__(self) -> None:
        self.notes: list[str] = []

    def restart(self) -> modes.Restart:  # pragma: no cover - must not be called
        raise AssertionError("a placebo trigger restarted the service")


def test_placebo_marks_a_window_and_restarts_nothing() -> None:
    m = _Mode()
    cfg = argparse.Namespace(placebo_ms=30.0)
    first = run._placebo(m, cfg)  # type: ignore[arg-type]
    second = run._placebo(m, cfg)  # type: ignore[arg-type]
    for r in (first, second):
        assert r.done - r.trigger >= 0.030
        assert (r.old_pid, r.new_pid, r.note) == (0, 0, "placebo")
    assert m.notes == ["placebo run: no restart at the triggers, 30 ms windows"]


def test_placebo_option_parses() -> None:
    assert run.parse(["--placebo-ms", "120"]).placebo_ms == 120.0
    assert run.parse([]).placebo_ms is None
