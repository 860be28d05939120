"""aion's pytest plugin (entry point ``aion``): a real broker and real databases for tests.

Broker, in order: ``AION_TEST_KAFKA`` (an existing broker); a testcontainers Kafka when
``AION_TEST_KAFKA_IMAGE`` names its (Confluent) image and a Docker engine answers; else the
Java-run Apache Kafka from
:mod:`aion_common.testing.broker`, started once per session in a temporary data dir (kept, and
named in the summary, when a Kafka test failed). PostgreSQL: ``AION_TEST_DATABASE_URL`` or the
cluster ``make postgres`` provisioned; missing, its tests skip, or fail when ``CI`` is set.

Fixtures: ``kafka_bootstrap``, ``topic_prefix``, ``aion_settings``, ``sqlite_url``,
``postgres_url``, ``pg_database_url`` and ``database_url`` (both backends, parametrized).
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import NoReturn

import pytest

from aion_common.kafka.probe import probe_capabilities
from aion_common.settings import Settings
from aion_common.testing import postgres
from aion_common.testing._kafka_provider import KafkaProvider

__all__ = [
    "aion_settings",
    "database_url",
    "kafka_bootstrap",
    "pg_database_url",
    "postgres_url",
    "sqlite_url",
    "topic_prefix",
]

_PROVIDER = pytest.StashKey[KafkaProvider]()
_KAFKA_FIXTURES = frozenset({"kafka_bootstrap", "aion_settings"})
_POSTGRES_FIXTURES = frozenset({"postgres_url", "pg_database_url"})
_MARKERS = (
    "kafka: needs a real Kafka broker",
    "postgres: needs PostgreSQL",
    "slow: long-running suites (crash tests, large fan-outs); CI runs them",
)


def pytest_configure(config: pytest.Config) -> None:
    """Register aion's markers; decide the session's broker (started on first use)."""
    for marker in _MARKERS:
        config.addinivalue_line("markers", marker)
    config.stash[_PROVIDER] = KafkaProvider.decide()


def pytest_unconfigure(config: pytest.Config) -> None:
    """Stop the session's broker if a fixture teardown did not get the chance."""
    provider = config.stash.get(_PROVIDER, None)
    if provider is not None:
        provider.close()


def pytest_report_header(config: pytest.Config) -> list[str]:
    """Name the broker (kind and version), what it can do, and the database backends."""
    provider = config.stash[_PROVIDER]
    lines = [provider.header()]
    if "not kafka" not in (config.option.markexpr or ""):
        lines.append(_capabilities_header(provider))
    return [*lines, f"aion databases: sqlite, {_postgres_header()}"]


def _capabilities_header(provider: KafkaProvider) -> str:
    """Start the session's broker now and probe it, so the header says what it supports."""
    bootstrap = provider.bootstrap()
    settings = Settings(bootstrap_servers=bootstrap, instance_id="pytest-header")
    found = asyncio.run(probe_capabilities(settings))
    yes_no = {True: "yes", False: "NO"}
    line = (
        f"aion broker capabilities at {bootstrap}: idempotent producer "
        f"{yes_no[found.idempotent]}, transactions {yes_no[found.transactional]}"
    )
    if found.transactional_error:
        line += f" ({found.transactional_error})"
    return line


def _postgres_header() -> str:
    url, source = _postgres_source()
    if url is None:
        fate = "FAIL (CI is set)" if os.environ.get("CI") else "skip"
        return f"postgresql not provisioned (run `make postgres`): its tests will {fate}"
    return f"postgresql ({postgres.redact(url)}, from {source})"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark tests by the infrastructure their fixtures need, for ``-m 'not kafka'``."""
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        if names & _KAFKA_FIXTURES:
            item.add_marker(pytest.mark.kafka)
        if names & _POSTGRES_FIXTURES or _params_postgres(item):
            item.add_marker(pytest.mark.postgres)


def _params_postgres(item: pytest.Item) -> bool:
    callspec = getattr(item, "callspec", None)
    return callspec is not None and callspec.params.get("database_url") == "postgresql"


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    """Say where the session's broker ran and where its log is."""
    line = config.stash[_PROVIDER].summary()
    if line:
        terminalreporter.write_line(line)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Attach the broker log's tail to a failed test that used Kafka."""
    report = yield
    if report.failed and set(getattr(item, "fixturenames", ())) & _KAFKA_FIXTURES:
        section = item.config.stash[_PROVIDER].failure_section()
        if section is not None:
            report.sections.append(section)
    return report


@pytest.fixture(scope="session")
def kafka_bootstrap(request: pytest.FixtureRequest) -> Iterator[str]:
    """``host:port`` of a broker that supports transactions, shared by the session."""
    provider = request.config.stash[_PROVIDER]
    yield provider.bootstrap()
    provider.close()


@pytest.fixture
def topic_prefix() -> str:
    """A topic prefix unique to this test, so its topics never meet another test's."""
    return f"t{uuid.uuid4().hex[:8]}"


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A fresh SQLite file database for this test (aiosqlite driver)."""
    return f"sqlite+aiosqlite:///{tmp_path / 'aion.db'}"


@pytest.fixture
def aion_settings(
    kafka_bootstrap: str, topic_prefix: str, sqlite_url: str, tmp_path: Path
) -> Settings:
    """Settings on the session broker with this test's topic prefix, 3 partitions, SQLite,
    and local state stores under the test's temporary directory.

    For PostgreSQL: ``dataclasses.replace(aion_settings, database_url=database_url)``.
    """
    return Settings(
        bootstrap_servers=kafka_bootstrap,
        topic_prefix=topic_prefix,
        partitions=3,
        database_url=sqlite_url,
        state_dir=str(tmp_path / "state"),
    )


def _postgres_source() -> tuple[str | None, str]:
    external = os.environ.get(postgres.ENV_URL)
    if external:
        return external, postgres.ENV_URL
    return postgres.read_provisioned_url(), ".aion/pg/url"


def _unavailable(reason: str) -> NoReturn:
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set: nothing may be skipped)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """The URL of a PostgreSQL server (superuser), checked to connect."""
    url, source = _postgres_source()
    if url is None:
        _unavailable(f"no PostgreSQL: run `make postgres` or set {postgres.ENV_URL}")
    problem = postgres.check_connection(url)
    if problem is not None:
        hint = f"fix {source}" if source == postgres.ENV_URL else "run `make postgres`"
        _unavailable(
            f"PostgreSQL {postgres.redact(url)} (from {source}) does not connect: {problem}; {hint}"
        )
    return url


@pytest.fixture
def pg_database_url(postgres_url: str) -> Iterator[str]:
    """A fresh PostgreSQL database for this test, dropped afterwards."""
    name = f"aion_t{uuid.uuid4().hex[:12]}"
    url = postgres.create_database(postgres_url, name)
    yield url
    postgres.drop_database(postgres_url, name)


@pytest.fixture(
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)],
)
def database_url(request: pytest.FixtureRequest) -> str:
    """A fresh database on each backend in turn, for contract tests."""
    if request.param == "sqlite":
        url: str = request.getfixturevalue("sqlite_url")
    else:
        url = request.getfixturevalue("pg_database_url")
    return url
