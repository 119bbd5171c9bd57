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
import time
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


# Runs a server script (argv[1:]) with an app thread that, when the test writes to the FIFO
# $THIEF_FIFO, sends SIGTERM to itself: the C-level handler then runs in that thread, exactly
# as when the kernel gives a process-directed SIGTERM to it (any thread not blocking it may
# take one; one that creates a thread takes it about once in three under a thread churn).
THIEF = r"""
import os, runpy, signal, sys, threading

def thief():
    with open(os.environ["THIEF_FIFO"], "rb") as f:
        f.read(1)
    signal.pthread_kill(threading.get_ident(), signal.SIGTERM)
    threading.Event().wait()  # an app thread that stays

threading.Thread(target=thief, name="app-thread", daemon=True).start()
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.mark.parametrize("server", SERVERS, ids=str)
def test_stop_signal_taken_by_another_thread_stops_the_server(server: str, tmp_path: Path) -> None:
    """A SIGTERM whose C-level handler ran in an app thread, not the main one, still stops
    the server at once: it exits cleanly. (The main thread of the http.server,
    wsgiref and waitress adapters slept in Event.wait(), which only EINTR would end: they
    served on until SIGKILL.)"""
    fifo = tmp_path / "thief"
    os.mkfifo(fifo)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "THIEF_FIFO": str(fifo)}
    argv = SERVERS[server]
    decoy = server not in ("examples/app.py", "bench app")
    with running([argv[0], "-c", THIEF, *argv[1:]], env=env, decoy=decoy) as run:
        run.rx.wait_for("READY", "1", timeout=20)
        with open(fifo, "wb") as f:  # opens once the thief thread has it open for reading
            f.write(b"x")
        code = run.proc.wait(15)  # nothing to drain: it exits as soon as it sees the signal
    assert code == (-signal.SIGTERM if server == "uvicorn" else 0), f"{server}: exit {code}"


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
@pytest.mark.parametrize("app_wakeup_fd", [False, True], ids=["own-wakeup-fd", "app-wakeup-fd"])
def test_stop_trigger_wait_ends_on_a_signal_another_thread_took(app_wakeup_fd: bool) -> None:
    """StopTrigger.wait() in the main thread returns when the SIGTERM's C handler ran in
    another thread: through the wakeup fd, or (the app holds the wakeup fd, which is left
    to it) within the fallback poll."""
    import threading

    app_r, app_w = socket.socketpair()
    app_w.setblocking(False)
    before = signal.set_wakeup_fd(app_w.fileno() if app_wakeup_fd else -1)
    main = threading.get_native_id()
    waiting = threading.Event()

    def thief() -> None:
        # Signal once the main thread sleeps in wait(): a handler run before that would
        # set the trigger on the way in. Sleeping, it is in state S on five looks in a row,
        # 1 ms apart, each leaving it the GIL (a wait for the GIL is brief).
        waiting.wait(10)
        deadline = time.monotonic() + 10
        seen = 0
        while seen < 5 and time.monotonic() < deadline:
            time.sleep(0.001)
            with open(f"/proc/self/task/{main}/stat") as f:
                state = f.read().rpartition(")")[2].split()[0]
            seen = seen + 1 if state == "S" else 0
        signal.pthread_kill(threading.get_ident(), signal.SIGTERM)  # its handler runs here

    try:
        trigger = StopTrigger()
        thread = threading.Thread(target=thief)
        thread.start()
        waiting.set()
        assert trigger.wait(5), "the wait slept through the signal"
        thread.join()
        assert trigger.reason == "signal SIGTERM"
        if app_wakeup_fd:  # the app's wakeup fd got the signal number, as without us
            assert app_r.recv(16) == bytes([signal.SIGTERM])
        trigger.close()
        now = signal.set_wakeup_fd(-1)
        assert now == (app_w.fileno() if app_wakeup_fd else -1)
    finally:
        signal.set_wakeup_fd(before)
        app_r.close()
        app_w.close()


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
