"""A stop signal repeated while a server drains and exits does not kill it.

``gen-units --supervise`` units use ``KillMode=control-group``: on ``systemctl stop`` systemd
sends SIGTERM to every process of the unit, and ``sdactivate run`` repeats it to its
generation. CI caught examples/app.py dying of the repeat after its drain ("killed by
SIGTERM" in the supervisor's log): asyncio puts SIGTERM back to its default when the loop
closes. Each server here gets a SIGTERM every ~0.2 ms from READY until it is gone, and must
exit 0. uvicorn is the exception by design: it re-raises the signal it stopped for.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from sdactivate import Upgrader
from sdactivate.adapters._lifecycle import StopTrigger
from tests._adapter_harness import check_repeated_sigterm_exits_cleanly, example, running

ROOT = Path(__file__).resolve().parent.parent

SERVERS = {
    "examples/app.py": [*example("app.py"), "--name", "http"],
    "bench app": [sys.executable, str(ROOT / "bench" / "modes" / "app.py"), "--socket", "inherit"],
    "asyncio": example("adapter_asyncio.py"),
    "http.server": example("adapter_http_server.py"),
    "wsgiref": [*example("adapter_wsgi.py"), "wsgiref"],
    "waitress": [*example("adapter_wsgi.py"), "waitress"],
    "hypercorn": [*example("adapter_asgi.py"), "hypercorn"],
    "uvicorn": [*example("adapter_asgi.py"), "uvicorn"],
}


@pytest.mark.parametrize("server", SERVERS, ids=str)
def test_sigterm_storm_exits_cleanly(server: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    decoy = server not in ("examples/app.py", "bench app")
    code = check_repeated_sigterm_exits_cleanly(
        lambda: running(SERVERS[server], env=env, decoy=decoy)
    )
    expected = -signal.SIGTERM if server == "uvicorn" else 0
    assert code == expected, f"{server}: exit code {code}"


def test_upgrader_app_sigterm_storm_exits_cleanly() -> None:
    """The in-process Upgrader's own stop handler: the same storm, exit status 0."""
    from sdactivate.testing import NotifyReceiver, launch
    from tests._adapter_harness import Running

    @contextmanager
    def start() -> Iterator[Running]:
        with NotifyReceiver(thread=True) as rx:
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sock.listen(128)
            argv = [sys.executable, str(ROOT / "examples" / "upgrader_app.py")]
            argv += ["--listen", f"127.0.0.1:{sock.getsockname()[1]}", "--drain-timeout", "3"]
            proc = launch(argv, [sock], names=["http"], notify=rx)
            sock.close()
            with proc:
                yield Running(proc, rx, 0)

    assert check_repeated_sigterm_exits_cleanly(start) == 0


@pytest.fixture
def sigterm_default() -> Iterator[None]:
    """SIGTERM at its default for the test, and put back whatever pytest had afterwards."""
    saved = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, saved)


@pytest.mark.usefixtures("sigterm_default")
def test_stop_trigger_ignores_repeats_only_after_a_signal() -> None:
    """Closed after a stop it set itself: SIGTERM's default comes back. Closed after a
    SIGTERM: the default becomes "ignore" (a repeat would kill the exiting process)."""
    sigint = signal.getsignal(signal.SIGINT)  # KeyboardInterrupt, or SIG_IGN under nohup/&
    trigger = StopTrigger()
    trigger.set("asked")
    trigger.close()
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL

    trigger = StopTrigger()
    signal.raise_signal(signal.SIGTERM)
    assert trigger.reason == "signal SIGTERM"
    trigger.close()
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN
    assert signal.getsignal(signal.SIGINT) is sigint  # left as it was


@pytest.mark.usefixtures("sigterm_default")
def test_upgrader_ignores_repeats_only_after_a_stop_signal() -> None:
    """Upgrader.close(): the previous handler comes back, or "ignore" after SIGTERM stopped it."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    with Upgrader(upgrade_signals=(), stop_signals=(signal.SIGTERM,), environ=env) as upg:
        upg.stop("asked")
        assert upg.wait_exit(5)
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL

    with Upgrader(upgrade_signals=(), stop_signals=(signal.SIGTERM,), environ=env) as upg:
        signal.raise_signal(signal.SIGTERM)
        assert upg.wait_exit(5)
        assert upg.exit_reason == "signal SIGTERM"
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN


@pytest.mark.usefixtures("sigterm_default")
@pytest.mark.parametrize("signalled", [False, True], ids=["stop-set", "sigterm"])
def test_loop_stop_signals_uninstall(signalled: bool) -> None:
    """asyncio: the callback runs in the loop; uninstall() drops the loop's handler and puts
    back the default, or "ignore" after a SIGTERM; SIGINT keeps what it had."""
    from sdactivate.adapters.asyncio_server import on_stop_signals

    async def main() -> list[int]:
        got: list[int] = []
        stop = asyncio.Event()
        signals = on_stop_signals(lambda signum: (got.append(signum), stop.set()))
        if signalled:
            signal.raise_signal(signal.SIGTERM)
        else:
            stop.set()
        await asyncio.wait_for(stop.wait(), 5)
        signals.uninstall()
        loop = asyncio.get_running_loop()
        assert not loop.remove_signal_handler(signal.SIGTERM)  # the loop forgot it
        return got

    sigint = signal.getsignal(signal.SIGINT)  # KeyboardInterrupt, or SIG_IGN under nohup/&
    assert asyncio.run(main()) == ([signal.SIGTERM] if signalled else [])
    expected = signal.SIG_IGN if signalled else signal.SIG_DFL
    assert signal.getsignal(signal.SIGTERM) == expected
    assert signal.getsignal(signal.SIGINT) is sigint


MASKS_CHILD = r"""
import json, os, signal
from http.server import BaseHTTPRequestHandler
from sdactivate import watchdog
from sdactivate.adapters import http_server

def masks():
    out = {}
    for tid in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{tid}/status") as f:
            blk = next(line for line in f if line.startswith("SigBlk:")).split()[1]
        out["main" if int(tid) == os.getpid() else tid] = int(blk, 16)
    return out

class Report(BaseHTTPRequestHandler):
    def do_GET(self):
        mine = signal.pthread_sigmask(signal.SIG_BLOCK, [])
        body = json.dumps({"handler": sorted(int(s) for s in mine), "threads": masks()}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

with watchdog.start():
    http_server.serve(Report)
"""


def test_serving_threads_leave_stop_signals_to_the_main_thread() -> None:
    """http_server.serve's accept loop, its handler threads and the watchdog keep-alive
    block SIGTERM and SIGINT; the main thread, which waits for them, does not. (A SIGTERM
    the kernel gave the accept thread left the main thread waiting: about one stop in 40
    under load served on until SIGKILL.)"""
    import json

    from sdactivate.testing import NotifyReceiver, launch

    stop = (1 << (signal.SIGTERM - 1)) | (1 << (signal.SIGINT - 1))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WATCHDOG_USEC": "60000000"}
    env = {k: v for k, v in env.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_PID")}
    with NotifyReceiver(thread=True) as rx:
        proc = launch([sys.executable, "-c", MASKS_CHILD], ["127.0.0.1:0"], notify=rx, env=env)
        with proc:
            rx.wait_for("READY", "1", timeout=15)
            port = proc.sockets[0].getsockname()[1]
            with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
                conn.sendall(b"GET / HTTP/1.0\r\n\r\n")
                data = b""
                while chunk := conn.recv(65536):
                    data += chunk
            got = json.loads(data.partition(b"\r\n\r\n")[2])
            proc.terminate()
            assert proc.wait(15) == 0
    assert {signal.SIGTERM, signal.SIGINT} <= set(got["handler"])
    threads = got["threads"]
    assert threads.pop("main") & stop == 0
    assert len(threads) >= 3  # accept loop, handler, watchdog keep-alive
    assert all(mask & stop == stop for mask in threads.values()), threads
