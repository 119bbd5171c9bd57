"""D-Bus signals for the control client: match rules and waiting with a deadline.

A match is registered with the bus daemon (``AddMatch``) *before* the caller does what it
wants to watch, so nothing can finish unseen; matching signals queue per rule until the
block exits (``RemoveMatch``). Used by :class:`sdactivate.control.bus.Systemd`, which
passes systemd's names in: nothing here knows about systemd. dbus-specification, "Message
Bus Messages" (AddMatch, NameHasOwner, GetNameOwner, NameOwnerChanged).
"""

from __future__ import annotations

import collections
import contextlib
import time
from collections.abc import Iterator
from typing import Any, Protocol

from jeepney import MatchRule, message_bus
from jeepney.io.blocking import DBusConnection
from jeepney.low_level import Message

from .errors import BusUnavailableError

__all__ = ["Bus", "next_signal", "queued", "wait_for_owner"]


class Bus(Protocol):
    """What these helpers need of a bus client (:class:`sdactivate.control.bus.Systemd`
    has it): its connection, and a method call with a destination."""

    @property
    def connection(self) -> DBusConnection: ...

    def call(
        self,
        path: str,
        interface: str,
        member: str,
        signature: str | None = None,
        body: tuple[Any, ...] = (),
        *,
        destination: str = ...,
        timeout: float = ...,
    ) -> tuple[Any, ...]: ...


_DBUS = "org.freedesktop.DBus"
_DBUS_PATH = "/org/freedesktop/DBus"


def _dbus_call(bus: Bus, member: str, signature: str, *args: Any) -> tuple[Any, ...]:
    return bus.call(_DBUS_PATH, _DBUS, member, signature, tuple(args), destination=_DBUS)


def _current_owner(bus: Bus, name: str) -> str | None:
    (has_owner,) = _dbus_call(bus, "NameHasOwner", "s", name)
    if not has_owner:
        return None
    (owner,) = _dbus_call(bus, "GetNameOwner", "s", name)
    return str(owner)


def wait_for_owner(bus: Bus, name: str, *, timeout: float) -> str | None:
    """The unique name owning ``name``, waiting up to ``timeout`` seconds for one to appear
    (``NameOwnerChanged``, matched before the first look: no poll, no race); None if none."""
    rule = MatchRule(
        type="signal",
        sender=_DBUS,
        interface=_DBUS,
        member="NameOwnerChanged",
        path=_DBUS_PATH,
    )
    rule.add_arg_condition(0, name)
    deadline = time.monotonic() + timeout
    queue: collections.deque[Message] = collections.deque()
    with bus.connection.filter(rule, queue=queue):
        _dbus_call(bus, "AddMatch", "s", rule.serialise())
        owner = _current_owner(bus, name)
        while not owner:
            msg = next_signal(bus, queue, deadline=deadline)
            if msg is None:
                return None
            owner = str(msg.body[2]) or None
        with contextlib.suppress(Exception):
            bus.connection.send(message_bus.RemoveMatch(rule))
    return owner


@contextlib.contextmanager
def queued(
    bus: Bus,
    *,
    sender: str,
    owner: str,
    interface: str,
    member: str,
    path: str | None = None,
) -> Iterator[collections.deque[Message]]:
    """Queue signals matching the rule, from now until the block exits.

    The bus daemon matches on the well-known ``sender``; locally the filter matches on its
    unique name ``owner``, which is what signals carry as their sender.
    """
    bus_rule = MatchRule(
        type="signal", sender=sender, interface=interface, member=member, path=path
    )
    local_rule = MatchRule(
        type="signal", sender=owner, interface=interface, member=member, path=path
    )
    queue: collections.deque[Message] = collections.deque()
    with bus.connection.filter(local_rule, queue=queue):
        _dbus_call(bus, "AddMatch", "s", bus_rule.serialise())
        try:
            yield queue
        finally:
            with contextlib.suppress(Exception):
                bus.connection.send(message_bus.RemoveMatch(bus_rule))


def next_signal(bus: Bus, queue: collections.deque[Message], *, deadline: float) -> Message | None:
    """Wait until ``queue`` has a message or ``deadline`` (monotonic) passes.

    Returns the next message, or None on deadline. Other filters fill as a side effect.
    Raises :class:`BusUnavailableError` if the connection is lost.
    """
    remaining = deadline - time.monotonic()
    if queue:
        return queue.popleft()
    if remaining <= 0:
        return None
    try:
        return bus.connection.recv_until_filtered(queue, timeout=remaining)
    except TimeoutError:
        return None
    except (ConnectionError, OSError) as exc:
        raise BusUnavailableError(f"lost the bus connection while waiting: {exc}") from exc
