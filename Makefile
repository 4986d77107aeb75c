# imagepatch developer commands. `make test` is what CI runs (.ci/run).
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
CLUSTER_DIR ?= .local/cluster
PYTEST_ARGS ?=

.PHONY: setup test coverage demo unit lint bench cluster-up cluster-down clean

## setup: install Debian packages, the virtualenv and build the test control plane
setup:
	@bash .ci/setup

## test: set up, lint, the unit coverage gate, then every test layer against real components
test: setup lint coverage
	$(PY) -m pytest $(PYTEST_ARGS)

## coverage: unit tests alone, line+branch coverage per module; fails if core/ or model/ < 95%
coverage: setup
	$(PY) -m pytest tests/unit -q --cov=imagepatch --cov-branch \
		--cov-report=term-missing:skip-covered --cov-report=json:.coverage.json
	$(PY) -m tests.coverage_gate .coverage.json --min 95 imagepatch/core imagepatch/model

## demo: the end-to-end story on a local cluster, registry, moto and buildah (cleans up after itself)
demo: setup
	$(PY) -m tests.demo

## unit: the pure tests only (no cluster, registry or moto)
unit: setup
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

## bench: measured figures (printed, never asserted), e.g. broken pod -> rollback latency
bench: setup
	$(PY) -m pytest tests/bench -s -q $(PYTEST_ARGS)

## lint: ruff, and import-linter (core/ and model/ stay free of I/O)
lint: setup
	$(VENV)/bin/ruff check operator tests
	$(VENV)/bin/lint-imports

## cluster-up: start the local control plane; prints the `export KUBECONFIG=...` line
cluster-up: setup
	@$(PY) -m tests.cluster.harness up --state-dir $(CLUSTER_DIR)

## cluster-down: stop it
cluster-down:
	@$(PY) -m tests.cluster.harness down --state-dir $(CLUSTER_DIR)

clean: cluster-down
	rm -rf .local .pytest_cache .ruff_cache .coverage .coverage.json
