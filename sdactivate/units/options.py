"""What ``sdactivate gen-units`` was asked for: :class:`Options`, the combinations that
cannot work (refused before anything is built), and the canonical command line that
regenerates a set of units (written into their headers)."""

from __future__ import annotations

from dataclasses import dataclass

from .._priority import valid_startup_nice
from ..errors import UnitConfigError
from . import hardening
from .model import PRESERVE_MODES, RateLimit
from .version import STORE_PRESERVE

__all__ = [
    "DEFAULT_STARTUP_NICE",
    "PRESERVE_MODES",
    "SERVICE_TYPES",
    "Options",
    "check_combinations",
    "command_line",
]

DEFAULT_STARTUP_NICE = 10  # `sdactivate run --startup-nice`'s own default
# --type: systemd.service(5) Type=. exec (v240, older than MIN_VERSION): started once the
# program is executed; simple: once forked, before the exec
SERVICE_TYPES = ("notify", "exec", "simple")


@dataclass(frozen=True)
class Options:
    """Everything that decides the generated text (not where it goes)."""

    name: str
    systemd_version: int
    ports: tuple[int, ...] = ()
    listens: tuple[tuple[str, str | None], ...] = ()  # (address, fd name or None)
    command: tuple[str, ...] = ()  # argv; empty: NAME resolved on PATH
    exec_program: str | None = None  # --exec: program; then `command` are its arguments
    user: bool = False
    fdname: str | None = None
    fdstore: int = 0
    watchdog: float | None = None
    hardening: hardening.Level = "strict"
    network: bool = True
    supervise: bool = False
    upgrader: bool = False
    python: str | None = None  # interpreter for `-m sdactivate`; None: build(python=...)
    environment: tuple[tuple[str, str], ...] = ()
    working_dir: str | None = None
    description: str | None = None
    timeout_stop: float = 30
    start_limit: RateLimit | None = None  # None: the default of limits.py (per shape)
    accept: bool = False  # Accept=yes + NAME@.service
    max_connections: int | None = None  # --accept only; None: limits.DEFAULT_MAX_CONNECTIONS
    startup_nice: int = DEFAULT_STARTUP_NICE  # --supervise: `sdactivate run --startup-nice`; 0: off
    # --reload: the app answers SIGHUP with RELOADING=1 + MONOTONIC_USEC, then READY=1
    reload: bool = False
    # --fdstore-preserve: FileDescriptorStorePreserve= (v254+); None: "yes" where the store
    # holds the listening sockets (no socket unit), else systemd's default (not written)
    fdstore_preserve: str | None = None
    service_type: str = "notify"  # --type: Type= of the service (--accept: always simple)


def check_combinations(options: Options, groups: int) -> None:
    """Refuse option combinations that would generate a unit that cannot work."""
    if options.supervise and options.upgrader:
        raise UnitConfigError("--supervise and --upgrader are alternatives; pick one")
    if not valid_startup_nice(options.startup_nice):
        raise UnitConfigError(f"--startup-nice {options.startup_nice!r}: not a nice value 0..19")
    if options.startup_nice != DEFAULT_STARTUP_NICE and not options.supervise:
        raise UnitConfigError("--startup-nice only applies with --supervise (sdactivate run)")
    if options.reload and (options.supervise or options.upgrader or options.accept):
        raise UnitConfigError(
            "--reload is for an app that reloads itself on SIGHUP; --supervise and --upgrader"
            " already reload (a handover), --accept instances do not"
        )
    if options.fdstore_preserve is not None:
        if options.fdstore_preserve not in PRESERVE_MODES:
            raise UnitConfigError(
                f"--fdstore-preserve {options.fdstore_preserve!r}: one of"
                f" {', '.join(PRESERVE_MODES)}"
            )
        if not options.fdstore:
            raise UnitConfigError("--fdstore-preserve needs --fdstore N (an fd store to keep)")
        if options.systemd_version < STORE_PRESERVE:
            raise UnitConfigError(
                f"--fdstore-preserve: FileDescriptorStorePreserve= is new in systemd"
                f" {STORE_PRESERVE}, the target is {options.systemd_version} (there a separate"
                " stop + start always flushes the store)"
            )
    if options.service_type not in SERVICE_TYPES:
        raise UnitConfigError(
            f"--type {options.service_type!r}: not one of {', '.join(SERVICE_TYPES)}"
        )
    if options.service_type != "notify":
        for flag, used, why in (
            ("--supervise", options.supervise, "`sdactivate run` hands over only once the new"
             " generation sends READY=1 and kills one that does not within --ready-timeout"),
            ("--upgrader", options.upgrader, "the Upgrader's new generation takes over with"
             " MAINPID= and READY=1"),
            ("--watchdog", options.watchdog is not None, "the app must send WATCHDOG=1"
             " (sd_notify(3)), and then it can send READY=1 too"),
            ("--fdstore", options.fdstore, "the app stores its sockets with FDSTORE=1"
             " (sd_notify(3)), and then it can send READY=1 too"),
            ("--reload", options.reload, "the app answers SIGHUP with RELOADING=1, then"
             " READY=1 (sd_notify(3))"),
        ):  # fmt: skip
            if used:
                raise UnitConfigError(
                    f"--type {options.service_type} with {flag}: {why}; use --type notify"
                )
        if options.accept and options.service_type != "simple":
            raise UnitConfigError(
                f"--type {options.service_type} with --accept: per-connection instances are"
                " always Type=simple"
            )
    if options.max_connections is not None and not options.accept:
        raise UnitConfigError("--max-connections only applies with --accept (MaxConnections=)")
    if options.accept:
        for flag, used in (
            ("--supervise", options.supervise),
            ("--upgrader", options.upgrader),
            ("--fdstore", options.fdstore),
            ("--watchdog", options.watchdog is not None),
            ("--fdname", options.fdname is not None),
        ):
            if used:
                raise UnitConfigError(
                    f"--accept with {flag}: each connection gets its own short-lived instance,"
                    " with the connection as fd 3 named 'connection'"
                )
        if groups != 1 or any(fd_name is not None for _, fd_name in options.listens):
            raise UnitConfigError(
                "--accept: one socket unit, no fd names (each instance gets its connection"
                " as fd 3 named 'connection')"
            )
    if groups == 0:  # fd store only
        if not options.network:
            raise UnitConfigError(
                "--no-network without --port/--listen: the app binds its own sockets, and"
                " PrivateNetwork=yes would put them in an empty network namespace; use a"
                " socket unit (--port/--listen) for a service without network access"
            )
        for flag, used in (
            ("--fdname", options.fdname is not None),
            ("--supervise", options.supervise),
            ("--upgrader", options.upgrader),
        ):
            if used:
                raise UnitConfigError(
                    f"{flag} needs --port/--listen (a socket unit; with --supervise --fdstore N"
                    " the supervisor binds them); with --fdstore alone the app binds and names"
                    " its sockets itself (sdactivate.fdstore.listen)"
                )
    elif options.supervise and options.fdstore and not options.network:
        raise UnitConfigError(
            "--no-network with --supervise --fdstore: the supervisor binds the sockets itself,"
            " and PrivateNetwork=yes would put them in an empty network namespace; drop"
            " --fdstore to get socket units"
        )


def command_line(options: Options) -> tuple[str, ...]:
    """The canonical ``sdactivate gen-units ...`` argv that regenerates ``options``
    (which must be :func:`resolve`-d). Destination options (--output...) are not included."""
    out = ["sdactivate", "gen-units", options.name]
    for port in options.ports:
        out += ["--port", str(port)]
    for address, fd_name in options.listens:
        out += ["--listen", address if fd_name is None else f"{address}={fd_name}"]
    if options.fdname is not None:
        out += ["--fdname", options.fdname]
    if options.user:
        out.append("--user")
    if options.fdstore:
        out += ["--fdstore", str(options.fdstore)]
    if options.watchdog is not None:
        out += ["--watchdog", f"{options.watchdog:g}"]
    if options.timeout_stop != 30:
        out += ["--timeout-stop", f"{options.timeout_stop:g}"]
    if options.start_limit is not None:
        out += ["--start-limit", str(options.start_limit)]
    if options.accept:
        out.append("--accept")
    if options.max_connections is not None:
        out += ["--max-connections", str(options.max_connections)]
    if options.fdstore_preserve is not None:
        out += ["--fdstore-preserve", options.fdstore_preserve]
    if options.startup_nice != DEFAULT_STARTUP_NICE:
        out += ["--startup-nice", str(options.startup_nice)]
    if options.reload:
        out.append("--reload")
    if options.service_type != "notify":
        out += ["--type", options.service_type]
    if options.hardening != "strict":
        out += ["--hardening", options.hardening]
    if not options.network:
        out.append("--no-network")
    if options.supervise:
        out.append("--supervise")
    if options.upgrader:
        out.append("--upgrader")
    if options.python is not None:
        out += ["--python", options.python]
    for env_name, env_value in options.environment:
        out += ["--environment", f"{env_name}={env_value}"]
    if options.working_dir is not None:
        out += ["--working-dir", options.working_dir]
    if options.description is not None:
        out += ["--description", options.description]
    out += ["--systemd-version", str(options.systemd_version), "--", *options.command]
    return tuple(out)
