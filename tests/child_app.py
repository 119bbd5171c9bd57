"""The tests' tiny HTTP service: serves every inherited socket (LISTEN_FDS, from fd 3).

    python tests/child_app.py [--delay SECONDS] [--no-ready] [--body TEXT]

Stdlib only, one thread, no sdactivate: it runs on each release's own python3 inside the
sandbox as well as beside pytest, and it cannot hold accepted-but-unanswered connections the
way an asyncio app can when starved of CPU. Each connection gets its request head read and
`200 OK`, `X-Pid: <pid>`, `Connection: close` and the body `pid=<pid>` (or `--body`).

- After `--delay` seconds (a slow start-up; its sockets are already polled), it sends
  `READY=1` (with `STATUS=generation N` under `sdactivate run`, from $SDACTIVATE_GENERATION)
  to $NOTIFY_SOCKET if it is set; `--no-ready` never does and serves anyway.
- SIGTERM: it stops accepting and exits 0 (the queue stays with whoever holds the socket).
- $FAULT_DIR (tests/test_supervisor_run.py): the file FAULT_DIR/<generation> names a fault
  for that generation only (FAULT_DIR/<generation>.<worker>, read first: for that worker of
  it, $SDACTIVATE_WORKER under `run --workers N`, and each replacement of that worker):
  `exit-before-ready` (exit 3), `never-ready` (hangs before READY,
  never serves), `crash-after-ready` (exits 4 0.1 s after READY), `ignore-term`, `watchdog`
  (writes what it sees of WATCHDOG_* to FAULT_DIR/seen, then sends WATCHDOG=1), `no-accept`
  (ready, accepts nothing), `accept-never-ready` (takes one connection and its request, never
  says READY=1, answers it on the stop signal, exits 0). It writes
  its scheduling policy and nice value at start to FAULT_DIR/prio-<generation>.
"""

from __future__ import annotations

import argparse
import os
import selectors
import signal
import socket
import sys
import time


def notify(message: str) -> None:
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):  # sd_notify(3): an abstract socket
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.sendto(message.encode(), address)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--no-ready", action="store_true")
    parser.add_argument("--body", default=f"pid={os.getpid()}")
    args = parser.parse_args()
    generation = os.environ.get("SDACTIVATE_GENERATION")
    worker = os.environ.get("SDACTIVATE_WORKER", "0")
    fault_dir = os.environ.get("FAULT_DIR")
    fault = ""
    if fault_dir is not None:  # <generation>.<worker> first (run --workers N), then <generation>
        for name in (f"{generation or '0'}.{worker}", generation or "0"):
            try:
                with open(os.path.join(fault_dir, name)) as f:
                    fault = f.read().strip()
                break
            except OSError:
                pass
    if "LISTEN_PID" in os.environ:  # sd_listen_fds(3): the fds are ours only if it is us
        assert os.environ["LISTEN_PID"] == str(os.getpid())
    count = int(os.environ.get("LISTEN_FDS", "1"))
    socks = [socket.socket(fileno=3 + i) for i in range(count)]
    if fault_dir is not None:
        policy, nice = os.sched_getscheduler(0), os.getpriority(os.PRIO_PROCESS, 0)  # at start
        with open(os.path.join(fault_dir, f"prio-{generation or '0'}"), "w") as f:
            f.write(f"{policy} {nice}")
    if fault == "exit-before-ready":
        return 3
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    on_term = signal.SIG_IGN if fault == "ignore-term" else (lambda *_: None)
    signal.signal(signal.SIGTERM, on_term)
    sel = selectors.DefaultSelector()
    for sock in socks:
        sock.setblocking(False)
        sel.register(sock, selectors.EVENT_READ)
    sel.register(wake_r, selectors.EVENT_READ)
    if fault == "never-ready":  # a start-up that hangs (it never serves either)
        time.sleep(3600)
    if fault == "accept-never-ready":
        socks[0].setblocking(True)
        conn, _ = socks[0].accept()
        head = b""
        while b"\r\n\r\n" not in head and (data := conn.recv(4096)):
            head += data
        os.read(wake_r, 100)  # the stop signal
        late = b"generation %s answered after the stop signal" % (generation or "0").encode()
        conn.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
            % (len(late), late)
        )
        conn.close()
        return 0
    time.sleep(args.delay)
    if not args.no_ready:
        status = f"\nSTATUS=generation {generation}" if generation is not None else ""
        notify("READY=1" + status)
    if fault == "no-accept":
        for sock in socks:
            sel.unregister(sock)
    if fault == "watchdog":  # report what a child sees, then ping through the supervisor
        seen = {k: os.environ.get(k) for k in ("WATCHDOG_USEC", "WATCHDOG_PID", "NOTIFY_SOCKET")}
        with open(os.path.join(fault_dir or ".", "seen"), "w") as f:
            f.write(repr(seen))
        notify("WATCHDOG=1")
    crash_at = time.monotonic() + 0.1 if fault == "crash-after-ready" else None
    body = args.body.encode()
    response = (
        b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\nX-Pid: %d\r\n\r\n%s"
        % (
            len(body),
            os.getpid(),
            body,
        )
    )
    while True:
        if crash_at is not None and time.monotonic() > crash_at:
            os._exit(4)
        for key, _ in sel.select(None if crash_at is None else 0.01):
            if key.fileobj == wake_r:
                os.read(wake_r, 100)
                return 0
            assert isinstance(key.fileobj, socket.socket)
            try:
                conn, _ = key.fileobj.accept()
            except BlockingIOError:
                continue
            with conn:
                conn.settimeout(5)
                head = b""
                try:
                    while b"\r\n\r\n" not in head:
                        data = conn.recv(4096)
                        if not data:
                            break
                        head += data
                    conn.sendall(response)
                except OSError:  # a client that gave up: the next one is served
                    pass


if __name__ == "__main__":
    sys.exit(main())
