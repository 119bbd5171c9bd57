"""What the hermetic and integration tests share: where the checkout is, child environments.

The checkout root is the one import root of the project: `sdactivate`, `bench`, `examples`,
`integration` and `tests` are packages in it. pytest puts it on sys.path (pyproject
`[tool.pytest.ini_options] pythonpath`); a child interpreter gets it as PYTHONPATH
(:func:`checkout_env`), whatever site-packages that interpreter has.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

CHECKOUT = str(Path(__file__).resolve().parent.parent)


def checkout_env(env: Mapping[str, str] | None = None, **extra: str) -> dict[str, str]:
    """`env` (default: this process's environment) plus `extra`, with the checkout as
    PYTHONPATH: a child interpreter imports this checkout's packages (not an installed copy)."""
    return {**(os.environ if env is None else env), **extra, "PYTHONPATH": CHECKOUT}
