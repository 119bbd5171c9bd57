"""The Upgrader's signals: its handlers, and the wakeup fd it owns unless the app does.

CPython runs handlers only in the main thread once it wakes up, and a signal that lands
while the main thread is going to sleep in a lock can wait forever; the C-level handler
writes the signal number to the wakeup fd at once, from any thread, so the runner's thread
reads it there (unless the app set its own wakeup fd first, e.g. asyncio).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

from .._signals import restored
from ..errors import UpgradeError

__all__ = ["SignalOwner"]

_SignalHandler = Any  # what signal.signal returns


class SignalOwner:
    """Installs the handlers: each signal posts ``command`` (``"upgrade"``/``"stop"``) with
    ``"signal NAME"`` through ``post``; ``wake_w`` is the write end of the runner's wake-up
    pipe, made the wakeup fd if nobody had one."""

    def __init__(self, post: Callable[[str, Any], None], wake_w: int) -> None:
        self._post = post
        self._wake_w = wake_w
        self._saved: dict[int, _SignalHandler] = {}
        self._commands: dict[int, str] = {}
        self._stop_signalled = False  # a stop signal arrived: ignore repeats once restored
        self._wakeup_owned = False

    def install(self, signals: tuple[int, ...], command: str) -> None:
        """Handle ``signals`` as ``command``; raises UpgradeError outside the main thread."""
        if not signals:
            return
        if threading.current_thread() is not threading.main_thread():
            raise UpgradeError(
                "signal handlers need the main thread: create the Upgrader there, or pass "
                "upgrade_signals=() and stop_signals=()"
            )
        for signum in signals:

            def handler(signum: int, frame: FrameType | None, command: str = command) -> None:
                if command == "stop":
                    self._stop_signalled = True
                if self._wakeup_is_ours():
                    return  # the worker already got the signal number through the wakeup fd
                self._post(command, f"signal {signal.Signals(signum).name}")

            self._saved[signum] = signal.signal(signum, handler)
            self._commands[signum] = command
        if not self._wakeup_owned:
            previous = signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
            if previous == -1:
                self._wakeup_owned = True
            else:
                signal.set_wakeup_fd(previous)

    def from_wakeup(self, signum: int) -> tuple[str, str] | None:
        """In the runner: (command, "signal NAME") for a byte read from the wakeup fd, or
        None (a 0 byte of a posted command, or a signal that is not ours)."""
        command = self._commands.get(signum)
        if command is None or not self._wakeup_owned:
            return None
        self._stop_signalled |= command == "stop"
        return command, f"signal {signal.Signals(signum).name}"

    def restore(self) -> None:
        """Give back the previous handlers and wakeup fd. A stop signal that came already
        is not handled twice: a repeat is ignored rather than killing a draining process."""
        if self._wakeup_owned:
            with contextlib.suppress(ValueError):  # only the main thread may
                if signal.set_wakeup_fd(-1) != self._wake_w:
                    signal.set_wakeup_fd(self._wake_w)  # not ours any more: leave it
            self._wakeup_owned = False
        for signum, previous in self._saved.items():
            stop = self._stop_signalled and self._commands[signum] == "stop"
            with contextlib.suppress(ValueError, TypeError):
                signal.signal(signum, restored(previous, stop))
        self._saved.clear()

    def _wakeup_is_ours(self) -> bool:
        """In the main thread: is our pipe still the wakeup fd? (Restores someone else's.)"""
        if not self._wakeup_owned:
            return False
        current = signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        if current == self._wake_w:
            return True
        signal.set_wakeup_fd(current)  # the app (asyncio...) took it over: keep theirs
        self._wakeup_owned = False
        return False
