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
import logging
import os
import sys
from collections.abc import Sequence

from .. import __version__
from ..errors import AddressError, SdActivateError, UnitConfigError
from . import control, gen_units, run

__all__ = ["main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sdactivate",
        description="Zero-downtime restarts for Python services under systemd.",
    )
    parser.add_argument("--version", action="version", version=f"sdactivate {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    # One module per command group: ``register(subparsers)`` adds its commands, each with
    # ``func=<callable(args) -> int>``. They import what a command needs when it runs, so
    # `sdactivate --help` and every verb load only argparse and these three small modules.
    gen_units.register(sub)
    run.register(sub)
    control.register(sub)
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
