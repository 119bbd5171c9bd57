"""gen-units' checks against this machine, on a fake file system: what runs, what each
refusal says (the path, the directive or the user, and the fix)."""

from __future__ import annotations

import re
import stat
from dataclasses import replace

import pytest

from sdactivate.errors import UnitConfigError
from sdactivate.units import preflight
from sdactivate.units.build import Options, build
from sdactivate.units.preflight import Node, PreflightError, RunsAs

ALICE = RunsAs(1000, frozenset({1000}), "your user")
ELF = b"\x7fELF\x02\x01\x01"


def d(mode: int, uid: int = 0) -> Node:
    return Node(stat.S_IFDIR | mode, uid, uid)


def f(mode: int, uid: int = 0) -> Node:
    return Node(stat.S_IFREG | mode, uid, uid)


def ln(target: str) -> Node:
    return Node(stat.S_IFLNK | 0o777, 0, 0, target)


class FakeHost:
    """A file system as a dict; ``denied`` paths raise PermissionError like lstat(2)."""

    def __init__(self, *, denied: frozenset[str] = frozenset()) -> None:
        self.nodes = dict(LAYOUT)
        self.contents = dict(CONTENTS)
        self.denied = denied

    def lstat(self, path: str) -> Node | None:
        if path in self.denied:
            raise PermissionError(13, "Permission denied", path)
        return self.nodes.get(path)

    def head(self, path: str, size: int) -> bytes:
        return self.contents.get(path, ELF)[:size]

    def cwd(self) -> str:
        return "/srv/app"


LAYOUT: dict[str, Node] = {
    "/": d(0o755),
    "/usr": d(0o755),
    "/usr/bin": d(0o755),
    "/usr/bin/python3": ln("python3.11"),
    "/usr/bin/python3.11": f(0o755),
    "/srv": d(0o755),
    "/srv/app": d(0o755),
    "/srv/app/app.py": f(0o644),
    "/srv/app/run.sh": f(0o644),
    "/srv/app/secret.py": f(0o600),
    "/srv/app/group-only": f(0o750),
    "/srv/app/tool": f(0o755),
    "/srv/private": d(0o750),
    "/srv/private/app.py": f(0o644),
    "/opt": d(0o755),
    "/opt/venv": d(0o755),
    "/opt/venv/pyvenv.cfg": f(0o644),
    "/opt/venv/bin": d(0o755),
    "/opt/venv/bin/python": ln("/usr/bin/python3"),
    "/opt/venv/bin/myapp": f(0o755),
    "/opt/venv/lib": d(0o755),
    "/opt/venv/lib/python3.11": d(0o755),
    "/opt/venv/lib/python3.11/site-packages": d(0o755),
    "/opt/closed": d(0o755),
    "/opt/closed/pyvenv.cfg": f(0o644),
    "/opt/closed/bin": d(0o755),
    "/opt/closed/bin/python3": ln("/usr/bin/python3"),
    "/opt/closed/lib": d(0o755),
    "/opt/closed/lib/python3.11": d(0o755),
    "/opt/closed/lib/python3.11/site-packages": d(0o700),
    "/opt/pyenv": d(0o755),
    "/opt/pyenv/bin": d(0o755),
    "/opt/pyenv/bin/python3": ln("/root/.pyenv/versions/3.11.7/bin/python3.11"),
    "/opt/loop": ln("/opt/loop"),
    "/root": d(0o700),
    "/root/app.py": f(0o644),
    "/root/.pyenv": d(0o755),
    "/root/src": d(0o755),
    "/root/src/sdactivate": d(0o755),
    "/home": d(0o755),
    "/home/alice": d(0o755, 1000),
    "/home/alice/app.py": f(0o644, 1000),
    "/home/bob": d(0o700, 1001),
    "/home/bob/app.py": f(0o644, 1001),
    "/tmp": d(0o1777),
    "/tmp/app.py": f(0o644),
    "/tmp/venv": d(0o755),
    "/tmp/venv/bin": d(0o755),
    "/tmp/venv/bin/python": ln("/usr/bin/python3"),
}
CONTENTS = {
    "/opt/venv/pyvenv.cfg": b"home = /usr/bin\nversion = 3.11.2\n",
    "/opt/closed/pyvenv.cfg": b"home = /usr/bin\nversion_info = 3.11.2.final.0\n",
    "/opt/venv/bin/myapp": b"#!/opt/venv/bin/python\nimport myapp\n",
    "/srv/app/tool": b"#!/opt/missing/python -u\n",
    "/srv/app/run.sh": b"#!/bin/sh\n",
}


def opts(*command: str, **kw: object) -> Options:
    base: dict[str, object] = {"name": "myapp", "systemd_version": 252, "ports": (8080,)}
    return Options(command=command, **(base | kw))  # type: ignore[arg-type]


def run_check(options: Options, host: FakeHost | None = None, **kw: object) -> None:
    if options.supervise and options.python is None:
        options = replace(options, python="/opt/venv/bin/python")
    preflight.check(options, host=host or FakeHost(), me=ALICE, **kw)  # type: ignore[arg-type]


ACCEPTED = {
    "venv-python-script": opts("/opt/venv/bin/python", "/srv/app/app.py"),
    "venv-entry-point": opts("/opt/venv/bin/myapp"),
    "system-python-module": opts("/usr/bin/python3", "-m", "myapp"),
    "relative-with-working-dir": opts("/usr/bin/python3", "app.py", working_dir="/srv/app"),
    "supervise": opts("/opt/venv/bin/python", "/srv/app/app.py", supervise=True),
    "root-script-hardening-off": opts("/usr/bin/python3", "/root/app.py", hardening="off"),
    "tmp-hardening-off": opts("/usr/bin/python3", "/tmp/app.py", hardening="off"),
    "home-0755-standard": opts("/usr/bin/python3", "/home/alice/app.py", hardening="standard"),
    "user-unit-own-home": opts("/usr/bin/python3", "/home/alice/app.py", user=True),
    "group-only-as-root": opts("/srv/app/group-only", hardening="off"),
}


@pytest.mark.parametrize("case", list(ACCEPTED), ids=list(ACCEPTED))
def test_typical_layouts_pass(case: str) -> None:
    """An app under /srv or /opt with a venv under /opt (and what --hardening off or a
    user unit may see) passes."""
    run_check(ACCEPTED[case])


REFUSED: dict[str, tuple[Options, str]] = {
    "missing-program": (
        opts("/opt/nope/bin/app"),
        "program '/opt/nope/bin/app' does not exist on this machine ('/opt/nope' is missing);"
        " fix the path, or pass --no-preflight if the unit is for another host",
    ),
    "missing-script": (
        opts("/usr/bin/python3", "/srv/app/nope.py"),
        "script '/srv/app/nope.py' does not exist on this machine; fix the path, or pass"
        " --no-preflight if the unit is for another host",
    ),
    "relative-script-missing-in-working-dir": (
        opts("/usr/bin/python3", "nope.py", working_dir="/srv/app"),
        "script '/srv/app/nope.py' does not exist on this machine",
    ),
    "program-is-a-directory": (opts("/srv/app"), "program '/srv/app' is not a regular file"),
    "not-executable": (
        opts("/srv/app/run.sh"),
        "program '/srv/app/run.sh' is not executable (mode 0644); chmod a+x '/srv/app/run.sh'",
    ),
    "dynamic-user-cannot-execute": (
        opts("/srv/app/group-only"),
        "program '/srv/app/group-only': the service's dynamic user (DynamicUser=yes) cannot"
        " execute it (mode 0750); chmod o+rx '/srv/app/group-only'",
    ),
    "shebang-interpreter-missing": (
        opts("/srv/app/tool"),
        "program '/srv/app/tool' runs '/opt/missing/python' (#!): '/opt/missing/python' does"
        " not exist on this machine ('/opt/missing' is missing)",
    ),
    "root-strict": (
        opts("/usr/bin/python3", "/root/app.py"),
        "script '/root/app.py' is under /root, which ProtectHome=yes hides from the service;"
        " move it (e.g. to /srv or /opt), or use --hardening off",
    ),
    "home-strict": (
        opts("/usr/bin/python3", "/home/alice/app.py"),
        "script '/home/alice/app.py' is under /home, which ProtectHome=yes hides from the"
        " service; move it (e.g. to /srv or /opt), or use --hardening standard",
    ),
    "home-0700-strict": (
        opts("/usr/bin/python3", "/home/bob/app.py"),
        "script '/home/bob/app.py' is under /home, which ProtectHome=yes hides from the"
        " service; move it (e.g. to /srv or /opt), or use --hardening off",
    ),
    "home-0700-standard": (
        opts("/usr/bin/python3", "/home/bob/app.py", hardening="standard"),
        "script '/home/bob/app.py': the service's dynamic user (DynamicUser=yes) cannot enter"
        " '/home/bob' (mode 0700); chmod o+x '/home/bob', or move it (e.g. to /srv or /opt)",
    ),
    "tmp-strict": (
        opts("/usr/bin/python3", "/tmp/app.py"),
        "script '/tmp/app.py' is under /tmp, which PrivateTmp=yes replaces with an empty"
        " directory for the service; move it (e.g. to /srv or /opt), or use --hardening off",
    ),
    "tmp-standard": (
        opts("/usr/bin/python3", "/tmp/app.py", hardening="standard"),
        "which PrivateTmp=yes replaces with an empty directory",
    ),
    "tmp-user-unit": (
        opts("/usr/bin/python3", "/tmp/app.py", user=True),
        "script '/tmp/app.py' is under /tmp, which PrivateTmp=yes replaces with an empty"
        " directory for the service; move it (e.g. to /srv or /opt), or use --hardening off",
    ),
    "supervise-venv-in-tmp": (
        opts("/usr/bin/python3", "/srv/app/app.py", supervise=True, python="/tmp/venv/bin/python"),
        "interpreter for `sdactivate run` (--python) '/tmp/venv/bin/python' is under /tmp, which"
        " PrivateTmp=yes replaces with an empty directory for the service",
    ),
    "interpreter-links-into-root": (
        opts("/opt/pyenv/bin/python3", "/srv/app/app.py"),
        "program '/opt/pyenv/bin/python3' -> '/root/.pyenv/versions/3.11.7/bin/python3.11' is"
        " under /root, which ProtectHome=yes hides from the service",
    ),
    "script-unreadable": (
        opts("/usr/bin/python3", "/srv/app/secret.py"),
        "script '/srv/app/secret.py': the service's dynamic user (DynamicUser=yes) cannot read"
        " it (mode 0600); chmod o+r '/srv/app/secret.py'",
    ),
    "directory-not-enterable": (
        opts("/usr/bin/python3", "/srv/private/app.py"),
        "script '/srv/private/app.py': the service's dynamic user (DynamicUser=yes) cannot"
        " enter '/srv/private' (mode 0750); chmod o+x '/srv/private'",
    ),
    "user-unit-other-home": (
        opts("/usr/bin/python3", "/home/bob/app.py", user=True),
        "script '/home/bob/app.py': your user cannot enter '/home/bob' (mode 0700)",
    ),
    "venv-site-packages-closed": (
        opts("/opt/closed/bin/python3", "/srv/app/app.py"),
        "program '/opt/closed/bin/python3': the service's dynamic user (DynamicUser=yes) cannot"
        " list its venv's '/opt/closed/lib/python3.11/site-packages' (mode 0700); chmod -R o+rX"
        " '/opt/closed'",
    ),
    "working-dir-missing": (
        opts("/usr/bin/python3", "app.py", working_dir="/srv/nope"),
        "--working-dir '/srv/nope' does not exist on this machine",
    ),
    "working-dir-is-a-file": (
        opts("/usr/bin/python3", "-m", "x", working_dir="/srv/app/app.py"),
        "--working-dir '/srv/app/app.py' is not a directory",
    ),
    "working-dir-hidden": (
        opts("/usr/bin/python3", "-m", "x", working_dir="/root"),
        "--working-dir '/root' is under /root, which ProtectHome=yes hides",
    ),
    "symlink-loop": (opts("/opt/loop"), "too many levels of symbolic links"),
}


@pytest.mark.parametrize("case", list(REFUSED), ids=list(REFUSED))
def test_refusals_name_the_path_and_the_fix(case: str) -> None:
    """Each refusal is one PreflightError (a UnitConfigError: exit 2) whose message names
    the path, why the service could not use it, and what fixes it."""
    options, message = REFUSED[case]
    with pytest.raises(PreflightError) as info:
        run_check(options)
    assert isinstance(info.value, UnitConfigError)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_relative_script_without_working_dir_suggests_the_absolute_path() -> None:
    """A relative script and no --working-dir: the message suggests the script's absolute
    path from the current directory; build() refuses it too, on any host."""
    options = opts("/usr/bin/python3", "app.py")
    with pytest.raises(PreflightError) as info:
        run_check(options)
    assert str(info.value) == (
        "script 'app.py' is relative and the unit has no WorkingDirectory= (the service starts"
        " in /); pass /srv/app/app.py or --working-dir DIR"
    )
    with pytest.raises(PreflightError, match=re.escape("pass /abs/path/app.py or --working-dir")):
        build(options, which=lambda _: "/usr/bin/python3")


def test_the_supervisors_package_must_be_visible() -> None:
    """With the default interpreter, the directory `python -m sdactivate` imports from is
    checked too (an editable install under /root is hidden)."""
    options = opts("/usr/bin/python3", "/srv/app/app.py", supervise=True)
    run_check(options, package_dir="/opt/venv/lib/python3.11/site-packages")
    with pytest.raises(PreflightError, match=re.escape("sdactivate (`python -m sdactivate run`)")):
        run_check(options, package_dir="/root/src/sdactivate")


def test_paths_this_process_cannot_see_are_not_refused() -> None:
    """EACCES from lstat means "cannot tell": that item is skipped, not refused."""
    run_check(
        opts("/usr/bin/python3", "/srv/private/app.py"),
        FakeHost(denied=frozenset({"/srv/private"})),
    )


PYTHON_ARGV = {
    ("python3", "app.py"): "app.py",
    ("/usr/bin/python3", "-u", "app.py", "--port", "1"): "app.py",
    ("python3", "-W", "ignore", "a.py"): "a.py",
    ("python3", "-Wignore", "a.py"): "a.py",
    ("python3", "-uW", "ignore", "a.py"): "a.py",
    ("python3", "-X", "dev", "a.py"): "a.py",
    ("python3", "--check-hash-based-pycs", "always", "a.py"): "a.py",
    ("python3", "--", "a.py"): "a.py",
    ("/opt/v/bin/python3.11", "-I", "a.py"): "a.py",
    ("pypy3", "a.py"): "a.py",
    ("python3", "-m", "http.server"): None,
    ("python3", "-c", "pass", "x.py"): None,
    ("python3", "-uc", "pass"): None,
    ("python3", "-"): None,
    ("python3",): None,
    ("/usr/bin/node", "app.js"): None,
    ("/usr/bin/python3-config", "x"): None,
}


@pytest.mark.parametrize("argv", list(PYTHON_ARGV), ids=[" ".join(a) for a in PYTHON_ARGV])
def test_python_script(argv: tuple[str, ...]) -> None:
    """The script argument of a Python command line, as python(1) reads its options."""
    assert preflight.python_script(argv) == PYTHON_ARGV[argv]


def test_socket_owner_must_exist_here() -> None:
    """--socket-user/--socket-group name a user and group this machine resolves, numbers
    too: systemd fails the socket unit otherwise ("Failed to resolve user", 217/USER)."""
    files = {"listens": (("/run/myapp.sock", None),)}
    app = ("/opt/venv/bin/python", "/srv/app/app.py")
    known = {("user", "www-data"), ("group", "4242")}

    def exists(kind: str, value: str) -> bool:
        return (kind, value) in known

    run_check(opts(*app, socket_user="www-data", socket_group="4242", **files), accounts=exists)
    for kw, what in (
        ({"socket_user": "ghost"}, "--socket-user 'ghost': no such user"),
        ({"socket_group": "4243"}, "--socket-group '4243': no such group"),
    ):
        with pytest.raises(PreflightError, match=re.escape(what)):
            run_check(opts(*app, **kw, **files), accounts=exists)


def test_account_exists_reads_this_machines_user_database() -> None:
    """The default lookup: root (user and group 0) exists everywhere; an unlikely name and
    an id past 32 bits do not."""
    for kind in ("user", "group"):
        assert preflight.account_exists(kind, "root") and preflight.account_exists(kind, "0")
        assert not preflight.account_exists(kind, "sdactivate-no-such-account")
        assert not preflight.account_exists(kind, "99999999999")
