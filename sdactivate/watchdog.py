"""Watchdog keep-alive: ``sd_watchdog_enabled(3)`` plus ``WATCHDOG=1`` pings at half the interval.

With ``WatchdogSec=`` (systemd.service(5)) the manager sets ``WATCHDOG_USEC`` and
``WATCHDOG_PID``; a service that does not send ``WATCHDOG=1`` within that time is killed with
SIGABRT (``WatchdogSignal=``) and, with ``Restart=on-watchdog|on-failure|always``, restarted.
sd_watchdog_enabled(3) advises a ping "every half of the time returned here".

Three keep-alives, all no-op handles when the watchdog is off (no ``WATCHDOG_USEC``, or it is
another process's) and all silent when ``NOTIFY_SOCKET`` is unset:

* :func:`start` -- a daemon thread; ``healthy()`` returning False skips pings.
* :func:`keepalive` / :func:`run_in_loop` -- an asyncio task. It runs inside the loop, so a
  blocked loop sends nothing and systemd's watchdog catches the hung server, as it should.
* :func:`watch_loop` -- a thread that pings only while an asyncio loop answers heartbeats
  (timing independent of loop load, still stops when the loop is stuck).

Try it: ``systemd-run -p WatchdogSec=2 --wait python3 -c 'import sdactivate.watchdog as w,
time; w.start(); time.sleep(10)'``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from types import TracebackType

from . import _env
from ._cint import c_unsigned, parse_pid
from ._signals import threads_without_stop_signals
from .errors import NotifyError, WatchdogError

__all__ = [
    "KeepAlive",
    "WatchdogError",
    "interval",
    "keepalive",
    "parse_interval",
    "run_in_loop",
    "start",
    "trigger",
    "watch_loop",
]

log = logging.getLogger("sdactivate.watchdog")

_USEC_INFINITY = 2**64 - 1  # sd_watchdog_enabled(3): infinity is -EINVAL
MIN_PERIOD = 0.01  # seconds; a floor so a tiny WATCHDOG_USEC cannot make a busy loop


def parse_interval(usec: str | None, watchdog_pid: str | None, pid: int) -> float | None:
    """The pure part of :func:`interval`: seconds, or None when the watchdog is not ours.

    Agrees with libsystemd 252's ``sd_watchdog_enabled()`` on the same strings.
    """
    if usec is None:
        return None  # sd_watchdog_enabled(3): 0, no watchdog
    value = c_unsigned(usec)
    if value is None or value == 0 or value >= _USEC_INFINITY:  # -EINVAL / -ERANGE
        raise WatchdogError(f"WATCHDOG_USEC={usec!r} is not a positive number of microseconds")
    if watchdog_pid is not None:
        owner = parse_pid(watchdog_pid)
        if owner is None:
            raise WatchdogError(f"WATCHDOG_PID={watchdog_pid!r} is not a pid")
        if owner != pid:
            return None  # "set for a different process further up the process tree"
    return value / 1_000_000


def interval(*, environ: _env.Environ | None = None, pid: int | None = None) -> float | None:
    """The watchdog timeout in seconds (``WATCHDOG_USEC``), or None when there is none for us.

    None when ``WATCHDOG_USEC`` is unset (not under systemd, no ``WatchdogSec=``) or
    ``WATCHDOG_PID`` names another process. Raises :class:`WatchdogError` naming the variable
    and value when it is ours but unparsable, 0 or infinity. Ping at half this value.
    sd_watchdog_enabled(3).
    """
    env = _env.resolve(environ)
    return parse_interval(
        env.get("WATCHDOG_USEC"),
        env.get("WATCHDOG_PID"),
        _env.getpid() if pid is None else pid,
    )


def _from_env(environ: _env.Environ | None, pid: int | None) -> float | None:
    return interval(environ=environ, pid=pid)  # the option named ``interval`` shadows it


def trigger(*, environ: _env.Environ | None = None) -> bool:
    """Send ``WATCHDOG=trigger``: the manager acts as if the watchdog timed out, now.

    Works without ``WatchdogSec=`` (v243+, sd_notify(3)). False when ``NOTIFY_SOCKET`` is
    unset; :class:`NotifyError` when it is set but unreachable.
    """
    from . import notify

    return notify.watchdog_trigger(environ=environ)


def _period(seconds: float) -> float:
    if not seconds > 0:
        raise WatchdogError(f"watchdog interval must be positive, got {seconds!r}")
    return max(seconds / 2, MIN_PERIOD)


class KeepAlive:
    """A running keep-alive; ``stop()`` it or use it as a context manager.

    ``interval`` is the watchdog timeout in seconds (None: no watchdog, a no-op handle),
    ``period`` the ping period (half of it), ``pings`` the pings sent, ``skipped`` the ticks
    that sent nothing because ``healthy()`` said no or the watched loop was stuck.
    """

    def __init__(
        self,
        seconds: float | None,
        *,
        healthy: Callable[[], bool] | None = None,
        environ: _env.Environ | None = None,
    ) -> None:
        self.interval = seconds
        self.period = None if seconds is None else _period(seconds)
        self.pings = 0
        self.skipped = 0
        self.errors = 0
        self._healthy = healthy
        self._environ = environ
        self._stopped = threading.Event()

    @property
    def active(self) -> bool:
        """True while pings are being scheduled (false for a no-op or stopped handle)."""
        return self.period is not None and not self._stopped.is_set()

    def tick(self, *, alive: bool = True) -> bool:
        """Ping once if ``alive`` and healthy; returns whether a ping was sent."""
        if not (alive and self._is_healthy()):
            self.skipped += 1
            return False
        from . import notify

        try:
            sent = notify.watchdog(environ=self._environ)
        except NotifyError as exc:  # keep trying: the manager may be re-executing
            self.errors += 1
            log.warning("watchdog ping failed: %s", exc)
            return False
        if sent:
            self.pings += 1
        return sent

    def _is_healthy(self) -> bool:
        if self._healthy is None:
            return True
        try:
            return bool(self._healthy())
        except Exception:  # a crashing health check is an unhealthy service: no ping
            log.exception("watchdog health check raised; not pinging")
            return False

    def stop(self, timeout: float | None = 5.0) -> None:
        """Stop pinging (idempotent). The manager will kill the service after ``interval``
        unless something else pings or the service exits first."""
        self._stopped.set()

    def __enter__(self) -> KeepAlive:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class _ThreadKeepAlive(KeepAlive):
    def __init__(
        self,
        seconds: float,
        *,
        healthy: Callable[[], bool] | None,
        environ: _env.Environ | None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(seconds, healthy=healthy, environ=environ)
        self._loop = loop
        self._asked = 0  # heartbeat tokens: the last one asked for, the last one answered
        self._answered = -1
        self._thread = threading.Thread(target=self._run, name="sdactivate-watchdog", daemon=True)
        with threads_without_stop_signals():  # they go to the main thread, which handles them
            self._thread.start()

    def _answer(self, token: int) -> None:  # runs inside the watched loop
        self._answered = token

    def _request_beat(self) -> bool:
        assert self._loop is not None
        self._asked += 1
        try:
            self._loop.call_soon_threadsafe(self._answer, self._asked)
        except RuntimeError:  # loop closed: nothing left to keep alive
            return False
        return True

    def _run(self) -> None:
        assert self.period is not None
        if self._loop is None:
            self.tick()  # first ping at once, as sd-event does when the watchdog is enabled
        elif not self._request_beat():
            self._stopped.set()
        next_at = time.monotonic() + self.period
        while not self._stopped.wait(max(0.0, next_at - time.monotonic())):  # no busy polling
            now = time.monotonic()
            # A fixed schedule (no drift); after a long stall, restart it rather than burst.
            next_at = next_at + self.period if now - next_at < self.period else now + self.period
            if self._loop is None:
                self.tick()
                continue
            # Alive only if the loop ran the beat asked for one period ago: a loop that
            # cannot run a callback within interval/2 counts as stuck.
            self.tick(alive=self._answered == self._asked)
            if not self._request_beat():
                log.warning("watched event loop is closed; watchdog keep-alive stops")
                self._stopped.set()

    def stop(self, timeout: float | None = 5.0) -> None:
        self._stopped.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)


def start(
    *,
    interval: float | None = None,
    healthy: Callable[[], bool] | None = None,
    environ: _env.Environ | None = None,
    pid: int | None = None,
) -> KeepAlive:
    """Ping ``WATCHDOG=1`` from a daemon thread every ``interval/2`` seconds (first ping now).

    ``interval`` defaults to :func:`interval` from the environment; when that is None (not
    under systemd, no ``WatchdogSec=``) the returned handle is a no-op. ``healthy`` is called
    before each ping; False (or an exception, logged) skips it, so a wedged service gets
    killed. A failed send (``NotifyError``) is logged and counted, and pinging continues.
    sd_watchdog_enabled(3), systemd.service(5) ``WatchdogSec=``.
    """
    seconds = _from_env(environ, pid) if interval is None else interval
    if seconds is None:
        return KeepAlive(None)
    return _ThreadKeepAlive(seconds, healthy=healthy, environ=environ)


def watch_loop(
    loop: asyncio.AbstractEventLoop,
    *,
    interval: float | None = None,
    healthy: Callable[[], bool] | None = None,
    environ: _env.Environ | None = None,
    pid: int | None = None,
) -> KeepAlive:
    """Like :func:`start`, but ping only while ``loop`` runs a heartbeat callback each period.

    Each tick the thread pings only if the loop ran the callback it scheduled one period
    earlier, so a loop stuck in a blocking call stops the pings within one period and the
    manager's watchdog fires (a loop too busy to run a callback within ``interval/2`` counts
    as stuck too). Ping timing does not depend on loop load, unlike :func:`run_in_loop`.
    Stops by itself when the loop is closed. No-op handle when the watchdog is off.
    """
    seconds = _from_env(environ, pid) if interval is None else interval
    if seconds is None:
        return KeepAlive(None)
    return _ThreadKeepAlive(seconds, healthy=healthy, environ=environ, loop=loop)


async def keepalive(
    *,
    interval: float | None = None,
    healthy: Callable[[], bool] | None = None,
    environ: _env.Environ | None = None,
    pid: int | None = None,
    handle: KeepAlive | None = None,
) -> None:
    """Ping from inside the running event loop every ``interval/2`` until cancelled.

    Returns at once when the watchdog is off. Because the pings run in the loop, a blocked
    loop pings nothing; they resume when it runs again. ``asyncio.create_task(keepalive())``
    or :func:`run_in_loop`.
    """
    if handle is None:
        seconds = _from_env(environ, pid) if interval is None else interval
        handle = KeepAlive(seconds, healthy=healthy, environ=environ)
    if handle.period is None:
        return
    while not handle._stopped.is_set():
        handle.tick()
        await asyncio.sleep(handle.period)


class _TaskKeepAlive(KeepAlive):
    task: asyncio.Task[None]

    def stop(self, timeout: float | None = 5.0) -> None:
        self._stopped.set()
        loop = self.task.get_loop()
        try:
            if asyncio.get_running_loop() is loop:
                self.task.cancel()
                return
        except RuntimeError:
            pass
        try:
            loop.call_soon_threadsafe(self.task.cancel)
        except RuntimeError:  # loop closed: the task is gone with it
            pass


def run_in_loop(
    *,
    interval: float | None = None,
    healthy: Callable[[], bool] | None = None,
    environ: _env.Environ | None = None,
    pid: int | None = None,
    loop: asyncio.AbstractEventLoop | None = None,
) -> KeepAlive:
    """Start :func:`keepalive` as a task and return its handle (no-op when the watchdog is off).

    Call it from inside the loop, or pass ``loop=`` from another thread. ``stop()`` cancels
    the task.
    """
    seconds = _from_env(environ, pid) if interval is None else interval
    if seconds is None:
        return KeepAlive(None)
    handle = _TaskKeepAlive(seconds, healthy=healthy, environ=environ)
    try:
        running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if loop is None or loop is running:
        if running is None:
            raise RuntimeError("run_in_loop() needs a running event loop or loop=")
        handle.task = running.create_task(keepalive(handle=handle), name="sdactivate-watchdog")
    else:
        handle.task = asyncio.run_coroutine_threadsafe(_spawn_task(handle), loop).result(5.0)
    return handle


async def _spawn_task(handle: KeepAlive) -> asyncio.Task[None]:
    return asyncio.get_running_loop().create_task(
        keepalive(handle=handle), name="sdactivate-watchdog"
    )
