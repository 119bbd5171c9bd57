"""Unit names and fd names are validated like systemd does; escaping matches systemd-escape."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sdactivate.errors import UnitConfigError
from sdactivate.units import names

needs_escape = pytest.mark.skipif(shutil.which("systemd-escape") is None, reason="systemd-escape")
needs_analyze = pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd")


def _systemd_escape(*args: str) -> str:
    out = subprocess.run(
        ["systemd-escape", *args], capture_output=True, text=True, check=True, timeout=10
    )
    return out.stdout.rstrip("\n")


@pytest.mark.parametrize("prefix", ["myapp", "my-app", "my_app.v2", "a:b", "x" * 247])
def test_valid_prefixes(prefix: str) -> None:
    """Letters, digits and :-_. are fine up to 255 characters with .service."""
    assert names.check_unit_prefix(prefix) == prefix


@pytest.mark.parametrize(
    "prefix",
    ["", "my app", "my/app", "..", ".hidden", "app@", "a@b", "ü", "x" * 248, "a\nb", "a;b"],
    ids=repr,
)
def test_invalid_prefixes(prefix: str) -> None:
    """Spaces, slashes, '..', leading dots, templates, non-ASCII and >255 are refused."""
    with pytest.raises(UnitConfigError, match="invalid unit name"):
        names.check_unit_prefix(prefix)


@pytest.mark.parametrize(
    ("name", "template_ok", "ok"),
    [
        ("a.service", False, True),
        ("a@i.service", False, True),
        ("a@.service", False, False),
        ("a@.service", True, True),
        ("a@b@c.service", False, True),  # instance "b@c" (unit-name.c: the first '@')
        ("a@@.service", False, True),  # instance "@"
        ("a@b.c@.service", True, True),  # instance "b.c@"
        ("@b.service", True, False),
        ("a:b\\x2d_c.d-e.socket", False, True),
        ("a:@b.socket", False, True),
        ("a@b c.service", False, False),
        ("a.bogus", False, False),
        (".service", False, False),
        ("a b.socket", False, False),
        ("x" * 248 + ".socket", False, True),
        ("x" * 249 + ".socket", False, False),
        ("x@" + "y" * 246 + ".socket", False, True),
        ("x@" + "y" * 247 + ".socket", False, False),
    ],
)
def test_check_unit_name(name: str, template_ok: bool, ok: bool) -> None:
    """Full names need a known suffix and a prefix without '@'; the instance runs from the
    first '@' to the last '.' and may hold more '@' (systemd's unit_name_is_valid())."""
    if ok:
        assert names.check_unit_name(name, template_ok=template_ok) == name
    else:
        with pytest.raises(UnitConfigError):
            names.check_unit_name(name, template_ok=template_ok)


@pytest.mark.parametrize("fd_name", ["http", "a-b.c", "x" * 255, "p=1", "a b"])
def test_valid_fd_names(fd_name: str) -> None:
    """FileDescriptorName=: printable ASCII without ':' up to 255, spaces included (systemd's
    rule: see test_fd_name_rule_agrees_with_systemd_analyze)."""
    assert names.check_fd_name(fd_name) == fd_name


@pytest.mark.parametrize("fd_name", ["", "a:b", "x" * 256, "ü", "a\tb"], ids=repr)
def test_invalid_fd_names(fd_name: str) -> None:
    """Empty, ':', too long, non-ASCII and control characters are refused."""
    with pytest.raises(UnitConfigError, match="fd name"):
        names.check_fd_name(fd_name)


def _oracle_fd_names() -> list[str]:
    """Names on both sides of the rule: a table, then seeded random ones (printable ASCII with
    now and then a control, DEL, non-ASCII or ':' character, 1..300 long)."""
    table = ["http", "a b", "a  b", "~!#$&*()[]{}<>?|;'\"`,=+", "50%", "a\\b", "p=1"]
    table += ["x" * 255, "x" * 256, "a:b", "a\tb", "caf\u00e9", "del\x7f", "\x01x", "\u2028"]
    rng = random.Random(14)
    odd = [":", "\t", "\x1b", "\x7f", "\u00e9", "\u00a0"]
    for _ in range(60):
        length = rng.choice([1, 2, 8, 40, 254, 255, 256, 300])
        chars = [chr(rng.randint(0x21, 0x7E)) for _ in range(length)]
        if rng.random() < 0.5:
            chars[rng.randrange(length)] = rng.choice(odd)
        if length > 2 and rng.random() < 0.3:
            chars[rng.randrange(1, length - 1)] = " "
        table.append("".join(chars))
    # A unit file cannot hold spaces at either end (stripped) or a trailing backslash (a line
    # continuation): the renderer refuses those; everything else is written as it is.
    return [n for n in table if n == n.strip() and not n.endswith("\\")]


@needs_analyze
def test_fd_name_rule_agrees_with_systemd_analyze(tmp_path: Path) -> None:
    """check_fd_name accepts exactly the FileDescriptorName= values this host's systemd takes:
    `systemd-analyze verify` reports "Invalid file descriptor name, ignoring" (or a too-long
    name) for the others (systemd.socket(5); fd-util.c fdname_is_valid())."""
    cases = _oracle_fd_names()
    paths = []
    for i, name in enumerate(cases):
        (tmp_path / f"fdn{i}.service").write_text("[Service]\nExecStart=/bin/true\n")
        unit = tmp_path / f"fdn{i}.socket"
        value = name.replace("%", "%%")  # a specifier otherwise
        unit.write_bytes(
            f"[Socket]\nListenStream=/run/fdn{i}.sock\nFileDescriptorName={value}\n".encode()
        )
        paths.append(str(unit))
    runtime = tmp_path / "xdg"
    runtime.mkdir(mode=0o700)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "XDG_RUNTIME_DIR": str(runtime)}
    out = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *paths],
        capture_output=True,
        text=True,
        errors="replace",
        timeout=120,
        env=env,
    )
    refused = {line.split(":", 1)[0] for line in out.stderr.splitlines() if ":3: " in line}
    for name, path in zip(cases, paths, strict=True):
        try:
            names.check_fd_name(name)
            ours = True
        except UnitConfigError:
            ours = False
        assert ours == (path not in refused), (name, out.stderr)
    assert refused and len(refused) < len(cases)  # both answers occur


@needs_escape
@pytest.mark.parametrize("text", ["foo bar/baz", "a-b", ".dot", "ü😀", "x\\y", "plain"])
def test_escape_matches_systemd_escape(text: str) -> None:
    """names.escape agrees with systemd-escape on a table."""
    assert names.escape(text) == _systemd_escape(text)


@needs_escape
@pytest.mark.parametrize("path", ["/srv/my-app", "/", "//a//b/", "/x y/.z"])
def test_escape_path_matches_systemd_escape(path: str) -> None:
    """names.escape_path agrees with systemd-escape --path."""
    assert names.escape_path(path) == _systemd_escape("--path", path)


def test_escape_path_refuses_dotdot() -> None:
    """'..' is not normalized (systemd-escape --path fails the same way)."""
    with pytest.raises(UnitConfigError, match="normalized"):
        names.escape_path("/a/../b")


@needs_escape
def test_instance_name_matches_systemd_escape_template() -> None:
    """instance_name() is systemd-escape --template."""
    got = names.instance_name("app@.service", "foo bar/baz")
    assert got == _systemd_escape("--template=app@.service", "foo bar/baz")
    assert got == "app@foo\\x20bar-baz.service"


@needs_escape
@settings(max_examples=40, deadline=None)
@given(st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"), min_size=1))
def test_escape_conformance_property(text: str) -> None:
    """For any string, escape() equals systemd-escape and unescape() inverts it."""
    assert names.escape(text) == _systemd_escape("--", text)
    if "/" not in text:  # '/' and '-' both unescape to '/'
        assert names.unescape(names.escape(text)) == text


@pytest.mark.parametrize(
    ("given", "prefix"),
    [
        ("myapp.service", "myapp"),
        ("myapp.socket", "myapp"),
        ("myapp", "myapp"),
        ("my.app", "my.app"),
        (".service", ".service"),
        ("myapp.service.service", "myapp.service"),
    ],
)
def test_strip_unit_suffix(given: str, prefix: str) -> None:
    """A trailing .service/.socket is dropped once; other names are unchanged."""
    assert names.strip_unit_suffix(given) == prefix


PROBE = Path(__file__).resolve().parent.parent / "integration" / "probes" / "escape_differential.py"
NAME_PROBE = PROBE.with_name("unit_name_differential.py")


@needs_analyze
def test_unit_name_rule_agrees_with_systemd_analyze() -> None:
    """unit_name_problem(template_ok=True) accepts exactly the names this host's systemd takes
    (`systemd-analyze verify ./NAME`: unit_name_is_valid(UNIT_NAME_ANY)), on 300 generated
    names: templates, instances with '@', every unit type, lengths 255 and 256
    (integration/probes/unit_name_differential.py; the release trees run it with more)."""
    result = subprocess.run(
        [sys.executable, str(NAME_PROBE), "--count", "300"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    line = next(line for line in result.stdout.splitlines() if line.startswith("PROBE "))
    report = json.loads(line[len("PROBE ") :])
    assert result.returncode == 0, json.dumps(report, indent=1, ensure_ascii=False)
    assert report["checked"] == 300 and report["mismatches"] == 0
    assert 0 < report["valid"] < 300 and report["instances_with_at"] > 0  # both answers


@needs_escape
def test_escaping_matches_systemd_escape_on_generated_inputs() -> None:
    """escape, escape_path, unescape and unescape_path agree with the host's systemd-escape
    (with --path, --unescape, --unescape --path) on 400 generated inputs each
    (integration/probes/escape_differential.py; the release trees run it with more)."""
    result = subprocess.run(
        [sys.executable, str(PROBE), "--count", "400"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    line = next(line for line in result.stdout.splitlines() if line.startswith("PROBE "))
    report = json.loads(line[len("PROBE ") :])
    assert result.returncode == 0, json.dumps(report, indent=1, ensure_ascii=False)
    assert report.pop("systemd") >= 245
    assert all(mode["checked"] == 400 for mode in report.values())
    # the generated inputs reach both answers in every direction that can refuse
    for mode in ("escape-path", "unescape", "unescape-path"):
        assert 0 < report[mode]["refused_by_systemd"] < 400, report[mode]


@pytest.mark.parametrize(
    ("text", "unescaped"),
    [("a\\x41-b", "aA/b"), ("a\\x00b", "a"), ("\\x2d", "-"), ("", ""), ("a--b", "a//b")],
)
def test_unescape_table(text: str, unescaped: str) -> None:
    """\\xNN and '-'; the result ends at \\x00, as systemd's C string does."""
    assert names.unescape(text) == unescaped


@pytest.mark.parametrize("text", ["a\\x+f", "\\", "a\\", "\\x4", "\\X41", "\\x4g", "\\xff"])
def test_unescape_refuses_what_systemd_refuses(text: str) -> None:
    """A backslash must start \\x with two hex digits ('+f' is not hex); \\xff is not UTF-8."""
    with pytest.raises(UnitConfigError):
        names.unescape(text)


@pytest.mark.parametrize(
    ("path", "escaped"),
    [("/a/./b", "a-b"), ("./a", "a"), ("/./", "-"), ("", "-"), ("a/.b", "a-.b")],
)
def test_escape_path_drops_dot_components(path: str, escaped: str) -> None:
    """'.' components are simplified away as systemd does (only '..' and a lone '.' fail)."""
    assert names.escape_path(path) == escaped


@pytest.mark.parametrize(
    ("text", "path"), [("-", "/"), ("a-b", "/a/b"), ("a\\x2d", "/a-"), ("a\\x2fb", "/a/b")]
)
def test_unescape_path(text: str, path: str) -> None:
    """systemd-escape --unescape --path."""
    assert names.unescape_path(text) == path


@pytest.mark.parametrize("text", ["", "-a", "a-", "a--b", ".", "a-..-b", "\\x2fa"])
def test_unescape_path_refuses_what_is_not_normalized(text: str) -> None:
    """Empty, leading/trailing/double '/', '.' or '..' components: refused like systemd."""
    with pytest.raises(UnitConfigError):
        names.unescape_path(text)
