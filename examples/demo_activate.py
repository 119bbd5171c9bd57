"""Socket activation through Debian's real ``systemd-socket-activate``, end to end.

The driver (no arguments) binds nothing itself: it asks ``systemd-socket-activate`` to
listen on a TCP port and a unix socket with names (``--fdname=http:ctl``), points
``NOTIFY_SOCKET`` at an in-process receiver (``sdactivate.testing.NotifyReceiver``), and
starts this same file with ``--app``. The first connection makes the launcher exec the
app, which gets the sockets from ``sdactivate.listen(..., name=...)``, says ``READY=1``,
answers an HTTP request with what it received, echoes lines on the unix socket, and on
``quit`` sends ``STOPPING=1`` and exits. The driver prints all of it.

The app is ordinary code: run bare (``python demo_activate.py --app``) it binds
127.0.0.1:8080 and ``$DEMO_CTL`` itself and its notify calls return False.

Everything lives in a temporary directory (``$TMPDIR``) and on loopback; < 5 s.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

LAUNCHER = shutil.which("systemd-socket-activate") or "/usr/bin/systemd-socket-activate"
DEADLINE = 10.0  # seconds for any single wait


# --- the app ------------------------------------------------------------------------------


def app() -> int:
    """A tiny HTTP + unix-echo server that runs the same under a launcher and bare."""
    import sdactivate
    from sdactivate import notify

    http = sdactivate.listen("127.0.0.1:8080", name="http")
    ctl = sdactivate.listen(os.environ.get("DEMO_CTL", "/run/demo-ctl.sock"), name="ctl")
    socks = {s.fileno(): s for s in sdactivate.listeners()}  # cached: same objects
    received = [
        {
            "fd": e.fd,
            "name": e.name,
            "kind": e.kind,
            "socket": _describe(socks[e.fd]) if e.fd in socks else None,
        }
        for e in sdactivate.inherited_fds()
    ]
    facts = {
        "pid": os.getpid(),
        "received": received,
        "listen_returned_inherited": [any(s is t for t in socks.values()) for s in (http, ctl)],
        "listen_env_left": sorted(k for k in os.environ if k.startswith("LISTEN_")),
    }
    notify.status(f"started with {len(received)} inherited fds")
    notify.ready(status=f"serving http on fd {http.fileno()}, ctl on fd {ctl.fileno()}")
    while True:
        readable, _, _ = select.select([http, ctl], [], [])
        if http in readable:
            _serve_http(http, facts)
        if ctl in readable and not _serve_ctl(ctl):
            break
    notify.stopping(status="quit requested")
    return 0


def _describe(sock: socket.socket) -> str:
    name = sock.getsockname()
    where = f"{name[0]}:{name[1]}" if isinstance(name, tuple) else str(name)
    return f"{sock.family.name}/{sock.type.name} {where}"


def _serve_http(listener: socket.socket, facts: dict[str, Any]) -> None:
    """Answer one request. A client that fails (resets, stays silent past DEADLINE) costs
    only its own connection: if it ended the app, the kernel would reset every connection
    still waiting in the accept queue."""
    try:
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(DEADLINE)
            request = b""
            while b"\r\n\r\n" not in request:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                request += chunk
            body = json.dumps(facts).encode()
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
            )
    except OSError as exc:
        print(f"http: a client failed: {exc}", file=sys.stderr)


def _serve_ctl(listener: socket.socket) -> bool:
    """Echo lines until the client closes; False once it says ``quit``. A failing client
    ends its own connection only, as in :func:`_serve_http`."""
    try:
        conn, _ = listener.accept()
        with conn, conn.makefile("rwb") as stream:
            conn.settimeout(DEADLINE)
            for line in stream:
                if line.strip() == b"quit":
                    stream.write(b"bye\n")
                    stream.flush()
                    return False
                stream.write(b"echo: " + line)
                stream.flush()
    except OSError as exc:
        print(f"ctl: a client failed: {exc}", file=sys.stderr)
    return True


# --- the driver ---------------------------------------------------------------------------


def main() -> int:
    if not os.path.exists(LAUNCHER):
        print(f"{LAUNCHER} not found (apt-get install systemd)", file=sys.stderr)
        return 1
    from sdactivate.testing import NotifyReceiver

    started = time.monotonic()
    with (
        tempfile.TemporaryDirectory(prefix="sdactivate-demo-") as tmp,
        NotifyReceiver(thread=True) as rx,
    ):
        ctl_path = os.path.join(tmp, "ctl.sock")
        for _ in range(3):  # the free port could be taken between probe and launch
            port = _free_port()
            argv = [
                LAUNCHER,
                "-l",
                f"127.0.0.1:{port}",
                "-l",
                ctl_path,
                "--fdname=http:ctl",
                f"--setenv=NOTIFY_SOCKET={rx.address}",
                f"--setenv=DEMO_CTL={ctl_path}",
                sys.executable,
                os.path.abspath(__file__),
                "--app",
            ]
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            log = _wait_listening(proc, 2)
            if log is not None:
                break
        else:
            print("could not start systemd-socket-activate", file=sys.stderr)
            return 1
        output = _Drain(proc, log)
        ok = False
        try:
            print("$", " ".join(argv[:6]), "...", "python demo_activate.py --app")
            ok = _talk(proc, port, ctl_path, rx, started) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(DEADLINE)
            said = output.finish()
            if not ok:
                print("launcher and app output:", file=sys.stderr)
                sys.stderr.write(said)
        return 0 if ok else 1


def _talk(proc: subprocess.Popen[bytes], port: int, ctl_path: str, rx: Any, t0: float) -> int:
    ok = True
    # The first connection is what makes the launcher exec the app.
    with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as conn:
        conn.sendall(b"GET / HTTP/1.1\r\nHost: demo\r\nConnection: close\r\n\r\n")
        response = b""
        while chunk := conn.recv(65536):
            response += chunk
    head, _, body = response.partition(b"\r\n\r\n")
    facts = json.loads(body)
    print(f"\nHTTP GET / on 127.0.0.1:{port} -> {head.splitlines()[0].decode()}")
    print(f"app pid {facts['pid']} received (sdactivate.inherited_fds()):")
    for entry in facts["received"]:
        print(f"  fd {entry['fd']}  name={entry['name']:<5} {entry['kind']:<7} {entry['socket']}")
    print(
        "  listen(..., name=...) returned the inherited sockets:",
        facts["listen_returned_inherited"],
    )
    print("  LISTEN_* left in the app's environment:", facts["listen_env_left"] or "none")
    ok &= [e["name"] for e in facts["received"]] == ["http", "ctl"]
    ok &= facts["listen_returned_inherited"] == [True, True] and not facts["listen_env_left"]

    rx.wait_for("READY", "1", timeout=DEADLINE)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as ctl:
        ctl.settimeout(DEADLINE)
        ctl.connect(ctl_path)
        stream = ctl.makefile("rwb")
        replies = []
        for line in (b"hello over the inherited unix socket\n", b"quit\n"):
            stream.write(line)
            stream.flush()
            replies.append(stream.readline().decode().rstrip())
        stream.close()
    print(f"\nunix {ctl_path.rsplit('/', 1)[-1]}: {replies}")
    ok &= replies == ["echo: hello over the inherited unix socket", "bye"]

    code = proc.wait(DEADLINE)
    rx.wait_for("STOPPING", "1", timeout=DEADLINE)
    print(f"\nnotify messages received on {rx.address} (NotifyReceiver):")
    for message in rx.messages:
        fields = " ".join(f"{k}={v}" for k, v in message.fields)
        print(f"  pid {message.pid}: {fields}")
    for dropped in rx.dropped:
        print(f"  DROPPED ({dropped.reason}): {dropped.data!r}")
    ok &= all(m.pid == facts["pid"] for m in rx.messages) and not rx.dropped
    ok &= code == 0
    print(f"\napp exited with {code}; demo took {time.monotonic() - t0:.2f}s")
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


class _Drain:
    """Reads the launcher's (then the app's) output to the end in a thread: the pipe never
    fills, and a failure can show what they said."""

    def __init__(self, proc: subprocess.Popen[bytes], head: bytes) -> None:
        assert proc.stdout is not None
        self._chunks = [head]
        self._stream = proc.stdout
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while chunk := os.read(self._stream.fileno(), 65536):
            self._chunks.append(chunk)

    def finish(self) -> str:
        """Everything they said, once they are gone (or after DEADLINE)."""
        self._thread.join(DEADLINE)
        if not self._thread.is_alive():
            self._stream.close()
        return b"".join(self._chunks).decode(errors="replace")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _wait_listening(proc: subprocess.Popen[bytes], count: int) -> bytes | None:
    """The launcher's output once it listens on ``count`` sockets; None if it exited."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    seen = b""
    deadline = time.monotonic() + DEADLINE
    while seen.count(b"Listening on ") < count:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        chunk = os.read(fd, 4096) if ready else b""
        if not chunk:
            proc.wait(DEADLINE)
            sys.stderr.write(seen.decode(errors="replace"))
            return None
        seen += chunk
    return seen


if __name__ == "__main__":
    raise SystemExit(app() if sys.argv[1:] == ["--app"] else main())
