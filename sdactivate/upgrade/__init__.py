"""In-process zero-downtime upgrades: :class:`Upgrader` (how it works: :mod:`.upgrader`).

The twin of :mod:`sdactivate.supervisor`, in one process instead of a supervisor:

* :mod:`.plan` -- the decisions, a sans-I/O state machine (its invariants are at its top),
  over the events and actions of :mod:`.events`;
* :mod:`.runner` -- the I/O shell: the worker thread's loop, an attempt's child and sockets
  (:mod:`.attempt`), the callers waiting for an outcome (:mod:`.waiters`);
* :mod:`.upgrader` -- the public API, and :mod:`.signals`, its signal handlers;
* :mod:`.link` -- the channel to the generation that started this one; :mod:`.sockets` --
  the sockets every new generation receives.

What both handovers share (the notify inbox, the start-up grace, exit-status words, the
event queue) is in :mod:`sdactivate._generation`.
"""

from __future__ import annotations

from .upgrader import Upgrader

__all__ = ["Upgrader"]
