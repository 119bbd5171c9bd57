"""The exception hierarchy: one root, leaves that say what went wrong."""

from __future__ import annotations

__all__ = [
    "ActivationError",
    "AddressError",
    "ControlError",
    "InstallError",
    "MissingDependencyError",
    "NotifyError",
    "NotifyValueError",
    "SdActivateError",
    "SupervisorError",
    "UnitConfigError",
    "UpgradeError",
    "WatchdogError",
]


class SdActivateError(Exception):
    """Root of every error sdactivate raises on purpose."""


class ActivationError(SdActivateError):
    """The ``LISTEN_*`` environment is meant for this process but is malformed.

    "Not for us" (no ``LISTEN_PID``, another process's pid) is never an error.
    """


class AddressError(SdActivateError, ValueError):
    """A listen address (``127.0.0.1:80``, ``[::1]:80``, ``/run/x.sock``...) is invalid."""


class NotifyError(SdActivateError):
    """``NOTIFY_SOCKET`` is set but the message could not be delivered."""


class NotifyValueError(NotifyError, ValueError):
    """A notify field is invalid (newline/NUL injection, non-UTF-8, over 4096 bytes...).

    Raised before anything is sent.
    """


class WatchdogError(SdActivateError):
    """``WATCHDOG_USEC``/``WATCHDOG_PID`` are meant for this process but malformed."""


class UnitConfigError(SdActivateError, ValueError):
    """A unit name, directive value or ExecStart argument cannot be rendered safely."""


class SupervisorError(SdActivateError):
    """The supervisor (``sdactivate run``) could not start or hand over a generation."""


class UpgradeError(SdActivateError):
    """An in-process upgrade (``Upgrader``) failed; the running process keeps serving."""


class ControlError(SdActivateError):
    """A D-Bus control operation (restart, reload, status...) failed."""


class InstallError(SdActivateError):
    """Generated units could not be written or installed: no permission, a read-only file
    system, no home directory, no user manager. Nothing was written unless the message
    says otherwise."""


class MissingDependencyError(SdActivateError):
    """A third-party module a command needs is not installed (``jeepney`` for D-Bus)."""
