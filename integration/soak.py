"""The chaos soak: a seeded random schedule of faults against generated `--supervise` units
under a real systemd, under open-loop load; every failed request is put on a cause.

    make soak                                    # 300 s on 252, a random seed (printed)
    make soak SOAK_SECONDS=600 SOAK_SEED=7 SOAK_SYSTEMD=257
    python integration/soak.py --seconds 60 --seed 7     # by hand (root; $SDACTIVATE_SYSTEMD)

The service: `gen-units NAME --listen 127.0.0.1:PORT=http --supervise` (socket + service,
the strict sandbox as generated) running integration/probes/soak_app.py, a raw-socket HTTP
app that is none of the adapters, so that what fails is the supervisor's. A drop-in adds
LogsDirectory= (the app's log of which pid read which request) and, while the generator
cannot pass it, `--ready-timeout`. Load: loadgen's open loop, a new connection per request,
500/s for the whole run. Faults (soak_plan.KINDS) run one at a time, each after a random
pause of plain load, in rounds of every kind once; the first round runs whole however short
the soak, later ones while they fit in --seconds. Each fault ends when the service has
settled: one generation serving and alone in the unit, no job and no handover under way or
queued.

Checks (soak_plan.Checks, Report.violations): every failed request has a cause, and the one
cause allowed is a serving generation SIGKILLed by the soak (what it had accepted); no
stuck drain (the supervisor SIGKILLs no generation still running after its stop signal,
but one the soak SIGSTOPped and left so; systemd SIGKILLs nothing at TimeoutStopSec=;
every fault settles within its bound); no lasting zombie child of the
supervisor; its fd count at its last settle is not above its first; the listening socket
is the same one at the end (the socket unit keeps it through supervisor restarts); after
`systemctl stop` nothing of the unit is left and nothing listens on the port.
integration/test_soak_e2e.py runs a short soak with a fixed seed in `make test`.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import loadgen
from integration.helpers import PYTHON, gen_units, listen_inodes
from integration.sandbox import CODE_DIR, Sandbox, free_port
from integration.soak_plan import (
    DIED_SERVING,
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
    stuck_drains,
    table,
)
from integration.soak_watch import (
    FAILED,
    State,
    Watcher,
    deaths_from_journal,
    drain_seconds,
    fd_count,
    read_request_log,
    send_signal,
    zombie_children,
)

__all__ = ["Config", "Report", "Soak", "Unsettled"]

APP = f"{CODE_DIR}/integration/probes/soak_app.py"
# soak_app.py's behaviour for a fault's new generation (its --version-file)
_VERSIONS = {
    "kill-starting": "slow",
    "stop-starting": "slow",
    "never-ready": "never-ready",
    "exit-at-start": "exit",
}


@dataclass(frozen=True)
class Config:
    seconds: float
    seed: int
    rate: float = 500.0
    ready_timeout: float = 4.0
    drain_timeout: float = 10.0
    service_ms: float = 10.0  # soak_app.py answers each request after this long
    request_timeout: float = 15.0  # loadgen's bound per request
    name: str = "sdsoak"

    @property
    def unit(self) -> str:
        return f"{self.name}.service"

    @property
    def settle_bound(self) -> float:
        """How long a fault may take to settle: a handover fails at --ready-timeout, an old
        generation has --drain-timeout, a systemd restart adds RestartSec= and a start."""
        return self.ready_timeout + self.drain_timeout + 15.0


class Unsettled(Exception):
    """The service did not settle within the bound; the message says what was awaited."""


class Soak:
    """One soak on a booted sandbox: ``run()`` installs the units, runs the load and the
    faults, stops the units, checks, and returns the Report."""

    def __init__(self, sandbox: Sandbox, config: Config, *, port: int | None = None) -> None:
        self.box = sandbox
        self.cfg = config
        self.port = port if port is not None else free_port()
        self.watch = Watcher(sandbox, config.unit, app="soak_app.py")
        self.version_file = f"/etc/{config.name}/version"
        self.faults: list[FaultRecord] = []
        self.deaths: list[Death] = []
        self.checks = Checks()
        self.left_stopped: set[int] = set()  # generations SIGSTOPped and never continued
        self._version = ""

    # --- units ----------------------------------------------------------------------------
    def units(self) -> dict[str, str]:
        """The generated units plus the soak's drop-in."""
        cfg = self.cfg
        options = ["--supervise", "--python", PYTHON, "--timeout-stop", f"{cfg.drain_timeout:g}"]
        ready = ["--ready-timeout", f"{cfg.ready_timeout:g}"]
        args = ["--log", f"/var/log/{cfg.name}/requests.log", "--version-file", self.version_file]
        args += ["--service-ms", f"{cfg.service_ms:g}"]

        def generate(extra: list[str]) -> dict[str, str]:
            return gen_units(
                cfg.name,
                listens=[(f"127.0.0.1:{self.port}", "http")],
                options=options + extra,
                script=APP,
                args=args,
                version=self.box.systemd_version,
            )

        dropin = ["[Service]", "# soak_app.py --log: which process read which request"]
        dropin.append(f"LogsDirectory={cfg.name}")
        try:
            files = generate(ready)
        except AssertionError as exc:  # issue 16: gen-units has no --ready-timeout yet
            if "--ready-timeout" not in str(exc):
                raise
            files = generate([])
            (line,) = [x for x in files[cfg.unit].splitlines() if x.startswith("ExecStart=")]
            head, sep, tail = line.partition(" -m sdactivate run ")
            assert sep, line
            dropin += ["ExecStart=", f"{head}{sep}{' '.join(ready)} {tail}"]
        return files | {f"{cfg.unit}.d/50-soak.conf": "\n".join(dropin) + "\n"}

    def set_version(self, version: str) -> None:
        """What the next generation will be (soak_app.py reads it at start-up)."""
        if version != self._version:
            self.box.write_file(self.version_file, version + "\n")
            self._version = version

    # --- waiting --------------------------------------------------------------------------
    def wait(self, what: str, predicate: Callable[[State], bool]) -> State:
        """Poll the unit until ``predicate(state)``; Unsettled after the settle bound."""
        deadline = time.monotonic() + self.cfg.settle_bound
        while True:
            state = self.watch.state()
            if predicate(state):
                return state
            if time.monotonic() > deadline:
                raise Unsettled(f"{what} within {self.cfg.settle_bound:g} s; last {state}")
            time.sleep(0.1)

    def settle(self, what: str, predicate: Callable[[State], bool] = lambda s: True) -> State:
        """Wait until settled and ``predicate``; then look for zombie children of the
        supervisor and count its fds. The unit's cgroup lists no zombie, so a generation
        that just exited may not be reaped yet, its pidfd still open: a zombie counts if it
        outlives 2 s, the fds once back at the supervisor's first count or after 1 s."""
        state = self.wait(what, lambda s: s.settled() and predicate(s))
        host = state.main_host
        if host is None:
            return state
        zombies = zombie_children(host)
        deadline = time.monotonic() + 2.0
        while zombies and time.monotonic() < deadline:
            time.sleep(0.05)
            zombies &= zombie_children(host)
        for zombie in (f"host pid {z}, child of {state.main}" for z in sorted(zombies)):
            if zombie not in self.checks.zombies:  # seen again at a later settle
                self.checks.zombies.append(zombie)
        counts = self.checks.fd_counts.setdefault(state.main, [])
        deadline = time.monotonic() + 1.0
        try:
            fds = fd_count(host)
            while counts and fds > counts[0] and time.monotonic() < deadline:
                time.sleep(0.05)
                fds = fd_count(host)
        except OSError:  # the supervisor is gone (a later fault will say why)
            return state
        counts.append(fds)
        return state

    def _new_generation(self, before: State) -> tuple[int, int]:
        """The generation a reload started, once it runs the app: (sandbox pid, host pid)."""
        state = self.wait("a new generation", lambda s: bool(set(s.apps) - set(before.apps)))
        (pid,) = set(state.apps) - set(before.apps)
        return pid, state.apps[pid]

    # --- faults ---------------------------------------------------------------------------
    def run_fault(self, fault: Fault) -> FaultRecord:
        """Carry out one fault on the settled service; return once it has settled again."""
        before = self.settle("settled before the fault")
        gen, pid = before.serving() or (0, 0)
        rec = FaultRecord(fault, time.monotonic(), 0.0, 0.0)
        if fault.kind == "kill-serving":
            rec.trigger, rec.target = time.monotonic(), pid
            send_signal(before.apps[pid], signal.SIGKILL)
            self.deaths.append(Death(pid, rec.trigger, KILLED_SERVING))
            after = self.settle("a replacement serving", lambda s: s.generation() > gen)
        elif fault.kind in _VERSIONS:
            self._failed_handover(fault, rec, before)
            after = self.settle(
                f"generation {gen} (pid {pid}) serving after a failed handover",
                lambda s: s.serving() == (gen, pid) and self.watch.logged(FAILED, rec.trigger) > 0,
            )
            self.set_version("good")
        elif fault.kind == "reload-burst":
            rec.trigger = time.monotonic()
            if fault.variant == "sighup":
                assert before.main_host is not None
                for _ in range(fault.count):
                    send_signal(before.main_host, signal.SIGHUP)
            else:
                loop = 'for _ in $(seq "$1"); do systemctl reload --no-block "$2"; done'
                self.box.run(["sh", "-c", loop, "sh", str(fault.count), self.cfg.unit])
            after = self.settle("the handovers asked for", lambda s: self.watch.quiet(rec.trigger))
        elif fault.kind == "kill-supervisor":
            assert before.main_host is not None
            rec.trigger, rec.target = time.monotonic(), before.main
            send_signal(before.main_host, signal.SIGKILL)
            after = self.settle(
                "systemd restarted the supervisor",
                lambda s: s.restarts > before.restarts and s.main != before.main,
            )
        else:
            raise ValueError(f"unknown fault kind {fault.kind!r}")
        rec.end, rec.note = after.at, after.status
        return rec

    def _failed_handover(self, fault: Fault, rec: FaultRecord, before: State) -> None:
        """Start a handover to a faulty version; kill or stop it if the fault says so."""
        self.set_version(_VERSIONS[fault.kind])
        rec.trigger = time.monotonic()
        self.box.systemctl("reload", "--no-block", self.cfg.unit)
        if fault.kind not in ("kill-starting", "stop-starting"):
            return
        new, host = self._new_generation(before)
        rec.target = new
        time.sleep(fault.delay)  # where in its start-up it is hit: shapes the fault
        if fault.kind == "kill-starting":
            self.deaths.append(Death(new, time.monotonic(), KILLED_STARTING))
            send_signal(host, signal.SIGKILL)
            return
        send_signal(host, signal.SIGSTOP)
        if fault.variant == "left":
            self.left_stopped.add(new)
        else:  # SIGCONT once the supervisor gave up on it
            self.wait(
                "the supervisor to give up on the stopped generation",
                lambda s: new not in s.apps or self.watch.logged(FAILED, rec.trigger) > 0,
            )
            send_signal(host, signal.SIGCONT)

    # --- the run --------------------------------------------------------------------------
    def run(self) -> Report:
        cfg = self.cfg
        self.box.install_units(self.units())
        self.set_version("good")
        self.box.systemctl("start", f"{cfg.name}.socket", cfg.unit)
        self.settle("the first generation serving")
        listening = listen_inodes(self.port)
        # Ended by stop() while its schedule still runs: a first round of faults that all
        # take their settle bound still fits. (loadgen's child writes its result in one
        # write(2) under PYTHONUNBUFFERED=1, which a stop() during that write truncates.)
        load = loadgen.start(
            "127.0.0.1",
            self.port,
            rate=cfg.rate,
            duration=cfg.seconds + len(KINDS) * cfg.settle_bound + 30.0,
            timeout=cfg.request_timeout,
        )
        began = time.monotonic()
        try:
            for fault in _fitting(schedule(cfg.seed), began + cfg.seconds, cfg.ready_timeout):
                time.sleep(fault.pause)  # plain load between faults: shapes, orders nothing
                try:
                    self.faults.append(self.run_fault(fault))
                except Unsettled as exc:
                    self.checks.unsettled.append(f"{fault.label()}: {exc}")
                    break
            else:
                time.sleep(max(0.0, began + cfg.seconds - time.monotonic()))  # plain load
            time.sleep(1.0)  # the last fault's requests answered before the load ends
        finally:
            load.stop()
        result = load.result()
        if listen_inodes(self.port) != listening:
            self.checks.listeners.append(
                f"port {self.port}: inodes {sorted(listening)} at the start,"
                f" {sorted(listen_inodes(self.port))} at the end"
            )
        return self._finish(result, time.monotonic() - began)

    def _finish(self, result: loadgen.Result, seconds: float) -> Report:
        cfg = self.cfg
        read_by = read_request_log(self.box.read_file(f"/var/log/{cfg.name}/requests.log"))
        self._stop()
        journal = self.watch.journal()
        # The supervisor logs the soak's own kills of serving generations as deaths "while
        # serving": the soak's record (taken before the signal) is the one that counts.
        killed = {d.pid for d in self.deaths if d.cause == KILLED_SERVING}
        self.deaths += [
            d
            for d in deaths_from_journal(journal)
            if not (d.cause == DIED_SERVING and d.pid in killed)
        ]
        self.checks.drains = drain_seconds(journal)
        self.checks.stuck_drains += stuck_drains(self.deaths, self.left_stopped)
        ran = {rec.fault.kind for rec in self.faults}
        self.checks.missing_kinds = [kind for kind in KINDS if kind not in ran]
        failed = [
            Failed(r.id, r.scheduled + (0.0 if math.isnan(lag) else lag), r.outcome)
            for r in result.records
            if r.outcome != "ok"
            for lag in (r.send_lag_s,)
        ]
        return Report(
            config=cfg,
            systemd=self.box.systemd_version,
            faults=list(self.faults),
            attributed=attribute(
                failed, read_by, self.deaths, self.faults, timeout=cfg.request_timeout
            ),
            requests=result.total,
            ok=result.ok,
            checks=self.checks,
            seconds=seconds,
            summary=result.summary(),
        )

    def _stop(self) -> None:
        """`systemctl stop` both units; record how long it took and what is left."""
        cfg = self.cfg
        started = time.monotonic()
        self.box.run(["systemctl", "stop", f"{cfg.name}.socket", cfg.unit], timeout=60)
        self.checks.stop_seconds = time.monotonic() - started
        left = self.checks.left_after_stop
        for unit in (cfg.unit, f"{cfg.name}.socket"):
            active = self.box.show(unit, "ActiveState")["ActiveState"]
            if active != "inactive":
                left.append(f"{unit} {active}")
        left += [f"host pid {p} in {cfg.unit}" for p in self.watch.procs()]
        for procs in Path(self.box.cgroup).rglob("cgroup.procs"):
            for raw in procs.read_text().split():
                try:
                    argv = Path(f"/proc/{raw}/cmdline").read_bytes()
                except OSError:
                    continue
                if b"soak_app.py" in argv:
                    left.append(f"soak_app.py, host pid {raw} in {procs.parent.name}")
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
    summary: dict[str, Any]

    def not_allowed(self) -> list[Attributed]:
        return [a for a in self.attributed if not a.allowed]

    def violations(self) -> list[str]:
        """Every way the soak missed its target (empty: it passed)."""
        out = list(self.checks.violations())
        unexplained = self.requests - self.ok - len(self.attributed)
        if unexplained:
            out.append(f"{unexplained} failed requests without a cause")
        for cause, n in Counter(a.cause for a in self.not_allowed()).items():
            out.append(f"{n} failed requests: {cause}")
        return out

    def table(self) -> str:
        cfg = self.config
        lat = self.summary["latency_ms"]
        title = (
            f"chaos soak: systemd {self.systemd}, seed {cfg.seed}, {self.seconds:.0f} s of"
            f" {cfg.rate:g} req/s (achieved {self.summary['achieved_rate']:.0f}/s), new"
            f" connection per request, {cfg.service_ms:g} ms each; --ready-timeout"
            f" {cfg.ready_timeout:g} --drain-timeout {cfg.drain_timeout:g}; latency"
            f" p50 {lat['p50']:.1f} p99 {lat['p99']:.1f} max {lat['max']:.1f} ms"
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
        """The first ``limit`` failures not allowed, one per line (for a failed test)."""
        return "\n".join(
            f"  request {a.request.rid} sent at {a.request.sent:.3f}: {a.request.outcome},"
            f" {a.cause} [{a.fault or 'no fault'}]"
            for a in self.not_allowed()[:limit]
        )


def _fitting(faults: Iterator[Fault], end: float, ready_timeout: float) -> Iterator[Fault]:
    """The scheduled faults: the first round whole (every kind once, however short the
    soak), then while they fit before ``end`` (the first that does not ends it)."""
    for n, fault in enumerate(faults):
        late = time.monotonic() + estimate(fault, ready_timeout=ready_timeout) > end
        if late and n >= len(KINDS):
            return
        yield fault


def main(argv: list[str] | None = None) -> int:
    """`python integration/soak.py [--seconds S] [--seed N]`: boot the release's sandbox
    ($SDACTIVATE_SYSTEMD, default 252), soak, print the table; exit 1 on a violation."""
    from integration.releases import boot_release, selected

    parser = argparse.ArgumentParser(description=main.__doc__)
    seconds = float(os.environ.get("SOAK_SECONDS") or 300)
    parser.add_argument("--seconds", type=float, default=seconds, help="default $SOAK_SECONDS")
    seed = os.environ.get("SOAK_SEED") or ""
    parser.add_argument("--seed", type=int, default=int(seed) if seed else None)
    parser.add_argument("--rate", type=float, default=500.0)
    args = parser.parse_args(argv)
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(1 << 31)
    release = selected()
    print(
        f"soak: systemd {release.systemd}, {args.seconds:g} s, seed {args.seed}"
        f" (SOAK_SEED={args.seed} replays the schedule)",
        flush=True,
    )
    box = boot_release(release)
    try:
        report = Soak(box, Config(seconds=args.seconds, seed=args.seed, rate=args.rate)).run()
    finally:
        box.close()
    print(report.table())
    if report.violations():
        print(report.failures(), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
