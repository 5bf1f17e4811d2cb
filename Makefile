# Two commands: `make run` and `make test`. Everything else is set up from nothing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CONFIG ?= config/hub.yaml
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
	$(BIN)/python bench/mllp_ingest.py

clean:
	rm -rf $(VENV) var .pytest_cache
