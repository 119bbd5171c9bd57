"""tools/import_cycles.py: which imports make a cycle, read from the source with ast."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import CHECKOUT

TOOL = str(Path(CHECKOUT) / "tools" / "import_cycles.py")


def _check(root: Path, files: dict[str, str]) -> subprocess.CompletedProcess[str]:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return subprocess.run(
        [sys.executable, TOOL, "--root", str(root), "pkg"],
        capture_output=True,
        text=True,
        timeout=60,
    )


CYCLES = {
    "top-level": {"pkg/a.py": "from . import b\n", "pkg/b.py": "from .a import x\n"},
    "in-a-function": {
        "pkg/a.py": "import pkg.b\n",
        "pkg/b.py": "def f():\n    from pkg import a\n",
    },
    "type-checking": {
        "pkg/a.py": "from .b import B\n",
        "pkg/b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .a import A\n",
    },
    "flat-script-import": {"pkg/a.py": "import b\n", "pkg/b.py": "from a import x\n"},
    "package-root": {
        "pkg/__init__.py": "from .sub import thing\n__version__ = '1'\n",
        "pkg/sub.py": "from . import __version__\n",
    },
    "import-module-literal": {
        "pkg/a.py": "import importlib\nimportlib.import_module('pkg.b')\n",
        "pkg/b.py": "import pkg.a\n",
    },
    "lazy-submodules": {
        "pkg/__init__.py": (
            "from importlib import import_module\n__all__ = ['sub']\n"
            "def __getattr__(name):\n    return import_module(f'{__name__}.{name}')\n"
        ),
        "pkg/sub.py": "from pkg import x\n",
    },
}


@pytest.mark.parametrize("files", CYCLES.values(), ids=CYCLES.keys())
def test_a_cycle_fails_with_its_chain(tmp_path: Path, files: dict[str, str]) -> None:
    """Each kind of import counts: the run fails and names the modules with file:line."""
    proc = _check(tmp_path, files)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "import cycle among" in proc.stderr
    assert ".py:" in proc.stderr


ACYCLIC = {
    "one-way": {"pkg/a.py": "from . import b\n", "pkg/b.py": "import os\n"},
    "parent-package-is-no-edge": {
        "pkg/__init__.py": "from .sub import thing\n",
        "pkg/sub.py": "from . import other\n",
        "pkg/other.py": "",
    },
    "lazy-name-not-listed": {
        "pkg/__init__.py": (
            "from importlib import import_module\n__all__ = ['sub']\n"
            "def __getattr__(name):\n    return import_module(f'{__name__}.{name}')\n"
        ),
        "pkg/sub.py": "",
        "pkg/cli.py": "from pkg import x\n",
    },
}


@pytest.mark.parametrize("files", ACYCLIC.values(), ids=ACYCLIC.keys())
def test_no_cycle_passes(tmp_path: Path, files: dict[str, str]) -> None:
    """Imports that go one way, and the parents Python initialises on the way, pass."""
    proc = _check(tmp_path, files)
    assert proc.returncode == 0, proc.stderr
    assert "no cycle" in proc.stdout


def test_an_unreadable_computed_import_fails(tmp_path: Path) -> None:
    """An import_module by a name the source does not spell out cannot be checked: it fails."""
    proc = _check(
        tmp_path, {"pkg/a.py": "import importlib, os\nimportlib.import_module(os.environ['M'])\n"}
    )
    assert proc.returncode == 1
    assert "pkg/a.py:2: import by a computed name" in proc.stderr
