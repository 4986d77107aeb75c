# imagepatch developer commands. `make test` is what CI runs (.ci/run).
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
CLUSTER_DIR ?= .local/cluster
PYTEST_ARGS ?=
# `make test`'s cluster layers run in this many pytest-xdist workers, a test file
# per worker at a time (module fixtures such as the operator process stay shared
# within a file). Each worker is its own pytest session with its own control
# plane, registry, moto and buildah storage. PYTEST_ARGS=-n0 runs them serially,
# as an external IMAGEPATCH_TEST_KUBECONFIG cluster does: two workers' operators
# would reconcile each other's objects there.
TEST_WORKERS ?= $(if $(IMAGEPATCH_TEST_KUBECONFIG),0,2)
# What `make test` runs after the coverage gate (which already ran tests/unit).
TEST_PATHS ?= tests/integration tests/e2e
# The policy scanner lives in its own virtualenv (.ci/setup): its pins must not
# move the operator's dependencies. --skip-download: no calls to its vendor.
CHECKOV := .venv-checkov/bin/checkov --skip-download --compact --quiet
HELM = $(shell bash tests/cluster/build-helm.sh --print)

.PHONY: setup test coverage demo unit lint lock lock-check image checkov checkov-only pin-image bench bench-chart cluster-up cluster-down clean

## setup: install Debian packages, the virtualenv and build the test control plane
setup:
	@bash .ci/setup

## test: set up, lint, the unit coverage gate (which runs tests/unit), then the integration and
## e2e layers against real components in $(TEST_WORKERS) xdist workers, each with its own control
## plane (the 30 slowest tests are listed at the end: the suite must stay under 30 minutes)
test: setup lint coverage
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile --durations=30 $(TEST_PATHS) $(PYTEST_ARGS)

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

## bench: measured figures (printed, never asserted): the fleet at 100 and 1,000 workloads
## (BENCH_LARGE=1 adds 3,000; writes bench-results.json, see docs/benchmarks.md), and
## broken pod -> rollback latency, and put_events -> SQS consumer latency
bench: setup
	$(PY) -m pytest tests/bench -s -q $(PYTEST_ARGS)

## bench-chart: docs/benchmarks-scaling.png from bench-results.json (installs the bench extra, matplotlib)
bench-chart: setup
	$(PY) -m pip install -q -e '.[bench]'
	$(PY) -m tests.bench.chart

## lint: ruff, import-linter (core/ and model/ stay free of I/O), mypy --strict over operator/,
## checkov, and the locks agree with pyproject.toml
lint: setup
	$(VENV)/bin/ruff check operator tests
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy
	@$(MAKE) --no-print-directory checkov-only
	@$(MAKE) --no-print-directory lock-check

## image: build the operator image with buildah (release/build-image.sh); IMAGE=<ref> PUSH=1 pushes it
## and prints its digest; BASE=debian BASE_REGISTRY=<host> builds the base from Debian packages
image:
	@bash release/build-image.sh

## krew-archive: the kubectl plugin's release archive, dist/krew/kubectl-imagepatch_v<version>.tar.gz
## (the same bytes from the same commit), and dist/krew/imagepatch.yaml, deploy/krew/'s manifest with
## its uri and sha256 (release/krew.py); KREW_RELEASE_URL=<url> is where the release publishes it
.PHONY: krew-archive
krew-archive:
	python3 release/krew.py

## lock: rewrite requirements/{runtime,dev,build}.lock (hashed, by uv) from pyproject.toml and
## requirements/build.in, keeping every pin that still fits; UPGRADE=1 moves every pin
lock:
	bash requirements/lock.sh

## lock-check: fail when a lock no longer matches pyproject.toml / requirements/build.in (needs PyPI)
lock-check:
	bash requirements/lock.sh --check

## checkov: the policy scanner over deploy/, the rendered chart (default values,
## and every feature on) and the Dockerfile; any unskipped failure fails. A
## finding that is not fixed is skipped in place, with its reason.
checkov: setup checkov-only

checkov-only:
	@rm -rf .local/checkov && mkdir -p .local/checkov
	$(HELM) template imagepatch charts/imagepatch -n imagepatch-system > .local/checkov/chart-default.yaml
	$(HELM) template imagepatch charts/imagepatch -n imagepatch-system \
	  -f charts/imagepatch/ci/all-features-values.yaml > .local/checkov/chart-all-features.yaml
	$(CHECKOV) --framework kubernetes -d deploy
	$(CHECKOV) --framework kubernetes -d .local/checkov
	$(CHECKOV) --framework dockerfile -f Dockerfile

## pin-image: pin the released operator image by digest in deploy/ and the chart
## (DIGEST=sha256:<64 hex>, the digest the release pushed); drops deploy/'s checkov skip of CKV_K8S_43
pin-image:
	@[[ "$(DIGEST)" =~ ^sha256:[0-9a-f]{64}$$ ]] || { echo "usage: make pin-image DIGEST=sha256:<64 hex>" >&2; exit 2; }
	sed -i -E 's#^( +image: ghcr\.io/imagepatch/imagepatch:[^@" ]+)(@sha256:[0-9a-f]{64})?$$#\1@$(DIGEST)#' deploy/deployment.yaml
	sed -i '/checkov.io\/skip4: "CKV_K8S_43=/d' deploy/deployment.yaml
	sed -i -E 's#^  digest: ".*"#  digest: "$(DIGEST)"#' charts/imagepatch/values.yaml

## cluster-up: start the local control plane; prints the `export KUBECONFIG=...` line
cluster-up: setup
	@$(PY) -m tests.cluster.harness up --state-dir $(CLUSTER_DIR)

## cluster-down: stop it
cluster-down:
	@$(PY) -m tests.cluster.harness down --state-dir $(CLUSTER_DIR)

clean: cluster-down
	rm -rf .local .pytest_cache .ruff_cache .coverage .coverage.json
