"""The supervisor machine's state: generations of workers, their states, the phase.

Plain mutable records that :class:`.machine.Machine` changes and
:mod:`.invariants` reads; no behaviour beyond counting.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

__all__ = ["NOT_READY", "STOPPED", "UP", "GenState", "Generation", "Phase", "Worker", "WorkerState"]


class GenState(enum.Enum):
    STARTING = "starting"  # spawned, no READY=1 yet
    CHECKING = "checking"  # READY=1, health check running
    SERVING = "serving"
    DRAINING = "draining"  # told to stop after its successor took over
    FAILED = "failed"  # failed before taking over; signalled or SIGKILLed, not reaped yet


NOT_READY = (GenState.STARTING, GenState.CHECKING)
STOPPED = (GenState.DRAINING, GenState.FAILED)


class WorkerState(enum.Enum):
    STARTING = "starting"  # spawned, no READY=1 yet
    READY = "ready"
    STOPPING = "stopping"  # a replacement that failed: signalled, not reaped yet


UP = (WorkerState.STARTING, WorkerState.READY)


@dataclass
class Worker:
    """One process of a generation; ``index`` is its SDACTIVATE_WORKER."""

    index: int
    state: WorkerState = WorkerState.STARTING
    pid: int | None = None
    restarts: int = 0  # how many earlier processes of this index the generation replaced
    killed: bool = False
    pinged: bool = False  # WATCHDOG=1 since the last one passed on


@dataclass
class Generation:
    number: int
    state: GenState = GenState.STARTING
    pid: int | None = None  # worker 0's (the process, with one worker)
    killed: bool = False
    grace: float | None = None  # stop signal to SIGKILL, when not drain_timeout
    size: int = 1
    workers: dict[int, Worker] = field(default_factory=dict)  # alive, by index
    unstarted: list[int] = field(default_factory=list)  # not started yet (start-up bound)
    queued: list[int] = field(default_factory=list)  # replacements due, waiting for a slot
    waiting: dict[int, float] = field(default_factory=dict)  # replacements in backoff: delay
    crashes: dict[int, int] = field(default_factory=dict)  # consecutive, by index
    restarts: dict[int, int] = field(default_factory=dict)  # replacements, by index
    promoted: bool = False  # its start-up ran past the grace: later workers start unlowered

    def label(self) -> str:
        if self.size > 1:
            return f"generation {self.number} ({self.size} workers)"
        pid = f"pid {self.pid}" if self.pid is not None else "not started"
        return f"generation {self.number} ({pid})"

    def ready(self) -> int:
        return sum(w.state is WorkerState.READY for w in self.workers.values())

    def starting(self) -> int:
        return sum(w.state is WorkerState.STARTING for w in self.workers.values())

    def live(self) -> bool:
        """Some worker was started and is not reaped yet."""
        return any(w.pid is not None for w in self.workers.values())


class Phase(enum.Enum):
    STARTING = "starting"  # the first generation is not ready yet
    RUNNING = "running"
    STOPPING = "stopping"
    DONE = "done"
