"""From generator options to unit models and file texts (pure, apart from injected lookups).

``Options`` is what ``sdactivate gen-units`` parsed; :func:`build` turns it into
``{filename: text}``. Three shapes:

* socket activation (``--port``/``--listen``): listen addresses are grouped by fd name,
  because ``FileDescriptorName=`` names every fd of one socket unit (systemd.socket(5)); the
  first group is ``NAME.socket``, the others ``NAME-<fdname>.socket`` with
  ``Service=NAME.service``;
* fd store only (``--fdstore N`` and no address): ``NAME.service`` alone; the app binds its
  own sockets once (``sdactivate.fdstore.listen()``) and systemd keeps them;
* supervisor-owned sockets (``--supervise --fdstore N`` with addresses): ``NAME.service``
  alone; ``sdactivate run --fdstore --listen ADDR=NAME`` binds them once and keeps them in
  the fd store (without ``--fdstore``, ``--supervise`` gets socket units like any service);
* ``--accept``: ``NAME.socket`` with ``Accept=yes`` and the template ``NAME@.service``.
"""

from __future__ import annotations

import shlex
import shutil
import socket
from collections.abc import Callable
from dataclasses import replace

from .. import __version__
from ..addresses import DEFAULT_BACKLOG, ListenAddress, parse_address, port_range_message
from ..errors import AddressError, UnitConfigError
from ..fdstore import RESERVED_NAMES
from . import escape, hardening, limits, names, preflight, version
from .model import ServiceUnit, SocketUnit
from .options import DEFAULT_STARTUP_NICE, Options, check_combinations, command_line
from .render import render_service, render_socket

__all__ = ["Options", "build", "build_units", "command_line", "resolve", "resolve_program"]

Which = Callable[[str], str | None]
_SUPERVISOR_STOP_MARGIN = 10  # seconds on top of `sdactivate run --drain-timeout`
_KILL = "/bin/kill"  # kill(1) from procps; also on merged-/usr systems; fixed for reproducibility
_TAIL = "/usr/bin/tail"  # coreutils; in /usr/bin with or without merged /usr
# --upgrader: SIGTERM the main process, then wait until it has exited (tail(1) --pid checks
# it every -s seconds; -f /dev/null never ends by itself)
_UPGRADER_STOP: tuple[tuple[escape.ExecArg, ...], ...] = (
    (_KILL, "-TERM", escape.EnvRef("MAINPID")),
    (_TAIL, escape.EnvRef("MAINPID", prefix="--pid="), "-s", "0.1", "-f", "/dev/null"),
)
_UPGRADER_STOP_WHY = (
    "After an upgrade the main process is the Upgrader's new generation, not systemd's child"
    ' ("Supervising process X which is not our child"). On stop, systemd 252 sends SIGTERM'
    " to such a main process and, when nothing else is left in the cgroup, SIGKILL right"
    " after (it only waits for its own children: unit_kill_context()), cutting the drain"
    " short. systemd.service(5) ExecStop=: the command should be synchronous, the remaining"
    " processes are killed as soon as it exits; so SIGTERM, then wait until the main process"
    " has exited, each command for at most TimeoutStopSec=. '-': MAINPID is unset (the"
    " commands fail harmlessly) once the main process has exited by itself"
)


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
    description = options.description or prefix
    groups = _socket_groups(options)
    check_combinations(options, len(groups))
    service_name = f"{prefix}@.service" if options.accept else f"{prefix}.service"
    supervisor_binds = _supervisor_binds(options, groups)
    sockets = (
        []
        if supervisor_binds
        else _socket_units(options, prefix, service_name, description, groups)
    )
    argv = _argv(options, which)
    comments: list[tuple[str, str]] = [
        ("Type", "sd_notify(3): ready when the app sends READY=1"),
        (
            "TimeoutStopSec",
            "time to drain in-flight requests after SIGTERM; the socket stays open meanwhile",
        ),
    ]
    if not sockets:
        comments[0] = (
            "Type",
            "No socket unit: the app binds its own sockets once (sdactivate.fdstore.listen()),"
            " parks them in the fd store and then sends READY=1 (sd_notify(3))."
            + (
                " It has no capabilities, so ports below 1024 need a socket unit (--port/--listen)."
                if options.hardening != "off"
                else ""
            ),
        )
        comments[1] = ("TimeoutStopSec", "time to drain in-flight requests after SIGTERM")
    if supervisor_binds:
        comments[0] = (
            "Type",
            "No socket unit: the supervisor (`sdactivate run --fdstore`) binds the sockets"
            " once, parks them in the fd store and passes them to every generation; it sends"
            " READY=1 (sd_notify(3)) when the first one is ready."
            + (
                " It has no capabilities, so ports below 1024 need a socket unit (no --fdstore)."
                if options.hardening != "off" or options.user
                else ""
            ),
        )
    exec_reload: tuple[escape.ExecArg, ...] | None = None
    exec_stop: tuple[tuple[escape.ExecArg, ...], ...] = ()
    timeout_stop = options.timeout_stop
    kill_mode = None
    limit_nice = None
    knobs = hardening.knobs(
        options.hardening,
        user=options.user,
        network=options.network,
        version=options.systemd_version,
    )
    notify_access = "main"
    service_type = options.service_type
    target = options.systemd_version
    if service_type != "notify":
        notify_access = "none"  # the app sends nothing (the combinations that need it are refused)
        comments[0] = ("Type", _TYPE_WHY[service_type])
    py = _python(options, which, python) if options.supervise else ""
    if options.supervise and target >= version.NOTIFY_RELOAD:
        service_type = "notify-reload"
        comments[0] = (comments[0][0], comments[0][1] + " " + _SUPERVISOR_NOTIFY_RELOAD)
    elif options.supervise:
        exec_reload = (py, "-m", "sdactivate", "reload", "--pid", escape.EnvRef("MAINPID"))
        comments.append(("ExecReload", _supervisor_exec_reload(target)))
    if options.reload and target >= version.NOTIFY_RELOAD:
        service_type = "notify-reload"
        comments[0] = (comments[0][0], comments[0][1] + " " + _APP_NOTIFY_RELOAD)
    elif options.reload:
        exec_reload = (_KILL, "-HUP", escape.EnvRef("MAINPID"))
        comments.append(("ExecReload", _app_exec_reload(target)))
    if options.upgrader:
        exec_reload = (_KILL, "-HUP", escape.EnvRef("MAINPID"))
        exec_stop = _UPGRADER_STOP
        comments.append(("ExecStop", _UPGRADER_STOP_WHY))
        comments.append(
            (
                "ExecReload",
                "Upgrader: SIGHUP starts the new generation, which takes over with MAINPID=;"
                " `systemctl reload` returns at once",
            )
        )
    if options.supervise:
        run = [py, "-m", "sdactivate", "run"]
        run += ["--drain-timeout", f"{options.timeout_stop:g}"]
        if options.startup_nice != DEFAULT_STARTUP_NICE:
            run += ["--startup-nice", str(options.startup_nice)]
        if supervisor_binds:
            run.append("--fdstore")
            for spec in supervisor_binds:
                run += ["--listen", spec]
        argv = (*run, "--", *argv)
        # the supervisor SIGKILLs a generation still draining after --drain-timeout;
        # systemd's own SIGKILL comes later, so the supervisor can report it
        timeout_stop += _SUPERVISOR_STOP_MARGIN
        kill_mode = "control-group"
        comments += [
            (
                "NotifyAccess",
                "the supervisor is the main process and relays its children's READY=1",
            ),
            (
                "KillMode",
                "systemd.kill(5) control-group: on stop, SIGTERM to every process at once;"
                " the generations drain (the supervisor's SIGTERM to them is a repeat) and"
                " the supervisor waits for them. Not mixed: when the supervisor dies, 252 has"
                " no main process left to SIGTERM and SIGKILLs the generations at once,"
                " failing their requests; here they get SIGTERM and drain",
            ),
        ]
        if options.startup_nice:
            # setpriority(2): raising a priority back (nice 10 -> 0) needs CAP_SYS_NICE or
            # RLIMIT_NICE; the generated service has no capabilities
            limit_nice = 0
            comments.append(
                (
                    "LimitNICE",
                    "RLIMIT_NICE: lets the supervisor return a new generation to nice 0 when"
                    " it takes over (it starts at +10, --startup-nice); never below 0",
                )
            )
            knobs = _allow_setpriority(knobs)
    if options.upgrader:
        notify_access = "all"
        comments.append(
            (
                "NotifyAccess",
                "the in-process Upgrader's new generation (a child) sends MAINPID= and READY=1",
            )
        )
    preserve = _fdstore_preserve(options, holds_listeners=not sockets)
    if options.fdstore:
        comments.append(("FileDescriptorStoreMax", _fdstore_comment(target, preserve)))
    if preserve is not None:
        comments.append(("FileDescriptorStorePreserve", _preserve_comment(target, preserve)))
    start_limit = options.start_limit or limits.DEFAULT_START_LIMIT
    comments.append(("StartLimit", limits.start_limit_comment(start_limit, socket=bool(sockets))))
    service = ServiceUnit(
        name=service_name,
        description=description,
        exec_start=argv,
        sockets=() if options.accept else tuple(s.name for s in sockets),
        type=service_type,
        notify_access=notify_access,
        exec_reload=exec_reload,
        exec_stop=exec_stop,
        timeout_stop_sec=timeout_stop,
        watchdog_sec=options.watchdog,
        fdstore_max=options.fdstore,
        fdstore_preserve=preserve,
        kill_mode=kill_mode,
        limit_nice=limit_nice,
        start_limit=start_limit,
        environment=options.environment,
        working_directory=options.working_dir,
        hardening=knobs,
        comments=tuple(comments),
        user=options.user,
    )
    if options.accept:
        service = replace(
            service,
            description=f"{description} (one instance per connection)",
            type="simple",
            notify_access="none",
            restart="no",
            start_limit=None,  # each instance starts once; the socket's trigger limit counts
            collect_mode="inactive-or-failed",
            comments=(
                (
                    "Type",
                    "simple: an instance lives as long as the connection systemd already"
                    " accepted and handed it as fd 3; nothing waits for it to be ready, and"
                    " under Type=notify an instance that exits before READY=1 would fail"
                    " (and cost a notify round trip per connection)",
                ),
                (
                    "CollectMode",
                    "systemd.unit(5): unload failed instances too, or every failed"
                    " connection stays listed as a failed unit",
                ),
                ("TimeoutStopSec", "time for an instance to finish its connection after SIGTERM"),
            ),
        )
    return sockets, service


_TYPE_WHY = {
    "exec": "systemd.service(5) exec (v240+): for an app that never sends READY=1; started once"
    " the program is executed, so `systemctl start` and `restart` return before it serves"
    " (connections wait in the socket meanwhile) and a failing exec fails the start",
    "simple": "systemd.service(5) simple: started as soon as the process is forked, before"
    " the exec: a missing program only shows in the journal (--type exec reports it)",
}


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


def _allow_setpriority(
    knobs: tuple[tuple[str, str, str], ...],
) -> tuple[tuple[str, str, str], ...]:
    """Re-allow setpriority(2) and sched_setscheduler(2) after a ``~@resources`` deny list
    (strict), for the
    supervisor's --startup-nice. systemd.exec(5): later SystemCallFilter= lines add to or
    remove from the first one's list."""
    out: list[tuple[str, str, str]] = []
    for knob in knobs:
        out.append(knob)
        key, value, _ = knob
        if key == "SystemCallFilter" and value.startswith("~") and "@resources" in value:
            out.append(
                (
                    "SystemCallFilter",
                    "setpriority sched_setscheduler",
                    "sdactivate run --startup-nice starts generations at nice +10 under"
                    " SCHED_IDLE and restores them on takeover (LimitNICE= keeps them at nice 0"
                    " or above); 0 turns it off and drops this line",
                )
            )
    return tuple(out)


def _socket_units(
    options: Options,
    prefix: str,
    service_name: str,
    description: str,
    groups: list[tuple[str | None, list[ListenAddress]]],
) -> list[SocketUnit]:
    sockets: list[SocketUnit] = []
    backlog = version.default_backlog(options.systemd_version)
    for index, (fd_name, addresses) in enumerate(groups):
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
    if options.accept:
        trigger = options.start_limit or limits.ACCEPT_TRIGGER_LIMIT
        sockets[0] = replace(
            sockets[0],
            accept=True,
            max_connections=(
                limits.DEFAULT_MAX_CONNECTIONS
                if options.max_connections is None
                else options.max_connections
            ),
            trigger_limit=trigger,
            comments=(
                (
                    "Accept",
                    "systemd.socket(5): systemd accepts; each connection starts an instance"
                    f" of {service_name} with it as fd 3 (LISTEN_FDNAMES=connection)",
                ),
                (
                    "MaxConnections",
                    "instances running at once; systemd closes further connections right away",
                ),
                ("TriggerLimit", limits.trigger_limit_comment(trigger)),
            ),
        )
    return sockets


def _supervisor_exec_reload(target: int) -> str:
    return (
        "waits until the new generation is READY (or fails and keeps the old): `systemctl"
        " reload` fails when the handover does. Not Type=notify-reload: new in systemd"
        f" {version.NOTIFY_RELOAD}, and {target} would run it as Type=simple"
    )


# systemd.service(5) v253 Type=notify-reload: `systemctl reload` sends ReloadSignal=
# (SIGHUP) to the main process and waits for RELOADING=1 with a MONOTONIC_USEC= taken after
# the signal, then READY=1. No ExecReload= helper: a main process that dies mid-reload ends
# the reload at once (Restart= applies), where 254-257 kept a Type=notify unit whose
# ExecReload= had ended in reload-notify until the reload timeout (measured).
_SUPERVISOR_NOTIFY_RELOAD = (
    "Type=notify-reload (v253): `systemctl reload` sends SIGHUP; the supervisor answers"
    " RELOADING=1 + MONOTONIC_USEC, starts the new generation and sends READY=1 once it"
    " took over, so `systemctl reload` returns after the handover. A failed handover keeps"
    " the old generation serving and also ends the reload with READY=1 (systemd has no"
    " failed-reload notification): `systemctl status` shows STATUS=upgrade failed: ..., the"
    " journal the reason, and `sdactivate reload --pid $MAINPID` exits 1. A supervisor"
    " that dies mid-reload ends the reload at once and Restart= brings it back."
)

_APP_NOTIFY_RELOAD = (
    "Type=notify-reload (v253): `systemctl reload` sends SIGHUP; the app answers"
    " RELOADING=1 + MONOTONIC_USEC (sdactivate.notify.reloading()), reloads, then READY=1,"
    " and `systemctl reload` returns when it is done."
)


def _app_exec_reload(target: int) -> str:
    return (
        "the app answers SIGHUP with RELOADING=1 + MONOTONIC_USEC, then READY=1 (systemd"
        f" {target} has no Type=notify-reload, new in {version.NOTIFY_RELOAD}: it would run it"
        " as Type=simple); `systemctl reload` returns once the signal is sent"
    )


def _fdstore_preserve(options: Options, *, holds_listeners: bool) -> str | None:
    """FileDescriptorStorePreserve= to write: the option, or by default ``yes`` on v254+
    when the store holds the listening sockets (no socket unit keeps them)."""
    if options.fdstore_preserve is not None:
        return options.fdstore_preserve
    if options.fdstore and holds_listeners and options.systemd_version >= version.STORE_PRESERVE:
        return "yes"
    return None


def _fdstore_comment(target: int, preserve: str | None) -> str:
    # systemd.service(5), docs/FILE_DESCRIPTOR_STORE.md; FileDescriptorStorePreserve= is v254
    text = (
        "sd_notify(3) FDSTORE=1: stored fds come back (LISTEN_FDS) after `systemctl restart`"
        " and after an automatic Restart="
    )
    if target < version.STORE_PRESERVE:
        return (
            text + ", but a separate `systemctl stop` + `start` flushes them (systemd"
            f" {target} has no FileDescriptorStorePreserve=, new in {version.STORE_PRESERVE})"
        )
    if preserve in (None, "restart"):
        return (
            text + ", but a separate `systemctl stop` + `start` flushes them"
            " (FileDescriptorStorePreserve=yes can keep them)"
        )
    if preserve == "no":
        return text + "; any stop flushes them (FileDescriptorStorePreserve=no)"
    return text + "; a separate `systemctl stop` + `start`: see FileDescriptorStorePreserve="


def _preserve_comment(target: int, preserve: str) -> str:
    if preserve == "no":
        return "systemd.service(5): release the stored fds whenever the service stops"
    if preserve == "restart":
        return "systemd.service(5): the default; stored fds survive restarts only"
    text = (
        "systemd.service(5): keep the stored fds while the service is stopped, until the unit"
        " is unloaded, so `systemctl stop` + `start` keeps the sockets (the port stays bound"
        " meanwhile: connections wait for the next start; `systemctl clean --what=fdstore"
        " NAME` releases them)."
    )
    if version.preserve_outlives_unload(target):
        return text + f" systemd {target} keeps a stopped unit loaded with its fd store."
    return text + (
        f" systemd {target} unloads a stopped unit that nothing references, fd store and all:"
        " keep it enabled (wanted by a target that is active) or referenced by another"
        " loaded unit, or `stop` + `start` binds anew."
    )


def resolve(options: Options, *, which: Which = shutil.which, python: str = "python3") -> Options:
    """``options`` with the command resolved to an absolute argv (``exec_program`` folded in)
    and, for ``--supervise``, the interpreter resolved: what the header records."""
    names.check_unit_prefix(options.name, longest_suffix=".service")
    # report address and combination errors before PATH lookups
    check_combinations(options, len(_socket_groups(options)))
    argv = _argv(options, which)
    resolved = replace(
        options,
        command=argv,
        exec_program=None,
        python=_python(options, which, python) if options.supervise else None,
    )
    return resolved


def build(
    options: Options, *, which: Which = shutil.which, python: str = "python3"
) -> dict[str, str]:
    """``{filename: text}`` for every unit, sockets first; the header records the command."""
    resolved = resolve(options, which=which, python=python)
    preflight.check_relative_script(resolved)  # on any host: the service starts in /
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
