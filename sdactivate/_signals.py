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

__all__ = ["STOP_SIGNALS", "LoopStopSignals", "restored", "threads_without_stop_signals"]

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@contextlib.contextmanager
def threads_without_stop_signals() -> Iterator[None]:
    """Threads started inside block the stop signals (pthread_create(3) copies the signal
    mask of the thread that starts them, and the threads they start copy theirs).

    A process-directed signal goes to any one thread that does not block it (signal(7)).
    Python runs its handlers in the main thread only; when the kernel picks another thread,
    the main thread, blocked in a lock's wait (``Event.wait()`` with no timeout), is not
    interrupted and runs the handler only when it next runs Python code. A server waiting
    for SIGTERM that way missed it about once in 40 stops under load (it served on, and was
    SIGKILLed at its drain deadline). With the stop signals blocked in the threads that
    serve, the kernel delivers them to the main thread, whose wait returns EINTR and runs
    the handler at once. A signal arriving meanwhile stays pending until the mask is back.
    """
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


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
