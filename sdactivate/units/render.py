"""Render unit models to unit-file text. The only place in sdactivate that writes ``Key=Value``.

Pure: a model and a target version in, a string out. Every line is escaped by
:mod:`.escape` and checked against the target version (:func:`version.check_supported`).
Comments go on their own lines: unit files have no trailing comments (a ``#`` after a value
is part of the value, systemd.syntax(7)).
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence

from . import escape
from .model import RateLimit, ServiceUnit, SocketUnit, format_seconds
from .version import check_supported

__all__ = ["render_service", "render_socket"]

_WIDTH = 90  # comment lines are wrapped; a comment is never continued with a backslash


class _Lines:
    def __init__(self, header: Sequence[str], version: int) -> None:
        self._out: list[str] = []
        self._version = version
        for line in header:
            self.comment(line, wrap=False)

    def comment(self, text: str, *, wrap: bool = True) -> None:
        escape.check_text(text, what="comment")
        lines = textwrap.wrap(text, _WIDTH, break_on_hyphens=False) if wrap else [text]
        self._out.extend(f"# {line}".rstrip() for line in lines or [""])

    def section(self, name: str) -> None:
        if self._out:
            self._out.append("")
        self._out.append(f"[{name}]")

    def _emit(self, key: str, raw: str, rendered: str, comment: str = "") -> None:
        check_supported(key, raw, self._version)
        if comment:
            self.comment(comment)
        self._out.append(f"{key}={rendered}")

    def value(self, key: str, value: str, comment: str = "") -> None:
        self._emit(key, value, escape.escape_value(value, what=key), comment)

    def command(
        self,
        key: str,
        argv: Sequence[escape.ExecArg],
        comment: str = "",
        *,
        ignore_failure: bool = False,
    ) -> None:
        line = escape.exec_command_line(argv, what=key, ignore_failure=ignore_failure)
        self._emit(key, "", line, comment)

    def environment(self, name: str, value: str) -> None:
        self._emit("Environment", "", escape.quote_environment(name, value))

    def rate_limit(self, prefix: str, limit: RateLimit, comment: str = "") -> None:
        """``<prefix>IntervalSec=`` + ``<prefix>Burst=``; an interval of 0 is "off"."""
        if limit.is_off:
            self.value(f"{prefix}IntervalSec", "0", comment)
            return
        interval = format_seconds(limit.interval, what=f"{prefix}IntervalSec")
        self.value(f"{prefix}IntervalSec", interval, comment)
        self.value(f"{prefix}Burst", str(limit.burst))

    def text(self) -> str:
        return "\n".join(self._out) + "\n"


def render_socket(unit: SocketUnit, *, version: int, header: Sequence[str] = ()) -> str:
    """``unit`` as ``.socket`` file text for systemd ``version``."""
    out = _Lines(header, version)
    out.section("Unit")
    out.value("Description", unit.description)
    out.section("Socket")
    for address in unit.listens:
        key, value = address.systemd_listen()
        out.value(key, value)
    if unit.fd_name is not None:
        out.value("FileDescriptorName", unit.fd_name)
    if unit.backlog is not None:
        out.value(
            "Backlog",
            str(unit.backlog),
            "systemd.socket(5): the default is 128 before v254; the kernel caps this at"
            " net.core.somaxconn",
        )
    if unit.service is not None:
        out.value("Service", unit.service)
    notes = dict(unit.comments)
    if unit.socket_mode is not None:
        out.value("SocketMode", f"{unit.socket_mode:04o}", notes.get("SocketMode", ""))
    if unit.socket_user is not None:
        out.value("SocketUser", unit.socket_user)
    if unit.socket_group is not None:
        out.value("SocketGroup", unit.socket_group)
    if unit.accept:
        out.value("Accept", "yes", notes.get("Accept", ""))
    if unit.max_connections is not None:
        out.value("MaxConnections", str(unit.max_connections), notes.get("MaxConnections", ""))
    if unit.trigger_limit is not None:
        out.rate_limit("TriggerLimit", unit.trigger_limit, notes.get("TriggerLimit", ""))
    out.section("Install")
    out.value("WantedBy", "sockets.target")
    return out.text()


def render_service(unit: ServiceUnit, *, version: int, header: Sequence[str] = ()) -> str:
    """``unit`` as ``.service`` file text for systemd ``version``."""
    notes = dict(unit.comments)
    out = _Lines(header, version)
    out.section("Unit")
    out.value("Description", unit.description)
    if unit.start_limit is not None:
        # systemd.unit(5): [Unit] since v230 ([Service] is the deprecated spelling)
        out.rate_limit("StartLimit", unit.start_limit, notes.get("StartLimit", ""))
    sockets = " ".join(unit.sockets)
    if sockets:
        out.value("Requires", sockets)
        out.value("After", sockets)
    if unit.collect_mode is not None:
        out.value("CollectMode", unit.collect_mode, notes.get("CollectMode", ""))
    out.section("Service")
    out.value("Type", unit.type, notes.get("Type", ""))
    out.value("NotifyAccess", unit.notify_access, notes.get("NotifyAccess", ""))
    if sockets and unit.sockets != (unit.name.removesuffix(".service") + ".socket",):
        out.value("Sockets", sockets, "systemd.service(5): receive the fds of every socket unit")
    out.command("ExecStart", unit.exec_start)
    if unit.exec_reload is not None:
        out.command("ExecReload", unit.exec_reload, notes.get("ExecReload", ""))
    for index, command in enumerate(unit.exec_stop):
        note = "" if index else notes.get("ExecStop", "")
        out.command("ExecStop", command, note, ignore_failure=True)
    if unit.kill_mode is not None:
        out.value("KillMode", unit.kill_mode, notes.get("KillMode", ""))
    if unit.kill_signal is not None:
        out.value("KillSignal", unit.kill_signal)
    if unit.limit_nice is not None:
        # systemd.exec(5): a +/- prefixed value is a nice level (an unprefixed one the raw
        # RLIMIT_NICE, 20 - nice)
        out.value("LimitNICE", f"{unit.limit_nice:+d}", notes.get("LimitNICE", ""))
    if unit.working_directory is not None:
        out.value("WorkingDirectory", unit.working_directory)
    for name, value in unit.environment:
        out.environment(name, value)
    if unit.restart != "no":
        out.value("Restart", unit.restart, notes.get("Restart", ""))
        out.value("RestartSec", format_seconds(unit.restart_sec, what="RestartSec"))
    if unit.timeout_start_sec is not None:
        out.value(
            "TimeoutStartSec",
            format_seconds(unit.timeout_start_sec, what="TimeoutStartSec"),
            notes.get("TimeoutStartSec", ""),
        )
    out.value(
        "TimeoutStopSec",
        format_seconds(unit.timeout_stop_sec, what="TimeoutStopSec"),
        notes.get("TimeoutStopSec", ""),
    )
    if unit.watchdog_sec is not None:
        out.value(
            "WatchdogSec",
            format_seconds(unit.watchdog_sec, what="WatchdogSec"),
            "sd_watchdog_enabled(3): ping (WATCHDOG=1) every WatchdogSec/2",
        )
    if unit.fdstore_max:
        out.value(
            "FileDescriptorStoreMax",
            str(unit.fdstore_max),
            notes.get("FileDescriptorStoreMax", ""),
        )
    if unit.fdstore_preserve is not None:
        out.value(
            "FileDescriptorStorePreserve",
            unit.fdstore_preserve,
            notes.get("FileDescriptorStorePreserve", ""),
        )
    if unit.hardening:
        out.comment("Sandboxing (systemd.exec(5)); check with: systemd-analyze security UNIT")
    for key, value, why in unit.hardening:
        out.value(key, value, why)
    if unit.is_template:
        return out.text()  # instances are started by their socket, never enabled
    out.section("Install")
    if unit.sockets:
        out.value("Also", sockets)
    else:
        out.value("WantedBy", "default.target" if unit.user else "multi-user.target")
    return out.text()
