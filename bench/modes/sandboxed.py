"""Modes under a real systemd 252 (integration/sandbox.py): C1 socket unit, C2 fd store.

The sandbox shares the host's network namespace, so its services bind host loopback and
the load generator reaches them directly. Restart = ``systemctl restart <svc>`` (returns
once the new main process sent READY=1: ``Type=notify``). "Supervisor" = the sandbox's
PID 1 (systemd itself).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from .base import ROOT, SERVICE_CPU, Mode, ModeUnavailable, Restart
from .local import app_argv, check_app


class SandboxPool:
    """Boots one sandbox lazily and shares it between the systemd modes of a run."""

    def __init__(self) -> None:
        self._box: Any = None
        self._error: str | None = None

    def get(self) -> Any:
        if self._box is not None:
            return self._box
        if self._error is not None:
            raise ModeUnavailable(self._error)
        try:
            from integration.sandbox import Sandbox
        except ImportError as exc:
            self._error = f"integration/sandbox.py: {exc}"
            raise ModeUnavailable(self._error) from exc
        try:
            self._box = Sandbox.boot(checkout=str(ROOT), timeout=60)
        except Exception as exc:  # the reason goes into the report; the mode is skipped
            self._error = f"sandbox boot failed: {str(exc)[:300]}"
            raise ModeUnavailable(self._error) from exc
        return self._box

    def close(self) -> None:
        if self._box is not None:
            self._box.close()
            self._box = None


def _quote(argv: list[str]) -> str:
    # systemd.service(5) ExecStart= quoting: double quotes, backslash escapes.
    out = []
    for a in argv:
        if any(c in a for c in " \t\"'\\$%;"):
            a = '"' + a.replace("\\", "\\\\").replace('"', '\\"') + '"'
        out.append(a.replace("%", "%%").replace("$", "$$"))
    return " ".join(out)


@dataclass
class SystemdRestart(Mode):
    """C1 (``how="inherit"``: socket unit) or C2 (``how="fdstore"``: fd store, no socket unit)."""

    id: str = "C1"
    title: str = "socket unit + systemctl restart"
    supervisor_label: str = "systemd (PID 1)"
    how: str = "inherit"
    pool: SandboxPool | None = None
    unit: str = ""

    def check(self) -> None:
        check_app(self.app, self.how)
        if not (ROOT / "integration" / "sandbox.py").exists():
            raise ModeUnavailable("integration/sandbox.py is missing")

    def _units(self) -> dict[str, str]:
        base = f"sdbench-{self.id.lower()}"
        self.unit = f"{base}.service"
        service = (
            "[Unit]\n"
            f"Description=sdactivate bench {self.id}\n"
            # systemd.unit(5): the default start limit (5 starts per 10 s) would stop a
            # restart every 2 s; the benchmark restarts on purpose.
            "StartLimitIntervalSec=0\n"
            "[Service]\n"
            "Type=notify\n"
            f"ExecStart={_quote(app_argv(self.app, self.how, self.port))}\n"
            f"Environment=PYTHONPATH={ROOT}\n"
            f"WorkingDirectory={ROOT}\n"
            "TimeoutStopSec=20\n"
        )
        if self.pin:
            service += f"CPUAffinity={SERVICE_CPU}\n"
        units = {self.unit: service}
        if self.how == "inherit":
            units[f"{base}.socket"] = (
                "[Socket]\n"
                f"ListenStream=127.0.0.1:{self.port}\n"
                "FileDescriptorName=http\n"
                f"Service={self.unit}\n"
            )
        else:
            units[self.unit] = service + "FileDescriptorStoreMax=4\n"
        return units

    def start(self) -> None:
        assert self.pool is not None
        box = self.pool.get()
        units = self._units()
        box.install_units(units)
        sock = [n for n in units if n.endswith(".socket")]
        if sock:
            box.systemctl("start", *sock)
        box.systemctl("start", self.unit)

    def restart(self) -> Restart:
        assert self.pool is not None
        box = self.pool.get()
        old = int(box.show(self.unit, "MainPID").get("MainPID", "0"))
        t = time.monotonic()
        box.systemctl("restart", self.unit)
        done = time.monotonic()
        new = int(box.show(self.unit, "MainPID").get("MainPID", "0"))
        return Restart(t, done, old, new)

    def supervisor_pid(self) -> int | None:
        box = self.pool._box if self.pool is not None else None
        return int(box.pid) if box is not None else None

    def extra(self) -> dict[str, str]:
        """systemd's view after the run (NRestarts, NFileDescriptorStore, ...)."""
        assert self.pool is not None
        props = ["NRestarts", "NFileDescriptorStore", "MainPID", "SubState", "Result"]
        return dict(self.pool.get().show(self.unit, *props))

    def stop(self) -> None:
        if self.pool is None or self.pool._box is None or not self.unit:
            return
        box = self.pool._box
        names = list(self._units())
        box.run(["systemctl", "stop", *names], check=False, timeout=60)
        box.remove_units(names)
