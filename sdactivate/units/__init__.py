"""Generate systemd socket + service units (``sdactivate gen-units``).

Options (:mod:`.options`) -> one check (:mod:`.resolve`) -> one builder per shape
(:mod:`.build`) -> models (:mod:`.model`) -> pure renderer (:mod:`.render`) -> files
(:mod:`.install`); all quoting in :mod:`.escape`, unit names and systemd-escape in
:mod:`.names`, the comments written in the units in :mod:`.notes`, version gating in
:mod:`.version`, sandboxing levels in :mod:`.hardening`, start/trigger rate limits in
:mod:`.limits`, checks against this machine in :mod:`.preflight`.
"""

from __future__ import annotations

from .build import Options, build
from .escape import EnvRef, exec_command_line, quote_exec_arg
from .model import RateLimit, ServiceUnit, SocketUnit
from .names import escape as systemd_escape
from .names import escape_path as systemd_escape_path
from .names import unescape as systemd_unescape
from .names import unescape_path as systemd_unescape_path
from .render import render_service, render_socket

__all__ = [
    "EnvRef",
    "Options",
    "RateLimit",
    "ServiceUnit",
    "SocketUnit",
    "build",
    "exec_command_line",
    "quote_exec_arg",
    "render_service",
    "render_socket",
    "systemd_escape",
    "systemd_escape_path",
    "systemd_unescape",
    "systemd_unescape_path",
]
