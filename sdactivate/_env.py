"""The one module that reads the process environment and pid by default.

Everything else takes ``environ`` / ``pid`` parameters and falls back to these,
so tests pass plain dicts and fake pids instead of patching globals.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, MutableMapping

__all__ = ["Environ", "getpid", "process_environ", "resolve"]

Environ = Mapping[str, str]


def process_environ() -> MutableMapping[str, str]:
    """The live process environment (``os.environ``)."""
    return os.environ


def getpid() -> int:
    return os.getpid()


def resolve(environ: Environ | None) -> Environ:
    """``environ`` if given, else the live process environment."""
    return os.environ if environ is None else environ
