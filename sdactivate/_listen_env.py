"""The ``LISTEN_*`` protocol as pure functions: sd_listen_fds(3) without any I/O.

The one home of its rules: the variable names and :data:`SD_LISTEN_FDS_START`, what an fd
name may be (:func:`fd_name_problem`), reading the environment (:func:`parse_listen_env`:
"not for us" is None, what was passed is a :class:`ListenEnv`, malformed is an
:class:`ActivationError`) and building it for a child (:func:`listen_env`). The shell in
:mod:`sdactivate.activation` does the checking of fds, the flags and the socket objects;
:mod:`sdactivate._spawn` moves the fds and sets ``LISTEN_PID``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ._cint import c_integer, parse_pid
from .errors import ActivationError

__all__ = [
    "FDNAME_MAX",
    "LISTEN_KEYS",
    "NR_OPEN_DEFAULT",
    "SD_LISTEN_FDS_START",
    "ListenEnv",
    "fd_name_problem",
    "listen_env",
    "parse_listen_env",
    "valid_fd_name",
]

SD_LISTEN_FDS_START = 3  # sd_listen_fds(3)
# sd_listen_fds(3): what unset_environment removes; LISTEN_PIDFDID since v259
LISTEN_KEYS = ("LISTEN_PID", "LISTEN_PIDFDID", "LISTEN_FDS", "LISTEN_FDNAMES")
FDNAME_MAX = 255  # fd-util.c fdname_is_valid(): FDNAME_MAX (v252..v262)
NR_OPEN_DEFAULT = 1 << 20  # proc(5) fs.nr_open default: no process can hold a higher fd
_INT_MAX = 2**31 - 1


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


def fd_name_problem(name: object, *, empty_ok: bool = False) -> str | None:
    """Why ``name`` is not an fd name, as a sentence naming it; None when it is one.

    The rule is systemd's fdname_is_valid() (fd-util.c, the same from v252 to v262), which
    PID1 applies to ``FileDescriptorName=`` (systemd.socket(5)) and ``FDNAME=`` (sd_notify(3)):
    ASCII from space to ``~`` (no control characters), no ``:``, at most 255 characters.
    systemd takes the empty name; a name someone chooses must not be empty (``empty_ok``
    is for names as received): an empty ``FileDescriptorName=`` means "the default".
    Callers raise it as their own error type.
    """
    if not isinstance(name, str):
        return f"fd name {name!r} is not a string"
    why = _why_not(name, empty_ok=empty_ok)
    if why is None:
        return None
    shown = repr(name) if len(name) <= 80 else f"{name[:80]!r}..."
    return (
        f"invalid fd name {shown}: {why} (fd names are ASCII without control characters"
        f" or ':', 1..{FDNAME_MAX} characters: systemd.socket(5) FileDescriptorName=)"
    )


def _why_not(name: str, *, empty_ok: bool) -> str | None:
    if not name and not empty_ok:
        return "empty"
    if len(name) > FDNAME_MAX:
        return f"{len(name)} characters long"
    # str.isprintable() on ASCII is exactly 0x20..0x7e
    bad = next((c for c in name if c == ":" or not (c.isascii() and c.isprintable())), None)
    return None if bad is None else f"contains {bad!r}"


def valid_fd_name(name: str) -> bool:
    """True if ``name`` is a valid fd name, as systemd's fdname_is_valid() says (see
    :func:`fd_name_problem`). Empty names are valid: libsystemd keeps empty
    ``LISTEN_FDNAMES`` fields.
    """
    return fd_name_problem(name, empty_ok=True) is None


def listen_env(
    base: Mapping[str, str], names: Sequence[str], *, notify_socket: str | None = None
) -> dict[str, str]:
    """A child's environment: ``base`` without any ``LISTEN_*``, plus ``LISTEN_FDS`` and
    ``LISTEN_FDNAMES`` for ``names`` (one per fd, joined with ``:`` as PID1 joins them,
    exec-invoke.c build_environment()) and ``NOTIFY_SOCKET`` if given. ``LISTEN_PID`` is
    not here: only the child knows its pid (:mod:`sdactivate._shim` sets it). Pure.
    """
    env = {k: v for k, v in base.items() if k not in LISTEN_KEYS}
    if names:
        env["LISTEN_FDS"] = str(len(names))
        env["LISTEN_FDNAMES"] = ":".join(names)
    if notify_socket is not None:
        env["NOTIFY_SOCKET"] = notify_socket
    return env


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
    every fd ``unknown``. Numbers are read as libsystemd reads them (:mod:`sdactivate._cint`).
    Names are split on ``:`` and kept raw, as the manager joins them; libsystemd 252 reads
    backslash escapes there (``a\\b`` -> ``ab``; a lone trailing one fails even when the
    environment is not for it), which we do not copy.
    """
    text = environ.get("LISTEN_PID")
    if text is None:
        return None
    listen_pid = parse_pid(text)
    if listen_pid is None:
        raise ActivationError(f"LISTEN_PID={text!r} is not a valid pid")
    if listen_pid != pid:
        return None  # sd_listen_fds(3): "Is this for us?"
    pidfd_id = None
    text = environ.get("LISTEN_PIDFDID")  # v259+
    if text is not None:
        pidfd_id = c_integer(text)
        if pidfd_id is None or not 0 <= pidfd_id < 2**64:
            raise ActivationError(f"LISTEN_PIDFDID={text!r} is not a pidfd inode id")
        if own_pidfd_id is not None and own_pidfd_id != pidfd_id:
            return None  # same pid number, another process: pid reuse
    text = environ.get("LISTEN_FDS")
    if text is None:
        return None
    count = c_integer(text)
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
                why = _why_not(name, empty_ok=True)
                if why is not None:
                    raise ActivationError(
                        f"LISTEN_FDNAMES={joined!r}: invalid name {name!r}, {why} (ASCII"
                        f" without control characters or ':', at most {FDNAME_MAX} characters)"
                    )
    return ListenEnv(names, pidfd_id)
