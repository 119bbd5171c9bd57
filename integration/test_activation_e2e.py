"""Socket activation end to end: generated units, a real systemd, the example app."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable

from integration.helpers import PYTHON, gen_units, http_get, main_pid, wait_state
from integration.sandbox import Sandbox, Units, free_port, wait_until


def test_socket_starts_service_ready_after_ready(
    sandbox: Sandbox, units: Units, measurements: Callable[[str], None]
) -> None:
    """Starting only the socket and connecting starts the service, which gets its socket by
    name and answers; ActiveState turns active only after READY=1, with StatusText from
    STATUS=."""
    port = free_port()
    gate = f"/run/sdgate-{uuid.uuid4().hex}"
    files = gen_units(
        units.name("sdact-act"),
        listens=[(f"127.0.0.1:{port}", "http")],
        args=["--name", "http", "--ready-gate", gate],
    )
    assert set(files) == {units.name("sdact-act.socket"), units.name("sdact-act.service")}
    units.install(files)
    sandbox.systemctl("start", units.name("sdact-act.socket"))
    assert sandbox.show(units.name("sdact-act.service"), "ActiveState")["ActiveState"] == "inactive"

    status, headers, body = http_get("127.0.0.1", port)  # triggers the start
    assert status == 200
    pid = int(headers["x-pid"])
    state = sandbox.show(
        units.name("sdact-act.service"), "ActiveState", "SubState", "MainPID", "StatusText"
    )
    # Serving, but READY=1 not sent yet: systemd still says "activating".
    assert state["ActiveState"] == "activating", state
    assert state["SubState"] == "start"
    assert state["StatusText"] == ""
    assert int(state["MainPID"]) == pid
    assert body == f"pid={pid} gen=0\n"

    sandbox.write_file(gate, "")
    wait_state(sandbox, units.name("sdact-act.service"), "active", sub="running")
    text = sandbox.show(units.name("sdact-act.service"), "StatusText")["StatusText"]
    assert text == f"serving 1 socket(s) as pid {pid}, gen 0"
    assert http_get("127.0.0.1", port)[1]["x-pid"] == str(pid)
    measurements(f"activation: first request answered by pid {pid}; READY -> active; {text!r}")


def test_two_named_sockets_reach_one_service(sandbox: Sandbox, units: Units) -> None:
    """Two fd names become two socket units feeding one service; it finds each by name."""
    web, admin = free_port(), free_port()
    files = gen_units(
        units.name("sdact-two"),
        listens=[(f"127.0.0.1:{web}", "web"), (f"127.0.0.1:{admin}", "admin")],
        args=[],
    )
    assert set(files) == {
        units.name("sdact-two.socket"),
        units.name("sdact-two-admin.socket"),
        units.name("sdact-two.service"),
    }
    units.install(files)
    sandbox.systemctl("start", units.name("sdact-two.socket"), units.name("sdact-two-admin.socket"))
    _, h1, _ = http_get("127.0.0.1", admin)
    _, h2, _ = http_get("127.0.0.1", web)
    assert h1["x-pid"] == h2["x-pid"] == str(main_pid(sandbox, units.name("sdact-two.service")))
    fds = sandbox.run(["ls", f"/proc/{h1['x-pid']}/fd"]).stdout.split()
    assert {"3", "4"} <= set(fds)


def test_execstart_round_trip(sandbox: Sandbox, units: Units) -> None:
    """Hostile arguments in a generated ExecStart arrive in the program's argv exactly."""
    hostile = [
        "plain",
        "with space",
        'double"quote',
        "single'quote",
        "100%",
        "%n%%%i",
        "$HOME",
        "${HOME}$$",
        "semi;colon",
        "back\\slash\\",
        "\\n not a newline",
        "unicodé ☃ 日本",
        "",
        "-dash",
        "*glob?",
        "'",
    ]
    code = (
        "import json, sys; from sdactivate import notify; "
        "print('ARGV ' + json.dumps(sys.argv[1:]), flush=True); "
        "notify.ready(status='printed'); import signal; signal.pause()"
    )
    files = gen_units(
        units.name("sdact-argv"),
        listens=[(f"127.0.0.1:{free_port()}", "http")],
        program=PYTHON,
        script=None,
        args=["-c", code, *hostile],
    )
    units.install(files)
    sandbox.systemctl("start", units.name("sdact-argv.service"))
    wait_state(sandbox, units.name("sdact-argv.service"), "active")

    def printed() -> str | None:
        out = sandbox.run(
            ["journalctl", "-u", units.name("sdact-argv.service"), "-o", "cat", "-q"]
        ).stdout
        lines = [line for line in out.splitlines() if line.startswith("ARGV ")]
        return lines[-1] if lines else None

    line = wait_until(printed, timeout=10, what="the ARGV line in the journal")
    assert line is not None
    assert json.loads(line.removeprefix("ARGV ")) == hostile
