"""sdactivate.adapters.asgi: uvicorn and hypercorn: READY when serving, names, SIGTERM drain."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from tests._adapter_harness import (
    check_ready_then_serves,
    check_request_just_after_stop_is_answered,
    check_sigterm_drains,
    example,
    running,
)

SERVERS = ["uvicorn", "hypercorn"]


@pytest.mark.parametrize("server", SERVERS, ids=str)
def test_ready_when_serving_on_named_socket(server: str) -> None:
    """READY=1 only once serving; the socket named 'http' (not the decoy) is served."""
    with running([*example("adapter_asgi.py"), server]) as run:
        check_ready_then_serves(run)


@pytest.mark.parametrize("server", SERVERS, ids=str)
def test_sigterm_drains_in_flight_request(server: str) -> None:
    """SIGTERM: STOPPING=1, the slow request completes, the process exits."""
    with running([*example("adapter_asgi.py"), server]) as run:
        check_sigterm_drains(run, exit_code=-signal.SIGTERM if server == "uvicorn" else 0)


def test_uvicorn_request_just_after_sigterm_on_an_accepted_connection_is_answered() -> None:
    """A connection accepted before SIGTERM whose first request arrives just after it is
    answered (uvicorn's shutdown closed it at once: a reset). hypercorn still closes it."""
    with running([*example("adapter_asgi.py"), "uvicorn"]) as run:
        check_request_just_after_stop_is_answered(run, exit_code=-signal.SIGTERM)


def test_adapters_import_no_server_package() -> None:
    """Importing every adapter module loads none of uvicorn/hypercorn/waitress/gunicorn."""
    code = (
        "import sys, sdactivate.adapters as a\n"
        "from sdactivate.adapters import asgi, wsgi, http_server, asyncio_server\n"
        "heavy = {'uvicorn', 'hypercorn', 'waitress', 'gunicorn'} & set(sys.modules)\n"
        "print(sorted(heavy))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True
    )
    assert out.stdout.strip() == "[]"
