"""The generated hardened units really serve: DynamicUser, PrivateNetwork=yes, ProtectSystem."""

from __future__ import annotations

import uuid

import pytest

from integration.helpers import PYTHON, gen_units, http_get, main_pid, wait_state
from integration.sandbox import Sandbox, Units, free_port

UNIX_GET = (
    "import socket, sys; s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); "
    "s.sendall(b'GET / HTTP/1.1\\r\\nHost: t\\r\\nConnection: close\\r\\n\\r\\n'); "
    "print(s.makefile('rb').read().decode())"
)


@pytest.mark.parametrize(
    ("level", "network"),
    [("strict", False), ("standard", True)],
    ids=["strict-no-network", "standard"],
)
def test_hardened_units_serve(sandbox: Sandbox, units: Units, level: str, network: bool) -> None:
    """Generated units at this hardening level answer over TCP and a UNIX socket, as a
    dynamic non-root user, in a private network namespace when --no-network is given."""
    name = units.name(f"sdact-hard-{level}")
    port = free_port()
    path = f"/run/{name}-{uuid.uuid4().hex[:8]}.sock"
    options = ["--hardening", level, *([] if network else ["--no-network"])]
    files = gen_units(
        name, listens=[(f"127.0.0.1:{port}", "http"), (path, "http")], options=options
    )
    units.install(files)
    service = f"{name}.service"
    props = sandbox.show(service, "DynamicUser", "PrivateNetwork", "ProtectSystem")
    assert props["DynamicUser"] == "yes"
    assert props["PrivateNetwork"] == ("no" if network else "yes")
    assert props["ProtectSystem"] == "strict"  # DynamicUser=yes implies it (systemd.exec(5))
    sandbox.systemctl("start", f"{name}.socket")

    status, headers, _ = http_get("127.0.0.1", port)
    assert status == 200
    pid = int(headers["x-pid"])
    wait_state(sandbox, service, "active")
    assert main_pid(sandbox, service) == pid
    out = sandbox.run([PYTHON, "-c", UNIX_GET, path]).stdout
    assert f"X-Pid: {pid}" in out and "200 OK" in out

    proc_status = sandbox.read_file(f"/proc/{pid}/status")
    uid = next(line.split()[1] for line in proc_status.splitlines() if line.startswith("Uid:"))
    assert uid != "0"
    own_net = sandbox.run(["readlink", f"/proc/{pid}/ns/net"]).stdout
    init_net = sandbox.run(["readlink", "/proc/1/ns/net"]).stdout
    assert (own_net != init_net) == (not network)
