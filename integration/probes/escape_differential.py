"""Compare sdactivate's systemd-escape functions with the real ``systemd-escape`` on many
generated inputs, in all four directions; print ``PROBE {json}``, exit 1 on a mismatch.

    python3 escape_differential.py [--count N] [--seed S] [--systemd-escape PATH]

Run by tests/test_units_names.py on the host and by integration/test_versions_e2e.py inside
each release tree. Inputs are built from pieces that hit every rule (escapes with and
without hex digits, lone backslashes, ``-``, ``/``, ``.``/``..`` components, NUL and non-
UTF-8 bytes, long components and paths) and are the same for a seed everywhere. The one
divergence allowed: systemd-escape prints a result that is not UTF-8, where a ``str``
function must refuse.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
from collections.abc import Callable

from sdactivate.errors import UnitConfigError
from sdactivate.units import names

_ESCAPED = [
    "\\", "\\x", "\\X", "\\x2", "\\x2f", "\\x2d", "\\x2e", "\\x00", "\\xff", "\\xc3\\xa4",
    "\\x0a", "\\x+f", "\\x-1", "\\x 1", "\\xg0", "\\y", "x", "-", "--", "/", ".", "..", "a",
    "Z", "0", "f", "F", "+", " ", "ä", ":", "_", "%", "\\x41",
]  # fmt: skip
_PLAIN = ["a", "/", ".", "..", "-", "\\", " ", "ä", "😀", ":", "_", "\t", "x", "%", "$", "'"]
_PATHS = ["/", "//", ".", "..", "a", "b c", "-", "\\", "ä", ".x", "x.", "%", "\x7f"]
_MODES: dict[str, tuple[list[str], Callable[[str], str]]] = {
    "escape": ([], names.escape),
    "escape-path": (["--path"], names.escape_path),
    "unescape": (["--unescape"], names.unescape),
    "unescape-path": (["--unescape", "--path"], names.unescape_path),
}


def inputs(mode: str, count: int, seed: int) -> list[str]:
    """``count`` inputs for ``mode``, the same for the same seed (random.Random)."""
    rng = random.Random(f"{seed}:{mode}")
    pieces = {"escape": _PLAIN, "escape-path": _PATHS}.get(mode, _ESCAPED)
    out: list[str] = []
    while len(out) < count:
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 8)))
        if mode == "escape-path" and rng.random() < 0.05:  # '..' after the root (v254)
            text = rng.choice(["/..", "//../", "/../..", "/./.."]) + text
        if rng.random() < 0.03:  # the length limits: a 255/256-byte component, ~4096 in all
            text = rng.choice(["/", ""]) + "a" * rng.choice([254, 255, 256, 257]) + text
        elif rng.random() < 0.02:
            text = "/" + "/".join(["b" * 99] * 41)[: rng.choice([4093, 4094, 4095, 4096])]
        if mode == "escape" and not text:
            continue  # systemd-escape '' prints nothing useful to compare
        out.append(text)
    return out


def oracle(program: str, flags: list[str], texts: list[str]) -> list[bytes | None]:
    """systemd-escape FLAGS -- TEXT for each text: its stdout less the newline, or None if
    it failed. One shell runs them all (a process per input, no Python in between)."""
    with tempfile.TemporaryDirectory() as work:
        script = (
            'prog=$1; work=$2; shift 2; i=0; for a do i=$((i+1)); "$prog" '
            + " ".join(flags)
            + ' -- "$a" >"$work/$i" 2>/dev/null || rm -f "$work/$i"; done'
        )
        subprocess.run(
            ["/bin/sh", "-c", script, "sh", program, work, *texts], check=True, timeout=600
        )
        results: list[bytes | None] = []
        for index in range(1, len(texts) + 1):
            path = os.path.join(work, str(index))
            if not os.path.exists(path):
                results.append(None)
                continue
            with open(path, "rb") as handle:
                data = handle.read()
            results.append(data[:-1] if data.endswith(b"\n") else data)
        return results


def systemd_version(program: str) -> int:
    """``systemd 257 (257.9-1)`` -> 257: escape_path() answers as that version does."""
    first = subprocess.run(
        [program, "--version"], capture_output=True, text=True, check=True, timeout=30
    ).stdout.split("\n", 1)[0]
    return int(first.split()[1])


def compare(
    mode: str, texts: list[str], expected: list[bytes | None], version: int
) -> dict[str, object]:
    _, function = _MODES[mode]
    ours = (
        (lambda text: names.escape_path(text, version=version))
        if mode == "escape-path"
        else function
    )
    mismatches: list[dict[str, object]] = []
    not_utf8 = 0
    for text, want in zip(texts, expected, strict=True):
        try:
            got: bytes | None = ours(text).encode("utf-8")
        except UnitConfigError:
            got = None
        if got == want:
            continue
        if got is None and want is not None:
            try:
                want.decode("utf-8")
            except UnicodeDecodeError:
                not_utf8 += 1  # the allowed divergence (see the module docstring)
                continue
        mismatches.append(
            {"input": text, "systemd": None if want is None else want.decode("utf-8", "replace"),
             "ours": None if got is None else got.decode("utf-8")}
        )  # fmt: skip
    refused = sum(1 for want in expected if want is None)
    return {
        "checked": len(texts),
        "refused_by_systemd": refused,
        "not_utf8": not_utf8,
        "mismatches": len(mismatches),
        "first": mismatches[:10],
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=1000, help="inputs per direction")
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--systemd-escape", default="systemd-escape")
    args = parser.parse_args()
    version = systemd_version(args.systemd_escape)
    report: dict[str, object] = {"systemd": version}
    for mode, (flags, _) in _MODES.items():
        texts = inputs(mode, args.count, args.seed)
        report[mode] = compare(mode, texts, oracle(args.systemd_escape, flags, texts), version)
    print("PROBE " + json.dumps(report, ensure_ascii=False))
    failed = any(r["mismatches"] for r in report.values() if isinstance(r, dict))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
