"""The systemd/Python releases the test matrix runs on, and their root file systems.

252 is the host itself (Debian 12: systemd 252, Python 3.11); every other release is a
Debian root file system that this module builds with `debootstrap --variant=minbase` plus
the packages the tests need, and that `Sandbox.boot(rootfs=...)` puts under its overlay.

Built trees are cached under $SDACTIVATE_ROOTFS_DIR (default /var/cache/sdactivate/rootfs,
never the host's /tmp, /var/tmp or /run), one directory per release and recipe hash:
`trixie-1a2b3c4d5e6f`. A tree is built beside its final path and renamed into place when
complete, so a killed build leaves no half tree under the final name; it is rebuilt only
when missing. Downloaded .deb files are kept in `debs/` beside the trees, so a rebuild
after a recipe change downloads almost nothing.

    python integration/releases.py build 257      # build (or find) trixie's tree, print it
    python integration/releases.py list           # the releases and their cache state
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from integration.sandbox import Sandbox

__all__ = [
    "HOST_SYSTEMD",
    "RELEASES",
    "Release",
    "RootfsBuildError",
    "UnknownReleaseError",
    "boot_release",
    "ensure_rootfs",
    "rootfs_cache_dir",
    "selected",
]

MIRROR = "http://deb.debian.org/debian"  # the host's mirror (/etc/apt/sources.list.d)
HOST_SYSTEMD = 252
ENV_SYSTEMD = "SDACTIVATE_SYSTEMD"
ENV_CACHE = "SDACTIVATE_ROOTFS_DIR"
MARKER = ".sdactivate-rootfs.json"  # written last into a complete tree

# What the tests use inside: the manager and its bus (the control tests and the user
# manager), the tools the integration tests call (ps, kill, ip), and the hermetic tier's
# test tools and oracles, all from the release's own archive (python3-systemd is
# libsystemd's own parser, built for that release: the conformance tests' oracle).
PACKAGES = (
    "systemd",
    "libpam-systemd",
    "dbus",
    "dbus-user-session",
    "python3",
    "python3-venv",  # the README's install (a venv) in the walkthrough test
    "procps",
    "curl",
    "iproute2",
    "util-linux",
    "wrk",
    "python3-pytest",
    "python3-hypothesis",
    "python3-systemd",
    "python3-dbus",
    "python3-gi",
    "gir1.2-glib-2.0",
    "python3-dbusmock",
    "python3-jeepney",
    "python3-waitress",
    "python3-uvicorn",
    "python3-hypercorn",
    "python3-gunicorn",
)


class UnknownReleaseError(ValueError):
    """A systemd version that the matrix has no release for."""


class RootfsBuildError(RuntimeError):
    """A root file system could not be built; the message says which step and why."""


@dataclass(frozen=True)
class Release:
    """One cell of the matrix: a systemd major version and the Python beside it.

    `suite` is None for the host itself. `pinned` packages come from `pin_suite` (an extra
    apt source, e.g. bookworm-backports) instead of `suite`; `apt_options` go to every apt
    call in the tree (and stay in its /etc/apt/apt.conf.d)."""

    systemd: int
    python: str
    suite: str | None
    pin_suite: str | None = None
    pinned: tuple[str, ...] = ()
    apt_options: tuple[str, ...] = ()
    packages: tuple[str, ...] = PACKAGES

    @property
    def name(self) -> str:
        if self.suite is None:
            return "host"
        return self.pin_suite or self.suite

    @property
    def is_host(self) -> bool:
        return self.suite is None

    def recipe_hash(self) -> str:
        """Hash of everything that shapes the tree: this recipe and the build steps."""
        blob = json.dumps(
            {"release": dataclasses.asdict(self), "steps": _CHROOT_STEPS, "mirror": MIRROR},
            sort_keys=True,
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


# systemd packages that must all come from the same source (they depend on each other's
# exact version): the ones a backport replaces.
_SYSTEMD_SET = ("systemd", "libsystemd0", "libsystemd-shared", "libpam-systemd", "libudev1")

RELEASES: dict[int, Release] = {
    252: Release(252, "3.11", suite=None),
    254: Release(
        254,
        "3.11",
        suite="bookworm",
        pin_suite="bookworm-backports",
        pinned=_SYSTEMD_SET,
    ),
    257: Release(257, "3.13", suite="trixie"),
    # sid's Release file on the mirror is past its Valid-Until date.
    262: Release(262, "3.14", suite="sid", apt_options=("Acquire::Check-Valid-Until=false",)),
}


def selected(environ: dict[str, str] | None = None) -> Release:
    """The release named by $SDACTIVATE_SYSTEMD (a systemd major version; default: the
    host's 252). UnknownReleaseError for a version the matrix does not have."""
    env = os.environ if environ is None else environ
    raw = env.get(ENV_SYSTEMD, "").strip() or str(HOST_SYSTEMD)
    return by_version(raw)


def by_version(raw: str | int) -> Release:
    try:
        return RELEASES[int(raw)]
    except (ValueError, KeyError):
        known = ", ".join(str(v) for v in RELEASES)
        raise UnknownReleaseError(
            f"{ENV_SYSTEMD}={raw!r}: no such release in the matrix; use one of {known}"
        ) from None


def boot_release(release: Release, *, timeout: float = 30) -> Sandbox:
    """Boot a sandbox of `release`: the host's root for 252, else its cached tree (built
    now if missing). AssertionError if the manager that comes up has another version."""
    rootfs = None if release.is_host else ensure_rootfs(release)
    box = Sandbox.boot(rootfs=rootfs, timeout=timeout)
    if box.systemd_version != release.systemd:
        box.close()
        raise AssertionError(
            f"release {release.name} booted systemd {box.systemd_version}, expected"
            f" {release.systemd} (rootfs {rootfs or '/'})"
        )
    return box


def rootfs_cache_dir(environ: dict[str, str] | None = None) -> Path:
    """Where trees are cached: $SDACTIVATE_ROOTFS_DIR or /var/cache/sdactivate/rootfs."""
    env = os.environ if environ is None else environ
    path = Path(env.get(ENV_CACHE) or "/var/cache/sdactivate/rootfs")
    for forbidden in ("/tmp", "/var/tmp", "/run"):
        if path == Path(forbidden) or Path(forbidden) in path.parents:
            raise RootfsBuildError(
                f"{ENV_CACHE}={str(path)!r} is under {forbidden}, which sandboxes must never"
                " see; choose a directory elsewhere (e.g. /var/cache/sdactivate/rootfs)"
            )
    return path


# Run (by /bin/sh) inside the half-built tree, in a private mount and pid namespace, after
# debootstrap: $PIN_SUITE/$PINNED/$PACKAGES/$APT_OPTS/$MIRROR/$SUITE come from the env.
# policy-rc.d keeps package scripts from starting services; the pid namespace ends any
# that start anyway when the step ends.
_CHROOT_STEPS = r"""
set -eu
export DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8 PATH=/usr/sbin:/usr/bin:/sbin:/bin
printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
chmod 755 /usr/sbin/policy-rc.d
: > /etc/apt/apt.conf.d/90sdactivate
for opt in $APT_OPTS; do
    printf '%s "%s";\n' "${opt%%=*}" "${opt#*=}" >> /etc/apt/apt.conf.d/90sdactivate
done
printf 'Acquire::Languages "none";\nAPT::Install-Recommends "false";\n' \
    >> /etc/apt/apt.conf.d/90sdactivate
printf 'deb %s %s main\n' "$MIRROR" "$SUITE" > /etc/apt/sources.list
if [ -n "$PIN_SUITE" ]; then
    printf 'deb %s %s main\n' "$MIRROR" "$PIN_SUITE" >> /etc/apt/sources.list
fi
apt-get -q update
pinned=""
for p in $PINNED; do pinned="$pinned $p/$PIN_SUITE"; done
apt-get -q -y install $PACKAGES $pinned
rm -f /usr/sbin/policy-rc.d
rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin
"""


def ensure_rootfs(
    release: Release,
    *,
    cache_dir: Path | None = None,
    log: Path | None = None,
) -> Path:
    """The release's root file system: the cached tree, or a new one built now.

    Builds under a lock (two test runs never build the same tree twice), into a directory
    beside the final one, renamed into place when complete. RootfsBuildError (with the
    failing step's output) if the build fails or yields another systemd or Python than the
    recipe says. Needs root and debootstrap (apt-get install debootstrap)."""
    if release.is_host:
        raise RootfsBuildError(f"systemd {release.systemd} is the host itself: no tree to build")
    root = cache_dir if cache_dir is not None else rootfs_cache_dir()
    final = root / f"{release.name}-{release.recipe_hash()}"
    if (final / MARKER).exists():
        return final
    if os.geteuid() != 0:
        raise RootfsBuildError(f"building {final} needs root (debootstrap, chroot)")
    if shutil.which("debootstrap") is None:
        raise RootfsBuildError("debootstrap not found: apt-get install debootstrap")
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f".{final.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another run may be building the same tree
        if (final / MARKER).exists():
            return final
        work = root / f".build-{os.getpid()}-{final.name}"
        log_path = log or root / f"{final.name}.log"
        # One build at a time: they share debs/ (apt's archive lock).
        with open(root / ".build.lock", "w") as build_lock:
            fcntl.flock(build_lock, fcntl.LOCK_EX)
            _remove_stale_builds(root)
            try:
                _build(release, work, debs=root / "debs", log_path=log_path)
                os.rename(work, final)
            except BaseException:
                _remove_tree(work)
                raise
    return final


def _build(release: Release, work: Path, *, debs: Path, log_path: Path) -> None:
    assert release.suite is not None
    debs.mkdir(parents=True, exist_ok=True)
    (debs / "partial").mkdir(exist_ok=True)
    started = time.monotonic()
    with open(log_path, "w") as log:
        # A private mount namespace: whatever debootstrap mounts inside (proc, sys) goes
        # away with it, even if it fails half-way.
        _step(
            "debootstrap",
            [
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "--",
                "debootstrap",
                "--variant=minbase",
                f"--cache-dir={debs}",
                release.suite,
                str(work),
                MIRROR,
            ],
            log,
        )
        boot_s = time.monotonic() - started
        archives = work / "var/cache/apt/archives"
        env = {
            "MIRROR": MIRROR,
            "SUITE": release.suite,
            "PIN_SUITE": release.pin_suite or "",
            "PINNED": " ".join(release.pinned),
            "PACKAGES": " ".join(release.packages),
            "APT_OPTS": " ".join(release.apt_options),
            "T": str(work),
            "DEBS": str(debs),
            "STEPS": _CHROOT_STEPS,
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        }
        mount_and_chroot = (
            'mount -t proc proc "$T/proc" && mount --bind "$DEBS" "$T/var/cache/apt/archives"'
            ' && exec chroot "$T" /bin/sh -c "$STEPS"'
        )
        archives.mkdir(parents=True, exist_ok=True)
        _step(
            "apt-get install",
            [
                "unshare",
                "--mount",
                "--pid",
                "--fork",
                "--kill-child=SIGKILL",
                "--propagation",
                "private",
                "--",
                "/bin/sh",
                "-c",
                mount_and_chroot,
            ],
            log,
            env=env,
        )
        systemd = _version(work, ["/lib/systemd/systemd", "--version"], r"^systemd (\d+)\b")
        python = _version(work, ["/usr/bin/python3", "--version"], r"^Python (\d+\.\d+)\.")
        if systemd != str(release.systemd) or python != release.python:
            raise RootfsBuildError(
                f"{release.name}: the tree has systemd {systemd} and Python {python}, the"
                f" recipe says systemd {release.systemd} and Python {release.python};"
                f" the archive moved on: update RELEASES in {__file__}"
            )
        seconds = time.monotonic() - started
        info = {
            "release": dataclasses.asdict(release),
            "systemd": systemd,
            "python": python,
            "debootstrap_seconds": round(boot_s, 1),
            "build_seconds": round(seconds, 1),
            "built": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        log.write(f"built in {seconds:.1f} s: {info}\n")
    (work / MARKER).write_text(json.dumps(info, indent=1) + "\n")


def _step(
    what: str, argv: Sequence[str], log: TextIO, *, env: dict[str, str] | None = None
) -> None:
    log.write(f"--- {what}: {' '.join(argv)}\n")
    log.flush()
    proc = subprocess.run(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env or {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8"},
        text=True,
        errors="replace",
        check=False,
    )
    log.write(proc.stdout)
    log.flush()
    if proc.returncode != 0:
        tail = "\n".join(proc.stdout.splitlines()[-40:])
        raise RootfsBuildError(f"{what} exited {proc.returncode}:\n{tail}")


def _version(tree: Path, argv: Sequence[str], pattern: str) -> str:
    proc = subprocess.run(["chroot", str(tree), *argv], capture_output=True, text=True, check=False)
    match = re.search(pattern, proc.stdout + proc.stderr, re.MULTILINE)
    if match is None:
        raise RootfsBuildError(f"{' '.join(argv)} in {tree}: {proc.stdout}{proc.stderr}")
    return match.group(1)


def _remove_stale_builds(root: Path) -> None:
    """Half-built trees of builds that were killed (their pid is gone)."""
    for path in root.glob(".build-*"):
        owner = path.name.split("-")[1]
        if owner.isdigit() and not os.path.exists(f"/proc/{owner}"):
            _remove_tree(path)


def _remove_tree(path: Path) -> None:
    """rm -rf that stays on this file system (a crashed step may leave a mount behind)."""
    if path.exists():
        subprocess.run(["rm", "-rf", "--one-file-system", "--", str(path)], check=False)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in ("build", "list"):
        print("usage: releases.py build VERSION... | list", file=sys.stderr)
        return 2
    if args[0] == "list":
        root = rootfs_cache_dir()
        for version, release in RELEASES.items():
            if release.is_host:
                print(f"{version}  Python {release.python}  the host")
                continue
            path = root / f"{release.name}-{release.recipe_hash()}"
            state = "cached" if (path / MARKER).exists() else "not built"
            print(f"{version}  Python {release.python}  {path}  {state}")
        return 0
    try:
        for raw in args[1:]:
            release = by_version(raw)
            if release.is_host:
                print(f"{release.systemd}: the host (no tree)")
                continue
            started = time.monotonic()
            path = ensure_rootfs(release)
            print(f"{release.systemd}: {path} ({time.monotonic() - started:.1f} s)", flush=True)
    except (RootfsBuildError, UnknownReleaseError) as exc:
        print(f"rootfs: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
