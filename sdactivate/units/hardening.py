"""The sandboxing table: which ``[Service]`` hardening settings each level writes.

``strict`` (default) is everything below; ``standard`` leaves out what plausibly breaks a
working app (a private user namespace, read-only /etc and /var, a hidden /home and /proc,
W^X memory for JITs/ctypes, the ``@resources`` syscalls, a 0077 umask); ``off`` writes none.
Measured with ``systemd-analyze security --offline=yes`` (252) on ``gen-units myapp --port
8080``: strict 1.1 OK (0.2 SAFE with ``--no-network``), standard 1.8 OK (0.9), off 9.6
UNSAFE (9.1). Settings newer than the target (``version.SINCE``) are left out here, so the
renderer's version check never fires for the table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from . import version as _version

__all__ = ["LEVELS", "Knob", "Level", "knobs"]

Level = Literal["strict", "standard", "off"]
LEVELS: tuple[Level, ...] = ("strict", "standard", "off")


@dataclass(frozen=True)
class Knob:
    key: str
    value: str
    levels: tuple[Level, ...]
    user: bool  # usable in a per-user manager (systemd.exec(5) 252, with PrivateUsers=yes)
    why: str = ""  # written as a comment line above the setting


_S: tuple[Level, ...] = ("strict",)
_SS: tuple[Level, ...] = ("strict", "standard")

# fmt: off
TABLE: tuple[Knob, ...] = (
    # systemd.exec(5) DynamicUser=: a transient uid/gid, implies ProtectSystem=strict,
    # ProtectHome=read-only, PrivateTmp=, RemoveIPC=. Not for user managers (User= is fixed).
    Knob("DynamicUser", "yes", _SS, False,
         "systemd.exec(5): run as a transient user, with no root and no capabilities"),
    # A user manager can only sandbox inside a user namespace (systemd.exec(5) 252 notes).
    Knob("PrivateUsers", "yes", _S, True),
    Knob("NoNewPrivileges", "yes", _SS, True),
    # strict: the whole file system read-only (state needs StateDirectory=); full: /usr /etc /boot
    Knob("ProtectSystem", "strict", _S, True),
    Knob("ProtectSystem", "full", ("standard",), True),
    Knob("ProtectHome", "yes", _S, False),
    Knob("ProtectHome", "read-only", ("standard",), False),
    Knob("PrivateTmp", "yes", _SS, True),
    Knob("PrivateDevices", "yes", _SS, True),
    Knob("PrivateMounts", "yes", _SS, True),
    Knob("ProtectKernelTunables", "yes", _SS, True),
    Knob("ProtectKernelModules", "yes", _SS, True),
    Knob("ProtectKernelLogs", "yes", _SS, True),
    Knob("ProtectControlGroups", "yes", _SS, True),
    Knob("ProtectClock", "yes", _SS, False),
    Knob("ProtectHostname", "yes", _SS, True),
    # systemd.exec(5): ProtectProc=/ProcSubset= only for system services (v247)
    Knob("ProtectProc", "invisible", _S, False),
    Knob("ProcSubset", "pid", _S, False),
    Knob("RestrictNamespaces", "yes", _SS, True),
    Knob("RestrictRealtime", "yes", _SS, True),
    Knob("RestrictSUIDSGID", "yes", _SS, True),
    Knob("LockPersonality", "yes", _SS, True),
    Knob("MemoryDenyWriteExecute", "yes", _S, True,
         "systemd.exec(5): breaks JITs and some cffi/ctypes callbacks; use --hardening standard"),
    Knob("RemoveIPC", "yes", _S, False),
    Knob("SystemCallArchitectures", "native", _SS, True),
    # systemd.exec(5) 252 calls @system-service + EPERM "a relatively safe basic choice"
    Knob("SystemCallFilter", "@system-service", _SS, True),
    # @resources: setrlimit/setpriority/sched_*; some apps tune themselves with them
    Knob("SystemCallFilter", "~@privileged @resources", _S, True),
    Knob("SystemCallErrorNumber", "EPERM", _SS, True),
    Knob("CapabilityBoundingSet", "", _SS, False),
    Knob("AmbientCapabilities", "", _SS, False),
    # files created are private to the service user (standard keeps the default 0022)
    Knob("UMask", "0077", _S, True),
)
# fmt: on

# systemd.exec(5) RestrictAddressFamilies=: restricts socket(2) only; sockets passed in by
# socket activation are unaffected. AF_UNIX stays: the sd_notify client needs it.
_FAMILIES_NET = "AF_INET AF_INET6 AF_UNIX"
_FAMILIES_LOCAL = "AF_UNIX"


def knobs(
    level: Level, *, user: bool, network: bool, version: int
) -> tuple[tuple[str, str, str], ...]:
    """``(key, value, comment)`` for ``level``, filtered for the manager kind and version.

    ``network=False`` adds ``PrivateNetwork=yes`` (systemd.socket(5): sockets from .socket
    units live in the host namespace, so the service still serves them) and denies IP.
    """
    out: list[tuple[str, str, str]] = []
    if level == "off":
        if not network:
            out.append(("PrivateNetwork", "yes", _PRIVATE_NETWORK_WHY))
        return tuple(out)
    for knob in TABLE:
        usable = level in knob.levels and (knob.user or not user)
        if usable and _version.supported(knob.key, knob.value, version):
            out.append((knob.key, knob.value, knob.why))
    if network:
        families = _FAMILIES_NET
    else:
        out.append(("PrivateNetwork", "yes", _PRIVATE_NETWORK_WHY))
        # systemd.resource-control(5): the service's IP access list does not apply to
        # sockets passed in by socket activation.
        out.append(("IPAddressDeny", "any", ""))
        families = _FAMILIES_LOCAL
    out.append(("RestrictAddressFamilies", families, ""))
    return tuple(out)


_PRIVATE_NETWORK_WHY = (
    "systemd.socket(5): listening sockets are bound in the host namespace and still served"
)
