"""Unit models: frozen values that validate on construction.

A :class:`SocketUnit` or :class:`ServiceUnit` that exists can be rendered; every invalid field
raises :class:`UnitConfigError` naming the field. Escaping itself happens in the renderer, but
the checks here call the same escape functions so that "valid" means "renderable".
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..addresses import ListenAddress
from ..errors import UnitConfigError
from . import escape, names

__all__ = ["ServiceUnit", "SocketUnit", "format_seconds"]

SERVICE_TYPES = ("simple", "exec", "forking", "oneshot", "notify", "notify-reload", "idle")
NOTIFY_ACCESS = ("none", "main", "exec", "all")
RESTART = ("no", "on-success", "on-failure", "on-abnormal", "on-watchdog", "on-abort", "always")
KILL_MODES = ("control-group", "mixed", "process")  # "none" is deprecated (systemd.kill(5))


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
class SocketUnit:
    """A ``.socket`` unit with ``Accept=no`` (one service gets the listening fds)."""

    name: str  # "myapp.socket"
    description: str
    listens: tuple[ListenAddress, ...]
    fd_name: str | None = None  # FileDescriptorName=; None: systemd names fds after the unit
    backlog: int | None = None  # Backlog=; None: the target's default
    service: str | None = None  # Service=; None: the service named like the socket
    user: bool = False  # per-user manager unit

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
                raise UnitConfigError(f"{self.name}: port 0 in {str(address)!r} (1..65535)")
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


@dataclass(frozen=True)
class ServiceUnit:
    """A ``.service`` unit activated by its socket units."""

    name: str  # "myapp.service"
    description: str
    exec_start: tuple[escape.ExecArg, ...]
    sockets: tuple[str, ...]  # Requires=/After= these; Sockets= when not the default
    type: str = "notify"
    notify_access: str = "main"
    exec_reload: tuple[escape.ExecArg, ...] | None = None
    restart: str = "on-failure"
    restart_sec: float = 1
    timeout_stop_sec: float = 30
    watchdog_sec: float | None = None
    fdstore_max: int = 0
    kill_mode: str | None = None  # None: systemd's default (control-group)
    environment: tuple[tuple[str, str], ...] = ()
    working_directory: str | None = None
    hardening: tuple[tuple[str, str, str], ...] = ()  # (key, value, comment)
    comments: tuple[tuple[str, str], ...] = ()  # (key, comment) written above that key
    user: bool = False

    def __post_init__(self) -> None:
        names.check_unit_name(self.name)
        if not self.name.endswith(".service"):
            raise UnitConfigError(f"service unit name {self.name!r} must end in .service")
        _check_description(self.description)
        escape.exec_command_line(self.exec_start, what="ExecStart")
        if self.exec_reload is not None:
            escape.exec_command_line(self.exec_reload, what="ExecReload")
        for sock in self.sockets:
            names.check_unit_name(sock)
            if not sock.endswith(".socket"):
                raise UnitConfigError(f"{self.name}: {sock!r} is not a .socket unit")
        _choice("Type", self.type, SERVICE_TYPES)
        _choice("NotifyAccess", self.notify_access, NOTIFY_ACCESS)
        _choice("Restart", self.restart, RESTART)
        if self.kill_mode is not None:
            _choice("KillMode", self.kill_mode, KILL_MODES)
        format_seconds(self.restart_sec, what="RestartSec")
        format_seconds(self.timeout_stop_sec, what="TimeoutStopSec")
        if self.watchdog_sec is not None:
            format_seconds(self.watchdog_sec, what="WatchdogSec")
        if isinstance(self.fdstore_max, bool) or not (
            isinstance(self.fdstore_max, int) and 0 <= self.fdstore_max <= 4096
        ):
            raise UnitConfigError(f"FileDescriptorStoreMax: {self.fdstore_max!r} not in 0..4096")
        for env_name, env_value in self.environment:
            escape.quote_environment(env_name, env_value)
        if self.working_directory is not None:
            escape.check_absolute_path(self.working_directory, what="WorkingDirectory")
            escape.escape_value(self.working_directory, what="WorkingDirectory")
        for key, value, comment in self.hardening:
            escape.escape_value(value, what=key)
            escape.check_text(comment, what=f"comment for {key}")


def _choice(key: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise UnitConfigError(f"{key}: {value!r} is not one of {', '.join(allowed)}")
