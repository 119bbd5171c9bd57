"""Accept=yes (one service instance per connection) and datagram sockets via listeners()."""

from __future__ import annotations

import socket

from helpers import APP, PYTHON, gen_units, http_get, main_pid, wait_state
from sandbox import CODE_DIR, Sandbox, Units, free_port


def test_accept_yes_one_process_per_connection(sandbox: Sandbox, units: Units) -> None:
    """With Accept=yes each connection starts its own instance, which gets the connected
    socket through listeners() (fd name "connection"), answers, and exits."""
    port = free_port()
    units.install(
        {
            "sdact-acc.socket": f"[Socket]\nListenStream=127.0.0.1:{port}\nAccept=yes\n",
            "sdact-acc@.service": (
                f"[Service]\nExecStart={PYTHON} {APP}\nEnvironment=PYTHONPATH={CODE_DIR}\n"
                "DynamicUser=yes\n"
            ),
        }
    )
    sandbox.systemctl("start", "sdact-acc.socket")
    pids = set()
    for _ in range(3):
        status, headers, body = http_get("127.0.0.1", port)
        assert status == 200 and body.startswith(f"pid={headers['x-pid']} ")
        pids.add(headers["x-pid"])
    assert len(pids) == 3
    accepted = sandbox.show("sdact-acc.socket", "NAccepted")["NAccepted"]
    assert accepted == "3"


def test_datagram_and_stream_sockets_in_one_service(sandbox: Sandbox, units: Units) -> None:
    """A UDP socket and a TCP socket reach the same service; it echoes datagrams and serves
    HTTP, both from the same pid."""
    tcp, udp = free_port(), free_port(kind=socket.SOCK_DGRAM)
    files = gen_units(
        "sdact-dg", listens=[(f"127.0.0.1:{tcp}", "http"), (f"udp:127.0.0.1:{udp}", "dgram")]
    )
    assert "ListenDatagram=127.0.0.1:" in files["sdact-dg-dgram.socket"]
    units.install(files)
    sandbox.systemctl("start", "sdact-dg.socket", "sdact-dg-dgram.socket")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.settimeout(10)
        client.sendto(b"hello", ("127.0.0.1", udp))  # this datagram starts the service
        reply, _ = client.recvfrom(1024)
    wait_state(sandbox, "sdact-dg.service", "active")
    pid = main_pid(sandbox, "sdact-dg.service")
    assert reply == f"pid={pid} hello".encode()
    assert http_get("127.0.0.1", tcp)[1]["x-pid"] == str(pid)
