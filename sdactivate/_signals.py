"""What a process stopped by a signal does with the next one of the same kind.

A stop is often signalled twice. ``KillMode=control-group`` (what ``gen-units --supervise``
writes) sends SIGTERM to every process of the unit at once, and ``sdactivate run`` then
repeats it to its generation; operators' scripts send ``kill`` more than once. A server that
restores the default disposition once it has drained dies of the repeat while it exits:
"killed by SIGTERM" instead of status 0, with buffered output and ``atexit`` work lost.

So after a stop signal, a handler is "restored" to *ignore* where it would go back to the
default, and in one ``sigaction()``: passing through the default on the way, as asyncio's
``remove_signal_handler`` does, leaves a window in which a repeat kills (a test that sends
SIGTERM every 0.2 ms hit it in most runs).
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import asyncio

_H = TypeVar("_H")

__all__ = [
    "STOP_SIGNALS",
    "LoopStopSignals",
    "claim_wakeup_fd",
    "release_wakeup_fd",
    "restored",
    "threads_without_stop_signals",
]

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@contextlib.contextmanager
def threads_without_stop_signals(signals: Iterable[int] = STOP_SIGNALS) -> Iterator[None]:
    """Threads started inside block ``signals`` (pthread_create(3) copies the signal mask of
    the thread that starts them, and the threads they start copy theirs).

    A process-directed signal is taken by any one thread that does not block it (signal(7)),
    and Python runs its handlers in the main thread only, when that thread next runs Python
    code. The kernel wakes the main thread first, but any other thread that enters the
    kernel's signal check before it runs takes the signal instead: one that creates a thread
    does (clone(2) rechecks pending signals: copy_process()), so an accept loop starting a
    thread per connection took about one SIGTERM in 40 under load, and the main thread,
    woken for nothing, went back to sleep in its lock. The main thread must therefore never
    wait for a stop signal where only EINTR would wake it (see
    ``adapters._lifecycle.StopTrigger``: the wakeup fd); blocking the signals in the
    threads we start keeps them on the main thread in the first place.
    A signal arriving meanwhile stays pending until the mask is back.
    """
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def claim_wakeup_fd(fd: int) -> bool:
    """Make ``fd`` (non-blocking) the signal wakeup fd unless another is set: True if it is.

    CPython's C-level handler writes the signal number to it in whichever thread the kernel
    picked (``signal.set_wakeup_fd``), so a thread polling it wakes up for every signal that
    has a Python handler, where a Python handler alone would wait for the main thread to run.
    One fd per process: an app's (or asyncio's) is left alone. Main thread only (ValueError).
    """
    previous = signal.set_wakeup_fd(fd, warn_on_full_buffer=False)
    if previous in (-1, fd):
        return True
    signal.set_wakeup_fd(previous)
    return False


def release_wakeup_fd(fd: int) -> None:
    """Unset the wakeup fd if it is still ``fd`` (whoever replaced it keeps theirs)."""
    current = signal.set_wakeup_fd(-1)
    if current not in (-1, fd):
        signal.set_wakeup_fd(current)


def restored(previous: _H, signalled: bool) -> _H | signal.Handlers:
    """The disposition to put back: ``previous``, or "ignore" for a default after a stop
    signal. (SIGINT's ``KeyboardInterrupt`` handler, an app's own, stay as they were.)"""
    return signal.SIG_IGN if signalled and previous == signal.SIG_DFL else previous


class LoopStopSignals:
    """Stop signals delivered to ``callback(signum)`` in an asyncio loop (``add_signal_handler``,
    so the loop wakes up whichever thread the kernel picked), until :meth:`uninstall`.

    Outside the main thread nothing is installed (asyncio allows signal handlers in the main
    thread's loop only).
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        callback: Callable[[int], Any],
        signals: Iterable[int] = STOP_SIGNALS,
    ) -> None:
        self.loop = loop
        self.signalled: int | None = None
        self._previous: dict[int, Any] = {}
        for signum in signals:
            previous = signal.getsignal(signum)
            try:
                loop.add_signal_handler(signum, self._on_signal, signum, callback)
            except (ValueError, RuntimeError):  # not the main thread's loop
                continue
            self._previous[signum] = previous

    def _on_signal(self, signum: int, callback: Callable[[int], Any]) -> None:
        if self.signalled is None:
            self.signalled = signum
        callback(signum)

    def uninstall(self) -> None:
        """Put back what each signal had, or "ignore" after a stop signal (see the module)."""
        for signum, previous in self._previous.items():
            target = restored(previous, self.signalled is not None)
            handlers = getattr(self.loop, "_signal_handlers", None)
            if not isinstance(handlers, dict) or signum not in handlers:
                self.loop.remove_signal_handler(signum)  # passes through the default
                signal.signal(signum, target)
                continue
            # What remove_signal_handler() does, with the disposition set first and once:
            # the unix loop's private table (checked above; asyncio has kept it since 3.4).
            signal.signal(signum, target)
            del handlers[signum]
            if not handlers:
                with contextlib.suppress(ValueError, OSError):
                    signal.set_wakeup_fd(-1)
        self._previous.clear()
