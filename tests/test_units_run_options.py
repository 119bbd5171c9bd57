"""`gen-units --supervise` reaches every `sdactivate run` option: passed through into
ExecStart= so that run's own parser reads back the same values, checked at generation time
by the same parsers, and the unit's timeouts sized from them."""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from sdactivate.cli import build_parser
from sdactivate.errors import UnitConfigError
from sdactivate.supervisor import settings
from sdactivate.units.build import Options, build

PY = sys.executable
needs_analyze = pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd")


def _which(name: str) -> str | None:
    return {"python3": PY}.get(name)


def gen(**kw: object) -> dict[str, str]:
    base: dict[str, object] = {
        "name": "myapp",
        "systemd_version": 252,
        "ports": (8080,),
        "supervise": True,
        "command": ("/usr/bin/true",),
    }
    base |= kw
    return build(Options(**base), which=_which, python="python3")  # type: ignore[arg-type]


def _lines(text: str, key: str) -> list[str]:
    return [line.split("=", 1)[1] for line in text.splitlines() if line.startswith(key + "=")]


def _subparser(name: str) -> argparse.ArgumentParser:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    sub: argparse.ArgumentParser = action.choices[name]
    return sub


def _exec_start_as_run_args(service: str) -> argparse.Namespace:
    """ExecStart= unquoted as systemd does for these words (systemd.service(5): "..." with
    \\-escapes, %% and $$ for % and $), then parsed by `sdactivate run`'s own parser."""
    (line,) = _lines(service, "ExecStart")
    argv = shlex.split(line.replace("%%", "%").replace("$$", "$"))
    assert argv[1:4] == ["-m", "sdactivate", "run"], argv
    return _subparser("run").parse_args(argv[4:])


def test_every_run_option_is_a_gen_units_option() -> None:
    """Each option `sdactivate run --help` lists exists in gen-units under the same name,
    except the ones gen-units covers its own way (--listen/--port, --fdstore); a new run
    option fails this test until the generator passes it on."""
    covered_otherwise = {"-h", "--help", "--listen", "--fdstore"}
    run = {s for a in _subparser("run")._actions for s in a.option_strings}
    gen_units = {s for a in _subparser("gen-units")._actions for s in a.option_strings}
    assert run - covered_otherwise <= gen_units, run - covered_otherwise - gen_units
    assert {"--ready-timeout", "--health", "--stop-signal", "--drain-timeout"} <= run


def test_run_options_round_trip_through_exec_start() -> None:
    """Values written into ExecStart= are what `sdactivate run` parses back, with a health
    command full of shell and systemd syntax ($, %, quotes, backslash, ;)."""
    health = "curl -fsS \"http://$SDACTIVATE_HEALTH_ADDR/x?a=1&b=100%\" || test '\\' ; exit 1"
    files = gen(
        ready_timeout=1234567.25,
        drain_timeout=0.5,
        stop_signal=signal.SIGQUIT,
        health=health,
        health_timeout=7,
        startup_grace=2.5,
        startup_nice=5,
    )
    args = _exec_start_as_run_args(files["myapp.service"])
    assert args.ready_timeout == 1234567.25
    assert args.drain_timeout == 0.5
    assert args.stop_signal == signal.SIGQUIT
    assert args.health == health
    assert args.health_timeout == 7
    assert args.startup_grace == 2.5
    assert args.startup_nice == 5
    assert args.argv == ["--", "/usr/bin/true"]


def test_defaults_are_run_defaults_and_not_written() -> None:
    """Without the options, ExecStart= carries only --drain-timeout (= --timeout-stop) and
    run's parser fills in the same defaults as settings (one home)."""
    service = gen()["myapp.service"]
    args = _exec_start_as_run_args(service)
    assert (args.ready_timeout, args.drain_timeout) == (settings.READY_TIMEOUT, 30)
    assert args.stop_signal == settings.STOP_SIGNAL and args.health is None
    assert (args.health_timeout, args.startup_grace) == (
        settings.HEALTH_TIMEOUT,
        settings.STARTUP_GRACE,
    )
    assert "TimeoutStartSec" not in service and "KillSignal" not in service


@pytest.mark.parametrize("target", [252, 257])
def test_timeouts_are_sized_from_the_run_options(target: int) -> None:
    """TimeoutStopSec= = drain + 10 s; TimeoutStartSec= = drain + ready + health + 10 s
    (systemd times the start and every reload with it); on 252 the ExecReload= client waits
    a little less, not its own default of 90 s."""
    service = gen(ready_timeout=120, drain_timeout=45, health="true", systemd_version=target)[
        "myapp.service"
    ]
    assert _lines(service, "TimeoutStopSec") == ["55s"]
    assert _lines(service, "TimeoutStartSec") == ["185s"]  # 45 + 120 + 10 (health) + 10
    reload = _lines(service, "ExecReload")
    if target < 253:
        assert reload[0].endswith("reload --pid $MAINPID --timeout 180")
    else:
        assert reload == []
    short = gen(ready_timeout=5, systemd_version=target)["myapp.service"]
    assert _lines(short, "TimeoutStartSec") == ["45s"]  # 30 + 5 + 10


def test_exec_reload_timeout_is_one_the_reload_client_accepts() -> None:
    """On 252 a start timeout past a day still writes an ExecReload= whose --timeout
    `sdactivate reload` accepts (it refuses more than a day with exit 2, and every
    `systemctl reload` would fail)."""
    service = gen(ready_timeout=50000, drain_timeout=50000)["myapp.service"]
    assert _lines(service, "TimeoutStartSec") == ["100010s"]
    (line,) = _lines(service, "ExecReload")
    argv = shlex.split(line.replace("$MAINPID", "4242"))  # systemd.service(5): $MAINPID
    assert argv[1:5] == ["-m", "sdactivate", "reload", "--pid"], argv
    args = _subparser("reload").parse_args(argv[4:])  # exit 2 (SystemExit) if refused
    assert args.timeout == settings.RELOAD_TIMEOUT_MAX


def test_timeout_stop_is_the_drain_timeout_unless_both_disagree() -> None:
    """--timeout-stop stays the drain timeout; --drain-timeout is the same setting by run's
    name; both with different values is refused."""
    assert gen(timeout_stop=20)["myapp.service"] == gen(timeout_stop=20)["myapp.service"]
    args = _exec_start_as_run_args(gen(timeout_stop=20)["myapp.service"])
    assert args.drain_timeout == 20
    with pytest.raises(UnitConfigError, match="give one of them"):
        gen(timeout_stop=20, drain_timeout=40)
    assert _lines(gen(timeout_stop=40, drain_timeout=40)["myapp.service"], "TimeoutStopSec") == [
        "50s"
    ]


@pytest.mark.parametrize(
    ("sig", "kill_mode", "kill_signal"),
    [
        (signal.SIGTERM, ["control-group"], []),
        (signal.SIGINT, ["control-group"], ["SIGINT"]),
        (signal.SIGQUIT, ["mixed"], []),
        (signal.SIGUSR2, ["mixed"], []),
    ],
    ids=["TERM", "INT", "QUIT", "USR2"],
)
def test_stop_signal_reaches_the_generations_and_stops_the_supervisor(
    sig: signal.Signals, kill_mode: list[str], kill_signal: list[str]
) -> None:
    """systemctl stop must stop the supervisor (it stops on TERM/INT) and give the
    generations their stop signal: TERM and INT go to every process (control-group,
    KillSignal=); any other is relayed by the supervisor alone (mixed)."""
    service = gen(stop_signal=sig)["myapp.service"]
    assert _lines(service, "KillMode") == kill_mode
    assert _lines(service, "KillSignal") == kill_signal


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"ready_timeout": float("inf")}, "--ready-timeout: inf"),
        ({"ready_timeout": float("nan")}, "--ready-timeout: nan"),
        ({"drain_timeout": 0}, "--drain-timeout: 0"),
        ({"health_timeout": -1, "health": "true"}, "--health-timeout: -1"),
        ({"startup_grace": 1e300}, "--startup-grace: 1e"),
        ({"stop_signal": 0}, "--stop-signal: unknown signal 0"),
        ({"stop_signal": signal.SIGSTOP}, "--stop-signal: .*cannot end"),
        ({"health": "a\nb"}, "--health: newline"),
        ({"health": "  "}, "empty command"),
        ({"health_timeout": 3}, "--health-timeout only applies with --health"),
        ({"startup_grace": 3, "startup_nice": 0}, "--startup-nice 0"),
    ],
    ids=lambda v: str(v)[:30],
)
def test_bad_run_values_are_refused_at_generation_time(kw: dict[str, object], match: str) -> None:
    """What `sdactivate run` would refuse (or could not mean) is refused before writing."""
    with pytest.raises(UnitConfigError, match=match):
        gen(**kw)


@pytest.mark.parametrize(
    "kw",
    [
        {"ready_timeout": 5},
        {"drain_timeout": 5},
        {"stop_signal": signal.SIGINT},
        {"health": "true"},
        {"startup_grace": 2},
    ],
    ids=str,
)
def test_run_options_need_supervise(kw: dict[str, object]) -> None:
    """Without --supervise there is no `sdactivate run` to pass them to."""
    with pytest.raises(UnitConfigError, match="only applies with --supervise"):
        gen(supervise=False, **kw)


def _gen_units_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PY, "-m", "sdactivate", "gen-units", "myapp", "--port", "8080", "--supervise",
         "--systemd-version", "252", "--stdout", "--no-preflight", *args, "--", "/bin/true"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("--ready-timeout", "inf"), "--ready-timeout: 'inf': seconds must be > 0"),
        (("--drain-timeout", "1e300"), "--drain-timeout: '1e300'"),
        (("--health-timeout", "x", "--health", "true"), "not a number of seconds: 'x'"),
        (("--stop-signal", "NOPE"), "--stop-signal: unknown signal 'NOPE'"),
        (("--stop-signal", "STOP"), "--stop-signal: 'STOP': SIGSTOP suspends"),
    ],
    ids=["inf", "1e300", "x", "NOPE", "STOP"],
)
def test_cli_refuses_with_runs_own_message(args: tuple[str, ...], says: str) -> None:
    """gen-units says what `sdactivate run` would say, in one line, exit 2."""
    result = _gen_units_cli(*args)
    assert result.returncode == 2, result.stdout
    assert result.stderr.count("\n") == 1 and says in result.stderr, result.stderr
    run = subprocess.run(
        [PY, "-m", "sdactivate", "run", *args, "--", "/bin/true"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert run.returncode == 2 and says.split(": ", 1)[1] in run.stderr, run.stderr


@pytest.mark.parametrize("health", ["-x", "--version", "-"], ids=["dash-x", "dashdash", "dash"])
def test_a_health_command_starting_with_a_dash_reaches_run(health: str) -> None:
    """A --health command that starts with '-' is written as --health=CMD: run's parser
    (and gen-units', reading the header's command) would take `--health -x` for a missing
    value and exit 2 at every start of the unit."""
    service = gen(health=health)["myapp.service"]
    assert _exec_start_as_run_args(service).health == health
    header = next(line for line in service.splitlines() if "sdactivate gen-units" in line)
    argv = shlex.split(header.lstrip("# "))
    regenerated = _subparser("gen-units").parse_args(argv[2:])
    assert regenerated.health == health


def test_header_command_reads_back_values_starting_with_a_dash() -> None:
    """The header's regenerate command gives --fdname and --description values that start
    with '-' as --flag=VALUE, so gen-units reads it back."""
    service = gen(supervise=False, fdname="-http", description="-- my app")["myapp.service"]
    header = next(line for line in service.splitlines() if "sdactivate gen-units" in line)
    args = _subparser("gen-units").parse_args(shlex.split(header.lstrip("# "))[2:])
    assert (args.fdname, args.description) == ("-http", "-- my app")


def test_cli_passes_the_options_and_records_them() -> None:
    """The CLI spellings (signal names, numbers) land in ExecStart= and in the header."""
    result = _gen_units_cli(
        "--ready-timeout", "90", "--stop-signal", "int", "--health", "echo $HOME %n"
    )
    assert result.returncode == 0, result.stderr
    assert "--ready-timeout 90 --stop-signal SIGINT --health 'echo $HOME %n'" in result.stdout
    assert '--stop-signal SIGINT --health "echo $$HOME %%n"' in result.stdout


@needs_analyze
@pytest.mark.parametrize(
    "kw",
    [
        {"ready_timeout": 120, "health": "curl -fsS http://$SDACTIVATE_HEALTH_ADDR/ %n"},
        {"stop_signal": signal.SIGINT, "drain_timeout": 5},
        {"stop_signal": signal.SIGQUIT, "systemd_version": 257},
    ],
    ids=["health", "INT", "QUIT-257"],
)
def test_run_option_units_verify_clean(tmp_path: Path, kw: dict[str, object]) -> None:
    """systemd-analyze verify accepts the units with the new settings without a word."""
    files = gen(command=(PY, "-c", "pass"), **kw)
    for name, text in files.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    runtime = tmp_path / "xdg"
    runtime.mkdir(mode=0o700)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "XDG_RUNTIME_DIR": str(runtime)}
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", "--recursive-errors=yes",
         *(str(tmp_path / name) for name in files)],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    lines = [
        line
        for line in result.stderr.splitlines()
        if "notify-reload" not in line  # a 257 target verified by the host's 252
    ]
    assert not lines, result.stderr


# ---- socket files: SocketMode=/SocketUser=/SocketGroup= -------------------------------------
def _sockets(**kw: object) -> dict[str, str]:
    base: dict[str, object] = {"supervise": False, "ports": (), "listens": (("/run/a.sock", None),)}
    return gen(**(base | kw))


def test_socket_files_say_who_may_connect_by_default() -> None:
    """A socket unit with a socket file writes SocketMode=0666 (systemd's default) with a
    comment naming the options that restrict it; one without a file writes nothing."""
    sock = _sockets()["myapp.socket"]
    assert _lines(sock, "SocketMode") == ["0666"]
    assert "--socket-mode 0660 --socket-group GROUP" in " ".join(sock.split())
    assert "SocketMode" not in gen(supervise=False)["myapp.socket"]
    assert "SocketMode" not in _sockets(listens=(("@abstract", None),))["myapp.socket"]


def test_socket_mode_user_group_options() -> None:
    """--socket-mode/--socket-user/--socket-group go to every socket unit with a file."""
    files = _sockets(
        listens=(("/run/a.sock", None), ("/run/b.sock", "admin"), ("127.0.0.1:9", "tcp")),
        socket_mode=0o660,
        socket_user="www-data",
        socket_group="4242",
    )
    for name in ("myapp.socket", "myapp-admin.socket"):
        assert _lines(files[name], "SocketMode") == ["0660"]
        assert _lines(files[name], "SocketUser") == ["www-data"]
        assert _lines(files[name], "SocketGroup") == ["4242"]
    assert "Socket" not in "".join(_lines(files["myapp-tcp.socket"], "SocketMode"))


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"listens": (("127.0.0.1:9", None),), "socket_mode": 0o600}, "applies to socket files"),
        ({"socket_mode": 0o10000}, "not an access mode"),
        ({"socket_user": "a b"}, "not a user/group name"),
        ({"socket_group": "%n"}, "not a user/group name"),
        ({"socket_user": "www-data", "user": True}, "per-user manager cannot give a file away"),
        ({"socket_group": "nogroup"}, "overflow user/group"),
        ({"socket_user": "4294967295"}, "not a valid uid/gid"),
        ({"socket_group": "65535"}, "not a valid uid/gid"),
        ({"socket_user": "4294967296"}, "not a valid uid/gid"),
    ],
    ids=[
        "no-file",
        "mode",
        "user",
        "group-specifier",
        "user-manager",
        "nogroup",
        "uid-invalid",
        "gid-16-bit-invalid",
        "uid-past-32-bits",
    ],
)
def test_socket_file_options_refused(kw: dict[str, object], match: str) -> None:
    """Options that could not apply, or values systemd would not read, are refused."""
    with pytest.raises(UnitConfigError, match=match):
        _sockets(**kw)


def test_socket_mode_cli() -> None:
    """--socket-mode takes octal as typed (660 or 0660); anything else is one line, exit 2."""
    result = subprocess.run(
        [PY, "-m", "sdactivate", "gen-units", "myapp", "--listen", "/run/a.sock",
         "--socket-mode", "660", "--socket-group", "web", "--systemd-version", "252",
         "--stdout", "--no-preflight", "--", "/bin/true"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "SocketMode=0660\n" in result.stdout and "SocketGroup=web\n" in result.stdout
    assert "--socket-mode 0660 --socket-group web" in result.stdout
    bad = subprocess.run(
        [PY, "-m", "sdactivate", "gen-units", "myapp", "--listen", "/run/a.sock",
         "--socket-mode", "u+rw", "--systemd-version", "252", "--stdout", "--", "/bin/true"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert bad.returncode == 2 and "--socket-mode 'u+rw'" in bad.stderr, bad.stderr


def test_socket_owner_that_does_not_exist_here_is_refused() -> None:
    """A unit for this machine whose --socket-user does not exist here: exit 2, one line,
    nothing written (systemd would fail the socket unit at its first start)."""
    result = subprocess.run(
        [PY, "-m", "sdactivate", "gen-units", "myapp", "--listen", "/run/a.sock",
         "--socket-user", "sdactivate-no-such-account", "--hardening", "off",
         "--systemd-version", "252", "--stdout", "--", "/bin/true"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert result.stdout == ""
    assert "--socket-user 'sdactivate-no-such-account': no such user" in result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr


@needs_analyze
def test_socket_file_units_verify_clean(tmp_path: Path) -> None:
    """systemd-analyze verify accepts SocketMode=/SocketUser=/SocketGroup=."""
    files = _sockets(command=(PY, "-c", "pass"), socket_mode=0o660, socket_user="www-data",
                     socket_group="www-data")  # fmt: skip
    for name, text in files.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *(str(tmp_path / n) for n in files)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0 and not result.stderr, result.stderr
