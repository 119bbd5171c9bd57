"""The test matrix: the integration tier on each systemd, the hermetic tier on each Python.

    python integration/matrix.py                    # everything: 252 254 257 262
    python integration/matrix.py 257                # the host's hermetic tier, then 257's tiers
    python integration/matrix.py --tiers rootfs,integration 254 262
    python integration/matrix.py hermetic 262 -- -k conformance   # one tier, pytest args

Tiers, in this order:
- `hermetic` on the host's Python (3.11, this checkout's venv): `pytest tests`;
- per release: `rootfs` (its tree, built or found in the cache; integration/releases.py),
  `integration` (`pytest integration` with SDACTIVATE_SYSTEMD set: the sandbox boots that
  release), and, where the release's Python is not the host's, `hermetic` on that Python
  inside a booted sandbox of the release (the release's /usr/bin/python3 and Debian's own
  test packages, the checkout on PYTHONPATH).

A tree that cannot be built fails its release's tiers with the reason. The summary gives
each tier's wall time and pytest's counts, and ends with one `matrix: N passed, N failed`
line; the exit status is 1 if anything failed.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import functools
import io
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from integration.releases import (
    HOST_SYSTEMD,
    RELEASES,
    Release,
    RootfsBuildError,
    boot_release,
    by_version,
    ensure_rootfs,
)
from integration.sandbox import CHECKOUT, CODE_DIR

TIERS = ("hermetic", "rootfs", "integration")
INTEGRATION_TIMEOUT = 1500.0  # s; one release's integration tier takes ~3-5 min
HERMETIC_TIMEOUT = 1200.0
_COUNT = re.compile(r"(\d+) (passed|failed|errors?|skipped|xfailed|xpassed|deselected)\b")
_BOOT = re.compile(r"booted to 'running' in (\d+) ms")


@dataclass
class Outcome:
    """One tier's result: wall time, pytest's counts (or a failure without counts)."""

    name: str
    seconds: float = 0.0
    counts: dict[str, int] = field(default_factory=dict)
    returncode: int = 0
    note: str = ""

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def describe(self) -> str:
        counts = ", ".join(f"{n} {k}" for k, n in self.counts.items())
        status = "ok" if self.ok else f"FAILED (exit {self.returncode})"
        return f"{self.name:<42} {self.seconds:7.1f} s  {status:<18} {counts} {self.note}"


def _counts(lines: Sequence[str]) -> dict[str, int]:
    """pytest's closing counts (`3 failed, 950 passed, 2 skipped in 12.3s`)."""
    for line in reversed(lines):
        if re.search(r"\bin [\d.]+s\b", line) and _COUNT.search(line):
            counts = {}
            for number, kind in _COUNT.findall(line):
                counts["errors" if kind == "error" else kind] = int(number)
            return counts
    return {}


def _stream(
    argv: Sequence[str],
    *,
    env: dict[str, str] | None,
    timeout: float,
    popen: Callable[..., subprocess.Popen[str]] = subprocess.Popen,
    out: TextIO,
) -> Outcome:
    """Run argv (through `popen`) with its output passed through; its exit status and
    pytest's counts."""
    started = time.monotonic()
    lines: list[str] = []
    with popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        errors="replace",
        env=env,
    ) as proc:
        assert proc.stdout is not None
        deadline = started + timeout
        for line in proc.stdout:
            out.write(line)
            out.flush()
            lines.append(line.rstrip("\n"))
            if time.monotonic() > deadline:
                proc.kill()
                lines.append(f"matrix: killed after {timeout:.0f} s")
                break
        returncode = proc.wait()
    outcome = Outcome("", time.monotonic() - started, _counts(lines), returncode)
    boot = next((m for m in map(_BOOT.search, lines) if m), None)
    if boot is not None:
        outcome.note = f"(boot {boot.group(1)} ms)"
    if returncode != 0 and not outcome.counts:
        outcome.note = lines[-1] if lines else "no output"
    return outcome


def host_hermetic(pytest_args: Sequence[str], out: TextIO = sys.stdout) -> Outcome:
    """`pytest tests` on this interpreter (the host's Python, the checkout's venv)."""
    argv = [sys.executable, "-m", "pytest", "-q", "tests", *pytest_args]
    outcome = _stream(argv, env=None, timeout=HERMETIC_TIMEOUT, out=out)
    outcome.name = f"hermetic Python {sys.version_info[0]}.{sys.version_info[1]} (host)"
    return outcome


def release_hermetic(
    release: Release, pytest_args: Sequence[str], out: TextIO = sys.stdout
) -> Outcome:
    """`pytest tests` on the release's own Python, inside a booted sandbox of the release
    (its /tmp is a fresh tmpfs; the checkout is read-only at CODE_DIR, so no bytecode,
    no pytest cache; Hypothesis keeps its database under /tmp). Relative paths in
    `pytest_args` (tests/test_x.py::test_y) are taken inside the checkout."""
    name = f"hermetic Python {release.python} ({release.name})"
    # Paths relative to the checkout (tests/test_x.py::test_y) name the same file inside.
    inside = [
        f"{CODE_DIR}/{a}" if os.path.exists(Path(CHECKOUT, a.split("::")[0])) else a
        for a in pytest_args
    ]
    paths = [a for a in inside if a.startswith(f"{CODE_DIR}/")]
    started = time.monotonic()
    with boot_release(release) as box:
        # The checkout on the release's sys.path for every process, also those started with
        # a cleared environment (systemd-socket-activate passes no PYTHONPATH): a .pth in
        # the overlay, as the venv's editable install does on the host.
        site = f"/usr/local/lib/python{release.python}/dist-packages"
        box.write_file(f"{site}/sdactivate-checkout.pth", f"{CODE_DIR}\n")
        env = {"PYTHONDONTWRITEBYTECODE": "1"}
        if "CI" in os.environ:
            env["CI"] = os.environ["CI"]
        inner = [
            "/bin/sh",
            "-c",
            'cd /tmp && exec "$@"',
            "sh",
            "/usr/bin/python3",
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            *([] if paths else [f"{CODE_DIR}/tests"]),
            *inside,
        ]
        outcome = _stream(inner, env=env, timeout=HERMETIC_TIMEOUT, popen=box.popen, out=out)
        outcome.note = f"(boot {box.boot_seconds * 1000:.0f} ms)"
    outcome.name = name
    outcome.seconds = time.monotonic() - started
    return outcome


def integration(release: Release, pytest_args: Sequence[str], out: TextIO = sys.stdout) -> Outcome:
    """`pytest integration` against the release's systemd (SDACTIVATE_SYSTEMD)."""
    env = {**os.environ, "SDACTIVATE_SYSTEMD": str(release.systemd)}
    argv = [sys.executable, "-m", "pytest", "-q", "integration", *pytest_args]
    outcome = _stream(argv, env=env, timeout=INTEGRATION_TIMEOUT, out=out)
    outcome.name = f"integration systemd {release.systemd} ({release.name})"
    return outcome


def rootfs(release: Release, out: TextIO = sys.stdout) -> Outcome:
    """The release's tree: found in the cache, or built now (timed)."""
    outcome = Outcome(f"rootfs systemd {release.systemd} ({release.name})")
    started = time.monotonic()
    try:
        path = ensure_rootfs(release)
    except RootfsBuildError as exc:
        print(f"matrix: rootfs for {release.name}: {exc}", file=out, flush=True)
        outcome.returncode = 1
        outcome.note = str(exc).splitlines()[0]
    else:
        outcome.note = str(path)
    outcome.seconds = time.monotonic() - started
    return outcome


# One lane per release: its steps run in order, and a failed tree stops the lane.
Step = tuple[str, Callable[[TextIO], Outcome]]


def lanes(
    versions: Sequence[int], tiers: Sequence[str], pytest_args: Sequence[str]
) -> list[list[Step]]:
    host_python = f"{sys.version_info[0]}.{sys.version_info[1]}"
    result: list[list[Step]] = []
    for version in versions:
        release = RELEASES[version]
        lane: list[Step] = []
        if release.is_host and "hermetic" in tiers:
            lane.append(
                (
                    f"hermetic tier on the host's Python {host_python}",
                    functools.partial(host_hermetic, pytest_args),
                )
            )
        if not release.is_host and ("rootfs" in tiers or "integration" in tiers):
            lane.append(
                (
                    f"root file system for systemd {version} ({release.name})",
                    functools.partial(rootfs, release),
                )
            )
        if "integration" in tiers:
            lane.append(
                (
                    f"integration tier on systemd {version} ({release.name})",
                    functools.partial(integration, release, pytest_args),
                )
            )
        if "hermetic" in tiers and release.python != host_python:
            lane.append(
                (
                    f"hermetic tier on Python {release.python} ({release.name})",
                    functools.partial(release_hermetic, release, pytest_args),
                )
            )
        result.append(lane)
    if "hermetic" in tiers and HOST_SYSTEMD not in versions:
        result.insert(
            0,
            [
                (
                    f"hermetic tier on the host's Python {host_python}",
                    functools.partial(host_hermetic, pytest_args),
                )
            ],
        )
    return result


def run(
    versions: Sequence[int], tiers: Sequence[str], pytest_args: Sequence[str], *, jobs: int = 1
) -> int:
    """Run the lanes, `jobs` at a time. With jobs > 1 each step's output is held back and
    printed whole when the step ends, so the logs of parallel steps do not interleave."""
    started = time.monotonic()
    printing = threading.Lock()

    def header(text: str) -> str:
        return f"\n===== matrix: {text} =====\n"

    def run_lane(lane: list[Step]) -> list[Outcome]:
        outcomes: list[Outcome] = []
        for title, step in lane:
            if jobs == 1:
                sys.stdout.write(header(title))
                sys.stdout.flush()
                outcome = step(sys.stdout)
            else:
                with printing:
                    print(f"matrix: started {title}", flush=True)
                buffer = io.StringIO()
                outcome = step(buffer)
                with printing:
                    sys.stdout.write(header(title) + buffer.getvalue())
                    print(outcome.describe(), flush=True)
            outcomes.append(outcome)
            if not outcome.ok and outcome.name.startswith("rootfs"):
                break
        return outcomes

    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(run_lane, lane) for lane in lanes(versions, tiers, pytest_args)]
        outcomes = [outcome for future in futures for outcome in future.result()]
    total = time.monotonic() - started
    print(header(f"summary ({jobs} at a time)"), end="")
    for outcome in outcomes:
        print(outcome.describe())
    passed = sum(o.counts.get("passed", 0) for o in outcomes)
    failed = sum(o.counts.get("failed", 0) + o.counts.get("errors", 0) for o in outcomes)
    failed += sum(1 for o in outcomes if not o.ok and not o.counts)  # a build, a crash
    skipped = sum(o.counts.get("skipped", 0) for o in outcomes)
    print(f"{'total':<42} {total:7.1f} s")
    closing = f"matrix: {passed} passed, {failed} failed"
    print(closing + (f", {skipped} skipped" if skipped else ""), flush=True)
    return 0 if all(o.ok for o in outcomes) else 1


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    pytest_args: list[str] = []
    if "--" in args:
        cut = args.index("--")
        args, pytest_args = args[:cut], args[cut + 1 :]
    os.chdir(CHECKOUT)
    if args[:1] == ["hermetic"]:
        if len(args) != 2:
            print("usage: matrix.py hermetic VERSION [-- PYTEST_ARGS]", file=sys.stderr)
            return 2
        release = by_version(args[1])
        if release.is_host:
            outcome = host_hermetic(pytest_args)
        else:
            outcome = release_hermetic(release, pytest_args)
        print(outcome.describe())
        return outcome.returncode
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("versions", nargs="*", type=int, default=list(RELEASES))
    parser.add_argument(
        "--tiers",
        type=lambda text: text.split(","),
        default=list(TIERS),
        help=f"comma-separated, of {','.join(TIERS)} (default: all)",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=int(os.environ.get("SDACTIVATE_MATRIX_JOBS", "1")),
        help="releases tested at once (default $SDACTIVATE_MATRIX_JOBS or 1)",
    )
    opts = parser.parse_args(args)
    if set(opts.tiers) - set(TIERS):
        parser.error(f"--tiers: {opts.tiers!r}: choose from {','.join(TIERS)}")
    unknown = [v for v in opts.versions if v not in RELEASES]
    if unknown:
        known = " ".join(str(v) for v in RELEASES)
        parser.error(f"no release for systemd {unknown}; the matrix has {known}")
    versions = sorted(set(opts.versions), key=lambda v: (v != HOST_SYSTEMD, v))
    return run(versions, opts.tiers, pytest_args, jobs=max(1, opts.jobs))


if __name__ == "__main__":
    raise SystemExit(main())
