"""A generation for ``sdactivate run`` that shows which stop signal reaches it: READY=1, then
wait; on SIGTERM, SIGINT, SIGQUIT or SIGUSR2 print ``probe PID got SIGNAME`` and exit, 0 if
it is argv[1] (the expected stop signal), 3 if not.
"""

import os
import signal
import sys

from sdactivate import listeners, notify

expected = signal.Signals[sys.argv[1]]
held = listeners()  # the sockets stay open until the exit


def on_signal(signum: int, _frame: object) -> None:
    print(f"probe {os.getpid()} got {signal.Signals(signum).name}", flush=True)
    os._exit(0 if signum == expected else 3)


for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGUSR2):
    signal.signal(sig, on_signal)
notify.ready()
while True:
    signal.pause()
