"""Packaging: what the wheel and the sdist hold, built offline from a copy of this tree.

The wheel is the library only (with ``py.typed`` and the license); the sdist holds what its own
tests need (tests/, integration/, examples/, bench/ without its results, units/, tools/, the
Makefile and requirements-dev.txt), so ``make test`` runs from it unpacked.
"""

from __future__ import annotations

import email
import importlib.util
import shutil
import subprocess
import sys
import tarfile
import zipfile
from email.message import Message
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NAME = "sdactivate"
# What the sdist carries besides the package, and what it leaves out.
SDIST_DIRS = ("tests", "integration", "examples", "bench", "units", "tools")
SDIST_FILES = ("LICENSE", "README.md", "pyproject.toml", "Makefile", "requirements-dev.txt")
LEFT_OUT = ("bench/results",)
_JUNK = ("__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache", ".hypothesis")


def _tree_files(top: Path) -> set[str]:
    return {
        str(p.relative_to(top))
        for p in top.rglob("*")
        if p.is_file() and not any(part in _JUNK or part.endswith(".pyc") for part in p.parts)
    }


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(source copy, sdist, wheel): ``python -m build`` makes the sdist, then the wheel from
    the unpacked sdist, so a file the sdist lacks also breaks the wheel."""
    if importlib.util.find_spec("build") is None:
        pytest.skip("the build package is not installed (pip install -r requirements-dev.txt)")
    base = tmp_path_factory.mktemp("packaging")
    src = base / "src"
    keep = {*SDIST_DIRS, *SDIST_FILES, NAME, "MANIFEST.in"}
    for entry in ROOT.iterdir():
        if entry.name not in keep:
            continue
        if entry.is_dir():
            shutil.copytree(entry, src / entry.name, ignore=shutil.ignore_patterns(*_JUNK))
        else:
            shutil.copy2(entry, src / entry.name)
    out = base / "dist"
    proc = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(src)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (sdist,) = out.glob("*.tar.gz")
    (wheel,) = out.glob("*.whl")
    return src, sdist, wheel


def _wheel_metadata(wheel: Path) -> Message:
    with zipfile.ZipFile(wheel) as zf:
        (meta,) = (n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        return email.message_from_bytes(zf.read(meta))


def test_wheel_is_the_library_with_its_license_and_types(built: tuple[Path, Path, Path]) -> None:
    """The wheel holds sdactivate/ (with py.typed) and its dist-info (with LICENSE); no tests,
    examples or tools."""
    src, _, wheel = built
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
    dist_info = {n for n in names if n.split("/")[0].endswith(".dist-info")}
    assert {n.split("/")[0] for n in names - dist_info} == {NAME}
    assert f"{NAME}/py.typed" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in dist_info)
    package = {f"{NAME}/{p}" for p in _tree_files(src / NAME)}
    assert names - dist_info == package


def test_wheel_metadata(built: tuple[Path, Path, Path]) -> None:
    """jeepney is a plain dependency (every CLI verb works after `pip install`), `[control]`
    still resolves, the license is the SPDX expression, and the classifiers say Linux, typed."""
    meta = _wheel_metadata(built[2])
    assert meta.get_all("Requires-Dist") == ["jeepney>=0.8"]
    assert meta.get_all("Provides-Extra") == ["control"]
    assert meta["License-Expression"] == "MIT"
    assert not any(c.startswith("License ::") for c in meta.get_all("Classifier", []))
    for classifier in ("Operating System :: POSIX :: Linux", "Typing :: Typed"):
        assert classifier in meta.get_all("Classifier", [])
    assert meta["Requires-Python"] == ">=3.11"


def test_sdist_holds_what_its_tests_need(built: tuple[Path, Path, Path]) -> None:
    """Every file of tests/, integration/, examples/, bench/, units/ and tools/, the package,
    LICENSE, README, Makefile and requirements-dev.txt are in the sdist; bench/results is not."""
    src, sdist, _ = built
    with tarfile.open(sdist) as tf:
        members = {m.name.split("/", 1)[1] for m in tf.getmembers() if m.isfile()}
    wanted = {f"{top}/{p}" for top in (*SDIST_DIRS, NAME) for p in _tree_files(src / top)} | set(
        SDIST_FILES
    )
    wanted = {p for p in wanted if not p.startswith(LEFT_OUT)}
    assert wanted - members == set()
    assert not [m for m in members if m.startswith(LEFT_OUT)]


def test_import_uses_only_the_standard_library() -> None:
    """`import sdactivate` imports no third-party module (jeepney is a dependency, but only
    the D-Bus commands import it). What site and .pth files import at start-up is not
    counted."""
    code = (
        "import sys; before = set(sys.modules); import sdactivate;"
        "new = {m.split('.')[0] for m in set(sys.modules) - before};"
        "print(sorted(new - set(sys.stdlib_module_names) - {'sdactivate'}))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=True,
    )
    assert proc.stdout.strip() == "[]"
