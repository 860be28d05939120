# aion — the two commands: `make dev` (the embedded default) and `make test` (everything CI runs).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DISTS := -e libs/aion_common -e libs/aion_client -e services/engine -e services/watcher -e services/projector -e services/worker -e services/ingress -e services/scheduler -e libs/aion_dev
STAMP := $(VENV)/.installed
# The Docker daemon `make images`/`compose-up` start when none answers (`make docker-down` or
# `make compose-down` stop it), and the one `make test` starts and stops for itself.
DOCKERD_PID := .aion/docker/dockerd.pid
DOCKERD_TEST_PID := .aion/docker/dockerd-test.pid
# Ryuk (testcontainers' reaper) cannot be pulled without a registry; the fixtures clean up.
export TESTCONTAINERS_RYUK_DISABLED ?= true

.PHONY: install dev demo test lint types imports pytest bench bench-peers kafka-jars postgres browser clean \
	images compose-up compose-down docker-up docker-down dist

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

# The web UI's browser tests drive Debian's Chromium through Playwright (never `playwright
# install`: its own browser downloads cannot be fetched here). Installed with apt (as root)
# when missing; fonts-dejavu-core because Chromium aborts on a machine without any font.
CHROMIUM := /usr/lib/chromium/chromium
browser:
	@test -x $(CHROMIUM) || { \
	  test "$$(id -u)" = 0 || { echo "no Chromium: apt-get install chromium fonts-dejavu-core (as root)"; exit 1; }; \
	  echo "browser: installing Debian's chromium (apt-get)"; \
	  DEBIAN_FRONTEND=noninteractive apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium fonts-dejavu-core; }

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
	$(VENV)/bin/mypy libs/aion_common/src libs/aion_client/src libs/aion_dev/src services/engine/src services/watcher/src services/projector/src services/worker/src services/ingress/src services/scheduler/src examples

imports: install
	$(VENV)/bin/lint-imports

# pytest's own exit code is kept (5 = no tests collected fails the build); the PostgreSQL cluster
# that `make postgres` started is stopped either way.
pytest: install kafka-jars postgres browser
	$(PY) -m pytest --durations=30 $(PYTEST_ARGS); rc=$$?; $(PY) -m aion_common.testing.postgres stop; exit $$rc

# CI runs exactly this. The container tests need a Docker engine: one that answers is used;
# otherwise Debian's docker.io is installed where missing and dockerd started, then stopped by
# its PID at the end, whatever happened. Images whose inputs did not change are not rebuilt.
test: lint types imports
	@$(PY) -m aion_common.testing.dockerd up --pid-file $(DOCKERD_TEST_PID)
	@trap '$(PY) -m aion_common.testing.dockerd down --pid-file $(DOCKERD_TEST_PID)' EXIT; \
	$(PY) -m aion_common.testing.images build --if-docker && $(MAKE) --no-print-directory pytest

# Every image, built from local parts when no registry is reachable (docs/deploy.md); each
# image's size is printed. Starts a Docker daemon when none answers (`make docker-down`).
images: install kafka-jars docker-up
	$(PY) -m aion_common.testing.images build

# docker-compose.yml on the images above (with deploy/compose.local.yml when the public Kafka
# and PostgreSQL images are not here), API on 127.0.0.1:8080; prints the time to healthy.
compose-up: images
	$(PY) -m aion_common.testing.compose up

# Removes the stack (containers, network, volumes), then the daemon `make images` started.
compose-down: install
	$(PY) -m aion_common.testing.compose down
	$(PY) -m aion_common.testing.dockerd down --pid-file $(DOCKERD_PID)

docker-up: install
	$(PY) -m aion_common.testing.dockerd up --pid-file $(DOCKERD_PID)

docker-down: install
	$(PY) -m aion_common.testing.dockerd down --pid-file $(DOCKERD_PID)

# Benchmarks print one JSON object per line; the projection benchmark also runs on PostgreSQL,
# so the cluster is provisioned first and stopped afterwards.
bench: install kafka-jars postgres
	$(PY) -m bench; rc=$$?; $(PY) -m aion_common.testing.postgres stop; exit $$rc

# aion beside DBOS and Restate on their own workloads (issue 23; not part of `make test`): installs
# the peers under .aion/peers (pip, npm; PostgreSQL from the test harness), runs them and aion
# interleaved for 3 cycles and prints aion's ratio to the best peer on every figure.
# `make bench-peers ARGS="--cycles 5"` passes options on (`python -m bench.peers --help`).
bench-peers: install kafka-jars
	$(PY) -m bench.peers $(ARGS)

# Every aion distribution as a wheel in dist/ (aion is not on PyPI yet): `pip install dist/*.whl`
# in a virtualenv of your own; docs/install.md.
dist: install
	$(PY) -m aion_common.testing.dist --out dist

clean:
	rm -rf $(VENV) .aion .mypy_cache .ruff_cache .pytest_cache dist
