"""Pure part of the control commands: unit names, job verdicts, failure descriptions.

No D-Bus, no processes: everything here works on plain values read from systemd's
properties (org.freedesktop.systemd1(5), systemd 252), so it is tested without a bus.
"""

from __future__ import annotations

import enum
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .._unit_name import UNIT_TYPES, unit_name_problem
from ..supervisor.events import HANDOVER_FAILED_STATUS
from .errors import UnitNameError

__all__ = [
    "JOB_VERBS",
    "JobOutcome",
    "Verdict",
    "describe_exit",
    "format_timespan",
    "job_unit_name",
    "jsonable",
    "judge",
    "status_unit_names",
    "validate_unit_name",
]

# systemd.unit(5): the unit types; a name without one of these suffixes gets ".service"
# appended, as systemctl(1) does. The types and the rule are _unit_name's.
UNIT_SUFFIXES = tuple(f".{unit_type}" for unit_type in UNIT_TYPES)

# The Manager methods behind each command (org.freedesktop.systemd1(5)).
JOB_VERBS: Mapping[str, str] = {
    "start": "StartUnit",
    "stop": "StopUnit",
    "restart": "RestartUnit",
    "reload": "ReloadUnit",
}

# org.freedesktop.systemd1(5), JobRemoved: the result of a finished job.
_JOB_RESULTS = {
    "done": "the job completed",
    "canceled": "the job was canceled before it finished",
    "timeout": "the unit's own timeout (TimeoutStartSec=/TimeoutStopSec=) was reached",
    "failed": "the job failed",
    "dependency": "a unit it depends on failed",
    "skipped": "the job was skipped (not applicable in the unit's current state)",
    "invalid": "the job is not valid for this unit",
    "assert": "an Assert...= condition of the unit failed",
    "unsupported": "the job type is not supported by the unit",
    "collected": "the job was garbage-collected",
    "once": "the unit has been started once already and may not be started again",
}

# waitid(2) si_code values systemd reports as ExecMainCode (CLD_EXITED, CLD_KILLED, CLD_DUMPED).
_CLD_EXITED, _CLD_KILLED, _CLD_DUMPED = 1, 2, 3


def validate_unit_name(name: str) -> str:
    """Return ``name`` if it is a valid unit name with a known suffix, else raise.

    The rule is :func:`sdactivate._unit_name.unit_name_problem`'s (templates allowed).
    Raises :class:`UnitNameError` naming the value and the reason.
    """
    if not name:
        raise UnitNameError("unit name is empty")
    problem = unit_name_problem(name, template_ok=True)
    if problem is not None:
        raise UnitNameError(problem)
    return name


def job_unit_name(name: str) -> str:
    """The unit a job command acts on: ``NAME`` as given, or ``NAME.service`` without a suffix."""
    if name.endswith(UNIT_SUFFIXES):
        return validate_unit_name(name)
    return validate_unit_name(name + ".service")


def status_unit_names(name: str) -> tuple[str, ...]:
    """The units ``status NAME`` looks up first: both ``NAME.service`` and ``NAME.socket``
    for a bare name, else the unit itself."""
    if name.endswith(UNIT_SUFFIXES):
        return (validate_unit_name(name),)
    return (validate_unit_name(name + ".service"), validate_unit_name(name + ".socket"))


class Verdict(enum.Enum):
    """What the unit's state means for a finished job."""

    OK = "ok"
    FAILED = "failed"
    WAIT = "wait"


def judge(
    verb: str,
    job_result: str,
    active_state: str,
    result: str = "success",
    status_text: str = "",
) -> Verdict:
    """Decide whether a job's goal is reached, failed, or still pending.

    ``job_result`` is JobRemoved's result; ``active_state`` the unit's ActiveState after it;
    ``result`` the service/socket Result property. After ``start``/``restart``/``reload`` the
    goal is ``active`` (for Type=notify that means READY=1 arrived, sd_notify(3)); ``failed``
    ends the wait; ``inactive`` is success only if the unit ended cleanly (a finished
    oneshot). After ``stop`` the goal is ``inactive`` or ``failed``. A ``reload`` that
    leaves an ``sdactivate run`` supervisor's "upgrade failed: ..." ``status_text`` (sent
    with its READY=1) failed: under Type=notify-reload (v253+) the job itself cannot fail.
    """
    if verb not in JOB_VERBS:
        raise ValueError(f"unknown job verb {verb!r}")
    if job_result != "done":
        return Verdict.FAILED
    if verb == "stop":
        if active_state in ("inactive", "failed"):
            return Verdict.OK
        if active_state == "active":
            return Verdict.FAILED  # started again right after the stop
        return Verdict.WAIT
    if active_state == "active":
        if verb == "reload" and status_text.startswith(HANDOVER_FAILED_STATUS):
            return Verdict.FAILED
        return Verdict.OK
    if active_state == "failed":
        return Verdict.FAILED
    if active_state == "inactive":
        return Verdict.OK if result == "success" else Verdict.FAILED
    return Verdict.WAIT  # activating, reloading, deactivating, maintenance...


def describe_job_result(job_result: str) -> str:
    return _JOB_RESULTS.get(job_result, "unknown job result")


def describe_exit(code: int, status: int) -> str | None:
    """Describe ExecMainCode/ExecMainStatus (waitid(2) si_code/si_status); None if no exit."""
    if code == _CLD_EXITED:
        return f"main process exited with status {status}"
    if code in (_CLD_KILLED, _CLD_DUMPED):
        try:
            signame = signal.Signals(status).name
        except ValueError:
            signame = f"signal {status}"
        action = "was killed by" if code == _CLD_KILLED else "dumped core on"
        return f"main process {action} {signame}"
    return None


def jsonable(value: Any) -> Any:
    """D-Bus property values as JSON-ready values: tuples become lists, bytes hex strings."""
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


# time-util.h (252): USEC_PER_MONTH is 30.44 days, USEC_PER_YEAR 365.25 days.
_TIMESPAN_UNITS = (
    ("y", 31_557_600_000_000),
    ("month", 2_629_800_000_000),
    ("w", 604_800_000_000),
    ("d", 86_400_000_000),
    ("h", 3_600_000_000),
    ("min", 60_000_000),
    ("s", 1_000_000),
    ("ms", 1_000),
    ("us", 1),
)
_USEC_INFINITY = 2**64 - 1


def format_timespan(usec: int) -> str:
    """Render a microsecond span as systemd 252 does (time-util.c ``format_timespan`` with
    accuracy 1, as ``systemctl show`` and ``systemd-analyze timespan`` print it):
    ``1min 30s``, ``1.500000s``, ``250ms``, ``0``, ``infinity``."""
    if usec >= _USEC_INFINITY:
        return "infinity"
    if usec <= 0:
        return "0"
    parts: list[str] = []
    rest = usec
    for suffix, size in _TIMESPAN_UNITS:
        if rest <= 0:
            break
        if rest < size:
            continue
        whole, frac = divmod(rest, size)
        if rest < 60_000_000 and frac > 0:  # under a minute: dot notation, then stop
            digits = len(str(size)) - 1
            parts.append(f"{whole}.{frac:0{digits}d}{suffix}")
            break
        parts.append(f"{whole}{suffix}")
        rest = frac
    return " ".join(parts)


@dataclass(frozen=True)
class JobOutcome:
    """What a start/stop/restart/reload did, as seen after the wait.

    ``ok`` is the verdict; ``reason`` says why it failed (empty when ok); ``journal`` holds
    the unit's last journal lines on failure. ``properties`` are the unit's last-read
    Unit + Service (or Socket) properties.
    """

    verb: str
    unit: str
    ok: bool
    job_result: str
    active_state: str
    sub_state: str
    elapsed: float
    reason: str = ""
    properties: Mapping[str, Any] = field(default_factory=dict)
    journal: Sequence[str] = ()

    def summary(self) -> str:
        """One line for the terminal: ``myapp.service: restart ok, active (running) in 1.02s``."""
        state = f"{self.active_state} ({self.sub_state})" if self.sub_state else self.active_state
        if self.ok:
            pid = self.properties.get("MainPID")
            extra = f", MainPID {pid}" if pid else ""
            return f"{self.unit}: {self.verb} ok, {state}{extra} in {self.elapsed:.2f}s"
        return f"{self.unit}: {self.verb} failed after {self.elapsed:.2f}s: {self.reason}"


def failure_reason(verb: str, job_result: str, props: Mapping[str, Any]) -> str:
    """Explain a failed job from JobRemoved's result and the unit's properties."""
    parts: list[str] = []
    if job_result != "done":
        parts.append(f"job result {job_result!r} ({describe_job_result(job_result)})")
    elif verb == "reload" and str(props.get("StatusText", "")).startswith(HANDOVER_FAILED_STATUS):
        parts.append("the supervisor's handover failed, the old generation serves")
    state = props.get("ActiveState", "")
    sub = props.get("SubState", "")
    if state:
        parts.append(f"unit is {state}" + (f" ({sub})" if sub else ""))
    result = props.get("Result")
    if result and result != "success":
        parts.append(f"Result={result}")
    exited = describe_exit(int(props.get("ExecMainCode", 0)), int(props.get("ExecMainStatus", 0)))
    # systemd.service(5) Result=: start-limit-hit/resources failures are not about the last
    # main process, whose exit may be an older, clean stop.
    if exited and result not in ("success", "start-limit-hit", "resources") and state == "failed":
        parts.append(exited)
    status_text = props.get("StatusText")
    if status_text:
        parts.append(f"status {status_text!r}")
    if verb == "stop" and state == "active":
        parts.append("it was started again after the stop")
    return "; ".join(parts) if parts else f"{verb} did not reach its goal"
