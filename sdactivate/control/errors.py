"""Leaves of :class:`~sdactivate.errors.ControlError`: what went wrong talking to systemd."""

from __future__ import annotations

from ..errors import ControlError

__all__ = [
    "BusUnavailableError",
    "ControlError",
    "ControlTimeoutError",
    "DBusCallError",
    "NoSuchUnitError",
    "PermissionDeniedError",
    "UnitNameError",
]


class BusUnavailableError(ControlError):
    """No bus to talk to: the socket is missing, refuses connections, or systemd is not on it."""


class PermissionDeniedError(ControlError):
    """The bus or systemd refused the call (not root, polkit said no).

    The message suggests ``--user`` (for the user manager) or running as root.
    """


class NoSuchUnitError(ControlError):
    """systemd has no such unit (``NoSuchUnit``, or ``LoadState`` is ``not-found``)."""


class UnitNameError(ControlError, ValueError):
    """The unit name given is not a valid systemd unit name (a usage error)."""


class ControlTimeoutError(ControlError, TimeoutError):
    """The job or the wait for the unit's state did not finish before the deadline.

    The job is left running; systemd finishes or cancels it on its own.
    """


class DBusCallError(ControlError):
    """systemd answered with a D-Bus error not covered by a more specific leaf.

    ``name`` is the D-Bus error name, e.g. ``org.freedesktop.systemd1.JobTypeNotApplicable``.
    """

    def __init__(self, message: str, *, name: str) -> None:
        super().__init__(message)
        self.name = name
