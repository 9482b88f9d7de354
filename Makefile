# cutstream — every target creates or reuses .venv/ and installs what it needs (idempotent).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
RUNTIME_STAMP := $(VENV)/.installed-runtime
STAMP := $(VENV)/.installed
UV := $(VENV)/bin/uv
UV_PIN := uv==0.13.9
NAB_DIR ?= ../shared/nab
ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help demo test test-fast bench eval nab lint fmt clean browser kafka fuzz screenshot

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

# Two stamps: the runtime (what `make demo` needs) and, on top of it, the locked dev toolchain
# (tests, lint, benchmarks' baselines) that every other target installs.
# uv (from PyPI, pinned) installs the locked wheels: from its cache it links them in seconds, where
# pip unpacked and byte-compiled them for a minute (BENCHMARKS.md, "make demo's install").
$(RUNTIME_STAMP): pyproject.toml requirements-runtime.lock
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@test -x $(UV) || $(PY) -m pip install -q --disable-pip-version-check $(UV_PIN)
	$(UV) pip install -q --python $(PY) -r requirements-runtime.lock
	$(UV) pip install -q --python $(PY) --no-deps --no-build-isolation -e .
	@touch $(RUNTIME_STAMP)

$(STAMP): $(RUNTIME_STAMP) requirements.lock
	$(UV) pip install -q --python $(PY) -r requirements.lock
	@touch $(STAMP)

browser: ## install Debian's chromium for the dashboard tests (needs root or sudo)
	@deploy/ensure-chromium.sh

kafka: ## resolve Apache Kafka's jars (deploy/kafka/pom.xml) from Maven Central into .kafka/ for the tests (needs Java 17, Maven)
	@deploy/ensure-kafka.sh

demo: $(RUNTIME_STAMP) ## run the whole pipeline on the embedded broker (ARGS="--duration 120" to stop by itself)
	$(VENV)/bin/cutstream demo $(ARGS)

screenshot: $(RUNTIME_STAMP) browser ## regenerate docs/img/dashboard.png from what the demo shows (headless Chromium)
	@deploy/screenshot.sh

test: $(STAMP) browser kafka ## run the whole test suite (unit, property, functional, integration, browser; Tansu and Apache Kafka)
	$(PY) -m pytest -n 2 --dist loadgroup -m "not gpu" $(ARGS)

test-fast: $(STAMP) ## only the tests that need no broker, server or browser
	$(PY) -m pytest -n 2 -m "not integration and not e2e and not gpu and not slow" $(ARGS)

FUZZ_SECONDS ?= 180
fuzz: $(STAMP) ## soak a live worker with hostile events for FUZZ_SECONDS (180) and print the figures
	CUTSTREAM_FUZZ_SECONDS=$(FUZZ_SECONDS) $(PY) -m pytest -s -p no:cacheprovider tests/integration/test_fuzz_worker.py -k soak $(ARGS)

bench: $(STAMP) ## run the benchmarks and rewrite their tables in BENCHMARKS.md
	$(PY) -m cutstream.bench.report $(ARGS)

eval: $(STAMP) ## the labelled suite (tune + holdout, cached in data/suite/) through `cutstream evaluate` into BENCHMARKS.md (ARGS=--quick: the short part)
	$(PY) -m cutstream.bench.report --only eval $(ARGS)

nab: $(STAMP) ## score the NAB dev subset in ../shared/nab and print the NAB scores
	$(PY) -m cutstream.bench.nab --nab-dir $(NAB_DIR) $(ARGS)

lint: $(STAMP) ## ruff (lint + format check), mypy and the import layering (import-linter)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

fmt: $(STAMP) ## format the code
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean: ## remove the virtualenv, caches and local data
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache data .kafka
