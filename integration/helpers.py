"""Shared pieces of the end-to-end tests: units for examples/app.py, a tiny HTTP client, waits.

Units come from `sdactivate gen-units` (run on the host with this checkout's interpreter,
`--stdout`), so the tests exercise the generator's real output. Services run Debian's
/usr/bin/python3 on the checkout bound at CODE_DIR (PYTHONPATH), which stays visible under
the strict defaults (ProtectHome=yes, PrivateTmp=yes, DynamicUser=yes).
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from integration.releases import selected
from integration.sandbox import CHECKOUT, CODE_DIR, Sandbox, wait_until

PYTHON = "/usr/bin/python3"  # inside the sandbox (the release's own); not under /root or /tmp
APP = f"{CODE_DIR}/examples/app.py"
SYSTEMD_VERSION = selected().systemd  # the release under test ($SDACTIVATE_SYSTEMD)

__all__ = [
    "APP",
    "PYTHON",
    "RestartRun",
    "gen_units",
    "http_get",
    "listen_inodes",
    "main_pid",
    "restart_under_load",
    "sandbox_version",
    "sigkill_supervisor",
    "start_limit",
    "wait_state",
]


def gen_units(
    name: str,
    *,
    listens: Sequence[tuple[str, str | None]] = (),
    args: Sequence[str] = (),
    program: str = PYTHON,
    script: str | None = APP,
    options: Sequence[str] = (),
    version: int | None = None,
) -> dict[str, str]:
    """`sdactivate gen-units NAME --listen ADDR[=FDNAME]... --exec PROGRAM -- [SCRIPT] ARGS`
    as {file name: text}. `options` are extra generator flags (--no-network, --watchdog,
    --fdstore N, --accept ...); `version` the target (default SYSTEMD_VERSION)."""
    target = SYSTEMD_VERSION if version is None else version
    argv = [sys.executable, "-m", "sdactivate", "gen-units", name]
    for address, fd_name in listens:
        argv += ["--listen", address if fd_name is None else f"{address}={fd_name}"]
    argv += ["--environment", f"PYTHONPATH={CODE_DIR}", "--systemd-version", str(target)]
    # --no-preflight: built on the host for the sandbox, where the checkout is at CODE_DIR
    argv += [*options, "--stdout", "--no-preflight", "--exec", program, "--"]
    if script is not None:
        argv.append(script)
    argv += list(args)
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=CHECKOUT, check=False)
    if proc.returncode != 0:
        raise AssertionError(f"gen-units failed ({proc.returncode}): {argv}\n{proc.stderr}")
    return split_stdout(proc.stdout)


_FILE_MARK = re.compile(r"^### (\S+\.(?:socket|service))$")


def split_stdout(text: str) -> dict[str, str]:
    """Split gen-units --stdout output into files (`### NAME` starts each file)."""
    files: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        match = _FILE_MARK.match(line)
        if match:
            current = files.setdefault(match.group(1), [])
            continue
        if current is not None:
            current.append(line)
    if not files:
        raise AssertionError(f"cannot split gen-units output:\n{text}")
    return {name: "\n".join(lines).strip("\n") + "\n" for name, lines in files.items()}


def http_get(
    host: str, port: int, path: str = "/", *, timeout: float = 10.0
) -> tuple[int, dict[str, str], str]:
    """One GET on a new connection: (status, headers lower-cased, body)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect((host, port))
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    raw = b"".join(chunks).decode("latin-1")
    head, _, body = raw.partition("\r\n\r\n")
    lines = head.split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        key, _, value = line.partition(":")
        headers[key.strip().lower()] = value.strip()
    return status, headers, body


def sandbox_version(sandbox: Sandbox) -> int:
    """The version of the systemd running in `sandbox` (its manager's own report)."""
    return sandbox.systemd_version


def main_pid(sandbox: Sandbox, unit: str) -> int:
    """The unit's MainPID (in the sandbox's pid namespace), 0 if none."""
    return int(sandbox.show(unit, "MainPID")["MainPID"])


def wait_state(
    sandbox: Sandbox, unit: str, active: str, *, sub: str | None = None, timeout: float = 15
) -> dict[str, str]:
    """Wait until `unit` has ActiveState=`active` (and SubState=`sub`); its properties."""
    last: dict[str, str] = {}

    def check() -> bool:
        nonlocal last
        last = sandbox.show(unit, "ActiveState", "SubState", "MainPID", "NRestarts", "Result")
        return last["ActiveState"] == active and (sub is None or last["SubState"] == sub)

    try:
        wait_until(check, timeout=timeout, what=f"{unit} {active}/{sub}")
    except TimeoutError as exc:
        raise AssertionError(f"{unit}: wanted {active}/{sub}, last {last}") from exc
    return last


def timed(fn: object) -> float:
    """Seconds a call takes (used to report how long systemctl verbs block)."""
    assert callable(fn)
    start = time.monotonic()
    fn()
    return time.monotonic() - start


def listen_inodes(port: int) -> set[int]:
    """Inodes of the TCP sockets listening on `port` (the sandbox shares the host's netns)."""
    found: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state, inode = fields[1], fields[3], int(fields[9])
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                found.add(inode)
    return found


@dataclass
class RestartRun:
    """A load run with restarts inside it: the loadgen Result and the restart windows."""

    result: Any  # bench.loadgen.Result
    windows: list[tuple[float, float]]
    restart_seconds: list[float]

    def assert_no_failures(self) -> None:
        res = self.result
        counts = {k: getattr(res, k) for k in ("refused", "reset", "timeout", "lost", "error")}
        assert res.ok == res.total and not any(counts.values()), (
            f"{res.total} requests: ok {res.ok}, {counts}, errors {res.errors}"
        )

    def assert_only_in_flight_failed(
        self, kill: tuple[float, float], *, max_in_flight: int = 5
    ) -> None:
        """For a SIGKILL with no drain: the requests the killed process had already accepted
        may fail, nothing else. Each failure must be a reset or an EOF without response
        ("lost"), sent before the kill call (`kill` = its monotonic start, end) returned, and
        there are at most `max_in_flight` of them; nothing refused, nothing timed out."""
        res = self.result
        start, end = kill
        failed = [r for r in res.records if r.outcome != "ok"]
        for rec in failed:
            sent = rec.scheduled + rec.send_lag_s
            assert rec.outcome in ("reset", "lost"), f"{rec} failed but was not in flight"
            assert start - 1.0 <= sent <= end, f"{rec} sent {sent - start:+.3f} s from the kill"
        assert len(failed) <= max_in_flight, f"{len(failed)} requests failed: {failed}"

    def describe(self) -> str:
        from bench import loadgen

        res = self.result
        steady = loadgen.steady_stats(res, self.windows).latency
        inside = loadgen.window_stats(res, self.windows).latency
        rs = sorted(self.restart_seconds)
        ms = {k: v * 1e3 for k, v in inside.items() if k != "n"}
        base = {k: v * 1e3 for k, v in steady.items() if k != "n"}
        achieved = res.summary()["achieved_rate"]
        return (
            f"{res.total} conns at {res.rate:.0f}/s (achieved {achieved:.0f}/s),"
            f" {len(rs)} restarts (systemctl took median {rs[len(rs) // 2] * 1e3:.0f} ms,"
            f" max {rs[-1] * 1e3:.0f} ms): ok {res.ok}, refused {res.refused},"
            f" reset {res.reset}, timeout {res.timeout}, lost {res.lost}, error {res.error};"
            f" {len(res.pids())} server pids; outside restarts p99 {base['p99']:.1f} ms"
            f" max {base['max']:.1f} ms; restart windows (trigger to next trigger) p99"
            f" {ms['p99']:.1f} ms"
            f" max {ms['max']:.1f} ms (added p99 +{ms['p99'] - base['p99']:.1f} ms,"
            f" max +{ms['max'] - base['p99']:.1f} ms)"
        )


def restart_under_load(
    port: int,
    restart: Callable[[], object],
    *,
    restarts: int = 20,
    rate: float = 500.0,
    spacing: float = 0.25,
    steady: float = 1.0,
    timeout: float = 5.0,
) -> RestartRun:
    """Open-loop load (new connection per request) on 127.0.0.1:`port` while `restart()`
    runs `restarts` times, `spacing` s apart, with `steady` s of plain load before and after.
    The sleeps here shape measurement windows; they order nothing."""
    from bench import loadgen

    bound = steady * 2 + restarts * (spacing + 3.0) + 5.0
    handle = loadgen.start("127.0.0.1", port, rate=rate, duration=bound, timeout=timeout)
    windows: list[tuple[float, float]] = []
    took: list[float] = []
    try:
        time.sleep(steady)
        for _ in range(restarts):
            start = time.monotonic()
            restart()
            end = time.monotonic()
            took.append(end - start)
            # The window runs until the next restart: the queue that built up during the
            # gap is drained after `systemctl restart` returns.
            windows.append((start, end + spacing))
            time.sleep(spacing)
        time.sleep(steady)
    finally:
        handle.stop()
    return RestartRun(handle.result(), windows, took)


def start_limit(sandbox: Sandbox, unit: str) -> tuple[str, str]:
    """(StartLimitBurst, StartLimitIntervalUSec) as the sandbox's systemd read them."""
    shown = sandbox.show(unit, "StartLimitBurst", "StartLimitIntervalUSec")
    return shown["StartLimitBurst"], shown["StartLimitIntervalUSec"]


def start_handover(sandbox: Sandbox, unit: str) -> None:
    """`systemctl reload --no-block` a supervised unit and wait until its supervisor says a
    handover is under way (STATUS=upgrading...)."""
    sandbox.systemctl("reload", "--no-block", unit)
    wait_until(
        lambda: sandbox.show(unit, "StatusText")["StatusText"].startswith("upgrading"),
        timeout=10,
        interval=0.02,
        what="a handover under way",
    )


def sigkill_supervisor(
    sandbox: Sandbox, unit: str, *, mid_handover: bool = False
) -> Callable[[], None]:
    """A trigger for restart_under_load(): SIGKILL the unit's supervisor (with mid_handover,
    every other time while a handover is under way) and wait until systemd restarted the
    service (Restart=on-failure)."""
    count = [0]

    def kill() -> None:
        old = main_pid(sandbox, unit)
        restarts = int(sandbox.show(unit, "NRestarts")["NRestarts"])
        count[0] += 1
        if mid_handover and count[0] % 2 == 0:  # every other kill: during a handover
            start_handover(sandbox, unit)
        sandbox.run(["kill", "-KILL", str(old)])
        wait_until(
            lambda: (
                int(sandbox.show(unit, "NRestarts")["NRestarts"]) > restarts
                and sandbox.show(unit, "SubState")["SubState"] == "running"
            ),
            timeout=30,
            interval=0.05,
            what=f"{unit} restarted after SIGKILL",
        )

    return kill
