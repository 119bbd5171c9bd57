"""In-process zero-downtime upgrades: :class:`Upgrader` (see :mod:`.upgrader`)."""

from __future__ import annotations

from .upgrader import Upgrader

__all__ = ["Upgrader"]
