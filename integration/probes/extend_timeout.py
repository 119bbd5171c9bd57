"""Run as a Type=notify service (NotifyAccess=all): READY=1, then one ``EXTEND_TIMEOUT_USEC=``
message per value (the same list on every host: a table and values generated from the
characters the rule cares about), and a last value PID 1 always refuses (``END``); print
``PROBE {json}`` with every value, the ones the supervisor ignores (``parse_extend_timeout``
is None) and, of those, the ones that parse to 0 or USEC_INFINITY (which PID 1 parses, then
ignores: no log line).

PID 1 reads the field with safe_atou64() and logs "Failed to parse EXTEND_TIMEOUT_USEC=%s"
for a value it cannot parse (service.c), so its journal says which values it refused.
Printable values only, none ending in whitespace: the journal shows the value as it is.
"""

import json
import os
import random
import signal
import socket

from sdactivate import notify
from sdactivate._cint import c_unsigned
from sdactivate.supervisor.events import parse_extend_timeout

END = "sdactivate-end"
TABLE = [
    "5", "+5", " 5", "  +7", "- 5", "+ 5", "+-5", "-0", "-5", " -5", "0x10", "0X1f", "0x",
    "0xg", "0x-5", "0x+5", "010", "08", "0b101", "0B1", "0b", "0b2", "0o17", "0O7", "0o8",
    "-0b1", "+0o7", "0b-1", "0b+1", "1e6", "5x", "", "0", "00", "18446744073709551614",
    "18446744073709551615", "18446744073709551616", "0xffffffffffffffff",
    "0x10000000000000000", "1" * 100, "0" * 300 + "5", "5_000",
]  # fmt: skip


def values(count: int = 200, seed: int = 16) -> list[str]:
    rng = random.Random(seed)
    out = list(TABLE)
    while len(out) < count:
        text = "".join(rng.choice(" +-0123456789abfxoXOB") for _ in range(rng.randint(1, 12)))
        if text == text.rstrip() and text not in out:
            out.append(text)
    return out


def send(text: str) -> None:
    target = os.environ["NOTIFY_SOCKET"]
    addr = "\0" + target[1:] if target.startswith("@") else target
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.sendto(text.encode(), addr)


def main() -> None:
    notify.ready()
    cases = values()
    for value in cases:
        send(f"EXTEND_TIMEOUT_USEC={value}")
    # PID 1 reads its notify socket in order: once END is logged, every value before it is.
    # (No barrier: with a journal line per refused value PID 1 may take a while here.)
    send(f"EXTEND_TIMEOUT_USEC={END}")
    report = {
        "values": cases,
        "ignored": [v for v in cases if parse_extend_timeout(v) is None],
        "zero_or_infinity": [v for v in cases if c_unsigned(v) in (0, 2**64 - 1)],
    }
    print("PROBE " + json.dumps(report), flush=True)
    while True:
        signal.pause()


if __name__ == "__main__":
    main()
