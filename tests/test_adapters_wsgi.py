"""sdactivate.adapters.wsgi: wsgiref and waitress: READY when serving, names, SIGTERM drain."""

from __future__ import annotations

import socket
import threading

import pytest

from tests._adapter_harness import check_ready_then_serves, check_sigterm_drains, example, running

SERVERS = ["wsgiref", "waitress"]


@pytest.mark.parametrize("server", SERVERS, ids=str)
def test_ready_when_serving_on_named_socket(server: str) -> None:
    """READY=1 only once serving; the socket named 'http' (not the decoy) is served."""
    with running([*example("adapter_wsgi.py"), server]) as run:
        check_ready_then_serves(run)


@pytest.mark.parametrize("server", SERVERS, ids=str)
def test_sigterm_drains_in_flight_request(server: str) -> None:
    """SIGTERM: STOPPING=1, the slow request completes, the process exits."""
    with running([*example("adapter_wsgi.py"), server]) as run:
        check_sigterm_drains(run)


def test_waitress_keeps_backlog(monkeypatch: pytest.MonkeyPatch) -> None:
    """waitress re-listen()s with adj.backlog; the adapter passes the socket's own (3000)."""
    from sdactivate.adapters import wsgi
    from sdactivate.adapters._lifecycle import StopTrigger, backlog_of

    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(3000)
    seen: list[int] = []
    triggers: list[StopTrigger] = []
    real_wait = StopTrigger.wait

    def spy_wait(self: StopTrigger, timeout: float | None = None) -> bool:
        seen.append(backlog_of([sock]))  # the server is built and listening by now
        triggers.append(self)
        self.set("test")
        return real_wait(self, timeout)

    monkeypatch.setattr(StopTrigger, "wait", spy_wait)

    def app(environ: dict[str, object], start_response: object) -> list[bytes]:
        return [b""]

    thread = threading.Thread(
        target=wsgi.serve_waitress, args=(app,), kwargs={"sockets": [sock], "drain_timeout": 1}
    )
    thread.start()
    thread.join(10)
    sock.close()
    assert not thread.is_alive()
    assert seen == [3000]


def test_waitress_threads_are_joined_and_the_socket_stays_open(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """serve_waitress() returns with waitress's loop and workers gone (a loop left running
    polled the socket its caller closed next: "Bad file descriptor"), its socket still
    listening."""
    from sdactivate.adapters import wsgi
    from sdactivate.adapters._lifecycle import StopTrigger

    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    real_wait = StopTrigger.wait

    def stop_at_once(self: StopTrigger, timeout: float | None = None) -> bool:
        self.set("test")
        return real_wait(self, timeout)

    monkeypatch.setattr(StopTrigger, "wait", stop_at_once)

    def app(environ: dict[str, object], start_response: object) -> list[bytes]:
        return [b""]

    before = set(threading.enumerate())
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        wsgi.serve_waitress(app, sockets=[sock], drain_timeout=1, threads=2)
        left = [t.name for t in set(threading.enumerate()) - before if t.is_alive()]
        assert left == []
        with socket.create_connection(sock.getsockname(), timeout=5):
            pass  # queued in the still listening socket
