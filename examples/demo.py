"""`make demo`: the main job on an embedded default, no systemd needed.

1. demo_activate: the example app socket-activated by Debian's real
   `systemd-socket-activate` (named fds), with the notify messages it sent.
2. demo_supervisor: the example app under `sdactivate run`, hot-swapped several times
   while requests keep flowing; prints the counts (0 failed) and the added latency.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
PARTS = ("demo_activate.py", "demo_supervisor.py")


def main() -> int:
    status = 0
    for part in PARTS:
        print(f"\n=== {part} ===", flush=True)
        status |= subprocess.run([sys.executable, str(HERE / part)], check=False).returncode
    print("\ndemo:", "OK" if status == 0 else f"FAILED (status {status})")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
