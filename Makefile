# Everything a fresh machine needs is installed by these targets (Go must be on PATH for the
# one-time Kubernetes build; see README).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)

.PHONY: help venv binaries cluster cluster-down lint format unit test test-gpu test-harness demo clean

help:
	@echo "make demo          run the demo end to end on the local cluster"
	@echo "make test          run the test suite (starts its own local cluster)"
	@echo "make unit          the pure tests only: no cluster, no Go build, under a minute"
	@echo "make lint          ruff (lint + format check), as CI runs it before the tests"
	@echo "make test-gpu      the GPU suite (CUDA training with AMP, export, a real CUDA OOM); skips without a GPU"
	@echo "make cluster       start the local cluster in the background (kubeconfig: .localcluster/kubeconfig)"
	@echo "make cluster-down  stop it and remove its state"

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=24"
	$(PY) -m pip install --quiet -e '.[dev]'
	@rm -f $(VENV)/.installed-* && touch $@

venv: $(STAMP)

binaries: venv
	$(PY) -m localcluster binaries

cluster: binaries
	@$(PY) -m localcluster up --state .localcluster

cluster-down: venv
	@$(PY) -m localcluster down --state .localcluster

lint: venv
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: venv
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

# The pure tests: no cluster, no S3 server, no model built or trained (builders, the spec and
# its CRD defaults, the policies, the reconcile decision, the cache, recipe text, reports,
# verdicts, the pod environment).
unit: venv
	$(PY) -m pytest -q -m "not cluster and not worker and not gpu and not s3" tests/operator tests/harness tests/worker $(PYTEST_ARGS)

# Three pytest sessions, each with its own local cluster: the suites that run an operator
# (stand-in commands, the Helm-installed pod, the real worker) must not share one.
test: binaries
	$(PY) -m pytest -ra tests/harness tests/operator tests/worker tests/gpu $(PYTEST_ARGS)
	$(PY) -m pytest -ra tests/install $(PYTEST_ARGS)
	$(PY) -m pytest -ra tests/e2e $(PYTEST_ARGS)

# Needs no cluster: real CUDA training, export and OOM on the machine's first GPU.
test-gpu: venv
	$(PY) -m pytest -ra tests/gpu $(PYTEST_ARGS)

demo: binaries
	$(PY) demo/demo.py $(DEMO_ARGS)

clean: cluster-down
	rm -rf $(VENV)
