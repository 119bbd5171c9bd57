"""The ``LISTEN_*`` protocol as a pure function: sd_listen_fds(3) without any I/O.

:func:`parse_listen_env` reads ``LISTEN_PID``, ``LISTEN_PIDFDID`` (v259+), ``LISTEN_FDS`` and
``LISTEN_FDNAMES`` from a mapping and a pid, and says "not for us" (None), what was passed
(:class:`ListenEnv`), or why it is malformed (:class:`ActivationError`). The shell in
:mod:`sdactivate.activation` does the checking of fds, the flags and the socket objects.
"""

from __future__ import annotations

from collections.abc import Mapping

from .errors import ActivationError

__all__ = [
    "FDNAME_MAX",
    "NR_OPEN_DEFAULT",
    "SD_LISTEN_FDS_START",
    "ListenEnv",
    "parse_listen_env",
    "valid_fd_name",
]

SD_LISTEN_FDS_START = 3  # sd_listen_fds(3)
FDNAME_MAX = 255  # sd_listen_fds(3), systemd.socket(5) FileDescriptorName=
NR_OPEN_DEFAULT = 1 << 20  # proc(5) fs.nr_open default: no process can hold a higher fd
_INT_MAX = 2**31 - 1
_DIGITS = {2: "01", 8: "01234567", 10: "0123456789", 16: "0123456789abcdefABCDEF"}


class ListenEnv(tuple[tuple[str, ...], "int | None"]):
    """A parsed ``LISTEN_*`` environment that is meant for this process (immutable)."""

    __slots__ = ()

    def __new__(cls, names: tuple[str, ...], pidfd_id: int | None = None) -> ListenEnv:
        return super().__new__(cls, (names, pidfd_id))

    @property
    def names(self) -> tuple[str, ...]:
        """One name per fd, in fd order."""
        return self[0]

    @property
    def pidfd_id(self) -> int | None:
        """``LISTEN_PIDFDID`` (v259+), if the manager sent it."""
        return self[1]

    @property
    def fds(self) -> range:
        return range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + len(self[0]))

    def __repr__(self) -> str:
        return f"ListenEnv(names={self[0]!r}, pidfd_id={self[1]!r})"


def _c_integer(text: str) -> int | None:
    """``text`` read as libsystemd's safe_atoi()/safe_atolu() read it, or None.

    That is strtol(3) with base 0 after systemd's own prefixes: leading whitespace, a sign,
    ``0x`` hex, ``0b`` binary, ``0o`` and C's leading-``0`` octal; nothing may follow.
    Matching it exactly is what keeps us in agreement with libsystemd on odd input.
    """
    if text.isdigit() and text.isascii() and text[0] != "0":
        return int(text)  # the only spelling managers write
    s = text.lstrip(" \t\n\r")  # systemd's WHITESPACE
    base = 0
    if s[:2] in ("0b", "0B"):
        base, s = 2, s[2:]
    elif s[:2] in ("0o", "0O"):
        base, s = 8, s[2:]
    s = s.lstrip(" \t\n\v\f\r")  # strtol's isspace()
    negative = s[:1] == "-"
    if s[:1] in ("+", "-"):
        s = s[1:]
    if base == 0:
        if s[:2] in ("0x", "0X") and s[2:3] and s[2] in "0123456789abcdefABCDEF":
            base, s = 16, s[2:]
        else:
            base = 8 if s[:1] == "0" else 10
    digits = _DIGITS[base]
    if not s or any(c not in digits for c in s):
        return None
    value = int(s, base)
    return -value if negative else value


def _c_unsigned(text: str) -> int | None:
    """``text`` read as libsystemd's safe_atou64() reads it, or None (-EINVAL, -ERANGE).

    The same prefixes as :func:`_c_integer`; strtoull(3) takes a sign too, and systemd
    refuses a negative value other than ``-0`` (parse-util.c: ``l != 0 && s[0] == '-'``).
    """
    value = _c_integer(text)
    if value is None or value < 0 or value >= 2**64:
        return None
    return value


def valid_fd_name(name: str) -> bool:
    """True if ``name`` is a valid fd name: ASCII without control characters, no ``:``,
    at most 255 characters (systemd.socket(5) FileDescriptorName=, sd_notify(3) FDNAME=).
    Empty names are valid: libsystemd keeps empty ``LISTEN_FDNAMES`` fields.
    """
    # str.isprintable() on ASCII is exactly 0x20..0x7e
    return len(name) <= FDNAME_MAX and name.isascii() and name.isprintable() and ":" not in name


def parse_listen_env(
    environ: Mapping[str, str],
    pid: int,
    *,
    own_pidfd_id: int | None = None,
    fd_ceiling: int = NR_OPEN_DEFAULT,
) -> ListenEnv | None:
    """Parse ``LISTEN_PID``/``LISTEN_PIDFDID``/``LISTEN_FDS``/``LISTEN_FDNAMES``: pure.

    Returns None when the environment is not for the process ``pid`` (``LISTEN_PID`` unset
    or another pid, ``LISTEN_PIDFDID`` differs from ``own_pidfd_id``, ``LISTEN_FDS`` unset),
    as sd_listen_fds(3) returns 0. ``own_pidfd_id`` None means "cannot tell", and the
    ``LISTEN_PIDFDID`` comparison is skipped, as libsystemd does on kernels without pidfs.

    Raises :class:`ActivationError` naming the variable and value when it is for us but
    malformed: an unparsable ``LISTEN_PID`` or ``LISTEN_PIDFDID``; ``LISTEN_FDS`` not a
    positive integer, or so large its last fd would be at or above ``fd_ceiling`` (the
    kernel's fs.nr_open: no process can hold such an fd, and refusing early keeps a
    corrupt value from costing memory); a ``LISTEN_FDNAMES`` count that differs from
    ``LISTEN_FDS`` (libsystemd: -EINVAL); an invalid name (see :func:`valid_fd_name`;
    stricter than libsystemd, which takes any bytes). Missing ``LISTEN_FDNAMES`` names
    every fd ``unknown``. Numbers are read as libsystemd reads them (see ``_c_integer``).
    Names are split on ``:`` and kept raw, as the manager joins them; libsystemd 252 reads
    backslash escapes there (``a\\b`` -> ``ab``; a lone trailing one fails even when the
    environment is not for it), which we do not copy.
    """
    text = environ.get("LISTEN_PID")
    if text is None:
        return None
    listen_pid = _c_integer(text)
    if listen_pid is None or not 0 < listen_pid <= _INT_MAX:  # parse_pid(): a valid pid_t
        raise ActivationError(f"LISTEN_PID={text!r} is not a valid pid")
    if listen_pid != pid:
        return None  # sd_listen_fds(3): "Is this for us?"
    pidfd_id = None
    text = environ.get("LISTEN_PIDFDID")  # v259+
    if text is not None:
        pidfd_id = _c_integer(text)
        if pidfd_id is None or not 0 <= pidfd_id < 2**64:
            raise ActivationError(f"LISTEN_PIDFDID={text!r} is not a pidfd inode id")
        if own_pidfd_id is not None and own_pidfd_id != pidfd_id:
            return None  # same pid number, another process: pid reuse
    text = environ.get("LISTEN_FDS")
    if text is None:
        return None
    count = _c_integer(text)
    if count is None or not 0 < count <= _INT_MAX - SD_LISTEN_FDS_START:
        raise ActivationError(f"LISTEN_FDS={text!r} is not a positive integer")
    if SD_LISTEN_FDS_START + count > fd_ceiling:
        raise ActivationError(
            f"LISTEN_FDS={text!r} would put fds above the kernel's limit of {fd_ceiling}"
            " (fs.nr_open)"
        )
    joined = environ.get("LISTEN_FDNAMES")
    if joined is None:
        names = ("unknown",) * count  # sd_listen_fds_with_names(3)
    else:
        names = tuple(joined.split(":"))  # empty fields are kept, as libsystemd does
        if len(names) != count:
            raise ActivationError(
                f"LISTEN_FDNAMES={joined!r} has {len(names)} names for LISTEN_FDS={text!r}"
            )
        # every name is valid if the whole string is short printable ASCII (':' splits)
        if len(joined) > FDNAME_MAX or not (joined.isascii() and joined.isprintable()):
            for name in names:
                if not valid_fd_name(name):
                    raise ActivationError(
                        f"LISTEN_FDNAMES={joined!r}: invalid name {name!r} (ASCII without"
                        f" control characters or ':', at most {FDNAME_MAX} characters)"
                    )
    return ListenEnv(names, pidfd_id)
