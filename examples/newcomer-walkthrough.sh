#!/bin/bash
# The README's install and quick start, run as a newcomer runs them, checked at each step.
#
# Needs: root, systemd as PID 1, python3-venv, curl, and pip access to a package index (PyPI,
# or your pip configuration's) for the build backend and sdactivate's dependencies.
#
#   sudo examples/newcomer-walkthrough.sh        # from a checkout, on a fresh Debian 12
#
# What it does, with the README's own blocks (extracted by examples/readme_blocks.py, so the
# walkthrough cannot drift from the README):
#   1. "install": a venv under /opt, the wheel built from a copy of this checkout, installed;
#   2. "quickstart-app" saved as /srv/$NAME/app.py;
#   3. "quickstart": gen-units --install --now, curl, systemctl restart, curl;
#   4. 10 x systemctl restart under a curl loop: every request must succeed;
#   5. "quickstart-supervise": --supervise units, then 10 x systemctl reload under the loop;
#   6. clean-up: units stopped, disabled and removed, /opt/$NAME and /srv/$NAME deleted.
# Exits non-zero at the first failure (clean-up still runs).
#
# NAME (default myapp) and PORT (default 8080) replace the README's "myapp" and "8080",
# visibly, for machines where those are taken. It refuses to touch an existing /opt/$NAME,
# /srv/$NAME or unit of that name.
set -euo pipefail

NAME=${NAME:-myapp}
PORT=${PORT:-8080}
CHECKOUT=${CHECKOUT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
ROUNDS=${ROUNDS:-10}
LOOPS=${LOOPS:-4}  # curl loops running at once during the restarts and reloads
UNITS_DIR=/etc/systemd/system
umask 022  # the service's dynamic user reads the venv and the app

say() { printf '\n=== %s\n' "$*"; }
now_ms() { echo $(($(date +%s%N) / 1000000)); }
die() { printf 'walkthrough: FAILED: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (it installs units into $UNITS_DIR)"
[ -d /run/systemd/system ] || die "systemd is not PID 1 here (sd_booted(3): no /run/systemd/system)"
for tool in python3 curl systemctl tar; do
    command -v "$tool" >/dev/null || die "$tool not found"
done
python3 -c 'import ensurepip, venv' 2>/dev/null || die "python3-venv is missing: apt-get install python3-venv"
[ -f "$CHECKOUT/README.md" ] && [ -f "$CHECKOUT/pyproject.toml" ] || die "no checkout at $CHECKOUT"
for path in "/opt/$NAME" "/srv/$NAME" "$UNITS_DIR/$NAME.socket" "$UNITS_DIR/$NAME.service"; do
    [ ! -e "$path" ] || die "$path exists; choose another NAME="
done

WORK=$(mktemp -d)
LOOP_PID=
cleanup() {
    status=$?
    [ -z "$LOOP_PID" ] || kill "$LOOP_PID" 2>/dev/null || true
    systemctl disable --now "$NAME.socket" >/dev/null 2>&1 || true
    systemctl stop "$NAME.service" >/dev/null 2>&1 || true
    rm -f "$UNITS_DIR/$NAME.socket" "$UNITS_DIR/$NAME.service"
    systemctl daemon-reload || true
    systemctl reset-failed "$NAME.service" "$NAME.socket" >/dev/null 2>&1 || true
    rm -rf "/opt/$NAME" "/srv/$NAME" "$WORK"
    if [ "$status" = 0 ]; then echo "walkthrough: OK"; else echo "walkthrough: FAILED ($status)" >&2; fi
}
trap cleanup EXIT

# A README block with the README's "myapp" and "8080" replaced by NAME and PORT.
block() {
    local text subs=(--sub "myapp=$NAME")
    text=$(python3 "$CHECKOUT/examples/readme_blocks.py" "$1")
    case $text in *8080*) subs+=(--sub "8080=$PORT") ;; esac
    python3 "$CHECKOUT/examples/readme_blocks.py" "$1" "${subs[@]}"
}

# Run a shell block line by line, echoing each command; stop at the first failure.
run_block() {
    local started
    started=$(now_ms)
    say "README block '$1'"
    block "$1" > "$WORK/$1.sh"
    (cd "${2:-$WORK}" && bash -euxo pipefail "$WORK/$1.sh") || die "README block '$1' failed"
    echo "(block '$1' took $(($(now_ms) - started)) ms)"
}

URL=http://127.0.0.1:$PORT/

# LOOPS background loops of curl requests; each outcome is a line in $WORK/loop.log.
start_loop() {
    : > "$WORK/loop.log"
    (
        for _ in $(seq "$LOOPS"); do
            while :; do
                if out=$(curl -fsS -m 10 "$URL" 2>&1); then
                    echo "ok $out"
                else
                    echo "FAIL $out"
                fi
            done >> "$WORK/loop.log" &
        done
        trap 'kill $(jobs -p) 2>/dev/null; wait; exit 0' TERM
        wait
    ) &
    LOOP_PID=$!
}

stop_loop() {
    kill "$LOOP_PID"
    wait "$LOOP_PID" 2>/dev/null || true
    LOOP_PID=
    local ok fail pids
    ok=$(grep -c '^ok ' "$WORK/loop.log" || true)
    fail=$(grep -c '^FAIL' "$WORK/loop.log" || true)
    pids=$(grep -o 'pid [0-9]*' "$WORK/loop.log" | sort -u | wc -l)
    echo "$1: $ok requests ok, $fail failed, answered by $pids app processes"
    [ "$fail" = 0 ] || { grep '^FAIL' "$WORK/loop.log" | head -5; die "$1: $fail requests failed"; }
    [ "$ok" -gt 0 ] || die "$1: no request got through"
    [ "$pids" -ge "$2" ] || die "$1: $pids app processes answered, expected at least $2"
}

say "build the wheel from a copy of $CHECKOUT"
SRC=$WORK/src
mkdir -p "$SRC"
tar -C "$CHECKOUT" --exclude=./.venv --exclude=./.git --exclude=./dist --exclude=./build \
    --exclude='*.egg-info' --exclude=__pycache__ --exclude=.mypy_cache --exclude=.ruff_cache \
    --exclude=.pytest_cache --exclude=.hypothesis -cf - . | tar -C "$SRC" -xf -
run_block install "$SRC"
ls "$SRC"/dist/*.whl

say "write /srv/$NAME/app.py (README block 'quickstart-app')"
mkdir -p "/srv/$NAME"
block quickstart-app > "/srv/$NAME/app.py"
chmod 644 "/srv/$NAME/app.py"

run_block quickstart
systemctl is-active --quiet "$NAME.socket" || die "$NAME.socket is not active"
systemctl is-active --quiet "$NAME.service" || die "$NAME.service is not active"

say "$ROUNDS x systemctl restart $NAME.service under a curl loop"
start_loop
started=$(now_ms)
for _ in $(seq "$ROUNDS"); do
    systemctl restart "$NAME.service"
done
echo "($ROUNDS restarts took $(($(now_ms) - started)) ms)"
stop_loop "restarts" 2

run_block quickstart-supervise
main=$(systemctl show -P MainPID "$NAME.service")

say "$ROUNDS x systemctl reload $NAME.service (--supervise) under a curl loop"
start_loop
started=$(now_ms)
for _ in $(seq "$ROUNDS"); do
    systemctl reload "$NAME.service"
done
echo "($ROUNDS reloads took $(($(now_ms) - started)) ms)"
stop_loop "reloads" 2
[ "$(systemctl show -P MainPID "$NAME.service")" = "$main" ] || die "the supervisor changed"
