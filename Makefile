# ferrolimit: every target sets itself up; `make help` lists them.
.DEFAULT_GOAL := help
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.deps-stamp

.PHONY: help venv dev release test test-rust test-python lint format bench demo clean

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

DEV_DEPS := "maturin>=1.9.4,<2" "pytest>=8" "httpx>=0.27" "ruff>=0.6" "mypy>=1.10" "fastapi>=0.110" "uvicorn>=0.30" "fastmcp>=4.1,<5" "redis>=5"

$(STAMP): Makefile
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --disable-pip-version-check $(DEV_DEPS)
	@touch $(STAMP)

venv: $(STAMP) ## create .venv with the tools

dev: venv ## build the extension (debug) into .venv
	$(VENV)/bin/maturin develop -q

release: venv ## build the extension (release, optimised) into .venv
	$(VENV)/bin/maturin develop -q --release

test-rust: ## cargo test
	cargo test -q

test-python: dev ## pytest against a debug build
	$(PY) -m pytest -q

test: test-rust test-python ## build, then run cargo test and pytest

lint: dev ## clippy, rustfmt, ruff, mypy and stubtest
	cargo clippy -q --all-targets -- -D warnings
	cargo fmt --check
	$(VENV)/bin/ruff check python tests examples benches
	$(VENV)/bin/ruff format --check python tests examples benches
	$(VENV)/bin/mypy
	$(VENV)/bin/mypy --python-version 3.10  # the oldest Python the wheel supports: its standard library
	$(PY) -m mypy.stubtest ferrolimit --allowlist stubtest-allowlist.txt

format: ## format Rust and Python
	cargo fmt
	$(VENV)/bin/ruff format python tests examples benches

bench: release ## benchmarks against peer libraries (release build)
	$(PIP) install -q limits fastapi-advanced-rate-limiter redis fastlimit fastapi-limiter slowapi httptools uvloop
	$(PY) benches/compare.py
	timeout 600 $(PY) benches/mcp_bench.py
	timeout 300 $(PY) benches/redis_bench.py
	timeout 300 $(PY) benches/lua_cost.py
	@command -v wrk >/dev/null || apt-get install -y -q wrk >/dev/null 2>&1 || echo "wrk is not installed: the HTTP bench uses its asyncio client"
	timeout 900 $(PY) benches/http_bench.py  # about 7 minutes here

demo: release ## build (release), run the quickstart, then serve examples/fastapi_app.py and fire a burst at it
	$(PY) examples/quickstart.py
	timeout 60 $(PY) examples/fastapi_app.py

clean: ## remove build products and the venv
	cargo clean
	rm -rf $(VENV) python/ferrolimit/*.so
