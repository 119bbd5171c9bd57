"""Command-line entry point: parsing only; each command lives in its own module.

``main()`` is the one place that turns :class:`SdActivateError` into a message on stderr
and an exit status (2: usage or configuration, 1: runtime failure).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from .. import __version__
from ..errors import AddressError, SdActivateError, UnitConfigError

__all__ = ["main"]

# One module per command group; each defines ``register(subparsers)`` and sets
# ``func=<callable(args) -> int>`` on its parsers. Command modules import heavy things lazily.
_COMMAND_MODULES = ("gen_units", "run", "control")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sdactivate",
        description="Zero-downtime restarts for Python services under systemd.",
    )
    parser.add_argument("--version", action="version", version=f"sdactivate {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in _COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="sdactivate: %(message)s",
        stream=sys.stderr,
    )
    try:
        status: int = args.func(args)
    except (UnitConfigError, AddressError) as exc:
        print(f"sdactivate: error: {exc}", file=sys.stderr)
        return 2
    except SdActivateError as exc:
        print(f"sdactivate: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return status
