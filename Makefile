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

.PHONY: setup test lint typecheck unit integration test-busy demo bench bench-handover clean

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

integration: setup
	$(PY) -m pytest -q integration

# The hermetic tests beside one busy-looping process per CPU (each ends by itself after 20
# minutes at most, and is killed when the tests end): timing assumptions show up here first.
test-busy: setup
	@hogs=""; for _ in $$(seq $$(nproc)); do \
		timeout 1200 $(PYTHON) -c "while True: pass" & hogs="$$hogs $$!"; done; \
	$(PY) -m pytest -q tests; rc=$$?; kill $$hogs 2>/dev/null; wait; exit $$rc

test: lint typecheck
	$(PY) -m pytest -q tests integration

demo: setup
	$(PY) examples/demo.py

bench: setup
	$(PY) -m pip install -q --disable-pip-version-check matplotlib==3.10.7
	$(PY) bench/run.py $(BENCH_ARGS)

# The supervisor's own CPU and wall time per handover, with a trivial Go (needs `go`) and Python
# generation; e.g. BENCH_ARGS="--tree /tmp/before --tree . --rounds 5" to compare two copies.
bench-handover: setup
	$(PY) bench/handover_cpu.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache .pytest_cache .hypothesis
