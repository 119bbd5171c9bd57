"""Integers as systemd reads them from the environment and notify messages, pure.

libsystemd's safe_atoi()/safe_atolu()/safe_atou64() and parse_pid() (parse-util.c) are
strtol(3)/strtoul(3) with base 0 after systemd's own prefixes; matching them exactly keeps us
in agreement with libsystemd and PID1 on odd input (``LISTEN_FDS=0x3``, ``MAINPID=012``).
The one home of that reading: ``LISTEN_*``, ``WATCHDOG_*``, the testing receiver's
``MAINPID=``, the supervisor's ``EXTEND_TIMEOUT_USEC=`` (service.c: safe_atou64()).
"""

from __future__ import annotations

__all__ = ["PID_MAX", "c_integer", "c_unsigned", "parse_pid"]

PID_MAX = 2**31 - 1  # parse_pid(): the value must fit a pid_t
_DIGITS = {2: "01", 8: "01234567", 10: "0123456789", 16: "0123456789abcdefABCDEF"}
# More significant digits than this is past 2^64 in every base: strtol(3)'s ERANGE. (It also
# keeps int() below CPython's 4,300-digit limit, which raises ValueError.)
_MAX_DIGITS = 64


def c_integer(text: str) -> int | None:
    """``text`` read as libsystemd's safe_atoi()/safe_atolu() read it, or None (None too
    for a value far past 64 bits, which every caller refuses as out of range).

    That is strtol(3) with base 0 after systemd's own prefixes: leading whitespace, a sign,
    ``0x`` hex, ``0b`` binary, ``0o`` and C's leading-``0`` octal; nothing may follow.
    Matching it exactly is what keeps us in agreement with libsystemd on odd input.
    """
    read = _read(text)
    return None if read is None else read[0]


def _read(text: str) -> tuple[int, bool] | None:
    """(value, whether ``-`` came first after systemd's prefixes), or None."""
    if len(text) <= 19 and text.isdigit() and text.isascii() and text[0] != "0":
        return int(text), False  # the only spelling managers write
    s = text.lstrip(" \t\n\r")  # systemd's WHITESPACE
    base = 0
    if s[:2] in ("0b", "0B"):
        base, s = 2, s[2:]
    elif s[:2] in ("0o", "0O"):
        base, s = 8, s[2:]
    minus_first = s[:1] == "-"
    s = s.lstrip(" \t\n\v\f\r")  # strtol's isspace(): also \v and \f
    negative = s[:1] == "-"
    if s[:1] in ("+", "-"):
        s = s[1:]
    if base == 0:
        if s[:2] in ("0x", "0X") and s[2:3] and s[2] in "0123456789abcdefABCDEF":
            base, s = 16, s[2:]
        else:
            base = 8 if s[:1] == "0" else 10
    digits = _DIGITS[base]
    if not s or any(c not in digits for c in s) or len(s.lstrip("0")) > _MAX_DIGITS:
        return None
    value = int(s, base)
    return (-value if negative else value), minus_first


def c_unsigned(text: str) -> int | None:
    """``text`` read as libsystemd's safe_atou64() reads it, or None (-EINVAL, -ERANGE).

    The same prefixes as :func:`c_integer`; strtoull(3) takes a sign too, and systemd
    refuses a negative value other than ``-0`` when the ``-`` comes first (parse-util.c:
    ``l != 0 && s[0] == '-'``). After a ``\v`` or ``\f`` (strtoull skips them, systemd's
    WHITESPACE does not) the check misses it and strtoull's wrapped value stands:
    ``"\v-5"`` is 2^64-5, as libsystemd reads it (tests/test_conformance.py).
    """
    read = _read(text)
    if read is None:
        return None
    value, minus_first = read
    if value < 0 and not minus_first and -value < 2**64:
        value += 2**64  # strtoull(3): the negation in unsigned arithmetic
    if value < 0 or value >= 2**64:
        return None
    return value


def parse_pid(text: str) -> int | None:
    """``text`` as systemd's parse_pid() reads it (safe_atolu(), then a pid_t above 0), or
    None where it would fail."""
    value = c_unsigned(text)
    return value if value is not None and 0 < value <= PID_MAX else None
