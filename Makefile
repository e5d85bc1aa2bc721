# Khidmat Edge: `make run` starts a node (demo data on first run); `make check` is the fast
# edit-test loop (lint, types and the tests that need no broker, PostgreSQL or browser);
# `make test` runs every test. Each sets up what it needs on a fresh Debian machine.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DATA_DIR ?= ./var
CENTER_ID ?= DEV-01
# What running needs, and what testing needs on top; a test install satisfies both stamps.
RUN_STAMP := $(VENV)/.installed-run
TEST_STAMP := $(VENV)/.installed-test
LINT_PATHS := edge_node sync local_ui certs hq tests bench
# Tests that need a system service (or minutes) are marked; `make check` leaves them out.
CHECK_SELECTION := not broker and not postgres and not browser and not slow and not tools

.PHONY: run test check lint venv system-deps clean bench fuzz

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(RUN_STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	touch $(RUN_STAMP)

$(TEST_STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(TEST_STAMP) $(RUN_STAMP)

# The development venv: the package and the test toolchain.
venv: $(TEST_STAMP)

run: $(RUN_STAMP)
	@test -f $(DATA_DIR)/node.db || $(BIN)/edge-node --data-dir $(DATA_DIR) init --center-id $(CENTER_ID) --demo
	$(BIN)/edge-node --data-dir $(DATA_DIR) serve

# System services the tests use; installed and started only when missing.
system-deps:
	@bash .ci/system-deps.sh

test: lint system-deps
	$(BIN)/pytest

# No system service is touched: a test that starts Mosquitto or connects to PostgreSQL
# without its marker fails (tests/service_marks.py).
check: lint
	$(BIN)/pytest -q -m '$(CHECK_SELECTION)'

lint: $(TEST_STAMP)
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/mypy
	$(BIN)/lint-imports

bench: $(TEST_STAMP)
	$(BIN)/python -m bench.ticket_issuance

# Schema-based fuzzing of the whole API (schemathesis, all checks), longer than in `make test`.
FUZZ_EXAMPLES ?= 200
fuzz: $(TEST_STAMP)
	EDGE_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/pytest -p no:cacheprovider tests/test_api_fuzz.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache test-output
