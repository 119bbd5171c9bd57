"""All systemd quoting and escaping for unit files, in one place.

Nothing else in sdactivate turns a string into unit-file syntax; the renderer calls these.
Every function either returns text systemd reads back as exactly the input, or raises
:class:`UnitConfigError` naming the setting and the bad value.

Facts used (systemd 252 man pages):

* systemd.unit(5) "SPECIFIERS": ``%`` specifiers are expanded in most values, before quoting
  is undone, so a literal ``%`` is written ``%%`` everywhere (inside quotes too).
* systemd.service(5) "COMMAND LINES": ``$$`` is a literal ``$``; a word that is exactly ``;``
  separates commands unless escaped as ``\\;``; the program must be an absolute, normalized
  path (load-fragment.c refuses "not normalized" paths).
* systemd.syntax(7) "Quoting": ``"..."`` wraps one item; inside, ``\\`` and ``\"`` are the
  escapes we need; control characters are not allowed; a line ending in ``\\`` continues.
* systemd.unit(5): values are stripped of leading/trailing whitespace.
* config_parse_exec() expands specifiers with a PATH_MAX (4096) limit on the result.
"""

from __future__ import annotations

import os
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import UnitConfigError

__all__ = [
    "EnvRef",
    "ExecArg",
    "check_absolute_path",
    "check_text",
    "escape_value",
    "exec_command_line",
    "quote_environment",
    "quote_exec_arg",
]

_EXEC_LINE_MAX = 4095  # PATH_MAX - 1: specifier expansion limit in config_parse_exec (252)
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_NEEDS_QUOTES = frozenset(" \t\"'\\")  # systemd.syntax(7): whitespace separates, quotes, escapes


@dataclass(frozen=True)
class EnvRef:
    """A reference to a variable systemd substitutes at exec time, e.g. ``EnvRef("MAINPID")``.

    Rendered as ``$NAME``, a word of its own, which systemd.service(5) "COMMAND LINES"
    replaces with the value split at whitespace (zero or more arguments: none when unset).
    With a literal ``prefix`` (``EnvRef("MAINPID", prefix="--pid=")``) it is rendered
    ``--pid=${MAINPID}``: ``${NAME}`` may be part of a word and always makes exactly one
    argument. The only way to emit a ``$`` that systemd expands.
    """

    name: str
    prefix: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _ENV_NAME.match(self.name):
            raise UnitConfigError(f"invalid environment variable name {self.name!r}")
        if not isinstance(self.prefix, str):
            raise UnitConfigError(f"EnvRef prefix: expected a string, got {self.prefix!r}")
        check_text(self.prefix, what="EnvRef prefix")
        if _NEEDS_QUOTES.intersection(self.prefix) or ";" in self.prefix:
            # a quoted word would not let systemd see the ${NAME} as a variable reference
            raise UnitConfigError(f"EnvRef prefix {self.prefix!r}: no spaces, quotes or ';'")

    def render(self) -> str:
        if not self.prefix:
            return f"${self.name}"
        return self.prefix.replace("%", "%%").replace("$", "$$") + f"${{{self.name}}}"


ExecArg = str | EnvRef


def check_text(value: str, *, what: str) -> None:
    """Refuse what no unit-file value can carry: control characters (C0, DEL, C1), lone
    surrogates (not UTF-8; systemd ignores lines that are not valid UTF-8)."""
    if not isinstance(value, str):
        raise UnitConfigError(f"{what}: expected a string, got {value!r}")
    for ch in value:
        category = unicodedata.category(ch)
        if category == "Cc":
            kind = "newline" if ch in "\n\r" else "control character"
            raise UnitConfigError(f"{what}: {kind} {ch!r} not allowed in {value!r}")
        if category == "Cs":
            raise UnitConfigError(f"{what}: not valid UTF-8 (lone surrogate) in {value!r}")


def escape_value(value: str, *, what: str) -> str:
    """A plain (not quote-aware) value: ``%`` doubled; whitespace at either end and a trailing
    backslash refused (systemd strips the first and reads the second as a line continuation)."""
    check_text(value, what=what)
    if value != value.strip():
        raise UnitConfigError(f"{what}: leading or trailing whitespace in {value!r}")
    if value.endswith("\\"):
        raise UnitConfigError(f"{what}: a trailing backslash continues the line: {value!r}")
    return value.replace("%", "%%")


def check_absolute_path(path: str, *, what: str, allow_space: bool = False) -> str:
    """An absolute, normalized path (no ``..``, ``.``, ``//`` or trailing ``/``)."""
    check_text(path, what=what)
    if not path.startswith("/"):
        raise UnitConfigError(f"{what}: must be an absolute path, got {path!r}")
    parts = path.split("/")[1:]
    if ".." in parts:
        raise UnitConfigError(f"{what}: '..' not allowed in {path!r}")
    if path != "/" and (os.path.normpath(path) != path or "" in parts or "." in parts):
        raise UnitConfigError(f"{what}: path is not normalized: {path!r}")
    if not allow_space and any(ch.isspace() for ch in path):
        raise UnitConfigError(f"{what}: whitespace not supported in {path!r}")
    return path


def quote_exec_arg(arg: ExecArg) -> str:
    """One argv element in systemd.service(5) command-line syntax.

    Plain words stay bare; anything with whitespace, quotes or backslashes (or empty) is
    double-quoted with ``\\`` and ``"`` escaped. ``%`` -> ``%%`` and ``$`` -> ``$$`` always;
    a lone ``;`` -> ``\\;``.
    """
    if isinstance(arg, EnvRef):
        return arg.render()
    check_text(arg, what="command-line argument")
    if arg == ";":
        return "\\;"  # systemd.service(5): "Lone semicolons may be escaped as '\;'"
    body = arg.replace("%", "%%").replace("$", "$$")
    if arg and not _NEEDS_QUOTES.intersection(arg):
        return body
    return '"' + body.replace("\\", "\\\\").replace('"', '\\"') + '"'


def exec_command_line(
    argv: Sequence[ExecArg], *, what: str = "ExecStart", ignore_failure: bool = False
) -> str:
    """A whole ``Exec*=`` value: an absolute normalized program followed by quoted arguments.

    ``ignore_failure``: the ``-`` prefix (systemd.service(5): a non-zero exit status, or death
    by a signal, is recorded but not considered a failure)."""
    if not argv:
        raise UnitConfigError(f"{what}: empty command line")
    program = argv[0]
    if not isinstance(program, str):
        raise UnitConfigError(f"{what}: the program cannot be a variable ({program!r})")
    check_absolute_path(program, what=f"{what} program", allow_space=True)
    line = ("-" if ignore_failure else "") + " ".join(quote_exec_arg(arg) for arg in argv)
    if len(line.encode()) > _EXEC_LINE_MAX:
        raise UnitConfigError(
            f"{what}: command line is {len(line.encode())} bytes once quoted; systemd "
            f"refuses more than {_EXEC_LINE_MAX}"
        )
    return line


def quote_environment(name: str, value: str) -> str:
    """One ``Environment=`` assignment, quoted (systemd.exec(5): quote-aware, C escapes,
    specifiers expanded; ``$`` is NOT expanded there, so it stays single)."""
    if not isinstance(name, str) or not _ENV_NAME.match(name):
        raise UnitConfigError(f"Environment: invalid variable name {name!r}")
    check_text(value, what=f"Environment {name}")
    body = f"{name}={value}".replace("%", "%%").replace("\\", "\\\\").replace('"', '\\"')
    return f'"{body}"'
