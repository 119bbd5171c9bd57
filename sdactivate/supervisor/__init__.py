"""``sdactivate run``: a supervisor that hands its sockets from one generation to the next.

* :mod:`.machine` -- the decisions, a sans-I/O state machine (its invariants are at its top),
  over the events and actions of :mod:`.events`;
* :mod:`.runner` -- the I/O shell: sockets, children, signals, timers, the manager;
* :mod:`.control` -- the control socket ``sdactivate reload --pid PID`` talks to;
* :mod:`.client` -- :func:`~.client.request_reload`, the caller's side of that socket.

Its twin in one process is :mod:`sdactivate.upgrade`; what both share (the notify inbox, the
start-up grace, exit-status words, the event queue) is in :mod:`sdactivate._generation`.
"""

from __future__ import annotations

__all__ = ["client", "control", "events", "machine", "runner"]
