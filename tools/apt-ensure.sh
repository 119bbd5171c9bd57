#!/bin/sh
# tools/apt-ensure.sh [--allow-upgrades] PKG...: install the PKGs that are missing (Debian).
#
# - Nothing missing: does nothing (no root, no network).
# - Installs only the missing PKGs and what they depend on, without recommends.
# - Waits for another apt or dpkg (unattended-upgrades, a second terminal) up to
#   APT_LOCK_TIMEOUT seconds (default 120): DPkg::Lock::Timeout for install; apt-get update
#   does not honour it for the lists lock (apt 2.6), so update is retried until the same
#   deadline.
# - Never upgrades an installed package unless --allow-upgrades: apt's plan is simulated
#   first, and if it would upgrade anything (a -dev package pins its library to its own
#   version: libsystemd-dev -> libsystemd0 -> systemd), nothing is installed and the packages
#   are named. `--no-upgrade` is no help: it covers the named packages, not dependencies.
set -eu

allow_upgrades=no
if [ "${1:-}" = --allow-upgrades ]; then
	allow_upgrades=yes
	shift
fi
timeout=${APT_LOCK_TIMEOUT:-120}

missing=
for pkg in "$@"; do
	dpkg-query -W -f='${Status}\n' "$pkg" 2>/dev/null | grep -q 'install ok installed' \
		|| missing="$missing $pkg"
done
[ -n "$missing" ] || exit 0
if [ "$(id -u)" != 0 ]; then
	echo "need root to install:$missing" >&2
	exit 1
fi
echo "apt-get install$missing"
export DEBIAN_FRONTEND=noninteractive
apt="apt-get -o DPkg::Lock::Timeout=$timeout"

deadline=$(($(date +%s) + timeout))
until out=$($apt -qq update 2>&1); do
	case $out in
	*"Could not get lock"*) ;;
	*)
		echo "$out" >&2
		exit 1
		;;
	esac
	if [ "$(date +%s)" -ge "$deadline" ]; then
		echo "$out" >&2
		echo "another apt still holds its lock after ${timeout}s (APT_LOCK_TIMEOUT)" >&2
		exit 1
	fi
	sleep 2 # polling another process's lock, with the deadline above
done

# Simulated plan: "Inst NAME [INSTALLED] (NEW ...)" is an upgrade of an installed package.
plan=$($apt -s install --no-install-recommends $missing)
upgrades=$(printf '%s\n' "$plan" | sed -n 's/^Inst \([^ ]*\) \[\([^]]*\)\] (\([^ ]*\).*/  \1 \2 -> \3/p')
if [ -n "$upgrades" ] && [ "$allow_upgrades" = no ]; then
	echo "installing$missing would upgrade installed packages:" >&2
	printf '%s\n' "$upgrades" >&2
	echo "nothing was installed: upgrade those first (apt-get install --only-upgrade ...)," >&2
	echo "or install$missing yourself" >&2
	exit 1
fi
$apt install -y -qq --no-install-recommends $missing
