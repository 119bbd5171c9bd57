"""Run start/stop/restart/reload jobs and wait until the unit really got there.

``systemctl restart`` returns when the job is done. For ``Type=notify`` the start job
already waits for READY=1 (sd_notify(3)), but a unit can still be ``activating`` (auto
restart) or fail right after; so after ``JobRemoved`` we keep watching ``ActiveState``
until the verdict of :func:`~sdactivate.control.model.judge` is final, all under one
deadline. On failure the outcome carries the job result, the unit's Result, the main
process's exit and the unit's last journal lines.
"""

from __future__ import annotations

import logging
import subprocess
import time
from collections.abc import Callable, Sequence
from typing import Any

from .. import _env
from .bus import UNIT_IFACE, Systemd, interfaces_for, is_not_found, unit_properties
from .errors import ControlTimeoutError, NoSuchUnitError
from .model import (
    JOB_VERBS,
    JobOutcome,
    Verdict,
    failure_reason,
    job_unit_name,
    jsonable,
    judge,
)

__all__ = ["JournalReader", "journal_tail", "run_job"]

log = logging.getLogger("sdactivate.control")

JournalReader = Callable[[str, bool, int], Sequence[str]]

DEFAULT_TIMEOUT = 90.0  # systemd.service(5): DefaultTimeoutStartSec= is 90s
_REPOLL = 1.0  # re-read the state at least this often even without a signal


def journal_tail(unit: str, user: bool, lines: int) -> list[str]:
    """The unit's last ``lines`` journal lines (``journalctl -u UNIT -n N --no-pager``).

    Returns ``[]`` if journalctl is missing or fails; the journal is a courtesy on failure.
    """
    argv = ["journalctl", "--user-unit" if user else "-u", unit, "-n", str(lines), "--no-pager"]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.debug("journalctl failed: %s", exc)
        return []
    return [line for line in proc.stdout.splitlines() if line and not line.startswith("-- ")]


def run_job(
    verb: str,
    name: str,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    user: bool = False,
    mode: str = "replace",
    environ: _env.Environ | None = None,
    journal: JournalReader | None = journal_tail,
    journal_lines: int = 20,
) -> JobOutcome:
    """Run ``verb`` (start|stop|restart|reload) on ``name`` and wait for the result.

    ``name`` without a suffix means ``name.service``. Subscribes to ``JobRemoved`` and the
    unit's ``PropertiesChanged`` before calling ``<Verb>Unit(name, mode)``, waits for that
    job, then for the unit to be ``active`` (``inactive`` for stop) or ``failed``.
    Returns a :class:`JobOutcome` (``ok`` False on a failed job or unit). Raises
    :class:`NoSuchUnitError`, :class:`ControlTimeoutError` (the job keeps running),
    :class:`PermissionDeniedError`, :class:`BusUnavailableError`, :class:`UnitNameError`.
    """
    if verb not in JOB_VERBS:
        raise ValueError(f"unknown job verb {verb!r}; expected one of {sorted(JOB_VERBS)}")
    unit = job_unit_name(name)
    started = time.monotonic()
    deadline = started + timeout
    with Systemd.connect(user=user, environ=environ, wait=min(timeout, 10.0)) as bus:
        job_result, props, verdict = _run_on(bus, verb, unit, mode, deadline, timeout)
    if verdict is Verdict.WAIT:
        raise ControlTimeoutError(
            f"{verb} of {unit}: job finished ({job_result}) but the unit is still "
            f"{props.get('ActiveState')} ({props.get('SubState')}) after {timeout:g}s"
        )
    elapsed = time.monotonic() - started
    ok = verdict is Verdict.OK
    return JobOutcome(
        verb=verb,
        unit=unit,
        ok=ok,
        job_result=job_result,
        active_state=str(props.get("ActiveState", "")),
        sub_state=str(props.get("SubState", "")),
        elapsed=elapsed,
        reason="" if ok else failure_reason(verb, job_result, props),
        properties=jsonable(props),
        journal=tuple(journal(unit, user, journal_lines)) if journal and not ok else (),
    )


def _run_on(
    bus: Systemd, verb: str, unit: str, mode: str, deadline: float, timeout: float
) -> tuple[str, dict[str, Any], Verdict]:
    """Subscribe, resolve the unit, run the job, wait for it and for the unit's state."""
    with bus.signals(interface="org.freedesktop.systemd1.Manager", member="JobRemoved") as jobs:
        bus.subscribe()
        path = bus.load_unit(unit)
        if is_not_found(bus.get_all(path, UNIT_IFACE)):
            raise NoSuchUnitError(f"Unit {unit} not found.")
        with bus.signals(
            interface="org.freedesktop.DBus.Properties", member="PropertiesChanged", path=path
        ) as changes:
            job = bus.start_job(JOB_VERBS[verb], unit, mode)
            log.debug("%s %s: job %s", verb, unit, job)
            job_result = _wait_job(bus, jobs, job, unit, verb, deadline, timeout)
            props, verdict = _wait_state(bus, changes, path, unit, verb, job_result, deadline)
    return job_result, props, verdict


def _wait_job(
    bus: Systemd,
    jobs: Any,
    job: str,
    unit: str,
    verb: str,
    deadline: float,
    timeout: float,
) -> str:
    """Wait for JobRemoved(id, job, unit, result) of our job; return its result."""
    while True:
        msg = bus.pump(jobs, deadline=deadline)
        if msg is None:
            raise ControlTimeoutError(
                f"{verb} of {unit}: job {job} still running after {timeout:g}s "
                "(left running; see `systemctl list-jobs`)"
            )
        _id, path, _unit, result = msg.body
        if str(path) == job:
            return str(result)


def _wait_state(
    bus: Systemd,
    changes: Any,
    path: str,
    unit: str,
    verb: str,
    job_result: str,
    deadline: float,
) -> tuple[dict[str, Any], Verdict]:
    """Re-read the unit's state on every change (and at least every second) until final."""
    interfaces = interfaces_for(unit)
    while True:
        changes.clear()
        props = unit_properties(bus, path, interfaces)
        verdict = judge(
            verb,
            job_result,
            str(props.get("ActiveState")),
            str(props.get("Result", "success")),
            str(props.get("StatusText", "")),
        )
        if verdict is not Verdict.WAIT or time.monotonic() >= deadline:
            return props, verdict
        log.debug("%s: %s (%s), waiting", unit, props.get("ActiveState"), props.get("SubState"))
        bus.pump(changes, deadline=min(deadline, time.monotonic() + _REPOLL))
