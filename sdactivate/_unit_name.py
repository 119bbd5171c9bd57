"""What a unit name may be: systemd's unit_name_is_valid() (basic/unit-name.c), pure.

The one home of the rule and of the list of unit types; ``gen-units`` (:mod:`.units.names`)
and the control commands (:mod:`.control.model`) raise :func:`unit_name_problem`'s sentence
as their own error type. A module of its own, so that the control commands do not import
the unit generator.
"""

from __future__ import annotations

import re

__all__ = ["INSTANCE_CHARS", "NAME_CHARS", "UNIT_NAME_MAX", "UNIT_TYPES", "unit_name_problem"]

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
# systemd.unit(5): a prefix is ASCII letters, digits and ":-_.\"; an instance may also hold
# "@" (unit-name.c: the first "@" ends the prefix, "a@b@c.service" is instance "b@c").
NAME_CHARS = re.compile(r"[A-Za-z0-9:_.\\-]+\Z")
INSTANCE_CHARS = re.compile(r"[A-Za-z0-9:_.\\@-]+\Z")


def unit_name_problem(name: object, *, template_ok: bool = False) -> str | None:
    """Why ``name`` is not a full unit name, as a sentence naming it; None when it is one.

    systemd's unit_name_is_valid() (basic/unit-name.c, v252..v262): ``x.service``,
    ``x@i.service`` (the instance is everything between the first ``@`` and the last ``.``,
    so ``a@b@c.service`` is instance ``b@c``), and the template ``x@.service`` only with
    ``template_ok`` (``UNIT_NAME_ANY``); at most 255 characters.
    """
    if not isinstance(name, str):
        return f"invalid unit name {name!r}: not a string"
    if len(name) > UNIT_NAME_MAX:
        return f"invalid unit name {name!r}: longer than {UNIT_NAME_MAX}"
    stem, dot, suffix = name.rpartition(".")
    if not dot or suffix not in UNIT_TYPES or not stem:
        return f"invalid unit name {name!r}: needs a prefix and a unit type suffix"
    prefix, at, instance = stem.partition("@")
    if not prefix or not NAME_CHARS.match(prefix):
        return f"invalid unit name {name!r}"
    if at and not instance and not template_ok:
        return f"invalid unit name {name!r}: a template needs an instance"
    if instance and not INSTANCE_CHARS.match(instance):
        return f"invalid unit name {name!r}: bad instance {instance!r}"
    return None
