# `make demo` and `make test` set up what they need on a fresh Debian 12 machine (as root),
# then run. Both wait for another apt or dpkg (unattended-upgrades...) up to APT_LOCK_TIMEOUT
# seconds, and install only the missing packages, without recommends (tools/apt-ensure.sh).
# - `make demo`: DEMO_APT_PKGS and a venv with this package in it; never upgrades an
#   installed package (it stops and names them instead).
# - `make test` (and `make setup`): TEST_APT_PKGS and the test tools (requirements-dev.txt).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install -q --disable-pip-version-check
APT_LOCK_TIMEOUT ?= 120
export APT_LOCK_TIMEOUT
# What the demo runs: systemd-socket-activate (package systemd: there on any systemd host).
DEMO_APT_PKGS := systemd
# The test toolchain: gcc, pkg-config and the -dev packages build systemd-python (the test
# oracle), dbus-python and PyGObject (the D-Bus mock); dbus-daemon runs the mock; wrk, iproute2
# and util-linux serve the integration tier. A -dev package pins its library to its own version:
# on a host behind on updates, libsystemd-dev upgrades libsystemd0 and with it systemd and
# libudev1, libglib2.0-dev upgrades glib and libpcre2. The test target accepts that
# (--allow-upgrades); the demo never needs these packages.
TEST_APT_PKGS := $(DEMO_APT_PKGS) dbus dbus-daemon libsystemd-dev pkg-config gcc libdbus-1-dev \
	libglib2.0-dev libgirepository1.0-dev libcairo2-dev gir1.2-glib-2.0 wrk iproute2 util-linux
# `python3 -m venv` needs ensurepip, which Debian's python3 has only with python3-venv.
VENV_APT_PKGS = $(shell $(PYTHON) -c 'import ensurepip' 2>/dev/null || echo python3-venv)
STAMP_APT_DEMO := $(VENV)/.stamp-apt-demo
STAMP_APT := $(VENV)/.stamp-apt
STAMP_PKG := $(VENV)/.stamp-pkg
STAMP_PIP := $(VENV)/.stamp-pip
# compat mode: a plain .pth path entry; the default import-hook finder costs ~50 ms at every
# interpreter start (every CLI call and unit start in the tests).
INSTALL_EDITABLE = $(PIP) $(1) -e . --config-settings editable_mode=compat 2>/dev/null \
	|| $(PIP) $(1) -e .

.PHONY: setup setup-demo test lint typecheck import-cycles unit integration test-busy demo \
	bench bench-handover clean rootfs matrix soak

setup: $(STAMP_PIP)

setup-demo: $(STAMP_PKG)

$(STAMP_APT_DEMO):
	tools/apt-ensure.sh $(DEMO_APT_PKGS) $(VENV_APT_PKGS)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@touch $@

$(STAMP_APT):
	tools/apt-ensure.sh --allow-upgrades $(TEST_APT_PKGS) $(VENV_APT_PKGS)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@touch $@

# The demo's venv: this package and its own dependencies, nothing else.
$(STAMP_PKG): $(STAMP_APT_DEMO) pyproject.toml
	$(call INSTALL_EDITABLE)
	@touch $@

$(STAMP_PIP): $(STAMP_APT) requirements-dev.txt pyproject.toml
	$(PIP) -r requirements-dev.txt
	$(call INSTALL_EDITABLE,--no-deps)
	@touch $@

lint: setup
	$(VENV)/bin/ruff check sdactivate tests integration bench examples tools
	$(VENV)/bin/ruff format --check sdactivate tests integration bench examples tools

typecheck: setup
	$(VENV)/bin/mypy --strict sdactivate

# Any import cycle among sdactivate, tests, integration, bench and examples fails (read with
# ast; lazy, TYPE_CHECKING and import_module imports count: see the script's docstring).
import-cycles: setup
	$(PY) tools/import_cycles.py

unit: setup
	$(PY) -m pytest -q tests

# The test matrix: the integration tier on each systemd (252 is the host; 254, 257 and 262
# boot Debian trees that integration/releases.py debootstraps and caches under
# /var/cache/sdactivate/rootfs, or $SDACTIVATE_ROOTFS_DIR), and the hermetic tier on each
# release's own Python (3.11 here, 3.13 in 257's tree, 3.14 in 262's).
# `make test SYSTEMD=257` runs one release; `make integration SYSTEMD="254 262"` two.
SYSTEMD ?= 252 254 257 262
# Releases tested at once (each a sandbox and a pytest; 2 keeps `make test` within 25 min on
# a 2-core CI machine: see README "The matrix").
MATRIX_JOBS ?= 2
STAMP_DEBOOTSTRAP := $(VENV)/.stamp-debootstrap

$(STAMP_DEBOOTSTRAP): $(STAMP_APT)
	tools/apt-ensure.sh --allow-upgrades debootstrap
	@touch $@

rootfs: setup $(STAMP_DEBOOTSTRAP)
	$(PY) integration/releases.py build $(SYSTEMD)

integration: setup $(STAMP_DEBOOTSTRAP)
	$(PY) integration/matrix.py --jobs $(MATRIX_JOBS) --tiers rootfs,integration $(SYSTEMD)

matrix: setup $(STAMP_DEBOOTSTRAP)
	$(PY) integration/matrix.py --jobs $(MATRIX_JOBS) $(SYSTEMD)

# The hermetic tests beside one busy-looping process per CPU (each ends by itself after 20
# minutes at most, and is killed when the tests end): timing assumptions show up here first.
test-busy: setup
	@hogs=""; for _ in $$(seq $$(nproc)); do \
		timeout 1200 $(PYTHON) -c "while True: pass" & hogs="$$hogs $$!"; done; \
	$(PY) -m pytest -q tests; rc=$$?; kill $$hogs 2>/dev/null; wait; exit $$rc

# The chaos soak (integration/soak.py): SOAK_SECONDS of seeded faults (serving and starting
# generations killed, one stopped past its ready timeout, versions that exit or never get
# ready, reload bursts, supervisor SIGKILL) against generated --supervise units under 500
# new connections/s, in a sandbox of SOAK_SYSTEMD; prints a table of faults and failed
# requests by cause, exits 1 if a check fails. SOAK_SEED replays a schedule (default: a
# random one, printed). A short one runs in `make test` (integration/test_soak_e2e.py).
SOAK_SECONDS ?= 300
SOAK_SEED ?=
SOAK_SYSTEMD ?= 252

soak: setup $(STAMP_DEBOOTSTRAP)
	SDACTIVATE_SYSTEMD=$(SOAK_SYSTEMD) SOAK_SECONDS=$(SOAK_SECONDS) SOAK_SEED=$(SOAK_SEED) \
		$(PY) integration/soak.py

# lint, typecheck, the import-cycle check, the hermetic tier here, then per release its tree,
# integration tier and (on another Python) hermetic tier; one summary at the end
# (integration/matrix.py).
test: lint typecheck import-cycles matrix

demo: setup-demo
	$(PY) examples/demo.py

# `make bench`: the restart modes and the peers side by side (bench/run.py, BENCH_ARGS), then
# the `run --workers` benchmarks (bench/workers.py, WORKERS_ARGS: scaling, 20 handovers at
# N=4, faults; results in bench/results/workers/). The peers (issue 15) install here only,
# never in `make test`: a peer that does not install (uWSGI compiles a C extension) is
# reported unavailable by its modes, and the rest still runs.
BENCH_PEERS := uwsgi==2.0.31 circus==0.19.0

bench: setup
	$(PIP) matplotlib==3.10.7
	@for p in $(BENCH_PEERS); do $(PIP) $$p \
		|| echo "bench: $$p did not install; its modes will be reported unavailable"; done
	$(PY) bench/run.py $(BENCH_ARGS)
	$(PY) bench/workers.py $(WORKERS_ARGS)

# The supervisor's own CPU and wall time per handover, with a trivial Go (needs `go`) and Python
# generation; e.g. BENCH_ARGS="--tree /tmp/before --tree . --rounds 5" to compare two copies.
bench-handover: setup
	$(PY) bench/handover_cpu.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache .pytest_cache .hypothesis
