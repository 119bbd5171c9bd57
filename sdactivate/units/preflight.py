"""Checks a generated service against this machine before anything is written.

A unit can be valid text and still fail on its first start: the program is missing or not
executable, a relative script resolves against ``/``, the script sits under ``/home`` or
``/tmp`` that the unit's own ``ProtectHome=``/``PrivateTmp=`` hide, or the service's dynamic
user (``DynamicUser=yes``: a fresh uid, no supplementary groups) may not enter a directory
on the way. :func:`check` finds these from the options alone, reading the file system
through a :class:`HostView` (injected in tests), and raises :class:`PreflightError` naming
the first problem and its fix. Checked, for the app and, with ``--supervise``, the
supervisor's interpreter:

* the program (``ExecStart=``'s argv[0], symlinks followed): exists, is a regular file the
  service's user may execute (and read, for a ``#!`` script, whose interpreter is checked
  too); a venv interpreter's ``pyvenv.cfg`` and ``site-packages`` are readable;
* for a Python interpreter, the script argument: exists and is readable;
* ``--working-dir``: exists, is a directory the service's user may enter;
* each directory on the way: not hidden, and enterable (``x``) by the service's user.
* ``--socket-user``/``--socket-group``: the user and group exist here (systemd resolves them
  through NSS when it sets up the socket, numbers too, and fails the socket unit if not).

Permissions are read from the mode bits (owner, group, other) as the kernel checks them
for the user the service runs as; ACLs are not read. ``ProtectSystem=`` only makes paths
read-only, never hides them, so it needs no check here. Paths this process may not look at
(``EACCES`` on ``lstat``) are skipped, not refused. Built for another host, a unit needs
none of this: ``gen-units --no-preflight``.
"""

from __future__ import annotations

import grp
import os
import posixpath
import pwd
import re
import stat
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Protocol

from ..errors import UnitConfigError
from . import hardening
from .options import Options

__all__ = [
    "HostView",
    "LocalHost",
    "Node",
    "PreflightError",
    "RunsAs",
    "account_exists",
    "check",
    "check_relative_script",
    "python_script",
]

_SYMLINK_MAX = 40  # path_resolution(7): ELOOP after 40 links
_MOVE = "move it (e.g. to /srv or /opt)"
# systemd.exec(5) ProtectHome=yes|tmpfs: /home, /root and /run/user are empty and inaccessible
_HOME_DIRS = ("/home", "/root", "/run/user")
# systemd.exec(5) PrivateTmp=yes: a private, empty /tmp and /var/tmp
_TMP_DIRS = ("/tmp", "/var/tmp")
_PYTHON = re.compile(r"(?:python|pypy)(?:\d+(?:\.\d+)?)?\Z")
# CPython options that take a value (python(1)); -c/-m end the options and there is no script
_PYTHON_VALUE_FLAGS = frozenset("WX")
_PYTHON_LONG_WITH_VALUE = frozenset({"--check-hash-based-pycs"})


class PreflightError(UnitConfigError):
    """The unit would fail on this machine (a missing program, a path its sandbox hides, a
    file its user may not read); the message names the path and the fix."""


@dataclass(frozen=True)
class Node:
    """What ``lstat(2)`` says about a path: mode, owner, and a symlink's target."""

    mode: int
    uid: int = 0
    gid: int = 0
    target: str | None = None  # readlink(2), for symlinks


class HostView(Protocol):
    """The file system as this machine sees it (tests pass a dict-backed fake)."""

    def lstat(self, path: str) -> Node | None:
        """None if ``path`` does not exist; raises ``PermissionError`` if it cannot tell."""

    def head(self, path: str, size: int) -> bytes:
        """The first ``size`` bytes of a file (``b""`` if unreadable)."""

    def cwd(self) -> str:
        """The current directory (to suggest an absolute path for a relative script)."""


class LocalHost:
    """:class:`HostView` of this machine."""

    def lstat(self, path: str) -> Node | None:
        try:
            st = os.lstat(path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        target = os.readlink(path) if stat.S_ISLNK(st.st_mode) else None
        return Node(st.st_mode, st.st_uid, st.st_gid, target)

    def head(self, path: str, size: int) -> bytes:
        try:
            with open(path, "rb") as handle:
                return handle.read(size)
        except OSError:
            return b""

    def cwd(self) -> str:
        try:
            return os.getcwd()
        except OSError:
            return "/"


@dataclass(frozen=True)
class RunsAs:
    """Who the service runs as, for permission checks: ``uid=None`` is a dynamic user
    (owns no file, in no file's group), ``uid=0`` root."""

    uid: int | None
    gids: frozenset[int]
    label: str


DYNAMIC_USER = RunsAs(None, frozenset(), "the service's dynamic user (DynamicUser=yes)")
ROOT = RunsAs(0, frozenset(), "root")


def _this_user() -> RunsAs:
    return RunsAs(os.getuid(), frozenset({os.getgid(), *os.getgroups()}), "your user")


@dataclass(frozen=True)
class _Sandbox:
    runs_as: RunsAs
    hidden: tuple[tuple[str, str, bool], ...]  # (directory, why, the directory itself too)
    level: hardening.Level


class _Problem(Exception):
    """One finding, before the fix's alternatives are known."""

    def __init__(self, message: str, *, sandbox_fix: bool = False) -> None:
        super().__init__(message)
        self.message = message
        # hidden by the sandbox: a weaker --hardening may help (a permission problem is
        # fixed with chmod, not by running the service as root)
        self.sandbox_fix = sandbox_fix


class _CannotTell(Exception):
    """This process may not look at a path: skip the item."""


def _sandbox(options: Options, me: RunsAs) -> _Sandbox:
    knobs = {
        key: value
        for key, value, _ in hardening.knobs(
            options.hardening,
            user=options.user,
            network=options.network,
            version=options.systemd_version,
        )
    }
    dynamic = knobs.get("DynamicUser") == "yes"
    runs_as = me if options.user else DYNAMIC_USER if dynamic else ROOT
    hidden: list[tuple[str, str, bool]] = []
    protect_home = knobs.get("ProtectHome", "read-only" if dynamic else "no")
    if protect_home in ("yes", "tmpfs"):
        why = f"ProtectHome={protect_home} hides from the service"
        hidden += [(d, why, True) for d in _HOME_DIRS]
    # systemd.exec(5): DynamicUser=yes implies PrivateTmp=yes
    if knobs.get("PrivateTmp") == "yes" or dynamic:
        why = "PrivateTmp=yes replaces with an empty directory for the service"
        hidden += [(d, why, False) for d in _TMP_DIRS]
    return _Sandbox(runs_as, tuple(hidden), options.hardening)


def _allowed(node: Node, who: RunsAs, want: int) -> bool:
    """``want`` (4 r, 2 w, 1 x) granted by ``node``'s mode bits to ``who`` (inode_permission)."""
    if who.uid == 0:  # capabilities(7): root passes, except exec needs some x bit
        return not (want & 1) or stat.S_ISDIR(node.mode) or bool(node.mode & 0o111)
    if who.uid is not None and who.uid == node.uid:
        bits = node.mode >> 6
    elif node.gid in who.gids:
        bits = node.mode >> 3
    else:
        bits = node.mode
    return bits & want == want


def _mode(node: Node) -> str:
    return f"mode {stat.S_IMODE(node.mode):04o}"


def _resolve(path: str, host: HostView, box: _Sandbox) -> tuple[str, Node]:
    """Follow ``path`` one component at a time as the service would: every directory
    passed must be visible in the sandbox and enterable by the service's user. Returns
    the final path (symlinks resolved) and its node; raises :class:`_Problem`."""
    who = box.runs_as
    pending = [part for part in path.split("/") if part]
    current = "/"
    node = _lstat(host, current)
    if node is None:
        raise _CannotTell(current)
    links = 0
    while pending:
        _enter(current, node, who, path)
        name = pending.pop(0)
        if name == ".":
            continue
        if name == "..":
            current = posixpath.dirname(current)
            node = _lstat(host, current)
            if node is None:
                raise _CannotTell(current)
            continue
        nxt = posixpath.join(current, name)
        for directory, why, itself in box.hidden:
            if nxt.startswith(directory + "/") or (itself and nxt == directory):
                direct = path == nxt or path.startswith(nxt + "/")
                shown = repr(path) if direct else f"{path!r} -> {posixpath.join(nxt, *pending)!r}"
                raise _Problem(
                    f"{shown} is under {directory}, which {why}; {_MOVE}", sandbox_fix=True
                )
        found = _lstat(host, nxt)
        if found is None:
            where = "" if nxt == posixpath.normpath(path) else f" ({nxt!r} is missing)"
            raise _Problem(
                f"{path!r} does not exist on this machine{where}; fix the path, or pass"
                " --no-preflight if the unit is for another host"
            )
        if found.target is not None:
            links += 1
            if links > _SYMLINK_MAX:
                raise _Problem(f"{path!r}: too many levels of symbolic links")
            if found.target.startswith("/"):
                current = "/"
                node = _lstat(host, current)
            pending[:0] = [part for part in found.target.split("/") if part]
            continue
        if pending and not stat.S_ISDIR(found.mode):
            raise _Problem(f"{path!r} does not exist ({nxt!r} is not a directory)")
        current, node = nxt, found
    assert node is not None
    return current, node


def _lstat(host: HostView, path: str) -> Node | None:
    try:
        return host.lstat(path)
    except PermissionError as exc:
        raise _CannotTell(path) from exc


def _enter(directory: str, node: Node | None, who: RunsAs, path: str) -> None:
    if node is not None and stat.S_ISDIR(node.mode) and not _allowed(node, who, 1):
        home = any(directory == h or directory.startswith(h + "/") for h in _HOME_DIRS)
        raise _Problem(
            f"{path!r}: {who.label} cannot enter {directory!r} ({_mode(node)}); "
            f"chmod o+x {directory!r}" + (f", or {_MOVE}" if home else "")
        )


def _program(path: str, host: HostView, box: _Sandbox, *, interpreter: bool = True) -> None:
    """An executable file the service's user may run; a ``#!`` script's interpreter too;
    a venv interpreter's pyvenv.cfg and site-packages readable."""
    final, node = _resolve(path, host, box)
    who = box.runs_as
    if not stat.S_ISREG(node.mode):
        raise _Problem(f"{path!r} is not a regular file")
    if not node.mode & 0o111:
        raise _Problem(f"{path!r} is not executable ({_mode(node)}); chmod a+x {path!r}")
    head = host.head(final, 256)
    shebang = head.startswith(b"#!")
    if not _allowed(node, who, 5 if shebang else 1):
        what = "read and execute" if shebang else "execute"
        raise _Problem(
            f"{path!r}: {who.label} cannot {what} it ({_mode(node)}); chmod o+rx {path!r}",
        )
    if shebang and interpreter:
        line = head[2:].split(b"\n", 1)[0].strip().split()
        if line and line[0].startswith(b"/"):
            inner = line[0].decode("utf-8", "replace")
            try:
                _program(inner, host, box, interpreter=False)
            except _Problem as exc:
                raise _Problem(
                    f"{path!r} runs {inner!r} (#!): {exc.message}", sandbox_fix=exc.sandbox_fix
                ) from exc
    _venv(path, host, box)


def _venv(program: str, host: HostView, box: _Sandbox) -> None:
    """A venv interpreter (``VENV/bin/python*`` next to ``VENV/pyvenv.cfg``: venv(5) is
    found from the path as invoked, before symlinks): its config and site-packages."""
    bindir = posixpath.dirname(program)
    if posixpath.basename(bindir) != "bin" or not _PYTHON.match(posixpath.basename(program)):
        return
    root = posixpath.dirname(bindir)
    cfg = posixpath.join(root, "pyvenv.cfg")
    if _lstat(host, cfg) is None:
        return
    fix = f"chmod -R o+rX {root!r}"
    who = box.runs_as.label
    _, node = _resolve(cfg, host, box)
    if not _allowed(node, box.runs_as, 4):
        raise _Problem(
            f"{program!r}: {who} cannot read its venv's {cfg!r} ({_mode(node)}); {fix}",
        )
    match = re.search(rb"^version(?:_info)?\s*=\s*(\d+)\.(\d+)", host.head(cfg, 4096), re.M)
    if match is None:
        return
    site = posixpath.join(root, "lib", f"python{int(match[1])}.{int(match[2])}", "site-packages")
    if _lstat(host, site) is None:
        return
    try:
        _, node = _resolve(site, host, box)
    except _Problem as exc:
        raise _Problem(
            f"{program!r}: its venv: {exc.message}", sandbox_fix=exc.sandbox_fix
        ) from exc
    if not _allowed(node, box.runs_as, 5):  # listed: *.pth files
        raise _Problem(
            f"{program!r}: {who} cannot list its venv's {site!r} ({_mode(node)}); {fix}",
        )


def _readable(path: str, host: HostView, box: _Sandbox, *, directory: bool) -> None:
    _, node = _resolve(path, host, box)
    if directory:
        if not stat.S_ISDIR(node.mode):
            raise _Problem(f"{path!r} is not a directory")
        want, verb, fix = 1, "enter", "o+x"
    else:
        if not stat.S_ISREG(node.mode):
            raise _Problem(f"{path!r} is not a regular file")
        want, verb, fix = 4, "read", "o+r"
    if not _allowed(node, box.runs_as, want):
        raise _Problem(
            f"{path!r}: {box.runs_as.label} cannot {verb} it ({_mode(node)}); chmod {fix} {path!r}",
        )


def _package_dir(path: str, host: HostView, box: _Sandbox) -> None:
    _, node = _resolve(path, host, box)
    if not _allowed(node, box.runs_as, 5):
        raise _Problem(
            f"{path!r}: {box.runs_as.label} cannot list it ({_mode(node)});"
            f" chmod -R o+rX {path!r}, or {_MOVE}",
        )


def python_script(argv: tuple[str, ...] | list[str]) -> str | None:
    """The script a Python command line runs (``python3 -u app.py`` -> ``app.py``), or None
    (not a Python interpreter, ``-m``, ``-c``, ``-`` or no script). python(1)."""
    if not argv or not _PYTHON.match(posixpath.basename(argv[0])):
        return None
    words = list(argv[1:])
    while words:
        word = words.pop(0)
        if word == "--":
            return words[0] if words else None
        if word == "-" or not word.startswith("-"):
            return None if word == "-" else word
        if word.startswith("--"):
            if word in _PYTHON_LONG_WITH_VALUE and words:
                words.pop(0)
            if word in ("--help", "--version"):
                return None
            continue
        for index, flag in enumerate(word[1:], start=1):
            if flag in "cm":
                return None
            if flag in _PYTHON_VALUE_FLAGS:
                if index == len(word) - 1 and words:
                    words.pop(0)  # -W ignore: the value is the next word
                break  # -Wignore: the rest of the word is the value
    return None


def check_relative_script(options: Options, *, cwd: Callable[[], str] | None = None) -> None:
    """Refuse a relative Python script with no ``--working-dir``: systemd starts the
    service in ``/`` (systemd.exec(5) WorkingDirectory=; a user manager: the home) and
    the script is looked up there. Host-independent, so also without preflight."""
    script = python_script(options.command)
    if script is None or script.startswith("/") or options.working_dir is not None:
        return
    where = "/" if not options.user else "your home directory"
    suggestion = "/abs/path/" + script
    if cwd is not None:
        suggestion = posixpath.normpath(posixpath.join(cwd(), script))
    raise PreflightError(
        f"script {script!r} is relative and the unit has no WorkingDirectory= (the service"
        f" starts in {where}); pass {suggestion} or --working-dir DIR"
    )


def _items(options: Options, package_dir: str | None) -> Iterator[tuple[str, str, str]]:
    """``(label, kind, path)`` for everything the service needs, in start-up order."""
    if options.supervise and options.python is not None:
        yield "interpreter for `sdactivate run` (--python)", "program", options.python
        if package_dir is not None:
            yield "sdactivate (`python -m sdactivate run`)", "package", package_dir
    if options.working_dir is not None:
        yield "--working-dir", "directory", options.working_dir
    if options.command:
        yield "program", "program", options.command[0]
        script = python_script(options.command)
        if script is not None:
            yield "script", "file", posixpath.join(options.working_dir or "/", script)


_CHECKS: Mapping[str, Callable[[str, HostView, _Sandbox], None]] = {
    "program": _program,
    "file": lambda path, host, box: _readable(path, host, box, directory=False),
    "directory": lambda path, host, box: _readable(path, host, box, directory=True),
    "package": _package_dir,
}


def _first_problem(
    options: Options, host: HostView, me: RunsAs, package_dir: str | None
) -> tuple[str, _Problem] | None:
    box = _sandbox(options, me)
    for label, kind, path in _items(options, package_dir):
        try:
            _CHECKS[kind](path, host, box)
        except _CannotTell:
            continue
        except _Problem as problem:
            return label, problem
    return None


def check(
    options: Options,
    *,
    host: HostView | None = None,
    me: RunsAs | None = None,
    package_dir: str | None = None,
    accounts: Callable[[str, str], bool] | None = None,
) -> None:
    """Raise :class:`PreflightError` if the service ``options`` describe (resolved: an
    absolute argv, the supervisor's interpreter) would fail on this machine.

    ``host``: the file system (default this machine's); ``me``: who runs a ``--user`` unit
    (default this process's user); ``package_dir``: where ``python -m sdactivate`` is
    imported from, when the supervisor's interpreter is this one; ``accounts(kind, value)``:
    whether a ``"user"`` or ``"group"`` (name or number) exists (default: this machine's
    user database). The message ends with a weaker ``--hardening`` level when that alone
    would make every check pass.
    """
    view = host if host is not None else LocalHost()
    check_relative_script(options, cwd=view.cwd)
    _check_socket_owner(options, accounts or account_exists)
    who = me if me is not None else _this_user()
    found = _first_problem(options, view, who, package_dir)
    if found is None:
        return
    label, problem = found
    message = f"{label} {problem.message}"
    if problem.sandbox_fix:
        weaker = hardening.LEVELS[hardening.LEVELS.index(options.hardening) + 1 :]
        for level in weaker:
            if _first_problem(replace(options, hardening=level), view, who, package_dir) is None:
                message += f", or use --hardening {level}"
                break
    raise PreflightError(message)


def account_exists(kind: str, value: str) -> bool:
    """Whether the user (``kind`` ``"user"``) or group (``"group"``) ``value``, a name or a
    number, is in this machine's user database (NSS)."""
    try:
        if kind == "user":
            pwd.getpwuid(int(value)) if value.isdigit() else pwd.getpwnam(value)
        else:
            grp.getgrgid(int(value)) if value.isdigit() else grp.getgrnam(value)
    except (KeyError, OverflowError):
        return False
    return True


def _check_socket_owner(options: Options, accounts: Callable[[str, str], bool]) -> None:
    # v252 socket.c socket_chown(): SocketUser=/SocketGroup= are resolved through NSS when
    # the socket is set up, numbers too ("Failed to resolve user 4242"), and the socket unit
    # fails with status 217/USER or 216/GROUP
    for flag, kind, value in (
        ("--socket-user", "user", options.socket_user),
        ("--socket-group", "group", options.socket_group),
    ):
        if value is not None and not accounts(kind, value):
            raise PreflightError(
                f"{flag} {value!r}: no such {kind} on this machine (systemd would fail the"
                f" socket unit: 'Failed to resolve {kind}'); create it, or pass --no-preflight"
                " if the unit is for another host"
            )
