# aion — the two commands: `make dev` (the embedded default) and `make test` (everything CI runs).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DISTS := -e libs/aion_common -e libs/aion_client -e services/engine -e services/watcher -e services/projector -e libs/aion_dev
STAMP := $(VENV)/.installed

.PHONY: install dev demo test lint types imports pytest bench kafka-jars postgres clean

install: $(STAMP)

$(STAMP): requirements-dev.txt libs/*/pyproject.toml services/*/pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt $(DISTS)
	touch $(STAMP)

kafka-jars: install
	$(PY) -m aion_common.testing.broker fetch

postgres: install
	$(PY) -m aion_common.testing.postgres provision

# The whole stack (embedded Kafka, SQLite, engine, watcher, projector, API), supervised, until Ctrl-C.
# `make dev ARGS="--workflows my_pkg.workflows"` passes options on to `aion dev`.
dev: install kafka-jars
	$(PY) -m aion_dev $(ARGS)

# The same stack, then the example workflows to completion with a summary; exit 0 iff all as expected.
demo: install kafka-jars
	$(PY) -m aion_dev --demo

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

types: install
	$(VENV)/bin/mypy libs/aion_common/src libs/aion_client/src services/engine/src services/watcher/src services/projector/src examples

imports: install
	$(VENV)/bin/lint-imports

# pytest's own exit code is kept (5 = no tests collected fails the build); the PostgreSQL cluster
# that `make postgres` started is stopped either way.
pytest: install kafka-jars postgres
	$(PY) -m pytest $(PYTEST_ARGS); rc=$$?; $(PY) -m aion_common.testing.postgres stop; exit $$rc

test: lint types imports pytest

# Benchmarks print one JSON object per line; the projection benchmark also runs on PostgreSQL,
# so the cluster is provisioned first and stopped afterwards.
bench: install kafka-jars postgres
	$(PY) -m bench; rc=$$?; $(PY) -m aion_common.testing.postgres stop; exit $$rc

clean:
	rm -rf $(VENV) .aion .mypy_cache .ruff_cache .pytest_cache
