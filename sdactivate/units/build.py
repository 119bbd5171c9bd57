"""From generator options to unit models and file texts (pure, apart from injected lookups).

``Options`` is what ``sdactivate gen-units`` parsed; :func:`build` turns it into
``{filename: text}``. Socket units: listen addresses are grouped by fd name, because
``FileDescriptorName=`` names every fd of one socket unit (systemd.socket(5)); the first group
is ``NAME.socket``, the others ``NAME-<fdname>.socket`` with ``Service=NAME.service``.
"""

from __future__ import annotations

import shlex
import shutil
import socket
from collections.abc import Callable
from dataclasses import dataclass, replace

from .. import __version__
from ..addresses import DEFAULT_BACKLOG, ListenAddress, parse_address
from ..errors import AddressError, UnitConfigError
from . import escape, hardening, names, version
from .model import ServiceUnit, SocketUnit
from .render import render_service, render_socket

__all__ = ["Options", "build", "build_units", "command_line", "resolve", "resolve_program"]

Which = Callable[[str], str | None]
_SUPERVISOR_STOP_MARGIN = 10  # seconds on top of `sdactivate run --drain-timeout`
_KILL = "/bin/kill"  # kill(1) from procps; also on merged-/usr systems; fixed for reproducibility


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


def resolve_program(program: str, *, which: Which = shutil.which) -> str:
    """An absolute program path: absolute paths are checked, bare names looked up on PATH."""
    escape.check_text(program, what="program")
    if "/" in program:
        return escape.check_absolute_path(program, what="program", allow_space=True)
    found = which(program)
    if not found or not found.startswith("/"):
        raise UnitConfigError(
            f"program {program!r} not found on PATH; pass an absolute path with --exec "
            "or the command after --"
        )
    return escape.check_absolute_path(found, what="program", allow_space=True)


def _argv(options: Options, which: Which) -> tuple[str, ...]:
    if options.exec_program is not None:
        return (resolve_program(options.exec_program, which=which), *options.command)
    if options.command:
        return (resolve_program(options.command[0], which=which), *options.command[1:])
    return (resolve_program(options.name, which=which),)


def _python(options: Options, which: Which, default: str) -> str:
    return resolve_program(options.python or default, which=which)


def _socket_groups(options: Options) -> list[tuple[str | None, list[ListenAddress]]]:
    groups: dict[str | None, list[ListenAddress]] = {}
    for port in options.ports:
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port <= 65535:
            raise UnitConfigError(f"--port {port!r}: not a port number 1..65535")
        groups.setdefault(options.fdname, []).append(ListenAddress("tcp", port=port))
    for text, fd_name in options.listens:
        try:
            address = parse_address(text)
        except AddressError as exc:
            raise UnitConfigError(f"--listen {text!r}: {exc}") from exc
        groups.setdefault(fd_name if fd_name is not None else options.fdname, []).append(address)
    if not groups:
        raise UnitConfigError("nothing to listen on: give --port N or --listen ADDRESS")
    return list(groups.items())


def _backlog(default: int | None, addresses: list[ListenAddress]) -> int | None:
    # systemd.socket(5): only listen(2)ing sockets have a backlog; set it where the
    # target's default is 128 (< v254), to the same value listen() uses (addresses.py).
    if default is None or all(a.type == socket.SOCK_DGRAM for a in addresses):
        return None
    return DEFAULT_BACKLOG


def build_units(
    options: Options, *, which: Which = shutil.which, python: str = "python3"
) -> tuple[list[SocketUnit], ServiceUnit]:
    """The socket units and the service unit ``options`` describe."""
    prefix = names.check_unit_prefix(options.name, longest_suffix=".service")
    service_name = f"{prefix}.service"
    description = options.description or prefix
    sockets: list[SocketUnit] = []
    backlog = version.default_backlog(options.systemd_version)
    for index, (fd_name, addresses) in enumerate(_socket_groups(options)):
        if fd_name is not None:
            names.check_fd_name(fd_name)
        socket_name = f"{prefix}.socket"
        if index:
            socket_name = f"{prefix}-{names.escape(fd_name or '')}.socket"
        sockets.append(
            SocketUnit(
                name=names.check_unit_name(socket_name),
                description=f"{description} listening sockets" + (f" ({fd_name})" if index else ""),
                listens=tuple(addresses),
                fd_name=fd_name,
                backlog=_backlog(backlog, addresses),
                service=service_name if index else None,
                user=options.user,
            )
        )
    argv = _argv(options, which)
    comments: list[tuple[str, str]] = [
        ("Type", "sd_notify(3): ready when the app sends READY=1"),
        (
            "TimeoutStopSec",
            "time to drain in-flight requests after SIGTERM; the socket stays open meanwhile",
        ),
    ]
    exec_reload: tuple[escape.ExecArg, ...] | None = None
    timeout_stop = options.timeout_stop
    kill_mode = None
    notify_access = "main"
    if options.supervise and options.upgrader:
        raise UnitConfigError("--supervise and --upgrader are alternatives; pick one")
    py = _python(options, which, python) if options.supervise else ""
    if options.supervise:
        exec_reload = (py, "-m", "sdactivate", "reload", "--pid", escape.EnvRef("MAINPID"))
        comments.append(
            ("ExecReload", "waits until the new generation is READY (or fails and keeps the old)")
        )
    if options.upgrader:
        exec_reload = (_KILL, "-HUP", escape.EnvRef("MAINPID"))
        comments.append(
            (
                "ExecReload",
                "Upgrader: SIGHUP starts the new generation, which takes over with MAINPID=;"
                " `systemctl reload` returns at once",
            )
        )
    if options.supervise:
        drain = f"{options.timeout_stop:g}"
        argv = (py, "-m", "sdactivate", "run", "--drain-timeout", drain, "--", *argv)
        # the supervisor SIGKILLs a generation still draining after --drain-timeout;
        # systemd's own SIGKILL comes later, so the supervisor can report it
        timeout_stop += _SUPERVISOR_STOP_MARGIN
        kill_mode = "mixed"
        comments += [
            (
                "NotifyAccess",
                "the supervisor is the main process and relays its children's READY=1",
            ),
            (
                "KillMode",
                "systemd.kill(5) mixed: SIGTERM to the supervisor only, which drains its"
                " generations in order; SIGKILL still reaches every leftover process",
            ),
        ]
    if options.upgrader:
        notify_access = "all"
        comments.append(
            (
                "NotifyAccess",
                "the in-process Upgrader's new generation (a child) sends MAINPID= and READY=1",
            )
        )
    if options.fdstore:
        comments.append(
            ("FileDescriptorStoreMax", "sd_notify(3) FDSTORE=1: fds survive a restart job")
        )
    knobs = hardening.knobs(
        options.hardening,
        user=options.user,
        network=options.network,
        version=options.systemd_version,
    )
    service = ServiceUnit(
        name=service_name,
        description=description,
        exec_start=argv,
        sockets=tuple(s.name for s in sockets),
        notify_access=notify_access,
        exec_reload=exec_reload,
        timeout_stop_sec=timeout_stop,
        watchdog_sec=options.watchdog,
        fdstore_max=options.fdstore,
        kill_mode=kill_mode,
        environment=options.environment,
        working_directory=options.working_dir,
        hardening=knobs,
        comments=tuple(comments),
        user=options.user,
    )
    return sockets, service


def resolve(options: Options, *, which: Which = shutil.which, python: str = "python3") -> Options:
    """``options`` with the command resolved to an absolute argv (``exec_program`` folded in)
    and, for ``--supervise``, the interpreter resolved: what the header records."""
    names.check_unit_prefix(options.name, longest_suffix=".service")
    _socket_groups(options)  # report address errors before PATH lookups
    argv = _argv(options, which)
    return replace(
        options,
        command=argv,
        exec_program=None,
        python=_python(options, which, python) if options.supervise else None,
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


def build(
    options: Options, *, which: Which = shutil.which, python: str = "python3"
) -> dict[str, str]:
    """``{filename: text}`` for every unit, sockets first; the header records the command."""
    resolved = resolve(options, which=which, python=python)
    sockets, service = build_units(resolved, which=which, python=python)
    lines = (
        f"Generated by sdactivate {__version__} for systemd {options.systemd_version}"
        f"{' (user manager)' if options.user else ''}; regenerate with:",
        "  " + shlex.join(command_line(resolved)),
    )
    files = {
        s.name: render_socket(s, version=options.systemd_version, header=lines) for s in sockets
    }
    files[service.name] = render_service(service, version=options.systemd_version, header=lines)
    return files
