"""issue 16 item 4: another user floods the supervisor's notify socket (its name is
world-readable in /proc/net/unix), and `systemctl reload` and `systemctl stop` still
complete on time, with a bounded number of log lines about the flood."""

from __future__ import annotations

import select
import subprocess
import time
import uuid
from collections.abc import Callable

from integration.helpers import PYTHON, gen_units, http_get, main_pid, timed, wait_state
from integration.sandbox import Sandbox, Units, free_port

# Sends READY=1 and oversized datagrams as fast as it can (non-blocking, a full queue is
# retried at once) until the stop file exists or its time is up; prints a line once it is
# under way, and at the end how many it sent.
FLOOD = r"""
import os, socket, sys, time
addr = b"\0" + sys.argv[1].encode()
stop, end = sys.argv[2], time.monotonic() + float(sys.argv[3])
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.setblocking(False)
payloads = (b"READY=1", b"READY=1\nX=" + b"y" * 8000, b"WATCHDOG=1")
sent = tries = 0
while tries % 1000 or (not os.path.exists(stop) and time.monotonic() < end):
    if tries == 1000:
        print("flooding", flush=True)
    tries += 1
    try:
        s.sendto(payloads[tries % 3], addr)
        sent += 1
    except OSError:  # a full queue (EAGAIN), or the supervisor is gone
        pass
print(sent)
"""
FLOODERS = 4
RELOADS = 5
RELOAD_BOUND = 10.0  # seconds; unflooded, a reload of this unit takes well under 1 s
STOP_BOUND = 10.0
LOG_INTERVAL = 10.0  # sdactivate._generation.LOG_INTERVAL


def notify_address(sandbox: Sandbox, pid: int) -> str:
    """The supervisor's notify socket, found as any user finds it: in /proc/net/unix."""
    table = sandbox.run(["cat", "/proc/net/unix"]).stdout
    prefix = f"@sdactivate-notify/{pid}/"
    names = [tok for line in table.splitlines() for tok in line.split()[-1:]]
    return next(name[1:] for name in names if name.startswith(prefix))


def test_notify_flood_from_nobody(
    sandbox: Sandbox, units: Units, measurements: Callable[[str], None]
) -> None:
    """4 processes of `nobody` flood the notify socket: 5 reloads hand over and a stop ends
    the unit, each within its bound; the drops are logged a bounded number of times."""
    name = f"sdflood-{uuid.uuid4().hex[:8]}"
    service = f"{name}.service"
    port = free_port()
    units.install(
        gen_units(
            name,
            listens=[(f"127.0.0.1:{port}", "http")],
            options=["--supervise", "--python", PYTHON],
        )
    )
    sandbox.systemctl("start", f"{name}.socket", service)
    wait_state(sandbox, service, "active", sub="running")
    address = notify_address(sandbox, main_pid(sandbox, service))
    stop_file = f"/run/{name}.flood-stop"
    argv = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", PYTHON, "-c"]
    started = time.monotonic()
    flooders = [
        sandbox.popen([*argv, FLOOD, address, stop_file, "120"], stdout=subprocess.PIPE, text=True)
        for _ in range(FLOODERS)
    ]
    try:
        for flooder in flooders:
            assert flooder.stdout is not None
            assert select.select([flooder.stdout], [], [], 30)[0], "a flooder did not start"
            assert flooder.stdout.readline() == "flooding\n"
        reloads = [timed(lambda: sandbox.systemctl("reload", service)) for _ in range(RELOADS)]
        after = sandbox.show(service, "StatusText", "ActiveState")
        assert after["StatusText"].startswith(f"generation {RELOADS + 1} "), after
        assert http_get("127.0.0.1", port)[0] == 200
        stop_s = timed(lambda: sandbox.systemctl("stop", service))
        flood_s = time.monotonic() - started
    finally:
        sandbox.write_file(stop_file, "")
        outputs = [f.communicate(timeout=60)[0].split() for f in flooders]
        sent = [int(out[-1]) if out and out[-1].isdigit() else 0 for out in outputs]
        sandbox.run(["rm", "-f", stop_file])
    journal = sandbox.journal(service, lines=2000)
    lines = [line for line in journal.splitlines() if "notify message" in line]
    measurements(
        f"notify flood: {FLOODERS} x nobody sent {sum(sent)} datagrams in {flood_s:.1f} s;"
        f" {RELOADS} reloads took {', '.join(f'{r:.2f}' for r in reloads)} s, stop {stop_s:.2f} s;"
        f" {len(lines)} log lines about it"
    )
    assert sum(sent) > 1000, sent  # it was a flood
    assert max(reloads) < RELOAD_BOUND and stop_s < STOP_BOUND, (reloads, stop_s)
    # the first drop, then at most one summary line per interval
    assert 1 <= len(lines) <= 2 + flood_s / LOG_INTERVAL, lines
