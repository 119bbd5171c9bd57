"""`gen-units --supervise --workers N|auto --max-starting K`: passed to `sdactivate run`,
checked by run's own parsers, and TimeoutStartSec= sized for the start-up rounds."""

from __future__ import annotations

import pytest

from sdactivate.cli import main
from sdactivate.errors import UnitConfigError
from tests.test_units_run_options import _exec_start_as_run_args, _lines, gen


@pytest.mark.parametrize("workers", [4, "auto"], ids=["four", "auto"])
def test_workers_round_trip_through_exec_start(workers: int | str) -> None:
    """--workers and --max-starting reach ExecStart= as `run` parses them back."""
    files = gen(workers=workers, max_starting=2)
    args = _exec_start_as_run_args(files["myapp.service"])
    assert (args.workers, args.max_starting) == (workers, 2)


def test_defaults_write_nothing() -> None:
    """Without them, run's defaults apply (1 worker; K = the CPU count) and nothing is written."""
    args = _exec_start_as_run_args(gen()["myapp.service"])
    assert (args.workers, args.max_starting) == (1, None)


def test_start_timeout_allows_every_round() -> None:
    """8 workers, 3 at a time: 3 rounds of --ready-timeout in TimeoutStartSec=."""
    one = gen(ready_timeout=20)
    rounds = gen(ready_timeout=20, workers=8, max_starting=3)
    (t1,) = _lines(one["myapp.service"], "TimeoutStartSec")
    (t3,) = _lines(rounds["myapp.service"], "TimeoutStartSec")
    assert float(t3.rstrip("s")) - float(t1.rstrip("s")) == 40
    assert not _lines(gen(workers=4)["myapp.service"], "TimeoutStartSec")


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"workers": 0}, "--workers must be a whole number"),
        ({"workers": "many"}, "--workers must be a whole number"),
        ({"max_starting": 0}, "--max-starting must be a whole number"),
        ({"workers": 2, "supervise": False}, "--workers only applies with --supervise"),
    ],
    ids=["zero", "word", "zero-k", "no-supervise"],
)
def test_bad_values_refused(kw: dict[str, object], match: str) -> None:
    """Bad values are refused at generation time with run's message."""
    with pytest.raises(UnitConfigError, match=match):
        gen(**kw)


def test_cli_refuses_a_bad_count(capsys: pytest.CaptureFixture[str]) -> None:
    """gen-units --workers abc: one line, exit 2."""
    code = main(
        [
            "gen-units",
            "x",
            "--port",
            "8080",
            "--supervise",
            "--workers",
            "abc",
            "--stdout",
            "--no-preflight",
            "--systemd-version",
            "252",
            "--",
            "/bin/true",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "--workers" in err and "'abc'" in err and "Traceback" not in err
