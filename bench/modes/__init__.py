"""Restart modes compared by ``make bench`` (issue 7), and the registry run.py uses.

======  ==============================================================
C0      plain bind + restart (SIGTERM, wait, start again)
C1      systemd socket unit + ``systemctl restart`` (sandbox)
C2      systemd fd store (no socket unit) + ``systemctl restart`` (sandbox)
C3      ``sdactivate run`` supervisor handover (SIGHUP)
C4      in-process ``sdactivate.Upgrader`` (SIGHUP)
P1-HUP  gunicorn HUP (new workers, same master)
P1-USR2 gunicorn USR2 (new master), then TERM the old master
P2-chain   uWSGI chain reload (master FIFO ``c``)
P3-circus  circus graceful reload of the watcher (circus owns the socket)
======  ==============================================================

``MODE:N`` runs MODE with N workers (C3: ``sdactivate run --workers N``; the peers: N worker
processes); C0, C1, C2 and C4 have one process only. Every mode defaults to 1.
"""

from __future__ import annotations

from typing import Any

from .base import Mode, ModeUnavailable, Restart
from .local import Gunicorn, InProcessUpgrade, PlainRestart, SupervisorHandover
from .peers import CircusReload, UwsgiChain
from .sandboxed import SandboxPool, SystemdRestart

__all__ = ["ALL", "Mode", "ModeUnavailable", "Restart", "SandboxPool", "make", "split_id"]

ALL = ("C0", "C1", "C2", "C3", "C4", "P1-HUP", "P1-USR2", "P2-chain", "P3-circus")
MULTI = ("C3", "P1-HUP", "P1-USR2", "P2-chain", "P3-circus")  # the modes that take ":N"


def split_id(mode_id: str) -> tuple[str, int, str]:
    """``"C3:4@bench"`` -> ``("C3", 4, "bench")``: base id, workers (default 1), app ("" if
    none); ``:N`` and ``@APP`` in either order."""
    rest, _, app = mode_id.partition("@")
    base, _, n = rest.partition(":")
    if ":" in app:
        app, _, n = app.partition(":")
    try:
        workers = int(n) if n else 1
    except ValueError:
        raise ValueError(f"mode {mode_id!r}: worker count {n!r} is not a number") from None
    if workers < 1 or (workers != 1 and base not in MULTI):
        raise ValueError(f"mode {mode_id!r}: {base} runs 1 worker (:N for {', '.join(MULTI)})")
    return base, workers, app


def make(
    mode_id: str,
    *,
    port: int,
    keepalive: bool,
    app: str,
    pool: SandboxPool,
    pin: bool = True,
    workers: int = 1,
) -> Mode:
    """A fresh Mode object for one (mode, workload) run (``mode_id`` without ``:N``/``@``)."""
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
        return SupervisorHandover(workers=workers, **kw)
    if mode_id == "C4":
        return InProcessUpgrade(**kw)
    if mode_id == "P1-HUP":
        return Gunicorn(workers=workers, **kw)
    if mode_id == "P1-USR2":
        return Gunicorn(
            id="P1-USR2",
            title="gunicorn USR2 + TERM old",
            signal_kind="USR2",
            workers=workers,
            **kw,
        )
    if mode_id == "P2-chain":
        return UwsgiChain(workers=workers, **kw)
    if mode_id == "P3-circus":
        return CircusReload(workers=workers, **kw)
    raise ValueError(f"unknown mode {mode_id!r} (one of {', '.join(ALL)})")
