"""The comments the generator writes above settings: why each value is what it is, for the
target version. Text only; :mod:`.build` decides which settings a shape writes."""

from __future__ import annotations

from . import version

__all__ = [
    "ACCEPT_COLLECT",
    "ACCEPT_MAX_CONNECTIONS",
    "ACCEPT_SOCKET",
    "ACCEPT_TIMEOUT_STOP",
    "ACCEPT_TYPE",
    "APP_BINDS",
    "APP_BINDS_UNPRIVILEGED",
    "APP_NOTIFY_RELOAD",
    "DRAIN",
    "DRAIN_WITH_SOCKET",
    "READY",
    "SOCKET_MODE",
    "SOCKET_MODE_DEFAULT",
    "SUPERVISOR_BINDS",
    "SUPERVISOR_BINDS_UNPRIVILEGED",
    "SUPERVISOR_KILL_MODE",
    "SUPERVISOR_KILL_MODE_MIXED",
    "SUPERVISOR_KILL_MODE_SIGNAL",
    "SUPERVISOR_LIMIT_NICE",
    "SUPERVISOR_NOTIFY_ACCESS",
    "SUPERVISOR_NOTIFY_RELOAD",
    "SUPERVISOR_SETPRIORITY",
    "SUPERVISOR_START_TIMEOUT",
    "TYPE_WHY",
    "UPGRADER_NOTIFY_ACCESS",
    "UPGRADER_RELOAD",
    "UPGRADER_STOP",
    "app_exec_reload",
    "fdstore",
    "preserve",
    "supervisor_exec_reload",
]

READY = "sd_notify(3): ready when the app sends READY=1"
DRAIN = "time to drain in-flight requests after SIGTERM"
DRAIN_WITH_SOCKET = DRAIN + "; the socket stays open meanwhile"
APP_BINDS = (
    "No socket unit: the app binds its own sockets once (sdactivate.fdstore.listen()),"
    " parks them in the fd store and then sends READY=1 (sd_notify(3))."
)
APP_BINDS_UNPRIVILEGED = (
    " It has no capabilities, so ports below 1024 need a socket unit (--port/--listen)."
)
SUPERVISOR_BINDS = (
    "No socket unit: the supervisor (`sdactivate run --fdstore`) binds the sockets"
    " once, parks them in the fd store and passes them to every generation; it sends"
    " READY=1 (sd_notify(3)) when the first one is ready."
)
SUPERVISOR_BINDS_UNPRIVILEGED = (
    " It has no capabilities, so ports below 1024 need a socket unit (no --fdstore)."
)
SUPERVISOR_NOTIFY_ACCESS = "the supervisor is the main process and relays its children's READY=1"
SUPERVISOR_KILL_MODE = (
    "systemd.kill(5) control-group: on stop, SIGTERM to every process at once;"
    " the generations drain (the supervisor's SIGTERM to them is a repeat) and"
    " the supervisor waits for them. Not mixed: when the supervisor dies, 252 has"
    " no main process left to SIGTERM and SIGKILLs the generations at once,"
    " failing their requests; here they get SIGTERM and drain"
)
SUPERVISOR_LIMIT_NICE = (
    "RLIMIT_NICE: lets the supervisor return a new generation to nice 0 when"
    " it takes over (it starts at +10, --startup-nice); never below 0"
)
SUPERVISOR_SETPRIORITY = (
    "sdactivate run --startup-nice starts generations at nice +10 under"
    " SCHED_IDLE and restores them on takeover (LimitNICE= keeps them at nice 0"
    " or above); 0 turns it off and drops this line"
)
# systemd.kill(5); the supervisor stops on SIGTERM and SIGINT (supervisor/runner.py)
SUPERVISOR_KILL_MODE_SIGNAL = (
    "systemd.kill(5) control-group with KillSignal={signal}: on stop, {signal} to every process"
    " at once, the generations' stop signal (--stop-signal) and one the supervisor stops on;"
    " the generations drain and the supervisor waits for them"
)
SUPERVISOR_KILL_MODE_MIXED = (
    "systemd.kill(5) mixed: on stop, SIGTERM to the supervisor alone, which sends the"
    " generations their stop signal ({signal}, --stop-signal; sent to every process, it would"
    " stop the supervisor the wrong way) and waits for them; SIGKILL to what is left after it"
    " exited. When the supervisor dies, the generations get {signal} from the kernel"
    " (PR_SET_PDEATHSIG), then systemd's SIGKILL, which ends their requests"
)
SUPERVISOR_START_TIMEOUT = (
    "systemd.service(5): the start and each reload may take this long. The supervisor"
    " answers within --ready-timeout (+ --health-timeout) of starting a generation, and a"
    " reload asked for while the previous generation still drains waits for it first"
    " (--drain-timeout); 10s more, so the supervisor reports before systemd gives up"
)
SOCKET_MODE_DEFAULT = (
    "systemd.socket(5): the default, written out: any local user may connect to the socket"
    " file; --socket-mode 0660 --socket-group GROUP limits it to a group"
)
SOCKET_MODE = (
    "systemd.socket(5): who may connect to the socket file (connect(2) needs write"
    " permission); SocketUser=/SocketGroup= own it (default root, or the user manager's user)"
)
UPGRADER_NOTIFY_ACCESS = (
    "the in-process Upgrader's new generation (a child) sends MAINPID= and READY=1"
)
UPGRADER_RELOAD = (
    "Upgrader: SIGHUP starts the new generation, which takes over with MAINPID=;"
    " `systemctl reload` returns at once"
)
UPGRADER_STOP = (
    "After an upgrade the main process is the Upgrader's new generation, not systemd's child"
    ' ("Supervising process X which is not our child"). On stop, systemd 252 sends SIGTERM'
    " to such a main process and, when nothing else is left in the cgroup, SIGKILL right"
    " after (it only waits for its own children: unit_kill_context()), cutting the drain"
    " short. systemd.service(5) ExecStop=: the command should be synchronous, the remaining"
    " processes are killed as soon as it exits; so SIGTERM, then wait until the main process"
    " has exited, each command for at most TimeoutStopSec=. '-': MAINPID is unset (the"
    " commands fail harmlessly) once the main process has exited by itself"
)
ACCEPT_SOCKET = (
    "systemd.socket(5): systemd accepts; each connection starts an instance"
    " of {service} with it as fd 3 (LISTEN_FDNAMES=connection)"
)
ACCEPT_MAX_CONNECTIONS = "instances running at once; systemd closes further connections right away"
ACCEPT_TYPE = (
    "simple: an instance lives as long as the connection systemd already"
    " accepted and handed it as fd 3; nothing waits for it to be ready, and"
    " under Type=notify an instance that exits before READY=1 would fail"
    " (and cost a notify round trip per connection)"
)
ACCEPT_COLLECT = (
    "systemd.unit(5): unload failed instances too, or every failed"
    " connection stays listed as a failed unit"
)
ACCEPT_TIMEOUT_STOP = "time for an instance to finish its connection after SIGTERM"
TYPE_WHY = {
    "exec": "systemd.service(5) exec (v240+): for an app that never sends READY=1; started once"
    " the program is executed, so `systemctl start` and `restart` return before it serves"
    " (connections wait in the socket meanwhile) and a failing exec fails the start",
    "simple": "systemd.service(5) simple: started as soon as the process is forked, before"
    " the exec: a missing program only shows in the journal (--type exec reports it)",
}


def supervisor_exec_reload(target: int) -> str:
    return (
        "waits until the new generation is READY (or fails and keeps the old): `systemctl"
        " reload` fails when the handover does. Not Type=notify-reload: new in systemd"
        f" {version.NOTIFY_RELOAD}, and {target} would run it as Type=simple"
    )


# systemd.service(5) v253 Type=notify-reload: `systemctl reload` sends ReloadSignal=
# (SIGHUP) to the main process and waits for RELOADING=1 with a MONOTONIC_USEC= taken after
# the signal, then READY=1. No ExecReload= helper: a main process that dies mid-reload ends
# the reload at once (Restart= applies), where 254-257 kept a Type=notify unit whose
# ExecReload= had ended in reload-notify until the reload timeout (measured).
SUPERVISOR_NOTIFY_RELOAD = (
    "Type=notify-reload (v253): `systemctl reload` sends SIGHUP; the supervisor answers"
    " RELOADING=1 + MONOTONIC_USEC, starts the new generation and sends READY=1 once it"
    " took over, so `systemctl reload` returns after the handover. A failed handover keeps"
    " the old generation serving and also ends the reload with READY=1 (systemd has no"
    " failed-reload notification): `systemctl status` shows STATUS=upgrade failed: ..., the"
    " journal the reason, and `sdactivate reload --pid $MAINPID` exits 1. A supervisor"
    " that dies mid-reload ends the reload at once and Restart= brings it back."
)

APP_NOTIFY_RELOAD = (
    "Type=notify-reload (v253): `systemctl reload` sends SIGHUP; the app answers"
    " RELOADING=1 + MONOTONIC_USEC (sdactivate.notify.reloading()), reloads, then READY=1,"
    " and `systemctl reload` returns when it is done."
)


def app_exec_reload(target: int) -> str:
    return (
        "the app answers SIGHUP with RELOADING=1 + MONOTONIC_USEC, then READY=1 (systemd"
        f" {target} has no Type=notify-reload, new in {version.NOTIFY_RELOAD}: it would run it"
        " as Type=simple); `systemctl reload` returns once the signal is sent"
    )


def fdstore(target: int, preserve: str | None) -> str:
    # systemd.service(5), docs/FILE_DESCRIPTOR_STORE.md; FileDescriptorStorePreserve= is v254
    text = (
        "sd_notify(3) FDSTORE=1: stored fds come back (LISTEN_FDS) after `systemctl restart`"
        " and after an automatic Restart="
    )
    if target < version.STORE_PRESERVE:
        return (
            text + ", but a separate `systemctl stop` + `start` flushes them (systemd"
            f" {target} has no FileDescriptorStorePreserve=, new in {version.STORE_PRESERVE})"
        )
    if preserve in (None, "restart"):
        return (
            text + ", but a separate `systemctl stop` + `start` flushes them"
            " (FileDescriptorStorePreserve=yes can keep them)"
        )
    if preserve == "no":
        return text + "; any stop flushes them (FileDescriptorStorePreserve=no)"
    return text + "; a separate `systemctl stop` + `start`: see FileDescriptorStorePreserve="


def preserve(target: int, preserve: str) -> str:
    if preserve == "no":
        return "systemd.service(5): release the stored fds whenever the service stops"
    if preserve == "restart":
        return "systemd.service(5): the default; stored fds survive restarts only"
    text = (
        "systemd.service(5): keep the stored fds while the service is stopped, until the unit"
        " is unloaded, so `systemctl stop` + `start` keeps the sockets (the port stays bound"
        " meanwhile: connections wait for the next start; `systemctl clean --what=fdstore"
        " NAME` releases them)."
    )
    if version.preserve_outlives_unload(target):
        return text + f" systemd {target} keeps a stopped unit loaded with its fd store."
    return text + (
        f" systemd {target} unloads a stopped unit that nothing references, fd store and all:"
        " keep it enabled (wanted by a target that is active) or referenced by another"
        " loaded unit, or `stop` + `start` binds anew."
    )
