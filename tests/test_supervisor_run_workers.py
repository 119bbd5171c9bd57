"""`sdactivate run --workers N` with real processes and a real load, no systemd.

Same harness as tests/test_supervisor_run.py (the supervisor socket-activated with a
NotifyReceiver as its manager); faults per worker are FAULT_DIR/<generation>.<worker>. Every
wait is on a notify message, a control-socket answer or a deadline-bound poll of the status.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any

import pytest

from sdactivate.control.status import StatusReport, UnitStatus, render_table, supervisor_workers
from sdactivate.errors import SupervisorError
from sdactivate.supervisor.client import request_reload
from sdactivate.supervisor.workers import usable_cpus
from tests.support import wait_until
from tests.test_supervisor_run import Supervisor, assert_no_failures, load

OPTIONS = ("--workers", "4", "--ready-timeout", "3", "--drain-timeout", "2")


def workers(sup: Supervisor) -> list[dict[str, Any]]:
    return list(sup.status()["workers"])


def serving(sup: Supervisor, generation: int) -> dict[int, int]:
    """worker index -> pid, once exactly the 4 workers of ``generation`` are alive and READY."""

    def settled() -> dict[int, int] | None:
        ws = workers(sup)
        ok = len(ws) == 4 and all(
            w["generation"] == generation and w["state"] == "ready" for w in ws
        )
        return {w["worker"]: w["pid"] for w in ws} if ok else None

    return wait_until(settled, timeout=15, what=lambda: f"4 ready workers: {workers(sup)}")


def environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


@pytest.fixture
def sup(tmp_path: Path) -> Any:
    s = Supervisor(tmp_path, *OPTIONS)
    try:
        yield s
    finally:
        s.kill()


def test_four_workers_each_with_its_index_and_own_listen_pid(sup: Supervisor) -> None:
    """READY=1 once all 4 are ready; each has SDACTIVATE_WORKER=i and LISTEN_PID = its pid."""
    pids = serving(sup, 1)
    assert sorted(pids) == [0, 1, 2, 3]
    for index, pid in pids.items():
        env = environ(pid)
        assert env["SDACTIVATE_WORKER"] == str(index) and env["LISTEN_PID"] == str(pid)
        assert env["SDACTIVATE_GENERATION"] == "1"
    sup.rx.sync()
    assert sup.rx.count("READY", "1") == 1
    assert any("4/4 ready, generation 1" in (m.get("STATUS") or "") for m in sup.rx.messages)
    ws = workers(sup)
    assert all(w["restarts"] == 0 and w["uptime"] >= 0 for w in ws)


def test_handovers_under_load_fail_no_request(sup: Supervisor) -> None:
    """5 handovers of 4 workers under load: 0 failed requests; the old 4 all leave."""
    serving(sup, 1)
    h = load(sup, 30)
    for generation in range(2, 7):
        result = request_reload(sup.pid, timeout=20)
        assert result.ok and result.generation == generation, result.message
        assert "4/4 ready, generation" in result.message
    h.stop()
    res = h.result()
    assert_no_failures(res)
    pids = serving(sup, 6)
    assert set(pids.values()) <= {p for p in res.pids() if p} | set(pids.values())
    assert len({p for p in res.pids() if p}) >= 8  # the load crossed workers and generations


@pytest.mark.parametrize(
    ("fault", "words"),
    [
        ("exit-before-ready", "worker 3 (pid"),
        ("never-ready", "worker 3 sent no READY=1 within 3s"),
    ],
    ids=["exits-at-start-up", "never-ready"],
)
def test_worker_3_of_4_fails_old_generation_untouched(
    sup: Supervisor, fault: str, words: str
) -> None:
    """Worker 3 of the new generation fails: the reload says why, every new worker is
    stopped, the old 4 keep their pids and serve with 0 failures."""
    before = serving(sup, 1)
    (sup.faults / "2.3").write_text(fault)
    h = load(sup, 30)
    result = request_reload(sup.pid, timeout=20)
    assert not result.ok and result.exit_code == 1
    assert words in result.message and "generation 2 (4 workers) failed" in result.message
    assert result.generation == 1
    assert serving(sup, 1) == before  # every new worker gone, the old ones untouched
    h.stop()
    assert_no_failures(h.result())


def test_one_serving_worker_killed_is_replaced_alone(sup: Supervisor) -> None:
    """SIGKILL worker 2: a new worker 2 (restarts 1) in the same generation; the other three
    keep their pids; at most the one request it had accepted fails."""
    before = serving(sup, 1)
    h = load(sup, 30)
    os.kill(before[2], signal.SIGKILL)
    after = wait_until(
        lambda: (p := serving(sup, 1))[2] != before[2] and p,
        timeout=15,
        what=lambda: f"worker 2 replaced: {workers(sup)}",
    )
    h.stop()
    assert {i: p for i, p in after.items() if i != 2} == {i: p for i, p in before.items() if i != 2}
    (w2,) = [w for w in workers(sup) if w["worker"] == 2]
    assert w2["restarts"] == 1
    res = h.result()
    assert res.failed <= 1, res.summary()


def test_crash_loop_backs_off_and_the_others_serve(sup: Supervisor) -> None:
    """Worker 1 crashes 0.1 s after each READY: its restarts back off (STATUS= says so), the
    other three keep their pids and serve every request."""
    before = serving(sup, 1)
    (sup.faults / "1.1").write_text("crash-after-ready")  # read by each new worker 1
    h = load(sup, 30)
    os.kill(before[1], signal.SIGKILL)

    def backing_off() -> bool:
        return any(
            "worker 1 crashed 3 times in a row" in (m.get("STATUS") or "") for m in sup.rx.messages
        )

    sup.rx.wait_until(backing_off, timeout=20, what="STATUS= with worker 1's backoff")
    ws = {w["worker"]: w for w in workers(sup)}
    assert {i: ws[i]["pid"] for i in (0, 2, 3)} == {i: before[i] for i in (0, 2, 3)}
    assert all(ws[i]["state"] == "ready" for i in (0, 2, 3))
    h.stop()
    assert_no_failures(h.result())
    assert sup.proc.poll() is None  # the supervisor keeps going


def test_sdactivate_status_lists_each_worker(sup: Supervisor) -> None:
    """`sdactivate status`'s worker rows: read from the supervisor's control socket; a pid
    that is no supervisor has none."""
    pids = serving(sup, 1)
    ws = supervisor_workers(sup.pid)
    assert {w["worker"]: w["pid"] for w in ws} == pids
    service = UnitStatus("x.service", {"MainPID": sup.pid, "StatusText": "4/4 ready"})
    table = render_table(StatusReport("x", service, (), workers=ws))
    assert f"worker 3: pid {pids[3]}, generation 1, ready, up " in table
    assert "Workers" in table and "0 restarts" in table
    assert supervisor_workers(os.getpid()) == ()


def test_max_starting_bounds_the_start_up(tmp_path: Path) -> None:
    """--max-starting 1: worker 1 hangs before READY=1, so workers 2 and 3 never start; at
    --ready-timeout nothing serves and the supervisor exits 1."""
    faults = tmp_path / "faults"
    faults.mkdir()
    (faults / "1.1").write_text("never-ready")
    sup = Supervisor(
        tmp_path,
        *("--workers", "4", "--max-starting", "1", "--ready-timeout", "3"),
        *("--drain-timeout", "1"),
        wait_ready=False,
    )

    def started() -> list[dict[str, Any]] | None:
        try:
            ws = workers(sup)
        except SupervisorError:  # its control socket is not open yet
            return None
        return ws if any(w["worker"] == 1 for w in ws) else None

    try:
        seen = wait_until(started, timeout=10, what="worker 1 started")
        assert [(w["worker"], w["state"]) for w in seen] == [(0, "ready"), (1, "starting")]
        assert sup.proc.wait(20) == 1
        sup.rx.sync()
        text = " ".join(m.get("STATUS") or "" for m in sup.rx.messages)
        assert "worker 1 sent no READY=1 within 3s" in text and "nothing left to serve" in text
        assert sup.rx.count("READY", "1") == 0
    finally:
        sup.kill()


def test_health_check_with_workers_talks_to_worker_0(tmp_path: Path) -> None:
    """--health with 3 workers: the check reaches worker 0 of the new generation on its
    private socket (SDACTIVATE_WORKER=0 in its environment), then all 3 take over."""
    check = (
        f'{sys.executable} -c "'
        "import os,socket;s=socket.create_connection((os.environ['SDACTIVATE_HEALTH_HOST'],"
        "int(os.environ['SDACTIVATE_HEALTH_PORT'])));s.sendall(b'GET / HTTP/1.0\\r\\n\\r\\n');"
        "d=s.recv(999);assert d.endswith(b'pid='+os.environ['SDACTIVATE_PID'].encode()),d;"
        "open(os.environ['FAULT_DIR']+'/checked','a').write("
        "os.environ['SDACTIVATE_WORKER']+':'+os.environ['SDACTIVATE_PID']+' ')\""
    )
    sup = Supervisor(tmp_path, "--workers", "3", "--health", check, "--ready-timeout", "5")
    try:
        result = request_reload(sup.pid, timeout=20)
        assert result.ok, result.message
        pids = {w["worker"]: w["pid"] for w in workers(sup) if w["generation"] == 2}
        assert (sup.faults / "checked").read_text().split()[-1] == f"0:{pids[0]}"
        assert len(pids) == 3
    finally:
        sup.kill()


def test_workers_auto_runs_one_per_usable_cpu(tmp_path: Path) -> None:
    """--workers auto: as many workers as usable_cpus() counts for this process."""
    sup = Supervisor(tmp_path, "--workers", "auto")
    try:
        assert len(workers(sup)) == usable_cpus()
        assert "generation 1" in sup.status()["message"]
    finally:
        sup.kill()
