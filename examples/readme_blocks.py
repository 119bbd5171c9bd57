"""The README's code, as the tests and the walkthrough run it: marked blocks and command lines.

A block meant to be run is marked by an HTML comment on the line before its fence::

    <!-- readme-test: quickstart-app -->
    ```python
    ...
    ```

Print one (``--sub OLD=NEW`` replaces text, in order; the caller says what it changes)::

    python3 examples/readme_blocks.py quickstart-app > /srv/myapp/app.py
    python3 examples/readme_blocks.py quickstart --sub myapp=demo --sub 8080=18080

Standard library only: the walkthrough runs it with Debian's python3 before any venv exists.
"""

from __future__ import annotations

import argparse
import re
import shlex
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

README = Path(__file__).resolve().parent.parent / "README.md"

_MARK = re.compile(r"^<!-- readme-test: ([\w-]+) -->\n```(\w*)\n(.*?)^```$", re.S | re.M)
_FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.S | re.M)
_INDENTED = re.compile(r"(?:^\n)((?:^    .*\S.*\n)+)", re.M)  # a paragraph indented 4+ spaces
_SPAN = re.compile(r"`([^`\n]+)`")
_SHELLS = ("sh", "bash", "shell", "console")


class Block(NamedTuple):
    lang: str
    body: str


def marked_blocks(text: str) -> dict[str, Block]:
    """Marked blocks by name. Raises ValueError for a name used twice."""
    found: dict[str, Block] = {}
    for match in _MARK.finditer(text):
        name, lang, body = match.groups()
        if name in found:
            raise ValueError(f"README block {name!r} is marked twice")
        found[name] = Block(lang, body)
    return found


def fenced_blocks(text: str) -> list[Block]:
    """Every fenced block, marked or not, in order."""
    return [Block(lang, body) for lang, body in _FENCE.findall(text)]


def _outside_fences(text: str) -> str:
    return _FENCE.sub("", text)


def shell_lines(body: str) -> list[list[str]]:
    """The commands of a shell block as argv lists: backslash continuations joined,
    comments and blank lines dropped."""
    joined = re.sub(r"\\\n", " ", body)
    out = []
    for line in joined.splitlines():
        argv = shlex.split(line, comments=True)
        if argv:
            out.append(argv)
    return out


def _sdactivate_argv(argv: Sequence[str]) -> list[str] | None:
    """The arguments after ``sdactivate`` (``/x/bin/sdactivate``, ``python -m sdactivate``)."""
    for i, word in enumerate(argv):
        if (word == "sdactivate" or word.endswith("/sdactivate")) and (
            i == 0 or argv[i - 1] == "-m"
        ):
            return list(argv[i + 1 :])
    return None


def sdactivate_commands(body: str) -> list[list[str]]:
    """The ``sdactivate`` command lines of one shell block, as the arguments after it."""
    found = (_sdactivate_argv(argv) for argv in shell_lines(body))
    return [args for args in found if args is not None]


def block_commands(text: str) -> Iterator[list[str]]:
    """Every ``sdactivate`` command line of the README's shell blocks (fenced ``sh``, and
    paragraphs indented four spaces), as the arguments after ``sdactivate``."""
    bodies = [b.body for b in fenced_blocks(text) if b.lang in _SHELLS]
    bodies += _INDENTED.findall(_outside_fences(text))
    for body in bodies:
        yield from sdactivate_commands(body)


def inline_commands(text: str) -> Iterator[str]:
    """Every inline code span (outside fenced blocks) that runs ``sdactivate`` with
    arguments, as written (it may hold placeholders: PID, CMD, ADDR...)."""
    for span in _SPAN.findall(_outside_fences(text)):
        words = span.split()
        for i, word in enumerate(words):
            if (word == "sdactivate" or word.endswith("/sdactivate")) and len(words) > i + 2:
                yield span
                break


def substitute(body: str, subs: Sequence[tuple[str, str]]) -> str:
    """Apply ``(old, new)`` replacements in order; each must occur (a README edit that drops
    the text a test relies on fails loudly instead of testing something else)."""
    for old, new in subs:
        if old not in body:
            raise ValueError(f"{old!r} does not occur in the block")
        body = body.replace(old, new)
    return body


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Print a marked README block.")
    parser.add_argument("name", help="the block's readme-test name")
    parser.add_argument("--readme", default=str(README))
    parser.add_argument("--sub", action="append", default=[], metavar="OLD=NEW")
    args = parser.parse_args(argv)
    blocks = marked_blocks(Path(args.readme).read_text(encoding="utf-8"))
    if args.name not in blocks:
        print(f"readme_blocks: no block {args.name!r} in {args.readme}", file=sys.stderr)
        return 2
    subs = [tuple(item.split("=", 1)) for item in args.sub]
    if any(len(pair) != 2 for pair in subs):
        print("readme_blocks: --sub takes OLD=NEW", file=sys.stderr)
        return 2
    try:
        sys.stdout.write(substitute(blocks[args.name].body, [(a, b) for a, b in subs]))
    except ValueError as exc:
        print(f"readme_blocks: {args.name}: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
