"""The matrix's releases: selection by $SDACTIVATE_SYSTEMD, the cache's place and key, and
the tree under test really holding the release's systemd and Python."""

from __future__ import annotations

import dataclasses
import json
import subprocess

import pytest

from integration.releases import (
    MARKER,
    RELEASES,
    Release,
    RootfsBuildError,
    UnknownReleaseError,
    ensure_rootfs,
    rootfs_cache_dir,
    selected,
)


def test_selected_release_by_environment() -> None:
    """No variable: the host's 252; a listed version: its release; anything else: an error
    naming the value and the versions there are."""
    assert selected({}).is_host and selected({}).systemd == 252
    assert (selected({"SDACTIVATE_SYSTEMD": "257"}).python, selected({}).python) == ("3.13", "3.11")
    for bad in ("255", "trixie", "25 7"):
        with pytest.raises(UnknownReleaseError, match=rf"{bad!r}.*252, 254, 257, 262"):
            selected({"SDACTIVATE_SYSTEMD": bad})


@pytest.mark.parametrize("path", ["/tmp", "/tmp/rootfs", "/var/tmp/x", "/run/sdactivate"])
def test_cache_never_under_tmp_or_run(path: str) -> None:
    """A cache the sandboxes would see as their own /tmp, /var/tmp or /run is refused."""
    with pytest.raises(RootfsBuildError, match="never"):
        rootfs_cache_dir({"SDACTIVATE_ROOTFS_DIR": path})
    assert str(rootfs_cache_dir({})) == "/var/cache/sdactivate/rootfs"


def test_recipe_hash_follows_the_recipe() -> None:
    """Another package list or suite is another tree; the same recipe, the same one."""
    trixie = RELEASES[257]
    assert trixie.recipe_hash() == Release(257, "3.13", suite="trixie").recipe_hash()
    changed = [
        dataclasses.replace(trixie, packages=(*trixie.packages, "strace")),
        dataclasses.replace(trixie, suite="forky"),
        dataclasses.replace(trixie, apt_options=("Acquire::Check-Valid-Until=false",)),
    ]
    assert len({trixie.recipe_hash(), *(r.recipe_hash() for r in changed)}) == 4


def test_tree_under_test_has_its_versions(release: Release) -> None:
    """The cached tree of the release under test holds the systemd and Python its recipe
    names (checked when it was built; a moved archive fails the build instead)."""
    if release.is_host:
        systemd = subprocess.run(["/lib/systemd/systemd", "--version"], capture_output=True)
        python = subprocess.run(["/usr/bin/python3", "--version"], capture_output=True)
        minor = python.stdout.split()[1].decode().rsplit(".", 1)[0]  # "Python 3.11.2"
        found = (systemd.stdout.split()[1].decode(), minor)
    else:
        info = json.loads((ensure_rootfs(release) / MARKER).read_text())
        found = (info["systemd"], info["python"])
    assert found == (str(release.systemd), release.python)
