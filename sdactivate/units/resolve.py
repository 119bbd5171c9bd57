"""From :class:`Options` to one checked value, :class:`Resolved`: every check of the options
happens here, once, before any unit is built.

The order of the checks is the order of the messages a user meets: the unit name, the
addresses, the combinations of options, then the lookups of the programs on PATH, then
what depends on those (a relative script, the supervisor's own sockets).
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Literal

from .._priority import valid_startup_nice
from ..addresses import ListenAddress, parse_address, port_range_message
from ..errors import AddressError, UnitConfigError
from ..fdstore import RESERVED_NAMES
from ..supervisor import settings
from . import escape, names, preflight
from .model import PRESERVE_MODES
from .options import DEFAULT_STARTUP_NICE, SERVICE_TYPES, Options
from .version import STORE_PRESERVE

__all__ = ["Resolved", "Shape", "Which", "resolve", "resolve_program"]

Which = Callable[[str], str | None]
# The unit shapes, one builder each (build.py):
# plain: socket units + NAME.service; supervise: the same (or NAME.service alone, when
# `sdactivate run --fdstore` binds the sockets) with `sdactivate run` as ExecStart=;
# upgrader: socket units + a service whose main process changes; fdstore-only:
# NAME.service alone, the app binds; accept: NAME.socket (Accept=yes) + NAME@.service.
Shape = Literal["plain", "supervise", "upgrader", "fdstore-only", "accept"]
SocketGroup = tuple[str | None, tuple[ListenAddress, ...]]  # (FileDescriptorName=, addresses)

_RUN_ONLY = (  # `sdactivate run` options that mean nothing without --supervise
    ("--ready-timeout", "ready_timeout"),
    ("--drain-timeout", "drain_timeout"),
    ("--stop-signal", "stop_signal"),
    ("--health", "health"),
    ("--health-timeout", "health_timeout"),
    ("--startup-grace", "startup_grace"),
    ("--workers", "workers"),
    ("--max-starting", "max_starting"),
)
# systemd's valid_user_group_name() (strict): what useradd(8) also accepts; or a uid/gid
_OVERFLOW_IDS = ("nobody", "nogroup", "65534")  # user_namespaces(7) overflow uid/gid
_USER_GROUP = re.compile(r"(?:[A-Za-z_][A-Za-z0-9_-]{0,30}|[0-9]{1,10})\Z")


@dataclass(frozen=True)
class Resolved:
    """Options checked once, with what the checks found.

    ``options`` has the command resolved to an absolute argv (``exec_program`` folded in)
    and, for ``--supervise``, the interpreter resolved: what the header records and
    :func:`preflight.check` looks at. ``groups`` are the socket units' addresses by fd name
    (empty when the supervisor binds them: ``supervisor_binds`` holds its ``--listen``
    values then)."""

    options: Options
    shape: Shape
    prefix: str
    groups: tuple[SocketGroup, ...]
    supervisor_binds: tuple[str, ...] = ()

    @property
    def drain_timeout(self) -> float:
        """``sdactivate run --drain-timeout``: the option, or ``--timeout-stop``."""
        if self.options.drain_timeout is not None:
            return self.options.drain_timeout
        return self.options.timeout_stop


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


def resolve(
    options: Options,
    *,
    which: Which = shutil.which,
    python: str = "python3",
    cwd: Callable[[], str] | None = None,
) -> Resolved:
    """Check ``options`` and resolve the programs; raise :class:`UnitConfigError` (or
    :class:`preflight.PreflightError` for a relative script, suggesting ``cwd()``'s
    absolute path) naming the first problem."""
    prefix = names.check_unit_prefix(options.name, longest_suffix=".service")
    groups = _socket_groups(options)
    _check_combinations(options, len(groups))
    argv = _argv(options, which)
    interpreter = (
        resolve_program(options.python or python, which=which) if options.supervise else None
    )
    resolved = replace(options, command=argv, exec_program=None, python=interpreter)
    preflight.check_relative_script(resolved, cwd=cwd)  # on any host: the service starts in /
    binds = _supervisor_binds(resolved, groups)
    if binds:
        groups = []
    for fd_name, _ in groups:
        if fd_name is not None:
            names.check_fd_name(fd_name)
    _check_socket_files(options, groups)
    return Resolved(
        options=resolved,
        shape=_shape(options, groups),
        prefix=prefix,
        groups=tuple((fd_name, tuple(addresses)) for fd_name, addresses in groups),
        supervisor_binds=tuple(binds),
    )


def _shape(options: Options, groups: list[tuple[str | None, list[ListenAddress]]]) -> Shape:
    if options.accept:
        return "accept"
    if options.supervise:
        return "supervise"
    if options.upgrader:
        return "upgrader"
    return "plain" if groups else "fdstore-only"  # groups: none when only the fd store


def _argv(options: Options, which: Which) -> tuple[str, ...]:
    if options.exec_program is not None:
        return (resolve_program(options.exec_program, which=which), *options.command)
    if options.command:
        return (resolve_program(options.command[0], which=which), *options.command[1:])
    return (resolve_program(options.name, which=which),)


def _socket_groups(options: Options) -> list[tuple[str | None, list[ListenAddress]]]:
    groups: dict[str | None, list[ListenAddress]] = {}
    for port in options.ports:
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port <= 65535:
            raise UnitConfigError("--" + port_range_message(port, fixed=True))
        groups.setdefault(options.fdname, []).append(ListenAddress("tcp", port=port))
    for text, fd_name in options.listens:
        try:
            address = parse_address(text, fixed_port=True)
        except AddressError as exc:
            raise UnitConfigError(f"--listen {text!r}: {exc}") from exc
        groups.setdefault(fd_name if fd_name is not None else options.fdname, []).append(address)
    if not groups and not options.fdstore:
        raise UnitConfigError(
            "nothing to listen on: give --port N or --listen ADDRESS (or --fdstore N for a"
            " service that binds its own sockets and keeps them in systemd's fd store)"
        )
    return list(groups.items())


def _supervisor_binds(
    options: Options, groups: list[tuple[str | None, list[ListenAddress]]]
) -> list[str]:
    """``--supervise --fdstore N`` with addresses: the ``sdactivate run --listen ADDR=NAME``
    values (the supervisor binds and stores them; no socket unit); otherwise ``[]``."""
    if not (options.supervise and options.fdstore and groups):
        return []
    unprivileged = options.hardening != "off" or options.user
    specs: list[str] = []
    texts = [str(port) for port in options.ports] + [text for text, _ in options.listens]
    names_ = [options.fdname] * len(options.ports) + [
        fd_name if fd_name is not None else options.fdname for _, fd_name in options.listens
    ]
    for text, fd_name in zip(texts, names_, strict=True):
        address = parse_address(text)
        if address.path is not None and not address.path.startswith("@"):
            raise UnitConfigError(
                f"--listen {text!r} with --supervise --fdstore: a socket file needs a socket"
                " unit (the service's file system is read-only; systemd creates the file)"
            )
        if unprivileged and address.port is not None and 0 < address.port < 1024:
            raise UnitConfigError(
                f"port {address.port} with --supervise --fdstore: the supervisor has no"
                " capabilities (CAP_NET_BIND_SERVICE) to bind it; drop --fdstore for a socket unit"
            )
        # unnamed: the socket unit's name, as systemd.socket(5) FileDescriptorName= defaults
        # it, so the app sees the same name with and without --fdstore ('unknown', the
        # name of an fd without one, cannot be stored: sd_listen_fds(3))
        name = f"{options.name}.socket" if fd_name is None else names.check_fd_name(fd_name)
        if "=" in name:  # `run --listen ADDR=NAME` splits at the last '='
            raise UnitConfigError(f"fd name {name!r}: no '=' when the supervisor binds")
        if name in RESERVED_NAMES:
            raise UnitConfigError(
                f"fd name {name!r} with --supervise --fdstore: reserved by sd_listen_fds(3),"
                " it cannot be stored; pick another name"
            )
        specs.append(f"{text}={name}")
    if options.fdstore < len(specs):
        raise UnitConfigError(
            f"--fdstore {options.fdstore} < {len(specs)} sockets: systemd closes the ones over"
            " FileDescriptorStoreMax= (they would be rebound after every restart)"
        )
    return specs


def _check_socket_files(
    options: Options, groups: list[tuple[str | None, list[ListenAddress]]]
) -> None:
    """--socket-mode/--socket-user/--socket-group: systemd.socket(5) SocketMode=,
    SocketUser=, SocketGroup= apply to file-system sockets, which only socket units make."""
    given = [
        flag
        for flag, value in (
            ("--socket-mode", options.socket_mode),
            ("--socket-user", options.socket_user),
            ("--socket-group", options.socket_group),
        )
        if value is not None
    ]
    if not given:
        return
    if not any(
        a.is_unix and not (a.path or "").startswith("@") for _, addrs in groups for a in addrs
    ):
        raise UnitConfigError(
            f"{given[0]} applies to socket files (--listen /path.sock with a socket unit),"
            " and there is none"
        )
    mode = options.socket_mode
    if mode is not None and (
        isinstance(mode, bool) or not isinstance(mode, int) or not 0 <= mode <= 0o7777
    ):
        raise UnitConfigError(f"--socket-mode {mode!r}: not an access mode 0000..7777 (octal)")
    for flag, value in (
        ("--socket-user", options.socket_user),
        ("--socket-group", options.socket_group),
    ):
        if value is not None and not (isinstance(value, str) and _USER_GROUP.match(value)):
            raise UnitConfigError(
                f"{flag} {value!r}: not a user/group name (letters, digits, '_', '-', at most"
                " 31 characters, not starting with a digit) or a numeric id"
            )
        if value in _OVERFLOW_IDS:
            raise UnitConfigError(
                f"{flag} {value!r}: the overflow user/group owns whatever is not mapped"
                " (systemd warns: 'Special user nobody configured, this is not safe!');"
                " use a dedicated one"
            )
    if options.user and options.socket_user is not None:
        raise UnitConfigError(
            "--socket-user with --user: a per-user manager cannot give a file away (chown(2)"
            " needs CAP_CHOWN); --socket-group works for a group you are in"
        )


def _check_combinations(options: Options, groups: int) -> None:
    """Refuse option combinations that would generate a unit that cannot work."""
    if options.supervise and options.upgrader:
        raise UnitConfigError("--supervise and --upgrader are alternatives; pick one")
    _check_run_options(options)
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


def _check_run_options(options: Options) -> None:
    """The ``sdactivate run`` options, checked by the functions ``run`` parses them with
    (:mod:`sdactivate.supervisor.settings`), and only with ``--supervise``."""
    if not valid_startup_nice(options.startup_nice):
        raise UnitConfigError(f"--startup-nice {options.startup_nice!r}: not a nice value 0..19")
    if options.startup_nice != DEFAULT_STARTUP_NICE and not options.supervise:
        raise UnitConfigError("--startup-nice only applies with --supervise (sdactivate run)")
    for flag, field in _RUN_ONLY:
        value = getattr(options, field)
        if value is None:
            continue
        if not options.supervise:
            raise UnitConfigError(f"{flag} only applies with --supervise (sdactivate run)")
        if field == "health":
            escape.check_text(value, what=flag)  # one line of ExecStart=
            if not value.strip():
                raise UnitConfigError(f"{flag} {value!r}: an empty command always succeeds")
            continue
        try:
            if field == "stop_signal":
                settings.check_signal(value)
            elif field == "workers":
                settings.check_workers(value)
            elif field == "max_starting":
                settings.check_count(value, what=flag)
            else:
                settings.check_seconds(value)
        except ValueError as exc:
            raise UnitConfigError(f"{flag}: {exc}") from None
    if options.health_timeout is not None and options.health is None:
        raise UnitConfigError("--health-timeout only applies with --health CMD")
    if options.startup_grace is not None and not options.startup_nice:
        raise UnitConfigError(
            "--startup-grace with --startup-nice 0: nothing is lowered, so there is no grace"
        )
    if (
        options.drain_timeout is not None
        and options.timeout_stop != 30
        and options.timeout_stop != options.drain_timeout
    ):
        raise UnitConfigError(
            f"--timeout-stop {options.timeout_stop:g} and --drain-timeout"
            f" {options.drain_timeout:g}: with --supervise --timeout-stop is the drain timeout"
            " (TimeoutStopSec= is 10s more); give one of them"
        )
