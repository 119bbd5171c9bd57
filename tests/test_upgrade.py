"""sdactivate.upgrade: the pure upgrade plan, and the Upgrader end to end in real processes."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sdactivate._generation import UNREADY_GRACE
from sdactivate.errors import UpgradeError
from sdactivate.upgrade import Upgrader
from sdactivate.upgrade.events import (
    AppReady,
    ChildGone,
    ChildSentReady,
    ChildStarted,
    Finish,
    ForwardUpgrade,
    HandOver,
    HandoverDone,
    HandoverFailed,
    KillChild,
    LiftPriority,
    Log,
    Outcome,
    ParentHandedOver,
    StartChild,
    StopAsked,
    StopChild,
    Tick,
    UpgradeRequested,
)
from sdactivate.upgrade.plan import Stage, UpgradePlan
from tests.support import wait_until

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "upgrader_app.py"


def serving_plan(*, stable: float = 0.0, timeout: float = 10.0) -> UpgradePlan:
    plan = UpgradePlan(has_parent=False, ready_timeout=timeout, stable_time=stable)
    assert plan.handle(AppReady(), 0.0) == []
    return plan


# --- the pure plan -------------------------------------------------------------------------
def test_upgrade_waits_for_own_ready() -> None:
    """A request before this generation is ready is queued and starts at ready()."""
    plan = UpgradePlan(has_parent=False, ready_timeout=10, stable_time=0)
    assert plan.handle(UpgradeRequested(), 0.0) == []
    assert plan.handle(AppReady(), 1.0) == [StartChild(1)]
    assert plan.stage is Stage.UPGRADING


def test_child_waits_for_handover_before_upgrading() -> None:
    """An upgrade child may not upgrade until its parent handed over."""
    plan = UpgradePlan(has_parent=True, ready_timeout=10, stable_time=0)
    assert plan.handle(AppReady(), 0.0) == []
    assert plan.handle(UpgradeRequested(), 0.0) == []
    assert plan.handle(ParentHandedOver(), 1.0) == [StartChild(1)]


def test_successful_upgrade_hands_over_then_finishes() -> None:
    """READY from the child -> HandOver; handover_done -> success report and Finish."""
    plan = serving_plan()
    assert plan.handle(UpgradeRequested(), 0.0) == [StartChild(1)]
    plan.handle(ChildStarted(42), 0.1)
    assert plan.handle(ChildSentReady(42), 0.2) == [HandOver(42)]
    actions = plan.handle(HandoverDone(42), 1.0)
    assert actions[0] == Outcome(True, "upgraded: new generation pid 42 is serving", 1)
    assert actions[1] == Finish("upgraded to pid 42")
    assert plan.stage is Stage.EXITING


def test_ready_from_another_pid_is_ignored() -> None:
    """Only the spawned child's READY counts."""
    plan = serving_plan()
    plan.handle(UpgradeRequested(), 0.0)
    plan.handle(ChildStarted(42), 0.1)
    assert plan.handle(ChildSentReady(43), 0.2) == []
    assert plan.stage is Stage.UPGRADING


def test_child_exit_before_ready_keeps_serving() -> None:
    """F1: a child that exits before READY fails the upgrade; nothing to kill."""
    plan = serving_plan()
    plan.handle(UpgradeRequested(), 0.0)
    plan.handle(ChildStarted(42), 0.1)
    (report,) = plan.handle(ChildGone(42, 3), 0.5)
    assert isinstance(report, Outcome) and not report.ok
    assert "before READY" in report.text and "exited with status 3" in report.text
    assert plan.stage is Stage.SERVING


def test_ready_timeout_stops_child_then_kills_it_after_the_grace() -> None:
    """F2, issue 16 item 2: no READY within the timeout -> the stop signal (it may have
    accepted connections) + failure report, still serving; SIGKILL only at the grace."""
    plan = serving_plan(timeout=2.0)
    plan.handle(UpgradeRequested(), 0.0)
    plan.handle(ChildStarted(42), 0.0)
    assert plan.handle(Tick(), 1.9) == []
    stop, report = plan.handle(Tick(), 2.0)
    assert stop == StopChild(42, signal.SIGTERM)
    assert isinstance(report, Outcome) and not report.ok and "not ready within 2 s" in report.text
    assert plan.stage is Stage.SERVING and plan.deadline is None
    assert plan.wake_at() == 2.0 + UNREADY_GRACE
    assert plan.handle(Tick(), 2.0 + UNREADY_GRACE - 0.1) == []
    warn, kill = plan.handle(Tick(), 2.0 + UNREADY_GRACE)
    assert isinstance(warn, Log) and "still running 5 s after the stop signal" in warn.message
    assert kill == KillChild(42)
    assert plan.stopping is None and plan.wake_at() is None


def test_failed_child_exiting_within_its_grace_is_not_killed() -> None:
    """A failed child that exits on the stop signal is never SIGKILLed; a request queued
    meanwhile starts the next attempt only then (one child at a time)."""
    plan = UpgradePlan(
        has_parent=False, ready_timeout=2.0, stable_time=0, stop_signal=signal.SIGINT
    )
    plan.handle(AppReady(), 0.0)
    plan.handle(UpgradeRequested(), 0.0)
    plan.handle(ChildStarted(42), 0.0)
    assert plan.handle(Tick(), 2.0)[0] == StopChild(42, signal.SIGINT)
    assert plan.handle(UpgradeRequested(), 2.5) == []  # queued: 42 is still alive
    assert plan.pending and plan.stopping == 42
    assert plan.handle(ChildGone(42, 0), 3.0) == [StartChild(2)]
    plan.handle(ChildStarted(43), 3.0)
    assert [a for a in plan.handle(Tick(), 2.0 + UNREADY_GRACE) if isinstance(a, KillChild)] == []


def test_queued_request_starts_once_the_failed_child_is_killed() -> None:
    """A failed child that ignores its stop signal is SIGKILLed at the grace, and the
    queued request starts the next attempt in that same turn."""
    plan = serving_plan(timeout=2.0)
    plan.handle(UpgradeRequested(), 0.0)
    plan.handle(ChildStarted(42), 0.0)
    plan.handle(Tick(), 2.0)
    plan.handle(UpgradeRequested(), 2.1)
    actions = plan.handle(Tick(), 2.0 + UNREADY_GRACE)
    assert actions[1:] == [KillChild(42), StartChild(2)]


def test_crash_within_stable_time_fails_upgrade() -> None:
    """F3: a child that dies within stable_time after READY never gets the handover."""
    plan = serving_plan(stable=0.5)
    plan.handle(UpgradeRequested(), 0.0)
    plan.handle(ChildStarted(42), 0.0)
    assert plan.handle(ChildSentReady(42), 1.0) == []
    assert plan.stage is Stage.CONFIRMING
    (report,) = plan.handle(ChildGone(42, 4), 1.2)
    assert isinstance(report, Outcome) and "after READY" in report.text
    assert plan.stage is Stage.SERVING


def test_stable_time_elapsed_hands_over() -> None:
    """After stable_time alive, the handover happens."""
    plan = serving_plan(stable=0.5)
    plan.handle(UpgradeRequested(), 0.0)
    plan.handle(ChildStarted(42), 0.0)
    plan.handle(ChildSentReady(42), 1.0)
    assert plan.handle(Tick(), 1.4) == []
    assert plan.handle(Tick(), 1.5) == [HandOver(42)]


def test_requests_during_upgrade_coalesce_and_forward() -> None:
    """F12: two requests during an upgrade become one, forwarded to the new primary."""
    plan = serving_plan()
    plan.handle(UpgradeRequested(), 0.0)
    plan.handle(ChildStarted(42), 0.0)
    assert plan.handle(UpgradeRequested(), 0.1) == []
    assert plan.handle(UpgradeRequested(), 0.2) == []
    plan.handle(ChildSentReady(42), 0.3)
    actions = plan.handle(HandoverDone(42), 1.0)
    assert actions[-1] == ForwardUpgrade(42)
    assert [a for a in actions if isinstance(a, StartChild)] == []


def test_queued_request_retries_after_failure() -> None:
    """A request queued during a failed upgrade starts a new attempt right away."""
    plan = serving_plan()
    plan.handle(UpgradeRequested(), 0.0)
    plan.handle(ChildStarted(42), 0.0)
    plan.handle(UpgradeRequested(), 0.1)
    actions = plan.handle(ChildGone(42, 1), 0.2)
    assert actions[-1] == StartChild(2)


def test_handover_failure_stops_child() -> None:
    """If MAINPID cannot be sent, the (ready, serving) child gets the stop signal and this
    generation keeps serving."""
    plan = serving_plan()
    plan.handle(UpgradeRequested(), 0.0)
    plan.handle(ChildStarted(42), 0.0)
    plan.handle(ChildSentReady(42), 0.1)
    stop, report = plan.handle(HandoverFailed(42, "ECONNREFUSED"), 0.2)
    assert stop == StopChild(42, signal.SIGTERM)
    assert isinstance(report, Outcome) and not report.ok
    assert plan.kill_at == 0.2 + UNREADY_GRACE


def test_stop_during_upgrade_aborts_it() -> None:
    """stop() while a child is starting gives it the stop signal and finishes; SIGKILL
    follows at the grace."""
    plan = serving_plan()
    plan.handle(UpgradeRequested(), 0.0)
    plan.handle(ChildStarted(42), 0.0)
    actions = plan.handle(StopAsked("signal SIGTERM"), 1.0)
    assert actions[0] == StopChild(42, signal.SIGTERM)
    assert actions[-1] == Finish("signal SIGTERM")
    assert plan.handle(StopAsked("again"), 1.0) == []
    assert plan.handle(Tick(), 1.0 + UNREADY_GRACE)[-1] == KillChild(42)


def test_request_after_exit_is_forwarded() -> None:
    """A SIGHUP reaching a generation that already handed over goes to the new one."""
    plan = serving_plan()
    plan.handle(UpgradeRequested(), 0.0)
    plan.handle(ChildStarted(42), 0.0)
    plan.handle(ChildSentReady(42), 0.1)
    plan.handle(HandoverDone(42), 1.0)
    assert plan.handle(UpgradeRequested(), 1.0) == [ForwardUpgrade(42)]


@pytest.mark.parametrize(
    ("timeout", "stable"), [(0, 0), (1, -1)], ids=["zero-timeout", "negative-stable"]
)
def test_bad_timings_rejected(timeout: float, stable: float) -> None:
    """Nonsense timings are refused when the plan is built."""
    with pytest.raises(ValueError):
        UpgradePlan(has_parent=False, ready_timeout=timeout, stable_time=stable)


def test_lowered_child_gets_our_priority_at_ready() -> None:
    """A child started at the start-up priority gets ours back at READY=1, before the
    handover."""
    plan = serving_plan()
    plan.handle(UpgradeRequested(), 0.0)
    plan.handle(ChildStarted(42, lowered=True), 0.0)
    assert plan.wake_at() == 1.0  # the grace, before the ready timeout
    assert plan.handle(ChildSentReady(42), 0.5) == [LiftPriority(42), HandOver(42)]
    assert plan.lowered_until is None


def test_lowered_child_still_starting_after_the_grace_gets_our_priority() -> None:
    """Not ready after startup_grace: a warning and our priority, and the upgrade goes on;
    the grace is at most half of the ready timeout."""
    plan = UpgradePlan(has_parent=False, ready_timeout=4, stable_time=0, startup_grace=3)
    plan.handle(AppReady(), 0.0)
    plan.handle(UpgradeRequested(), 0.0)
    plan.handle(ChildStarted(42, lowered=True), 0.0)
    assert plan.handle(Tick(), 1.9) == []
    log, lift = plan.handle(Tick(), 2.0)
    assert lift == LiftPriority(42) and isinstance(log, Log) and log.level == "warning"
    assert "not ready 2s after its start at a lower priority" in log.message
    assert plan.stage is Stage.UPGRADING and plan.wake_at() == 4.0
    assert plan.handle(ChildSentReady(42), 3.0) == [HandOver(42)]


def test_child_not_lowered_is_never_lifted() -> None:
    """Without the right to undo it the child is not lowered: nothing to lift."""
    plan = serving_plan()
    plan.handle(UpgradeRequested(), 0.0)
    plan.handle(ChildStarted(42), 0.0)
    assert plan.wake_at() == 10.0
    assert plan.handle(ChildSentReady(42), 0.5) == [HandOver(42)]


def test_invariants_are_checked_after_every_event() -> None:
    """A plan in a state its invariants forbid fails loudly at the next event."""
    plan = serving_plan()
    plan.child = 42  # serving, yet a child
    with pytest.raises(AssertionError):
        plan.handle(Tick(), 0.0)


_STEPS = st.lists(
    st.sampled_from(["request", "child-ready", "child-gone", "tick", "stop"]),
    max_size=40,
)


# Steps of time around the plan's lengths (ready_timeout 2, stable_time 0.5, stop_grace 5).
_SECONDS = st.lists(st.sampled_from([0.0, 0.3, 0.6, 2.0, 2.5, 5.0, 6.0]), min_size=40, max_size=40)


@settings(max_examples=500, deadline=None)
@given(steps=_STEPS, seconds=_SECONDS)
def test_random_histories_keep_one_child_and_stop_before_kill(
    steps: list[str], seconds: list[float]
) -> None:
    """Any order of events, answered as the runner answers the actions: the invariants hold
    after each (plan.check), at most one child is ever alive, and a child is SIGKILLed only
    after its stop signal and stop_grace (or after a stop that finished this generation)."""
    plan = serving_plan(stable=0.5, timeout=2.0)
    now, pids = 0.0, iter(range(100, 1000))
    alive: dict[int, float | None] = {}  # pid -> when it got the stop signal

    def run(actions: list[object]) -> None:
        for action in actions:
            if isinstance(action, StartChild):
                assert not alive, f"a second child beside {alive}"
                pid = next(pids)
                alive[pid] = None
                run(plan.handle(ChildStarted(pid, lowered=action.lowered), now))
            elif isinstance(action, StopChild):
                alive[action.pid] = now
            elif isinstance(action, KillChild):
                stopped = alive.pop(action.pid)
                assert stopped is not None and now >= stopped + plan.stop_grace, (stopped, now)
            elif isinstance(action, HandOver):
                failed = bool(seconds[len(alive) % len(seconds)] > 4.0)
                if failed:
                    run(plan.handle(HandoverFailed(action.pid, "test"), now))
                else:
                    alive.pop(action.pid)  # the primary now: not ours
                    run(plan.handle(HandoverDone(action.pid), now))

    for step, dt in zip(steps, seconds, strict=False):
        now += dt
        child = next(iter(alive), None)
        if step == "request":
            run(plan.handle(UpgradeRequested(), now))
        elif step == "child-ready" and child is not None:
            run(plan.handle(ChildSentReady(child), now))
        elif step == "child-gone" and child is not None:
            del alive[child]
            run(plan.handle(ChildGone(child, 0), now))
        elif step == "stop":
            run(plan.handle(StopAsked("test"), now))
        else:
            run(plan.handle(Tick(), now))
        assert len(alive) <= 1, alive


# --- real processes ------------------------------------------------------------------------
def _get(port: int, path: str = "/", timeout: float = 5.0) -> tuple[int, str]:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn:
        conn.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := conn.recv(4096):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    pid = int(body.decode().split("pid=")[1])
    return int(head.split()[1]), str(pid)


@pytest.fixture()
def app(tmp_path: Path) -> Iterator[tuple[object, object, int, Path]]:
    """The example app launched with a bound socket and a NotifyReceiver standing in for PID 1."""
    from sdactivate.testing import NotifyReceiver, launch

    fault = tmp_path / "fault"
    with NotifyReceiver(thread=True) as rx:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
        port = sock.getsockname()[1]
        args = ["--listen", f"127.0.0.1:{port}", "--fault-file", str(fault)]
        args += ["--upgrade-timeout", "3", "--stable-time", "1.0", "--drain-timeout", "3"]
        proc = launch([sys.executable, str(EXAMPLE), *args], [sock], names=["http"], notify=rx)
        sock.close()
        with proc:
            try:
                yield proc, rx, port, fault
            finally:
                generations = {int(m.get("MAINPID")) for m in rx.messages if "MAINPID" in m}
                for pid in {proc.pid} | generations:
                    _kill_tree(pid)
                for pid in generations:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass


def _kill_tree(pid: int) -> None:
    """Kill generations this test started (children of the launched app, by pid)."""
    try:
        out = subprocess.run(
            ["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True, timeout=5
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return
    for line in out.split():
        try:
            os.kill(int(line), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass


def _wait_gone(pid: int, timeout: float) -> bool:
    """Wait for a process that is not our child to exit (pidfd_open(2) polls readable)."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        return bool(select.select([pidfd], [], [], timeout)[0])
    finally:
        os.close(pidfd)


def _mainpid(rx: object, since: int = 0, timeout: float = 10.0) -> int:
    msg = rx.wait_for("MAINPID", timeout=timeout, since=since)  # type: ignore[attr-defined]
    return int(msg.get("MAINPID"))


def test_sighup_hands_over_to_new_generation(app: tuple) -> None:  # type: ignore[type-arg]
    """SIGHUP: the new pid serves, MAINPID=<new> then barrier, old exits, no STOPPING ever."""
    proc, rx, port, _ = app
    ready = rx.wait_for("READY", "1", timeout=10)
    assert ready.pid == proc.pid
    assert _get(port) == (200, str(proc.pid))
    proc.send_signal(signal.SIGHUP)
    new = _mainpid(rx)
    assert new != proc.pid
    assert proc.wait(10) == 0  # old generation drained and exited
    assert _get(port) == (200, str(new))
    senders = {(m.pid, k) for m in rx.messages for k, _ in m.fields}
    assert (new, "READY") not in senders  # the child's READY went to its parent only
    assert all(not m.has("STOPPING") for m in rx.messages)
    assert rx.barriers >= 1
    os.kill(new, signal.SIGTERM)


def test_handover_names_the_new_process_by_pidfd_id(app: tuple) -> None:  # type: ignore[type-arg]
    """The MAINPID= message carries MAINPIDFD=1 with a pidfd attached and MAINPIDFDID=
    (sd_notify(3), v257): the inode id of the new process's pidfd, which PID 1 compares
    before switching; without pidfs (kernel < 6.9) there is no such id and that field is
    left out (older managers ignore both)."""
    from sdactivate import _pidfd

    proc, rx, _, _ = app
    rx.wait_for("READY", "1", timeout=10)
    proc.send_signal(signal.SIGHUP)
    msg = rx.wait_for("MAINPID", timeout=10)
    new = int(msg.get("MAINPID"))
    pidfd = os.pidfd_open(new)
    try:
        expected = _pidfd.inode_id(pidfd)
    finally:
        os.close(pidfd)
    assert msg.get("MAINPIDFDID") == (None if expected is None else str(expected))
    assert msg.get("MAINPIDFD") == "1" and msg.nfds == 1
    assert msg.pid == proc.pid and proc.wait(10) == 0
    os.kill(new, signal.SIGTERM)


def test_new_generation_upgrades_again(app: tuple) -> None:  # type: ignore[type-arg]
    """After a handover the new generation is primary and can upgrade in turn."""
    proc, rx, port, _ = app
    rx.wait_for("READY", "1", timeout=10)
    proc.send_signal(signal.SIGHUP)
    gen2 = _mainpid(rx)
    proc.wait(10)
    n = len(rx.messages)
    os.kill(gen2, signal.SIGHUP)
    msg = rx.wait_for("MAINPID", timeout=10, since=n)
    assert msg.pid == gen2
    gen3 = int(msg.get("MAINPID"))
    assert _wait_gone(gen2, 10)  # until then gen2 may still accept a connection
    assert _get(port) == (200, str(gen3))
    os.kill(gen3, signal.SIGTERM)


@pytest.mark.parametrize(
    "fault",
    ["exit-before-ready", "never-ready", "crash-after-ready:50", "abort-after-ready:50"],
    ids=str,
)
def test_failed_new_version_leaves_old_serving(app: tuple, fault: str) -> None:  # type: ignore[type-arg]
    """F1/F2/F3: a broken new version is reported (STATUS=), the old pid keeps serving."""
    proc, rx, port, fault_file = app
    rx.wait_for("READY", "1", timeout=10)
    fds_before = sorted(os.listdir(f"/proc/{proc.pid}/fd"))
    fault_file.write_text(fault)
    proc.send_signal(signal.SIGHUP)
    status = rx.wait_until(
        lambda: any("upgrade failed" in (m.get("STATUS") or "") for m in rx.messages),
        timeout=10,
        what="upgrade failed STATUS",
    )
    assert status is None
    assert rx.count("MAINPID") == 0
    assert proc.poll() is None
    assert _get(port) == (200, str(proc.pid))
    with contextlib.suppress(TimeoutError):  # the connection just served may still be closing
        wait_until(
            lambda: sorted(os.listdir(f"/proc/{proc.pid}/fd")) == fds_before,
            timeout=5,
            interval=0.05,
        )
    assert sorted(os.listdir(f"/proc/{proc.pid}/fd")) == fds_before  # nothing leaked
    fault_file.write_text("")
    proc.send_signal(signal.SIGHUP)  # and a good version still upgrades afterwards
    assert _mainpid(rx) != proc.pid


def test_sigterm_drains_in_flight_request(app: tuple) -> None:  # type: ignore[type-arg]
    """SIGTERM: STOPPING=1, the slow in-flight request completes, then the process exits."""
    proc, rx, port, _ = app
    rx.wait_for("READY", "1", timeout=10)
    conn = socket.create_connection(("127.0.0.1", port), timeout=5)
    conn.sendall(b"GET /sleep?ms=500 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    data = conn.recv(4096)  # the head arrives first: the request is in flight
    proc.terminate()
    rx.wait_for("STOPPING", "1", timeout=5)
    while chunk := conn.recv(4096):
        data += chunk
    conn.close()
    assert data.startswith(b"HTTP/1.1 200") and b"ok pid=" in data
    assert proc.wait(5) == 0


# --- the programmatic API in this process (no signals, injected environment) --------------
CHILD_OK = (
    "import sdactivate\n"
    "upg = sdactivate.Upgrader(upgrade_signals=(), stop_signals=())\n"
    "upg.ready()\n"
    "upg.wait_exit(30)\n"
)


def _upgrader(
    code: str,
    *,
    stable_time: float = 0.5,
    upgrade_timeout: float = 20,
    startup_grace: float = 1,
    startup_nice: int = 10,
) -> Upgrader:
    return Upgrader(
        startup_grace=startup_grace,
        startup_nice=startup_nice,
        argv=[sys.executable, "-c", code],
        upgrade_signals=(),
        stop_signals=(),
        environ={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        stable_time=stable_time,
        upgrade_timeout=upgrade_timeout,
    )


def test_upgrade_call_returns_new_pid_and_exits() -> None:
    """upgrade() returns the ready child's pid; wait_exit() then returns with the reason."""
    upg = _upgrader(CHILD_OK, stable_time=0.0, upgrade_timeout=20)
    try:
        upg.ready()
        pid = upg.upgrade(timeout=30)
        try:
            assert upg.wait_exit(5)
            assert upg.exit_reason == f"upgraded to pid {pid}"
            os.kill(pid, 0)  # still running: it is the primary now
        finally:
            os.kill(pid, signal.SIGKILL)
            assert _wait_gone(pid, 10)
    finally:
        upg.close()


def test_new_generation_starts_idle_and_gets_our_priority_at_ready(tmp_path: Path) -> None:
    """The new generation's first statement already runs at nice +10 under SCHED_IDLE (set
    before its exec); once it is READY it has this process's nice value and policy back.
    Without the right to undo it (no CAP_SYS_NICE, no RLIMIT_NICE), nothing is lowered."""
    from sdactivate._priority import startup_priority

    record = tmp_path / "prio"
    code = (
        "import os, sys\n"
        f"open({str(record)!r}, 'w').write("
        "f'{os.sched_getscheduler(0)} {os.getpriority(os.PRIO_PROCESS, 0)}')\n" + CHILD_OK
    )
    priority, base, policy = startup_priority(10)
    # A 30 s grace: a busy host may delay the child's first statement (a SCHED_IDLE start-up
    # only runs on an idle CPU, or after the grace), where it records its priority.
    upg = _upgrader(code, stable_time=0.0, upgrade_timeout=60, startup_grace=30)
    try:
        upg.ready()
        pid = upg.upgrade(timeout=90)  # on a saturated host: the 30 s grace + start-up
        try:
            started = tuple(map(int, record.read_text().split()))
            if priority is None:
                assert started == (policy, base)
            else:
                assert started == (os.SCHED_IDLE, min(19, base + 10))
            assert os.sched_getscheduler(pid) == policy
            assert os.getpriority(os.PRIO_PROCESS, pid) == base
        finally:
            os.kill(pid, signal.SIGKILL)
            assert _wait_gone(pid, 10)
    finally:
        upg.close()


def test_new_generation_still_starting_after_the_grace_gets_our_priority(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A new generation not ready ``startup_grace`` after its start gets this process's
    priority while it goes on starting (SCHED_IDLE would starve it on a busy host)."""
    import logging
    import threading

    from sdactivate._priority import startup_priority

    lowered, base, policy = startup_priority(10)
    if lowered is None:
        pytest.skip("no right to raise a priority again here: nothing is ever lowered")
    record = tmp_path / "pid"
    code = (
        "import os, time\n"
        f"open({str(record)!r} + '.tmp', 'w').write(str(os.getpid()))\n"
        f"os.rename({str(record)!r} + '.tmp', {str(record)!r})\n"
        "time.sleep(60)\n"  # never ready
    )
    upg = _upgrader(code, upgrade_timeout=20, startup_grace=0.5)
    errors: list[str] = []

    def attempt() -> None:
        try:
            upg.upgrade(timeout=30)
        except UpgradeError as exc:
            errors.append(str(exc))

    caplog.set_level(logging.WARNING, logger="sdactivate.upgrade")
    try:
        upg.ready()
        thread = threading.Thread(target=attempt)
        thread.start()
        started = time.monotonic()
        wait_until(record.exists, timeout=15, interval=0.01, what="the new generation to start")
        pid = int(record.read_text())
        try:
            wait_until(
                lambda: (
                    (os.getpriority(os.PRIO_PROCESS, pid), os.sched_getscheduler(pid))
                    == (base, policy)
                ),
                timeout=max(0.0, started + 15 - time.monotonic()),
                what="the priority lifted after a 0.5 s grace",
            )
            assert not errors and thread.is_alive()  # lifted while the upgrade goes on
        finally:
            os.kill(pid, signal.SIGKILL)
        thread.join(30)
        assert len(errors) == 1 and "SIGKILL" in errors[0], errors
        assert not upg.wait_exit(0)  # the failed attempt left this generation serving
    finally:
        upg.close()
    lifted = [r.getMessage() for r in caplog.records if "lower priority" in r.getMessage()]
    assert lifted == [
        f"new generation pid {pid} not ready 0.5s after its start at a lower"
        " priority; it gets ours now (a busy host?)"
    ]


@pytest.mark.parametrize("grace", [0, -1.0, True, "1"])
def test_bad_startup_grace_rejected(grace: object) -> None:
    with pytest.raises(UpgradeError, match="startup_grace"):
        Upgrader(startup_grace=grace, upgrade_signals=(), stop_signals=(), environ={})  # type: ignore[arg-type]


@pytest.mark.parametrize("grace", [0, -1.0, True, "1", float("nan"), float("inf"), 3601])
def test_bad_stop_grace_rejected(grace: object) -> None:
    with pytest.raises(UpgradeError, match=r"stop_grace .*<= 3600"):
        Upgrader(stop_grace=grace, upgrade_signals=(), stop_signals=(), environ={})  # type: ignore[arg-type]


# A new version that accepts before ready() (as servers and the adapters do) and never gets
# ready: it takes one connection and its request, and answers it only on the stop signal
# (blocked from the start, then waited for: no handler race).
CHILD_ACCEPTS_NEVER_READY = (
    "import signal, socket\n"
    "linger = False\n"
    "signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})\n"
    "conn, _ = socket.socket(fileno=3).accept()\n"
    "head = b''\n"
    "while b'\\r\\n\\r\\n' not in head and (data := conn.recv(4096)):\n"
    "    head += data\n"
    "signal.sigwait({signal.SIGTERM})\n"
    "body = b'answered after the stop signal'\n"
    "conn.sendall(b'HTTP/1.1 200 OK\\r\\nContent-Length: %d\\r\\n\\r\\n%s' % (len(body), body))\n"
    "conn.close()\n"
    "if linger:\n"
    "    signal.sigwait({signal.SIGUSR1})  # never comes: SIGKILL ends it\n"
)


def test_never_ready_child_answers_its_connection_before_it_is_stopped() -> None:
    """Issue 16 item 2: a new generation that accepted a connection and missed the upgrade
    timeout gets the stop signal first, so the client gets its answer, not a reset."""
    # startup_nice=0: at SCHED_IDLE on a busy host it might not block SIGTERM within 2 s
    upg = _upgrader(CHILD_ACCEPTS_NEVER_READY, upgrade_timeout=2, startup_nice=0)
    try:
        port = upg.listen("tcp", "127.0.0.1:0").getsockname()[1]
        upg.ready()
        with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
            conn.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")  # queued until accepted
            with pytest.raises(UpgradeError, match="not ready within 2 s"):
                upg.upgrade(timeout=30)
            data = b""
            while chunk := conn.recv(4096):
                data += chunk
        assert data.startswith(b"HTTP/1.1 200 OK"), data
        assert data.endswith(b"answered after the stop signal"), data
    finally:
        upg.close()


def test_close_during_an_upgrade_lets_the_child_answer_its_connection(tmp_path: Path) -> None:
    """close() while a new generation is starting: it gets the stop signal, and close()
    waits (at most stop_grace) for it to exit, so the connection it took is answered."""
    import threading

    blocked = tmp_path / "blocked"  # the child blocks SIGTERM, then says so here
    block = "signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})\n"
    code = CHILD_ACCEPTS_NEVER_READY.replace(block, f"{block}open({str(blocked)!r}, 'w').close()\n")
    upg = _upgrader(code, upgrade_timeout=60)
    outcome: list[BaseException] = []
    port = upg.listen("tcp", "127.0.0.1:0").getsockname()[1]
    upg.ready()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        conn.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")

        def upgrade() -> None:
            try:
                upg.upgrade(timeout=30)
            except UpgradeError as exc:
                outcome.append(exc)

        waiter = threading.Thread(target=upgrade)
        waiter.start()
        pid = wait_until(lambda: upg._runner.plan.child, timeout=10, what="the new generation")
        wait_until(blocked.exists, timeout=10, what=f"pid {pid} blocking SIGTERM")
        upg.close()
        waiter.join(10)
        data = b""
        while chunk := conn.recv(4096):
            data += chunk
    assert data.endswith(b"answered after the stop signal"), data
    assert _wait_gone(pid, 0)  # reaped by close()
    assert len(outcome) == 1 and "upgrade aborted" in str(outcome[0]), outcome


def test_failed_child_ignoring_its_stop_signal_is_killed_after_the_grace() -> None:
    """The grace is bounded: a failed child that does not exit on the stop signal (it has
    answered, then waits on) is SIGKILLed stop_grace later, and the next upgrade runs."""
    code = CHILD_ACCEPTS_NEVER_READY.replace("linger = False", "linger = True")
    upg = Upgrader(
        argv=[sys.executable, "-c", code],
        upgrade_signals=(),
        stop_signals=(),
        environ={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        upgrade_timeout=1,
        stop_grace=0.5,
        startup_nice=0,
    )
    try:
        port = upg.listen("tcp", "127.0.0.1:0").getsockname()[1]
        upg.ready()
        with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
            conn.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            with pytest.raises(UpgradeError, match="not ready within 1 s") as failed:
                upg.upgrade(timeout=30)
            pid = int(str(failed.value).split("pid ")[1].split()[0])
            assert conn.recv(4096).startswith(b"HTTP/1.1 200 OK")  # the stop signal came
        assert _wait_gone(pid, 10)
        with pytest.raises(UpgradeError, match="not ready within 1 s") as again:
            upg.upgrade(timeout=30)  # a fresh attempt: the killed child is out of the way
        assert f"pid {pid} " not in str(again.value)
    finally:
        upg.close()


@pytest.mark.parametrize("nice", [-1, 20, True, 2.5])
def test_bad_startup_nice_rejected(nice: object) -> None:
    with pytest.raises(UpgradeError, match=r"0\.\.19"):
        Upgrader(startup_nice=nice, upgrade_signals=(), stop_signals=(), environ={})  # type: ignore[arg-type]


def test_upgrade_call_raises_when_child_fails() -> None:
    """A child that exits before READY: upgrade() raises UpgradeError; no exit happens."""
    upg = _upgrader("raise SystemExit(3)", upgrade_timeout=20)
    try:
        upg.ready()
        with pytest.raises(UpgradeError, match="exited with status 3"):
            upg.upgrade(timeout=30)
        assert not upg.wait_exit(0)
    finally:
        upg.close()


# --- the generation link and the socket set ------------------------------------------------
def test_child_environ_hides_systemd_notify_and_watchdog_pid() -> None:
    """The child gets the upgrade variables; systemd's NOTIFY_SOCKET moves aside, the
    input mapping is not modified, WATCHDOG_PID is dropped (it would name the parent)."""
    from sdactivate.upgrade.link import ENV_FD, ENV_NOTIFY, ENV_PARENT, child_environ

    base = {"NOTIFY_SOCKET": "/run/systemd/notify", "WATCHDOG_PID": "7", "HOME": "/root"}
    env = child_environ(base, parent=7, ctl_fd=12)
    assert env == {
        "HOME": "/root",
        ENV_PARENT: "7",
        ENV_FD: "12",
        ENV_NOTIFY: base["NOTIFY_SOCKET"],
    }
    assert base["NOTIFY_SOCKET"] == "/run/systemd/notify"


@pytest.mark.parametrize(
    ("env", "why"),
    [
        ({}, "no variables"),
        ({"SDACTIVATE_UPGRADE_PARENT": "1", "SDACTIVATE_UPGRADE_FD": "9"}, "not our parent"),
    ],
    ids=["absent", "other-parent"],
)
def test_take_parent_not_for_us(env: dict[str, str], why: str) -> None:
    """No upgrade variables, or another process's: not an upgrade child (variables removed)."""
    from sdactivate.upgrade.link import take_parent

    assert take_parent(env, ppid=os.getppid()) is None, why
    assert env == {}


def test_take_parent_malformed_is_an_error() -> None:
    """Upgrade variables meant for us but malformed: UpgradeError naming them."""
    from sdactivate.upgrade.link import take_parent

    env = {"SDACTIVATE_UPGRADE_PARENT": "abc", "SDACTIVATE_UPGRADE_FD": "9"}
    with pytest.raises(UpgradeError, match="SDACTIVATE_UPGRADE_PARENT='abc'"):
        take_parent(env, ppid=os.getppid())


def test_take_parent_reads_the_link() -> None:
    """A well-formed link: the control socket, a pidfd on the parent, systemd's socket."""
    from sdactivate.upgrade.link import take_parent

    a, b = socket.socketpair()
    fd = b.detach()
    env = {
        "SDACTIVATE_UPGRADE_PARENT": str(os.getpid()),
        "SDACTIVATE_UPGRADE_FD": str(fd),
        "SDACTIVATE_UPGRADE_NOTIFY_SOCKET": "@x",
    }
    link = take_parent(env, ppid=os.getpid())
    try:
        assert link is not None and link.pid == os.getpid() and link.systemd_notify == "@x"
        a.sendall(b"H")
        assert link.ctl.recv(1) == b"H"
        assert link.pidfd is not None
    finally:
        a.close()
        if link is not None:
            link.ctl.close()
            if link.pidfd is not None:
                os.close(link.pidfd)


@pytest.mark.parametrize("name", ["", "a:b", "x" * 256, "caf\u00e9", "tab\t"], ids=repr)
def test_bad_fd_names_rejected(name: str) -> None:
    """fd names follow FileDescriptorName= rules (ASCII printable, no ':', 1..255)."""
    from sdactivate.upgrade.sockets import check_fd_name

    with pytest.raises(UpgradeError):
        check_fd_name(name)


def test_socket_set_binds_then_passes_everything_in_order() -> None:
    """Without LISTEN_FDS, listen() binds; snapshot() lists bound and added sockets in order."""
    from sdactivate.upgrade.sockets import SocketSet

    sockets = SocketSet({})
    extra = socket.socket()
    try:
        first = sockets.listen("tcp", "127.0.0.1:0", name="web")
        sockets.add(extra, "extra")
        second = sockets.listen("tcp", "127.0.0.1:0")
        assert sockets.snapshot() == [(first, "web"), (extra, "extra"), (second, "unknown")]
        assert first.getsockname()[1] != second.getsockname()[1]
    finally:
        sockets.close()
    assert extra.fileno() == -1


def test_socket_set_by_name_checks_type_and_ambiguity() -> None:
    """By name, the Upgrader takes listen()'s rule (one rule, pick_inherited): the one socket
    of that name whatever its address, but one of another type, or several of that name
    none bound to the address, is an UpgradeError. (The copies disagreed: the Upgrader bound
    a new socket past one of another type, and took the first of several.)"""
    from sdactivate.addresses import parse_address
    from sdactivate.upgrade.sockets import SocketSet, _Entry

    udp = parse_address("udp:127.0.0.1:0").bind()
    webs = [parse_address("127.0.0.1:0").bind() for _ in range(2)]
    sockets = SocketSet({})
    sockets._loaded = True  # as if these had come in LISTEN_FDS
    sockets._entries = [_Entry(udp, "dns", claimed=False)]
    sockets._entries += [_Entry(sock, "web", claimed=False) for sock in webs]
    try:
        with pytest.raises(UpgradeError, match=r"is SOCK_DGRAM, but '127\.0\.0\.1:53' needs"):
            sockets.listen("tcp", "127.0.0.1:53", name="dns")
        with pytest.raises(UpgradeError, match="2 passed sockets are named 'web'"):
            sockets.listen("tcp", "127.0.0.1:1", name="web")
        second = f"127.0.0.1:{webs[1].getsockname()[1]}"
        assert sockets.listen("tcp", second, name="web") is webs[1]
        assert sockets.listen("tcp", "127.0.0.1:1", name="web") is webs[0]  # the one left
        assert sockets.listen("udp", "127.0.0.1:0") is udp
    finally:
        sockets.close()


def test_truncated_ready_is_not_ready() -> None:
    """A READY=1 in a datagram over 4096 bytes (MSG_TRUNC) does not count: it is dropped
    whole, as PID 1 and the supervisor drop it, so the child exits "before READY"."""
    code = (
        "import os, socket\n"
        "s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n"
        "s.sendto(b'READY=1\\nX=' + b'y' * 5000, '\\0' + os.environ['NOTIFY_SOCKET'][1:])\n"
        "raise SystemExit(7)\n"
    )
    upg = _upgrader(code, stable_time=10, upgrade_timeout=20)
    try:
        upg.ready()
        with pytest.raises(UpgradeError, match="exited with status 7 before READY"):
            upg.upgrade(timeout=30)
    finally:
        upg.close()


def test_foreign_notify_flood_is_logged_a_bounded_number_of_times(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """200 datagrams from a process that is not the new generation (here its own child):
    each is dropped, and the log says so once, then in one summary line per interval (the
    last one when the attempt ends), not once per datagram."""
    import logging

    flood = (
        "import socket, sys\n"
        "s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n"
        "for _ in range(200):\n"
        "    s.sendto(b'READY=1', '\\0' + sys.argv[1][1:])\n"
    )
    code = (
        "import os, subprocess, sys\n"
        f"subprocess.run([sys.executable, '-c', {flood!r}, os.environ['NOTIFY_SOCKET']],"
        " check=True)\n"
        "raise SystemExit(5)\n"
    )
    caplog.set_level(logging.INFO, logger="sdactivate.upgrade")
    upg = _upgrader(code, stable_time=10, upgrade_timeout=20)
    started = time.monotonic()
    try:
        upg.ready()
        with pytest.raises(UpgradeError, match="exited with status 5 before READY"):
            upg.upgrade(timeout=30)
    finally:
        upg.close()
    elapsed = time.monotonic() - started
    lines = [r.getMessage() for r in caplog.records if "notify message" in r.getMessage()]
    assert 2 <= len(lines) <= 2 + elapsed / 10, lines
    assert "ignored: not a generation" in lines[0]
    assert "more notify messages like the last one (sender) dropped" in lines[-1]
