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

.PHONY: install run test lint check bench clean chromium promtool conformance dovecot

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

run: install dovecot
	$(BIN)/hub dev-pki var/pki >/dev/null
	$(BIN)/hub serve --config $(CONFIG)

# The console's browser test drives Debian's chromium (playwright cannot download browsers here): installed when
# missing and we are root; otherwise that test is skipped with the reason (never in CI, where CI=true).
CHROMIUM := /usr/bin/chromium

chromium:
	@if [ ! -x $(CHROMIUM) ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium) >/dev/null \
	      || echo "warning: could not install chromium; the console browser test will not run" >&2; \
	  else echo "note: $(CHROMIUM) missing and not root: the console browser test will be skipped" >&2; fi; \
	fi

# promtool (Debian's prometheus package, ~20 MB) checks config/prometheus/hub-alerts.rules.yml; optional: without it
# that one test is skipped with the reason. `make promtool` installs it when run as root.
promtool:
	@if ! command -v promtool >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus) >/dev/null \
	      || echo "warning: could not install prometheus (promtool); the rules check will be skipped" >&2; \
	  else echo "note: promtool missing and not root: the Prometheus rules check will be skipped" >&2; fi; \
	fi


# IMAP for the hosted mailboxes is Debian's Dovecot, run by the hub with its own generated config (no system
# config is touched, no system service started): installed when missing and we are root; otherwise the hub runs
# without IMAP (a warning at start) and the IMAP tests are skipped with the reason.
DOVECOT := /usr/sbin/dovecot

dovecot:
	@if [ ! -x $(DOVECOT) ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends dovecot-imapd) \
	      >/dev/null || echo "warning: could not install dovecot-imapd; the hub runs without IMAP" >&2; \
	  else echo "note: $(DOVECOT) missing and not root: no IMAP (apt-get install dovecot-imapd)" >&2; fi; \
	fi

test: $(TEST_STAMP) chromium promtool dovecot
	$(BIN)/ruff check hub adapters mappings tests bench
	$(BIN)/mypy
	$(BIN)/hub check --config $(CONFIG)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The official ANS validation (XSD, structuration minimale, volet schematron) of every golden document,
# given a checkout of the ANS TestContenuCDA repository in ANS_TESTCONTENU_DIR (skipped, saying so, without it).
conformance: $(TEST_STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test,conformance]'
	$(BIN)/python -m pytest tests/conformance -v -rs $(PYTEST_ARGS)
	@if [ -n "$$ANS_TESTCONTENU_DIR" ]; then \
	  $(BIN)/python -m tests.conformance.ans tests/mappings/cases/*/expected.xml 2>/dev/null; fi

lint: $(TEST_STAMP)
	$(BIN)/ruff check hub adapters mappings tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache

check: install
	$(BIN)/hub check --config $(CONFIG)

bench: install
	$(BIN)/python bench/mllp_ingest.py --store sqlite --store postgres

clean:
	rm -rf $(VENV) var .pytest_cache
