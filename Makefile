# workspace-gitops: every command a user or CI needs. `make demo` and `make test` work on a fresh machine.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
CLUSTER_DIR ?= $(CURDIR)/.cluster

.PHONY: venv lock system-deps binaries images lint test unit e2e cluster cluster-down demo bench soak clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

# requirements.lock: the runtime dependencies, pinned with hashes, that the workflows install with
# `pip install --require-hashes` (regenerate after changing pyproject.toml's dependencies).
lock: venv
	$(BIN)/uv pip compile pyproject.toml --quiet --generate-hashes --universal --python-version 3.11 \
	  --custom-compile-command "make lock" --output-file requirements.lock

# Debian packages of the real node, the image builds and the browser (installs only what is missing).
system-deps:
	bash scripts/install-system-deps.sh

# The real kube-apiserver, etcd, controller-manager, scheduler, kubectl and kubelet, and the Traefik
# ingress controller, built from Go modules and cached under ~/.cache/workspace-gitops, keyed by
# version (first build: ~25-30 min on 2 cores).
binaries: system-deps
	bash tests/cluster/build.sh
	bash tests/cluster/build-traefik.sh

# The workspace images (JupyterLab from PyPI, code-server from npm, a pause image) built offline as
# OCI tarballs, cached under ~/.cache/workspace-gitops/images, keyed by their recipe.
images: venv system-deps
	$(BIN)/python tests/cluster/images/build.py

lint: venv
	$(BIN)/ruff check reconciler tests
	$(BIN)/mypy
	$(BIN)/lint-imports

test: venv binaries images lint
	$(BIN)/pytest -m "not soak"

# The slow reliability trials (crash-anywhere, fault injection); see docs/SAFETY.md.
soak: venv binaries
	$(BIN)/pytest -m soak

unit: venv
	$(BIN)/pytest tests/unit

cluster: venv binaries
	@$(BIN)/python tests/cluster/launcher.py up --dir $(CLUSTER_DIR)

cluster-down: venv
	@$(BIN)/python tests/cluster/ingress.py down --dir $(CLUSTER_DIR)/ingress
	@$(BIN)/python tests/cluster/launcher.py down --dir $(CLUSTER_DIR)

demo: venv binaries images
	bash scripts/demo.sh

bench: venv binaries
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	$(BIN)/python bench/run.py

clean: cluster-down
	rm -rf $(VENV) $(CLUSTER_DIR)
