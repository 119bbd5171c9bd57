"""Command-line entry point: parsing only; each command lives in its own module.

``main()`` is the one place that turns errors into one line on stderr and an exit status:

* 0: done;
* 1: the system refused or a runtime step failed: a file could not be written (no
  permission, read-only file system, no home), systemctl or D-Bus failed (no bus,
  permission denied, unknown unit, timeout), a supervisor generation failed, a
  third-party module is missing (jeepney);
* 2: usage or configuration: bad options, a unit that cannot work (including gen-units'
  checks against this machine), an existing unit file that differs (without --force);
* 130: interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
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
        sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
    except (UnitConfigError, AddressError) as exc:
        print(f"sdactivate: error: {exc}", file=sys.stderr)
        return 2
    except SdActivateError as exc:
        print(f"sdactivate: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. `gen-units --stdout | head`: the reader is gone
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no flush error
        return 1
    return status
