"""The supervisor's state machine, driven with plain events (no processes, no clocks)."""

from __future__ import annotations

import signal
from typing import TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sdactivate.supervisor.machine import (
    UNREADY_GRACE,
    Action,
    CancelHealth,
    CancelTimer,
    ChildExited,
    ChildReady,
    Deadline,
    Event,
    Exit,
    ExtendTimeout,
    ForwardSignal,
    GenState,
    HealthResult,
    Kill,
    Log,
    Machine,
    NotifyManager,
    Policy,
    Promote,
    ReloadRequested,
    Report,
    RunHealth,
    SetTimer,
    Signal,
    Spawn,
    Spawned,
    SpawnFailed,
    Start,
    StopRequested,
    WatchdogPing,
    describe_status,
)

A = TypeVar("A")
TERM = signal.SIGTERM


def of(actions: list[Action], kind: type[A]) -> list[A]:
    return [a for a in actions if isinstance(a, kind)]


def fields(actions: list[Action]) -> list[dict[str, str]]:
    return [dict(a.fields) for a in of(actions, NotifyManager)]


class Driver:
    """Feeds events; answers Spawn with Spawned(pid = 100 * gen) like the runner does."""

    def __init__(self, **policy: object) -> None:
        self.m = Machine(Policy(**policy))  # type: ignore[arg-type]
        self.log: list[Action] = []

    def __call__(self, event: Event) -> list[Action]:
        out = self.m.handle(event)
        self.log += out
        for a in list(out):
            if isinstance(a, Spawn):
                more = self.m.handle(Spawned(a.gen, 100 * a.gen))
                out += more
                self.log += more
        return out

    def serving(self) -> Driver:
        self(Start())
        self(ChildReady(1))
        assert self.m.active == 1
        return self

    def serving_with_health(self) -> Driver:
        self(Start())
        self(ChildReady(1))
        self(HealthResult(1, True))
        assert self.m.active == 1
        return self


def test_first_generation_ready_tells_manager_ready() -> None:
    """READY=1 goes to the manager only once the first child sent READY=1."""
    d = Driver()
    out = d(Start())
    assert of(out, Spawn) == [Spawn(1)]
    assert SetTimer(("ready", 1), 60.0) in out
    assert not any("READY" in f for f in fields(out))
    out = d(ChildReady(1))
    assert any(f.get("READY") == "1" and "pid 100" in f["STATUS"] for f in fields(out))


def test_handover_order_new_ready_then_old_signalled() -> None:
    """The old generation gets its stop signal only after the new one is READY."""
    d = Driver(drain_timeout=5.0).serving()
    out = d(ReloadRequested(7))
    assert of(out, Spawn) == [Spawn(2, lowered=True)]
    f = fields(out)
    assert f[0]["RELOADING"] == "1" and of(out, NotifyManager)[0].reloading
    assert of(out, Signal) == []
    out = d(ChildReady(2))
    assert of(out, Signal) == [Signal(1, TERM)]
    assert SetTimer(("drain", 1), 5.0) in out
    assert any(f.get("READY") == "1" for f in fields(out))
    (report,) = of(out, Report)
    assert (report.request, report.ok, report.generation, report.pid) == (7, True, 2, 200)
    out = d(ChildExited(1, 0))
    assert d.m.gens.keys() == {2} and of(out, Kill) == []


def test_f1_new_exits_before_ready_old_keeps_serving() -> None:
    """F1: a new generation that exits before READY fails the reload; old never signalled."""
    d = Driver().serving()
    d(ReloadRequested(1))
    out = d(ChildExited(2, 1))
    assert of(out, Signal) == [] and of(out, Kill) == []
    (report,) = of(out, Report)
    assert not report.ok and report.generation == 1 and report.pid == 100
    assert "exited with status 1 before READY=1" in report.message
    assert any(f.get("READY") == "1" and "upgrade failed" in f["STATUS"] for f in fields(out))
    assert d.m.active == 1 and d.m.upgrades_failed == 1
    assert of(d.log, Signal) == []


def test_f1_new_cannot_exec() -> None:
    """F1: a command that cannot be executed fails the reload the same way."""
    d = Driver().serving()
    d.m.handle(ReloadRequested(3))
    out = d.m.handle(SpawnFailed(2, "not found"))
    (report,) = of(out, Report)
    assert not report.ok and "could not start: not found" in report.message
    assert d.m.gens.keys() == {1}


@pytest.mark.parametrize(
    ("drain_timeout", "grace"), [(30.0, UNREADY_GRACE), (1.5, 1.5)], ids=["grace", "capped"]
)
def test_f2_new_never_ready_gets_the_stop_signal_then_kill(
    drain_timeout: float, grace: float
) -> None:
    """F2: no READY within ready_timeout: the reload fails at once and the old one keeps
    serving; the new one, which may have accepted connections, gets the stop signal, and
    SIGKILL only after a short grace (at most drain_timeout), exactly once."""
    d = Driver(ready_timeout=2.0, drain_timeout=drain_timeout).serving()
    d(ReloadRequested(5))
    out = d(Deadline(("ready", 2)))
    assert of(out, Signal) == [Signal(2, TERM)] and of(out, Kill) == []
    assert SetTimer(("drain", 2), grace) in out
    (report,) = of(out, Report)
    assert not report.ok and "no READY=1 within 2s" in report.message
    assert d.m.active == 1 and d.m.gens[2].state is GenState.FAILED
    out = d(Deadline(("drain", 2)))
    assert of(out, Kill) == [Kill(2)]
    assert f"still running {grace:g}s after the stop signal" in of(out, Log)[0].message
    assert of(d(Deadline(("drain", 2))), Kill) == []
    out = d(ChildExited(2, -9))
    assert d.m.gens.keys() == {1} and of(out, Report) == []


def test_f2_never_ready_generation_that_drains_is_not_killed() -> None:
    """F2: a never-ready generation that exits on the stop signal: its timer goes, no SIGKILL,
    and a queued reload starts then."""
    d = Driver(ready_timeout=2.0).serving()
    d(ReloadRequested(5))
    d(Deadline(("ready", 2)))
    d(ReloadRequested(6))  # queued: two generations are alive
    out = d(ChildExited(2, 0))
    assert CancelTimer(("drain", 2)) in out and of(out, Kill) == []
    assert of(out, Spawn) == [Spawn(3, lowered=True)]


def test_f2_first_generation_never_ready_stops_supervisor_with_1() -> None:
    """Nothing to fall back to: the first generation's failure ends the supervisor (exit 1),
    after the stop signal and the grace."""
    d = Driver()
    d(Start())
    out = d(Deadline(("ready", 1)))
    assert of(out, Signal) == [Signal(1, TERM)] and of(out, Kill) == []
    assert SetTimer(("drain", 1), UNREADY_GRACE) in out
    assert any(f.get("STOPPING") == "1" for f in fields(out))
    assert of(d(Deadline(("drain", 1))), Kill) == [Kill(1)]
    assert of(d(ChildExited(1, -9)), Exit) == [Exit(1)]


def test_f3_crash_right_after_ready_is_replaced() -> None:
    """F3: the new generation dies after taking over: a replacement starts at once."""
    d = Driver().serving()
    d(ReloadRequested(None))
    d(ChildReady(2))
    out = d(ChildExited(2, -11))
    assert of(out, Spawn) == [Spawn(3)]  # nothing serves: not lowered
    assert "killed by SIGSEGV" in fields(out)[-1]["STATUS"]
    d(ChildExited(1, 0))  # the drained old one leaves meanwhile
    out = d(ChildReady(3))
    assert d.m.active == 3 and of(out, Signal) == []


def test_f3_replacement_that_fails_stops_supervisor() -> None:
    """F3: if the replacement also fails before READY, the supervisor exits 1."""
    d = Driver().serving()
    d(ChildExited(1, 3))
    out = d(ChildExited(2, 3))
    assert of(out, Exit) == [Exit(1)]


def test_only_a_generation_started_beside_a_serving_one_is_lowered() -> None:
    """The first generation starts at full priority; an upgrade's new one starts lowered for
    at most startup_grace, then gets the supervisor's priority although not ready yet."""
    d = Driver(startup_grace=0.5)
    out = d(Start())
    assert of(out, Spawn) == [Spawn(1, lowered=False)]
    assert not any(t.key[0] == "lowered" for t in of(out, SetTimer))
    d(ChildReady(1))
    out = d(ReloadRequested(1))
    assert of(out, Spawn) == [Spawn(2, lowered=True)] and SetTimer(("lowered", 2), 0.5) in out
    out = d(Deadline(("lowered", 2)))
    assert of(out, Promote) == [Promote(2)] and of(out, Kill) == [] and of(out, Report) == []
    assert "not ready 0.5s after its start" in next(a.message for a in out if hasattr(a, "message"))
    assert d.m.gens[2].state is GenState.STARTING and d.m.active == 1  # not a take-over
    out = d(ChildReady(2))
    assert of(out, Promote) == [Promote(2)] and CancelTimer(("lowered", 2)) in out
    assert d.m.active == 2


def test_failed_or_stopped_lowered_generation_cancels_its_timer() -> None:
    """A lowered generation that fails, or is stopped with the supervisor, drops its timer;
    a late one changes nothing."""
    d = Driver().serving()
    d(ReloadRequested(None))
    out = d(ChildExited(2, 3))
    assert CancelTimer(("lowered", 2)) in out
    assert d(Deadline(("lowered", 2))) == []
    d(ReloadRequested(None))
    out = d(StopRequested())
    assert CancelTimer(("lowered", 3)) in out
    assert of(d(Deadline(("lowered", 3))), Promote) == []


def test_f4_old_ignoring_stop_signal_is_killed_at_drain_deadline() -> None:
    """F4: the old generation gets SIGKILL when drain_timeout passes, exactly once."""
    d = Driver(drain_timeout=1.5).serving()
    d(ReloadRequested(None))
    d(ChildReady(2))
    out = d(Deadline(("drain", 1)))
    assert of(out, Kill) == [Kill(1)]
    assert "1.5s" in next(a.message for a in out if hasattr(a, "message"))
    assert of(d(Deadline(("drain", 1))), Kill) == []
    d(ChildExited(1, -9))
    assert d.m.gens.keys() == {2}


def test_f12_second_reload_is_queued_and_coalesced() -> None:
    """F12: reloads during an upgrade coalesce into exactly one more, after the old drains."""
    d = Driver().serving()
    d(ReloadRequested(1))
    assert of(d(ReloadRequested(2)), Spawn) == []
    assert of(d(ReloadRequested(None)), Spawn) == []
    assert of(d(ReloadRequested(3)), Spawn) == []
    out = d(ChildReady(2))
    assert [r.request for r in of(out, Report)] == [1]
    assert of(out, Spawn) == []  # generation 1 is still draining
    out = d(ChildExited(1, 0))
    assert of(out, Spawn) == [Spawn(3, lowered=True)]
    out = d(ChildReady(3))
    assert [(r.request, r.ok, r.generation) for r in of(out, Report)] == [
        (2, True, 3),
        (3, True, 3),
    ]
    d(ChildExited(2, 0))
    assert of(d.log, Spawn) == [Spawn(1), Spawn(2, True), Spawn(3, True)]


def test_f12_reload_during_first_start_runs_after_ready() -> None:
    """A reload before the first generation is ready waits for it."""
    d = Driver()
    d(Start())
    assert of(d(ReloadRequested(4)), Spawn) == []
    out = d(ChildReady(1))
    assert of(out, Spawn) == [Spawn(2, lowered=True)]


def test_queued_reload_after_failed_upgrade_tries_again() -> None:
    """A reload queued behind a failing upgrade gets its own attempt."""
    d = Driver().serving()
    d(ReloadRequested(1))
    d(ReloadRequested(2))
    out = d(ChildExited(2, 1))
    assert [(r.request, r.ok) for r in of(out, Report)] == [(1, False)]
    assert of(out, Spawn) == [Spawn(3, lowered=True)]
    out = d(ChildReady(3))
    assert [(r.request, r.ok) for r in of(out, Report)] == [(2, True)]


def test_health_check_gates_take_over() -> None:
    """With a health check the old one is signalled only after the check passes."""
    d = Driver(health=True, health_timeout=3.0).serving_with_health()
    d(ReloadRequested(1))
    out = d(ChildReady(2))
    assert of(out, RunHealth) == [RunHealth(2)] and of(out, Signal) == []
    out = d(HealthResult(2, True))
    assert of(out, Signal) == [Signal(1, TERM)]


@pytest.mark.parametrize(
    ("event", "words"),
    [
        (HealthResult(2, False, "HTTP 500"), "health check failed: HTTP 500"),
        (Deadline(("health", 2)), "health check did not finish within 3s"),
        (ChildExited(2, 1), "during its health check"),
    ],
    ids=["fails", "times-out", "dies-during-check"],
)
def test_health_failure_fails_upgrade(event: Event, words: str) -> None:
    """A failed, hung or interrupted check kills the new generation; the old keeps serving."""
    d = Driver(health=True, health_timeout=3.0).serving_with_health()
    d(ReloadRequested(1))
    d(ChildReady(2))
    out = d(event)
    (report,) = of(out, Report)
    assert not report.ok and words in report.message and report.generation == 1
    assert Signal(1, TERM) not in out
    if not isinstance(event, ChildExited):  # it may hold connections: stop it gracefully
        assert of(out, Signal) == [Signal(2, TERM)] and SetTimer(("drain", 2), 30.0) in out
        assert of(d(Deadline(("drain", 2))), Kill) == [Kill(2)]
    if isinstance(event, Deadline):
        assert CancelHealth(2) in out


def test_stop_signals_everyone_and_exits_zero() -> None:
    """SIGTERM: STOPPING=1, stop signal to all, SIGKILL at the deadline, exit 0 at the end."""
    d = Driver(drain_timeout=2.0, stop_signal=signal.SIGINT).serving()
    d(ReloadRequested(9))
    out = d(StopRequested())
    assert fields(out)[0]["STOPPING"] == "1"
    assert sorted(of(out, Signal), key=lambda s: s.gen) == [
        Signal(1, signal.SIGINT),
        Signal(2, signal.SIGINT),
    ]
    (report,) = of(out, Report)
    assert not report.ok and "stopping" in report.message
    assert of(d(Deadline(("drain", 2))), Kill) == [Kill(2)]
    assert of(d(ChildExited(1, 0)), Exit) == []
    assert of(d(ChildExited(2, -9)), Exit) == [Exit(0)]
    assert of(d(ReloadRequested(10)), Report)[0].ok is False


def test_watchdog_pings_pass_through_only_from_serving_generation() -> None:
    """WATCHDOG=1 from the serving generation is forwarded; from a starting one dropped."""
    d = Driver().serving()
    assert fields(d(WatchdogPing(1))) == [{"WATCHDOG": "1"}]
    d(ReloadRequested(None))
    assert fields(d(WatchdogPing(2))) == []
    d(ChildReady(2))
    assert fields(d(WatchdogPing(1))) == []
    assert fields(d(WatchdogPing(2, "trigger"))) == [{"WATCHDOG": "trigger"}]


def test_extend_timeout_from_a_starting_generation() -> None:
    """EXTEND_TIMEOUT_USEC from a starting child re-arms its ready timer and is passed on."""
    d = Driver(ready_timeout=2.0).serving()
    d(ReloadRequested(None))
    out = d(ExtendTimeout(2, 30_000_000))
    assert SetTimer(("ready", 2), 30.0) in out
    assert fields(out) == [{"EXTEND_TIMEOUT_USEC": "30000000"}]
    assert d(ExtendTimeout(1, 5_000_000)) == []  # the serving one has no start timeout


def test_forward_signal_to_serving() -> None:
    """SIGUSR1 to the supervisor reaches the serving generation."""
    d = Driver().serving()
    assert of(d(ForwardSignal(signal.SIGUSR1)), Signal) == [Signal(1, signal.SIGUSR1)]


def test_late_ready_and_unknown_generations_are_ignored() -> None:
    """Repeated READY=1 and events for reaped generations change nothing."""
    d = Driver().serving()
    assert d(ChildReady(1)) == []
    assert d(ChildExited(42, 0)) == []
    assert d(Deadline(("ready", 1))) == []


def test_describe_status() -> None:
    """Exit codes and signals read as words."""
    assert describe_status(0) == "exited with status 0"
    assert describe_status(-9) == "killed by SIGKILL"


def test_policy_validates() -> None:
    """Non-positive timeouts are rejected when the policy is built."""
    with pytest.raises(ValueError, match="drain_timeout"):
        Policy(drain_timeout=0)


@st.composite
def _events(draw: st.DrawFn) -> list[Event]:
    gen = st.integers(1, 6)
    one = st.one_of(
        st.builds(ReloadRequested, st.one_of(st.none(), st.integers(0, 50))),
        st.builds(ChildReady, gen),
        st.builds(ChildExited, gen, st.sampled_from([0, 1, -9, -15])),
        st.builds(
            Deadline, st.tuples(st.sampled_from(["ready", "health", "drain", "lowered"]), gen)
        ),
        st.builds(HealthResult, gen, st.booleans()),
        st.builds(WatchdogPing, gen),
        st.builds(ExtendTimeout, gen, st.integers(0, 10**8)),
        st.just(StopRequested()),
    )
    return draw(st.lists(one, max_size=40))


@settings(max_examples=300, deadline=None)
@given(_events(), st.booleans())
def test_invariants_hold_for_any_event_order(events: list[Event], health: bool) -> None:
    """Any event sequence keeps <=2 generations, <=1 not ready, and one upgrade at a time."""
    d = Driver(health=health)
    d(Start())
    exited = False
    for ev in events:
        out = d(ev)  # Machine.check() asserts the invariants after every event
        spawns = of(out, Spawn)
        assert len(spawns) <= 1
        exited |= bool(of(out, Exit))
        if exited:
            assert not spawns
    # every control request is answered at most once
    answered = [r.request for r in of(d.log, Report)]
    asked = [e.request for e in events if isinstance(e, ReloadRequested) and e.request is not None]
    for r in set(answered):
        assert answered.count(r) <= asked.count(r)
