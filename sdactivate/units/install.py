"""Write generated units to disk (atomically) and optionally install them with systemctl.

The I/O shell around :func:`build.build`. Nothing is written unless every file can be:
an existing file with different content is refused unless ``force=True``.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from .. import _env
from ..errors import ControlError, UnitConfigError

__all__ = ["install", "unit_directory", "write_files"]

Runner = Callable[[Sequence[str]], None]


def unit_directory(*, user: bool, environ: _env.Environ | None = None) -> Path:
    """Where ``--install`` writes: systemd.unit(5) unit load path, admin-owned part."""
    if not user:
        return Path("/etc/systemd/system")
    env = _env.resolve(environ)
    config = env.get("XDG_CONFIG_HOME") or os.path.join(env.get("HOME") or "", ".config")
    if not os.path.isabs(config):
        raise UnitConfigError("cannot find the user unit directory: set HOME or XDG_CONFIG_HOME")
    return Path(config) / "systemd" / "user"


def plan(files: Mapping[str, str], directory: Path, *, force: bool) -> dict[str, str]:
    """``{filename: "create"|"update"|"unchanged"}``; raises before anything is written."""
    actions: dict[str, str] = {}
    for name, text in files.items():
        if os.sep in name or name.startswith("."):
            raise UnitConfigError(f"refusing to write {name!r}: not a plain file name")
        path = directory / name
        try:
            current = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            actions[name] = "create"
            continue
        except (OSError, UnicodeDecodeError) as exc:
            raise UnitConfigError(f"cannot read existing {str(path)!r}: {exc}") from exc
        if current == text:
            actions[name] = "unchanged"
        elif force:
            actions[name] = "update"
        else:
            raise UnitConfigError(
                f"{str(path)!r} exists and differs from the generated unit; "
                "pass --force to overwrite it (preview with --stdout)"
            )
    return actions


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_files(files: Mapping[str, str], directory: Path, *, force: bool) -> dict[str, str]:
    """Write ``files`` into ``directory`` (created if missing), each atomically
    (temp file + fsync + ``os.replace``). Returns :func:`plan`'s actions."""
    if not directory.is_dir():
        if directory.exists():
            raise UnitConfigError(f"{str(directory)!r} is not a directory")
        directory.mkdir(parents=True, mode=0o755)
    actions = plan(files, directory, force=force)
    for name, action in actions.items():
        if action != "unchanged":
            _write_atomic(directory / name, files[name])
    return actions


def _systemctl(argv: Sequence[str]) -> None:
    try:
        subprocess.run(list(argv), check=True, timeout=120)
    except (OSError, subprocess.SubprocessError) as exc:
        raise ControlError(f"{' '.join(argv)} failed: {exc}") from exc


def install(
    files: Mapping[str, str],
    *,
    user: bool,
    force: bool,
    now: bool,
    directory: Path | None = None,
    run: Runner = _systemctl,
) -> dict[str, str]:
    """Write ``files`` to the unit directory, ``daemon-reload``, enable (``now``: and start)
    the socket units (no socket unit: the service). Returns the per-file actions."""
    target = directory if directory is not None else unit_directory(user=user)
    actions = write_files(files, target, force=force)
    systemctl = ["systemctl", "--user"] if user else ["systemctl"]
    run([*systemctl, "daemon-reload"])
    # the sockets start their services; an fd-store-only service has none and is enabled
    # itself (templates are never enabled: their instances are per connection)
    sockets = [name for name in files if name.endswith(".socket")]
    enable = sockets or [n for n in files if n.endswith(".service") and "@." not in n]
    run([*systemctl, "enable", *(["--now"] if now else []), *enable])
    return actions
