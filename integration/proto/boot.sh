#!/bin/sh
set -eu
CG=/sys/fs/cgroup/unified/sdactivate-proto
mkdir -p $CG
echo $$ > $CG/cgroup.procs
export CONSOLE=/root/proto/console.log CHECKOUT=/work/main
: > $CONSOLE
export MASK="systemd-timesyncd.service systemd-pstore.service systemd-modules-load.service systemd-sysctl.service systemd-binfmt.service systemd-udevd.service systemd-udevd-control.socket systemd-udevd-kernel.socket systemd-udev-trigger.service systemd-firstboot.service systemd-repart.service proc-sys-fs-binfmt_misc.automount timers.target getty.target systemd-random-seed.service systemd-machine-id-commit.service systemd-journald-audit.socket"
exec unshare --pid --fork --mount --uts --ipc --cgroup --propagation private /root/proto/init.sh
