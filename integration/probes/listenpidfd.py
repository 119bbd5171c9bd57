"""Run socket-activated: report what the manager set and what sdactivate.listeners() made of
it, as ``PROBE {json}``: LISTEN_PIDFDID (v259+) if set, the inode id of our own pidfd, and
the names of the sockets listeners() returned (it checks LISTEN_PIDFDID against that id)."""

import json
import os

import sdactivate
from sdactivate import _pidfd

given = os.environ.get("LISTEN_PIDFDID")
pidfd = os.pidfd_open(os.getpid())
own = _pidfd.inode_id(pidfd)
os.close(pidfd)
names = [name for name, socks in sdactivate.listeners_by_name().items() for _ in socks]
report = {"given": given, "own": own, "names": names, "pid": os.getpid()}
print("PROBE " + json.dumps(report), flush=True)
