"""``sdactivate run``: supervise a command, handing its sockets over on SIGHUP."""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from ..supervisor import settings

if TYPE_CHECKING:
    from ..supervisor.runner import Listener

__all__ = ["register"]

_T = TypeVar("_T")

_EPILOG = """\
examples:
  sdactivate run --listen 127.0.0.1:8080=http -- python3 app.py
  kill -HUP <supervisor pid>          # hand over to a fresh copy of app.py
  sdactivate reload --pid <pid>       # the same, and wait for the outcome

Each generation gets the sockets as LISTEN_FDS/LISTEN_FDNAMES (LISTEN_PID = its own pid) and a
private NOTIFY_SOCKET (with --workers N: each of its N processes, SDACTIVATE_WORKER=0..N-1);
it must send READY=1 once it serves, and stop accepting and exit on the stop signal. The old
generation is told to stop only after the new one is READY (all N workers, and passed
--health). Under systemd, sockets passed to the supervisor (socket unit or fd store) are
reused and passed on under their names.
"""


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add ``run`` to the top-level parser."""
    p = subparsers.add_parser(
        "run",
        help="supervise a command with zero-downtime handovers on SIGHUP",
        description="Run CMD on listening sockets; on SIGHUP start a new CMD, wait for its "
        "READY=1, then stop the old one. The sockets never close.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--listen",
        action="append",
        default=[],
        metavar="ADDR[=NAME]",
        help="bind ADDR (127.0.0.1:8080, [::1]:80, 8080, /run/x.sock, @name, udp:...) and "
        "pass it as NAME (default: unknown; --fdstore needs a NAME; the rule is systemd's and "
        "gen-units': printable ASCII without ':', 1..255 characters); repeatable. A socket "
        "of the same address passed to the supervisor in LISTEN_FDS is reused instead of bound",
    )
    p.add_argument(
        "--ready-timeout",
        type=_seconds,
        default=settings.READY_TIMEOUT,
        metavar="SEC",
        help="kill a new generation that sends no READY=1 within SEC (default 60)",
    )
    p.add_argument(
        "--drain-timeout",
        type=_seconds,
        default=settings.DRAIN_TIMEOUT,
        metavar="SEC",
        help="SIGKILL an old generation still running SEC after its stop signal (default 30)",
    )
    p.add_argument(
        "--stop-signal",
        type=_signal,
        default=settings.STOP_SIGNAL,
        metavar="SIG",
        help="signal that tells a generation to stop accepting and drain (default TERM); "
        "also its parent-death signal",
    )
    p.add_argument(
        "--health",
        metavar="CMD",
        help="shell command that must succeed before a new generation takes over; it sees "
        "SDACTIVATE_HEALTH_ADDR (host:port of an extra loopback socket only the new "
        "generation serves, passed as fd name sdactivate-health), SDACTIVATE_PID, "
        "SDACTIVATE_GENERATION",
    )
    p.add_argument(
        "--health-timeout",
        type=_seconds,
        default=settings.HEALTH_TIMEOUT,
        metavar="SEC",
        help="a health check still running after SEC fails (default 10)",
    )
    p.add_argument(
        "--startup-nice",
        type=_startup_nice,
        default=settings.STARTUP_NICE,
        metavar="N",
        help="run a starting generation N nicer until it takes over, so its start-up does "
        "not slow the serving one (default 10; 0: off; needs CAP_SYS_NICE or RLIMIT_NICE "
        "to restore, else skipped)",
    )
    p.add_argument(
        "--startup-grace",
        type=_seconds,
        default=settings.STARTUP_GRACE,
        metavar="SEC",
        help="a starting generation not ready SEC after its start gets the full priority "
        "anyway, so a host busy with other work cannot starve an upgrade (default 1; at "
        "most half of --ready-timeout)",
    )
    p.add_argument(
        "--workers",
        type=_workers,
        default=settings.WORKERS,
        metavar="N|auto",
        help="run N copies of CMD on the same sockets, each with SDACTIVATE_WORKER=0..N-1 "
        "(auto: the CPUs this process may use, after its affinity and cgroup CPU quota); "
        "a handover starts N new ones and stops the old ones only once all N are READY "
        "(default 1)",
    )
    p.add_argument(
        "--max-starting",
        type=_max_starting,
        default=None,
        metavar="K",
        help="start at most K workers at once, at the start-up priority (default: the "
        "usable CPU count)",
    )
    p.add_argument(
        "--fdstore",
        action="store_true",
        help="push the sockets it binds into systemd's fd store (the unit needs "
        "FileDescriptorStoreMax=), so a restarted supervisor gets them back",
    )
    p.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- CMD [ARGS...]")
    p.set_defaults(func=_cmd_run)


def _seconds(text: str) -> float:
    return _argument(settings.parse_seconds, text)


def _startup_nice(text: str) -> int:
    return _argument(settings.parse_startup_nice, text)


def _workers(text: str) -> settings.Workers:
    return _argument(settings.parse_workers, text)


def _max_starting(text: str) -> int:
    return _argument(settings.parse_max_starting, text)


def _signal(text: str) -> signal.Signals:
    return _argument(settings.parse_signal, text)


def _argument(parse: Callable[[str], _T], text: str) -> _T:
    """One parser per option, shared with ``gen-units --supervise`` (supervisor.settings)."""
    try:
        return parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _cmd_run(args: argparse.Namespace) -> int:
    from ..supervisor.machine import Policy
    from ..supervisor.runner import Options, run
    from ..supervisor.workers import usable_cpus

    argv = list(args.argv)
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if not argv:
        print("sdactivate run: error: no command (sdactivate run ... -- CMD)", file=sys.stderr)
        return 2
    listeners = _listeners(args.listen, fdstore=args.fdstore)
    if not listeners:
        print("sdactivate run: error: no sockets (--listen, or LISTEN_FDS)", file=sys.stderr)
        return 2
    options = Options(
        policy=Policy(
            ready_timeout=args.ready_timeout,
            drain_timeout=args.drain_timeout,
            stop_signal=args.stop_signal,
            health=args.health is not None,
            health_timeout=args.health_timeout,
            startup_grace=args.startup_grace,
            workers=usable_cpus() if args.workers == "auto" else args.workers,
            max_starting=usable_cpus() if args.max_starting is None else args.max_starting,
        ),
        health_cmd=args.health,
        fdstore=args.fdstore,
        startup_nice=args.startup_nice,
    )
    try:
        return run(argv, listeners, options=options)
    finally:
        for lst in listeners:
            lst.sock.close()


def _listen_specs(specs: list[str], *, fdstore: bool) -> list[tuple[str, str]]:
    """``--listen ADDR[=NAME]`` as ``(ADDR, NAME)``; names follow gen-units' rule
    (:func:`sdactivate.units.names.check_fd_name`). Unnamed: ``unknown``, sd_listen_fds(3)'s
    name for an fd without one, which the fd store refuses (``--fdstore`` needs names)."""
    from ..errors import UnitConfigError
    from ..fdstore import RESERVED_NAMES
    from ..units.names import check_fd_name

    out: list[tuple[str, str]] = []
    for spec in specs:
        text, sep, name = spec.rpartition("=")
        if not sep:
            if fdstore:
                raise UnitConfigError(
                    f"--listen {spec!r} with --fdstore needs a name (--listen {spec}=NAME):"
                    " sockets are stored under their name, and sd_listen_fds(3) reserves"
                    " 'unknown' for unnamed fds"
                )
            out.append((spec, "unknown"))
            continue
        try:
            check_fd_name(name)
        except UnitConfigError as exc:
            raise UnitConfigError(f"--listen {spec!r}: {exc}") from exc
        if fdstore and name in RESERVED_NAMES:
            raise UnitConfigError(
                f"--listen {spec!r} with --fdstore: fd name {name!r} is reserved by"
                " sd_listen_fds(3) and cannot be stored; pick another name"
            )
        out.append((text, name))
    return out


def _listeners(specs: list[str], *, fdstore: bool = False) -> list[Listener]:
    """``--listen`` specs parsed (errors name the spec), then the sockets: inherited ones
    (LISTEN_FDS) matched to them, the rest bound (:func:`..supervisor.sockets.open_listeners`)."""
    from ..addresses import parse_address
    from ..errors import AddressError
    from ..supervisor.sockets import open_listeners

    wanted = []
    for spec, (text, name) in zip(specs, _listen_specs(specs, fdstore=fdstore), strict=True):
        try:
            wanted.append((parse_address(text), name))
        except AddressError as exc:
            raise AddressError(f"--listen {spec!r}: {exc}") from exc
    return open_listeners(wanted)
