"""Compare sdactivate's unit name rule with the real systemd's on many generated names; print
``PROBE {json}``, exit 1 on a mismatch.

    python3 unit_name_differential.py [--count N] [--seed S] [--systemd-analyze PATH]

systemd's answer: ``systemd-analyze verify ./NAME`` checks the file name with
unit_name_is_valid(UNIT_NAME_ANY) before it loads anything ("Failed to prepare filename
./NAME: Invalid argument"; a valid name of a missing file is "not found" or another load
error instead), so no file needs to exist. One call per name: in one call for many, a
valid name can end the run early. No name holds ``:``: verify reads ``FILE:ALIAS`` (252 does) and
never checks such a name (tests/test_units_names.py has ``:`` in a table). Ours:
``sdactivate._unit_name.unit_name_problem(name, template_ok=True)``. Run by
tests/test_units_names.py on the host and by integration/test_unit_names_e2e.py inside each
release tree. Names are built from pieces that hit every rule (``@`` first, doubled, before
the suffix, in the instance; ``.`` in the prefix; every unit type and near misses; characters
just outside the set; lengths 255 and 256) and are the same for a seed everywhere.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile

from sdactivate._unit_name import UNIT_NAME_MAX, UNIT_TYPES, unit_name_problem

# No "/" (a path), no ":" (see above); NUL cannot be an argument.
_PIECES = [
    "a", "Z", "0", "9", "@", "@@", ".", "..", "-", "_", "\\", "\\x20", " ", "é", "%",
    "+", "*", "~", "=", "\t", "x.y", "@i", "inst@nce", ".service",
]  # fmt: skip
_SUFFIXES = [*UNIT_TYPES, "Service", "services", "servic", "", "foo", "service ", "snapshot"]
_FIXED = [
    "a.service", "a@b@c.service", "a@@.service", "a@.service", "@a.service", "@.service",
    ".service", "a.service.service", "a..service", "a@.b.service", "a@b.c@.service", "a",
    "a.", "service", "a@b.service", "-.mount", "a\\x2db.slice", "a@b.c",
]  # fmt: skip


def names(count: int, seed: int) -> list[str]:
    """``count`` names (at least the fixed ones), the same for a seed on every host."""
    rng = random.Random(seed)
    out = list(_FIXED)
    for kind in UNIT_TYPES:  # every type, at the length limit and one past it
        for length in (UNIT_NAME_MAX, UNIT_NAME_MAX + 1):
            out.append("a" * (length - len(kind) - 1) + "." + kind)
            out.append("a@" + "b" * (length - len(kind) - 3) + "." + kind)
    while len(out) < count:
        stem = "".join(rng.choice(_PIECES) for _ in range(rng.randint(1, 5)))
        out.append(f"{stem}.{rng.choice(_SUFFIXES)}")
    return out


def systemd_valid(names_: list[str], analyze: str) -> dict[str, bool]:
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names_:
            result = subprocess.run(
                [analyze, "verify", "--man=no", f"./{name}"],
                cwd=tmp,  # empty: a valid name is "not found"
                capture_output=True,
                text=True,
                errors="surrogateescape",
                timeout=60,
            )
            refused = f"Failed to prepare filename ./{name}: Invalid argument"
            out[name] = refused not in result.stderr
    return out


def systemd_version(analyze: str) -> int:
    out = subprocess.run([analyze, "--version"], capture_output=True, text=True, timeout=30)
    return int(out.stdout.split()[1])


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=16)
    parser.add_argument("--systemd-analyze", default="systemd-analyze")
    args = parser.parse_args()
    cases = names(args.count, args.seed)
    theirs = systemd_valid(cases, args.systemd_analyze)
    mismatches = [
        {"name": n, "systemd": theirs[n], "ours": unit_name_problem(n, template_ok=True)}
        for n in cases
        if theirs[n] != (unit_name_problem(n, template_ok=True) is None)
    ]
    report = {
        "systemd": systemd_version(args.systemd_analyze),
        "checked": len(cases),
        "valid": sum(theirs.values()),
        "instances_with_at": sum(
            1 for n in cases if theirs[n] and n.partition("@")[2].count("@") > 0
        ),
        "mismatches": len(mismatches),
        "examples": mismatches[:20],
    }
    print("PROBE " + json.dumps(report, ensure_ascii=False))
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
