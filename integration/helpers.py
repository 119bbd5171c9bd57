"""Shared pieces of the end-to-end tests: units for examples/app.py, a tiny HTTP client, waits.

Units come from `sdactivate gen-units` (run on the host with this checkout's interpreter,
`--stdout`), so the tests exercise the generator's real output. Services run Debian's
/usr/bin/python3 on the checkout bound at CODE_DIR (PYTHONPATH), which stays visible under
the strict defaults (ProtectHome=yes, PrivateTmp=yes, DynamicUser=yes).
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
from collections.abc import Sequence

from sandbox import CHECKOUT, CODE_DIR, Sandbox, wait_until

PYTHON = "/usr/bin/python3"  # inside the sandbox; fast start, not under /root or /tmp
APP = f"{CODE_DIR}/examples/app.py"
SYSTEMD_VERSION = 252

__all__ = [
    "APP",
    "PYTHON",
    "gen_units",
    "http_get",
    "main_pid",
    "wait_state",
]


def gen_units(
    name: str,
    *,
    listens: Sequence[tuple[str, str]] = (),
    args: Sequence[str] = (),
    program: str = PYTHON,
    script: str | None = APP,
    options: Sequence[str] = (),
) -> dict[str, str]:
    """`sdactivate gen-units NAME --listen ADDR=FDNAME... --exec PROGRAM -- [SCRIPT] ARGS`
    as {file name: text}. `options` are extra generator flags (--no-network, --watchdog ...)."""
    argv = [sys.executable, "-m", "sdactivate", "gen-units", name]
    for address, fd_name in listens:
        argv += ["--listen", f"{address}={fd_name}"]
    argv += ["--environment", f"PYTHONPATH={CODE_DIR}", "--systemd-version", str(SYSTEMD_VERSION)]
    argv += [*options, "--stdout", "--exec", program, "--"]
    if script is not None:
        argv.append(script)
    argv += list(args)
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=CHECKOUT, check=False)
    if proc.returncode != 0:
        raise AssertionError(f"gen-units failed ({proc.returncode}): {argv}\n{proc.stderr}")
    return split_stdout(proc.stdout)


_FILE_MARK = re.compile(r"^### (\S+\.(?:socket|service))$")


def split_stdout(text: str) -> dict[str, str]:
    """Split gen-units --stdout output into files (`### NAME` starts each file)."""
    files: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        match = _FILE_MARK.match(line)
        if match:
            current = files.setdefault(match.group(1), [])
            continue
        if current is not None:
            current.append(line)
    if not files:
        raise AssertionError(f"cannot split gen-units output:\n{text}")
    return {name: "\n".join(lines).strip("\n") + "\n" for name, lines in files.items()}


def http_get(
    host: str, port: int, path: str = "/", *, timeout: float = 10.0
) -> tuple[int, dict[str, str], str]:
    """One GET on a new connection: (status, headers lower-cased, body)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect((host, port))
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    raw = b"".join(chunks).decode("latin-1")
    head, _, body = raw.partition("\r\n\r\n")
    lines = head.split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        key, _, value = line.partition(":")
        headers[key.strip().lower()] = value.strip()
    return status, headers, body


def main_pid(sandbox: Sandbox, unit: str) -> int:
    """The unit's MainPID (in the sandbox's pid namespace), 0 if none."""
    return int(sandbox.show(unit, "MainPID")["MainPID"])


def wait_state(
    sandbox: Sandbox, unit: str, active: str, *, sub: str | None = None, timeout: float = 15
) -> dict[str, str]:
    """Wait until `unit` has ActiveState=`active` (and SubState=`sub`); its properties."""
    last: dict[str, str] = {}

    def check() -> bool:
        nonlocal last
        last = sandbox.show(unit, "ActiveState", "SubState", "MainPID", "NRestarts", "Result")
        return last["ActiveState"] == active and (sub is None or last["SubState"] == sub)

    try:
        wait_until(check, timeout=timeout, what=f"{unit} {active}/{sub}")
    except TimeoutError as exc:
        raise AssertionError(f"{unit}: wanted {active}/{sub}, last {last}") from exc
    return last


def timed(fn: object) -> float:
    """Seconds a call takes (used to report how long systemctl verbs block)."""
    assert callable(fn)
    start = time.monotonic()
    fn()
    return time.monotonic() - start
