"""``run --workers N``: the machine with several workers per generation, and the pure helpers
(``--workers auto``, the crash backoff, the option parsers)."""

from __future__ import annotations

import dataclasses
import signal
from pathlib import Path
from typing import TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sdactivate.supervisor import settings as run_settings
from sdactivate.supervisor.machine import (
    UNREADY_GRACE,
    Action,
    ChildExited,
    ChildReady,
    Deadline,
    Event,
    Exit,
    ExtendTimeout,
    GenState,
    HealthResult,
    Kill,
    Machine,
    NotifyManager,
    Policy,
    Promote,
    ReloadRequested,
    Report,
    SetTimer,
    Signal,
    Spawn,
    Spawned,
    SpawnFailed,
    Start,
    StopRequested,
    WatchdogPing,
    WorkerState,
)
from sdactivate.supervisor.workers import (
    BACKOFF_MAX,
    STABLE_AFTER,
    backoff_delay,
    cgroup_cpu_limit,
    usable_cpus,
)

A = TypeVar("A")
TERM = signal.SIGTERM


def of(actions: list[Action], kind: type[A]) -> list[A]:
    return [a for a in actions if isinstance(a, kind)]


def statuses(actions: list[Action]) -> list[str]:
    return [
        dict(a.fields)["STATUS"] for a in of(actions, NotifyManager) if "STATUS" in dict(a.fields)
    ]


def readies(actions: list[Action]) -> int:
    return sum(dict(a.fields).get("READY") == "1" for a in of(actions, NotifyManager))


def pid(gen: int, worker: int) -> int:
    return 100 * gen + worker


class Driver:
    """Feeds events; answers each Spawn with Spawned(pid 100 * gen + worker) like the runner."""

    def __init__(self, workers: int = 4, **policy: object) -> None:
        self.m = Machine(Policy(workers=workers, **policy))  # type: ignore[arg-type]
        self.log: list[Action] = []

    def __call__(self, event: Event) -> list[Action]:
        out = self.m.handle(event)
        self.log += out
        for a in list(out):
            if isinstance(a, Spawn):
                more = self.m.handle(Spawned(a.gen, pid(a.gen, a.worker), a.worker))
                out += more
                self.log += more
        return out

    def ready_all(self, gen: int) -> list[Action]:
        """READY=1 from every worker of ``gen`` as it starts (it may start in batches)."""
        out: list[Action] = []
        done: set[int] = set()
        while True:
            g = self.m.gens[gen]
            todo = [i for i, w in g.workers.items() if w.state is WorkerState.STARTING]
            todo = [i for i in todo if i not in done]
            if not todo:
                return out
            for i in todo:
                done.add(i)
                out += self(ChildReady(gen, i))

    def serving(self) -> Driver:
        self(Start())
        self.ready_all(1)
        assert self.m.active == 1
        return self


def test_first_generation_starts_n_workers_and_is_ready_once_all_are() -> None:
    """READY=1 reaches the manager only once all N first workers sent READY=1."""
    d = Driver(4)
    out = d(Start())
    assert of(out, Spawn) == [Spawn(1, False, i) for i in range(4)]
    for i in range(3):
        assert readies(d(ChildReady(1, i))) == 0
    out = d(ChildReady(1, 3))
    assert readies(out) == 1
    assert "4/4 ready, generation 1" in statuses(out)


def test_repeated_ready_of_one_worker_does_not_count_twice() -> None:
    """Four READY=1 from one worker are one READY worker, not a full generation."""
    d = Driver(4)
    d(Start())
    for _ in range(4):
        d(ChildReady(1, 0))
    assert d.m.active is None and d.m.gens[1].ready() == 1


def test_start_up_is_bounded_by_max_starting_at_lowered_priority() -> None:
    """At most K workers start at once; a new generation's are lowered while one serves."""
    d = Driver(4, max_starting=2)
    out = d(Start())
    assert of(out, Spawn) == [Spawn(1, False, 0), Spawn(1, False, 1)]
    assert of(d(ChildReady(1, 0)), Spawn) == [Spawn(1, False, 2)]
    out = d(ChildReady(1, 1))
    assert of(out, Spawn) == [Spawn(1, False, 3)]
    assert SetTimer(("ready", 1), 60.0) in out  # each worker gets ready_timeout from its start
    d(ChildReady(1, 2))
    d(ChildReady(1, 3))
    assert d.m.active == 1
    out = d(ReloadRequested(5))
    assert of(out, Spawn) == [Spawn(2, True, 0), Spawn(2, True, 1)]


def test_handover_stops_old_only_once_all_new_are_ready() -> None:
    """Capacity never drops: the old generation is signalled only when all N new are READY."""
    d = Driver(4, drain_timeout=5.0).serving()
    d(ReloadRequested(7))
    for i in range(3):
        assert of(d(ChildReady(2, i)), Signal) == []
    out = d(ChildReady(2, 3))
    assert of(out, Signal) == [Signal(1, TERM)]
    assert SetTimer(("drain", 1), 5.0) in out and Promote(2) in out
    (report,) = of(out, Report)
    assert report.ok and report.generation == 2 and report.pid == pid(2, 0)
    assert "4/4 ready, generation 2; generation 1 (4 workers) draining" in report.message
    for i in range(4):
        d(ChildExited(1, 0, i))
    assert d.m.gens.keys() == {2} and d.m.upgrades_ok == 1


def test_health_check_runs_once_all_are_ready() -> None:
    """With --health, the check starts only after the N-th READY=1."""
    d = Driver(2, health=True)
    d(Start())
    d(ChildReady(1, 0))
    assert d.m.gens[1].state is GenState.STARTING
    d(ChildReady(1, 1))
    assert d.m.gens[1].state is GenState.CHECKING
    d(HealthResult(1, True))
    assert d.m.active == 1


@pytest.mark.parametrize(
    ("fault", "words"),
    [
        (ChildExited(2, 3, 3), "worker 3 (pid 203) exited with status 3 before READY=1"),
        (Deadline(("ready", 2)), "worker 3 sent no READY=1 within 60s"),
        (SpawnFailed(2, "no such file", 3), "worker 3 (pid 203) could not start: no such file"),
    ],
    ids=["exits-at-start-up", "never-ready", "cannot-exec"],
)
def test_worker_3_of_4_fails_all_new_stopped_old_untouched(fault: Event, words: str) -> None:
    """All or nothing: worker 3 fails; every new worker is stopped, the old keeps serving."""
    d = Driver(4).serving()
    d(ReloadRequested(9))
    for i in range(3):
        d(ChildReady(2, i))
    before = len(d.log)
    out = d(fault)
    assert of(out, Signal) == [Signal(2, TERM)]  # the whole new generation
    assert SetTimer(("drain", 2), UNREADY_GRACE) in out
    assert all(a.gen != 1 for a in of(d.log[before:], Signal) + of(d.log[before:], Kill))
    (report,) = of(out, Report)
    assert not report.ok and report.generation == 1 and words in report.message
    assert "upgrade failed: generation 2 (4 workers) failed" in report.message
    assert readies(out) == 1 and d.m.active == 1 and d.m.upgrades_failed == 1
    for i in range(4):
        d(ChildExited(2, -15, i))
    assert d.m.gens.keys() == {1} and d.m.gens[1].ready() == 4


def test_one_serving_worker_dies_and_is_replaced_alone() -> None:
    """One crash is one replacement: same generation, same index, the others untouched."""
    d = Driver(4).serving()
    out = d(ChildExited(1, -9, 2))
    assert of(out, Spawn) == [Spawn(1, True, 2)]  # lowered: the other three serve
    assert of(out, Signal) == [] and d.m.active == 1
    assert "3/4 ready, generation 1" in statuses(out)
    out = d(ChildReady(1, 2))
    assert Promote(1, 2) in out and SetTimer(("stable", 1, 2), STABLE_AFTER) in out
    assert "4/4 ready, generation 1" in statuses(out)
    assert d.m.gens[1].workers[2].restarts == 1 and d.m._next == 2


def test_crash_loop_backs_off_and_shows_in_status() -> None:
    """Repeated crashes of one index wait longer each time; STATUS= says so."""
    d = Driver(4).serving()
    d(ChildExited(1, 1, 0))  # first crash: at once
    d(ChildReady(1, 0))
    out = d(ChildExited(1, 1, 0))
    assert of(out, Spawn) == [] and SetTimer(("respawn", 1, 0), 0.5) in out
    assert any("worker 0 crashed 2 times in a row, restarting in 0.5s" in s for s in statuses(out))
    out = d(Deadline(("respawn", 1, 0)))
    assert of(out, Spawn) == [Spawn(1, True, 0)]
    out = d(ChildExited(1, 1, 0))  # the replacement fails before READY=1: 3rd crash
    assert SetTimer(("respawn", 1, 0), 1.0) in out
    assert d.m.gens[1].ready() == 3 and of(out, Exit) == []


def test_stable_replacement_resets_the_backoff() -> None:
    """A replacement serving STABLE_AFTER seconds makes the next crash a first one again."""
    d = Driver(2).serving()
    d(ChildExited(1, 1, 1))
    d(ChildReady(1, 1))
    d(Deadline(("stable", 1, 1)))
    out = d(ChildExited(1, 1, 1))
    assert of(out, Spawn) == [Spawn(1, True, 1)]


def test_replacement_that_never_gets_ready_is_stopped_then_retried() -> None:
    """A replacement missing ready_timeout gets the stop signal; once reaped it backs off."""
    d = Driver(2).serving()
    d(ChildExited(1, 1, 1))
    out = d(Deadline(("ready", 1, 1)))
    assert of(out, Signal) == [Signal(1, TERM, 1)]
    out = d(Deadline(("drain", 1, 1)))
    assert of(out, Kill) == [Kill(1, 1)]
    out = d(ChildExited(1, -9, 1))
    assert SetTimer(("respawn", 1, 1), 0.5) in out


def test_nothing_left_to_serve_stops_the_supervisor() -> None:
    """All workers dead and a replacement fails: exit status 1, like one worker's."""
    d = Driver(2).serving()
    d(ChildExited(1, 1, 0))
    d(ChildExited(1, 1, 1))
    out = d(ChildExited(1, 1, 0))  # replacement 0 fails; replacement 1 still starting
    assert of(out, Exit) == [] and d.m.active == 1
    out = d(ChildExited(1, 1, 1))
    assert any("nothing left to serve" in s for s in statuses(out))
    assert of(out, Exit) == [Exit(1)]


def test_crash_during_handover_is_replaced_in_the_old_generation() -> None:
    """A serving worker that dies while a handover runs is replaced; the handover goes on."""
    d = Driver(2, max_starting=4).serving()
    d(ReloadRequested(1))
    out = d(ChildExited(1, -9, 0))
    assert of(out, Spawn) == [Spawn(1, True, 0)]
    d.ready_all(2)
    assert d.m.active == 2 and d.m.gens[1].state is GenState.DRAINING


def test_watchdog_passes_once_every_ready_worker_pinged() -> None:
    """One hung worker stops WATCHDOG=1 reaching the manager."""
    d = Driver(3).serving()
    assert of(d(WatchdogPing(1, "1", 0)), NotifyManager) == []
    assert of(d(WatchdogPing(1, "1", 0)), NotifyManager) == []
    assert of(d(WatchdogPing(1, "1", 1)), NotifyManager) == []
    assert of(d(WatchdogPing(1, "1", 2)), NotifyManager) == [NotifyManager((("WATCHDOG", "1"),))]
    assert of(d(WatchdogPing(1, "1", 2)), NotifyManager) == []


def test_stop_signals_every_generation_and_exits() -> None:
    """Stop: every worker gets the stop signal; exit 0 once all are reaped."""
    d = Driver(2).serving()
    out = d(StopRequested())
    assert of(out, Signal) == [Signal(1, TERM)]
    assert of(d(ChildExited(1, 0, 0)), Exit) == []
    assert of(d(ChildExited(1, 0, 1)), Exit) == [Exit(0)]


class _AllReady:
    """Not an event: READY=1 from every starting worker of the newest generation."""

    def __repr__(self) -> str:
        return "AllReady"


# Events are drawn with a generation *slot* (0..3), turned into a real generation when
# applied (:func:`_aim`): mostly the generations alive then, so the sequences reach the
# interesting states (a full serving generation and a starting one) instead of stale numbers.
_SLOT = st.integers(0, 3)
_WORKER = st.integers(0, 3)
_KINDS = st.sampled_from(["ready", "health", "drain", "lowered", "respawn", "stable"])
_EVENT: st.SearchStrategy[Event | _AllReady] = st.one_of(
    st.just(_AllReady()),
    st.builds(ReloadRequested, st.one_of(st.none(), st.integers(0, 20))),
    st.builds(ChildReady, _SLOT, _WORKER),
    st.builds(ChildExited, _SLOT, st.sampled_from([0, 1, -9, -15]), _WORKER),
    st.builds(SpawnFailed, _SLOT, st.just("x"), _WORKER),
    st.builds(Deadline, st.tuples(_KINDS, _SLOT)),
    st.builds(Deadline, st.tuples(_KINDS, _SLOT, _WORKER)),
    st.builds(HealthResult, _SLOT, st.booleans()),
    st.builds(WatchdogPing, _SLOT, st.sampled_from(["1", "trigger"]), _WORKER),
    st.builds(ExtendTimeout, _SLOT, st.integers(0, 10**8), _WORKER),
    st.just(StopRequested()),
)


def _aim(ev: Event | _AllReady, d: Driver, workers: int) -> Event | _AllReady:
    """The drawn event with its slot made a generation (alive ones first) and its worker
    index within range."""
    choices = [*d.m.gens, d.m._next - 1, 1]
    if isinstance(ev, Deadline):
        key = ev.key
        gen = choices[key[1] % len(choices)]
        if len(key) == 3:
            return Deadline((key[0], gen, key[2] % workers))
        return Deadline((key[0], gen))
    if isinstance(ev, ChildReady | ChildExited | SpawnFailed | WatchdogPing | ExtendTimeout):
        return dataclasses.replace(
            ev, gen=choices[ev.gen % len(choices)], worker=ev.worker % workers
        )
    if isinstance(ev, HealthResult):
        return dataclasses.replace(ev, gen=choices[ev.gen % len(choices)])
    return ev


@settings(max_examples=800, deadline=None)
@given(st.data(), st.booleans(), st.integers(1, 4), st.integers(1, 4))
def test_invariants_hold_for_any_event_order(
    data: st.DataObject, health: bool, workers: int, max_starting: int
) -> None:
    """Any event sequence keeps the five handover properties (Machine.check after each)."""
    d = Driver(workers, health=health, max_starting=max_starting)
    d(Start())
    exited = False
    events: list[Event | _AllReady] = []
    for drawn in data.draw(st.lists(_EVENT, min_size=10, max_size=80)):
        ev = _aim(drawn, d, workers)
        events.append(ev)
        active = d.m.active
        full = active is not None and d.m.gens[active].ready() == workers
        if isinstance(ev, _AllReady):
            if not d.m.gens:
                continue
            out = d.ready_all(max(d.m.gens))
        else:
            out = d(ev)  # Machine.check() and the action rules run after every event
        spawns = of(out, Spawn)
        exited |= bool(of(out, Exit))
        if exited:
            assert not spawns
        # capacity: a full serving generation is stopped only for a full successor, or on stop
        if full and any(isinstance(a, Signal) and a.gen == active for a in out):
            new = d.m.gens.get(d.m.active) if d.m.active is not None else None
            assert d.m.phase.value in ("stopping", "done") or (
                new is not None and new.ready() == workers
            )
    answered = [r.request for r in of(d.log, Report)]
    asked = [e.request for e in events if isinstance(e, ReloadRequested) and e.request is not None]
    for r in set(answered):
        assert answered.count(r) <= asked.count(r)


# --- pure helpers ------------------------------------------------------------------------
def test_backoff_delay() -> None:
    """First crash: at once; then 0.5, 1, 2 ... capped at BACKOFF_MAX."""
    assert [backoff_delay(c) for c in range(1, 6)] == [0.0, 0.5, 1.0, 2.0, 4.0]
    assert backoff_delay(1000) == BACKOFF_MAX


def _cgroup(tmp_path: Path, path: str, limits: dict[str, str]) -> tuple[Path, Path]:
    proc = tmp_path / "cgroup"
    proc.write_text(f"0::{path}\n")
    mount = tmp_path / "fs"
    for rel, text in limits.items():
        d = mount / rel if rel else mount
        d.mkdir(parents=True, exist_ok=True)
        (d / "cpu.max").write_text(text)
    return proc, mount


@pytest.mark.parametrize(
    ("limits", "affinity", "expected"),
    [
        ({}, {0, 1, 2, 3}, 4),
        ({"a.slice/b.service": "max 100000\n"}, {0, 1, 2, 3}, 4),
        ({"a.slice/b.service": "150000 100000\n"}, {0, 1, 2, 3}, 2),
        ({"a.slice": "100000 100000\n", "a.slice/b.service": "max 100000"}, {0, 1, 2}, 1),
        ({"a.slice": "300000 100000", "a.slice/b.service": "200000 100000"}, {0, 1, 2}, 2),
        ({"a.slice/b.service": "50000 100000"}, {5}, 1),
        ({"a.slice/b.service": "800000 100000"}, {0, 1}, 2),
        ({"a.slice/b.service": "garbage"}, {0, 1}, 2),
    ],
    ids=["no-files", "max", "1.5-cpus", "parent-quota", "tightest", "half", "affinity", "bad"],
)
def test_usable_cpus(
    tmp_path: Path, limits: dict[str, str], affinity: set[int], expected: int
) -> None:
    """--workers auto: affinity, capped by the tightest cgroup v2 cpu.max up the tree."""
    proc, mount = _cgroup(tmp_path, "/a.slice/b.service", limits)
    got = usable_cpus(affinity=lambda: affinity, cgroup_file=str(proc), mount=str(mount))
    assert got == expected


def test_cgroup_cpu_limit_without_v2_line(tmp_path: Path) -> None:
    """A cgroup v1 /proc/self/cgroup (no 0:: line) means no quota we can read."""
    proc = tmp_path / "cgroup"
    proc.write_text("4:cpu,cpuacct:/x\n")
    assert cgroup_cpu_limit(str(proc), str(tmp_path)) is None
    assert cgroup_cpu_limit(str(tmp_path / "missing"), str(tmp_path)) is None


@pytest.mark.parametrize(
    ("text", "value"), [("4", 4), ("auto", "auto"), (" AUTO ", "auto"), ("1", 1)]
)
def test_parse_workers(text: str, value: object) -> None:
    """--workers N|auto."""
    assert run_settings.parse_workers(text) == value


@pytest.mark.parametrize("text", ["0", "-1", "x", "1.5", "100000", "", "٣"])
def test_parse_workers_refuses(text: str) -> None:
    """A bad --workers / --max-starting names the value."""
    with pytest.raises(ValueError, match="--workers must be a whole number"):
        run_settings.parse_workers(text)
    with pytest.raises(ValueError, match="--max-starting"):
        run_settings.parse_max_starting(text)


def test_policy_validates_workers() -> None:
    """A Policy with 0 workers or 0 max_starting cannot be built."""
    with pytest.raises(ValueError, match="workers"):
        Policy(workers=0)
    with pytest.raises(ValueError, match="max_starting"):
        Policy(workers=2, max_starting=0)
