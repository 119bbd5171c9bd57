"""The chaos soak's pure parts (integration/soak_plan.py, soak_watch.py's parsers): the
schedule, the cause of each failed request, the checks, and what is read from the journal.
No sandbox needed."""

from __future__ import annotations

import itertools

import pytest

from integration.soak_plan import (
    ALLOWED,
    KILLED_BY_SYSTEMD,
    KILLED_DRAINING,
    KILLED_NOT_READY,
    KILLED_SERVING,
    KINDS,
    Checks,
    Death,
    Failed,
    Fault,
    FaultRecord,
    attribute,
    estimate,
    schedule,
    stuck_drains,
    table,
)
from integration.soak_watch import State, deaths_from_journal, drain_seconds, read_request_log


def test_schedule_replays_its_seed() -> None:
    """The same seed gives the same faults; another seed another order."""
    first = list(itertools.islice(schedule(7), 30))
    assert first == list(itertools.islice(schedule(7), 30))
    assert first != list(itertools.islice(schedule(8), 30))


@pytest.mark.parametrize("seed", [0, 1, 2, 99])
def test_every_round_has_every_kind_once(seed: int) -> None:
    """Each run of len(KINDS) faults has every kind once, so a short soak meets them all."""
    faults = list(itertools.islice(schedule(seed), 5 * len(KINDS)))
    for n in range(5):
        round_ = faults[n * len(KINDS) : (n + 1) * len(KINDS)]
        assert sorted(f.kind for f in round_) == sorted(KINDS)


def test_fault_parameters_are_in_range() -> None:
    """Pauses 0.5..2 s; stop-starting SIGCONTs or leaves; bursts of 2..4 SIGHUPs or
    `systemctl reload`s; a starting generation is hit 0..0.3 s into its start-up."""
    faults = list(itertools.islice(schedule(3), 700))
    assert all(0.5 <= f.pause <= 2.0 for f in faults)
    stops = [f for f in faults if f.kind == "stop-starting"]
    assert {f.variant for f in stops} == {"cont", "left"}
    bursts = [f for f in faults if f.kind == "reload-burst"]
    assert {f.variant for f in bursts} == {"sighup", "systemctl"}
    assert {f.count for f in bursts} == {2, 3, 4}
    assert all(0 <= f.delay <= 0.3 for f in faults if f.kind.endswith("-starting"))


def test_estimate_waits_for_the_ready_timeout() -> None:
    """A handover that must time out is budgeted past --ready-timeout."""
    never = Fault("never-ready", pause=1.0)
    assert (
        estimate(never, ready_timeout=4) > 5 > estimate(Fault("kill-serving", 1.0), ready_timeout=4)
    )


def _rec(kind: str, start: float, end: float) -> FaultRecord:
    return FaultRecord(Fault(kind, 1.0), start=start, trigger=start, end=end)


FAULTS = [_rec("kill-serving", 10.0, 11.0), _rec("never-ready", 20.0, 25.0)]
DEATHS = [
    Death(100, 10.05, KILLED_SERVING),
    Death(200, 24.0, KILLED_NOT_READY),
]


@pytest.mark.parametrize(
    ("request_", "read_by", "cause", "allowed", "fault"),
    [
        (Failed(1, 10.0, "reset"), {1: 100}, ALLOWED, True, "kill-serving"),
        (Failed(2, 10.04, "reset"), {}, ALLOWED, True, "kill-serving"),
        (
            Failed(3, 23.9, "reset"),
            {3: 200},
            f"accepted by a {KILLED_NOT_READY}",
            False,
            "never-ready",
        ),
        (Failed(4, 30.0, "reset"), {}, "reset, and no process was killed", False, ""),
        (
            Failed(5, 21.0, "refused"),
            {},
            "not accepted: refused during never-ready",
            False,
            "never-ready",
        ),
        (
            Failed(6, 50.0, "timeout"),
            {},
            "not accepted: timeout with no fault under way",
            False,
            "",
        ),
        (  # pid 100 was killed before this request was sent: a reused pid, still alive
            Failed(7, 40.0, "timeout"),
            {7: 100},
            "read by pid 100, which was not killed (timeout)",
            False,
            "",
        ),
    ],
    ids=[
        "read-by-killed-serving",
        "unread-reset-at-serving-kill",
        "read-by-never-ready",
        "reset-without-death",
        "refused-during-fault",
        "timeout-outside-faults",
        "pid-reused-after-its-death",
    ],
)
def test_attribute(
    request_: Failed, read_by: dict[int, int], cause: str, allowed: bool, fault: str
) -> None:
    """Each failed request gets the cause its reader's death (or its time) says; only the
    requests a SIGKILLed serving generation had are allowed."""
    (got,) = attribute([request_], read_by, DEATHS, FAULTS, timeout=15.0)
    assert (got.cause, got.allowed, got.fault) == (cause, allowed, fault)


def test_stuck_drains_spare_what_the_soak_left_stopped() -> None:
    """A SIGKILL after the stop signal is a stuck drain, unless the soak SIGSTOPped that
    generation and never continued it; other deaths are not drains."""
    deaths = [
        Death(1, 1.0, KILLED_DRAINING),
        Death(2, 2.0, KILLED_DRAINING),
        Death(3, 3.0, KILLED_BY_SYSTEMD),
        Death(4, 4.0, KILLED_NOT_READY),
        Death(5, 5.0, KILLED_SERVING),
    ]
    assert stuck_drains(deaths, {2}) == [
        f"pid 1: {KILLED_DRAINING}",
        f"pid 3: {KILLED_BY_SYSTEMD}",
    ]


def test_a_failure_goes_to_the_fault_under_way() -> None:
    """Right after a fault ends the next may start: a death then belongs to the next one,
    though it falls in the slack after the first."""
    faults = [_rec("exit-at-start", 0.0, 1.0), _rec("kill-serving", 1.5, 2.0)]
    deaths = [Death(7, 1.6, KILLED_SERVING)]
    (got,) = attribute([Failed(1, 1.55, "reset")], {1: 7}, deaths, faults, timeout=15.0)
    assert (got.allowed, got.fault) == (True, "kill-serving")


def test_checks_violations() -> None:
    """Stuck drains, zombies, fd growth, leftovers and unsettled faults are violations; an
    fd count that went down or stayed is not."""
    assert Checks(fd_counts={5: [11, 11, 10]}).violations() == []
    assert Checks(fd_counts={5: [11, 12]}).violations() == [
        "supervisor 5: +1 fds between its first and last settle"
    ]
    bad = Checks(
        stuck_drains=["pid 3: x"],
        zombies=["host pid 9"],
        left_after_stop=["sdsoak.service active"],
        unsettled=["kill-serving: y"],
        missing_kinds=["never-ready"],
        listeners=["port 1: changed"],
    )
    assert len(bad.violations()) == 6


def test_table_lists_every_kind_and_marks_causes() -> None:
    """The summary has a row per fault kind, the totals, and each cause marked."""
    attributed = attribute(
        [Failed(1, 10.0, "reset"), Failed(2, 23.9, "reset")],
        {1: 100, 2: 200},
        DEATHS,
        FAULTS,
        timeout=15.0,
    )
    text = table(
        title="t", faults=FAULTS, attributed=attributed, requests=10, ok=8, checks=Checks()
    )
    for kind in KINDS:
        assert f"\n{kind} " in text
    assert "requests 10: ok 8, failed 2 (1 allowed, 1 not allowed)" in text
    assert f"{ALLOWED}  [allowed]" in text
    assert f"accepted by a {KILLED_NOT_READY}  [NOT ALLOWED]" in text


# Lines as the supervisor (sdactivate run) and systemd 252 write them.
JOURNAL = [
    (1.0, "sdactivate: generation 2 (pid 93) serving; generation 1 (pid 88) draining"),
    (1.2, "sdactivate: generation 1 (pid 88) used 0.04 s CPU, max RSS 17.7 MB"),
    (1.3, "sdactivate: generation 1 (pid 88) exited with status 0"),
    (2.0, "sdactivate: generation 3 (pid 99) serving; generation 2 (pid 93) draining"),
    (
        12.0,
        "sdactivate: generation 2 (pid 93) still running 10s after the stop signal;"
        " sending SIGKILL",
    ),
    (12.1, "sdactivate: generation 2 (pid 93) killed by SIGKILL"),
    (
        13.0,
        "sdactivate: upgrade failed: generation 4 (pid 120) failed: no READY=1 within 4s;"
        " generation 3 (pid 99) serving",
    ),
    (14.0, "sdactivate: generation 3 (pid 99) killed by SIGKILL while serving"),
    (15.0, "sdsoak.service: Killing process 131 (python3) with signal SIGKILL."),
]


def test_deaths_from_journal() -> None:
    """Kills by the supervisor (ready and drain timeouts), by systemd, and deaths while
    serving are read with their pid and time."""
    assert deaths_from_journal(JOURNAL) == [
        Death(93, 12.0, KILLED_DRAINING),
        Death(120, 13.0, KILLED_NOT_READY),
        Death(99, 14.0, "serving generation died by itself"),
        Death(131, 15.0, KILLED_BY_SYSTEMD),
    ]


def test_drain_seconds() -> None:
    """From the takeover that signalled a generation to the line saying it ended."""
    assert drain_seconds(JOURNAL) == pytest.approx({88: 0.3, 93: 10.1})


def test_read_request_log() -> None:
    """`RID PID` lines; a torn last line (a SIGKILL mid-write) is skipped."""
    assert read_request_log("1 90\n2 90\n3 91\n4") == {1: 90, 2: 90, 3: 91}


@pytest.mark.parametrize(
    ("status", "apps", "jobs", "settled"),
    [
        ("generation 2 (pid 93) serving", {93: 1}, False, True),
        ("generation 2 (pid 93) serving", {93: 1, 94: 2}, False, False),
        ("generation 2 (pid 93) serving", {93: 1}, True, False),
        ("generation 2 (pid 93) serving; generation 1 (pid 88) draining", {93: 1}, False, False),
        ("upgrading: starting generation 3", {93: 1}, False, False),
        (
            "upgrade failed: generation 3 (pid 95) failed: no READY=1 within 4s;"
            " generation 2 (pid 93) serving",
            {93: 1},
            False,
            True,
        ),
    ],
    ids=["serving", "two-processes", "job-queued", "draining", "upgrading", "after-failure"],
)
def test_state_settled(status: str, apps: dict[int, int], jobs: bool, settled: bool) -> None:
    """Settled: running, one generation serving and alone in the unit, no job."""
    state = State(main=1, restarts=0, sub="running", status=status, jobs=jobs, apps=apps)
    assert state.settled() is settled
