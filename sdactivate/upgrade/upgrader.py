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
ready within ``upgrade_timeout`` or dies within ``stable_time`` after READY is killed and
the parent keeps serving (logged, and ``STATUS=`` under systemd).

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

import contextlib
import fcntl
import logging
import math
import os
import select
import signal
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable, MutableMapping, Sequence
from types import FrameType, TracebackType
from typing import Any

from .. import _env, _pidfd
from .._priority import renice_tree, startup_priority, valid_startup_nice
from .._signals import restored
from ..addresses import DEFAULT_BACKLOG, ListenAddress
from ..errors import NotifyError, SdActivateError, UpgradeError
from .link import (
    HANDOVER,
    child_environ,
    open_notify_socket,
    read_ready,
    recv_some,
    take_parent,
)
from .plan import (
    Action,
    Finish,
    ForwardUpgrade,
    HandOver,
    Kill,
    Phase,
    Report,
    Spawn,
    UpgradePlan,
)
from .sockets import SocketSet

__all__ = ["Upgrader"]

log = logging.getLogger("sdactivate.upgrade")

_SignalHandler = Any  # what signal.signal returns


class _Waiter:
    def __init__(self) -> None:
        self.done = threading.Event()
        self.pid: int | None = None
        self.error: str | None = None

    def resolve(self, pid: int | None, error: str | None) -> None:
        if not self.done.is_set():
            self.pid, self.error = pid, error
            self.done.set()


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
    ) -> None:
        if not valid_startup_nice(startup_nice):
            raise UpgradeError(f"startup_nice {startup_nice!r}: not a nice value 0..19")
        if isinstance(startup_grace, bool) or not (
            isinstance(startup_grace, int | float) and startup_grace > 0
        ):
            raise UpgradeError(f"startup_grace {startup_grace!r}: not a number of seconds > 0")
        self._startup_nice = startup_nice
        self._startup_grace = float(startup_grace)
        self._environ_arg = environ
        self._env = _env.process_environ() if environ is None else environ
        self._argv = list(argv) if argv is not None else [sys.executable, *sys.orig_argv[1:]]
        self._cwd = cwd if cwd is not None else os.getcwd()
        self._sockets = SocketSet(environ)
        self._commands: deque[tuple[str, Any]] = deque()
        self._waiters: dict[int, list[_Waiter]] = {}
        self._exited = threading.Event()
        self.exit_reason: str | None = None
        self.last_error: str | None = None
        self._ready_sent = False
        self._closed = False
        self._upgrade_signals = tuple(upgrade_signals)
        self._saved_handlers: dict[int, _SignalHandler] = {}
        self._signal_commands: dict[int, str] = {}
        self._stop_signalled = False  # a stop signal arrived: ignore repeats once restored
        self._wakeup_owned = False

        link = take_parent(self._env, ppid=os.getppid())
        self._parent_pid = link.pid if link else None
        self._ctl = link.ctl if link else None
        self._parent_pidfd = link.pidfd if link else None
        self._systemd_notify = link.systemd_notify if link else None
        self._plan = UpgradePlan(
            has_parent=self._ctl is not None,
            ready_timeout=upgrade_timeout,
            stable_time=stable_time,
        )
        # Per-attempt state, owned by the worker thread.
        self._notify_sock: socket.socket | None = None
        self._child_ctl: socket.socket | None = None
        self._child_pidfd: int | None = None
        self._child_pid: int | None = None
        self._lowered = False  # the attempt's child is still at its start-up priority
        self._lowered_until = 0.0  # ... until then at most (time.monotonic())
        self._base_nice = 0
        self._base_policy = 0

        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            self._install_signals(self._upgrade_signals, "upgrade")
            self._install_signals(tuple(stop_signals), "stop")
        except BaseException:
            self._restore_signals()
            os.close(self._wake_r)
            os.close(self._wake_w)
            raise
        self._thread = threading.Thread(target=self._run, name="sdactivate-upgrader", daemon=True)
        self._thread.start()

    # --- public API ----------------------------------------------------------------------
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
        address matches the inherited socket of the same family in call order. An
        inherited socket keeps its backlog (no ``listen()`` call). Raises
        :class:`~sdactivate.AddressError` for a bad address, ``OSError`` if binding fails.
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
        self._post("ready", None)

    def upgrade(self, *, timeout: float | None = None) -> int:
        """Upgrade now and wait for the outcome: the new generation's pid.

        A call while an upgrade runs is queued behind it (several queued calls become one
        upgrade). After a successful upgrade a queued call is forwarded to the new
        generation (as its first upgrade signal) and returns that pid. Raises
        :class:`~sdactivate.UpgradeError` if the upgrade failed (this process keeps
        serving) or ``timeout`` seconds passed.
        """
        waiter = _Waiter()
        self._post("upgrade", waiter)
        if not waiter.done.wait(timeout):
            raise UpgradeError(f"no upgrade outcome within {timeout} s")
        if waiter.error is not None:
            raise UpgradeError(waiter.error)
        assert waiter.pid is not None
        return waiter.pid

    def stop(self, reason: str = "stop requested") -> None:
        """Make :meth:`wait_exit` return; an upgrade in progress is aborted (child killed)."""
        self._post("stop", reason)

    def wait_exit(self, timeout: float | None = None) -> bool:
        """Block until this generation should stop serving (upgraded, or stopped).

        Returns False if ``timeout`` passed first. :attr:`exit_reason` says why.
        """
        return self._exited.wait(timeout)

    def wait_for_parent(self, timeout: float | None = None) -> bool:
        """In a new generation: wait until the previous one has exited (True), or timeout.

        Returns True at once without a parent.
        """
        if self._parent_pidfd is None:
            return True
        ready, _, _ = select.select([self._parent_pidfd], [], [], timeout)
        return bool(ready)

    def close(self) -> None:
        """Stop the upgrader (killing an unfinished new generation), restore the signal
        handlers and close the sockets it handed out."""
        if self._closed:
            return
        self.stop("closed")
        self._post("close", None)
        self._thread.join(timeout=10.0)
        self._closed = True
        self._restore_signals()
        self._sockets.close()
        for fd in (self._wake_r, self._wake_w, self._parent_pidfd):
            if fd is not None:
                os.close(fd)
        self._parent_pidfd = None
        if self._ctl is not None:
            self._ctl.close()
            self._ctl = None

    def __enter__(self) -> Upgrader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _became_primary(self, why: str) -> None:
        """Point NOTIFY_SOCKET back at systemd's (or nowhere): we are the main process now."""
        if self._systemd_notify:
            self._env["NOTIFY_SOCKET"] = self._systemd_notify
        else:
            self._env.pop("NOTIFY_SOCKET", None)
        if self._ctl is not None:
            self._ctl.close()
            self._ctl = None
        log.info("now the primary generation (pid %d): %s", os.getpid(), why)
        self._execute(self._plan.handed_over(time.monotonic()))

    # --- signals and commands ------------------------------------------------------------
    def _install_signals(self, signals: tuple[int, ...], command: str) -> None:
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

            self._saved_handlers[signum] = signal.signal(signum, handler)
            self._signal_commands[signum] = command
        # Python runs handlers in the main thread only, and only when it wakes up: a signal
        # the kernel hands to another thread can wait forever while the main thread blocks
        # in a lock. The C-level handler writes the signal number to the wakeup fd at once,
        # from any thread: the worker reads it there (unless the app owns the wakeup fd).
        if not self._wakeup_owned:
            previous = signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
            if previous == -1:
                self._wakeup_owned = True
            else:
                signal.set_wakeup_fd(previous)

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

    def _restore_signals(self) -> None:
        if self._wakeup_owned:
            with contextlib.suppress(ValueError):  # only the main thread may
                if signal.set_wakeup_fd(-1) != self._wake_w:
                    signal.set_wakeup_fd(self._wake_w)  # not ours any more: leave it
            self._wakeup_owned = False
        for signum, previous in self._saved_handlers.items():
            stop = self._stop_signalled and self._signal_commands[signum] == "stop"
            with contextlib.suppress(ValueError, TypeError):
                signal.signal(signum, restored(previous, stop))
        self._saved_handlers.clear()

    def _post(self, command: str, arg: Any) -> None:
        # Safe from signal handlers: deque.append is atomic, the pipe write never blocks.
        self._commands.append((command, arg))
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._wake_w, b"\0")

    # --- the worker thread ---------------------------------------------------------------
    def _run(self) -> None:
        poller = select.poll()
        registered: set[int] = set()
        while True:
            wanted = {self._wake_r}
            for obj in (self._ctl, self._notify_sock):
                if obj is not None:
                    wanted.add(obj.fileno())
            if self._child_pidfd is not None:
                wanted.add(self._child_pidfd)
            for fd in registered - wanted:
                poller.unregister(fd)
            for fd in wanted - registered:
                poller.register(fd, select.POLLIN)
            registered = wanted
            deadline = self._plan.deadline
            if self._lowered and self._child_pid is not None:
                deadline = min(math.inf if deadline is None else deadline, self._lowered_until)
            wait_ms = None if deadline is None else max(0, (deadline - time.monotonic()) * 1000)
            events = poller.poll(None if wait_ms is None else int(wait_ms) + 1)
            try:
                if self._step({fd for fd, _ in events}):
                    break
            except Exception:  # a bug here must not leave wait_exit() hanging forever
                log.exception("upgrader failed")
                self._kill_child()
                self._finish("upgrader failed")
                break
        self._resolve_all("upgrader closed")

    def _step(self, ready_fds: set[int]) -> bool:
        """Handle one wake-up; True when the worker should end."""
        now = time.monotonic()
        if self._wake_r in ready_fds:
            with contextlib.suppress(BlockingIOError):
                for signum in os.read(self._wake_r, 4096):  # 0: see the command queue
                    if signum in self._signal_commands and self._wakeup_owned:
                        name = f"signal {signal.Signals(signum).name}"
                        command = self._signal_commands[signum]
                        self._stop_signalled |= command == "stop"
                        self._commands.append((command, name))
        while self._commands:
            command, arg = self._commands.popleft()
            if command == "close":
                self._kill_child()
                return True
            if command == "upgrade":
                log.info("upgrade requested (%s)", arg if isinstance(arg, str) else "upgrade()")
                self._add_waiter(arg)
                self._execute(self._plan.request_upgrade(now))
            elif command == "ready":
                self._execute(self._plan.ready(now))
            elif command == "stop":
                self._execute(self._plan.stop(str(arg)))
            else:
                raise AssertionError(command)
        if self._ctl is not None and self._ctl.fileno() in ready_fds:
            data = recv_some(self._ctl)
            if data.startswith(HANDOVER):
                self._became_primary("handover from the previous generation")
            elif not data:
                self._became_primary("the previous generation went away before the handover")
        if self._notify_sock is not None and self._notify_sock.fileno() in ready_fds:
            self._read_notify(now)
        if self._child_pidfd is not None and self._child_pidfd in ready_fds:
            self._child_gone(now)
        self._execute(self._plan.tick(time.monotonic()))
        if self._lowered and self._child_pid is not None and now >= self._lowered_until:
            log.warning(
                "new generation pid %d not ready %gs after its start at a lower priority;"
                " it gets ours now (a busy host?)",
                self._child_pid,
                self._grace(),
            )
            self._lift_priority()
        return False

    def _grace(self) -> float:
        return min(self._startup_grace, self._plan.ready_timeout / 2)

    def _lift_priority(self) -> None:
        assert self._child_pid is not None
        renice_tree(self._child_pid, self._base_nice, policy=self._base_policy)
        self._lowered = False

    def _read_notify(self, now: float) -> None:
        assert self._notify_sock is not None and self._child_pid is not None
        ready, problems = read_ready(self._notify_sock, self._child_pid)
        for problem in problems:
            log.warning("%s", problem)
        if ready:
            if self._lowered:  # it serves from now on: our priority back, before anything else
                self._lift_priority()
            self._execute(self._plan.child_ready(self._child_pid, now))

    def _child_gone(self, now: float) -> None:
        pid = self._child_pid
        assert pid is not None
        status = self._reap(pid)
        self._drop_attempt()  # before reporting: the outcome is final once it is published
        self._execute(self._plan.child_exited(pid, status, now))

    # --- actions -------------------------------------------------------------------------
    def _execute(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Spawn):
                self._spawn(action.attempt)
            elif isinstance(action, Kill):
                self._kill_child()
            elif isinstance(action, HandOver):
                self._hand_over(action.pid)
            elif isinstance(action, ForwardUpgrade):
                self._forward(action.pid)
            elif isinstance(action, Report):
                self._report(action)
            elif isinstance(action, Finish):
                self._finish(action.reason)

    def _spawn(self, attempt: int) -> None:
        from .. import _spawn

        entries = self._sockets.snapshot()
        fds = [sock.fileno() for sock, _ in entries]
        names = [name for _, name in entries]
        notify_sock, notify_address = open_notify_socket()
        parent_ctl, child_ctl = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        # Above 3..3+n-1 so _spawn can keep it at its number (it checks for collisions).
        ctl_fd = fcntl.fcntl(child_ctl.fileno(), fcntl.F_DUPFD_CLOEXEC, 3 + len(fds) + 1)
        child_ctl.close()
        env = child_environ(self._env, parent=os.getpid(), ctl_fd=ctl_fd)
        priority, self._base_nice, self._base_policy = startup_priority(self._startup_nice)
        self._lowered = priority is not None
        try:
            child = _spawn.spawn(
                self._argv,
                fds,
                names=names,
                env=env,
                notify_socket=notify_address,
                pass_fds=[ctl_fd],
                pdeathsig=None,  # a parent gone before the handover leaves the child primary
                cwd=self._cwd,
                priority=priority,
            )
        except (SdActivateError, OSError) as exc:
            self._lowered = False
            notify_sock.close()
            parent_ctl.close()
            self._execute(self._plan.spawn_failed(str(exc), time.monotonic()))
            return
        finally:
            os.close(ctl_fd)
        log.info("upgrade %d: started new generation pid %d", attempt, child.pid)
        self._notify_sock, self._child_ctl = notify_sock, parent_ctl
        self._child_pid, self._child_pidfd = child.pid, child.pidfd
        self._lowered_until = time.monotonic() + self._grace()
        self._execute(self._plan.child_started(child.pid, time.monotonic()))

    def _hand_over(self, pid: int) -> None:
        from .. import notify

        now = time.monotonic()
        assert self._child_ctl is not None and self._child_pidfd is not None
        try:
            fields: dict[str, str | int] = {"MAINPID": pid}
            # sd_notify(3) v257: MAINPIDFD=1 with the child's pidfd attached takes precedence
            # over MAINPID= and names that very process; MAINPIDFDID= (its pidfs inode id,
            # kernel 6.9+) makes PID 1 refuse MAINPID= if the pid is another process by then.
            # Before 257 both are unknown: MAINPID= applies, the fd is closed, nothing is
            # logged (measured on 252 and 254; integration/test_versions_e2e.py).
            fdid = _pidfd.inode_id(self._child_pidfd)
            if fdid is not None:
                fields["MAINPIDFDID"] = fdid
            fields["MAINPIDFD"] = 1
            fields["STATUS"] = f"serving, pid {pid} (upgraded from {os.getpid()})"
            if notify.send(fields, fds=[self._child_pidfd], environ=self._env):
                notify.barrier(environ=self._env)  # PID 1 processed MAINPID before we go on
            self._child_ctl.sendall(HANDOVER)
        except (NotifyError, OSError) as exc:
            with contextlib.suppress(NotifyError, OSError):
                notify.send({"MAINPID": os.getpid()}, environ=self._env)
            self._execute(self._plan.handover_failed(pid, str(exc), now))
            return
        # Mute: a draining old generation must never reach PID 1 (STOPPING=1 would stop
        # the unit). sd_notify(3) calls after this are no-ops.
        self._env.pop("NOTIFY_SOCKET", None)
        self._drop_attempt()  # the child is the primary now: never killed or reaped here
        self._execute(self._plan.handover_done(pid))

    def _forward(self, pid: int) -> None:
        if not self._upgrade_signals:
            log.warning("queued upgrade dropped: no upgrade signal to forward to pid %d", pid)
            self._resolve(self._plan.attempt + 1, None, "upgrade signals disabled")
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, self._upgrade_signals[0])
        log.info("queued upgrade forwarded to the new generation pid %d", pid)
        self._resolve(self._plan.attempt + 1, pid, None)

    def _report(self, report: Report) -> None:
        from .. import notify

        if report.ok:
            log.info("%s", report.text)
            self._resolve(report.attempt, self._plan.child, None)
            return
        log.warning("%s", report.text)
        self.last_error = report.text
        if self._plan.phase is not Phase.WAITING_HANDOVER:
            with contextlib.suppress(NotifyError):
                notify.status(report.text, environ=self._env)
        self._resolve(report.attempt, None, report.text)

    def _finish(self, reason: str) -> None:
        if not self._exited.is_set():
            self.exit_reason = reason
            log.info("generation pid %d exits: %s", os.getpid(), reason)
            self._exited.set()

    # --- child bookkeeping ---------------------------------------------------------------
    def _kill_child(self) -> None:
        pid = self._child_pid
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        self._reap(pid)
        self._drop_attempt()

    def _reap(self, pid: int) -> str:
        try:
            _, status = os.waitpid(pid, 0)
        except ChildProcessError:
            return "already reaped"
        code = os.waitstatus_to_exitcode(status)
        return f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"

    def _drop_attempt(self) -> None:
        for sock in (self._notify_sock, self._child_ctl):
            if sock is not None:
                sock.close()
        self._notify_sock = self._child_ctl = None
        if self._child_pidfd is not None:
            os.close(self._child_pidfd)
        self._child_pidfd = None
        self._child_pid = None
        self._lowered = False

    # --- waiters -------------------------------------------------------------------------
    def _add_waiter(self, waiter: object) -> None:
        if not isinstance(waiter, _Waiter):  # a signal: nobody waits
            return
        if self._plan.phase is Phase.EXITING and self._plan.child is None:
            waiter.resolve(None, f"this generation is exiting ({self.exit_reason})")
            return
        self._waiters.setdefault(self._plan.attempt + 1, []).append(waiter)

    def _resolve(self, attempt: int, pid: int | None, error: str | None) -> None:
        for waiter in self._waiters.pop(attempt, []):
            waiter.resolve(pid, error)

    def _resolve_all(self, error: str) -> None:
        for waiters in self._waiters.values():
            for waiter in waiters:
                waiter.resolve(None, error)
        self._waiters.clear()
