"""Unit names: validation as systemd does it, and ``systemd-escape`` compatible escaping.

systemd.unit(5) (252): a unit name is a prefix of ASCII letters, digits, ``:``, ``-``, ``_``,
``.`` and ``\\``, optionally ``@instance`` (templates: ``@`` right before the suffix), then a
type suffix; at most 255 characters (UNIT_NAME_MAX - 1). "String Escaping": ``/`` -> ``-``,
every byte outside ``[A-Za-z0-9:_.]`` -> ``\\xNN``, a leading ``.`` escaped too.
"""

from __future__ import annotations

from .._listen_env import fd_name_problem
from .._unit_name import NAME_CHARS, UNIT_NAME_MAX, UNIT_TYPES, unit_name_problem
from ..errors import UnitConfigError

__all__ = [
    "UNIT_NAME_MAX",
    "UNIT_TYPES",
    "check_fd_name",
    "check_unit_name",
    "check_unit_prefix",
    "escape",
    "escape_path",
    "instance_name",
    "strip_unit_suffix",
    "unescape",
]


_SAFE = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789:_.")


def check_unit_prefix(prefix: str, *, longest_suffix: str = ".service") -> str:
    """A name the generator may prefix units with (``myapp`` for ``myapp.service``).

    Refuses ``@`` (templates are not generated), a leading ``.`` (hidden files are not
    loaded), and names that would exceed 255 characters with ``longest_suffix``.
    """
    if not isinstance(prefix, str) or not prefix:
        raise UnitConfigError(f"invalid unit name {prefix!r}: empty")
    if "@" in prefix:
        raise UnitConfigError(f"invalid unit name {prefix!r}: '@' (templates) not supported here")
    if not NAME_CHARS.match(prefix):
        raise UnitConfigError(
            f"invalid unit name {prefix!r}: only ASCII letters, digits and ':-_.\\' are allowed "
            f"(systemd.unit(5)); try `systemd-escape {prefix!r}`"
        )
    if prefix.startswith("."):
        raise UnitConfigError(f"invalid unit name {prefix!r}: must not start with '.'")
    if len(prefix) + len(longest_suffix) > UNIT_NAME_MAX:
        raise UnitConfigError(
            f"invalid unit name {prefix!r}: {prefix + longest_suffix!r} is longer than "
            f"{UNIT_NAME_MAX} characters"
        )
    return prefix


def strip_unit_suffix(name: str) -> str:
    """``myapp.service`` or ``myapp.socket`` -> ``myapp``: the prefix a user means when they
    type a full unit name where the generator wants a prefix; anything else is unchanged."""
    for suffix in (".service", ".socket"):
        if name.endswith(suffix) and len(name) > len(suffix):
            return name.removesuffix(suffix)
    return name


def check_unit_name(name: str, *, template_ok: bool = False) -> str:
    """A full unit name like systemd's unit_name_is_valid(): ``x.service``, ``x@i.service``,
    ``x@.service`` (only with ``template_ok``). The rule is :mod:`sdactivate._unit_name`'s."""
    problem = unit_name_problem(name, template_ok=template_ok)
    if problem is not None:
        raise UnitConfigError(problem)
    return name


def escape(text: str) -> str:
    """``systemd-escape TEXT``: bytes outside ``[A-Za-z0-9:_.]`` -> ``\\xNN``, ``/`` -> ``-``,
    a leading ``.`` escaped."""
    data = text.encode("utf-8")
    out = []
    for i, byte in enumerate(data):
        if byte == ord("/"):
            out.append("-")
        elif byte in _SAFE and not (i == 0 and byte == ord(".")):
            out.append(chr(byte))
        else:
            out.append(f"\\x{byte:02x}")
    return "".join(out)


def escape_path(path: str) -> str:
    """``systemd-escape --path PATH``: simplified, outer slashes dropped, ``/`` is ``-``.

    Refuses ``..`` and ``.`` components (systemd: "not normalized").
    """
    parts = [part for part in path.split("/") if part]
    if any(part in (".", "..") for part in parts):
        raise UnitConfigError(f"path {path!r} is not normalized ('.' or '..')")
    if not parts:
        return "-"
    return escape("/".join(parts))


def unescape(text: str) -> str:
    """``systemd-escape --unescape``: ``-`` -> ``/``, ``\\xNN`` -> byte."""
    data = bytearray()
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "-":
            data += b"/"
        elif ch == "\\" and text[i + 1 : i + 2] == "x" and len(text) >= i + 4:
            try:
                data.append(int(text[i + 2 : i + 4], 16))
            except ValueError as exc:
                raise UnitConfigError(f"bad escape in {text!r}") from exc
            i += 3
        else:
            data += ch.encode("utf-8")
        i += 1
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UnitConfigError(f"{text!r} does not unescape to UTF-8") from exc


def instance_name(template: str, instance: str, *, path: bool = False) -> str:
    """``systemd-escape --template=TEMPLATE [--path] INSTANCE``: ``app@.service`` + ``a b``
    -> ``app@a\\x20b.service``."""
    check_unit_name(template, template_ok=True)
    stem, _, suffix = template.rpartition(".")
    if not stem.endswith("@"):
        raise UnitConfigError(f"{template!r} is not a template (needs '@' before the suffix)")
    escaped = escape_path(instance) if path else escape(instance)
    return check_unit_name(f"{stem}{escaped}.{suffix}")


def check_fd_name(name: str) -> str:
    """A ``FileDescriptorName=`` (systemd.socket(5)): a non-empty fd name as systemd's
    fdname_is_valid() says (:func:`sdactivate._listen_env.fd_name_problem`: printable ASCII,
    spaces included, no ``:``, 1..255 characters). Spaces at either end are the renderer's
    to refuse (a unit file cannot hold them)."""
    problem = fd_name_problem(name)
    if problem is not None:
        raise UnitConfigError(problem)
    return name
