"""The chaos soak: a seeded random schedule of faults against generated `--supervise` units
under a real systemd, under open-loop load; every failed request is put on a cause.

    make soak                                    # 300 s on 252, a random seed (printed)
    make soak SOAK_SECONDS=600 SOAK_SEED=7 SOAK_SYSTEMD=257
    python integration/soak.py --seconds 60 --seed 7     # the same by hand (root)

The service: `gen-units NAME --listen 127.0.0.1:PORT=http --supervise` (socket + service,
the strict sandbox as generated) running integration/probes/soak_app.py, a raw-socket HTTP
app that is none of the adapters, so that what fails is the supervisor's. A drop-in adds
only LogsDirectory= (the app's log of which pid read which request) and, while the
generator cannot pass it, `--ready-timeout`. Load: loadgen's open loop, a new connection
per request, 500/s for the whole run. Faults (soak_plan.KINDS) run one at a time, each
after a random pause of plain load, and each ends when the service has settled: one
generation serving, no other left in the unit, no handover or job under way.

Checks at the end: every failed request has a cause, and the only cause allowed is a
serving generation SIGKILLed by the soak (the requests it had accepted); no stuck drain (the
supervisor never SIGKILLs at --drain-timeout, systemd never at TimeoutStopSec=); no zombie
child of the supervisor; the supervisor's fd count at its last settle is not above its
first; after `systemctl stop` nothing of the unit is left and nothing listens on the port.
integration/test_soak_e2e.py runs a short soak with a fixed seed in `make test`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import re
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from helpers import PYTHON, gen_units, listen_inodes
from sandbox import CHECKOUT, CODE_DIR, Sandbox, free_port
from soak_plan import (
    DIED_SERVING,
    KILLED_BY_SYSTEMD,
    KILLED_DRAINING,
    KILLED_NOT_READY,
    KILLED_SERVING,
    KILLED_STARTING,
    KINDS,
    Attributed,
    Checks,
    Death,
    Failed,
    Fault,
    FaultRecord,
    attribute,
    estimate,
    schedule,
    table,
)

sys.path.insert(0, str(Path(CHECKOUT) / "bench"))
import loadgen

__all__ = ["Config", "Report", "Soak"]

APP = f"{CODE_DIR}/integration/probes/soak_app.py"
_SERVING = re.compile(r"generation (\d+) \(pid (\d+)\) serving$")
_GENERATION = re.compile(r"generation (\d+)")
# The supervisor's log lines (supervisor/machine.py) for a handover's end
_FAILED = re.compile(r"^(?:sdactivate: )?upgrade failed: generation \d+ \(pid \d+\) failed: ")
_STARTED = re.compile(r"upgrade: starting generation \d+$")
_QUEUED = re.compile(r"reload queued until the current transition ends$")
_HANDED_OVER = re.compile(r"serving; generation \d+ \(pid \d+\) draining$|upgrade failed: ")


@dataclass(frozen=True)
class Config:
    seconds: float
    seed: int
    rate: float = 500.0
    ready_timeout: float = 4.0
    drain_timeout: float = 10.0
    service_ms: float = 10.0
    request_timeout: float = 15.0
    name: str = "sdsoak"
    require_every_kind: bool = False  # a short soak must still meet every kind

    @property
    def unit(self) -> str:
        return f"{self.name}.service"

    @property
    def settle_bound(self) -> float:
        """How long a fault may take to settle: a handover fails at --ready-timeout; an old
        generation has --drain-timeout; systemd's restart adds RestartSec= and a start."""
        return self.ready_timeout + self.drain_timeout + 15.0


@dataclass
class State:
    """One look at the unit: systemd's view and the app processes in its cgroup."""

    main: int  # MainPID (sandbox pid namespace)
    restarts: int
    sub: str
    status: str
    jobs: bool  # a job for the unit is queued or running
    apps: dict[int, int]  # app processes: sandbox pid -> host pid
    at: float = field(default_factory=time.monotonic)

    def serving(self) -> tuple[int, int] | None:
        """(generation, pid) the supervisor says is serving, if nothing else is going on."""
        m = _SERVING.search(self.status)
        if m is None or self.status.startswith("upgrading"):
            return None
        return int(m.group(1)), int(m.group(2))

    def settled(self) -> bool:
        """Running, one generation serving and it alone in the cgroup, no job under way."""
        got = self.serving()
        return (
            got is not None
            and self.sub == "running"
            and not self.jobs
            and set(self.apps) == {got[1]}
        )


class Unsettled(Exception):
    """The service did not settle within the bound; the message says what was awaited."""


class Soak:
    """One soak on a booted sandbox: install, run, check, stop. ``run()`` -> Report."""

    def __init__(self, sandbox: Sandbox, config: Config, *, port: int | None = None) -> None:
        self.box = sandbox
        self.cfg = config
        self.port = port if port is not None else free_port()
        self.cgroup = sandbox.cgroup / "system.slice" / config.unit
        self.version_file = f"/etc/{config.name}/version"
        self.faults: list[FaultRecord] = []
        self.deaths: list[Death] = []
        self.checks = Checks()
        self.versions: dict[int, str] = {}  # sandbox pid -> version it was started as
        self._version = ""

    # --- units ----------------------------------------------------------------------------
    def units(self) -> dict[str, str]:
        """The generated units plus the soak's drop-in."""
        cfg = self.cfg
        options = ["--supervise", "--python", PYTHON, "--timeout-stop", f"{cfg.drain_timeout:g}"]
        args = [
            "--log",
            f"/var/log/{cfg.name}/requests.log",
            "--version-file",
            self.version_file,
            "--service-ms",
            f"{cfg.service_ms:g}",
        ]
        ready = ["--ready-timeout", f"{cfg.ready_timeout:g}"]
        listens = [(f"127.0.0.1:{self.port}", "http")]
        version = self.box.systemd_version
        try:
            files = gen_units(
                cfg.name, listens=listens, options=options + ready, script=APP, args=args,
                version=version,
            )  # fmt: skip
            passed = True
        except AssertionError as exc:  # a generator without --ready-timeout (issue 16)
            if "--ready-timeout" not in str(exc):
                raise
            files = gen_units(
                cfg.name, listens=listens, options=options, script=APP, args=args,
                version=version,
            )  # fmt: skip
            passed = False
        service = files[cfg.unit]
        dropin = ["[Service]", "# soak_app.py --log: which process read which request"]
        dropin.append(f"LogsDirectory={cfg.name}")
        if not passed:
            (line,) = [x for x in service.splitlines() if x.startswith("ExecStart=")]
            head, sep, tail = line.partition(" -m sdactivate run ")
            assert sep, line
            dropin += [
                "# gen-units cannot pass --ready-timeout to `sdactivate run` yet",
                "ExecStart=",
                f"{head}{sep}{' '.join(ready)} {tail}",
            ]
        return files | {f"{cfg.unit}.d/50-soak.conf": "\n".join(dropin) + "\n"}

    def set_version(self, version: str) -> None:
        """What the next generation started will be (soak_app.py reads it at start-up)."""
        if version != self._version:
            self.box.write_file(self.version_file, version + "\n")
            self._version = version

    # --- looking --------------------------------------------------------------------------
    def state(self) -> State:
        shown = self.box.show(self.cfg.unit, "MainPID", "NRestarts", "SubState", "StatusText")
        jobs = self.box.run(["systemctl", "list-jobs", "--no-legend", self.cfg.unit]).stdout
        return State(
            main=int(shown["MainPID"]),
            restarts=int(shown["NRestarts"]),
            sub=shown["SubState"],
            status=shown["StatusText"],
            jobs=bool(jobs.strip()),
            apps=self._apps(),
        )

    def _apps(self) -> dict[int, int]:
        """App processes in the unit's cgroup (not the supervisor, not `sdactivate reload`):
        sandbox pid -> host pid, read from the host (cgroup.procs has the host's pids)."""
        try:
            procs = (self.cgroup / "cgroup.procs").read_text().split()
        except FileNotFoundError:
            return {}
        out: dict[int, int] = {}
        for raw in procs:
            host = int(raw)
            with contextlib.suppress(OSError):
                cmd = Path(f"/proc/{host}/cmdline").read_bytes().split(b"\0")
                if any(arg.endswith(b"soak_app.py") for arg in cmd) and b"run" not in cmd:
                    out[_ns_pid(host)] = host
        return out

    def wait(self, what: str, predicate: Callable[[State], bool], bound: float) -> State:
        """Poll until ``predicate(state)``; Unsettled after ``bound`` s."""
        deadline = time.monotonic() + bound
        last: State | None = None
        while True:
            last = self.state()
            if predicate(last):
                return last
            if time.monotonic() > deadline:
                raise Unsettled(f"{what} within {bound:g} s; last {last}")
            time.sleep(0.1)

    def settle(self, what: str, predicate: Callable[[State], bool] = lambda s: True) -> State:
        st = self.wait(what, lambda s: s.settled() and predicate(s), self.cfg.settle_bound)
        self._after_settle(st)
        return st

    def _after_settle(self, st: State) -> None:
        host = _host_pid(self.cgroup, st.main)
        if host is None:
            return
        with contextlib.suppress(OSError):
            fds = len(os.listdir(f"/proc/{host}/fd"))
            self.checks.fd_counts.setdefault(st.main, []).append(fds)
        zombies = _zombie_children(host)
        if zombies:  # reaping may lag by a loop turn: only a lasting zombie counts
            deadline = time.monotonic() + 2.0
            while zombies and time.monotonic() < deadline:
                time.sleep(0.05)
                zombies &= _zombie_children(host)
            self.checks.zombies += [f"pid {z} (host) under supervisor {st.main}" for z in zombies]

    # --- acting ---------------------------------------------------------------------------
    def _signal(self, host_pid: int, signum: int) -> bool:
        """Signal a process by its host pid through a pidfd (no pid-reuse race); False if
        it is gone."""
        try:
            fd = os.pidfd_open(host_pid)
        except ProcessLookupError:
            return False
        try:
            signal.pidfd_send_signal(fd, signum)
            return True
        except ProcessLookupError:
            return False
        finally:
            os.close(fd)

    def _host(self, st: State, pid: int) -> int:
        """The host pid of the unit's process ``pid`` (sandbox pid namespace)."""
        host = st.apps.get(pid) or _host_pid(self.cgroup, pid)
        if host is None:
            raise Unsettled(f"pid {pid} is not in {self.cfg.unit}; last {st}")
        return host

    def _reload(self) -> None:
        self.box.systemctl("reload", "--no-block", self.cfg.unit)

    def _new_generation(self, before: State) -> tuple[int, int]:
        """Wait for the generation a reload started: (sandbox pid, host pid)."""
        old = set(before.apps)
        st = self.wait("a new generation", lambda s: bool(set(s.apps) - old), self.cfg.settle_bound)
        (pid,) = set(st.apps) - old
        return pid, st.apps[pid]

    def run_fault(self, fault: Fault) -> FaultRecord:
        """Carry out one fault from a settled service; returns once it settled again."""
        before = self.settle("settled before the fault")
        gen, pid = before.serving() or (0, 0)
        start = time.monotonic()
        rec = FaultRecord(fault, start, start, start)
        kind = fault.kind
        if kind == "kill-serving":
            rec.trigger, rec.target = time.monotonic(), pid
            self._signal(self._host(before, pid), signal.SIGKILL)
            self.deaths.append(Death(pid, time.monotonic(), KILLED_SERVING))
            after = self.settle("a replacement serving", lambda s: _generation(s) > gen)
        elif kind in ("kill-starting", "stop-starting", "never-ready", "exit-at-start"):
            version = {"never-ready": "never-ready", "exit-at-start": "exit"}.get(kind, "slow")
            self.set_version(version)
            rec.trigger = time.monotonic()
            self._reload()
            if kind in ("kill-starting", "stop-starting"):
                new, host = self._new_generation(before)
                rec.target = new
                time.sleep(fault.delay)  # where in its start-up it is hit (shapes the fault)
                if kind == "kill-starting":
                    self._signal(host, signal.SIGKILL)
                    self.deaths.append(Death(new, time.monotonic(), KILLED_STARTING))
                else:
                    self._signal(host, signal.SIGSTOP)
                    if fault.variant == "cont":
                        self.wait(
                            "the supervisor to give up on the stopped generation",
                            lambda s: new not in s.apps or self.logged(_FAILED, rec.trigger) > 0,
                            self.cfg.settle_bound,
                        )
                        self._signal(host, signal.SIGCONT)
            after = self.settle(
                f"generation {gen} (pid {pid}) serving again after a failed handover",
                lambda s: s.serving() == (gen, pid) and self.logged(_FAILED, rec.trigger) > 0,
            )
            self.set_version("good")
        elif kind == "reload-burst":
            rec.trigger = time.monotonic()
            if fault.variant == "sighup":
                main = self._host(before, before.main)
                for _ in range(fault.count):
                    self._signal(main, signal.SIGHUP)
            else:
                loop = 'for _ in $(seq "$1"); do systemctl reload --no-block "$2"; done'
                self.box.run(["sh", "-c", loop, "sh", str(fault.count), self.cfg.unit])
            after = self.settle("every handover asked for done", lambda s: self._quiet(rec.trigger))
        elif kind == "kill-supervisor":
            rec.trigger, rec.target = time.monotonic(), before.main
            self._signal(self._host(before, before.main), signal.SIGKILL)
            after = self.settle(
                "systemd restarted the supervisor",
                lambda s: s.restarts > before.restarts and s.main != before.main,
            )
        else:
            raise ValueError(f"unknown fault kind {kind!r}")
        rec.end = after.at
        rec.note = after.status
        return rec

    # --- the run --------------------------------------------------------------------------
    def run(self) -> Report:
        cfg = self.cfg
        self.box.install_units(self.units())
        self.set_version("good")
        self.box.systemctl("start", f"{cfg.name}.socket", cfg.unit)
        self.settle("the first generation serving")
        load = loadgen.start(
            "127.0.0.1",
            self.port,
            rate=cfg.rate,
            duration=cfg.seconds + cfg.settle_bound + 10.0,
            timeout=cfg.request_timeout,
        )
        began = time.monotonic()
        try:
            for fault in _budget(schedule(cfg.seed), began + cfg.seconds, cfg.ready_timeout):
                time.sleep(fault.pause)  # plain load between faults: shapes, orders nothing
                try:
                    self.faults.append(self.run_fault(fault))
                except Unsettled as exc:
                    self.checks.unsettled.append(f"{fault.label()}: {exc}")
                    break
            left = began + cfg.seconds - time.monotonic()
            if left > 0 and not self.checks.unsettled:
                time.sleep(left)  # the rest of the run is plain load
            time.sleep(1.0)
        finally:
            load.stop()
        result = load.result()
        return self._finish(result, began)

    def _finish(self, result: loadgen.Result, began: float) -> Report:
        cfg = self.cfg
        read_by = _read_log(self.box.read_file(f"/var/log/{cfg.name}/requests.log"))
        self._stop_and_check()
        self.deaths += _deaths_from_journal(self._journal())
        self.checks.stuck_drains += [
            f"pid {d.pid}: {d.cause}"
            for d in self.deaths
            if d.cause in (KILLED_DRAINING, KILLED_BY_SYSTEMD)
        ]
        failed = [
            Failed(r.id, r.scheduled + (0.0 if math.isnan(lag) else lag), r.outcome)
            for r in result.records
            for lag in (r.send_lag_s,)
            if r.outcome != "ok"
        ]
        attributed = attribute(
            failed, read_by, self.deaths, self.faults, timeout=cfg.request_timeout
        )
        if cfg.require_every_kind:
            ran = {rec.fault.kind for rec in self.faults}
            self.checks.missing_kinds = [k for k in KINDS if k not in ran]
        return Report(
            config=cfg,
            systemd=self.box.systemd_version,
            faults=list(self.faults),
            attributed=attributed,
            requests=result.total,
            ok=result.ok,
            checks=self.checks,
            seconds=time.monotonic() - began,
            summary=result.summary(),
        )

    def _journal(self, lines: int | None = None) -> list[tuple[float, str]]:
        """(monotonic seconds, message) of the unit's journal entries (the last ``lines``)."""
        argv = ["journalctl", "--no-pager", "-o", "json", "-u", self.cfg.unit]
        argv += ["--output-fields=MESSAGE,__MONOTONIC_TIMESTAMP"]
        if lines is not None:
            argv += ["-n", str(lines)]
        entries = []
        for line in self.box.run(argv, timeout=120).stdout.splitlines():
            with contextlib.suppress(ValueError, KeyError, TypeError):
                entry = json.loads(line)
                entries.append((int(entry["__MONOTONIC_TIMESTAMP"]) / 1e6, str(entry["MESSAGE"])))
        return entries

    def logged(self, pattern: re.Pattern[str], since: float) -> int:
        """How many of the unit's recent journal lines since ``since`` match ``pattern``."""
        return sum(1 for at, msg in self._journal(200) if at >= since and pattern.search(msg))

    def _quiet(self, since: float) -> bool:
        """No handover under way or queued, by the supervisor's log since ``since``: a
        SIGHUP starts one or, during one, queues one more (logged once: any number of them
        coalesce; the kernel may also merge back-to-back SIGHUPs into one); every start has
        ended, in a takeover or a failure."""
        recent = [msg for at, msg in self._journal(200) if at >= since]
        starts = sum(1 for msg in recent if _STARTED.search(msg))
        queued = sum(1 for msg in recent if _QUEUED.search(msg))
        ended = sum(1 for msg in recent if _HANDED_OVER.search(msg))
        return starts >= 1 + queued and ended >= starts

    def _stop_and_check(self) -> None:
        cfg = self.cfg
        started = time.monotonic()
        self.box.run(
            ["systemctl", "stop", f"{cfg.name}.socket", cfg.unit], timeout=cfg.drain_timeout + 30
        )
        self.checks.stop_seconds = time.monotonic() - started
        left = self.checks.left_after_stop
        for unit in (cfg.unit, f"{cfg.name}.socket"):
            active = self.box.show(unit, "ActiveState")["ActiveState"]
            if active != "inactive":
                left.append(f"{unit} {active}")
        with contextlib.suppress(FileNotFoundError):
            procs = (self.cgroup / "cgroup.procs").read_text().split()
            left += [f"host pid {p} in {cfg.unit}" for p in procs]
        for path in Path(self.box.cgroup).rglob("cgroup.procs"):
            with contextlib.suppress(OSError):
                for raw in path.read_text().split():
                    cmd = Path(f"/proc/{raw}/cmdline").read_bytes()
                    if b"soak_app.py" in cmd:
                        left.append(f"host pid {raw} ({path.parent.name}): soak_app.py")
        if listen_inodes(self.port):
            left.append(f"a socket listening on port {self.port}")


@dataclass
class Report:
    config: Config
    systemd: int
    faults: list[FaultRecord]
    attributed: list[Attributed]
    requests: int
    ok: int
    checks: Checks
    seconds: float
    summary: dict[str, object]

    def not_allowed(self) -> list[Attributed]:
        return [a for a in self.attributed if not a.allowed]

    def violations(self) -> list[str]:
        """Every way the soak missed its target (empty: it passed)."""
        out = list(self.checks.violations())
        unexplained = self.requests - self.ok - len(self.attributed)
        if unexplained:
            out.append(f"{unexplained} failed requests without a cause")
        for cause, n in _count(a.cause for a in self.not_allowed()).items():
            out.append(f"{n} failed requests: {cause}")
        return out

    def table(self) -> str:
        cfg = self.config
        lat = self.summary.get("latency_ms", {})
        title = (
            f"chaos soak: systemd {self.systemd}, seed {cfg.seed}, {self.seconds:.0f} s at"
            f" {cfg.rate:g} req/s (achieved {float(self.summary.get('achieved_rate', 0.0)):.0f}),"  # type: ignore[arg-type]
            f" --ready-timeout {cfg.ready_timeout:g} --drain-timeout {cfg.drain_timeout:g},"
            f" service time {cfg.service_ms:g} ms; latency p50/p99/max"
            f" {_fmt(lat, 'p50')}/{_fmt(lat, 'p99')}/{_fmt(lat, 'max')} ms"
        )
        return table(
            title=title,
            faults=self.faults,
            attributed=self.attributed,
            requests=self.requests,
            ok=self.ok,
            checks=self.checks,
        )

    def failures(self, limit: int = 20) -> str:
        """The first ``limit`` not-allowed failures, one per line (for a failed test)."""
        return "\n".join(
            f"  rid {a.request.rid} sent {a.request.sent:.3f} {a.request.outcome}:"
            f" {a.cause} [{a.fault or '-'}]"
            for a in self.not_allowed()[:limit]
        )


def _generation(st: State) -> int:
    """The serving generation's number (0 if none)."""
    got = st.serving()
    return got[0] if got else 0


def _fmt(values: object, key: str) -> str:
    value = values.get(key) if isinstance(values, dict) else None
    return f"{value:.1f}" if isinstance(value, float) else "-"


def _count(items: Iterator[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in items:
        out[item] = out.get(item, 0) + 1
    return out


def _budget(faults: Iterator[Fault], end: float, ready_timeout: float) -> Iterator[Fault]:
    """The scheduled faults that still fit before ``end`` (the first that does not ends it)."""
    for fault in faults:
        if time.monotonic() + estimate(fault, ready_timeout=ready_timeout) > end:
            return
        yield fault


def _ns_pid(host_pid: int) -> int:
    """The pid of host process ``host_pid`` in its innermost pid namespace (NSpid:)."""
    for line in Path(f"/proc/{host_pid}/status").read_text().splitlines():
        if line.startswith("NSpid:"):
            return int(line.split()[-1])
    raise OSError(f"no NSpid for {host_pid}")


def _host_pid(cgroup: Path, ns_pid: int) -> int | None:
    """The host pid of sandbox pid ``ns_pid`` among the unit's processes."""
    with contextlib.suppress(OSError):
        for raw in (cgroup / "cgroup.procs").read_text().split():
            with contextlib.suppress(OSError):
                if _ns_pid(int(raw)) == ns_pid:
                    return int(raw)
    return None


def _zombie_children(host_pid: int) -> set[int]:
    """Children of ``host_pid`` (any of its threads) that are zombies (proc(5))."""
    out: set[int] = set()
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{host_pid}/task"):
            with contextlib.suppress(OSError):
                for child in Path(f"/proc/{host_pid}/task/{tid}/children").read_text().split():
                    with contextlib.suppress(OSError):
                        stat = Path(f"/proc/{child}/stat").read_text()
                        if stat.rsplit(")", 1)[1].split()[0] == "Z":
                            out.add(int(child))
    return out


def _read_log(text: str) -> dict[int, int]:
    """soak_app.py's request log: request id -> pid that read it."""
    out: dict[int, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0].isdigit() and parts[1].isdigit():
            out[int(parts[0])] = int(parts[1])
    return out


_JOURNAL_RULES = (
    (re.compile(r"generation \d+ \(pid (\d+)\) failed: no READY=1"), KILLED_NOT_READY),
    (re.compile(r"generation \d+ \(pid (\d+)\) still running .* SIGKILL"), KILLED_DRAINING),
    (re.compile(r"generation \d+ \(pid (\d+)\) (?:killed|exited) .* while serving"), DIED_SERVING),
    (re.compile(r"Killing process (\d+) \(.*\) with signal SIGKILL"), KILLED_BY_SYSTEMD),
)


def _deaths_from_journal(entries: list[tuple[float, str]]) -> list[Death]:
    """Processes the supervisor or systemd killed (or that died serving), from their logs.
    A serving generation the soak killed is logged too ('killed by SIGKILL while serving'):
    the soak's own record of it comes first in ``attribute``'s choice (same pid, earlier)."""
    out = []
    for at, message in entries:
        for pattern, cause in _JOURNAL_RULES:
            m = pattern.search(message)
            if m:
                out.append(Death(int(m.group(1)), at, cause))
    return out


def main(argv: list[str] | None = None) -> int:
    """`python integration/soak.py [--seconds S] [--seed N]`: boot the release's sandbox
    ($SDACTIVATE_SYSTEMD, default 252), soak, print the table; exit 1 on a violation."""
    from releases import boot_release, selected

    parser = argparse.ArgumentParser(description=main.__doc__)
    seconds = float(os.environ.get("SOAK_SECONDS") or 300)
    parser.add_argument("--seconds", type=float, default=seconds)
    seed_env = os.environ.get("SOAK_SEED") or ""
    parser.add_argument("--seed", type=int, default=int(seed_env) if seed_env else None)
    parser.add_argument("--rate", type=float, default=500.0)
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 31)
    release = selected()
    print(f"soak: systemd {release.systemd}, {args.seconds:g} s, seed {seed}"
          f" (SOAK_SEED={seed} replays this schedule)", flush=True)  # fmt: skip
    box = boot_release(release)
    try:
        report = Soak(box, Config(seconds=args.seconds, seed=seed, rate=args.rate)).run()
    finally:
        box.close()
    print(report.table())
    bad = report.violations()
    if bad:
        print(report.failures(), file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
