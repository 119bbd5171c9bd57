"""The workers benchmarks of issue 15 ("Show"), through ``sdactivate run --workers N``.

    .venv/bin/python bench/workers.py                        # all three, about 3 minutes
    .venv/bin/python bench/workers.py --only scaling --seconds 5 --rounds 3

* ``scaling``: throughput of a CPU-bound handler (``--work-ms`` of pure-Python work per
  request, iterations calibrated once on the services' interpreter and the same for every
  worker) at ``--workers 1`` and ``--workers 2``, measured by wrk (closed loop, 16
  connections, a new connection per request), rounds interleaved 1, 2, 1, 2...; the ratio
  is median(2) / median(1) of the same run. Also the RSS of each worker and of the
  supervisor after the load.
* ``handover``: ``bench/run.py``'s run of mode ``C3:4@bench`` (4 workers, the bench app)
  under 1000 new connections/s with ``--handovers`` handovers: failures by kind, window
  p99.9 - steady p99.9, window max, handover time (SIGHUP .. READY and every old worker
  gone) and the supervisor's CPU per handover.
* ``faults``: one supervisor with 4 workers under 1000 new connections/s, in turn:
  ``kill`` (a serving worker SIGKILLed: the failures are the requests it had accepted;
  its replacement's time), ``exit`` and ``never-ready`` (a reload whose worker 3 of 4 exits
  at start-up, or never sends READY: 0 failures, the old workers untouched, the reload's
  answer and reason), ``crash-loop`` (worker 2 SIGKILLed while its replacements exit at
  start-up for ``--crash-seconds``: the other three keep the full rate; the STATUS= lines
  seen; then recovery).

Results: one JSON line per measure on stdout, and ``bench/results/workers/<date>.json`` +
``latest.md``. Loopback only; every run bounded in time and count. If ``sdactivate run``
has no ``--workers`` (issue 15 not merged), every part reports itself unavailable.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import functools
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import loadgen, modes, run
from bench.modes.base import PYTHON, ROOT, ModeUnavailable, alive, children, proc_sample
from bench.modes.local import SupervisorHandover, run_lacks
from sdactivate.errors import SdActivateError
from sdactivate.supervisor.client import request_reload
from tests.support import free_port, wait_until

RESULTS = Path(__file__).resolve().parent / "results" / "workers"
WORKER_ENV = "SDACTIVATE_WORKER"  # issue 15: each worker's index, 0..N-1
# s before a SIGKILL that a window starts: the killed worker's requests were scheduled before
# it (steady p99.9 here is ~10 ms; one such request fell in the steady state without this)
_IN_FLIGHT = 0.5
_READY = re.compile(r"(\d+)/(\d+) ready")  # issue 15: STATUS= "N/N ready, generation g"


def calibrate(work_ms: float) -> int:
    """Iterations of bench/modes/app.py's ``_busy`` that take ``work_ms`` on the services'
    interpreter: the fastest of 30 timings of 20000 iterations, after a warm-up (the
    machine's own noise only ever slows a timing down; the warm-up lets the interpreter
    specialise the loop as a serving worker's has)."""
    code = (
        "import time; from bench.modes.app import _busy\n"
        "_busy(200000)\n"
        "best = min((lambda t: (_busy(20000), time.perf_counter() - t)[1])(time.perf_counter())"
        " for _ in range(30))\n"
        "print(best)"
    )
    out = subprocess.run(
        [PYTHON, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    ).stdout
    return max(1, round(20000 * work_ms / 1e3 / float(out)))


def _supervisor(
    workers: int, app_extra: list[str], ready_timeout: float = 30.0
) -> SupervisorHandover:
    m = SupervisorHandover(
        port=free_port(),
        app="bench",
        pin=False,
        workers=workers,
        ready_timeout=ready_timeout,
        app_extra=app_extra,
    )
    m.log = modes.base.scratch_dir() / f"workers-{workers}-{m.port}.log"
    m.check()
    return m


def _wrk(port: int, seconds: float) -> dict[str, Any]:
    argv = ["wrk", "-t1", "-c16", f"-d{seconds:g}s", "--latency", "-H", "Connection: close"]
    out = subprocess.run(
        [*argv, f"http://127.0.0.1:{port}/"],
        capture_output=True,
        text=True,
        timeout=seconds + 30,
        check=False,
    ).stdout
    got: dict[str, Any] = {"rps": 0.0}
    for ln in out.splitlines():
        parts = ln.split()
        if ln.startswith("Requests/sec"):
            got["rps"] = float(parts[1])
        elif ln.strip().startswith("Non-2xx") or "Socket errors" in ln:
            got["errors"] = ln.strip()
        elif len(parts) == 2 and parts[0] in ("50%", "99%"):
            got["p" + parts[0][:-1]] = parts[1]
    return got


def scaling(args: argparse.Namespace) -> dict[str, Any]:
    """Throughput at --workers 1 and 2 (interleaved rounds), RSS of workers and supervisor."""
    if shutil.which("wrk") is None:
        return {"skipped": "wrk not installed (apt-get install wrk)"}
    iters = calibrate(args.work_ms)
    out: dict[str, Any] = {"work_ms": args.work_ms, "work_iters": iters, "rounds": []}
    rps: dict[int, list[float]] = {1: [], 2: []}
    for r in range(args.rounds):
        for n in (1, 2):
            m = _supervisor(n, ["--work-iters", str(iters)])
            try:
                m.start()
                _wrk(m.port, 1)  # warm-up: every worker has served
                assert m.proc is not None
                before = [s for p in children(m.proc.pid) if (s := proc_sample(p))]
                t = time.monotonic()
                got = _wrk(m.port, args.seconds)
                wall = time.monotonic() - t
                sup = proc_sample(m.proc.pid)
                kids = [s for p in children(m.proc.pid) if (s := proc_sample(p))]
                # the CPU the workers got: on a shared machine, less than N cores
                cpu = sum(k.cpu_s for k in kids) - sum(b.cpu_s for b in before)
                got["workers_cpu_pct"] = round(cpu / wall * 100)
                # what one request costs a worker (the handler's work + HTTP + accept)
                got["cpu_ms_per_req"] = round(cpu * 1e3 / (got["rps"] * wall), 3)
                got["rps_per_cpu"] = round(got["rps"] * wall / cpu) if cpu else None
            finally:
                m.stop()
            rps[n].append(got["rps"])
            row = {
                "round": r,
                "workers": n,
                **got,
                "supervisor_rss_mb": round(sup.rss_kb / 1024, 1) if sup else None,
                "worker_rss_mb": [round(k.rss_kb / 1024, 1) for k in kids],
            }
            out["rounds"].append(row)
            print(json.dumps({"scaling": row}), flush=True)
    one, two = statistics.median(rps[1]), statistics.median(rps[2])
    out["rps_1"], out["rps_2"] = one, two
    out["ratio"] = round(two / one, 3) if one else None
    last = out["rounds"][-1]
    out["supervisor_rss_mb"] = last["supervisor_rss_mb"]
    out["worker_rss_mb"] = last["worker_rss_mb"]
    return out


def handover(args: argparse.Namespace) -> dict[str, Any]:
    """bench/run.py's run of C3:4@bench with ``--handovers`` restarts, new connections."""
    cfg = run.parse(
        [
            "--restarts",
            str(args.handovers),
            "--rate",
            str(args.rate),
            "--workloads",
            "new",
            "--app",
            "bench",
            "--pin",
            "off",
        ]
    )
    cfg.pin = False
    pool = modes.SandboxPool()  # unused by C3; run_one takes one
    try:
        got = run.run_one("C3:4@bench", "new", cfg, pool)
    finally:
        pool.close()
    got.pop("series", None)
    return got


class _Faults:
    """One supervisor (4 workers, the bench app with a fault file) and its notify messages."""

    def __init__(self, args: argparse.Namespace, scratch: Path) -> None:
        self.fault = scratch / "fault"
        self.fault.write_text("")
        self.n = 4
        self.m = _supervisor(self.n, ["--fault-file", str(self.fault)], args.ready_timeout)
        self.windows: dict[str, list[tuple[float, float]]] = {}
        self.rows: list[dict[str, Any]] = []
        self.notes: set[str] = set()

    @property
    def sup(self) -> int:
        assert self.m.proc is not None
        return self.m.proc.pid

    def workers(self) -> dict[int, int]:
        """Serving pid -> its worker index (from its environment)."""
        out = {}
        for pid in children(self.sup):
            with contextlib.suppress(OSError, ValueError):
                env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
                for kv in env:
                    if kv.startswith(WORKER_ENV.encode() + b"="):
                        out[pid] = int(kv.split(b"=", 1)[1])
        return out

    def statuses(self, since: int) -> list[str]:
        assert self.m.rx is not None
        return [s for msg in self.m.rx.messages[since:] if (s := msg.get("STATUS"))]

    def all_ready(self, since: int) -> bool:
        got = [_READY.search(s) for s in self.statuses(since)]
        last = next((g for g in reversed(got) if g), None)
        return last is not None and last.group(1) == last.group(2) == str(self.n)

    def _replaced(self, gone: int, since: int, timeout: float) -> float:
        """Wait for ``gone``'s replacement: N workers, ``gone`` not among them, STATUS N/N."""

        def replaced() -> bool:
            if not alive(self.sup):
                raise RuntimeError(f"the supervisor exited: {modes.base.log_tail(self.m.log, 3)}")
            return gone not in children(self.sup) and len(self.workers()) == self.n

        wait_until(replaced, timeout=timeout, interval=0.005, what="a replacement worker")
        spawned = time.monotonic()
        try:  # READY: the supervisor's STATUS says N/N again
            wait_until(lambda: self.all_ready(since), timeout=5.0, interval=0.005)
        except TimeoutError:  # a supervisor without that STATUS form: the spawn is all we see
            self.notes.add(f"no STATUS={self.n}/{self.n} ready within 5 s of a replacement")
            return spawned
        return time.monotonic()

    def kill(self, k: int) -> None:
        assert self.m.rx is not None
        pid = sorted(self.workers())[k % self.n]
        since = len(self.m.rx.messages)
        t = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        done = self._replaced(pid, since, 30.0)
        # from before the kill: a request it had accepted was scheduled earlier
        self.windows.setdefault("kill", []).append((t - _IN_FLIGHT, done + 0.5))
        self.rows.append({"fault": "kill", "pid": pid, "replaced_ms": round((done - t) * 1e3, 1)})

    def failing_reload(self, kind: str) -> None:
        """A reload whose worker 3 exits at start-up / never gets ready: it must fail."""
        before = set(self.workers())
        self.fault.write_text(f"{kind}:3")
        try:
            t = time.monotonic()
            res = request_reload(self.sup, timeout=60.0)
            done = time.monotonic()
        finally:
            self.fault.write_text("")
        wait_until(lambda: len(children(self.sup)) == self.n, timeout=30.0, interval=0.005)
        after = set(self.workers())
        self.windows.setdefault(kind, []).append((t, done + 0.5))
        self.rows.append(
            {
                "fault": kind,
                "reload_ok": res.ok,
                "reason": res.message,
                "old_untouched": before == after,
                "reload_ms": round((done - t) * 1e3, 1),
            }
        )

    def crash_loop(self, seconds: float) -> None:
        """Worker 2 SIGKILLed while its replacements exit at start-up, for ``seconds``."""
        assert self.m.rx is not None
        victim = next(p for p, i in self.workers().items() if i == 2)
        self.fault.write_text("exit:2")
        since = len(self.m.rx.messages)
        seen: set[int] = set()
        t = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        while time.monotonic() < t + seconds:  # sampling, not ordering: attempts seen
            seen.update(children(self.sup))
            time.sleep(0.01)
        end = time.monotonic()
        self.fault.write_text("")
        statuses = self.statuses(since)
        try:
            done = self._replaced(victim, len(self.m.rx.messages), 120.0)
            recovered = round(done - end, 2)
        except TimeoutError:
            recovered = None
        self.windows.setdefault("crash-loop", []).append((t - _IN_FLIGHT, end))
        self.rows.append(
            {
                "fault": "crash-loop",
                "seconds": round(end - t, 2),
                "start_attempts_seen": len(seen - {victim} - set(self.workers())),
                "statuses": sorted(set(statuses))[:8],
                "recovered_s_after_fix": recovered,
            }
        )


def faults(args: argparse.Namespace) -> dict[str, Any]:
    scratch = Path(tempfile.mkdtemp(prefix="workers-faults-", dir=modes.base.scratch_dir()))
    f = _Faults(args, scratch)
    reps = args.repeat
    budget = 3 + reps * 3 + reps * 4 + reps * (args.ready_timeout + 4) + args.crash_seconds + 60
    try:
        f.m.start()
        h = loadgen.start("127.0.0.1", f.m.port, rate=args.rate, duration=budget, timeout=3.0)
        plan: list[tuple[str, Callable[[], None]]] = [
            *(("kill", functools.partial(f.kill, k)) for k in range(reps)),
            *(("exit", functools.partial(f.failing_reload, "exit")) for _ in range(reps)),
            *(
                ("never-ready", functools.partial(f.failing_reload, "never-ready"))
                for _ in range(reps)
            ),
            ("crash-loop", functools.partial(f.crash_loop, args.crash_seconds)),
        ]
        plan = [(name, step) for name, step in plan if name in args.faults.split(",")]
        try:
            time.sleep(1.5)  # steady state first (measurement, not ordering)
            t = time.monotonic()
            for name, step in plan:
                if not alive(f.sup):  # the rest cannot run; its failures are no steady state
                    f.rows.append({"fault": name, "error": "not run: the supervisor is gone"})
                    f.windows.setdefault("supervisor gone", [(t, time.monotonic() + 60)])
                    h.stop()
                    continue
                t = time.monotonic()
                try:
                    step()
                except (TimeoutError, RuntimeError, SdActivateError) as exc:
                    f.rows.append(
                        {
                            "fault": name,
                            "error": f"{type(exc).__name__}: {exc}"[:300],
                            "log_tail": modes.base.log_tail(f.m.log, 6),
                        }
                    )
                time.sleep(1.0)
        finally:
            h.stop()
        res = h.result()
    finally:
        f.m.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    every = [w for ws in f.windows.values() for w in ws]
    steady = loadgen.steady_stats(res, [*every, (res.t0 - 1.0, res.t0 + 1.0)])
    out: dict[str, Any] = {
        "rate": args.rate,
        "total": res.total,
        "failed": res.failed,
        "steady": _stats(steady),
        "rows": f.rows,
        "notes": sorted(f.notes),
        "windows": {},
    }
    for name, ws in f.windows.items():
        st = loadgen.window_stats(res, ws)
        span = sum(b - a for a, b in ws)
        out["windows"][name] = {
            **_stats(st),
            "ok_per_s": round(st.counts["ok"] / span, 1) if span else None,
        }
    return out


def _stats(st: loadgen.Stats) -> dict[str, Any]:
    lat = {k: round(v * 1e3, 2) for k, v in st.latency.items() if k != "n"}
    return {
        "requests": st.total,
        "failed": st.failed,
        "counts": {k: v for k, v in st.counts.items() if v and k != "ok"},
        "latency_ms": lat,
    }


def markdown(data: dict[str, Any]) -> str:
    lines = [f"# sdactivate run --workers benchmarks — {data['date']}", "", data["machine"], ""]
    lines += [f"Command: `{data['command']}`", ""]
    sc = data.get("scaling")
    if sc:
        lines += ["## Scaling (CPU-bound handler)", ""]
        if "skipped" in sc:
            lines += [f"skipped: {sc['skipped']}", ""]
        else:
            lines += [
                f"{sc['work_ms']} ms of pure-Python work per request ({sc['work_iters']} "
                f"iterations); wrk -t1 -c16, a new connection per request, "
                f"{len(sc['rounds']) // 2} interleaved rounds each.",
                "",
                "| workers | req/s (median) | req/s per round | workers' CPU % per round | "
                "req/s per worker CPU-s | worker CPU ms per request | supervisor RSS MB | "
                "worker RSS MB |",
                "|---|---|---|---|---|---|---|---|",
            ]
            for n in (1, 2):
                mine = [r for r in sc["rounds"] if r["workers"] == n]
                lines.append(
                    f"| {n} | {sc[f'rps_{n}']:.0f} | "
                    f"{', '.join(str(round(r['rps'])) for r in mine)} | "
                    f"{', '.join(str(r.get('workers_cpu_pct')) for r in mine)} | "
                    f"{', '.join(str(r.get('rps_per_cpu')) for r in mine)} | "
                    f"{', '.join(str(r.get('cpu_ms_per_req')) for r in mine)} | "
                    f"{mine[-1]['supervisor_rss_mb']} | "
                    f"{', '.join(map(str, mine[-1]['worker_rss_mb']))} |"
                )
            lines += [
                "",
                f"**Ratio 2 / 1 workers: {sc['ratio']}x** (target >= 1.7x). The machine is "
                "shared: the CPU % column is what the workers got (200% = both cores), and "
                "req/s per worker CPU-s what each CPU second served.",
                "",
            ]
    ho = data.get("handover")
    if ho:
        lines += ["## Handover at N=4 under load", ""]
        if "skipped" in ho:
            lines += [f"skipped: {ho['skipped']}", ""]
        else:
            c, w, s = ho["counts"], ho["window_ms"] or {}, ho["steady_ms"]
            sup = ho.get("supervisor", {})
            lines += [
                f"{ho['restarts']} handovers, {ho['rate']:g} new connections/s: "
                f"{c['ok']}/{c['total']} ok, refused {c['refused']}, reset {c['reset']}, "
                f"timeout {c['timeout']}, lost {c['lost'] + c['error']}.",
                f"Window p99.9 {w.get('p99.9')} ms - steady p99.9 {s.get('p99.9')} ms = "
                f"**{ho.get('added_ms', {}).get('p99.9', '?')} ms**; window max "
                f"**{w.get('max')} ms**; handover {ho['restart_ms']['median']} ms median, "
                f"{ho['restart_ms']['max']} ms max; supervisor CPU "
                f"{sup.get('cpu_ms_per_restart', '?')} ms per handover, RSS "
                f"{sup.get('rss_mb', '?')} MB.",
                "",
            ]
    fa = data.get("faults")
    if fa:
        lines += ["## Faults at N=4 under load", ""]
        if "skipped" in fa:
            lines += [f"skipped: {fa['skipped']}", ""]
        else:
            st = fa["steady"]
            lines += [
                f"{fa['rate']:g} new connections/s; {fa['total']} requests, {fa['failed']} "
                f"failed in all. Steady: p99 {st['latency_ms'].get('p99')} ms.",
                "",
                "| fault | requests in windows | failed (kinds) | ok/s | p99 / max ms |",
                "|---|---|---|---|---|",
            ]
            for name, w in fa["windows"].items():
                lines.append(
                    f"| {name} | {w['requests']} | {w['failed']} {w['counts'] or ''} | "
                    f"{w['ok_per_s']} | {w['latency_ms'].get('p99')} / "
                    f"{w['latency_ms'].get('max')} |"
                )
            lines += ["", "Per fault:", ""]
            lines += [f"- `{json.dumps(r)}`" for r in fa["rows"]]
            lines += [f"- note: {n}" for n in fa.get("notes", [])]
            lines.append("")
    return "\n".join(lines)


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", default="scaling,handover,faults")
    p.add_argument("--rate", type=float, default=1000.0)
    p.add_argument("--work-ms", type=float, default=1.0)
    p.add_argument("--seconds", type=float, default=5.0, help="per scaling measurement")
    p.add_argument("--rounds", type=int, default=3, help="scaling rounds (1 then 2 workers)")
    p.add_argument("--handovers", type=int, default=20)
    p.add_argument("--repeat", type=int, default=3, help="kills and failing reloads each")
    p.add_argument("--ready-timeout", type=float, default=3.0, help="for the fault run")
    p.add_argument("--crash-seconds", type=float, default=5.0)
    p.add_argument("--faults", default="kill,exit,never-ready,crash-loop", help="which ones")
    p.add_argument("--out", type=Path, default=RESULTS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    data: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": " ".join(["bench/workers.py", *(sys.argv[1:] if argv is None else argv)]),
        "config": {k: str(v) for k, v in vars(args).items()},
    }
    env = run.environment()
    data["machine"] = (
        f"Machine: {env['nproc']} CPU ({env['cpu']}), kernel {env['kernel']}, services "
        f"{env['service_python']}, git {env['git']}; load average at start "
        f"{env['loadavg_start']}."
    )
    parts = {"scaling": scaling, "handover": handover, "faults": faults}
    lacks = run_lacks("--workers")
    for name in args.only.split(","):
        try:
            if lacks is not None:
                raise ModeUnavailable(lacks)
            data[name] = parts[name](args)
        except ModeUnavailable as exc:
            data[name] = {"skipped": str(exc)}
        except Exception as exc:  # one part failing leaves the others' figures
            traceback.print_exc()
            data[name] = {"skipped": f"failed: {type(exc).__name__}: {str(exc)[:300]}"}
        print(json.dumps({name: {k: v for k, v in data[name].items() if k != "series"}}))
    data["loadavg_end"] = Path("/proc/loadavg").read_text().strip()
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = data["date"].replace("-", "").replace(":", "")
    (args.out / f"{stamp}.json").write_text(json.dumps(data, indent=1, default=str))
    text = markdown(data)
    for path in (args.out / f"{stamp}.md", args.out / "latest.md"):
        path.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
