# The first commands a user runs; each one creates the virtual environment it needs, from the committed lock files.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
UV_VERSION := 0.13.9
UV := $(BIN)/uv
# Defaults only: a value from the caller's environment (DAGSTER_HOME=/x make dev) wins.
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home
export DAGSTER_DISABLE_TELEMETRY ?= true
export ANONYMIZED_TELEMETRY ?= False

.PHONY: run test lint dev bench eval install install-dev lock clean cluster-test

# uv, pinned, from the package index into the project's own environment: it installs the locks in seconds, showing
# each package as it goes.
$(UV):
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check uv==$(UV_VERSION)

$(VENV)/.installed: requirements.lock pyproject.toml | $(UV)
	$(UV) pip install --python $(BIN)/python -r requirements.lock
	$(UV) pip install --python $(BIN)/python --no-deps -e .
	touch $@

$(VENV)/.installed-dev: requirements-dev.lock pyproject.toml | $(UV)
	$(UV) pip install --python $(BIN)/python -r requirements-dev.lock
	$(UV) pip install --python $(BIN)/python --no-deps -e .
	touch $(VENV)/.installed $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

# After changing the dependencies in pyproject.toml: pin them again (exact versions and hashes, every platform).
lock: | $(UV)
	$(UV) pip compile pyproject.toml --universal --python-version 3.11 --generate-hashes -o requirements.lock
	$(UV) pip compile pyproject.toml --extra dev --universal --python-version 3.11 --generate-hashes \
		-o requirements-dev.lock

run: install
	$(BIN)/receipt-embeddings demo seed --if-empty
	$(BIN)/receipt-embeddings run --kind lines
	$(BIN)/receipt-embeddings search "total amount paid" --kind lines -k 5

# The cluster test runs on its own (`make cluster-test`, after this in CI): it needs root and takes minutes.
test: install-dev lint
	$(BIN)/python -m pytest -q -m "not cluster"

# The quality gates: lint rules, types over the production packages, the import layers.
lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports

dev: install
	$(BIN)/receipt-embeddings status > /dev/null
	$(BIN)/dg dev

# The local multi-host cluster, up to down, with a run process killed mid-ingest (root; a few minutes).
cluster-test: install-dev
	$(BIN)/python -m pytest -q -m cluster tests/test_cluster.py

# Retrieval quality (p@5, p@10, MRR per query and mode, recall@10 vs brute force) on labelled receipts.
eval: install-dev
	$(BIN)/python -m tests.bench.eval

bench: install-dev
	$(BIN)/python -m tests.bench.run

clean:
	rm -rf .data .dagster_home .bench .cluster .cluster-test
