"""``sdactivate gen-units``: write a socket + service unit pair (parsing only; the logic is in
:mod:`sdactivate.units`)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

_T = TypeVar("_T")

_EPILOG = """\
examples:
  sdactivate gen-units myapp --port 80 -- /opt/myapp/.venv/bin/python -m myapp
  sdactivate gen-units myapp --listen 127.0.0.1:8080=http --listen /run/myapp.sock=admin
  sdactivate gen-units myapp --port 8080 --supervise --python /opt/myapp/.venv/bin/python \\
      -- /opt/myapp/.venv/bin/myapp
  sdactivate gen-units myapp --port 80 --install --now
  sdactivate gen-units myapp --fdstore 4 -- /opt/myapp/.venv/bin/myapp --listen 127.0.0.1:8080
  sdactivate gen-units myapp --supervise --fdstore 2 --listen 127.0.0.1:8080=http \\
      -- /opt/myapp/.venv/bin/myapp
  sdactivate gen-units myecho --listen 127.0.0.1:7000 --accept --max-connections 16 \\
      -- /opt/myecho/.venv/bin/myecho

fd store only (--fdstore N, no --port/--listen): no socket unit; the app binds its sockets
once with sdactivate.fdstore.listen() and systemd keeps them in the fd store. On systemd 252
they survive `systemctl restart` and automatic Restart=, but a separate `systemctl stop` +
`systemctl start` flushes the store (the app then binds anew).

supervisor-owned sockets (--supervise --fdstore N with --port/--listen): no socket unit; the
ExecStart is `sdactivate run --fdstore --listen ADDR=NAME ... -- CMD`, which binds each
address once and keeps it in the fd store (same restart/stop rules as above). Without
--fdstore, --supervise gets socket units like any service. Ports below 1024 and socket
files need socket units (the service has no capabilities and a read-only file system).

start limit: systemd fails a service started more than 5 times in 10 s (restarts count), and
its socket with it. Generated services allow 30 starts per 60 s (deliberate restarts pass, a
crash loop still stops); change it with --start-limit BURST/SECONDS or --start-limit off.

checks before writing: the program and a Python script exist and the service's user may run
and read them (DynamicUser=: other permission bits on every directory on the way), and
nothing is under /home, /root, /run/user (ProtectHome=yes) or /tmp, /var/tmp (PrivateTmp=)
that the unit's own sandbox hides; each refusal is one line with the fix. --no-preflight
skips them for a unit meant for another host. A relative script needs --working-dir.

exit status: 0 written; 1 the system refused (permission, read-only file system, no home,
systemctl failed); 2 bad options, a refused check, or an existing file that differs.
"""


class _TrailingCommandParser(argparse.ArgumentParser):
    """Takes everything after the first ``--`` as the command before parsing options.

    argparse cannot combine ``NAME [options] -- CMD ARGS...``: a variadic positional after
    NAME is consumed (empty) before the options that follow NAME.
    """

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        words = list(sys.argv[1:] if args is None else args)
        command: list[str] = []
        if "--" in words:
            split = words.index("--")
            words, command = words[:split], words[split + 1 :]
        parsed, extras = super().parse_known_args(words, namespace)
        if extras:  # before "NAME is required": `gen-units --bogus` names --bogus
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        if parsed.name is None:
            self.error("the following arguments are required: NAME")
        parsed.command = command
        return parsed, extras


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add ``gen-units`` to the top-level parser."""
    p = subparsers.add_parser(
        "gen-units",
        help="generate hardened, socket-activated systemd units",
        description="Write NAME.socket and NAME.service for a socket-activated service "
        "(--accept: NAME.socket and NAME@.service; --fdstore N alone: NAME.service only).",
        usage="%(prog)s NAME [options] [-- CMD ARGS...]",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.__class__ = _TrailingCommandParser  # add_parser() has no parser_class argument
    p.add_argument(
        "name",
        metavar="NAME",
        nargs="?",  # required, checked after the options (unknown ones are reported first)
        help="unit name prefix (NAME.service, NAME.socket); a trailing .service or .socket "
        "is dropped",
    )
    g = p.add_argument_group("sockets")
    g.add_argument(
        "--port",
        action="append",
        default=[],
        help="TCP port on every address, IPv4 and IPv6 (ListenStream=N); repeatable",
    )
    g.add_argument(
        "--listen",
        action="append",
        default=[],
        metavar="ADDR[=FDNAME]",
        help="ip:port, [v6]:port, /path.sock, @abstract, udp:..., optionally =fdname; "
        "repeatable (each fd name gets its own socket unit)",
    )
    g.add_argument("--fdname", help="FileDescriptorName= for addresses without =FDNAME")
    g.add_argument(
        "--accept",
        action="store_true",
        help="Accept=yes: one NAME@.service instance per connection, which gets the "
        "connection as fd 3 named 'connection' (Type=simple, no restart)",
    )
    g.add_argument(
        "--socket-mode",
        metavar="MODE",
        help="SocketMode= of socket files (--listen /path.sock), octal; default 0666: any "
        "local user may connect",
    )
    g.add_argument("--socket-user", metavar="USER", help="SocketUser= of socket files")
    g.add_argument(
        "--socket-group",
        metavar="GROUP",
        help="SocketGroup= of socket files (e.g. --socket-mode 0660 --socket-group GROUP)",
    )
    g.add_argument(
        "--max-connections",
        metavar="N",
        help="with --accept: MaxConnections= (instances at once; default 64)",
    )
    g = p.add_argument_group("service")
    g.add_argument(
        "--exec",
        dest="exec_program",
        metavar="PROGRAM",
        help="the program, its arguments after -- (default: CMD after --, else NAME); "
        "a bare name is looked up on PATH",
    )
    g.add_argument(
        "--type",
        dest="service_type",
        choices=("notify", "exec", "simple"),
        default="notify",
        help="Type= (default notify: the app sends READY=1, e.g. sdactivate.notify.ready()); "
        "exec for an app that never does (systemctl start returns once it is executed; "
        "no --supervise, --upgrader, --watchdog or --fdstore, which need sd_notify)",
    )
    g.add_argument("--description")
    g.add_argument("--working-dir", metavar="DIR", help="WorkingDirectory= (absolute)")
    g.add_argument(
        "--environment",
        action="append",
        default=[],
        metavar="K=V",
        help="Environment= entry; repeatable",
    )
    g.add_argument(
        "--fdstore",
        default="0",
        metavar="N",
        help="FileDescriptorStoreMax=; without --port/--listen: a service with no socket "
        "unit that binds its own sockets (kept across restart, flushed by stop + start); "
        "with --supervise and --port/--listen: no socket unit either, the supervisor binds "
        "the addresses and keeps them in the fd store",
    )
    g.add_argument(
        "--fdstore-preserve",
        choices=("yes", "restart", "no"),
        help="FileDescriptorStorePreserve= (systemd 254+; default: yes when the store holds "
        "the listening sockets, so stop + start keeps them where systemd allows, else "
        "systemd's own default, restart)",
    )
    g.add_argument("--watchdog", metavar="SEC", help="WatchdogSec=")
    g.add_argument(
        "--timeout-stop",
        default="30",
        metavar="SEC",
        help="TimeoutStopSec= (30); with --supervise the supervisor's --drain-timeout, "
        "and TimeoutStopSec= 10 s more",
    )
    g.add_argument(
        "--start-limit",
        metavar="BURST/SEC|off",
        help="StartLimitBurst=/StartLimitIntervalSec= (default 30/60; systemd's own 5/10 "
        "fails the 6th start within 10 s, restarts included); with --accept the socket's "
        "TriggerLimit (default off)",
    )
    g.add_argument(
        "--hardening",
        choices=("strict", "standard", "off"),
        default="strict",
        help="sandboxing level (default: strict)",
    )
    g.add_argument(
        "--no-network",
        dest="network",
        action="store_false",
        help="PrivateNetwork=yes: no outbound network; the sockets still serve",
    )
    mode = g.add_mutually_exclusive_group()
    mode.add_argument(
        "--supervise", action="store_true", help="run CMD under `sdactivate run` (hot reload)"
    )
    mode.add_argument(
        "--upgrader", action="store_true", help="the app upgrades itself (sdactivate.Upgrader)"
    )
    mode.add_argument(
        "--reload",
        action="store_true",
        help="the app reloads on SIGHUP: RELOADING=1 + MONOTONIC_USEC, then READY=1 "
        "(Type=notify-reload on systemd 253+, ExecReload=kill -HUP before)",
    )
    g.add_argument(
        "--startup-nice",
        default="10",
        metavar="N",
        help="with --supervise: `sdactivate run --startup-nice N` (a new generation starts N "
        "nicer until it takes over; default 10); N > 0 adds LimitNICE=+0 and allows "
        "setpriority(2) (strict: exposure 1.1 -> 1.2), 0 adds neither",
    )
    g.add_argument(
        "--ready-timeout",
        metavar="SEC",
        help="with --supervise: `sdactivate run --ready-timeout` (default 60); adds "
        "TimeoutStartSec= (see --health)",
    )
    g.add_argument(
        "--drain-timeout",
        metavar="SEC",
        help="with --supervise: `sdactivate run --drain-timeout` (default: --timeout-stop, 30); "
        "TimeoutStopSec= is 10 s more",
    )
    g.add_argument(
        "--stop-signal",
        metavar="SIG",
        help="with --supervise: `sdactivate run --stop-signal` (default TERM); INT adds "
        "KillSignal=SIGINT, any other KillMode=mixed (the supervisor relays it)",
    )
    g.add_argument(
        "--health",
        metavar="CMD",
        help="with --supervise: `sdactivate run --health CMD` ($ and %% are escaped for "
        "systemd). --ready-timeout, --health or --drain-timeout add TimeoutStartSec= = "
        "drain + ready + health timeouts + 10 s: a start or a reload may take that long",
    )
    g.add_argument(
        "--health-timeout",
        metavar="SEC",
        help="with --health: `sdactivate run --health-timeout` (default 10)",
    )
    g.add_argument(
        "--startup-grace",
        metavar="SEC",
        help="with --supervise: `sdactivate run --startup-grace` (default 1)",
    )
    g.add_argument(
        "--workers",
        metavar="N|auto",
        help="with --supervise: `sdactivate run --workers` (default 1; auto: the CPUs the "
        "service may use, counted when it starts)",
    )
    g.add_argument(
        "--max-starting",
        metavar="K",
        help="with --supervise: `sdactivate run --max-starting` (default: the CPU count); "
        "with --workers N, TimeoutStartSec= allows ceil(N/K) rounds of --ready-timeout",
    )
    g.add_argument(
        "--python",
        metavar="PATH",
        help="interpreter for `-m sdactivate` with --supervise (default: this one)",
    )
    g.add_argument("--user", action="store_true", help="user units (systemctl --user)")
    g.add_argument(
        "--no-preflight",
        dest="preflight",
        action="store_false",
        help="skip the checks against this machine (the program and script exist, the "
        "unit's sandbox does not hide them, its user may run and read them): for units "
        "meant for another host. --systemd-version N does not imply it",
    )
    g.add_argument(
        "--systemd-version",
        default="auto",
        metavar="auto|N",
        help="target systemd (default: local `systemctl --version`)",
    )
    g = p.add_argument_group("output")
    out = g.add_mutually_exclusive_group()
    out.add_argument("--output", metavar="DIR", default=".", help="directory (default: .)")
    out.add_argument("--stdout", action="store_true", help="print instead of writing")
    out.add_argument(
        "--install",
        action="store_true",
        help="write to /etc/systemd/system (--user: ~/.config/systemd/user), "
        "daemon-reload, enable the sockets (no socket unit: the service)",
    )
    g.add_argument("--now", action="store_true", help="with --install: also start the sockets")
    g.add_argument("--force", action="store_true", help="overwrite files that differ")
    p.set_defaults(func=_cmd_gen_units)


def _number(option: str, text: str | None, kind: type[int] | type[float]) -> Any:
    """Option values are converted here, so a bad one is a one-line UnitConfigError."""
    from ..errors import UnitConfigError

    if text is None:
        return None
    try:
        return kind(text)
    except ValueError:
        raise UnitConfigError(f"{option} {text!r}: not a number") from None


def _run_value(option: str, text: str | None, parse: Callable[[str], _T]) -> _T | None:
    """A ``sdactivate run`` option, parsed by the function ``run`` parses it with."""
    from ..errors import UnitConfigError

    if text is None:
        return None
    try:
        return parse(text)
    except ValueError as exc:
        raise UnitConfigError(f"{option}: {exc}") from None


def _mode(text: str | None) -> int | None:
    from ..errors import UnitConfigError

    if text is None:
        return None
    try:
        mode = int(text, 8)
    except ValueError:
        mode = -1
    if not 0 <= mode <= 0o7777:
        raise UnitConfigError(f"--socket-mode {text!r}: not an octal access mode (like 0660)")
    return mode


def _cmd_gen_units(args: argparse.Namespace) -> int:
    import os
    from pathlib import Path

    from ..errors import UnitConfigError
    from ..supervisor import settings
    from ..units import install, limits, names, preflight, version
    from ..units.build import Options, render, resolve

    command = list(args.command)
    listens = []
    for item in args.listen:
        address, sep, fd_name = item.rpartition("=")
        listens.append((address, fd_name) if sep else (item, None))
    environment = []
    for item in args.environment:
        key, sep, value = item.partition("=")
        if not sep:
            raise UnitConfigError(f"--environment {item!r}: expected KEY=VALUE")
        environment.append((key, value))
    if args.now and not args.install:
        raise UnitConfigError("--now only makes sense with --install")
    target = (
        version.detect_version()
        if args.systemd_version == "auto"
        else version.parse_version(args.systemd_version)
    )
    options = Options(
        name=names.strip_unit_suffix(args.name),
        systemd_version=target,
        ports=tuple(_number("--port", port, int) for port in args.port),
        listens=tuple(listens),
        command=tuple(command),
        exec_program=args.exec_program,
        user=args.user,
        fdname=args.fdname,
        fdstore=_number("--fdstore", args.fdstore, int),
        watchdog=_number("--watchdog", args.watchdog, float),
        hardening=args.hardening,
        network=args.network,
        supervise=args.supervise,
        upgrader=args.upgrader,
        python=args.python,
        environment=tuple(environment),
        working_dir=args.working_dir,
        description=args.description,
        timeout_stop=_number("--timeout-stop", args.timeout_stop, float),
        start_limit=None if args.start_limit is None else limits.parse_rate_limit(args.start_limit),
        accept=args.accept,
        max_connections=_number("--max-connections", args.max_connections, int),
        startup_nice=_number("--startup-nice", args.startup_nice, int),
        reload=args.reload,
        fdstore_preserve=args.fdstore_preserve,
        service_type=args.service_type,
        ready_timeout=_run_value("--ready-timeout", args.ready_timeout, settings.parse_seconds),
        drain_timeout=_run_value("--drain-timeout", args.drain_timeout, settings.parse_seconds),
        stop_signal=_run_value("--stop-signal", args.stop_signal, settings.parse_signal),
        health=args.health,
        health_timeout=_run_value("--health-timeout", args.health_timeout, settings.parse_seconds),
        startup_grace=_run_value("--startup-grace", args.startup_grace, settings.parse_seconds),
        workers=_run_value("--workers", args.workers, settings.parse_workers),
        max_starting=_run_value("--max-starting", args.max_starting, settings.parse_max_starting),
        socket_mode=_mode(args.socket_mode),
        socket_user=args.socket_user,
        socket_group=args.socket_group,
    )
    resolved = resolve(options, python=sys.executable, cwd=os.getcwd)  # checked once
    files = render(resolved)
    if args.preflight:  # before anything is written, --stdout included
        from .. import __file__ as package_file

        default_python = args.supervise and args.python is None
        package_dir = os.path.dirname(package_file) if default_python else None
        preflight.check(resolved.options, package_dir=package_dir)
    if args.stdout:
        for index, (name, text) in enumerate(files.items()):
            sys.stdout.write(f"{'' if index == 0 else chr(10)}### {name}\n{text}")
        return 0
    if args.install:
        actions = install.install(files, user=args.user, force=args.force, now=args.now)
    else:
        actions = install.write_files(files, Path(args.output), force=args.force)
    for name, action in actions.items():
        print(f"{action}: {Path(args.output) / name if not args.install else name}")
    return 0
