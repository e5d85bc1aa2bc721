# Khidmat Edge: `make run` starts a node (demo data on first run); `make test` runs every test.
# Both set up what they need on a fresh Debian machine (venv, package, system services).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DATA_DIR ?= ./var
CENTER_ID ?= DEV-01
STAMP := $(VENV)/.installed

.PHONY: run test lint venv system-deps clean bench fuzz

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

run: venv
	@test -f $(DATA_DIR)/node.db || $(BIN)/edge-node --data-dir $(DATA_DIR) init --center-id $(CENTER_ID) --demo
	$(BIN)/edge-node --data-dir $(DATA_DIR) serve

# System services the tests use; installed and started only when missing.
system-deps:
	@bash .ci/system-deps.sh

test: venv system-deps
	$(BIN)/ruff check edge_node sync local_ui certs tests bench
	$(BIN)/mypy
	$(BIN)/pytest

lint: venv
	$(BIN)/ruff check edge_node sync local_ui certs tests bench
	$(BIN)/mypy

bench: venv
	$(BIN)/python -m bench.ticket_issuance

# Schema-based fuzzing of the whole API (schemathesis, all checks), longer than in `make test`.
FUZZ_EXAMPLES ?= 200
fuzz: venv
	EDGE_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/pytest -p no:cacheprovider tests/test_api_fuzz.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache test-output
