# The first commands a user runs; each one creates the virtual environment it needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export DAGSTER_HOME := $(CURDIR)/.dagster_home
export DAGSTER_DISABLE_TELEMETRY := true
export ANONYMIZED_TELEMETRY := False

.PHONY: run test lint dev bench install install-dev clean cluster-test

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/activate
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/activate
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(VENV)/.installed $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

run: install
	$(BIN)/receipt-embeddings demo seed --if-empty
	$(BIN)/receipt-embeddings run --kind lines
	$(BIN)/receipt-embeddings search "total amount paid" --kind lines -k 5

test: install-dev lint
	$(BIN)/python -m pytest -q

# The quality gates: lint rules, types over the production packages, the import layers.
lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports

dev: install
	$(BIN)/receipt-embeddings status > /dev/null
	$(BIN)/dagster dev -w workspace.yaml

# The local multi-host cluster, up to down, with a run process killed mid-ingest (root; a few minutes).
cluster-test: install-dev
	$(BIN)/python -m pytest -q -m cluster tests/test_cluster.py

bench: install-dev
	$(BIN)/python -m tests.bench.run

clean:
	rm -rf .data .dagster_home .bench .cluster .cluster-test
