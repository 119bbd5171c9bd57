"""Control systemd units over D-Bus: status, and start/stop/restart/reload that wait for
real readiness.

Built on jeepney (pure Python, a dependency of the package); imported by the ``sdactivate
status`` and job commands only, never by ``import sdactivate``. Re-exports only.

    >>> from sdactivate.control import run_job, unit_status
    >>> outcome = run_job("restart", "myapp", timeout=30)   # waits for READY=1
    >>> outcome.ok, outcome.reason
"""

from __future__ import annotations

from .errors import (
    BusUnavailableError,
    ControlError,
    ControlTimeoutError,
    DBusCallError,
    NoSuchUnitError,
    PermissionDeniedError,
    UnitNameError,
)
from .jobs import journal_tail, run_job
from .model import JobOutcome
from .status import StatusReport, UnitStatus, render_table, unit_status

__all__ = [
    "BusUnavailableError",
    "ControlError",
    "ControlTimeoutError",
    "DBusCallError",
    "JobOutcome",
    "NoSuchUnitError",
    "PermissionDeniedError",
    "StatusReport",
    "UnitNameError",
    "UnitStatus",
    "journal_tail",
    "render_table",
    "run_job",
    "unit_status",
]
