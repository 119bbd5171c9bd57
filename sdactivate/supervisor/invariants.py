"""The supervisor machine's invariants (listed in :mod:`.machine`'s docstring) as assertions:
:func:`check_state` on the state after every event, :func:`check_actions` on what one event
did. :meth:`.machine.Machine.handle` runs both, so every test that drives the machine,
property tests included, checks them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from .events import Action, ChildExited, Event, ForwardSignal, Kill, Signal, Spawn, SpawnFailed
from .state import Generation, GenState, Phase, WorkerState


class _Policy(Protocol):
    @property
    def start_limit(self) -> int: ...


class Machine(Protocol):
    """What the checks read of :class:`.machine.Machine` (no import cycle)."""

    @property
    def policy(self) -> _Policy: ...
    @property
    def phase(self) -> Phase: ...
    @property
    def gens(self) -> dict[int, Generation]: ...
    @property
    def active(self) -> int | None: ...
    @property
    def candidate(self) -> int | None: ...


__all__ = ["Before", "check_actions", "check_state", "snapshot"]


@dataclass(frozen=True)
class Before:
    """What :func:`check_actions` compares against, taken before the event."""

    active: int | None  # the serving generation
    alive: dict[int, set[int]]  # worker indices alive, by generation
    ready: set[int]  # the serving generation's READY workers


def snapshot(m: Machine) -> Before:
    g = m.gens.get(m.active) if m.active is not None else None
    ready = {w.index for w in g.workers.values() if w.state is WorkerState.READY} if g else set()
    return Before(m.active, {n: set(x.workers) for n, x in m.gens.items()}, ready)


def check_state(m: Machine) -> None:
    """Rules 1, 2, 4, 9, 10, 11: at most two generations, at most one not ready, one
    serving generation (the active one), a generation checked or serving only with all its
    workers READY, at most ``max_starting`` workers starting, one process per index."""
    alive = list(m.gens.values())
    assert len(alive) <= 2, f"more than two generations alive: {alive}"
    not_ready = (GenState.STARTING, GenState.CHECKING)
    assert sum(g.state in not_ready for g in alive) <= 1, f"two not ready: {alive}"
    serving = [g.number for g in alive if g.state is GenState.SERVING]
    assert serving == ([] if m.active is None else [m.active]), (serving, m.active)
    if m.candidate is not None:
        assert m.candidate in m.gens, "candidate not alive"
    starting = sum(g.starting() for g in alive)
    assert starting <= m.policy.start_limit, f"{starting} workers starting: {alive}"
    for g in alive:
        assert all(0 <= i < g.size and w.index == i for i, w in g.workers.items()), g
        due = [*g.queued, *g.waiting, *g.unstarted]
        assert len(due) == len(set(due)) and not set(due) & set(g.workers), g
        if g.state is not GenState.STARTING:
            assert not g.unstarted, f"{g.label()} {g.state.value} with workers to start"
        if g.state is not GenState.SERVING:
            assert not g.queued and not g.waiting, f"{g.label()} replacing workers"
        if g.state in (GenState.CHECKING, GenState.SERVING) and g.number != m.active:
            assert g.ready() == g.size, f"{g.label()} checked before all were READY"


def check_actions(m: Machine, event: Event, before: Before, out: list[Action]) -> None:
    """Rules 8, 10, 11 about one event's actions: a READY worker of the serving generation
    gets the stop signal only when a successor with all N workers READY took over (or on
    stop), never SIGKILL while running; each index is started at most once per event, never
    beside a live process of the same index; a worker started while others serve starts
    lowered (until its generation's start-up grace ran out)."""
    alive = {n: set(ix) for n, ix in before.alive.items()}
    ready = set(before.ready)
    if isinstance(event, ChildExited | SpawnFailed):  # that process is gone
        alive.get(event.gen, set()).discard(event.worker)
        if event.gen == before.active:
            ready.discard(event.worker)
    spawned: set[tuple[int, int]] = set()
    running = m.phase is Phase.RUNNING
    for a in out:
        if isinstance(a, Signal | Kill) and a.gen == before.active and running:
            hits = ready if a.worker is None else {a.worker} & ready
            if hits and not isinstance(event, ForwardSignal):
                assert isinstance(a, Signal), f"{a}: a serving worker SIGKILLed while running"
                new = m.gens.get(m.active) if m.active is not None else None
                assert new is not None and new.number != before.active, f"{a}: no take-over"
                assert new.ready() == new.size, f"{a} before {new.label()} was all READY"
        if isinstance(a, Spawn):
            key = (a.gen, a.worker)
            assert key not in spawned, f"{a}: twice in one event"
            assert a.worker not in alive.get(a.gen, set()), f"{a}: index {a.worker} alive"
            spawned.add(key)
            g = m.gens.get(a.gen)
            if ready and not a.lowered:
                assert g is not None and g.promoted, f"{a}: not lowered while others serve"
