"""Write generated units to disk (atomically) and optionally install them with systemctl.

The I/O shell around :func:`build.build`. Nothing is written unless every file can be:
an existing file with different content is refused unless ``force=True``.
"""

from __future__ import annotations

import errno
import os
import subprocess
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from .. import _env
from ..errors import ControlError, InstallError, UnitConfigError

__all__ = ["SYSTEM_DIRECTORY", "install", "unit_directory", "write_files"]

Runner = Callable[[Sequence[str]], None]

SYSTEM_DIRECTORY = Path("/etc/systemd/system")  # systemd.unit(5): the admin's unit directory
_DENIED = (errno.EACCES, errno.EPERM)
_SYSTEM_DENIED_HINT = (
    "writing there needs root: run it with sudo, or use --user for your own user units,"
    " or --output DIR to write the files elsewhere"
)


def unit_directory(
    *,
    user: bool,
    environ: _env.Environ | None = None,
    is_dir: Callable[[str], bool] = os.path.isdir,
) -> Path:
    """Where ``--install`` writes: systemd.unit(5) unit load path, admin-owned part
    (``--user``: ``$XDG_CONFIG_HOME/systemd/user``, else ``~/.config/systemd/user``).

    Raises :class:`InstallError` for a user without a home: ``HOME`` unset, relative or
    not an existing directory, and no absolute ``XDG_CONFIG_HOME`` (a relative one is
    ignored, as the XDG Base Directory spec says).
    """
    if not user:
        return SYSTEM_DIRECTORY
    env = _env.resolve(environ)
    xdg = env.get("XDG_CONFIG_HOME") or ""
    if os.path.isabs(xdg):
        return Path(xdg) / "systemd" / "user"
    home = env.get("HOME") or ""
    if not os.path.isabs(home) or not is_dir(home):
        why = "HOME is not set" if not home else f"HOME={home!r} is not an existing directory"
        raise InstallError(
            f"--install --user: {why}, so there is no ~/.config/systemd/user; run it as a"
            " user with a home directory, or write the files with --output DIR"
        )
    return Path(home) / ".config" / "systemd" / "user"


def _os_error(action: str, path: Path, exc: OSError, denied_hint: str) -> InstallError:
    why = exc.strerror or str(exc)
    hint = ""
    if exc.errno in _DENIED:
        hint = f"; {denied_hint}"
    elif exc.errno == errno.EROFS:
        hint = "; pick a writable directory with --output DIR"
    elif exc.errno in (errno.ENOENT, errno.ENOTDIR):
        hint = "; a parent is missing or is not a directory"
    return InstallError(f"cannot {action} {str(path)!r}: {why}{hint}")


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
        except OSError as exc:
            raise InstallError(f"cannot read existing {str(path)!r}: {exc.strerror}") from exc
        except UnicodeDecodeError as exc:
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


def write_files(
    files: Mapping[str, str],
    directory: Path,
    *,
    force: bool,
    denied_hint: str = "run it as a user who may write there, or pick another --output DIR",
) -> dict[str, str]:
    """Write ``files`` into ``directory`` (created if missing), each atomically
    (temp file + fsync + ``os.replace``). Returns :func:`plan`'s actions.

    Raises :class:`UnitConfigError` when ``directory`` is not a directory or a file exists
    and differs (without ``force``), :class:`InstallError` when the system refuses (no
    permission, a read-only file system, a missing parent): ``denied_hint`` ends the
    message for a permission error.
    """
    try:
        exists = directory.exists()
        if exists and not directory.is_dir():
            raise UnitConfigError(f"{str(directory)!r} is not a directory")
    except OSError as exc:  # e.g. a parent we may not search
        raise _os_error("use", directory, exc, denied_hint) from exc
    if not exists:
        try:
            directory.mkdir(parents=True, mode=0o755)
        except OSError as exc:
            raise _os_error("create directory", directory, exc, denied_hint) from exc
    actions = plan(files, directory, force=force)
    for name, action in actions.items():
        if action != "unchanged":
            try:
                _write_atomic(directory / name, files[name])
            except OSError as exc:
                raise _os_error("write", directory / name, exc, denied_hint) from exc
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
    environ: _env.Environ | None = None,
) -> dict[str, str]:
    """Write ``files`` to the unit directory, ``daemon-reload``, enable (``now``: and start)
    the socket units (no socket unit: the service). Returns the per-file actions.

    Checks before writing that a ``user`` install has a home and a user manager to talk to
    (:class:`InstallError`); see :func:`write_files` for what else it raises."""
    env = _env.resolve(environ)
    target = directory if directory is not None else unit_directory(user=user, environ=env)
    if user and not (env.get("DBUS_SESSION_BUS_ADDRESS") or env.get("XDG_RUNTIME_DIR")):
        # systemctl --user reaches the manager at $XDG_RUNTIME_DIR/systemd/private or on
        # the session bus (sd_bus_open_user(3)); without either it fails after the write
        raise InstallError(
            "--install --user: XDG_RUNTIME_DIR is not set, so systemctl --user cannot reach"
            " your user manager; run it in a login session of that user (e.g. `machinectl"
            " shell USER@`), or write the files with --output DIR"
        )
    hint = (
        _SYSTEM_DENIED_HINT
        if target == SYSTEM_DIRECTORY
        else "run it as that user, or write the files with --output DIR"
    )
    actions = write_files(files, target, force=force, denied_hint=hint)
    systemctl = ["systemctl", "--user"] if user else ["systemctl"]
    run([*systemctl, "daemon-reload"])
    # the sockets start their services; an fd-store-only service has none and is enabled
    # itself (templates are never enabled: their instances are per connection)
    sockets = [name for name in files if name.endswith(".socket")]
    enable = sockets or [n for n in files if n.endswith(".service") and "@." not in n]
    run([*systemctl, "enable", *(["--now"] if now else []), *enable])
    return actions
