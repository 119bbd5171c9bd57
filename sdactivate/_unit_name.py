"""What a unit name may be: systemd's unit_name_is_valid() (basic/unit-name.c), pure.

The one home of the rule and of the list of unit types; ``gen-units`` (:mod:`.units.names`)
and the control commands (:mod:`.control.model`) raise :func:`unit_name_problem`'s sentence
as their own error type. A module of its own, so that the control commands do not import
the unit generator.
"""

from __future__ import annotations

import re

__all__ = ["NAME_CHARS", "UNIT_NAME_MAX", "UNIT_TYPES", "unit_name_problem"]

UNIT_NAME_MAX = 255  # basic/unit-name.h: UNIT_NAME_MAX 256 including the NUL
# systemd.unit(5): the unit types (basic/unit-def.c unit_type_table, v252..v262)
UNIT_TYPES = (
    "service",
    "socket",
    "target",
    "device",
    "mount",
    "automount",
    "swap",
    "timer",
    "path",
    "slice",
    "scope",
)
# systemd.unit(5): a prefix or an instance is ASCII letters, digits and ":-_.\"
NAME_CHARS = re.compile(r"[A-Za-z0-9:_.\\-]+\Z")


def unit_name_problem(name: object, *, template_ok: bool = False) -> str | None:
    """Why ``name`` is not a full unit name, as a sentence naming it; None when it is one.

    ``x.service``, ``x@i.service``, and ``x@.service`` only with ``template_ok``; at most
    255 characters; one ``@`` at most (systemd would read ``a@b@c.service`` as instance
    ``b@c``: refused here, as no unit we write or act on has one).
    """
    if not isinstance(name, str) or len(name) > UNIT_NAME_MAX:
        return f"invalid unit name {name!r}: longer than {UNIT_NAME_MAX}"
    stem, dot, suffix = name.rpartition(".")
    if not dot or suffix not in UNIT_TYPES or not stem:
        return f"invalid unit name {name!r}: needs a prefix and a unit type suffix"
    prefix, at, instance = stem.partition("@")
    if not prefix or not NAME_CHARS.match(prefix) or (at and "@" in instance):
        return f"invalid unit name {name!r}"
    if at and not instance and not template_ok:
        return f"invalid unit name {name!r}: a template needs an instance"
    if instance and not NAME_CHARS.match(instance):
        return f"invalid unit name {name!r}: bad instance {instance!r}"
    return None
