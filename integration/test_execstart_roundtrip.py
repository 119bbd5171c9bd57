"""Real systemd (each release of the matrix) parses our ExecStart= lines back to exactly our argv.

A oneshot unit runs ``python3 -c DUMP ARGS...`` for each ExecStart= line; DUMP appends
``sys.argv[1:]`` (and one environment variable) as a JSON line to a file under /run, and the
test compares it with what it rendered.
"""

from __future__ import annotations

import json
import random
import unicodedata

from integration.sandbox import Sandbox, Units
from sdactivate.errors import UnitConfigError
from sdactivate.units.escape import exec_command_line, quote_environment

PYTHON = "/usr/bin/python3"
OUT = "/run/sdactivate-argv.jsonl"
DUMP = (  # one line: newlines cannot be in a command line
    f"import json, os, sys; f = open({OUT!r}, 'a', encoding='utf-8'); "
    "f.write(json.dumps({'argv': sys.argv[1:], 'env': os.environ.get('SDX')}) + chr(10))"
)

HOSTILE = [
    "",
    " ",
    "two words",
    '"double"',
    "'single'",
    'mixed "\'" quotes',
    "%",
    "%%",
    "%n",
    "100%",
    "$",
    "$$",
    "$HOME",
    "${HOME}",
    "$1",
    "${",
    ";",
    "\\;",
    ";;",
    "a;b",
    "\\",
    "\\\\",
    "trailing\\",
    "\\n",
    "\\x41",
    "ünïcødé 😀",
    "\u00a0nbsp",
    "line\u2028sep",
    "--help",
    "-",
    "-x=1",
    "#hash",
    "`whoami`",
    "*",
    "~",
    "a=b",
    "{}",
    "@",
]


def _run_lines(sandbox: Sandbox, units: Units, argvs: list[list[str]], env: str) -> list[dict]:
    lines = "".join(
        f"ExecStart={exec_command_line([PYTHON, '-c', DUMP, *argv])}\n" for argv in argvs
    )
    text = (
        "[Unit]\nDescription=argv round trip\n[Service]\nType=oneshot\n"
        f"Environment={quote_environment('SDX', env)}\n{lines}"
    )
    sandbox.run(["rm", "-f", OUT])
    units.install({units.name("sdactivate-argv.service"): text})
    sandbox.systemctl("start", units.name("sdactivate-argv.service"))  # oneshot: returns when done
    return [json.loads(line) for line in sandbox.read_file(OUT).splitlines()]


def test_hostile_arguments_round_trip(sandbox: Sandbox, units: Units) -> None:
    """Spaces, quotes, %, $, ;, backslashes, unicode, leading dashes and the empty string
    reach the process exactly as rendered, one argv per ExecStart= line and all in one."""
    argvs = [[arg] for arg in HOSTILE] + [HOSTILE]
    env = 'x "y" \\ 5% $HOME ü'
    records = _run_lines(sandbox, units, argvs, env)
    assert [r["argv"] for r in records] == argvs
    assert {r["env"] for r in records} == {env}


def _random_arg(rng: random.Random) -> str:
    pool = " \"'\\%$;{}#-=@~*" + "abcXYZ019" + "üß😀\u00a0\u2028é"
    pool += "".join(chr(rng.randrange(0x20, 0x3000)) for _ in range(20))
    text = "".join(rng.choice(pool) for _ in range(rng.randrange(0, 10)))
    return "".join(c for c in text if unicodedata.category(c) not in ("Cc", "Cs"))


def test_random_printable_argvs_round_trip(sandbox: Sandbox, units: Units) -> None:
    """200 seeded random argvs of printable (mostly non-ASCII-rich) strings round-trip
    exactly, or are refused by the renderer with UnitConfigError (none should be)."""
    rng = random.Random(252)
    argvs = [[_random_arg(rng) for _ in range(rng.randrange(0, 6))] for _ in range(200)]
    kept = []
    for argv in argvs:
        try:
            exec_command_line([PYTHON, "-c", DUMP, *argv])
        except UnitConfigError:
            continue
        kept.append(argv)
    assert len(kept) == len(argvs)
    records = _run_lines(sandbox, units, kept, "plain")
    assert [r["argv"] for r in records] == kept
