# Everything a fresh machine needs is installed by these targets (Go must be on PATH for the
# one-time Kubernetes build; see README).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)

.PHONY: help venv binaries node-deps images cluster cluster-down lint format unit test test-containers test-gpu test-harness demo clean

help:
	@echo "make demo          run the demo end to end on the local cluster"
	@echo "make test          run the test suite (starts its own local cluster)"
	@echo "make unit          the pure tests only: no cluster, no Go build, under a minute"
	@echo "make lint          ruff (lint + format check), as CI runs it before the tests"
	@echo "make test-gpu      the GPU suite (CUDA training with AMP, export, a real CUDA OOM); skips without a GPU"
	@echo "make images        build the operator, cpu-worker and trainer images (podman, docker or buildah)"
	@echo "make test-containers  the container suite alone: the real images on a real kubelet + containerd"
	@echo "make cluster       start the local cluster in the background (kubeconfig: .localcluster/kubeconfig)"
	@echo "                   RUNTIME=containerd: one real node (kubelet, containerd, runc) that runs the built images"
	@echo "make cluster-down  stop it and remove its state"

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=24"
	$(PY) -m pip install --quiet -e '.[dev]'
	@rm -f $(VENV)/.installed-* && touch $@

venv: $(STAMP)

binaries: venv
	$(PY) -m localcluster binaries

# containerd, runc, CNI plugins, podman/buildah, mmdebstrap from the OS packages (Debian/Ubuntu).
node-deps:
	@localcluster/install-node-deps.sh

# The images, tagged as the chart names them. IMAGE_BASE=local builds on a Debian bookworm base
# made here with mmdebstrap (no container registry needed); IMAGE_BASE=public uses each
# Dockerfile's default (python:3.11 slim, nvidia/cuda). IMAGE_CA_BUNDLE: a CA bundle pip trusts
# inside the build (a TLS-inspecting proxy's); by default the one this machine's pip is told to use.
IMAGE_BASE      ?= local
IMAGE_CA_BUNDLE ?= $(or $(PIP_CERT),$(REQUESTS_CA_BUNDLE))
IMAGE_ARGS      ?= --prune
BUILD_IMAGES     = $(PYTHON) trainer_image/build_images.py --base $(IMAGE_BASE) $(if $(IMAGE_CA_BUNDLE),--ca-bundle $(IMAGE_CA_BUNDLE)) $(IMAGE_ARGS)
images: node-deps
	$(BUILD_IMAGES)

RUNTIME ?= process
cluster: binaries
	@$(PY) -m localcluster up --state .localcluster --runtime $(RUNTIME)

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

# Four pytest sessions, each with its own local cluster: the suites that run an operator
# (stand-in commands, the Helm-installed pod, the real worker, the real images) must not share one.
# The first three run pods as processes (process-kubelet); the last on a real kubelet + containerd.
test: binaries
	$(PY) -m pytest -ra tests/harness tests/operator tests/worker tests/gpu $(PYTEST_ARGS)
	$(PY) -m pytest -ra tests/install $(PYTEST_ARGS)
	$(PY) -m pytest -ra tests/e2e $(PYTEST_ARGS)
	$(MAKE) test-containers

# Without podman/docker/buildah (a machine that is not Debian), the suite skips and says why.
test-containers: binaries node-deps
	$(PY) -m localcluster binaries --node
	$(BUILD_IMAGES) --if-possible
	$(PY) -m pytest -ra tests/containers $(PYTEST_ARGS)

# Needs no cluster: real CUDA training, export and OOM on the machine's first GPU.
test-gpu: venv
	$(PY) -m pytest -ra tests/gpu $(PYTEST_ARGS)

demo: binaries
	$(PY) demo/demo.py $(DEMO_ARGS)

clean: cluster-down
	rm -rf $(VENV)
