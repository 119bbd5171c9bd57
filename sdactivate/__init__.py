"""sdactivate: zero-downtime restarts and upgrades for Python services under systemd.

Re-exports only. Submodules load on first use (PEP 562), so ``import sdactivate`` stays
in the low milliseconds and pulls in no third-party module.
"""

from __future__ import annotations

from importlib import import_module

from ._version import __version__

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (milliseconds)

_LAZY = {
    "listeners": "activation",
    "listeners_by_name": "activation",
    "inherited_fds": "activation",
    "InheritedFd": "activation",
    "listen": "activation",
    "is_socket": "activation",
    "is_socket_inet": "activation",
    "is_socket_unix": "activation",
    "is_fifo": "activation",
    "ListenAddress": "addresses",
    "parse_address": "addresses",
    "Upgrader": "upgrade",
    "SdActivateError": "errors",
    "ActivationError": "errors",
    "AddressError": "errors",
    "NotifyError": "errors",
    "NotifyValueError": "errors",
    "UnitConfigError": "errors",
    "SupervisorError": "errors",
    "UpgradeError": "errors",
    "ControlError": "errors",
    "WatchdogError": "errors",
}
_SUBMODULES = ("notify", "watchdog", "fdstore", "testing", "adapters", "units", "control")

__all__ = [
    "ActivationError",
    "AddressError",
    "ControlError",
    "InheritedFd",
    "ListenAddress",
    "NotifyError",
    "NotifyValueError",
    "SdActivateError",
    "SupervisorError",
    "UnitConfigError",
    "UpgradeError",
    "Upgrader",
    "WatchdogError",
    "__version__",
    "adapters",
    "control",
    "fdstore",
    "inherited_fds",
    "is_fifo",
    "is_socket",
    "is_socket_inet",
    "is_socket_unix",
    "listen",
    "listeners",
    "listeners_by_name",
    "notify",
    "parse_address",
    "testing",
    "units",
    "watchdog",
]

if TYPE_CHECKING:
    from typing import Any

    from . import adapters as adapters
    from . import control as control
    from . import fdstore as fdstore
    from . import notify as notify
    from . import testing as testing
    from . import units as units
    from . import watchdog as watchdog
    from .activation import (
        InheritedFd,
        inherited_fds,
        is_fifo,
        is_socket,
        is_socket_inet,
        is_socket_unix,
        listen,
        listeners,
        listeners_by_name,
    )
    from .addresses import ListenAddress, parse_address
    from .errors import (
        ActivationError,
        AddressError,
        ControlError,
        NotifyError,
        NotifyValueError,
        SdActivateError,
        SupervisorError,
        UnitConfigError,
        UpgradeError,
        WatchdogError,
    )
    from .upgrade import Upgrader


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return import_module(f"{__name__}.{name}")
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
