"""What ``sdactivate gen-units`` was asked for: :class:`Options` (unchecked: :mod:`.resolve`
checks it once), and the canonical command line that regenerates a set of units (written
into their headers)."""

from __future__ import annotations

import signal
from dataclasses import dataclass

from ..supervisor import settings
from . import hardening
from .model import PRESERVE_MODES, RateLimit

__all__ = [
    "DEFAULT_STARTUP_NICE",
    "PRESERVE_MODES",
    "SERVICE_TYPES",
    "Options",
    "command_line",
    "run_arguments",
]

DEFAULT_STARTUP_NICE = settings.STARTUP_NICE  # `sdactivate run --startup-nice`'s own default
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
    # --supervise: `sdactivate run` options passed through (None: run's own default, not
    # written); --drain-timeout None: --timeout-stop is the drain timeout
    ready_timeout: float | None = None
    drain_timeout: float | None = None
    stop_signal: int | None = None  # a signal number (signal.Signals is one)
    health: str | None = None  # a shell command
    health_timeout: float | None = None
    startup_grace: float | None = None
    workers: settings.Workers | None = None  # an int or "auto"
    max_starting: int | None = None
    # file-system (AF_UNIX path) sockets: systemd.socket(5) SocketMode= (None: 0666, the
    # default, written with a comment), SocketUser=, SocketGroup= (None: root, or the user)
    socket_mode: int | None = None
    socket_user: str | None = None
    socket_group: str | None = None


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
    if options.socket_mode is not None:
        out += ["--socket-mode", f"{options.socket_mode:04o}"]
    if options.socket_user is not None:
        out += ["--socket-user", options.socket_user]
    if options.socket_group is not None:
        out += ["--socket-group", options.socket_group]
    if options.user:
        out.append("--user")
    if options.fdstore:
        out += ["--fdstore", str(options.fdstore)]
    if options.watchdog is not None:
        out += ["--watchdog", settings.seconds_text(options.watchdog)]
    if options.timeout_stop != 30:
        out += ["--timeout-stop", settings.seconds_text(options.timeout_stop)]
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
    if options.drain_timeout is not None:
        out += ["--drain-timeout", settings.seconds_text(options.drain_timeout)]
    out += run_arguments(options)
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


def run_arguments(options: Options) -> list[str]:
    """The ``sdactivate run`` options given, other than ``--drain-timeout`` and
    ``--startup-nice`` (always known), as ``run`` reads them; ``gen-units`` takes them under
    the same names."""
    out: list[str] = []
    if options.ready_timeout is not None:
        out += ["--ready-timeout", settings.seconds_text(options.ready_timeout)]
    if options.stop_signal is not None:
        out += ["--stop-signal", signal.Signals(options.stop_signal).name]
    if options.health is not None:
        out += ["--health", options.health]
    for flag, seconds in (
        ("--health-timeout", options.health_timeout),
        ("--startup-grace", options.startup_grace),
    ):
        if seconds is not None:
            out += [flag, settings.seconds_text(seconds)]
    if options.workers is not None:
        out += ["--workers", str(options.workers)]
    if options.max_starting is not None:
        out += ["--max-starting", str(options.max_starting)]
    return out
