"""The supervisor's I/O shell: one ``selectors`` loop around :class:`~.machine.Machine`.

Everything the loop waits on is a file descriptor, so an idle supervisor sleeps in
``epoll_wait`` with no timeout (0 % CPU): signals arrive through ``signal.set_wakeup_fd``,
child exits through pidfds (pidfd_open(2)), ``READY=1``/``WATCHDOG=1`` through a private
``NOTIFY_SOCKET`` (AF_UNIX datagrams with SO_PASSCRED, attributed to a generation by the
sender's pid), control requests through :mod:`.control`. Timers are a dict of deadlines that
only bound the ``epoll_wait`` timeout while one is armed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .. import _env
from .._generation import EventQueue, NotifyInbox, describe_status
from .._priority import renice_tree, startup_priority
from .._spawn import Child, spawn
from ..errors import SdActivateError
from . import machine as m
from ._os import parent_pid, sockname
from .control import Connection, ControlServer
from .events import TimerKey, parse_extend_timeout

__all__ = ["HEALTH_FD_NAME", "Listener", "Options", "Runner", "run"]

log = logging.getLogger("sdactivate.supervisor")

HEALTH_FD_NAME = "sdactivate-health"
_SIGNALS = (signal.SIGHUP, signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2)
# Variables a child must not inherit from the supervisor's own manager: the child gets our
# NOTIFY_SOCKET; WATCHDOG_PID names the supervisor (sd_watchdog_enabled(3) would return 0).
_PRIVATE_ENV = ("NOTIFY_SOCKET", "WATCHDOG_PID")
# Where the control socket's private directory may go (control.candidate_dirs)
_CONTROL_DIR_ENV = ("RUNTIME_DIRECTORY", "XDG_RUNTIME_DIR", "TMPDIR")
# The longest single wait of the loop: epoll_wait(2) takes an int of milliseconds (24.8
# days), and a deadline further away (EXTEND_TIMEOUT_USEC= up to 2^64-2) is waited in turns.
_MAX_WAIT = 86400.0
# Control connections that have not sent their request yet: beyond this many, the oldest
# is closed, so idle (permitted) clients cannot exhaust fds or starve a new client.
_MAX_READING = 64
# Control clients waiting for a handover's outcome; beyond this a reload is refused at once.
_MAX_WAITING = 256


@dataclass(frozen=True)
class Listener:
    """A socket handed to every generation, under ``name`` (LISTEN_FDNAMES)."""

    sock: socket.socket
    name: str
    store: bool = False  # push into the manager's fd store at start (we bound it ourselves)


@dataclass(frozen=True)
class Options:
    """``sdactivate run`` options beyond the machine's policy."""

    policy: m.Policy = field(default_factory=m.Policy)
    health_cmd: str | None = None  # run with /bin/sh -c; SDACTIVATE_HEALTH_* in its env
    fdstore: bool = False
    # A starting generation runs this much nicer (setpriority(2)), and under SCHED_IDLE where
    # allowed (sched(7)), until it takes over, so its start-up (imports...) does not steal CPU
    # from the generation serving meanwhile: nice alone still lets it finish its time slice
    # before a woken server runs; a SCHED_IDLE task is preempted at once. Applied only when
    # the supervisor may restore the priority afterwards (CAP_SYS_NICE/RLIMIT_NICE).
    startup_nice: int = 10


@dataclass
class _Gen:
    """One process: worker ``worker`` of generation ``gen``."""

    gen: int
    worker: int
    child: Child
    health_addr: tuple[str, int] | None
    lowered: bool  # still at the start-up priority
    started: float  # time.monotonic() at its spawn


@dataclass
class _Check:
    gen: int
    proc: subprocess.Popen[bytes]
    pidfd: int


def _noop(signum: int, frame: Any) -> None:
    """Python-level handler; the wakeup fd carries the signal number to the loop."""


class Runner:
    """Supervise ``argv`` on ``listeners``. Build it, then call :meth:`run` (once)."""

    def __init__(
        self,
        argv: Sequence[str],
        listeners: Sequence[Listener],
        *,
        options: Options | None = None,
        environ: Mapping[str, str] | None = None,
        pid: int | None = None,
    ) -> None:
        if not argv:
            raise SdActivateError("no command to supervise")
        self.argv = list(argv)
        self.listeners = list(listeners)
        self.options = options or Options()
        env = _env.resolve(environ)
        self.pid = _env.getpid() if pid is None else pid
        self._manager_env = (
            {"NOTIFY_SOCKET": env["NOTIFY_SOCKET"]} if "NOTIFY_SOCKET" in env else {}
        )
        self._control_env = {k: env[k] for k in _CONTROL_DIR_ENV if k in env}
        self._child_env = {k: v for k, v in env.items() if k not in _PRIVATE_ENV}
        self.machine = m.Machine(self.options.policy)
        self._gens: dict[tuple[int, int], _Gen] = {}  # (generation, worker) -> process
        self._pids: dict[int, tuple[int, int]] = {}  # pid -> (generation, worker)
        self._timers: dict[TimerKey, float] = {}
        self._checks: dict[int, _Check] = {}
        self._requests: dict[int, Connection] = {}
        self._reading: dict[int, None] = {}  # requests not read yet, oldest first
        self._next_request = 1
        self._exit: int | None = None
        self._events = EventQueue(self.machine.handle, self._do)
        # a new generation's start-up priority, and ours, which it gets back at READY
        self._priority, self._base_nice, self._base_policy = startup_priority(
            self.options.startup_nice
        )
        self._sel = selectors.DefaultSelector()
        self._notify: NotifyInbox | None = None
        self._control: ControlServer | None = None
        self.notify_address = ""

    # --- set-up and tear-down ---------------------------------------------------------------
    def _open(self) -> tuple[socket.socket, socket.socket]:
        self._notify = NotifyInbox("notify", self.pid, log=log, rcvbuf=1 << 20)
        self.notify_address = self._notify.address
        self._sel.register(self._notify, selectors.EVENT_READ, ("notify", None))
        self._control = ControlServer(self._control_env)
        self._sel.register(self._control, selectors.EVENT_READ, ("control", None))
        wake_r, wake_w = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        for s in (wake_r, wake_w):
            s.setblocking(False)
        self._sel.register(wake_r, selectors.EVENT_READ, ("signal", None))
        return wake_r, wake_w

    def run(self) -> int:
        """Run until stopped; return the exit status (0 after SIGTERM, 1 on failure).

        Raises :class:`SupervisorError` if its own sockets cannot be made (nothing started).
        """
        try:
            wake_r, wake_w = self._open()
        except BaseException:
            self._cleanup()
            raise
        old_wakeup = signal.set_wakeup_fd(wake_w.fileno(), warn_on_full_buffer=False)
        old_handlers = {sig: signal.signal(sig, _noop) for sig in _SIGNALS}
        try:
            if self.options.fdstore:
                self._store_fds()
            self._feed(m.Start())
            while self._exit is None:
                self._step(wake_r)
            return self._exit
        finally:
            signal.set_wakeup_fd(old_wakeup)
            for sig, handler in old_handlers.items():
                signal.signal(sig, handler)
            self._cleanup()
            wake_r.close()
            wake_w.close()

    def _cleanup(self) -> None:
        for check in list(self._checks.values()):
            self._end_check(check, kill=True)
        for gen in list(self._gens):  # only reached on an internal error: leave no orphans
            g = self._gens.pop(gen)
            with contextlib.suppress(OSError):
                signal.pidfd_send_signal(g.child.pidfd, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(g.child.pid, 0)
            os.close(g.child.pidfd)
        for conn in self._requests.values():
            conn.answer({"ok": False, "message": "supervisor exited"})
        self._requests.clear()
        if self._notify is not None:
            self._notify.close()
        if self._control is not None:
            self._control.close()
        self._sel.close()

    def _store_fds(self) -> None:
        from .. import fdstore

        for lst in self.listeners:
            if lst.store and not fdstore.store(lst.sock, name=lst.name, environ=self._manager_env):
                log.warning(
                    "--fdstore: no NOTIFY_SOCKET (not under systemd); %s not stored", lst.name
                )

    # --- the loop ---------------------------------------------------------------------------
    def _wait_timeout(self) -> float | None:
        """How long the next epoll_wait may sleep: until the nearest timer (or the notify
        inbox's next log summary), at most
        ``_MAX_WAIT`` (a later deadline is waited for in turns), None with no timer."""
        due = list(self._timers.values())
        if self._notify is not None and (summary := self._notify.limiter.deadline()) is not None:
            due.append(summary)  # a summary of dropped notify messages
        if not due:
            return None
        return min(_MAX_WAIT, max(0.0, min(due) - time.monotonic()))

    def _step(self, wake_r: socket.socket) -> None:
        events = self._sel.select(self._wait_timeout())
        assert self._notify is not None
        self._notify.limiter.flush()
        # Signals first, even when their wakeup byte is not in this batch: a signal delivered
        # while epoll_wait returned is already in wake_r. Under KillMode=control-group systemd
        # sends SIGTERM to us (first) and to every generation; a generation that drained and
        # exited before we ran must be seen as stopping, not as a crash to replace.
        self._on_signals(wake_r)
        if self._exit is not None:
            return
        for key, _ in events:
            kind, arg = key.data
            if kind == "signal":
                self._on_signals(wake_r)
            elif kind == "child":
                self._on_child_exit(arg)
            elif kind == "notify":
                self._on_notify()
            elif kind == "control":
                self._on_control_accept()
            elif kind == "request":
                self._on_request(arg)
            elif kind == "check":
                self._on_check_exit(arg)
            if self._exit is not None:
                return
        now = time.monotonic()
        for tkey, when in sorted(self._timers.items(), key=lambda kv: kv[1]):
            if when <= now and self._timers.get(tkey) == when:
                del self._timers[tkey]
                self._feed(m.Deadline(tkey))

    def _feed(self, event: m.Event) -> None:
        """Hand ``event`` to the machine and carry out its actions, in order.

        Events raised while carrying out actions (``Spawned`` from a ``Spawn``...) wait
        until every action of the current event is done, so e.g. a RELOADING=1 is never
        sent after the READY=1 of a spawn that failed at once.
        """
        self._events.feed(event)

    def _do(self, action: m.Action) -> None:
        if isinstance(action, m.Spawn):
            self._spawn(action.gen, action.worker, lowered=action.lowered)
        elif isinstance(action, m.Signal | m.Kill):
            sig = signal.SIGKILL if isinstance(action, m.Kill) else action.signum
            for g in self._processes(action.gen, action.worker):
                with contextlib.suppress(ProcessLookupError):
                    signal.pidfd_send_signal(g.child.pidfd, sig)
        elif isinstance(action, m.SetTimer):
            self._timers[action.key] = time.monotonic() + action.seconds
        elif isinstance(action, m.CancelTimer):
            self._timers.pop(action.key, None)
        elif isinstance(action, m.RunHealth):
            self._run_check(action.gen)
        elif isinstance(action, m.CancelHealth):
            if (check := self._checks.get(action.gen)) is not None:
                self._end_check(check, kill=True)
        elif isinstance(action, m.NotifyManager):
            self._notify_manager(action)
        elif isinstance(action, m.Report):
            conn = self._requests.pop(action.request, None)
            if conn is not None:
                conn.answer(
                    {
                        "ok": action.ok,
                        "generation": action.generation,
                        "pid": action.pid,
                        "message": action.message,
                    }
                )
        elif isinstance(action, m.Log):
            getattr(log, action.level)("%s", action.message)
        elif isinstance(action, m.Promote):
            for g in self._processes(action.gen, action.worker):
                if g.lowered:
                    renice_tree(g.child.pid, self._base_nice, policy=self._base_policy)
                    g.lowered = False
        elif isinstance(action, m.Exit):
            self._exit = action.code

    # --- children ---------------------------------------------------------------------------
    def _processes(self, gen: int, worker: int | None) -> list[_Gen]:
        """Generation ``gen``'s processes (``worker`` None), or its worker ``worker``."""
        return [g for (n, i), g in self._gens.items() if n == gen and worker in (None, i)]

    def _spawn(self, gen: int, worker: int, *, lowered: bool) -> None:
        fds = [lst.sock.fileno() for lst in self.listeners]
        names = [lst.name for lst in self.listeners]
        health: socket.socket | None = None
        env = dict(self._child_env, SDACTIVATE_GENERATION=str(gen), SDACTIVATE_WORKER=str(worker))
        try:
            if self.options.health_cmd is not None:
                health = socket.create_server(("127.0.0.1", 0), backlog=128)
                fds.append(health.fileno())
                names.append(HEALTH_FD_NAME)
            child = spawn(
                self.argv,
                fds,
                names=names,
                env=env,
                notify_socket=self.notify_address,
                pdeathsig=self.options.policy.stop_signal,
                # a terminal's Ctrl-C (SIGINT to its foreground process group) reaches only
                # the supervisor, which then stops the generations in order. Same session:
                # a session of its own would be an autogroup, and the priority below would
                # only rank the child inside it (the newcomer took half the CPU)
                own_process_group=True,
                # the newcomer's exec and start-up yield the CPU to the serving generation
                priority=self._priority if lowered else None,
            )
        except (SdActivateError, OSError) as exc:
            self._feed(m.SpawnFailed(gen, str(exc), worker))
            return
        finally:
            if health is not None:
                addr = health.getsockname()
                health.close()  # the child holds its copy; ours would keep it open
        self._gens[gen, worker] = _Gen(
            gen,
            worker,
            child,
            addr if health is not None else None,
            lowered and self._priority is not None,
            time.monotonic(),
        )
        self._pids[child.pid] = (gen, worker)
        self._sel.register(child.pidfd, selectors.EVENT_READ, ("child", (gen, worker)))
        if self.options.policy.workers > 1:
            log.info("generation %d: worker %d started, pid %d", gen, worker, child.pid)
        else:
            log.info("generation %d: started pid %d", gen, child.pid)
        self._feed(m.Spawned(gen, child.pid, worker))

    def _on_child_exit(self, key: tuple[int, int]) -> None:
        gen, worker = key
        g = self._gens.pop(key)
        self._sel.unregister(g.child.pidfd)
        os.close(g.child.pidfd)
        _, status, usage = os.wait4(g.child.pid, 0)
        self._pids.pop(g.child.pid, None)
        # What the generation cost, for capacity planning and for reading a slow handover: a
        # major page fault is a wait on disk while serving (page cache the kernel dropped).
        log.info(
            "generation %d (pid %d) used %.2f s CPU, max RSS %.1f MB, %d major page faults",
            gen,
            g.child.pid,
            usage.ru_utime + usage.ru_stime,
            usage.ru_maxrss / 1024,
            usage.ru_majflt,
        )
        self._feed(m.ChildExited(gen, os.waitstatus_to_exitcode(status), worker))

    # --- health checks ----------------------------------------------------------------------
    def _run_check(self, gen: int) -> None:
        # against one new worker (the lowest index): each has its own health socket
        g = min(self._processes(gen, None), key=lambda p: p.worker, default=None)
        assert self.options.health_cmd is not None and g is not None and g.health_addr
        host, port = g.health_addr
        env = dict(
            self._child_env,
            SDACTIVATE_GENERATION=str(gen),
            SDACTIVATE_WORKER=str(g.worker),
            SDACTIVATE_PID=str(g.child.pid),
            SDACTIVATE_HEALTH_HOST=host,
            SDACTIVATE_HEALTH_PORT=str(port),
            SDACTIVATE_HEALTH_ADDR=f"{host}:{port}",
        )
        try:
            proc = subprocess.Popen(
                ["/bin/sh", "-c", self.options.health_cmd],
                env=env,
                stdin=subprocess.DEVNULL,
                process_group=0,  # killpg() at the deadline gets what it started, too
            )
        except OSError as exc:
            self._feed(m.HealthResult(gen, False, f"cannot run: {exc}"))
            return
        check = _Check(gen, proc, os.pidfd_open(proc.pid))
        self._checks[gen] = check
        self._sel.register(check.pidfd, selectors.EVENT_READ, ("check", gen))

    def _end_check(self, check: _Check, *, kill: bool) -> int:
        del self._checks[check.gen]
        self._sel.unregister(check.pidfd)
        os.close(check.pidfd)
        if kill:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(check.proc.pid, signal.SIGKILL)
        return check.proc.wait()

    def _on_check_exit(self, gen: int) -> None:
        check = self._checks.get(gen)
        if check is None:  # cancelled by an earlier event of the same wakeup
            return
        code = self._end_check(check, kill=False)
        self._feed(m.HealthResult(gen, code == 0, "" if code == 0 else describe_status(code)))

    # --- notify socket ----------------------------------------------------------------------
    def _on_notify(self) -> None:
        assert self._notify is not None
        for (gen, worker), fields in self._notify.messages(self._generation_of):
            self._on_child_message(gen, fields, worker)

    def _generation_of(self, pid: int) -> tuple[int, int] | None:
        """The (generation, worker) ``pid`` belongs to: a child, or a descendant of one
        (NotifyAccess=all)."""
        for _ in range(8):
            if pid in self._pids:
                return self._pids[pid]
            parent = parent_pid(pid)
            if parent is None or parent <= 1 or parent == self.pid:
                return None
            pid = parent
        return None

    def _on_child_message(self, gen: int, fields: list[tuple[str, str]], worker: int = 0) -> None:
        for key, value in fields:
            if key == "READY" and value == "1":
                self._feed(m.ChildReady(gen, worker))
            elif key == "WATCHDOG" and value in ("1", "trigger"):
                self._feed(m.WatchdogPing(gen, value, worker))
            elif key == "EXTEND_TIMEOUT_USEC":
                if (usec := parse_extend_timeout(value)) is not None:
                    self._feed(m.ExtendTimeout(gen, usec, worker))
                else:
                    log.warning("generation %d: EXTEND_TIMEOUT_USEC=%.40r ignored", gen, value)
            elif key == "STATUS":
                log.debug("generation %d: %s", gen, value)

    def _notify_manager(self, action: m.NotifyManager) -> None:
        if not self._manager_env:
            return
        from .. import notify

        fields = list(action.fields)
        if action.reloading:  # sd_notify(3) RELOADING=1 + MONOTONIC_USEC (v253 notify-reload)
            fields.append(
                ("MONOTONIC_USEC", str(time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000))
            )
        try:
            notify.send(fields, environ=self._manager_env)
        except SdActivateError as exc:
            log.warning("cannot notify the service manager: %s", exc)

    # --- signals and control ----------------------------------------------------------------
    def _on_signals(self, wake_r: socket.socket) -> None:
        try:
            data = wake_r.recv(256)
        except (BlockingIOError, InterruptedError):
            return
        for signum in data:
            if signum == signal.SIGHUP:
                self._feed(m.ReloadRequested(None))
            elif signum in (signal.SIGTERM, signal.SIGINT):
                self._feed(m.StopRequested())
            elif signum in (signal.SIGUSR1, signal.SIGUSR2):
                self._feed(m.ForwardSignal(signum))
            if self._exit is not None:
                return

    def _on_control_accept(self) -> None:
        assert self._control is not None
        for conn in self._control.accept():
            if len(self._reading) >= _MAX_READING:
                self._drop_request(next(iter(self._reading)), None)
            rid = self._next_request
            self._next_request += 1
            self._requests[rid] = conn
            self._reading[rid] = None
            self._sel.register(conn, selectors.EVENT_READ, ("request", rid))

    def _on_request(self, rid: int) -> None:
        conn = self._requests.get(rid)
        if conn is None:
            return
        try:
            req = conn.read_request()
        except (OSError, ValueError, EOFError) as exc:
            self._drop_request(rid, None if isinstance(exc, EOFError) else str(exc))
            return
        if req is None:
            return
        if req["op"] == "reload":
            if len(self._requests) - len(self._reading) >= _MAX_WAITING:
                self._drop_request(rid, "too many clients waiting for a handover")
                return
            self._sel.unregister(conn)  # answered by a Report action
            del self._reading[rid]
            self._feed(m.ReloadRequested(rid))
        elif req["op"] == "status":
            self._drop_request(rid, None, self.status())
        else:
            self._drop_request(rid, f"unknown op {req['op']!r}")

    def _drop_request(
        self, rid: int, error: str | None, reply: dict[str, Any] | None = None
    ) -> None:
        conn = self._requests.pop(rid)
        if rid in self._reading:  # still registered for its request line
            del self._reading[rid]
            self._sel.unregister(conn)
        if reply is None and error is None:
            conn.sock.close()
            return
        conn.answer(reply if reply is not None else {"ok": False, "message": error})

    def status(self) -> dict[str, Any]:
        """A snapshot for ``{"op": "status"}``."""
        mach = self.machine
        g = mach.gens.get(mach.active) if mach.active is not None else None
        return {
            "ok": True,
            "phase": mach.phase.value,
            "generation": g.number if g else None,
            "pid": g.pid if g else None,
            "message": mach.status_text(),
            "generations": [
                {"generation": x.number, "pid": x.pid, "state": x.state.value}
                for x in mach.gens.values()
            ],
            "workers": self._workers_status(),
            "upgrades_ok": mach.upgrades_ok,
            "upgrades_failed": mach.upgrades_failed,
            "notify_socket": self.notify_address,
            "listeners": [
                {"name": lst.name, "address": sockname(lst.sock)} for lst in self.listeners
            ],
        }

    def _workers_status(self) -> list[dict[str, Any]]:
        """Every process: pid, generation, worker index, state, uptime, restarts."""
        now = time.monotonic()
        out = []
        for (gen, index), p in sorted(self._gens.items(), key=lambda kv: kv[0]):
            g = self.machine.gens.get(gen)
            w = g.workers.get(index) if g is not None else None
            if g is None or w is None:
                state = "exiting"
            elif g.state in (m.GenState.DRAINING, m.GenState.FAILED):
                state = g.state.value
            else:
                state = w.state.value
            out.append(
                {
                    "worker": index,
                    "pid": p.child.pid,
                    "generation": gen,
                    "state": state,
                    "uptime": round(now - p.started, 3),
                    "restarts": w.restarts if w is not None else 0,
                }
            )
        return out


def run(
    argv: Sequence[str],
    listeners: Sequence[Listener],
    *,
    options: Options | None = None,
    environ: Mapping[str, str] | None = None,
) -> int:
    """Supervise ``argv`` until SIGTERM/SIGINT; return the exit status (see :class:`Runner`).

    Must run in the main thread (signal handlers). The listening sockets stay open here for
    the supervisor's whole life, so connections queue in the kernel between generations.
    """
    return Runner(argv, listeners, options=options, environ=environ).run()
