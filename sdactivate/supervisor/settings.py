"""The values ``sdactivate run``'s options take: one parser and one default per option.

``sdactivate run`` parses its argv with these, and ``gen-units --supervise`` checks the same
options with the same functions before writing them into ``ExecStart=`` (and
:func:`seconds_text` writes a number back so that ``run`` reads the same value). Pure: each
function returns the value or raises :class:`ValueError` with a message that shows the bad
value; callers wrap it in their own error type.
"""

from __future__ import annotations

import math
import signal
from typing import Literal

from .._priority import valid_startup_nice

__all__ = [
    "DRAIN_TIMEOUT",
    "HEALTH_TIMEOUT",
    "MAX_SECONDS",
    "MAX_WORKERS",
    "READY_TIMEOUT",
    "STARTUP_GRACE",
    "STARTUP_NICE",
    "STOP_SIGNAL",
    "WORKERS",
    "Workers",
    "check_count",
    "check_seconds",
    "check_signal",
    "check_workers",
    "parse_max_starting",
    "parse_seconds",
    "parse_signal",
    "parse_startup_nice",
    "parse_workers",
    "seconds_text",
]

READY_TIMEOUT = 60.0  # --ready-timeout (tableflip's DefaultUpgradeTimeout is one minute)
DRAIN_TIMEOUT = 30.0  # --drain-timeout
HEALTH_TIMEOUT = 10.0  # --health-timeout
STARTUP_GRACE = 1.0  # --startup-grace
STARTUP_NICE = 10  # --startup-nice
STOP_SIGNAL = signal.SIGTERM  # --stop-signal
WORKERS = 1  # --workers; --max-starting's default is the usable CPU count (workers.py)
# More processes than this on one socket is a typo (or a fork bomb), not a deployment.
MAX_WORKERS = 1024

Workers = int | Literal["auto"]
# The supervisor waits for its next timer in one epoll_wait(2), whose timeout is an int of
# milliseconds (INT_MAX ms = 24.8 days); a longer timeout is refused, not overflowed.
MAX_SECONDS = 24 * 86400


def check_seconds(value: object) -> float:
    """A timeout in seconds: a finite number, > 0 and at most :data:`MAX_SECONDS`."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"not a number of seconds: {value!r}")
    if not math.isfinite(value) or not 0 < value <= MAX_SECONDS:
        raise ValueError(f"{value!r}: seconds must be > 0 and at most {MAX_SECONDS} (24 days)")
    return float(value)


def parse_seconds(text: str) -> float:
    """``--ready-timeout 2.5``: a decimal number of seconds (see :func:`check_seconds`)."""
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"not a number of seconds: {text!r}") from None
    try:
        return check_seconds(value)
    except ValueError:
        raise ValueError(
            f"{text!r}: seconds must be > 0 and at most {MAX_SECONDS} (24 days)"
        ) from None


def seconds_text(value: float) -> str:
    """The shortest decimal that :func:`parse_seconds` reads back as ``value``: ``30``,
    ``2.5``, ``1234567.25`` (``{:g}`` would round the last to ``1.23457e+06``)."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def check_signal(value: object) -> signal.Signals:
    """A signal given as a number or a :class:`signal.Signals`."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"not a signal: {value!r}")
    try:
        return signal.Signals(value)
    except ValueError:
        raise ValueError(f"unknown signal {value!r}") from None


def parse_signal(text: str) -> signal.Signals:
    """``TERM``, ``SIGTERM``, ``sigterm`` or ``15`` -> ``signal.SIGTERM`` (signal(7))."""
    name = text.strip().upper()
    try:
        if name.isdigit():
            return signal.Signals(int(name))
        return signal.Signals[name if name.startswith("SIG") else "SIG" + name]
    except (KeyError, ValueError):
        raise ValueError(f"unknown signal {text!r}") from None


def parse_startup_nice(text: str) -> int:
    """``--startup-nice N``: a nice increment 0..19 (:func:`valid_startup_nice`)."""
    try:
        value: int | None = int(text)
    except ValueError:
        value = None
    if not valid_startup_nice(value):
        raise ValueError(f"{text!r}: not a nice value 0..19")
    return int(text)


def check_count(value: object, *, what: str) -> int:
    """A count of processes: an int, 1..:data:`MAX_WORKERS`."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_WORKERS:
        raise ValueError(f"{what} must be a whole number 1..{MAX_WORKERS}, got {value!r}")
    return value


def check_workers(value: object) -> Workers:
    """``--workers``: a count (:func:`check_count`) or ``"auto"`` (the usable CPUs)."""
    if value == "auto":
        return "auto"
    return check_count(value, what="--workers")


def parse_workers(text: str) -> Workers:
    """``--workers 4`` or ``--workers auto``."""
    if text.strip().lower() == "auto":
        return "auto"
    return check_workers(_int(text, "--workers"))


def parse_max_starting(text: str) -> int:
    """``--max-starting K``: at most K new workers start at once, 1..:data:`MAX_WORKERS`."""
    return check_count(_int(text, "--max-starting"), what="--max-starting")


def _int(text: str, what: str) -> int | str:
    try:
        return int(text.strip()) if text.strip().isascii() else text
    except ValueError:
        return text
