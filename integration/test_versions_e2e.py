"""The generator's version gates, each shown on the systemd it targets (the sandbox's own).

- `systemd-analyze verify` accepts what gen-units writes for this version, and
  `systemd-analyze security --offline=yes` scores it (the support table's exposure column);
- `FileDescriptorStorePreserve=yes` (254+): what `systemctl stop` + `start` does to the store
  of a service that nothing references, and of one an active target wants;
- `MAINPIDFDID=` / `MAINPIDFD=1` (257+): a wrong id is refused, older versions ignore the field;
- `LISTEN_PIDFDID` (259+): the manager's value is accepted by `sdactivate.listeners()` and
  equals the inode id of the service's own pidfd; older versions do not set it;
- `--reload`: the app's RELOADING=1 cycle under the reload kind each version gets.

Version differences are written as expectations per version (never skips): a version with no
expectation fails with "no expectation for systemd N".
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from integration.helpers import (
    PYTHON,
    gen_units,
    http_get,
    listen_inodes,
    main_pid,
    sandbox_version,
    wait_state,
)
from integration.sandbox import CODE_DIR, Sandbox, Units, free_port, wait_until

VERIFY_DIR = "/run/sdact-verify"

# gen-units cases for verify + security (the same flags as tests/test_units_build.py).
CASES: dict[str, list[str]] = {
    "strict": [],
    "strict-no-network": ["--no-network"],
    "standard": ["--hardening", "standard"],
    "supervise": ["--supervise", "--python", PYTHON],
    "supervise-fdstore": ["--supervise", "--python", PYTHON, "--fdstore", "1"],
    "reload": ["--reload"],
    "upgrader": ["--upgrader", "--fdstore", "4"],
    "fdstore-only": ["--fdstore", "4"],
    "accept": ["--accept"],
    "off": ["--hardening", "off"],
}
# Highest exposure accepted per case (systemd-analyze security scores, 0-10); the same on
# every version measured (252, 254, 257, 262).
EXPOSURE_MAX = {
    "strict": 1.2,
    "strict-no-network": 0.4,
    "standard": 2.0,
    "supervise": 1.2,
    "supervise-fdstore": 1.2,
    "reload": 1.2,
    "upgrader": 1.3,
    "fdstore-only": 1.2,
    "accept": 1.2,
    "off": 10.0,
}


def _case_units(name: str, flags: list[str], version: int) -> dict[str, str]:
    port = free_port()
    if "--fdstore" in flags and "--supervise" not in flags and "--upgrader" not in flags:
        return gen_units(
            name,
            options=flags,
            args=["--fdstore", "--listen", f"127.0.0.1:{port}", "--name", "http"],
            version=version,
        )
    fd_name = None if "--accept" in flags else "http"
    return gen_units(name, listens=[(f"127.0.0.1:{port}", fd_name)], options=flags, version=version)


def test_generated_units_verify_and_score(
    sandbox: Sandbox, measurements: Callable[[str], None]
) -> None:
    """For each case, the units gen-units writes for this systemd pass its own
    `systemd-analyze verify` without a word, and `security --offline=yes` scores the service
    within EXPOSURE_MAX."""
    version = sandbox_version(sandbox)
    scores: dict[str, float] = {}
    for case, flags in CASES.items():
        files = _case_units(f"sdv-{case}", flags, version)
        paths = []
        for name, text in files.items():
            sandbox.write_file(f"{VERIFY_DIR}/{name}", text)
            paths.append(f"{VERIFY_DIR}/{name}")
        verify = sandbox.run(
            ["systemd-analyze", "verify", "--man=no", "--recursive-errors=yes", *paths],
            check=False,
        )
        assert verify.returncode == 0 and not verify.stderr.strip(), (case, verify.stderr)
        service = next(p for p in paths if p.endswith(".service"))
        out = sandbox.run(
            ["systemd-analyze", "security", "--offline=yes", "--no-pager", service], check=False
        ).stdout
        match = re.search(r"Overall exposure level for \S+: (\d+\.\d)", out)
        assert match, (case, out)
        scores[case] = float(match.group(1))
    measurements(
        f"systemd {version}: verify clean; exposure "
        + ", ".join(f"{case} {score:.1f}" for case, score in scores.items())
    )
    for case, score in scores.items():
        assert score <= EXPOSURE_MAX[case], (case, score)


# `stop` + `start` of a fd-store-only service (FileDescriptorStorePreserve=yes from 254): is
# the very socket back? (unreferenced, referenced by an active target)
PRESERVED = {
    252: (False, False),  # no FileDescriptorStorePreserve=: stop flushes the store
    254: (False, True),  # the stopped unit is unloaded unless something references it
    257: (False, True),
    262: (True, True),  # kept in dead-resources-pinned, referenced or not
}


def _stop_start(sandbox: Sandbox, unit: str, port: int) -> tuple[str, bool]:
    """`systemctl stop` then `start`; (what was left of the unit after the stop, whether the
    app got the same listening socket back)."""
    before = listen_inodes(port)
    assert len(before) == 1, before
    sandbox.systemctl("stop", unit)

    def settled() -> str | None:
        # list-units does not load a unit (show would); the stopped unit is either unloaded
        # (gone from the list) or kept with its store (dead-resources-pinned), or plain dead
        listed = sandbox.systemctl("list-units", "--all", "--no-legend", "--plain", unit).stdout
        fields = listed.split()
        if not fields:
            return "unloaded"
        return fields[3] if fields[3] in ("dead-resources-pinned", "dead") else None

    after_stop = wait_until(settled, timeout=10, what=f"{unit} settled after stop")
    sandbox.systemctl("start", unit)
    wait_state(sandbox, unit, "active", sub="running")
    return after_stop, listen_inodes(port) == before


def test_fdstore_preserve_across_stop_start(
    sandbox: Sandbox, units: Units, measurements: Callable[[str], None]
) -> None:
    """The fd-store-only units gen-units writes for this version, `stop` + `start`: the
    socket comes back where PRESERVED says so, for a unit nothing references and for one an
    active target wants (what `systemctl enable` gives with multi-user.target)."""
    version = sandbox_version(sandbox)
    assert version in PRESERVED, f"no expectation for systemd {version}"
    port = free_port()
    unit = units.name("sdv-keep.service")
    files = gen_units(
        units.name("sdv-keep"),
        options=["--fdstore", "4"],
        args=["--fdstore", "--listen", f"127.0.0.1:{port}", "--name", "http"],
        version=version,
    )
    assert ("FileDescriptorStorePreserve=yes" in files[unit]) == (version >= 254)
    pin = {
        units.name(
            "sdv-pin.target"
        ): f"[Unit]\nDescription=pins {unit}\nWants={unit}\nAfter={unit}\n"
    }
    units.install(files | pin)
    sandbox.systemctl("start", unit)
    wait_state(sandbox, unit, "active", sub="running")
    alone = _stop_start(sandbox, unit, port)
    sandbox.systemctl("start", units.name("sdv-pin.target"))
    pinned = _stop_start(sandbox, unit, port)
    measurements(
        f"systemd {version}, fd-store-only units, stop + start: unreferenced -> {alone[0]},"
        f" same socket {alone[1]}; wanted by an active target -> {pinned[0]}, same socket"
        f" {pinned[1]}"
    )
    assert (alone[1], pinned[1]) == PRESERVED[version], (alone, pinned)
    assert http_get("127.0.0.1", port)[1]["x-pid"] == str(main_pid(sandbox, unit))


# MAINPIDFDID=/MAINPIDFD=1 (sd_notify(3), v257): integration/probes/mainpidfd.py hands the main
# PID of a Type=notify service to its child one way; does PID 1 switch? (mode -> switched)
MAINPID_SWITCH = {
    252: {"wrong-id": True, "right-id": True, "fd": False},  # MAINPIDFD*: unknown, ignored
    254: {"wrong-id": True, "right-id": True, "fd": False},
    257: {"wrong-id": False, "right-id": True, "fd": True},
    262: {"wrong-id": False, "right-id": True, "fd": True},
}


def test_main_pid_change_by_pidfd_id(
    sandbox: Sandbox, units: Units, measurements: Callable[[str], None]
) -> None:
    """What the Upgrader relies on: MAINPID= with the new process's MAINPIDFDID= switches on
    every version; a wrong id is refused from 257 (so a recycled pid is never adopted) and
    ignored before; MAINPIDFD=1 with a pidfd works from 257 and is dropped before. The
    journal lines each way are reported (older versions must not warn about the id)."""
    version = sandbox_version(sandbox)
    assert version in MAINPID_SWITCH, f"no expectation for systemd {version}"
    probe = f"{CODE_DIR}/integration/probes/mainpidfd.py"
    seen = {}
    for mode, switches in MAINPID_SWITCH[version].items():
        unit = units.name(f"sdv-mainpid-{mode}.service")
        units.install(
            {
                unit: (
                    f"[Service]\nType=notify\nNotifyAccess=all\nEnvironment=PYTHONPATH={CODE_DIR}\n"
                    f"ExecStart={PYTHON} {probe} {mode}\n"
                )
            }
        )
        sandbox.systemctl("start", unit)
        wait_state(sandbox, unit, "active", sub="running")
        reported = _probe_report(sandbox, unit)
        shown = main_pid(sandbox, unit)
        journal = sandbox.run(["journalctl", "-u", unit, "-o", "cat", "--no-pager"]).stdout
        notes = [
            line
            for line in journal.splitlines()
            if re.search(r"MAINPID|PIDFD|auxiliary|descriptor|notification", line.replace(unit, ""))
        ]
        seen[mode] = (shown == reported["child"], notes)
        assert shown == reported["child" if switches else "self"], (mode, reported, journal)
        sandbox.systemctl("stop", unit)
    measurements(
        f"systemd {version}: main PID switched: "
        + "; ".join(f"{mode} {ok} {notes}" for mode, (ok, notes) in seen.items())
    )
    assert not seen["right-id"][1], seen["right-id"]  # no warning for the Upgrader's message


def _probe_report(sandbox: Sandbox, unit: str) -> dict[str, Any]:
    def report() -> dict[str, Any] | None:
        out = sandbox.run(["journalctl", "-u", unit, "-o", "cat", "--no-pager"]).stdout
        for line in out.splitlines():
            if line.startswith("PROBE "):
                return dict(json.loads(line[6:]))
        return None

    return wait_until(report, timeout=15, what=f"{unit}'s report")


# LISTEN_PIDFDID (v259+: the inode id of the service's pidfd, set next to LISTEN_PID)
SETS_LISTEN_PIDFDID = {252: False, 254: False, 257: False, 262: True}


def test_listen_pidfdid_from_a_real_manager(
    sandbox: Sandbox, units: Units, measurements: Callable[[str], None]
) -> None:
    """A socket-activated service (integration/probes/listenpidfd.py): from 259 the manager
    sets LISTEN_PIDFDID, it equals the inode id of the service's own pidfd, and
    sdactivate.listeners() accepts it (the socket comes back); before, it is not set and
    listeners() works as ever."""
    version = sandbox_version(sandbox)
    assert version in SETS_LISTEN_PIDFDID, f"no expectation for systemd {version}"
    port = free_port()
    probe = f"{CODE_DIR}/integration/probes/listenpidfd.py"
    units.install(
        {
            units.name("sdv-pidfdid.socket"): (
                f"[Socket]\nListenStream=127.0.0.1:{port}\nFileDescriptorName=http\n"
            ),
            units.name("sdv-pidfdid.service"): (
                f"[Service]\nEnvironment=PYTHONPATH={CODE_DIR}\nExecStart={PYTHON} {probe}\n"
            ),
        }
    )
    sandbox.systemctl("start", units.name("sdv-pidfdid.socket"))
    sandbox.systemctl("start", units.name("sdv-pidfdid.service"))
    reported = _probe_report(sandbox, units.name("sdv-pidfdid.service"))
    measurements(f"systemd {version}: LISTEN_PIDFDID {reported}")
    assert reported["names"] == ["http"], reported
    if SETS_LISTEN_PIDFDID[version]:
        assert reported["given"] == str(reported["own"]) and reported["own"], reported
    else:
        assert reported["given"] is None, reported
