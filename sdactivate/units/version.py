"""The target systemd version: detection, and which directives it understands.

systemd does not fail on settings it does not know: unknown keys are logged and ignored
(conf-parser.c, 252), and an unknown ``Type=`` value is ignored too, so ``Type=notify-reload``
on 252 silently runs as ``Type=simple`` (load-fragment.c). The renderer therefore asks
:func:`check_supported` about every line it writes.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable, Sequence

from ..errors import UnitConfigError

__all__ = [
    "MIN_VERSION",
    "NOTIFY_RELOAD",
    "STORE_PRESERVE",
    "check_supported",
    "default_backlog",
    "detect_version",
    "parse_version",
    "preserve_outlives_unload",
    "supported",
]

# Oldest target we render for: Ubuntu 20.04 ships 245 (ProtectClock= is v245).
MIN_VERSION = 245

# First systemd release that understands KEY (or KEY=VALUE). Sources: the "Added in version"
# notes of systemd.exec(5)/systemd.service(5)/systemd.socket(5) and the release notes (NEWS).
# Keys not listed are older than MIN_VERSION.
SINCE: dict[str, int] = {
    "ProtectKernelLogs": 244,
    "ProtectClock": 245,
    "ProtectProc": 247,  # systemd.exec(5): since 247
    "ProcSubset": 247,
    "FlushPending": 247,  # systemd.socket(5)
    "RestrictFileSystems": 249,
    "PrivateIPC": 248,
    "Type=notify-reload": 253,  # systemd.service(5); 252 runs it as simple, silently
    "ReloadSignal": 253,
    "OpenFile": 253,
    "FileDescriptorStorePreserve": 254,
    "RestartMode": 254,
    "RestartSteps": 254,
    "RestartMaxDelaySec": 254,
    "PollLimitIntervalSec": 255,  # systemd.socket(5)
    "PollLimitBurst": 255,
    "PassFileDescriptorsToExec": 256,
}

# The generator's feature gates, named (every gate is shown on both sides by the tests).
NOTIFY_RELOAD = SINCE["Type=notify-reload"]  # 253: ReloadSignal= + RELOADING=1/MONOTONIC_USEC
STORE_PRESERVE = SINCE["FileDescriptorStorePreserve"]  # 254
# FileDescriptorStorePreserve=yes keeps the store "until the unit is removed from memory"
# (systemd.service(5) v254). Measured (integration/test_fdstore_e2e.py): 254 and 257 unload
# a stopped unit that nothing references, store and all; 262 keeps it. 258-261 were not
# measured and get the conservative text.
_PRESERVE_OUTLIVES_UNLOAD = 262


def supported(key: str, value: str, version: int) -> bool:
    """Whether systemd ``version`` understands ``key=value``."""
    since = max(SINCE.get(key, 0), SINCE.get(f"{key}={value}", 0))
    return version >= since


def check_supported(key: str, value: str, version: int) -> None:
    """Raise :class:`UnitConfigError` if ``version`` lacks ``key=value``."""
    if not supported(key, value, version):
        since = max(SINCE.get(key, 0), SINCE.get(f"{key}={value}", 0))
        raise UnitConfigError(
            f"{key}={value} needs systemd {since}+, the target is {version} "
            "(it would be ignored or misread there)"
        )


def default_backlog(version: int) -> int | None:
    """systemd.socket(5) ``Backlog=`` default: SOMAXCONN (128) up to 253; from 254 on
    UINT_MAX capped by net.core.somaxconn, which needs no explicit setting (None)."""
    return 128 if version < 254 else None


def preserve_outlives_unload(version: int) -> bool:
    """Whether ``FileDescriptorStorePreserve=yes`` keeps the fd store of a stopped unit that
    nothing references (True from 262 on, as measured); below, only while it stays loaded."""
    return version >= _PRESERVE_OUTLIVES_UNLOAD


def parse_version(text: str) -> int:
    """``252`` / ``v252`` / ``systemd 252 (252.39-1~deb12u1)`` -> 252; refuses < MIN_VERSION."""
    match = re.match(r"(?:systemd\s+)?v?(\d+)(?:[.\s~(+-].*)?\Z", text.strip(), re.S)
    if not match:
        raise UnitConfigError(f"invalid systemd version {text!r} (expected a number like 252)")
    version = int(match.group(1))
    if version < MIN_VERSION:
        raise UnitConfigError(f"systemd {version} is too old: sdactivate targets {MIN_VERSION}+")
    return version


Runner = Callable[[Sequence[str]], str]


def _run_systemctl(argv: Sequence[str]) -> str:
    return subprocess.run(list(argv), check=True, capture_output=True, text=True, timeout=10).stdout


def detect_version(*, run: Runner = _run_systemctl) -> int:
    """The local systemd's version from the first line of ``systemctl --version``."""
    try:
        output = run(["systemctl", "--version"])
    except (OSError, subprocess.SubprocessError) as exc:
        raise UnitConfigError(
            f"cannot detect the systemd version ({exc}); pass --systemd-version N"
        ) from exc
    first = output.splitlines()[0] if output else ""
    return parse_version(first)
