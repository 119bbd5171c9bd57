"""Unit models: frozen values that validate on construction.

A :class:`SocketUnit` or :class:`ServiceUnit` that exists can be rendered; every invalid field
raises :class:`UnitConfigError` naming the field. Escaping itself happens in the renderer, but
the checks here call the same escape functions so that "valid" means "renderable".
"""

from __future__ import annotations

import math
import signal
import socket
from dataclasses import dataclass

from ..addresses import ListenAddress, port_range_message
from ..errors import UnitConfigError
from . import escape, names

__all__ = ["RateLimit", "ServiceUnit", "SocketUnit", "format_seconds"]

SERVICE_TYPES = ("simple", "exec", "forking", "oneshot", "notify", "notify-reload", "idle")
NOTIFY_ACCESS = ("none", "main", "exec", "all")
RESTART = ("no", "on-success", "on-failure", "on-abnormal", "on-watchdog", "on-abort", "always")
KILL_MODES = ("control-group", "mixed", "process")  # "none" is deprecated (systemd.kill(5))
COLLECT_MODES = ("inactive", "inactive-or-failed")  # systemd.unit(5) CollectMode=
PRESERVE_MODES = ("no", "restart", "yes")  # systemd.service(5) FileDescriptorStorePreserve=
_BURST_MAX = 2**32 - 1  # StartLimitBurst=/TriggerLimitBurst= are unsigned (systemd.unit(5))
_MAX_CONNECTIONS_MAX = 2**32 - 1


def format_seconds(seconds: float, *, what: str) -> str:
    """A systemd.time(7) span: ``30s``, ``1.5s``, ``250ms``. Positive and finite only."""
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise UnitConfigError(f"{what}: expected seconds, got {seconds!r}")
    if not math.isfinite(seconds) or seconds <= 0 or seconds > 86400 * 365:
        raise UnitConfigError(f"{what}: {seconds!r} is not a positive number of seconds")
    millis = round(seconds * 1000)
    if millis == 0:
        raise UnitConfigError(f"{what}: {seconds!r}s is below systemd's 1ms resolution here")
    return f"{millis // 1000}s" if millis % 1000 == 0 else f"{millis}ms"


def _check_description(text: str) -> None:
    escape.escape_value(text, what="Description")
    if not text:
        raise UnitConfigError("Description: empty")


@dataclass(frozen=True)
class RateLimit:
    """At most ``burst`` starts (or triggers) per ``interval`` seconds; ``interval == 0``
    (with ``burst == 0``) turns the limit off, as ``StartLimitIntervalSec=0`` does
    (systemd.unit(5)) and ``TriggerLimitIntervalSec=0`` (systemd.socket(5))."""

    burst: int
    interval: float

    @classmethod
    def off(cls) -> RateLimit:
        return cls(0, 0)

    @property
    def is_off(self) -> bool:
        return self.interval == 0

    def __post_init__(self) -> None:
        if isinstance(self.burst, bool) or not isinstance(self.burst, int):
            raise UnitConfigError(f"rate limit: burst {self.burst!r} is not a whole number")
        if self.interval == 0 and not isinstance(self.interval, bool):
            if self.burst != 0:
                raise UnitConfigError("rate limit: an interval of 0 (off) takes no burst")
            return
        format_seconds(self.interval, what="rate limit interval")
        if not 0 < self.burst <= _BURST_MAX:
            raise UnitConfigError(f"rate limit: burst {self.burst!r} not in 1..{_BURST_MAX}")

    def __str__(self) -> str:
        """``--start-limit`` syntax: ``30/60`` or ``off``."""
        return "off" if self.is_off else f"{self.burst}/{self.interval:g}"


@dataclass(frozen=True)
class SocketUnit:
    """A ``.socket`` unit. ``Accept=no`` (default): one service gets the listening fds;
    ``accept=True``: one ``NAME@.service`` instance per connection (systemd.socket(5))."""

    name: str  # "myapp.socket"
    description: str
    listens: tuple[ListenAddress, ...]
    fd_name: str | None = None  # FileDescriptorName=; None: systemd names fds after the unit
    backlog: int | None = None  # Backlog=; None: the target's default
    service: str | None = None  # Service=; None: the service named like the socket
    user: bool = False  # per-user manager unit
    accept: bool = False  # Accept=yes
    max_connections: int | None = None  # MaxConnections= (Accept=yes only)
    trigger_limit: RateLimit | None = None  # TriggerLimit*=; None: systemd's default
    # socket files (AF_UNIX paths): SocketMode= (e.g. 0o660), SocketUser=, SocketGroup=
    socket_mode: int | None = None
    socket_user: str | None = None
    socket_group: str | None = None
    comments: tuple[tuple[str, str], ...] = ()  # (key, comment) written above that key

    def __post_init__(self) -> None:
        names.check_unit_name(self.name)
        if not self.name.endswith(".socket"):
            raise UnitConfigError(f"socket unit name {self.name!r} must end in .socket")
        _check_description(self.description)
        if not self.listens:
            raise UnitConfigError(f"{self.name}: at least one listen address is needed")
        seen: set[str] = set()
        for address in self.listens:
            if not isinstance(address, ListenAddress):
                raise UnitConfigError(f"{self.name}: not a ListenAddress: {address!r}")
            if not address.is_unix and address.port == 0:
                raise UnitConfigError(
                    f"{self.name}: {str(address)!r}: {port_range_message(0, fixed=True)}"
                )
            if self.user and address.port is not None and address.port < 1024:
                raise UnitConfigError(
                    f"port {address.port} in a user unit: a per-user manager is unprivileged"
                    " and cannot bind ports below 1024 (net.ipv4.ip_unprivileged_port_start);"
                    " generate a system unit (without --user) instead"
                )
            directive, value = address.systemd_listen()
            escape.escape_value(value, what=directive)
            key = f"{directive}={value}"
            if key in seen:
                raise UnitConfigError(f"{self.name}: {str(address)!r} is listed twice")
            seen.add(key)
        if self.fd_name is not None:
            names.check_fd_name(self.fd_name)
        if self.backlog is not None and not (
            isinstance(self.backlog, int) and 0 < self.backlog <= 2**31 - 1
        ):
            raise UnitConfigError(f"{self.name}: invalid Backlog {self.backlog!r}")
        if self.service is not None:
            names.check_unit_name(self.service)
            if not self.service.endswith(".service"):
                raise UnitConfigError(f"{self.name}: Service= must name a .service unit")
        if self.accept:
            # systemd.socket(5): Accept=yes is for stream (and seqpacket) sockets only; the
            # fd of every instance is named "connection", and Service= cannot be used.
            if any(a.type == socket.SOCK_DGRAM for a in self.listens):
                raise UnitConfigError(
                    f"{self.name}: Accept=yes needs stream or seqpacket sockets, not datagram"
                )
            if self.fd_name is not None or self.service is not None:
                raise UnitConfigError(
                    f"{self.name}: with Accept=yes each instance gets its connection as fd 3"
                    " named 'connection'; FileDescriptorName= and Service= do not apply"
                )
        if self.max_connections is not None:
            if not self.accept:
                raise UnitConfigError(f"{self.name}: MaxConnections= only applies to Accept=yes")
            if isinstance(self.max_connections, bool) or not (
                isinstance(self.max_connections, int)
                and 0 < self.max_connections <= _MAX_CONNECTIONS_MAX
            ):
                raise UnitConfigError(
                    f"{self.name}: MaxConnections {self.max_connections!r} is not a positive count"
                )
        if self.trigger_limit is not None and not isinstance(self.trigger_limit, RateLimit):
            raise UnitConfigError(f"{self.name}: not a RateLimit: {self.trigger_limit!r}")
        if self.socket_mode is not None and (
            isinstance(self.socket_mode, bool)
            or not isinstance(self.socket_mode, int)
            or not 0 <= self.socket_mode <= 0o7777
        ):
            raise UnitConfigError(f"{self.name}: SocketMode {self.socket_mode!r} not in 0..0o7777")
        for key, owner in (("SocketUser", self.socket_user), ("SocketGroup", self.socket_group)):
            if owner is not None:
                escape.escape_value(owner, what=key)
                if not owner or any(ch.isspace() or ch in ":/" for ch in owner):
                    raise UnitConfigError(f"{self.name}: {key} {owner!r} is not a user/group")
        for key, comment in self.comments:
            escape.check_text(comment, what=f"comment for {key}")


@dataclass(frozen=True)
class ServiceUnit:
    """A ``.service`` unit: activated by its socket units, started on its own (no sockets),
    or, named ``NAME@.service``, the template of ``Accept=yes`` per-connection instances."""

    name: str  # "myapp.service"
    description: str
    exec_start: tuple[escape.ExecArg, ...]
    sockets: tuple[str, ...]  # Requires=/After= these; Sockets= when not the default
    type: str = "notify"
    notify_access: str = "main"
    exec_reload: tuple[escape.ExecArg, ...] | None = None
    # ExecStop= lines, in order; each written with the "-" prefix (systemd.service(5): a
    # failure is ignored; $MAINPID is unset once the main process has exited by itself)
    exec_stop: tuple[tuple[escape.ExecArg, ...], ...] = ()
    restart: str = "on-failure"
    restart_sec: float = 1
    timeout_start_sec: float | None = None  # None: the manager's DefaultTimeoutStartSec=
    timeout_stop_sec: float = 30
    watchdog_sec: float | None = None
    fdstore_max: int = 0
    fdstore_preserve: str | None = None  # FileDescriptorStorePreserve= (v254); None: not written
    kill_mode: str | None = None  # None: systemd's default (control-group)
    kill_signal: str | None = None  # KillSignal= as SIGNAME; None: systemd's SIGTERM
    limit_nice: int | None = None  # LimitNICE= as a nice value (-20..19); None: not written
    environment: tuple[tuple[str, str], ...] = ()
    working_directory: str | None = None
    start_limit: RateLimit | None = None  # StartLimit*=; None: the manager's default
    collect_mode: str | None = None  # CollectMode=; None: systemd's default (inactive)
    hardening: tuple[tuple[str, str, str], ...] = ()  # (key, value, comment)
    comments: tuple[tuple[str, str], ...] = ()  # (key, comment) written above that key
    user: bool = False

    @property
    def is_template(self) -> bool:
        return self.name.rpartition(".")[0].endswith("@")

    def __post_init__(self) -> None:
        names.check_unit_name(self.name, template_ok=True)
        if not self.name.endswith(".service"):
            raise UnitConfigError(f"service unit name {self.name!r} must end in .service")
        _check_description(self.description)
        escape.exec_command_line(self.exec_start, what="ExecStart")
        if self.exec_reload is not None:
            escape.exec_command_line(self.exec_reload, what="ExecReload")
        for command in self.exec_stop:
            escape.exec_command_line(command, what="ExecStop", ignore_failure=True)
        for sock in self.sockets:
            names.check_unit_name(sock)
            if not sock.endswith(".socket"):
                raise UnitConfigError(f"{self.name}: {sock!r} is not a .socket unit")
        _choice("Type", self.type, SERVICE_TYPES)
        _choice("NotifyAccess", self.notify_access, NOTIFY_ACCESS)
        _choice("Restart", self.restart, RESTART)
        if self.kill_mode is not None:
            _choice("KillMode", self.kill_mode, KILL_MODES)
        if self.collect_mode is not None:
            _choice("CollectMode", self.collect_mode, COLLECT_MODES)
        if self.limit_nice is not None and (
            isinstance(self.limit_nice, bool)
            or not isinstance(self.limit_nice, int)
            or not -20 <= self.limit_nice <= 19
        ):
            raise UnitConfigError(f"LimitNICE: {self.limit_nice!r} is not a nice value -20..19")
        if self.start_limit is not None and not isinstance(self.start_limit, RateLimit):
            raise UnitConfigError(f"{self.name}: not a RateLimit: {self.start_limit!r}")
        if self.is_template and self.sockets:
            raise UnitConfigError(
                f"{self.name}: Accept=yes instances are started by their socket; "
                "a template does not Require= it"
            )
        format_seconds(self.restart_sec, what="RestartSec")
        format_seconds(self.timeout_stop_sec, what="TimeoutStopSec")
        if self.timeout_start_sec is not None:
            format_seconds(self.timeout_start_sec, what="TimeoutStartSec")
        if self.kill_signal is not None and self.kill_signal not in signal.Signals.__members__:
            raise UnitConfigError(f"KillSignal: {self.kill_signal!r} is not a signal name")
        if self.watchdog_sec is not None:
            format_seconds(self.watchdog_sec, what="WatchdogSec")
        if isinstance(self.fdstore_max, bool) or not (
            isinstance(self.fdstore_max, int) and 0 <= self.fdstore_max <= 4096
        ):
            raise UnitConfigError(f"FileDescriptorStoreMax: {self.fdstore_max!r} not in 0..4096")
        if self.fdstore_preserve is not None:
            _choice("FileDescriptorStorePreserve", self.fdstore_preserve, PRESERVE_MODES)
            if not self.fdstore_max:
                raise UnitConfigError(
                    f"{self.name}: FileDescriptorStorePreserve= without an fd store"
                    " (FileDescriptorStoreMax=0)"
                )
        for env_name, env_value in self.environment:
            escape.quote_environment(env_name, env_value)
        if self.working_directory is not None:
            escape.check_absolute_path(self.working_directory, what="WorkingDirectory")
            escape.escape_value(self.working_directory, what="WorkingDirectory")
        for key, value, comment in self.hardening:
            escape.escape_value(value, what=key)
            escape.check_text(comment, what=f"comment for {key}")
        for key, comment in self.comments:
            escape.check_text(comment, what=f"comment for {key}")


def _choice(key: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise UnitConfigError(f"{key}: {value!r} is not one of {', '.join(allowed)}")
