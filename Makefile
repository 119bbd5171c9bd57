# `make test` and `make demo` set up everything on a fresh Debian 12 machine (as root):
# apt packages, a venv with the test tools, this package installed editable.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
APT_PKGS := systemd dbus dbus-daemon libsystemd-dev pkg-config gcc libdbus-1-dev \
	libglib2.0-dev libgirepository1.0-dev libcairo2-dev gir1.2-glib-2.0 wrk iproute2 util-linux
STAMP_APT := $(VENV)/.stamp-apt
STAMP_PIP := $(VENV)/.stamp-pip

.PHONY: setup test lint typecheck unit integration test-busy demo bench clean rootfs matrix

setup: $(STAMP_PIP)

$(STAMP_APT):
	@missing=$$(for p in $(APT_PKGS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null \
		| grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "apt-get install $$missing"; \
		if [ "$$(id -u)" != 0 ]; then echo "need root to install: $$missing" >&2; exit 1; fi; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || { \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv && $(PYTHON) -m venv $(VENV); }
	@touch $@

$(STAMP_PIP): $(STAMP_APT) requirements-dev.txt pyproject.toml
	$(PY) -m pip install -q --disable-pip-version-check -r requirements-dev.txt
	@# compat mode: a plain .pth path entry; the default import-hook finder costs ~50 ms
	@# at every interpreter start (every CLI call and unit start in the tests).
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -e . \
		--config-settings editable_mode=compat 2>/dev/null \
		|| $(PY) -m pip install -q --disable-pip-version-check --no-deps -e .
	@touch $@

lint: setup
	$(VENV)/bin/ruff check sdactivate tests integration bench examples
	$(VENV)/bin/ruff format --check sdactivate tests integration bench examples

typecheck: setup
	$(VENV)/bin/mypy --strict sdactivate

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

$(STAMP_DEBOOTSTRAP):
	@command -v debootstrap >/dev/null || { \
		echo "apt-get install debootstrap"; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null \
		|| { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
			apt-get install -y -qq debootstrap; }; }
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

# lint, typecheck, the hermetic tier here, then per release its tree, integration tier and
# (on another Python) hermetic tier; one summary at the end (integration/matrix.py).
test: lint typecheck matrix

demo: setup
	$(PY) examples/demo.py

bench: setup
	$(PY) -m pip install -q --disable-pip-version-check matplotlib==3.10.7
	$(PY) bench/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache .pytest_cache .hypothesis
