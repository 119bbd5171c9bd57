"""The sd_notify(3) datagram as pure functions: encode fields, read them as PID1 does.

No I/O: :mod:`sdactivate.notify` sends; the testing receiver and the supervisor parse.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

from .errors import NotifyError, NotifyValueError

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (milliseconds)
if TYPE_CHECKING:
    from typing import TypeAlias

    Fields: TypeAlias = Mapping[str, str | int] | Iterable[tuple[str, str | int]]

__all__ = ["NOTIFY_BUFFER_MAX", "NOTIFY_FD_MAX", "encode", "notify_address", "parse_message"]

NOTIFY_BUFFER_MAX = 4096  # constants.h NOTIFY_BUFFER_MAX = PIPE_BUF; PID1 drops longer ones
NOTIFY_FD_MAX = 253  # SCM_MAX_FD: the kernel's limit per message; libsystemd -E2BIG above
UNIX_PATH_MAX = 108  # unix(7): sizeof(sun_path); addresses.py checks paths with it too
_KEY_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")


def encode(fields: Fields) -> bytes:
    """The datagram for ``fields`` (a mapping, or ``(key, value)`` pairs to repeat keys):
    ``KEY=VALUE`` lines joined by ``\\n``, as sd_notify(3) sends them.

    Raises :class:`NotifyValueError` naming the field: a key not ``[A-Z0-9_]+``; a value
    that is not ``str``/``int`` (``bool`` is refused: write ``1``), contains ``\\n``,
    ``\\r`` or NUL, or is not encodable as UTF-8; no fields; more than 4096 bytes.
    """
    if isinstance(fields, str | bytes):
        raise TypeError(f"fields must be a mapping or (key, value) pairs, not {fields!r}")
    items = fields.items() if isinstance(fields, Mapping) else fields
    lines = []
    for key, value in items:
        if not isinstance(key, str) or not key or not _KEY_CHARS.issuperset(key):
            raise NotifyValueError(f"notify key {key!r} is not [A-Z0-9_]+")
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise NotifyValueError(f"{key}={value!r}: the value must be str or int")
        text = str(value)
        if "\n" in text or "\r" in text or "\0" in text:
            raise NotifyValueError(f"{key}={text!r}: newline, carriage return or NUL in value")
        try:
            lines.append(f"{key}={text}".encode())
        except UnicodeEncodeError as exc:
            raise NotifyValueError(f"{key}={text!r} is not valid UTF-8 text") from exc
    if not lines:
        raise NotifyValueError("no notify fields to send")
    data = b"\n".join(lines)
    if len(data) > NOTIFY_BUFFER_MAX:
        raise NotifyValueError(
            f"notify message of {len(data)} bytes exceeds {NOTIFY_BUFFER_MAX}"
            f" (the manager would drop it): {data[:60]!r}..."
        )
    return data


def parse_message(data: bytes) -> list[tuple[str, str]]:
    """The manager's reading of one notify datagram: ``(key, value)`` pairs in order.

    As systemd 252's PID1 reads it (manager.c ``manager_dispatch_notify_fd()``): more than
    4096 bytes, or a NUL anywhere but one trailing byte, refuses the message; lines are split
    on ``\\n`` and ``\\r`` with empty lines skipped; a line without ``=`` is ignored;
    ``STATUS=`` must be UTF-8. Other values are decoded as UTF-8 with ``surrogateescape``.
    Raises :class:`NotifyValueError` for a refused message.
    """
    if len(data) > NOTIFY_BUFFER_MAX:
        raise NotifyValueError(f"notify message of {len(data)} bytes exceeds {NOTIFY_BUFFER_MAX}")
    if data.endswith(b"\0"):
        data = data[:-1]
    if b"\0" in data:
        raise NotifyValueError(f"NUL byte inside notify message {data[:60]!r}")
    pairs = []
    for line in data.replace(b"\r", b"\n").split(b"\n"):
        key, sep, value = line.partition(b"=")
        if not sep:
            continue
        if key == b"STATUS":
            try:
                text = value.decode()
            except UnicodeDecodeError as exc:
                raise NotifyValueError(f"STATUS={value[:60]!r} is not UTF-8") from exc
        else:
            text = value.decode(errors="surrogateescape")
        pairs.append((key.decode(errors="surrogateescape"), text))
    return pairs


def notify_address(value: str) -> str | bytes:
    """``NOTIFY_SOCKET`` as a ``sendto()`` address; NotifyError for anything else."""
    if value.startswith(("vsock:", "vsock-")):
        raise NotifyError(
            f"NOTIFY_SOCKET={value!r} is an AF_VSOCK address (systemd v253+, for VMs);"
            " sdactivate speaks AF_UNIX only (systemd 252 has no vsock either)"
        )
    if len(value) < 2 or value[0] not in "/@":  # sd_notify(3): "/path" or "@abstract"
        raise NotifyError(f"NOTIFY_SOCKET={value!r} is neither an absolute path nor @abstract")
    raw = os.fsencode(value)
    if len(raw) >= UNIX_PATH_MAX + (value[0] == "@"):
        raise NotifyError(f"NOTIFY_SOCKET={value!r} is too long for an AF_UNIX address")
    return b"\0" + raw[1:] if value[0] == "@" else value
