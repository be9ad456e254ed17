# Two commands matter: `make run` and `make test`. Both bootstrap .venv on first use.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: run test lint check bench clean chromium postgresql

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	rm -f $(VENV)/.installed-*
	touch $@

run: $(STAMP)
	mkdir -p var
	$(BIN)/relayhook serve --config config.example.yaml

check: $(STAMP)
	$(BIN)/relayhook check --config config.example.yaml

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

test: lint chromium postgresql
	$(BIN)/pytest

# The browser tests drive Debian's chromium; install it when it is missing (as root, as CI is).
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
		if [ "$$(id -u)" = 0 ]; then \
			(apt-get install -y -qq chromium >/dev/null 2>&1 || \
			 (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)); \
		else echo "the browser tests need chromium: sudo apt-get install chromium" >&2; exit 1; fi; }

# The benchmarks drive load with wrk and compare against Prometheus Alertmanager.
bench: $(STAMP)
	@command -v wrk >/dev/null && command -v prometheus-alertmanager >/dev/null || \
		(apt-get update -qq && apt-get install -y -qq wrk prometheus-alertmanager >/dev/null)
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache

# The PostgreSQL tests start Debian's server themselves (tests/pg.py); install it when missing.
postgresql:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
		if [ "$$(id -u)" = 0 ]; then \
			(apt-get install -y -qq postgresql >/dev/null 2>&1 || \
			 (apt-get update -qq && apt-get install -y -qq postgresql >/dev/null)); \
		else echo "the PostgreSQL tests need the server: sudo apt-get install postgresql" >&2; exit 1; fi; }
