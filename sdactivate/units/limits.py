"""Start and trigger rate limits: what the generator writes by default, and ``--start-limit``.

Facts (systemd 252):

* systemd.unit(5) ``StartLimitIntervalSec=``/``StartLimitBurst=``: every start of a unit counts
  -- ``systemctl start``, the start half of each ``systemctl restart``, each automatic
  ``Restart=`` -- against the manager default of 5 per 10 s. Past it the unit fails with
  ``start-limit-hit``, and its socket unit fails with it (socket.c ``socket_trigger_notify()``
  propagates the start-limit state): connections are refused until ``systemctl reset-failed``.
  So 20 quick deliberate restarts take a socket-activated service down.
* A crash loop is paced by ``RestartSec=`` (1 s here): at most one start per second or so. To
  stop a crash loop the limit must allow fewer starts per interval than that pace, so a
  bigger burst needs a longer interval. 30 per 60 s lets 30 deliberate restarts a minute
  through while a service crashing at start still gives up after about 30 tries (30-60 s).
* systemd.socket(5) ``TriggerLimitIntervalSec=``/``TriggerLimitBurst=`` (20 per 2 s with
  ``Accept=no``): left alone there. A ``systemctl restart`` does not trigger the socket (the
  restart job is pending, so the socket stays in ``running``), and crash restarts trigger at
  most once per ``RestartSec=``; the limit still fails the socket if the service exits at once
  without ``Restart=`` (a busy loop), which is what it is for.
* With ``Accept=yes`` every connection is a trigger, checked before ``MaxConnections=``
  (socket.c ``socket_enter_running()``): the default 200 per 2 s turns a burst of connections
  into a failed socket that refuses everything until restarted. ``MaxConnections=`` already
  bounds the instances running at once (connections beyond it are closed), so the generator
  turns the trigger limit off there; ``--start-limit`` sets it instead of the (per-instance,
  meaningless) start limit.
"""

from __future__ import annotations

from ..errors import UnitConfigError
from .model import RateLimit

__all__ = [
    "ACCEPT_TRIGGER_LIMIT",
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_START_LIMIT",
    "parse_rate_limit",
    "start_limit_comment",
    "trigger_limit_comment",
]

DEFAULT_START_LIMIT = RateLimit(30, 60)
ACCEPT_TRIGGER_LIMIT = RateLimit.off()
DEFAULT_MAX_CONNECTIONS = 64  # systemd.socket(5) MaxConnections= default, written explicitly


def parse_rate_limit(text: str, *, option: str = "--start-limit") -> RateLimit:
    """``BURST/SECONDS`` (``30/60``) or ``off``."""
    if text.strip().lower() == "off":
        return RateLimit.off()
    burst, sep, seconds = text.partition("/")
    try:
        if not sep:
            raise ValueError(text)
        limit = RateLimit(int(burst), float(seconds))
    except ValueError:
        raise UnitConfigError(
            f"{option} {text!r}: expected BURST/SECONDS (like 30/60) or off"
        ) from None
    if limit.is_off:
        raise UnitConfigError(f"{option} {text!r}: an interval of 0 is written 'off'")
    return limit


def start_limit_comment(limit: RateLimit, *, socket: bool) -> str:
    """The comment above ``StartLimitIntervalSec=`` (``socket``: the service has socket units)."""
    fails = ", and its socket with it (connections refused)," if socket else ""
    counts = (
        "systemd.unit(5): every start counts, each `systemctl restart` and automatic"
        f" Restart= included (default 5 per 10s); past the limit the service fails{fails}"
        " until `systemctl reset-failed`."
    )
    if limit.is_off:
        return counts + " Off here: a service crashing at start restarts every RestartSec= forever."
    if limit == DEFAULT_START_LIMIT:
        return (
            counts + " 30 per 60s lets deliberate restarts through, while a crash loop (one"
            " start per RestartSec=) still gives up within a minute."
        )
    return counts


def trigger_limit_comment(limit: RateLimit) -> str:
    """The comment above an ``Accept=yes`` socket's ``TriggerLimitIntervalSec=``."""
    if limit.is_off:
        return (
            "systemd.socket(5): with Accept=yes every connection is a trigger, so the default"
            " limit (200 per 2s) turns a burst of connections into a failed socket that refuses"
            " all until restarted; MaxConnections= bounds the instances instead"
        )
    return (
        "systemd.socket(5): every connection is a trigger; past this limit the socket fails and"
        " refuses all connections until restarted"
    )
