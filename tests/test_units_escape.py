"""ExecStart/Environment escaping: tables, refusals, and a Hypothesis round trip through a
reference parser of systemd 252's command-line rules (systemd.service(5) "COMMAND LINES",
systemd.syntax(7) "Quoting", systemd.unit(5) "SPECIFIERS"). The authoritative round trip
through real systemd is integration/test_execstart_roundtrip.py."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sdactivate.errors import UnitConfigError
from sdactivate.units import escape

# ---- reference parser (test oracle) -----------------------------------------------------
_C_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}
_C_ESCAPES |= {"\\": "\\", '"': '"', "'": "'", "s": " "}


def _specifiers(value: str) -> str:
    """systemd.unit(5): expand specifiers; we only ever emit ``%%``."""
    out, i = [], 0
    while i < len(value):
        if value[i] == "%":
            assert value[i + 1 : i + 2] == "%", f"unexpected specifier in {value!r}"
            out.append("%")
            i += 2
        else:
            out.append(value[i])
            i += 1
    return "".join(out)


def _words(line: str) -> list[str]:
    """systemd.syntax(7) quoting as extract_first_word(UNQUOTE|CUNESCAPE) reads it, plus the
    ``;`` / ``\\;`` handling of config_parse_exec()."""
    words: list[str] = []
    i, n = 0, len(line)
    while True:
        while i < n and line[i] in " \t\n\r":
            i += 1
        if i >= n:
            return words
        if line[i] == ";" and (i + 1 == n or line[i + 1] in " \t"):
            raise AssertionError(f"lone ';' separator in {line!r}")
        if line.startswith("\\;", i) and (i + 2 == n or line[i + 2] in " \t"):
            words.append(";")
            i += 2
            continue
        word: list[str] = []
        quote = None
        while i < n:
            ch = line[i]
            if quote is None and ch in " \t\n\r":
                break
            if ch == "\\":
                nxt = line[i + 1]
                assert nxt in _C_ESCAPES, f"unknown escape \\{nxt} in {line!r}"
                word.append(_C_ESCAPES[nxt])
                i += 2
                continue
            if quote is None and ch in "\"'":
                quote = ch
            elif ch == quote:
                quote = None
            else:
                word.append(ch)
            i += 1
        assert quote is None, f"unterminated quote in {line!r}"
        words.append("".join(word))


def _expand_env(word: str, env: dict[str, str]) -> str:
    """systemd.service(5): ``$$`` is ``$``; ``$NAME`` as its own word is substituted, and
    ``${NAME}`` anywhere in a word."""
    if word.startswith("$") and not word.startswith(("$$", "${")):
        return env[word[1:]]
    out, i = [], 0
    while i < len(word):
        if word.startswith("$$", i):
            out.append("$")
            i += 2
        elif word.startswith("${", i):
            end = word.index("}", i)
            out.append(env[word[i + 2 : end]])
            i = end + 1
        else:
            assert word[i] != "$", f"unescaped $ in {word!r}"
            out.append(word[i])
            i += 1
    return "".join(out)


def parse_exec(value: str, env: dict[str, str] | None = None) -> list[str]:
    return [_expand_env(w, env or {}) for w in _words(_specifiers(value))]


# ---- tables -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("arg", "rendered"),
    [
        ("plain", "plain"),
        ("--flag=1", "--flag=1"),
        ("a b", '"a b"'),
        ("", '""'),
        ("100%", "100%%"),
        ("$HOME", "$$HOME"),
        ("${X}", "$${X}"),
        (";", "\\;"),
        (";;", ";;"),
        ('say "hi"', '"say \\"hi\\""'),
        ("back\\slash", '"back\\\\slash"'),
        ("it's", '"it\'s"'),
        ("tab\there".replace("\t", " "), '"tab here"'),
        ("ünï😀", "ünï😀"),
        ("-leading-dash", "-leading-dash"),
        ("#not-a-comment", "#not-a-comment"),
    ],
    ids=lambda v: repr(v)[:20],
)
def test_quote_exec_arg_table(arg: str, rendered: str) -> None:
    """Each argv element renders to the expected systemd syntax and parses back."""
    assert escape.quote_exec_arg(arg) == rendered
    assert parse_exec(f"/bin/x {rendered}") == ["/bin/x", arg]


@pytest.mark.parametrize(
    "arg",
    ["a\nb", "a\rb", "tab\tx", "nul\0", "bell\a", "del\x7f", "c1\x85", "surrogate\udcff"],
    ids=repr,
)
def test_control_characters_are_refused(arg: str) -> None:
    """Newlines, tabs, other C0/C1 controls, DEL and lone surrogates raise UnitConfigError."""
    with pytest.raises(UnitConfigError, match=r"not allowed|UTF-8"):
        escape.quote_exec_arg(arg)


def test_env_ref_renders_a_substituted_variable() -> None:
    """EnvRef is the only way to emit a $ that systemd expands."""
    line = escape.exec_command_line(["/bin/kill", "-HUP", escape.EnvRef("MAINPID")])
    assert line == "/bin/kill -HUP $MAINPID"
    assert parse_exec(line, {"MAINPID": "42"}) == ["/bin/kill", "-HUP", "42"]
    with pytest.raises(UnitConfigError):
        escape.EnvRef("1BAD")


def test_env_ref_with_a_prefix_is_one_word() -> None:
    """EnvRef(prefix=...) renders ``prefix${NAME}`` (one argument, systemd.service(5)); the
    prefix is escaped like any argument, and one that would need quotes is refused."""
    ref = escape.EnvRef("MAINPID", prefix="--pid=")
    line = escape.exec_command_line(["/usr/bin/tail", ref, "-f", "/dev/null"])
    assert line == "/usr/bin/tail --pid=${MAINPID} -f /dev/null"
    assert parse_exec(line, {"MAINPID": "42"}) == ["/usr/bin/tail", "--pid=42", "-f", "/dev/null"]
    odd = escape.quote_exec_arg(escape.EnvRef("X", prefix="100%$"))
    assert odd == "100%%$$${X}"
    assert parse_exec(f"/bin/x {odd}", {"X": "7"}) == ["/bin/x", "100%$7"]
    for bad in ("a b", 'q"', "back\\", "semi;", "nl\n"):
        with pytest.raises(UnitConfigError):
            escape.EnvRef("X", prefix=bad)


def test_ignore_failure_prefix() -> None:
    """ignore_failure=True writes systemd.service(5)'s "-" before the program."""
    line = escape.exec_command_line(
        ["/bin/kill", "-TERM", escape.EnvRef("MAINPID")], ignore_failure=True
    )
    assert line == "-/bin/kill -TERM $MAINPID"


@pytest.mark.parametrize(
    "program",
    ["relative/prog", "prog", "/usr/../bin/x", "/usr//bin/x", "/usr/bin/", "/usr/./bin/x", ""],
)
def test_program_must_be_absolute_and_normalized(program: str) -> None:
    """config_parse_exec refuses non-normalized paths; we refuse them (and relative) first."""
    with pytest.raises(UnitConfigError):
        escape.exec_command_line([program, "arg"])


def test_overlong_command_line_is_refused() -> None:
    """systemd caps the specifier-expanded line at PATH_MAX; we refuse before that."""
    with pytest.raises(UnitConfigError, match="bytes"):
        escape.exec_command_line(["/bin/echo", "x" * 5000])


@pytest.mark.parametrize(
    ("value", "expected"),
    [("plain", "plain"), ("50% off", "50%% off"), ("ünï", "ünï"), ("$X", "$X")],
)
def test_escape_value(value: str, expected: str) -> None:
    """Plain values double % only ($ is not expanded outside Exec lines)."""
    assert escape.escape_value(value, what="Description") == expected


@pytest.mark.parametrize("value", [" lead", "trail ", "end\\", "nl\n"], ids=repr)
def test_escape_value_refusals(value: str) -> None:
    """Values systemd would strip, continue, or split are refused."""
    with pytest.raises(UnitConfigError):
        escape.escape_value(value, what="Description")


def test_quote_environment() -> None:
    """Environment= is quote-aware with C escapes; % doubled, $ left alone."""
    rendered = escape.quote_environment("A", 'x "y" \\ 5% $HOME')
    assert rendered == '"A=x \\"y\\" \\\\ 5%% $HOME"'
    assert _words(_specifiers(rendered)) == ['A=x "y" \\ 5% $HOME']
    with pytest.raises(UnitConfigError):
        escape.quote_environment("1A", "x")
    with pytest.raises(UnitConfigError):
        escape.quote_environment("A", "x\ny")


# ---- properties -------------------------------------------------------------------------
printable = st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=12)


@given(st.lists(printable, max_size=6))
def test_any_printable_argv_round_trips(argv: list[str]) -> None:
    """Any argv of printable strings renders to a line the reference parser reads back
    exactly (or is refused with UnitConfigError)."""
    full = ["/usr/bin/prog", *argv]
    try:
        line = escape.exec_command_line(full)
    except UnitConfigError:
        return
    assert parse_exec(line) == full


@given(st.text(max_size=8).filter(lambda s: any(ord(c) < 32 or ord(c) == 127 for c in s)))
def test_any_control_character_is_refused(arg: str) -> None:
    """Strings with a C0 control or DEL never render."""
    with pytest.raises(UnitConfigError):
        escape.quote_exec_arg(arg)


_SLOW = settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
@_SLOW
@given(argv=st.lists(printable, min_size=1, max_size=5))
def test_systemd_analyze_accepts_rendered_lines(tmp_path: Path, argv: list[str]) -> None:
    """systemd's own parser (systemd-analyze verify, 252) accepts every rendered ExecStart
    without warnings."""
    unit = tmp_path / "prop.service"
    line = escape.exec_command_line([sys.executable, *argv])
    unit.write_text(f"[Service]\nExecStart={line}\n", encoding="utf-8")
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", "--recursive-errors=yes", str(unit)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0 and not result.stderr.strip(), (line, result.stderr)
