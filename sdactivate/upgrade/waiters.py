"""Callers of ``Upgrader.upgrade()`` waiting for the outcome of an attempt."""

from __future__ import annotations

import threading

__all__ = ["Waiter", "Waiters"]


class Waiter:
    """One caller: ``done`` is set once with the new pid, or with an error."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.pid: int | None = None
        self.error: str | None = None

    def resolve(self, pid: int | None, error: str | None) -> None:
        if not self.done.is_set():
            self.pid, self.error = pid, error
            self.done.set()


class Waiters:
    """The waiting callers by attempt number (owned by the runner's thread)."""

    def __init__(self) -> None:
        self._by_attempt: dict[int, list[Waiter]] = {}

    def add(self, attempt: int, waiter: Waiter) -> None:
        self._by_attempt.setdefault(attempt, []).append(waiter)

    def resolve(self, attempt: int, pid: int | None, error: str | None) -> None:
        for waiter in self._by_attempt.pop(attempt, []):
            waiter.resolve(pid, error)

    def resolve_all(self, error: str) -> None:
        for waiters in self._by_attempt.values():
            for waiter in waiters:
                waiter.resolve(None, error)
        self._by_attempt.clear()
