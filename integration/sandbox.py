"""Boot a real systemd as PID 1 of throw-away namespaces, and drive it with real systemctl.

Layout of a sandbox (all of it disappears when its PID 1 is killed):

- new pid, mount, uts, ipc and cgroup namespaces; mount propagation private;
  the host's network namespace is shared (services bind loopback ports chosen free);
- `/` is an overlay of the host's `/` (or of another release's root file system, built by
  integration/releases.py) whose upper and work dirs live on a fresh tmpfs, so nothing
  written inside (units, journals, /var/lib/private) reaches the host or the cached tree;
- fresh tmpfs on /run, /tmp, /var/tmp, /dev/shm; a fresh /proc with /proc/sys and
  /proc/sysrq-trigger read-only; /sys bound read-only with a fresh, writable cgroup2
  at /sys/fs/cgroup rooted at a per-sandbox child cgroup; a minimal /dev whose
  /dev/console is a log file outside the host's /tmp;
- the checkout bind-mounted read-only at its own absolute path (after the tmpfs mounts,
  so a clone under /tmp works) and again at CODE_DIR, which ProtectHome=/PrivateTmp=
  services can still see;
- units that must not run in a container or would touch the host are masked, and
  systemd boots `basic.target` only (journald and dbus come up, host services do not).

systemd.io/CONTAINER_INTERFACE lists what systemd expects from a container manager;
this follows it except that the network namespace is the host's.
"""

from __future__ import annotations

import functools
import itertools
import os
import re
import select
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from tests.support import free_port, wait_until  # re-exported: the integration tests' names

__all__ = [
    "CODE_DIR",
    "Sandbox",
    "SandboxBootError",
    "SandboxCommandError",
    "Units",
    "free_port",
    "wait_until",
]

SYSTEMD = "/lib/systemd/systemd"
# The checkout is also bound here: visible to services with ProtectHome=/PrivateTmp=.
CODE_DIR = "/opt/sdactivate"
CHECKOUT = str(Path(__file__).resolve().parent.parent)
SANDBOX_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# Units that must not run inside: they touch hardware, the kernel, or the host's clock,
# or are timers/gettys that only add noise. Masked in the overlay's /etc.
MASKED_UNITS = (
    "systemd-timesyncd.service",
    "systemd-modules-load.service",
    "kmod-static-nodes.service",
    "systemd-sysctl.service",
    "systemd-binfmt.service",
    "proc-sys-fs-binfmt_misc.automount",
    "proc-sys-fs-binfmt_misc.mount",
    "systemd-udevd.service",
    "systemd-udevd-control.socket",
    "systemd-udevd-kernel.socket",
    "systemd-udev-trigger.service",
    "systemd-udev-settle.service",
    "systemd-hwdb-update.service",
    "systemd-firstboot.service",
    "systemd-repart.service",
    "systemd-random-seed.service",
    "systemd-machine-id-commit.service",
    "systemd-pstore.service",
    "systemd-pcrphase.service",
    "systemd-pcrphase-sysinit.service",
    "systemd-journald-audit.socket",
    "systemd-remount-fs.service",
    # Not needed on a throw-away root whose users already exist (boot time):
    "systemd-journal-flush.service",
    "systemd-sysusers.service",
    "systemd-update-utmp.service",
    "systemd-update-utmp-runlevel.service",
    "systemd-tmpfiles-setup-dev.service",
    "systemd-ask-password-console.path",
    "systemd-ask-password-wall.path",
    "dev-hugepages.mount",
    "dev-mqueue.mount",
    "sys-kernel-config.mount",
    "sys-kernel-debug.mount",
    "sys-kernel-tracing.mount",
    "sys-fs-fuse-connections.mount",
    "timers.target",
    "getty.target",
    "console-getty.service",
    "systemd-tmpfiles-clean.timer",
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "e2scrub_all.timer",
    "e2scrub_reap.service",
    "fstrim.timer",
    "man-db.timer",
    "dpkg-db-backup.timer",
    "logrotate.timer",
    # ConditionNeedsUpdate=/etc (systemd.unit(5)): a debootstrapped tree has no
    # /etc/.updated, so these would rebuild caches at every boot.
    "ldconfig.service",
    "systemd-journal-catalog-update.service",
    "systemd-update-done.service",
)

# Generators that would turn the host's fstab, disks or ttys into units inside.
MASKED_GENERATORS = (
    "systemd-fstab-generator",
    "systemd-gpt-auto-generator",
    "systemd-cryptsetup-generator",
    "systemd-veritysetup-generator",
    "systemd-integritysetup-generator",
    "systemd-hibernate-resume-generator",
    "systemd-getty-generator",
    "systemd-sysv-generator",
    "systemd-rc-local-generator",
    "postgresql-generator",
)

# Runs as PID 1 of the new namespaces (still on the host's root) and execs systemd.
# Inputs come from the environment: SD_CONSOLE, SD_CHECKOUT, SD_CODE_DIR, SD_LOWER (the
# overlay's lower layer: / or a release's tree) and SD_SEED (a tree copied into the
# overlay's upper dir: see _write_seed).
_INIT_SCRIPT = r"""
set -eu
read -r _go || exit 1   # the launcher has left our cgroup: the cgroup root is ours alone
M=/mnt
R=$M/root
mount -t tmpfs -o mode=0755 sdsandbox $M
mkdir -p $M/upper $M/work $R
cp -a "$SD_SEED/." $M/upper/   # masks and config drop-ins, prepared by the launcher
mount -t overlay overlay -o "lowerdir=$SD_LOWER,upperdir=$M/upper,workdir=$M/work" $R
mount -t proc -o nosuid,nodev,noexec proc $R/proc
for p in sys sysrq-trigger; do
    [ -e $R/proc/$p ] || continue
    mount --bind $R/proc/$p $R/proc/$p
    mount -o remount,bind,ro $R/proc/$p
done
mount --bind /sys $R/sys
mount -o remount,bind,ro,nosuid,nodev,noexec $R/sys
mount -t cgroup2 -o nosuid,nodev,noexec cgroup2 $R/sys/fs/cgroup
mount -t tmpfs -o mode=0755,nosuid sddev $R/dev
for n in null zero full random urandom tty; do
    touch $R/dev/$n
    mount --bind /dev/$n $R/dev/$n
done
touch $R/dev/console
mount --bind "$SD_CONSOLE" $R/dev/console
mkdir -p $R/dev/pts $R/dev/shm $R/dev/mqueue
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts $R/dev/pts
ln -s pts/ptmx $R/dev/ptmx
mount -t tmpfs -o mode=1777,nosuid,nodev shm $R/dev/shm
mount -t mqueue mqueue $R/dev/mqueue || true
ln -s /proc/self/fd $R/dev/fd
ln -s /proc/self/fd/0 $R/dev/stdin
ln -s /proc/self/fd/1 $R/dev/stdout
ln -s /proc/self/fd/2 $R/dev/stderr
mount -t tmpfs -o mode=0755,nosuid,nodev sdrun $R/run
mount -t tmpfs -o mode=1777,nosuid,nodev sdtmp $R/tmp
mount -t tmpfs -o mode=1777,nosuid,nodev sdvartmp $R/var/tmp
for d in "$SD_CHECKOUT" "$SD_CODE_DIR"; do
    mkdir -p "$R$d"
    mount --bind "$SD_CHECKOUT" "$R$d"
    mount -o remount,bind,ro "$R$d"
done
rm -f $R/etc/systemd/system/*.wants/*  # the host's enabled units (sockets too) stay off
mkdir $R/.oldroot
cd $R
pivot_root . .oldroot
cd /
umount -l /.oldroot
rmdir /.oldroot
exec env -i container=sdactivate-sandbox PATH=/usr/sbin:/usr/bin:/sbin:/bin \
    /lib/systemd/systemd --unit=basic.target --show-status=0 \
    --log-target=journal --log-level=info </dev/null >/dev/console 2>&1
"""

_counter = itertools.count()


class SandboxBootError(RuntimeError):
    """The sandbox did not reach `running`; the message carries its console and init log."""


class SandboxCommandError(subprocess.CalledProcessError):
    """A command inside the sandbox failed; str() includes its stdout and stderr."""

    def __str__(self) -> str:
        cmd = shlex.join(self.cmd) if isinstance(self.cmd, list) else str(self.cmd)
        return (
            f"sandbox command {cmd} exited {self.returncode}\n"
            f"--- stdout ---\n{self.stdout or ''}--- stderr ---\n{self.stderr or ''}"
        )


def _cgroup2_root() -> Path:
    """Where the host's cgroup2 hierarchy is mounted (pure v2, or hybrid's `unified`)."""
    for candidate in (Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/unified")):
        if (candidate / "cgroup.controllers").exists():
            return candidate
    raise SandboxBootError("no cgroup2 hierarchy at /sys/fs/cgroup or /sys/fs/cgroup/unified")


def _default_workroot() -> Path:
    """A parent for per-sandbox scratch dirs that is not the host's /tmp, /var/tmp or /run."""
    override = os.environ.get("SDACTIVATE_SANDBOX_DIR")
    if override:
        return Path(override)
    return Path.home() / ".cache" / "sdactivate-sandbox"


def _rmdir_tree(path: Path, *, timeout: float) -> None:
    """Remove an empty cgroup tree bottom-up; cgroups of just-killed tasks may be EBUSY briefly."""
    deadline = time.monotonic() + timeout
    while path.exists():
        try:
            for dirpath, _dirs, _files in os.walk(path, topdown=False):
                os.rmdir(dirpath)
        except FileNotFoundError:
            continue
        except OSError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.01)


class Sandbox:
    """A booted systemd (PID 1 of its own namespaces) on an overlay of the host's root."""

    pid: int
    boot_seconds: float

    def __init__(
        self,
        *,
        launcher: subprocess.Popen[bytes],
        pid: int,
        pidfd: int,
        cgroup: Path,
        launcher_cgroup: Path,
        workdir: Path,
        checkout: str,
        rootfs: Path | None = None,
    ) -> None:
        self._launcher = launcher
        self.pid = pid
        self._pidfd = pidfd
        self.cgroup = cgroup
        self._launcher_cgroup = launcher_cgroup
        self.workdir = workdir
        self.checkout = checkout
        self.rootfs = rootfs
        self.console_path = workdir / "console.log"
        self.pidns = os.stat(f"/proc/{pid}/ns/pid").st_ino
        self.boot_seconds = float("nan")
        self._closed = False

    # -- lifecycle ---------------------------------------------------------------------------

    @classmethod
    def boot(
        cls,
        *,
        checkout: str | None = None,
        timeout: float = 30,
        workroot: str | os.PathLike[str] | None = None,
        rootfs: str | os.PathLike[str] | None = None,
    ) -> Sandbox:
        """Boot a sandbox and return once `systemctl is-system-running` says `running`.

        `rootfs` (default: the host's `/`) is the overlay's lower layer: a release's tree
        from integration/releases.py boots that release's systemd. It is never written to.
        `checkout` (default: this repository) is bound read-only at its own path and at
        CODE_DIR. Scratch files (console log, init log) go under `workroot` (default
        $SDACTIVATE_SANDBOX_DIR or ~/.cache/sdactivate-sandbox, never the host's /tmp).
        Raises SandboxBootError with the console output if boot fails or times out.
        """
        checkout = str(Path(checkout or CHECKOUT).resolve())
        lower = Path(rootfs).resolve() if rootfs is not None else None
        if lower is not None and not (lower / SYSTEMD.lstrip("/")).exists():
            raise SandboxBootError(f"rootfs {str(lower)!r} has no {SYSTEMD}: not a built tree")
        root = Path(workroot) if workroot is not None else _default_workroot()
        root.mkdir(parents=True, exist_ok=True)
        _remove_stale_workdirs(root)
        workdir = Path(tempfile.mkdtemp(prefix=f"sandbox-{os.getpid()}-", dir=root))
        console = workdir / "console.log"
        console.touch()
        name = f"sdactivate-sandbox-{os.getpid()}-{next(_counter)}"
        cg_root = _cgroup2_root()
        _remove_stale_cgroups(cg_root)
        cgroup = cg_root / name
        launcher_cgroup = cg_root / f"{name}.launcher"
        cgroup.mkdir()
        launcher_cgroup.mkdir()
        env = {
            "PATH": SANDBOX_PATH,
            "SD_CONSOLE": str(console),
            "SD_CHECKOUT": checkout,
            "SD_CODE_DIR": CODE_DIR,
            "SD_LOWER": str(lower or "/"),
            "SD_SEED": str(_write_seed(workdir / "seed")),
        }
        argv = [
            "/bin/sh",
            "-c",
            'echo $$ > "$1/cgroup.procs" && shift && exec "$@"',
            "sh",
            str(cgroup),
            "unshare",
            "--pid",
            "--fork",
            "--mount",
            "--uts",
            "--ipc",
            "--cgroup",
            "--propagation",
            "private",
            "--kill-child=SIGKILL",  # PID 1 dies with the launcher (PR_SET_PDEATHSIG)
            "/bin/sh",
            "-c",
            _INIT_SCRIPT,
        ]
        started = time.monotonic()
        with open(workdir / "init.log", "wb") as init_log:
            launcher = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=init_log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        sandbox: Sandbox | None = None
        try:
            pid = wait_until(
                lambda: _first_child(launcher.pid) or launcher.poll() is not None,
                timeout=timeout,
                what="the sandbox's PID 1 to be forked",
            )
            if launcher.poll() is not None or pid is True:
                raise SandboxBootError(_boot_report(workdir, "the launcher exited early"))
            assert isinstance(pid, int)
            pidfd = os.pidfd_open(pid)
            # Leave the sandbox's cgroup so that its root holds PID 1 only (cgroup2's
            # no-internal-processes rule would otherwise stop systemd delegating controllers).
            (launcher_cgroup / "cgroup.procs").write_text(f"{launcher.pid}\n")
            sandbox = cls(
                launcher=launcher,
                pid=pid,
                pidfd=pidfd,
                cgroup=cgroup,
                launcher_cgroup=launcher_cgroup,
                workdir=workdir,
                checkout=checkout,
                rootfs=lower,
            )
            assert launcher.stdin is not None
            launcher.stdin.write(b"go\n")
            launcher.stdin.close()
            sandbox._wait_running(started + timeout)
            sandbox.boot_seconds = time.monotonic() - started
            return sandbox
        except BaseException:
            if sandbox is not None:
                sandbox.close()
            else:
                _kill_launcher(launcher)
                _rmdir_tree(cgroup, timeout=5)
                _rmdir_tree(launcher_cgroup, timeout=5)
                shutil.rmtree(workdir, ignore_errors=True)
            raise

    def _wait_running(self, deadline: float) -> None:
        """Wait for `is-system-running` to report `running`.

        First, cheaply, for PID 1 to be systemd (the init script has pivoted and exec'd) and
        its private bus socket to exist, so no systemctl runs (and competes for CPU) before it
        can answer; then `is-system-running --wait` blocks until boot finishes."""
        private = f"/proc/{self.pid}/root/run/systemd/private"

        def bus_up() -> bool:
            if self._launcher.poll() is not None:
                return True  # reported below
            try:
                comm = Path(f"/proc/{self.pid}/comm").read_text().strip()
            except OSError:
                return False
            return comm == "systemd" and os.path.exists(private)

        try:
            wait_until(bus_up, timeout=max(0.0, deadline - time.monotonic()), interval=0.005)
        except TimeoutError:
            pass  # reported below with the console
        state = ""
        while True:
            if self._launcher.poll() is not None:
                raise SandboxBootError(_boot_report(self.workdir, "PID 1 exited during boot"))
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise SandboxBootError(
                    _boot_report(self.workdir, f"not running in time (last state {state!r})")
                )
            try:
                proc = self.run(
                    ["systemctl", "is-system-running", "--wait"],
                    check=False,
                    timeout=remaining,
                )
            except subprocess.TimeoutExpired:
                continue
            state = proc.stdout.strip()
            if state == "running":
                return
            if state in ("degraded", "maintenance", "stopping"):
                failed = self.run(["systemctl", "--failed", "--no-legend"], check=False).stdout
                why = f"boot ended {state!r}; failed units:\n{failed}\n{self.journal(lines=60)}"
                raise SandboxBootError(_boot_report(self.workdir, why))
            time.sleep(0.01)

    def close(self, *, keep_workdir: bool = False) -> None:
        """SIGKILL PID 1 (the kernel then kills every process in the sandbox), wait for it,
        remove the sandbox's cgroups bottom-up and its scratch dir. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)
        except ProcessLookupError:
            pass
        select.select([self._pidfd], [], [], 10)  # readable once PID 1 has exited
        os.close(self._pidfd)
        _kill_launcher(self._launcher)
        _rmdir_tree(self.cgroup, timeout=10)
        _rmdir_tree(self._launcher_cgroup, timeout=10)
        if not keep_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- commands inside ---------------------------------------------------------------------

    def _nsenter(self, argv: Sequence[str]) -> list[str]:
        return [
            "nsenter",
            "-t",
            str(self.pid),
            "-m",
            "-p",
            "-u",
            "-i",
            "-C",
            "-r",
            "-w",
            "--",
            *argv,
        ]

    @staticmethod
    def _env(env: Mapping[str, str] | None) -> dict[str, str]:
        base = {
            "PATH": SANDBOX_PATH,
            "HOME": "/root",
            "LANG": "C.UTF-8",
            "TERM": "dumb",
            "SYSTEMD_PAGER": "",
            "SYSTEMD_COLORS": "0",
        }
        if env:
            base.update(env)
        return base

    def run(
        self,
        argv: Sequence[str],
        *,
        check: bool = True,
        timeout: float = 60,
        input: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run `argv` inside the sandbox (its mount/pid/uts/ipc/cgroup namespaces) with a
        clean environment plus `env`; capture text output. SandboxCommandError if `check`
        and the exit status is non-zero."""
        proc = subprocess.run(
            self._nsenter(argv),
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self._env(env),
            check=False,
        )
        if check and proc.returncode != 0:
            raise SandboxCommandError(proc.returncode, list(argv), proc.stdout, proc.stderr)
        return proc

    def popen(self, argv: Sequence[str], **kw: Any) -> subprocess.Popen[Any]:
        """Start `argv` inside the sandbox; keyword arguments go to subprocess.Popen
        (`env` is merged over the clean sandbox environment)."""
        kw["env"] = self._env(kw.get("env"))
        return subprocess.Popen(self._nsenter(argv), **kw)

    def systemctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """`systemctl ARGS...` inside the sandbox."""
        return self.run(["systemctl", *args], check=check)

    def show(self, unit: str, *props: str) -> dict[str, str]:
        """`systemctl show UNIT` as a dict (only `props` if given)."""
        args = ["show", *(f"--property={p}" for p in props), "--", unit]
        out = self.systemctl(*args).stdout
        result: dict[str, str] = {}
        for line in out.splitlines():
            key, sep, value = line.partition("=")
            if sep:
                result[key] = value
        return result

    def write_file(self, path: str, text: str, mode: int = 0o644) -> None:
        """Write `text` to `path` inside the sandbox (atomically, parents created)."""
        self.run(
            [
                "/bin/sh",
                "-c",
                'mkdir -p "$(dirname "$1")" && cat > "$1.sdtmp" && chmod "$2" "$1.sdtmp" '
                '&& mv -f "$1.sdtmp" "$1"',
                "sh",
                path,
                f"{mode:o}",
            ],
            input=text,
        )

    def read_file(self, path: str) -> str:
        """The text of `path` inside the sandbox."""
        return self.run(["cat", "--", path]).stdout

    def install_units(self, files: Mapping[str, str]) -> None:
        """Write unit files (name -> text; `UNIT.d/X.conf` for a drop-in) to
        /etc/systemd/system inside, then daemon-reload."""
        for name, text in files.items():
            _check_unit_name(name)
            self.write_file(f"/etc/systemd/system/{name}", text)
        self.systemctl("daemon-reload")

    def remove_units(self, names: Iterable[str]) -> None:
        """Delete unit files (and their drop-in dirs) from /etc/systemd/system, daemon-reload,
        and forget their failed state. Stop them first."""
        paths: list[str] = []
        for name in names:
            _check_unit_name(name)
            paths += [f"/etc/systemd/system/{name}", f"/etc/systemd/system/{name}.d"]
        if paths:
            self.run(["rm", "-rf", "--", *paths])
        self.systemctl("daemon-reload")
        self.systemctl("reset-failed", check=False)

    def journal(self, *units: str, lines: int = 200) -> str:
        """The last `lines` journal lines (of `units` if given), monotonic timestamps."""
        argv = ["journalctl", "--no-pager", "-q", "-o", "short-monotonic", "-n", str(lines)]
        for unit in units:
            argv += ["-u", unit]
        return self.run(argv, check=False).stdout

    def console(self) -> str:
        """What systemd wrote to /dev/console so far."""
        return self.console_path.read_text(errors="replace")

    @functools.cached_property
    def systemd_version(self) -> int:
        """The major version of the sandbox's PID 1, as the manager itself reports it
        (org.freedesktop.systemd1.Manager's Version property, e.g. "257.13-1~deb13u1")."""
        raw = self.systemctl("show", "--property=Version", "--value").stdout.strip()
        match = re.match(r"\d+", raw)
        if match is None:
            raise SandboxCommandError(0, ["systemctl", "show", "-p", "Version"], raw, "")
        return int(match.group())


class Units:
    """One test's units: uniquely named, stopped, removed and (on failure) journalled after it.

    :meth:`name` gives every unit name of the test a prefix of its own (``t3f9a2c-``): a
    parametrized or repeated test, or a leftover of another, never meets the same unit,
    journal or restart counter. Whatever carries the prefix is stopped and removed at
    teardown, installed by :meth:`install` or not (gen-units --install inside the sandbox).
    """

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self.names: list[str] = []
        self.prefix = f"t{os.urandom(3).hex()}-"

    def name(self, name: str) -> str:
        """``name`` (a stem, a unit name, a template, a drop-in path) made this test's own:
        the same prefix on each, so names gen-units derives from a stem (``STEM-admin.socket``)
        match the prefixed ones. Idempotent."""
        return name if name.startswith(self.prefix) else self.prefix + name

    def install(self, files: Mapping[str, str]) -> list[str]:
        """Install unit files (name -> text; `UNIT.d/X.conf` drop-ins too) and daemon-reload;
        returns the names. A drop-in goes away with its unit."""
        self.names += [n.split("/")[0].removesuffix(".d") for n in files]
        self.names = list(dict.fromkeys(self.names))
        self.sandbox.install_units(files)
        return list(files)

    def track(self, names: Iterable[str]) -> None:
        """Also stop/journal/remove units installed some other way (e.g. by gen-units)."""
        self.names += [n for n in names if n not in self.names]

    def _prefixed(self) -> list[str]:
        """Unit files under /etc/systemd/system that carry this test's prefix."""
        found = self.sandbox.run(
            ["find", "/etc/systemd/system", "-maxdepth", "1", "-name", f"{self.prefix}*"],
            check=False,
        ).stdout.split()
        return [os.path.basename(path).removesuffix(".d") for path in found]

    def teardown(self, *, failed: bool) -> None:
        self.track(self._prefixed())
        if not self.names:
            return
        if failed:
            print(f"\n===== sandbox journal for {' '.join(self.names)} =====")
            print(self.sandbox.journal(*self.names))
            status = self.sandbox.systemctl(
                "status", "--no-pager", "-n", "0", *self.names, check=False
            )
            print(status.stdout)
        # Instances of templates (Accept=yes) are stopped by pattern, as is anything loaded
        # under this test's prefix.
        patterns = [n.replace("@.", "@*.") for n in self.names] + [f"{self.prefix}*"]
        self.sandbox.run(["systemctl", "stop", *patterns], check=False, timeout=30)
        self.sandbox.remove_units(dict.fromkeys(self.names))


def _check_unit_name(name: str) -> None:
    """A unit file name, or a drop-in `UNIT.d/NAME.conf`; nothing that leaves the dir."""
    parts = name.split("/")
    ok = all(p and not p.startswith(".") for p in parts) and (
        len(parts) == 1 or (len(parts) == 2 and parts[0].endswith(".d"))
    )
    if not ok:
        raise ValueError(f"not a unit file or drop-in name: {name!r}")


def _die_with_parent() -> None:
    """In the launcher before exec: SIGKILL it if the process that booted it dies, so a
    killed test run cannot leave a sandbox behind (prctl(2) PR_SET_PDEATHSIG)."""
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)


def _remove_stale_cgroups(root: Path) -> None:
    """Remove empty cgroups left by sandboxes of test runs that were killed."""
    for path in root.glob("sdactivate-sandbox-*"):
        owner = path.name.removeprefix("sdactivate-sandbox-").split("-")[0]
        if owner.isdigit() and not os.path.exists(f"/proc/{owner}"):
            try:
                _rmdir_tree(path, timeout=0)
            except OSError:
                pass  # still has processes: not ours to touch


# Files added to the sandbox's /etc (seeded into the overlay's upper dir before it is mounted).
SEED_FILES = {
    "etc/systemd/system.conf.d/50-sdactivate-sandbox.conf": (
        "[Manager]\nDefaultTimeoutStopSec=10s\nDefaultTimeoutStartSec=30s\n"
        "DefaultLimitCORE=0\n"  # the host's kernel.core_pattern must not see sandbox crashes
    ),
    "etc/systemd/journald.conf.d/50-sdactivate-sandbox.conf": "[Journal]\nStorage=volatile\n",
}


def _write_seed(seed: Path) -> Path:
    """The upper-dir seed: /dev/null symlinks masking MASKED_UNITS and MASKED_GENERATORS,
    plus SEED_FILES. Prepared here so the init script copies one tree instead of forking
    a process per mask (boot time)."""
    links = [f"etc/systemd/system/{u}" for u in MASKED_UNITS]
    links += [f"etc/systemd/system-generators/{g}" for g in MASKED_GENERATORS]
    for rel in links:
        path = seed / rel
        path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        path.symlink_to("/dev/null")
    for rel, text in SEED_FILES.items():
        path = seed / rel
        path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(0o644)
    for path in [seed, *(p for p in seed.rglob("*") if p.is_dir() and not p.is_symlink())]:
        path.chmod(0o755)
    return seed


def _remove_stale_workdirs(root: Path) -> None:
    """Remove scratch dirs of sandboxes whose test run was killed."""
    for path in root.glob("sandbox-*-*"):
        owner = path.name.split("-")[1]
        if owner.isdigit() and not os.path.exists(f"/proc/{owner}"):
            shutil.rmtree(path, ignore_errors=True)


def _first_child(pid: int) -> int | None:
    """The first child of `pid` (the unshare process forks the sandbox's PID 1)."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except FileNotFoundError:  # kernel without CONFIG_PROC_CHILDREN: scan ppids
        children = [str(p) for p in _children_by_scan(pid)]
    except OSError:
        return None
    return int(children[0]) if children else None


def _children_by_scan(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


def _kill_launcher(launcher: subprocess.Popen[bytes]) -> None:
    if launcher.poll() is None:
        launcher.kill()
    launcher.wait(timeout=10)
    if launcher.stdin is not None and not launcher.stdin.closed:
        launcher.stdin.close()


def _boot_report(workdir: Path, why: str) -> str:
    def tail(name: str) -> str:
        try:
            lines = (workdir / name).read_text(errors="replace").splitlines()
        except OSError:
            return "(missing)"
        return "\n".join(lines[-200:])

    return (
        f"sandbox boot failed: {why}\n--- init log ---\n{tail('init.log')}\n"
        f"--- console ---\n{tail('console.log')}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """`python integration/sandbox.py [N] [--rootfs DIR]`: boot N sandboxes in turn (of the
    host's root or of a release's tree), print their boot times and systemd versions."""
    import argparse
    import statistics

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("count", nargs="?", type=int, default=5)
    parser.add_argument("--rootfs", default=None, help="a tree from integration/releases.py")
    parser.add_argument("--console", action="store_true", help="print each boot's console")
    args = parser.parse_args(argv)
    times = []
    for _ in range(args.count):
        with Sandbox.boot(rootfs=args.rootfs) as box:
            times.append(box.boot_seconds * 1e3)
            state = box.systemctl("is-system-running", check=False).stdout.strip()
            print(
                f"systemd {box.systemd_version} booted to {state!r} in {times[-1]:.0f} ms",
                flush=True,
            )
            if args.console:
                print(box.console())
    count = args.count
    print(
        f"{count} boots: min {min(times):.0f} ms, median {statistics.median(times):.0f} ms,"
        f" max {max(times):.0f} ms (load average {os.getloadavg()[0]:.1f})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
