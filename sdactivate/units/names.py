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
    "unescape_path",
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


def escape_path(path: str, *, version: int | None = None) -> str:
    """``systemd-escape --path PATH`` (unit_name_path_escape()): the path simplified (``//``
    and ``.`` components dropped), ``/`` alone is ``-``, otherwise the outer slashes
    dropped and the rest escaped. A path that is not normalized after that (``..``, a lone
    ``.``), a component over 255 bytes or a path of 4096 bytes or more is refused.

    ``version``: the systemd whose answer to give (default: the newest). From 257
    path_simplify() also drops ``..`` right after the root (``/../a`` is ``/a``); 252 and
    254 refuse it (measured: integration/test_escape_e2e.py; 255 and 256 were not)."""
    simplified = _simplify(path, root_dotdot=version is None or version >= _ROOT_DOTDOT)
    if simplified in ("", "/"):
        return "-"
    if not _normalized(simplified.encode()):
        raise UnitConfigError(
            f"path {path!r} is not normalized ('..', a lone '.', a component over"
            f" {_NAME_MAX} bytes or {_PATH_MAX} bytes in all): systemd-escape --path refuses it"
        )
    return escape(simplified.strip("/"))


def unescape(text: str) -> str:
    """``systemd-escape --unescape`` (unit_name_unescape()): ``-`` -> ``/``, ``\\xNN`` -> the
    byte NN (two hex digits, nothing else after a backslash). As in systemd, the result is
    a C string: it ends at a ``\\x00``. Refused: a bad escape, and a result that is not
    UTF-8 (systemd-escape prints such bytes; a ``str`` cannot hold them)."""
    return _decode(_unescape(text), text)


def unescape_path(text: str) -> str:
    """``systemd-escape --unescape --path`` (unit_name_path_unescape()): ``-`` is ``/``;
    otherwise :func:`unescape` with a ``/`` in front, refused unless that is a normalized
    absolute path (no ``//``, ``.`` or ``..``, no trailing ``/``)."""
    if text == "-":
        return "/"
    if not text:
        raise UnitConfigError("empty string: not an escaped path")
    inner = _unescape(text)
    path = b"/" + inner
    if inner.startswith(b"/") or inner.endswith(b"/") or not _normalized(path):
        raise UnitConfigError(f"{text!r} does not unescape to a normalized absolute path")
    return _decode(path, text)


_HEX = frozenset(b"0123456789abcdefABCDEF")  # unhexchar()
# path_simplify() drops a ".." after the root: measured 252, 254 no; 257, 262 yes
_ROOT_DOTDOT = 257
_NAME_MAX = 255  # path_is_valid(): bytes per component
_PATH_MAX = 4096  # path_is_valid(): bytes in all, the NUL included


def _unescape(text: str) -> bytes:
    raw = text.encode("utf-8", "surrogateescape").split(b"\0", 1)[0]  # argv: a C string
    data = bytearray()
    i = 0
    while i < len(raw):
        byte = raw[i]
        if byte == ord("-"):
            data += b"/"
        elif byte == ord("\\"):
            pair = raw[i + 2 : i + 4]
            if raw[i + 1 : i + 2] != b"x" or len(pair) != 2 or not _HEX.issuperset(pair):
                raise UnitConfigError(
                    f"bad escape at {text[i : i + 4]!r} in {text!r}: a backslash must start"
                    " \\xNN (two hex digits)"
                )
            data.append(int(pair, 16))
            i += 3
        else:
            data.append(byte)
        i += 1
    return bytes(data).split(b"\0", 1)[0]  # the result is a C string too


def _decode(data: bytes, text: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UnitConfigError(f"{text!r} does not unescape to UTF-8 ({data!r})") from exc


def _simplify(path: str, *, root_dotdot: bool) -> str:
    """path_simplify(): repeated and trailing slashes and ``.`` components dropped (``..``
    kept, except right after the root with ``root_dotdot``: ``/..`` is ``/``); a relative
    path of only dots becomes ``.``."""
    parts = [part for part in path.split("/") if part not in ("", ".")]
    if path.startswith("/"):
        while root_dotdot and parts[:1] == [".."]:
            parts.pop(0)
        return "/" + "/".join(parts)
    if not parts:
        return "." if path else ""
    return "/".join(parts)


def _normalized(path: bytes) -> bool:
    """path_is_normalized(): valid (path_is_valid()) with no ``.``/``..`` component or ``//``."""
    if not path or len(path) >= _PATH_MAX:
        return False
    parts = path.split(b"/")
    if any(len(part) > _NAME_MAX for part in parts):
        return False
    inner = parts[1:-1] if len(parts) > 1 else []
    return not (
        any(part in (b".", b"..") for part in (parts[0], parts[-1]))
        or any(part in (b"", b".", b"..") for part in inner)
    )


def instance_name(
    template: str, instance: str, *, path: bool = False, version: int | None = None
) -> str:
    """``systemd-escape --template=TEMPLATE [--path] INSTANCE``: ``app@.service`` + ``a b``
    -> ``app@a\\x20b.service``."""
    check_unit_name(template, template_ok=True)
    stem, _, suffix = template.rpartition(".")
    if not stem.endswith("@"):
        raise UnitConfigError(f"{template!r} is not a template (needs '@' before the suffix)")
    escaped = escape_path(instance, version=version) if path else escape(instance)
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
