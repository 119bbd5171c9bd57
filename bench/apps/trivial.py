"""A trivial generation for bench/handover_cpu.py, on the stdlib only (no sdactivate import):
takes fd 3 (sd_listen_fds(3)), sends READY=1 (sd_notify(3)), exits on SIGTERM."""

import os
import signal
import socket
import sys

if os.environ.get("LISTEN_PID") != str(os.getpid()) or not os.environ.get("LISTEN_FDS"):
    sys.exit("trivial: LISTEN_PID is not mine or no LISTEN_FDS")
signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGTERM])
listener = socket.socket(fileno=3)
if addr := os.environ.get("NOTIFY_SOCKET", ""):
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.sendto(b"READY=1", "\0" + addr[1:] if addr[0] == "@" else addr)
signal.sigwait([signal.SIGTERM])
