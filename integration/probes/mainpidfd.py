"""Run as a Type=notify service (NotifyAccess=all): fork a child, READY=1, then hand the main
PID to the child one way (argv[1]) and print what happened as ``PROBE {json}``.

- ``wrong-id``: ``MAINPID=<child>`` with a wrong ``MAINPIDFDID=`` (v257 checks it);
- ``right-id``: ``MAINPID=<child>`` with the child's pidfd inode id;
- ``fd``: ``MAINPIDFD=1`` alone, the child's pidfd attached (v257).

Each message is followed by a barrier, so PID 1 has processed it before the report.
"""

import array
import json
import os
import socket
import sys
import time

from sdactivate import _pidfd, notify


def send(text: str, fds: tuple[int, ...] = ()) -> None:
    target = os.environ["NOTIFY_SOCKET"]
    addr = "\0" + target[1:] if target.startswith("@") else target
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        scm = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
        sock.sendmsg([text.encode()], scm, 0, addr)
    notify.barrier(10)


def main() -> None:
    mode = sys.argv[1]
    child = os.fork()
    if child == 0:
        time.sleep(3600)
        os._exit(0)
    pidfd = os.pidfd_open(child)
    right = _pidfd.inode_id(pidfd)
    assert right is not None, "no pidfs on this kernel"
    notify.ready()
    if mode == "wrong-id":
        send(f"MAINPID={child}\nMAINPIDFDID={right + 1000}")
    elif mode == "right-id":
        send(f"MAINPID={child}\nMAINPIDFDID={right}")
    elif mode == "fd":
        send("MAINPIDFD=1", (pidfd,))
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    print("PROBE " + json.dumps({"self": os.getpid(), "child": child}), flush=True)
    time.sleep(3600)


main()
