"""``sdactivate status|start|stop|restart|reload``: control units over D-Bus.

Parsing and printing only; the logic is in :mod:`sdactivate.control` (imported lazily,
it needs jeepney) and, for ``reload --pid``, in :mod:`sdactivate.supervisor.client`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any

from ..supervisor import settings

_JOB_HELP = {
    "start": "start a unit and wait until it is active (READY=1 for Type=notify)",
    "stop": "stop a unit and wait until it is inactive",
    "restart": "restart a unit and wait until it is active again, or report why not",
    "reload": "reload a unit (or an `sdactivate run` supervisor with --pid) and wait",
}
_DEFAULT_TIMEOUT = 90.0
# a day: beyond it socket timeouts overflow, long before any job ends
_MAX_TIMEOUT = settings.RELOAD_TIMEOUT_MAX


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < value <= _MAX_TIMEOUT:  # NaN and inf included
        raise argparse.ArgumentTypeError(
            f"timeout must be a number of seconds > 0 and <= {_MAX_TIMEOUT:.0f}: {text!r}"
        )
    return value


def _positive_pid(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a pid: {text!r}") from None
    if value <= 1:
        raise argparse.ArgumentTypeError(f"not a supervisor pid: {text!r}")
    return value


def _add_user(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--user", action="store_true", help="talk to the user's service manager (systemctl --user)"
    )


def _add_status(subparsers: argparse._SubParsersAction[Any]) -> None:
    p = subparsers.add_parser(
        "status",
        help="show a service and its sockets (state, PID, status text, fd store, watchdog)",
        description="NAME without a suffix shows both NAME.service and NAME.socket.",
    )
    p.add_argument("name", metavar="NAME", help="unit name, e.g. myapp or myapp.service")
    p.add_argument("--json", action="store_true", help="print JSON (systemd property names)")
    _add_user(p)
    p.set_defaults(func=_cmd_status)


def _add_job(subparsers: argparse._SubParsersAction[Any], verb: str) -> None:
    p = subparsers.add_parser(verb, help=_JOB_HELP[verb])
    if verb == "reload":
        p.add_argument("name", metavar="NAME", nargs="?", help="unit name (default .service)")
        p.add_argument(
            "--pid",
            type=_positive_pid,
            help="reload the `sdactivate run` supervisor with this pid directly "
            "(for ExecReload=... reload --pid $MAINPID)",
        )
    else:
        p.add_argument("name", metavar="NAME", help="unit name (default .service)")
    p.add_argument(
        "--timeout",
        type=_positive_seconds,
        default=_DEFAULT_TIMEOUT,
        metavar="S",
        help=f"give up after S seconds (default {_DEFAULT_TIMEOUT:g})",
    )
    _add_user(p)
    p.set_defaults(func=_cmd_job, verb=verb)


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add ``status``, ``start``, ``stop``, ``restart`` and ``reload``."""
    _add_status(subparsers)
    for verb in ("start", "stop", "restart", "reload"):
        _add_job(subparsers, verb)


@contextlib.contextmanager
def _needs_jeepney() -> Iterator[None]:
    """Around the import of :mod:`sdactivate.control`: a missing jeepney becomes one line."""
    try:
        yield
    except ModuleNotFoundError as exc:
        if (exc.name or "").partition(".")[0] != "jeepney":
            raise
        from ..errors import MissingDependencyError

        raise MissingDependencyError("D-Bus commands need jeepney: pip install jeepney") from exc


def _usage(message: str) -> int:
    print(f"sdactivate: error: {message}", file=sys.stderr)
    return 2


def _cmd_status(args: argparse.Namespace) -> int:
    with _needs_jeepney():
        from ..control import UnitNameError, render_table, unit_status

    try:
        report = unit_status(args.name, user=args.user)
    except UnitNameError as exc:
        return _usage(str(exc))
    if args.json:
        print(json.dumps(report.to_json(), indent=2, sort_keys=True))
    else:
        print(render_table(report, now=time.time()))
    return 0


def _cmd_job(args: argparse.Namespace) -> int:
    if args.verb == "reload" and (args.pid is None) == (args.name is None):
        return _usage("reload needs exactly one of NAME or --pid PID")
    if getattr(args, "pid", None) is not None:
        if args.user:
            return _usage("--user has no meaning with --pid")
        return _reload_pid(args.pid, timeout=args.timeout)

    with _needs_jeepney():
        from ..control import ControlTimeoutError, UnitNameError, journal_tail, run_job
        from ..control.model import job_unit_name

    try:
        outcome = run_job(
            args.verb, args.name, timeout=args.timeout, user=args.user, journal=journal_tail
        )
    except UnitNameError as exc:
        return _usage(str(exc))
    except ControlTimeoutError as exc:
        print(f"sdactivate: error: {exc}", file=sys.stderr)
        unit = job_unit_name(args.name)
        _print_journal(unit, journal_tail(unit, args.user, 20))
        return 1
    if outcome.ok:
        print(outcome.summary())
        return 0
    print(f"sdactivate: {outcome.summary()}", file=sys.stderr)
    _print_journal(outcome.unit, outcome.journal)
    return 1


def _print_journal(unit: str, lines: Sequence[str]) -> None:
    if lines:
        print(f"-- last journal lines of {unit}:", file=sys.stderr)
        for line in lines:
            print(f"   {line}", file=sys.stderr)


def _reload_pid(pid: int, *, timeout: float) -> int:
    """Ask an ``sdactivate run`` supervisor to hand over to a new generation and wait."""
    from ..supervisor.client import request_reload

    result = request_reload(pid, timeout=timeout)
    serving = f"generation {result.generation} (pid {result.pid})"
    if result.ok:
        print(f"sdactivate: supervisor {pid}: handover done, {serving} serving")
    else:
        reason = result.message or "no reason given"
        print(f"sdactivate: supervisor {pid}: reload failed: {reason}", file=sys.stderr)
    return result.exit_code
