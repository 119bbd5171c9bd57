"""bench/stalls.py: which requests a machine stall caught, and the canaries themselves."""

from __future__ import annotations

import math
import time

from bench import stalls

NAN = math.nan


def test_a_request_is_stalled_when_its_life_overlaps_a_gap() -> None:
    """Life = scheduled .. scheduled + latency (or + timeout when it failed); any overlap
    with any CPU's gap counts, touching does not."""
    gaps = [(0, 10.0, 10.5), (1, 10.4, 11.0), (0, 20.0, 20.1)]
    scheduled = [9.0, 9.9, 10.2, 11.0, 11.5, 19.0, 19.95, 30.0]
    latency = [0.5, 0.2, 0.001, 0.01, 0.01, NAN, 0.1, 0.01]
    assert stalls.stalled(scheduled, latency, gaps, timeout=3.0) == [
        False,  # 9.0 .. 9.5: before
        True,  # 9.9 .. 10.1: runs into the first gap
        True,  # inside
        False,  # starts exactly when the (merged) gap ends
        False,
        True,  # failed: 19.0 .. 22.0 covers the third gap
        True,
        False,
    ]


def test_gaps_of_several_cpus_are_merged() -> None:
    starts, ends = stalls.merged([(1, 5.0, 6.0), (0, 1.0, 2.0), (0, 5.5, 7.0), (1, 7.0, 8.0)])
    assert (starts, ends) == ([1.0, 5.0], [2.0, 8.0])


def test_rate_inside_counts_gaps_starting_in_windows() -> None:
    n, secs = stalls.rate_inside([(0, 1.5, 1.6), (1, 3.0, 3.1), (0, 5.0, 5.2)], [(1, 2), (4, 6)])
    assert (n, secs) == (2, 3.0)


def test_canaries_run_and_stop_on_request() -> None:
    """Real canary processes (one per CPU): they report, within the bound, with their
    coverage; SCHED_FIFO is used when allowed (root), else they run as normal tasks."""
    c = stalls.Canaries([0], duration=30.0)
    time.sleep(0.3)
    t = time.monotonic()
    got = c.stop()
    assert time.monotonic() - t < 5.0
    lo, hi = got["covered"][0]
    assert hi - lo > 0.1
    assert all(cpu == 0 and b > a for cpu, a, b in got["gaps"])
    assert isinstance(got["rt"], bool)
