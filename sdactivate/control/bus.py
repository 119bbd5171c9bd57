"""A small blocking client for org.freedesktop.systemd1 on jeepney (pure Python).

Only what the control commands need: connect (system bus, or the user's bus), resolve
units with ``LoadUnit`` (object paths are never computed: sd_bus_path_encode is systemd's
business, and test doubles use other paths), subscribe to ``JobRemoved`` and
``PropertiesChanged`` *before* calling a job method (the match rules and the waiting are
:mod:`sdactivate.control.signals`), read properties with ``GetAll``.
D-Bus errors become :mod:`sdactivate.control.errors` leaves. org.freedesktop.systemd1(5).
"""

from __future__ import annotations

import collections
import contextlib
import logging
from collections.abc import Iterator, Mapping
from typing import Any

from jeepney import DBusAddress, new_method_call
from jeepney.auth import AuthenticationError
from jeepney.io.blocking import DBusConnection, open_dbus_connection
from jeepney.low_level import Message, MessageType
from jeepney.wrappers import DBusErrorResponse

from .. import _env
from .errors import (
    BusUnavailableError,
    ControlTimeoutError,
    DBusCallError,
    NoSuchUnitError,
    PermissionDeniedError,
)
from .signals import next_signal, queued, wait_for_owner

__all__ = [
    "MANAGER_IFACE",
    "SERVICE_IFACE",
    "SOCKET_IFACE",
    "UNIT_IFACE",
    "Systemd",
    "bus_address",
]

log = logging.getLogger("sdactivate.control")

SYSTEMD = "org.freedesktop.systemd1"
MANAGER_PATH = "/org/freedesktop/systemd1"
MANAGER_IFACE = "org.freedesktop.systemd1.Manager"
UNIT_IFACE = "org.freedesktop.systemd1.Unit"
SERVICE_IFACE = "org.freedesktop.systemd1.Service"
SOCKET_IFACE = "org.freedesktop.systemd1.Socket"
PROPERTIES_IFACE = "org.freedesktop.DBus.Properties"

# sd-bus's default system bus (sd_bus_open_system(3): DBUS_SYSTEM_BUS_ADDRESS, else this).
DEFAULT_SYSTEM_BUS = "unix:path=/run/dbus/system_bus_socket"

_PERMISSION_ERRORS = frozenset(
    {
        "org.freedesktop.DBus.Error.AccessDenied",
        "org.freedesktop.DBus.Error.InteractiveAuthorizationRequired",
        "org.freedesktop.DBus.Error.AuthFailed",
    }
)
_NO_SYSTEMD_ERRORS = frozenset(
    {"org.freedesktop.DBus.Error.ServiceUnknown", "org.freedesktop.DBus.Error.NameHasNoOwner"}
)
_UNKNOWN_METHOD = "org.freedesktop.DBus.Error.UnknownMethod"
_NO_SUCH_UNIT = "org.freedesktop.systemd1.NoSuchUnit"
# How long one method call may take before the bus is considered stuck.
_CALL_TIMEOUT = 25.0


def bus_address(*, user: bool = False, environ: _env.Environ | None = None) -> str:
    """The D-Bus address to reach the system manager (or the user manager with ``user=True``).

    System: ``$DBUS_SYSTEM_BUS_ADDRESS`` or ``unix:path=/run/dbus/system_bus_socket``.
    User: ``$DBUS_SESSION_BUS_ADDRESS`` or ``unix:path=$XDG_RUNTIME_DIR/bus``
    (sd_bus_open_user(3)). Raises :class:`BusUnavailableError` when neither is set.
    """
    env = _env.resolve(environ)
    if not user:
        return env.get("DBUS_SYSTEM_BUS_ADDRESS") or DEFAULT_SYSTEM_BUS
    address = env.get("DBUS_SESSION_BUS_ADDRESS")
    if address:
        return address
    runtime_dir = env.get("XDG_RUNTIME_DIR")
    if not runtime_dir:
        raise BusUnavailableError(
            "no user bus: neither DBUS_SESSION_BUS_ADDRESS nor XDG_RUNTIME_DIR is set "
            "(log in as that user, or drop --user to use the system manager)"
        )
    return f"unix:path={runtime_dir}/bus"


def _hint(user: bool) -> str:
    return "run as root" if user else "run as root, or use --user for your own user manager"


class Systemd:
    """A connection to one systemd manager over D-Bus. Use :meth:`connect`; close when done."""

    def __init__(self, conn: DBusConnection, *, user: bool, address: str) -> None:
        self._conn = conn
        self.user = user
        self.address = address
        self._owner: str | None = None

    @classmethod
    def connect(
        cls, *, user: bool = False, environ: _env.Environ | None = None, wait: float = 10.0
    ) -> Systemd:
        """Open the bus and wait up to ``wait`` seconds for systemd to be on it.

        Raises :class:`BusUnavailableError` or :class:`PermissionDeniedError`.
        """
        bus = cls._open(user=user, environ=environ)
        try:
            bus.wait_for_systemd(timeout=wait)
        except BaseException:
            bus.close()
            raise
        return bus

    @classmethod
    def _open(cls, *, user: bool, environ: _env.Environ | None) -> Systemd:
        address = bus_address(user=user, environ=environ)
        which = "user" if user else "system"
        try:
            conn = open_dbus_connection(bus=address, auth_timeout=5.0)
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise BusUnavailableError(
                f"no D-Bus {which} bus at {address!r} ({exc.strerror}); is systemd running "
                "with dbus, and is this the right bus?"
            ) from exc
        except (PermissionError, AuthenticationError) as exc:
            raise PermissionDeniedError(
                f"the {which} bus at {address!r} refused us ({exc}); {_hint(user)}"
            ) from exc
        except DBusErrorResponse as exc:  # Hello() refused
            raise BusUnavailableError(f"the {which} bus at {address!r} said {exc}") from exc
        except (OSError, RuntimeError, TimeoutError, ValueError) as exc:
            raise BusUnavailableError(f"cannot use the {which} bus at {address!r}: {exc}") from exc
        return cls(conn, user=user, address=address)

    @property
    def connection(self) -> DBusConnection:
        """The underlying jeepney connection (for :mod:`sdactivate.control.signals`)."""
        return self._conn

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Systemd:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- calls ---------------------------------------------------------------------------

    def call(
        self,
        path: str,
        interface: str,
        member: str,
        signature: str | None = None,
        body: tuple[Any, ...] = (),
        *,
        destination: str = SYSTEMD,
        timeout: float = _CALL_TIMEOUT,
    ) -> tuple[Any, ...]:
        """Call a method and return the reply body; D-Bus errors become ControlError leaves."""
        address = DBusAddress(path, bus_name=destination, interface=interface)
        msg = new_method_call(address, member, signature, body)
        try:
            reply: Message = self._conn.send_and_get_reply(msg, timeout=timeout)
        except TimeoutError as exc:
            raise ControlTimeoutError(
                f"{member} on {path} got no reply within {timeout:g}s (is systemd stuck?)"
            ) from exc
        except (ConnectionError, OSError) as exc:
            raise BusUnavailableError(f"lost the bus connection during {member}: {exc}") from exc
        if reply.header.message_type == MessageType.error:
            raise self._error(member, body, DBusErrorResponse(reply))
        result: tuple[Any, ...] = reply.body
        return result

    def _error(self, member: str, body: tuple[Any, ...], err: DBusErrorResponse) -> Exception:
        name = str(err.name)
        text = str(err.data[0]) if err.data else name
        what = f"{member}({', '.join(map(repr, body))})"
        if name in _PERMISSION_ERRORS:
            return PermissionDeniedError(f"{what} was refused: {text}; {_hint(self.user)}")
        if name == _NO_SUCH_UNIT:
            return NoSuchUnitError(text)
        if name in _NO_SYSTEMD_ERRORS:
            which = "user" if self.user else "system"
            return BusUnavailableError(f"systemd is not on the {which} bus: {text}")
        return DBusCallError(f"{what} failed: [{name}] {text}", name=name)

    def _manager(self, member: str, signature: str | None = None, *args: Any) -> tuple[Any, ...]:
        return self.call(MANAGER_PATH, MANAGER_IFACE, member, signature, tuple(args))

    def subscribe(self) -> None:
        """Ask systemd to emit job and unit signals to us (``Subscribe()``).

        Signals are sent only to subscribed clients (org.freedesktop.systemd1(5)).
        A manager without the method (some test doubles) is tolerated.
        """
        try:
            self._manager("Subscribe")
        except DBusCallError as exc:
            if exc.name != _UNKNOWN_METHOD:
                raise
            log.debug("Subscribe is not implemented on this bus; relying on broadcasts")

    def load_unit(self, name: str) -> str:
        """Object path of ``name`` via ``LoadUnit`` (loads it if needed; never computed)."""
        (path,) = self._manager("LoadUnit", "s", name)
        return str(path)

    def get_all(self, path: str, interface: str) -> dict[str, Any]:
        """``Properties.GetAll(interface)`` on ``path`` as plain Python values."""
        (props,) = self.call(path, PROPERTIES_IFACE, "GetAll", "s", (interface,))
        return {str(key): value for key, (_sig, value) in props.items()}

    def start_job(self, method: str, unit: str, mode: str = "replace") -> str:
        """Call a job method (``RestartUnit``...) and return the job's object path."""
        (job,) = self._manager(method, "ss", unit, mode)
        return str(job)

    # -- signals (sdactivate.control.signals) ----------------------------------------------

    def wait_for_systemd(self, *, timeout: float) -> str:
        """systemd's unique bus name, waiting up to ``timeout`` seconds for it to appear.

        With a socket-activated dbus.service the first client starts the bus daemon, and
        the manager joins only once that runs, so a fresh bus may briefly lack
        org.freedesktop.systemd1. Waits for ``NameOwnerChanged`` rather than polling.
        Raises :class:`BusUnavailableError` if systemd does not show up.
        """
        if self._owner is not None:
            return self._owner
        owner = wait_for_owner(self, SYSTEMD, timeout=timeout)
        if owner is None:
            which = "user" if self.user else "system"
            raise BusUnavailableError(
                f"systemd is not on the {which} bus at {self.address!r} "
                f"(waited {timeout:g}s for {SYSTEMD})"
            )
        self._owner = owner
        return owner

    def _systemd_owner(self) -> str:
        """systemd's unique bus name; signals carry it as sender, not the well-known name."""
        return self.wait_for_systemd(timeout=0)

    @contextlib.contextmanager
    def signals(
        self, *, interface: str, member: str, path: str | None = None
    ) -> Iterator[collections.deque[Message]]:
        """Queue signals from systemd matching the rule, from now until the block exits.

        The match is registered with the bus (``AddMatch``) before the block runs, so a
        job method called inside cannot finish unseen.
        """
        owner = self._systemd_owner()
        with queued(
            self, sender=SYSTEMD, owner=owner, interface=interface, member=member, path=path
        ) as queue:
            yield queue

    def pump(self, queue: collections.deque[Message], *, deadline: float) -> Message | None:
        """Wait until ``queue`` has a message or ``deadline`` (monotonic) passes.

        Returns the next message, or None on deadline. Other filters fill as a side effect.
        """
        return next_signal(self, queue, deadline=deadline)


def unit_properties(bus: Systemd, path: str, interfaces: tuple[str, ...]) -> dict[str, Any]:
    """Merge ``GetAll`` of several interfaces on one unit (later interfaces win)."""
    merged: dict[str, Any] = {}
    for interface in interfaces:
        merged.update(bus.get_all(path, interface))
    return merged


def interfaces_for(unit: str) -> tuple[str, ...]:
    """The property interfaces worth reading for ``unit``'s type."""
    if unit.endswith(".service"):
        return (UNIT_IFACE, SERVICE_IFACE)
    if unit.endswith(".socket"):
        return (UNIT_IFACE, SOCKET_IFACE)
    return (UNIT_IFACE,)


def is_not_found(props: Mapping[str, Any]) -> bool:
    """True if the unit's ``LoadState`` says it does not exist (``not-found``)."""
    return props.get("LoadState") == "not-found"
