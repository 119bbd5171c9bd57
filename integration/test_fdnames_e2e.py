"""fd names against the real manager of each release: which names PID1 takes in
``FileDescriptorName=`` (systemd.socket(5)) and ``FDNAME=`` (sd_notify(3)) is the rule of
sdactivate._listen_env.fd_name_problem (systemd's fdname_is_valid()): spaces are fine;
control characters, non-ASCII, ':' and more than 255 characters are not (PID1 ignores such an
FDNAME= and names the fd ``stored``)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from typing import Any

from integration.helpers import PYTHON, sandbox_version, wait_state
from integration.sandbox import CODE_DIR, Sandbox, Units, free_port, wait_until
from sdactivate._listen_env import fd_name_problem

SOCKET_NAME = "a b c"  # spaces inside: FileDescriptorName= takes them
STORED = ["web", "a b", "~!#$&*()=+,.;<>?@[]^_`{|}", "x" * 255, "x" * 256, "a\tb"]
STORED += ["caf\u00e9", "del\x7f", "a:b", "\x1b[0m"]


def _reports(sandbox: Sandbox, unit: str) -> list[dict[str, Any]]:
    out = sandbox.run(["journalctl", "-u", unit, "-o", "cat", "--no-pager"]).stdout
    return [json.loads(line[6:]) for line in out.splitlines() if line.startswith("PROBE ")]


def test_fd_names_the_manager_takes_are_ours(
    sandbox: Sandbox, units: Units, measurements: Callable[[str], None]
) -> None:
    """A socket unit with FileDescriptorName=a b c passes that name; after a restart the fds
    the service stored come back under their FDNAME= exactly when fd_name_problem takes the
    name, else as 'stored'."""
    version = sandbox_version(sandbox)
    probe = f"{CODE_DIR}/integration/probes/fdnames.py"
    arg = json.dumps(STORED).encode().hex()
    units.install(
        {
            "sdfn.socket": (
                f"[Socket]\nListenStream=127.0.0.1:{free_port()}\n"
                f"FileDescriptorName={SOCKET_NAME}\n"
            ),
            "sdfn.service": (
                "[Service]\nType=notify\nFileDescriptorStoreMax=32\n"
                f"Environment=PYTHONPATH={CODE_DIR}\nExecStart={PYTHON} {probe} {arg}\n"
            ),
        }
    )
    sandbox.systemctl("start", "sdfn.socket")
    sandbox.systemctl("start", "sdfn.service")
    wait_state(sandbox, "sdfn.service", "active")
    sandbox.systemctl("restart", "sdfn.service")
    wait_state(sandbox, "sdfn.service", "active")
    reports = wait_until(
        lambda: (lambda r: r if len(r) >= 2 else None)(_reports(sandbox, "sdfn.service")),
        timeout=15,
        what="both starts' reports",
    )
    assert reports[0]["names"] == [SOCKET_NAME], reports
    names = reports[1]["names"]
    assert names[0] == SOCKET_NAME, reports  # socket-unit fds come first
    ours = Counter(n if fd_name_problem(n) is None else "stored" for n in STORED)
    measurements(f"systemd {version}: {sum(ours.values())} stored, {ours['stored']} as 'stored'")
    assert Counter(names[1:]) == ours, reports
    assert 0 < ours["stored"] < len(STORED)  # both answers occur
