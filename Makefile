# Two commands: `make run` and `make test`. Everything else is set up from nothing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CONFIG ?= config/hub.yaml
# PostgreSQL tests use this DSN; they are skipped (with the reason shown) when it is unreachable,
# except in CI (.ci/run sets HUB_REQUIRE_PG=1), where unreachable means failed.
export HUB_TEST_PG_DSN ?= postgresql://postgres@127.0.0.1:5432/test
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test

.PHONY: install run test lint check bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools wheel

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(TEST_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP) $@

install: $(STAMP)

run: install
	$(BIN)/hub dev-pki var/pki >/dev/null
	$(BIN)/hub serve --config $(CONFIG)

test: $(TEST_STAMP)
	$(BIN)/ruff check hub adapters mappings tests bench
	$(BIN)/hub check --config $(CONFIG)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(TEST_STAMP)
	$(BIN)/ruff check hub adapters mappings tests bench

check: install
	$(BIN)/hub check --config $(CONFIG)

bench: install
	$(BIN)/python bench/mllp_ingest.py --store sqlite --store postgres

clean:
	rm -rf $(VENV) var .pytest_cache
