#!/bin/sh
# runs as PID 1 of new pid+mount ns
set -eu
R=/mnt/sdroot
mount -t tmpfs -o mode=0755 sdbase /mnt
mkdir -p /mnt/upper /mnt/work $R
mount -t overlay overlay -o lowerdir=/,upperdir=/mnt/upper,workdir=/mnt/work $R
mount -t proc proc $R/proc
mount --bind $R/proc/sys $R/proc/sys && mount -o remount,bind,ro $R/proc/sys
mount --rbind /sys $R/sys
mount -t cgroup2 cgroup2 $R/sys/fs/cgroup 2>/dev/null || { umount -l $R/sys; mount -t sysfs sysfs $R/sys; mount -t cgroup2 cgroup2 $R/sys/fs/cgroup; }
mount -t tmpfs -o mode=0755 sddev $R/dev
for n in null zero full random urandom tty; do touch $R/dev/$n; mount --bind /dev/$n $R/dev/$n; done
touch $R/dev/console; mount --bind "$CONSOLE" $R/dev/console
mkdir -p $R/dev/pts $R/dev/shm $R/dev/mqueue
mount -t devpts -o newinstance,ptmxmode=0666 devpts $R/dev/pts; ln -s pts/ptmx $R/dev/ptmx
mount -t tmpfs -o mode=1777 shm $R/dev/shm
mount -t mqueue mqueue $R/dev/mqueue || true
ln -s /proc/self/fd $R/dev/fd; ln -s /proc/self/fd/0 $R/dev/stdin; ln -s /proc/self/fd/1 $R/dev/stdout; ln -s /proc/self/fd/2 $R/dev/stderr
mount -t tmpfs -o mode=0755 run $R/run
mount -t tmpfs -o mode=1777 tmp $R/tmp
mount -t tmpfs -o mode=1777 vartmp $R/var/tmp
mkdir -p $R$CHECKOUT; mount --bind $CHECKOUT $R$CHECKOUT
for u in $MASK; do ln -sf /dev/null $R/etc/systemd/system/$u; done
rm -f $R/etc/systemd/system/*.wants/* 2>/dev/null || true
mkdir -p $R/.oldroot
cd $R
pivot_root . .oldroot
umount -l /.oldroot
rmdir /.oldroot
export container=sdactivate
exec /lib/systemd/systemd --unit=basic.target --show-status=0 --log-target=console --log-level=info
