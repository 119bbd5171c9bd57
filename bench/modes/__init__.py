"""Restart modes compared by ``make bench`` (issue 7), and the registry run.py uses.

======  ==============================================================
C0      plain bind + restart (SIGTERM, wait, start again)
C1      systemd socket unit + ``systemctl restart`` (sandbox)
C2      systemd fd store (no socket unit) + ``systemctl restart`` (sandbox)
C3      ``sdactivate run`` supervisor handover (SIGHUP)
C4      in-process ``sdactivate.Upgrader`` (SIGHUP)
P1-HUP  gunicorn HUP (new workers, same master)
P1-USR2 gunicorn USR2 (new master), then TERM the old master
======  ==============================================================
"""

from __future__ import annotations

from typing import Any

from .base import Mode, ModeUnavailable, Restart
from .local import Gunicorn, InProcessUpgrade, PlainRestart, SupervisorHandover
from .sandboxed import SandboxPool, SystemdRestart

__all__ = ["ALL", "Mode", "ModeUnavailable", "Restart", "SandboxPool", "make"]

ALL = ("C0", "C1", "C2", "C3", "C4", "P1-HUP", "P1-USR2")


def make(
    mode_id: str, *, port: int, keepalive: bool, app: str, pool: SandboxPool, pin: bool = True
) -> Mode:
    """A fresh Mode object for one (mode, workload) run."""
    kw: dict[str, Any] = {"port": port, "keepalive": keepalive, "app": app, "pin": pin}
    if mode_id == "C0":
        return PlainRestart(**kw)
    if mode_id == "C1":
        return SystemdRestart(pool=pool, **kw)
    if mode_id == "C2":
        return SystemdRestart(
            id="C2", title="fd store + systemctl restart", how="fdstore", pool=pool, **kw
        )
    if mode_id == "C3":
        return SupervisorHandover(**kw)
    if mode_id == "C4":
        return InProcessUpgrade(**kw)
    if mode_id == "P1-HUP":
        return Gunicorn(**kw)
    if mode_id == "P1-USR2":
        return Gunicorn(id="P1-USR2", title="gunicorn USR2 + TERM old", signal_kind="USR2", **kw)
    raise ValueError(f"unknown mode {mode_id!r} (one of {', '.join(ALL)})")
