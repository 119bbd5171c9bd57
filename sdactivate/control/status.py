"""``sdactivate status NAME``: the service and its sockets, read from systemd over D-Bus.

Property names are systemd's own (org.freedesktop.systemd1(5)), so ``--json`` output can
be compared one to one with ``systemctl show -p NAME``.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .. import _env
from .bus import Systemd, interfaces_for, is_not_found, unit_properties
from .errors import NoSuchUnitError
from .model import format_timespan, jsonable, status_unit_names

__all__ = [
    "SERVICE_PROPERTIES",
    "SOCKET_PROPERTIES",
    "StatusReport",
    "UnitStatus",
    "render_table",
    "supervisor_workers",
    "unit_status",
]

_COMMON = ("Id", "Description", "LoadState", "ActiveState", "SubState", "UnitFileState")
SERVICE_PROPERTIES = (
    *_COMMON,
    "Type",
    "Result",
    "MainPID",
    "StatusText",
    "StatusErrno",
    "NRestarts",
    "NFileDescriptorStore",
    "FileDescriptorStoreMax",
    "WatchdogUSec",
    "WatchdogTimestamp",
    "ExecMainCode",
    "ExecMainStatus",
    "ActiveEnterTimestamp",
    "TriggeredBy",
)
SOCKET_PROPERTIES = (
    *_COMMON,
    "Result",
    "Listen",
    "Accept",
    "NAccepted",
    "NConnections",
    "NRefused",  # v246+; absent on older managers
    "FileDescriptorName",
    "Triggers",
)


@dataclass(frozen=True)
class UnitStatus:
    """One unit's selected properties (systemd names, JSON-ready values)."""

    unit: str
    properties: Mapping[str, Any]

    @property
    def kind(self) -> str:
        return self.unit.rsplit(".", 1)[-1]


@dataclass(frozen=True)
class StatusReport:
    """The service (if any) and the sockets (if any) that ``status NAME`` found."""

    name: str
    service: UnitStatus | None
    sockets: tuple[UnitStatus, ...]
    others: tuple[UnitStatus, ...] = ()
    # an `sdactivate run` supervisor's processes, from its control socket (not D-Bus)
    workers: tuple[Mapping[str, Any], ...] = ()

    def units(self) -> tuple[UnitStatus, ...]:
        head = (self.service,) if self.service else ()
        return (*head, *self.sockets, *self.others)

    def to_json(self) -> dict[str, Any]:
        def one(status: UnitStatus) -> dict[str, Any]:
            return {"unit": status.unit, **status.properties}

        return {
            "name": self.name,
            "service": one(self.service) if self.service else None,
            "sockets": [one(s) for s in self.sockets],
            "others": [one(s) for s in self.others],
            "workers": [dict(w) for w in self.workers],
        }


def _select(unit: str, props: Mapping[str, Any]) -> UnitStatus:
    wanted = (
        SERVICE_PROPERTIES
        if unit.endswith(".service")
        else SOCKET_PROPERTIES
        if unit.endswith(".socket")
        else _COMMON
    )
    return UnitStatus(unit, {key: jsonable(props[key]) for key in wanted if key in props})


def unit_status(
    name: str, *, user: bool = False, environ: _env.Environ | None = None, timeout: float = 10.0
) -> StatusReport:
    """Read the status of ``name``: ``NAME.service`` and ``NAME.socket`` for a bare name,
    plus the sockets that trigger the service (``TriggeredBy``) or the service a socket
    triggers (``Triggers``).

    ``timeout`` bounds the wait for systemd to be on the bus. Raises
    :class:`NoSuchUnitError` if none of the named units exists, and the other
    :mod:`~sdactivate.control.errors` leaves for bus problems.
    """
    first = status_unit_names(name)
    found: dict[str, UnitStatus] = {}
    with Systemd.connect(user=user, environ=environ, wait=timeout) as bus:

        def load(unit: str) -> UnitStatus | None:
            if unit in found:
                return found[unit]
            try:
                path = bus.load_unit(unit)
            except NoSuchUnitError:
                return None
            props = unit_properties(bus, path, interfaces_for(unit))
            if is_not_found(props):
                return None
            found[unit] = _select(unit, props)
            return found[unit]

        for unit in first:
            load(unit)
        if not found:
            raise NoSuchUnitError(f"no unit {' or '.join(first)} is known to systemd")
        for status in list(found.values()):
            related = (*status.properties.get("TriggeredBy", ()),)
            related += (*status.properties.get("Triggers", ()),)
            for unit in related:
                if unit.endswith((".service", ".socket")):
                    load(unit)
    report = _report(name, found.values())
    if report.service is not None:
        props = report.service.properties
        # an `sdactivate run` supervisor's STATUS= names its generation (supervisor.machine)
        if "generation " in str(props.get("StatusText") or ""):
            workers = supervisor_workers(int(props.get("MainPID") or 0), timeout=timeout)
            report = dataclasses.replace(report, workers=workers)
    return report


def supervisor_workers(pid: int, *, timeout: float = 5.0) -> tuple[Mapping[str, Any], ...]:
    """The processes of ``sdactivate run`` supervisor ``pid`` (worker, pid, generation,
    state, uptime, restarts), read from its control socket; ``()`` when ``pid`` is no
    supervisor or this user may not ask it (only root and its own user may)."""
    from ..errors import SdActivateError
    from ..supervisor.client import request_status

    if pid <= 0:
        return ()
    try:
        answer = request_status(pid, timeout=min(timeout, 5.0))
    except SdActivateError:
        return ()
    workers = answer.get("workers")
    if not isinstance(workers, list):
        return ()
    return tuple(w for w in workers if isinstance(w, dict))


def _report(name: str, units: Iterable[UnitStatus]) -> StatusReport:
    services = [u for u in units if u.kind == "service"]
    sockets = tuple(sorted((u for u in units if u.kind == "socket"), key=lambda u: u.unit))
    others = tuple(u for u in units if u.kind not in ("service", "socket"))
    return StatusReport(name, services[0] if services else None, sockets, others)


# -- rendering (pure) ----------------------------------------------------------------------


def _timestamp(usec: int, now: float | None) -> str:
    if not usec:
        return "never"
    when = datetime.datetime.fromtimestamp(usec / 1e6, tz=datetime.UTC)
    text = when.strftime("%Y-%m-%d %H:%M:%S UTC")
    if now is not None:
        text += f" ({max(0.0, now - usec / 1e6):.1f}s ago)"
    return text


def _rows(status: UnitStatus, now: float | None) -> list[tuple[str, str]]:
    p = status.properties
    rows: list[tuple[str, str]] = []
    if status.kind == "service":
        rows.append(("Main PID", str(p.get("MainPID", 0) or "-")))
        rows.append(("Status", repr(p["StatusText"]) if p.get("StatusText") else "-"))
        rows.append(("Restarts", str(p.get("NRestarts", "-"))))
        if "NFileDescriptorStore" in p:
            store = f"{p['NFileDescriptorStore']} / {p.get('FileDescriptorStoreMax', '?')}"
            rows.append(("FD store", store + " (stored / max)"))
        watchdog = int(p.get("WatchdogUSec", 0))
        if watchdog:
            last = _timestamp(int(p.get("WatchdogTimestamp", 0)), now)
            rows.append(("Watchdog", f"{format_timespan(watchdog)}, last ping {last}"))
        else:
            rows.append(("Watchdog", "off"))
    elif status.kind == "socket":
        listen = p.get("Listen", [])
        for i, (kind, address) in enumerate(listen):
            rows.append(("Listen" if i == 0 else "", f"{address} ({kind})"))
        if not listen:
            rows.append(("Listen", "-"))
        for key, label in (
            ("NAccepted", "Accepted"),
            ("NConnections", "Connections"),
            ("NRefused", "Refused"),
        ):
            if key in p:
                rows.append((label, str(p[key])))
    result = p.get("Result")
    if result:
        rows.append(("Result", str(result)))
    return rows


def render_table(report: StatusReport, *, now: float | None = None) -> str:
    """A readable table, one block per unit. ``now`` (epoch seconds) adds "N s ago"."""
    blocks = []
    for status in report.units():
        p = status.properties
        state = f"{p.get('ActiveState', '?')} ({p.get('SubState', '?')})"
        lines = [f"{status.unit}  {state}"]
        if p.get("Description") and p["Description"] != status.unit:
            lines[0] += f"  - {p['Description']}"
        lines += [f"  {label:<12} {value}" for label, value in _rows(status, now)]
        if status is report.service and report.workers:
            lines += _worker_rows(report.workers)
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def _worker_rows(workers: Iterable[Mapping[str, Any]]) -> list[str]:
    rows = []
    for i, w in enumerate(workers):
        label = "Workers" if i == 0 else ""
        rows.append(
            f"  {label:<12} worker {w.get('worker', '?')}: pid {w.get('pid', '?')},"
            f" generation {w.get('generation', '?')}, {w.get('state', '?')},"
            f" up {float(w.get('uptime', 0)):.1f}s, {w.get('restarts', 0)} restarts"
        )
    return rows
