"""In-process zero-downtime upgrades (tableflip for Python), correct under ``Type=notify``.

::

    upg = sdactivate.Upgrader()
    sock = upg.listen("tcp", "127.0.0.1:8080")   # inherited, or bound on first start
    ...start serving on sock...
    upg.ready()          # READY=1 to systemd, or to the parent generation
    upg.wait_exit()      # returns after a successful upgrade (or SIGTERM / stop())
    ...stop accepting, drain, exit...

SIGHUP (or :meth:`Upgrader.upgrade`) re-executes the program (``sys.executable`` +
``sys.orig_argv``, same cwd) with every socket of the upgrader passed as ``LISTEN_FDS`` /
``LISTEN_FDNAMES`` (``LISTEN_PID`` = the child's pid; sd_listen_fds(3)). The child's
``NOTIFY_SOCKET`` is a private datagram socket the parent listens on, so the new version
just calls ``upg.ready()`` (or ``sdactivate.notify.ready()``). A child that exits, is not
ready within ``upgrade_timeout`` or dies within ``stable_time`` after READY fails the
upgrade and the parent keeps serving (logged, and ``STATUS=`` under systemd). A failed child
still running gets the stop signal, and SIGKILL only ``stop_grace`` seconds later: a server
that accepts before ``ready()`` answers or closes the connections it took, not resets them.

Handover under systemd (units need ``NotifyAccess=all``; ``ExecReload=kill -HUP $MAINPID``):

1. the child's READY=1 reaches only the parent (its private ``NOTIFY_SOCKET``), never
   PID 1, so systemd cannot see a READY from a pid that is not yet the main pid;
2. the parent sends ``MAINPID=<child>`` and waits on ``BARRIER=1`` (sd_notify_barrier(3),
   v246+) so PID 1 has processed the switch before anything else happens;
3. the parent writes the handover byte on a private control socket; the child then points
   its ``NOTIFY_SOCKET`` back at systemd's and is the primary (may upgrade in turn);
4. the parent unsets its own ``NOTIFY_SOCKET``: while it drains it cannot send anything to
   PID 1, in particular never ``STOPPING=1``, which would arm ``TimeoutStopSec=`` and stop
   the whole unit (sd_notify(3)). ``EXTEND_TIMEOUT_USEC=`` is not sent: in the running state
   it only extends ``RuntimeMaxSec=``.

A parent that dies before the handover leaves the child primary (the handover socket reaches
EOF).

systemd 252 after an upgrade: the new main process is not PID 1's child ("Supervising process
X which is not our child"). On ``systemctl stop`` 252 does not wait for such a main process
after SIGTERM when it is alone in the cgroup and sends SIGKILL at once, cutting the drain
short. Let ``ExecStop=`` do the waiting (newer systemd tracks the main process by pidfd)::

    ExecStop=/bin/kill -TERM $MAINPID
    ExecStop=/usr/bin/tail --pid=${MAINPID} -s 0.1 -f /dev/null

Signals: besides the Python handlers, the upgrader owns ``signal.set_wakeup_fd()`` (unless
the app set one first): CPython runs handlers only in the main thread once it wakes up, and
a signal that lands while the main thread is going to sleep in a lock can wait forever; the
wakeup byte reaches the upgrader's thread at once. Try it by hand::

    systemd-socket-activate -l 127.0.0.1:8080 python examples/upgrader_app.py
    kill -HUP <pid>
"""

from __future__ import annotations

import os
import select
import signal
import socket
import sys
import threading
from collections.abc import Iterable, MutableMapping, Sequence
from types import TracebackType

from .. import _env
from .._generation import UNREADY_GRACE
from .._priority import valid_startup_nice
from ..addresses import DEFAULT_BACKLOG, ListenAddress
from ..errors import UpgradeError
from .link import take_parent
from .plan import UpgradePlan
from .runner import Mailbox, Runner
from .signals import SignalOwner
from .sockets import SocketSet
from .waiters import Waiter

__all__ = ["Upgrader"]

MAX_STOP_GRACE = 3600.0  # longer is a typo: close() waits that long for a failed child


class Upgrader:
    """Graceful re-exec upgrades of this process, keeping its listening sockets.

    ``upgrade_timeout``: seconds the new generation gets to send READY=1 (tableflip's
    default: one minute). ``stable_time``: seconds it must then stay alive before the
    handover. ``argv``/``cwd`` override what is re-executed. ``upgrade_signals`` trigger an
    upgrade, ``stop_signals`` make :meth:`wait_exit` return; both are installed from the
    main thread (pass ``()`` to handle signals yourself). ``environ`` replaces the process
    environment (it is read, and ``NOTIFY_SOCKET`` and the upgrade variables are updated in
    it). One Upgrader per process. ``startup_nice``: the new generation execs and starts at
    this much higher nice value under SCHED_IDLE, and gets this process's priority back at
    READY, so its start-up only uses CPU the serving process leaves idle (0: off; also off
    when the priority could not be given back: no CAP_SYS_NICE nor RLIMIT_NICE allowance).
    ``startup_grace``: seconds after which a new generation that is still not ready gets
    this process's priority anyway (on a host busy with other work, SCHED_IDLE would starve
    it past ``upgrade_timeout``); at most half of ``upgrade_timeout``.
    ``stop_grace``: seconds a new generation that failed (not ready in time, handover
    failed) or is aborted by :meth:`stop` gets between the stop signal (the first of
    ``stop_signals``, else SIGTERM) and SIGKILL; :meth:`close` waits for that too.
    """

    def __init__(
        self,
        *,
        upgrade_timeout: float = 60.0,
        stable_time: float = 0.5,
        argv: Sequence[str] | None = None,
        cwd: str | None = None,
        upgrade_signals: Iterable[int] = (signal.SIGHUP,),
        stop_signals: Iterable[int] = (signal.SIGTERM, signal.SIGINT),
        environ: MutableMapping[str, str] | None = None,
        startup_nice: int = 10,
        startup_grace: float = 1.0,
        stop_grace: float = UNREADY_GRACE,
    ) -> None:
        if not valid_startup_nice(startup_nice):
            raise UpgradeError(f"startup_nice {startup_nice!r}: not a nice value 0..19")
        if isinstance(startup_grace, bool) or not (
            isinstance(startup_grace, int | float) and startup_grace > 0
        ):
            raise UpgradeError(f"startup_grace {startup_grace!r}: not a number of seconds > 0")
        if isinstance(stop_grace, bool) or not (
            isinstance(stop_grace, int | float) and 0 < stop_grace <= MAX_STOP_GRACE
        ):
            bad = f"stop_grace {stop_grace!r}"
            raise UpgradeError(f"{bad}: not a number of seconds > 0 and <= {MAX_STOP_GRACE:g}")
        self._env = _env.process_environ() if environ is None else environ
        self._sockets = SocketSet(environ)
        self._ready_sent = False
        self._closed = False
        upgrade_signals = tuple(upgrade_signals)
        stop_signals = tuple(stop_signals)
        link = take_parent(self._env, ppid=os.getppid())
        self._parent_pid = link.pid if link else None
        self._parent_pidfd = link.pidfd if link else None
        plan = UpgradePlan(
            has_parent=link is not None,
            ready_timeout=upgrade_timeout,
            stable_time=stable_time,
            startup_grace=float(startup_grace),
            # The new generation runs this program: it stops on our stop signal.
            stop_signal=stop_signals[0] if stop_signals else signal.SIGTERM,
            stop_grace=float(stop_grace),
        )
        self._mailbox = Mailbox()
        self._signals = SignalOwner(self._mailbox.post, self._mailbox.wake_w)
        self._runner = Runner(
            plan=plan,
            mailbox=self._mailbox,
            signals=self._signals,
            env=self._env,
            sockets=self._sockets,
            argv=list(argv) if argv is not None else [sys.executable, *sys.orig_argv[1:]],
            cwd=cwd if cwd is not None else os.getcwd(),
            startup_nice=startup_nice,
            upgrade_signal=upgrade_signals[0] if upgrade_signals else None,
            parent=link,
        )
        try:
            self._signals.install(upgrade_signals, "upgrade")
            self._signals.install(stop_signals, "stop")
        except BaseException:
            self._signals.restore()
            self._mailbox.close()
            raise
        self._thread = threading.Thread(
            target=self._runner.run, name="sdactivate-upgrader", daemon=True
        )
        self._thread.start()

    @property
    def exit_reason(self) -> str | None:
        """Why :meth:`wait_exit` returned (``upgraded to pid N``, ``signal SIGTERM``...)."""
        return self._runner.exit_reason

    @property
    def last_error(self) -> str | None:
        """The text of the last failed upgrade, or None."""
        return self._runner.last_error

    @property
    def has_parent(self) -> bool:
        """True in a new generation started by an upgrade (until the parent is gone)."""
        return self._parent_pid is not None

    def listen(
        self,
        network: str,
        address: str | ListenAddress,
        *,
        name: str | None = None,
        backlog: int = DEFAULT_BACKLOG,
    ) -> socket.socket:
        """A listening socket for ``address``: inherited if there is one, else bound.

        ``network`` is a kind (``tcp``, ``udp``, ``unix``, ``unix-dgram``,
        ``unix-seqpacket``); ``address`` uses :func:`sdactivate.parse_address` syntax.
        Inherited sockets (``LISTEN_FDS`` from systemd or the previous generation) are
        matched by ``name`` when given (``FileDescriptorName=``), else by address; a port 0
        address matches the inherited socket of the same kind and host in call order (the
        rule of :func:`sdactivate.listen`). An inherited socket keeps its backlog (no
        ``listen()`` call). Raises :class:`~sdactivate.AddressError` for a bad address,
        :class:`~sdactivate.UpgradeError` when the socket of that name is of another type or
        several have it and none is bound to ``address``, ``OSError`` if binding fails.
        """
        return self._sockets.listen(network, address, name=name, backlog=backlog)

    def add(self, sock: socket.socket, *, name: str = "unknown") -> None:
        """Pass ``sock`` (any socket or fd-backed object you own) to the next generations."""
        self._sockets.add(sock, name)

    def sockets(self) -> list[socket.socket]:
        """Every socket that a new generation receives, in ``LISTEN_FDS`` order."""
        return [sock for sock, _ in self._sockets.snapshot()]

    def ready(self, *, status: str | None = None) -> None:
        """This generation serves: READY=1 to systemd, or to the parent after an upgrade.

        Upgrades are accepted only after this. Outside systemd and without a parent, only
        the upgrader's state changes. Raises :class:`~sdactivate.NotifyError` if
        ``NOTIFY_SOCKET`` is set but unusable.
        """
        from .. import notify

        if not self._ready_sent:
            notify.ready(status=status, environ=self._env)
            self._ready_sent = True
        self._mailbox.post("ready", None)

    def upgrade(self, *, timeout: float | None = None) -> int:
        """Upgrade now and wait for the outcome: the new generation's pid.

        A call while an upgrade runs is queued behind it (several queued calls become one
        upgrade). After a successful upgrade a queued call is forwarded to the new
        generation (as its first upgrade signal) and returns that pid. Raises
        :class:`~sdactivate.UpgradeError` if the upgrade failed (this process keeps
        serving) or ``timeout`` seconds passed.
        """
        waiter = Waiter()
        self._mailbox.post("upgrade", waiter)
        if not waiter.done.wait(timeout):
            raise UpgradeError(f"no upgrade outcome within {timeout} s")
        if waiter.error is not None:
            raise UpgradeError(waiter.error)
        assert waiter.pid is not None
        return waiter.pid

    def stop(self, reason: str = "stop requested") -> None:
        """Make :meth:`wait_exit` return; an upgrade in progress is aborted (its child gets
        the stop signal, and SIGKILL after ``stop_grace``)."""
        self._mailbox.post("stop", reason)

    def wait_exit(self, timeout: float | None = None) -> bool:
        """Block until this generation should stop serving (upgraded, or stopped).

        Returns False if ``timeout`` passed first. :attr:`exit_reason` says why.
        """
        return self._runner.exited.wait(timeout)

    def wait_for_parent(self, timeout: float | None = None) -> bool:
        """In a new generation: wait until the previous one has exited (True), or timeout.

        Returns True at once without a parent.
        """
        if self._parent_pidfd is None:
            return True
        ready, _, _ = select.select([self._parent_pidfd], [], [], timeout)
        return bool(ready)

    def close(self) -> None:
        """Stop the upgrader (an unfinished new generation gets the stop signal, and SIGKILL
        when its ``stop_grace`` is over), restore the signal handlers and close the sockets
        it handed out."""
        if self._closed:
            return
        self.stop("closed")
        self._mailbox.post("close", None)
        self._thread.join(timeout=self._runner.plan.stop_grace + 10.0)  # see stop_grace
        self._closed = True
        self._signals.restore()
        self._sockets.close()
        self._runner.close()
        self._mailbox.close()
        if self._parent_pidfd is not None:
            os.close(self._parent_pidfd)
            self._parent_pidfd = None

    def __enter__(self) -> Upgrader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
