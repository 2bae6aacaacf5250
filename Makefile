# Runyard. `make run` serves the dashboard; `make test` runs every check.
# Both work on a fresh clone: they create .venv and install what they need.

SHELL := /bin/bash
.DEFAULT_GOAL := install

VENV := .venv
PY := $(VENV)/bin/python
# pip re-installs only when pyproject.toml is newer than this file.
STAMP := $(VENV)/.installed
# apt-get needs root; a developer who is not root gets sudo.
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
# Playwright drives Debian's Chromium; it never downloads a browser of its own.
CHROMIUM := /usr/bin/chromium

.PHONY: run test install lint migrations chromium postgres bench clean

$(PY):
	python3 -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# `serve` upgrades the schema first and seeds demo data into an empty database.
# It listens on 127.0.0.1 only and runs commands (jobs) in-process: the demo
# queues a few real ones.
run: install
	$(VENV)/bin/runyard serve --host 127.0.0.1 --allow-exec

lint: install
	$(VENV)/bin/ruff check .

# The migrations must match the models: upgrade a fresh SQLite file, then ask
# alembic whether autogenerate would write anything.
migrations: install
	@set -e; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	export RUNYARD_DATABASE_URL="sqlite:///$$tmp/check.db"; \
	$(VENV)/bin/alembic upgrade head; \
	$(VENV)/bin/alembic check

chromium:
	@test -x $(CHROMIUM) || { \
	  echo "installing Debian's chromium for the end-to-end tests"; \
	  $(SUDO) apt-get update && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y chromium; }

# Best effort: the tests themselves skip PostgreSQL locally when it is not
# reachable, and fail under CI=true.
postgres:
	@pg_isready -q -h 127.0.0.1 2>/dev/null || { \
	  echo "PostgreSQL is not answering on 127.0.0.1: trying to start it"; \
	  pg_ctlcluster --skip-systemctl-redirect $$(ls /etc/postgresql) main start \
	    || echo "could not start PostgreSQL; its tests will be skipped (or fail under CI)"; }

# One pytest run for everything, so its closing line counts all of it; pytest
# exits 5 when it collected no test at all, which fails here like any error.
test: install lint migrations chromium postgres
	@ls e2e/test_*.py >/dev/null 2>&1 || \
	  echo "WARNING: e2e/ has no tests yet: the end-to-end tests are NOT being run"
	$(PY) -m pytest tests $(wildcard e2e)

bench: install
	$(PY) bench/store.py
	$(PY) bench/runner.py

# Leaves data/ alone: it holds your database.
clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis bench/out test-results *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
