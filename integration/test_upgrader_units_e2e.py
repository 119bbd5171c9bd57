"""The checked-in generated `--upgrader` units (units/myapp-upgrader.*, examples/upgrader_app.py)
under real systemd: reloads under load move MainPID and lose nothing, and `systemctl stop`
after those handovers lets the non-child main process drain (its ExecStop= lines) instead of
systemd SIGKILLing it right after SIGTERM."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

from integration.helpers import http_get, main_pid, wait_state
from integration.sandbox import CHECKOUT, Sandbox, Units, free_port, wait_until

UNITS = Path(CHECKOUT) / "units"
PREFIX = "myapp-upgrader"
SERVICE = f"{PREFIX}.service"
SLOW_MS = 2000


def _install(units: Units, port: int, *, exec_stop: bool = True) -> None:
    """units/myapp-upgrader.* as generated; only the port moves to a free loopback one
    (``exec_stop=False``: without the ExecStop= lines, for the control experiment)."""
    files = {p.name: p.read_text(encoding="utf-8") for p in UNITS.glob(f"{PREFIX}.*")}
    assert sorted(files) == [f"{PREFIX}.service", f"{PREFIX}.socket"]
    assert "\nExecStop=-/usr/bin/tail --pid=${MAINPID} -s 0.1 -f /dev/null\n" in files[SERVICE]
    if not exec_stop:
        lines = files[SERVICE].splitlines(keepends=True)
        files[SERVICE] = "".join(line for line in lines if not line.startswith("ExecStop="))
    sock = files[f"{PREFIX}.socket"]
    assert "\nListenStream=8085\n" in sock
    files[f"{PREFIX}.socket"] = sock.replace(
        "\nListenStream=8085\n", f"\nListenStream=127.0.0.1:{port}\n"
    )
    units.install(files)


def _alone_in_cgroup(sandbox: Sandbox, pid: int) -> None:
    """Wait until ``pid`` is the only process left in the service's cgroup (the previous
    generations have drained and exited): where 252 SIGKILLs a non-child main process."""
    cgroup = sandbox.show(SERVICE, "ControlGroup")["ControlGroup"]

    def alone() -> bool:
        procs = sandbox.read_file(f"/sys/fs/cgroup{cgroup}/cgroup.procs").split()
        return [int(p) for p in procs] == [pid]

    wait_until(alone, timeout=15, what=f"pid {pid} alone in {cgroup}")


def _read_all(conn: socket.socket, data: bytes) -> bytes:
    while chunk := conn.recv(65536):
        data += chunk
    return data


def test_generated_upgrader_units_reload_then_stop_drains(
    sandbox: Sandbox, units: Units, measurements: Callable[[str], None]
) -> None:
    """Two `systemctl reload`s under 300 new connections/s (0 failures, MainPID moves each
    time), then `systemctl stop` with a 2 s request in flight on the third generation: the
    request completes (the drain ran), the stop waited for it, Result=success."""
    from bench import loadgen

    port = free_port()
    _install(units, port)
    sandbox.systemctl("start", f"{PREFIX}.socket")
    http_get("127.0.0.1", port)  # activates the service
    pids = [int(wait_state(sandbox, SERVICE, "active", sub="running")["MainPID"])]
    load = loadgen.start("127.0.0.1", port, rate=300, duration=30, timeout=5)
    try:
        time.sleep(0.5)  # steady load before the first reload (shapes the run, orders nothing)
        for _ in range(2):
            sandbox.systemctl("reload", SERVICE)
            wait_until(
                lambda: main_pid(sandbox, SERVICE) not in (0, pids[-1]), timeout=15, what="MainPID"
            )
            pids.append(main_pid(sandbox, SERVICE))
            wait_until(  # the new generation answers (the old one stops accepting)
                lambda: int(http_get("127.0.0.1", port)[1]["x-pid"]) == pids[-1],
                timeout=10,
                what="a response from the new main process",
            )
        time.sleep(0.5)
    finally:
        load.stop()
    res = load.result()
    assert res.total > 300 and res.failed == 0 and res.ok == res.total, res.summary()
    assert len(set(pids)) == 3, pids
    served = set(res.pids())
    assert pids[0] in served and pids[2] in served, (pids, served)

    _alone_in_cgroup(sandbox, pids[-1])
    conn = socket.create_connection(("127.0.0.1", port), timeout=30)
    try:
        conn.sendall(
            f"GET /sleep?ms={SLOW_MS} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode()
        )
        head = conn.recv(65536)  # upgrader_app sends the head first: the request is in flight
        assert head.startswith(b"HTTP/1.1 200"), head
        assert f"X-Pid: {pids[-1]}".encode() in head, head
        stopped = threading.Event()
        took: list[float] = []

        def stop() -> None:
            started = time.monotonic()
            sandbox.systemctl("stop", SERVICE)
            took.append(time.monotonic() - started)
            stopped.set()

        stopper = threading.Thread(target=stop, daemon=True)
        stopper.start()
        response = _read_all(conn, head)
    finally:
        conn.close()
    assert response.endswith(f"ok pid={pids[-1]}\n".encode()), response  # the drain finished it
    assert stopped.wait(30), "systemctl stop did not return"
    stopper.join(5)
    props = sandbox.show(SERVICE, "ActiveState", "Result", "MainPID")
    assert props == {"ActiveState": "inactive", "Result": "success", "MainPID": "0"}, props
    measurements(
        f"upgrader units: {res.total} conns at 300/s, 2 reloads, ok {res.ok}, failed"
        f" {res.failed}; systemctl stop with a {SLOW_MS} ms request in flight took"
        f" {took[0] * 1e3:.0f} ms"
    )


def test_without_exec_stop_252_kills_the_upgraded_main_process(
    sandbox: Sandbox, units: Units
) -> None:
    """Control: the same units without their ExecStop= lines. After one reload the main
    process is not systemd's child, and `systemctl stop` SIGKILLs it right after SIGTERM:
    the request in flight is cut off (what the generated ExecStop= lines prevent)."""
    port = free_port()
    _install(units, port, exec_stop=False)
    sandbox.systemctl("start", f"{PREFIX}.socket")
    http_get("127.0.0.1", port)
    first = int(wait_state(sandbox, SERVICE, "active", sub="running")["MainPID"])
    sandbox.systemctl("reload", SERVICE)
    wait_until(lambda: main_pid(sandbox, SERVICE) not in (0, first), timeout=15, what="MainPID")
    new = main_pid(sandbox, SERVICE)
    wait_until(
        lambda: int(http_get("127.0.0.1", port)[1]["x-pid"]) == new, timeout=10, what="new pid"
    )
    _alone_in_cgroup(sandbox, new)
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        conn.sendall(
            f"GET /sleep?ms={SLOW_MS} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode()
        )
        head = conn.recv(65536)
        assert f"X-Pid: {new}".encode() in head, head
        started = time.monotonic()
        sandbox.systemctl("stop", SERVICE)
        took = time.monotonic() - started
        try:
            response = _read_all(conn, head)
        except ConnectionResetError:
            response = head
    assert not response.endswith(b"ok pid=%d\n" % new), response
    assert took < SLOW_MS / 1000, took  # systemd did not wait for the drain
