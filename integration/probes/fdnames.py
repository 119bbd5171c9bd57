"""Store a memfd under each name of argv[1] (hex of a JSON list) with raw ``FDSTORE=1`` /
``FDNAME=`` (none of sdactivate's checks), then READY=1; when stored fds came back, store
nothing. Report ``LISTEN_FDNAMES`` as ``PROBE {json}`` either way, then wait to be stopped."""

import json
import os
import signal
import sys

from sdactivate import notify

given = os.environ.get("LISTEN_FDNAMES")
names = [] if given is None else given.split(":")
if int(os.environ.get("LISTEN_FDS", "0")) <= 1:  # only the socket unit's fd, or nothing
    for name in json.loads(bytes.fromhex(sys.argv[1])):
        fd = os.memfd_create("probe")
        notify.send([("FDSTORE", "1"), ("FDNAME", name), ("FDPOLL", "0")], fds=[fd])
        os.close(fd)
notify.send([("READY", "1")])
print("PROBE " + json.dumps({"names": names, "pid": os.getpid()}), flush=True)
signal.pause()
