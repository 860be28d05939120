"""``aion.testing``: a pytest plugin that runs your workflows on a real, isolated aion stack.

Installed with the ``aion`` distribution as the pytest plugin ``aion-testing`` (turn it off with
``-p no:aion-testing``). It needs ``aion-dev`` (the local stack) and ``pytest-asyncio``.

Fixtures:

- ``aion_stack`` (session): an isolated stack — the embedded Apache Kafka and SQLite in a
  temporary directory, or your broker/database — with the engine, watcher, projector and API
  running as supervised processes and your workflow modules loaded. Its topics carry a prefix
  unique to the session, so a shared broker is safe.
- ``aion_client`` (per test): an :class:`aion.AionClient` on that stack.
- ``aion_stack_config`` (session): the :class:`aion_dev.StackConfig` used; override it in a
  ``conftest.py`` to change anything.

Configuration (the command line wins over the ini file, which wins over the environment):

- ``--aion-workflows MODULE`` (repeatable) / ini ``aion_workflows`` (one per line) /
  ``AION_WORKFLOWS`` (comma-separated): the modules the engine imports.
- ``--aion-activities MODULE`` / ini ``aion_activities`` / ``AION_ACTIVITIES``: modules the
  stack's worker imports for activities (it imports the workflow modules too, so activities
  defined beside the workflows need nothing here).
- ``--aion-kafka HOST:PORT`` / ini ``aion_kafka_bootstrap`` / ``AION_KAFKA_BOOTSTRAP``: use
  this broker instead of starting one.
- ``--aion-database URL`` / ini ``aion_database_url`` / ``AION_DATABASE_URL``: use this
  database for the views (give each concurrent session its own) instead of SQLite.

Helpers (``async``): :func:`run_workflow` starts a workflow and returns its result (raising
:class:`WorkflowNotCompleted` otherwise); :func:`wait_for_workflow` waits for one to close and
returns a :class:`WorkflowRun` (status, result, error, history, children);
:func:`assert_history` checks the event types of its history.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from aion.client import (
    AionApiError,
    AionClient,
    Child,
    HistoryEvent,
    WorkflowDescription,
    WorkflowResult,
)

if TYPE_CHECKING:
    from aion_common.settings import Settings
    from aion_dev import StackConfig

__all__ = [
    "DEFAULT_TIMEOUT",
    "AionStack",
    "AionStackError",
    "WorkflowNotCompleted",
    "WorkflowRun",
    "aion_client",
    "aion_stack",
    "aion_stack_config",
    "assert_history",
    "history_types",
    "run_workflow",
    "running_stack",
    "wait_for_workflow",
    "with_workflows",
]

DEFAULT_TIMEOUT = 30.0
"""Seconds the helpers wait for a workflow to close."""

_STARTUP_TIMEOUT = 180.0
_STOP_TIMEOUT = 90.0
_HISTORY_PAGE = 500


class AionStackError(RuntimeError):
    """The test stack could not be started (the message says why and where its logs are)."""


class WorkflowNotCompleted(AssertionError):
    """A workflow ended other than completed, or did not close in time."""

    def __init__(self, run: WorkflowRun | WorkflowResult, message: str) -> None:
        super().__init__(message)
        self.run = run


# -- the plugin's options ------------------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    """``--aion-workflows``, ``--aion-kafka``, ``--aion-database`` and their ini keys."""
    group = parser.getgroup("aion-testing", "aion: run workflows on an isolated aion stack")
    group.addoption(
        "--aion-workflows",
        action="append",
        default=[],
        metavar="MODULE",
        help="module the test stack's engine imports to register workflows (repeatable)",
    )
    group.addoption(
        "--aion-activities",
        action="append",
        default=[],
        metavar="MODULE",
        help="module the test stack's worker imports for activities (repeatable; the workflow "
        "modules are imported too)",
    )
    group.addoption(
        "--aion-kafka",
        default=None,
        metavar="HOST:PORT",
        help="use this Kafka broker instead of starting an embedded one",
    )
    group.addoption(
        "--aion-brokers",
        type=int,
        default=None,
        metavar="N",
        help="embedded Kafka nodes (default 1; 3: a cluster with replication factor 3, to test "
        "a broker's failover with AionStack.processes['kafka-1'] and its siblings)",
    )
    group.addoption(
        "--aion-database",
        default=None,
        metavar="URL",
        help="use this database (SQLAlchemy URL) for the views instead of a temporary SQLite",
    )
    parser.addini("aion_workflows", "workflow modules for the aion test stack", type="linelist")
    parser.addini(
        "aion_activities", "activity modules for the aion test stack's worker", type="linelist"
    )
    parser.addini("aion_kafka_bootstrap", "Kafka broker for the aion test stack", default="")
    parser.addini("aion_database_url", "database URL for the aion test stack", default="")
    parser.addini("aion_brokers", "embedded Kafka nodes of the aion test stack", default="1")


def _setting(config: pytest.Config, option: str, ini: str, env: str) -> str | None:
    value = config.getoption(option) or config.getini(ini) or os.environ.get(env, "")
    return str(value) if value else None


def _modules(config: pytest.Config, kind: str) -> tuple[str, ...]:
    """``aion_workflows``/``aion_activities``: command line, ini file, then environment."""
    modules = [*config.getoption(f"aion_{kind}"), *config.getini(f"aion_{kind}")]
    modules += [m.strip() for m in os.environ.get(f"AION_{kind.upper()}", "").split(",")]
    return tuple(dict.fromkeys(m for m in modules if m))


def _import_paths(config: pytest.Config) -> tuple[str, ...]:
    """The rootdir and the project directories on ``sys.path`` (not the interpreter's own)."""
    prefixes = {Path(p).resolve() for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
    paths = [str(config.rootpath)]
    for entry in sys.path:
        if not entry or not Path(entry).is_dir():
            continue
        resolved = Path(entry).resolve()
        if not any(resolved.is_relative_to(prefix) for prefix in prefixes):
            paths.append(str(resolved))
    return tuple(dict.fromkeys(paths))


# -- the stack -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class AionStack:
    """A running test stack: where its API is, the settings its services use, its home."""

    api_url: str
    settings: Settings
    home: Path
    workflows: tuple[str, ...]

    @property
    def logs(self) -> Path:
        """The directory holding each service's log."""
        return self.home / "logs"

    def pids(self) -> dict[str, int]:
        """The process id of each of the stack's processes now (``engine-1``, ``worker``…)."""
        raw = json.loads((self.home / "aion-dev.pids").read_text(encoding="utf-8"))
        return {str(name): int(pid) for name, pid in raw.get("children", raw).items()}

    def kill(self, name: str) -> int:
        """SIGKILL the stack's process ``name`` (the supervisor restarts it); returns its pid."""
        pids = self.pids()
        if name not in pids:
            raise AionStackError(f"the stack has no process {name!r}; it has {sorted(pids)}")
        os.kill(pids[name], signal.SIGKILL)
        return pids[name]

    def client(self, *, timeout: float = 10.0) -> AionClient:
        """A new client of the stack's API (close it, or use it as ``async with``)."""
        return AionClient(self.api_url, timeout=timeout)


class _StackThread:
    """Runs an ``aion_dev.Stack`` on an event loop of its own, in a thread, for the session.

    A thread of its own keeps the stack independent of whichever event loop (and loop scope)
    the tests use; tests only talk to it over HTTP.
    """

    def __init__(self, config: StackConfig) -> None:
        self._config = config
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._stack: AionStack | None = None
        self._thread = threading.Thread(target=self._main, name="aion-test-stack", daemon=True)

    def start(self) -> AionStack:
        self._thread.start()
        if not self._ready.wait(_STARTUP_TIMEOUT):
            self.stop()
            raise AionStackError(
                f"the aion test stack did not start within {_STARTUP_TIMEOUT:.0f} s; "
                f"logs in {self._config.home / 'logs'}"
            )
        if self._error is not None or self._stack is None:
            self._thread.join(_STOP_TIMEOUT)
            raise AionStackError(
                f"the aion test stack did not start: {self._error}; "
                f"logs in {self._config.home / 'logs'}"
            ) from self._error
        return self._stack

    def stop(self) -> None:
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed in the meantime
                loop.call_soon_threadsafe(stop.set)
        self._thread.join(_STOP_TIMEOUT)
        if self._thread.is_alive():
            raise AionStackError(
                f"the aion test stack did not stop within {_STOP_TIMEOUT:.0f} s; "
                f"see {self._config.home / 'logs'}"
            )

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as err:  # noqa: BLE001 - reported to the fixture's thread
            self._error = err
        finally:
            self._ready.set()

    async def _serve(self) -> None:
        from aion_dev import Stack  # noqa: PLC0415 - aion-dev is optional for the client

        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with Stack(self._config) as stack:
            self._stack = AionStack(
                api_url=stack.api_url,
                settings=stack.settings,
                home=stack.home,
                workflows=self._config.workflows,
            )
            self._ready.set()
            await self._stop.wait()


def _require_aion_dev() -> Any:
    try:
        import aion_dev  # noqa: PLC0415 - optional: only the stack fixtures need it
    except ImportError as err:
        raise AionStackError(
            "the aion_stack fixture needs the `aion-dev` distribution (the local stack): "
            f"install it next to `aion` ({err})"
        ) from err
    return aion_dev


@pytest.fixture(scope="session")
def aion_stack_config(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> StackConfig:
    """The stack's configuration from the options; override this fixture to change it."""
    aion_dev = _require_aion_dev()
    config = request.config
    config_type: type[StackConfig] = aion_dev.StackConfig
    return config_type(
        home=tmp_path_factory.mktemp("aion-stack"),
        kafka_bootstrap=_setting(
            config, "aion_kafka", "aion_kafka_bootstrap", "AION_KAFKA_BOOTSTRAP"
        ),
        database_url=_setting(config, "aion_database", "aion_database_url", "AION_DATABASE_URL"),
        workflows=_modules(config, "workflows"),
        activities=_modules(config, "activities"),
        topic_prefix=f"aiontest-{uuid.uuid4().hex[:10]}",
        partitions=3,
        brokers=int(config.getoption("aion_brokers") or config.getini("aion_brokers") or 1),
        pythonpath=_import_paths(config),
    )


@contextlib.contextmanager
def running_stack(config: StackConfig) -> Iterator[AionStack]:
    """Run a stack of ``config`` (``aion_dev.StackConfig``) for the block, on a thread of its
    own, whatever event loop the caller uses: for fixtures of other scopes than the session's."""
    _require_aion_dev()
    runner = _StackThread(config)
    stack = runner.start()
    try:
        yield stack
    finally:
        runner.stop()


@pytest.fixture(scope="session")
def aion_stack(aion_stack_config: StackConfig) -> Iterator[AionStack]:
    """An isolated aion stack for the session (started on first use, stopped at the end)."""
    with running_stack(aion_stack_config) as stack:
        yield stack


def _client_fixture() -> Any:
    """``aion_client`` as a pytest-asyncio fixture, or one that says pytest-asyncio is needed."""
    try:
        import pytest_asyncio  # noqa: PLC0415 - optional until the fixture is used
    except ImportError:  # pragma: no cover - exercised only without pytest-asyncio

        def needs_pytest_asyncio(aion_stack: AionStack) -> AionClient:
            raise AionStackError("the aion_client fixture needs pytest-asyncio: pip install it")

        return pytest.fixture(needs_pytest_asyncio, name="aion_client")

    async def aion_client(aion_stack: AionStack) -> AsyncIterator[AionClient]:
        """An :class:`aion.AionClient` on the session's stack, closed after the test."""
        async with aion_stack.client() as client:
            yield client

    return pytest_asyncio.fixture(aion_client)


aion_client = _client_fixture()
"""An :class:`aion.AionClient` on the session's stack (``aion_stack``), closed after the test."""


# -- helpers -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkflowRun:
    """A closed workflow as the views record it.

    ``status`` is the API's (``COMPLETED``, ``FAILED``, ``CANCELLED``, ``TERMINATED``,
    ``TIMED_OUT``);
    ``history`` holds every event of every run of the workflow id, in seq order;
    ``children`` the children its current run scheduled, with their outcomes.
    """

    workflow_id: str
    status: str
    result: Any
    error: str | None
    history: tuple[HistoryEvent, ...]
    children: tuple[Child, ...]
    description: WorkflowDescription

    @property
    def event_types(self) -> list[str]:
        """The history's event types in order, e.g. ``["WorkflowStarted", …]``."""
        return [event.event_type for event in self.history]

    @property
    def succeeded(self) -> bool:
        """True when the workflow completed."""
        return self.status == "COMPLETED"


async def history_types(client: AionClient, workflow_id: str) -> list[str]:
    """The event types of the workflow's history (every run), in order."""
    return [event.event_type for event in await _history(client, workflow_id)]


async def _history(client: AionClient, workflow_id: str) -> tuple[HistoryEvent, ...]:
    events: list[HistoryEvent] = []
    next_from: int | None = 1
    while next_from is not None:
        page = await client.history(workflow_id, from_seq=next_from, limit=_HISTORY_PAGE)
        events.extend(page.events)
        next_from = page.next_from_seq if page.events else None
    return tuple(events)


async def wait_for_workflow(
    client: AionClient,
    workflow_id: str,
    *,
    timeout: float = DEFAULT_TIMEOUT,  # noqa: ASYNC109 - how long to wait for the workflow
) -> WorkflowRun:
    """Wait until the workflow closes; its status, result or error, history and children.

    Raises :class:`WorkflowNotCompleted` if it is still open after ``timeout`` seconds, or at
    once if it is blocked (its code cannot go on: the message says why).
    """
    outcome = await _wait_visible(client, workflow_id, timeout)
    if outcome.status == "BLOCKED":
        raise WorkflowNotCompleted(
            outcome,
            f"workflow {workflow_id!r} is blocked: {outcome.error_message}; its code cannot go "
            "on (aion describe shows the traceback)",
        )
    if not outcome.closed:
        types = await history_types(client, workflow_id)
        raise WorkflowNotCompleted(
            outcome,
            f"workflow {workflow_id!r} is still {outcome.status} after {timeout} s; "
            f"its history so far: {types}",
        )
    description = await client.describe(workflow_id)
    return WorkflowRun(
        workflow_id=workflow_id,
        status=outcome.status,
        result=outcome.result,
        error=outcome.error_message,
        history=await _history(client, workflow_id),
        children=description.children,
        description=description,
    )


async def _wait_visible(
    client: AionClient,
    workflow_id: str,
    timeout: float,  # noqa: ASYNC109 - how long to wait for the workflow
) -> WorkflowResult:
    """``client.result(wait=…)``, retried while the views have not seen the start yet."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            return await client.result(workflow_id, wait=max(0.0, deadline - loop.time()))
        except AionApiError as err:
            if err.kind != "not-found" or loop.time() >= deadline:
                raise
            await asyncio.sleep(0.05)


async def run_workflow(
    client: AionClient,
    workflow_type: str,
    input: Any = None,  # noqa: A002 - the API's field name
    *,
    id: str | None = None,  # noqa: A002 - the API's field name
    timeout: float = DEFAULT_TIMEOUT,  # noqa: ASYNC109 - how long to wait for the workflow
) -> Any:
    """Start a workflow, wait for it to close and return its result.

    The id is generated unless given. Raises :class:`WorkflowNotCompleted` (an
    ``AssertionError`` naming the status, error and history) unless it completed.
    """
    workflow_id = id or f"test-{workflow_type}-{uuid.uuid4().hex[:12]}"
    await client.start(workflow_type, input, id=workflow_id)
    run = await wait_for_workflow(client, workflow_id, timeout=timeout)
    if not run.succeeded:
        where = run.description.current_run.error_traceback
        raise WorkflowNotCompleted(
            run,
            f"workflow {workflow_id!r} ({workflow_type}) ended {run.status}: {run.error}; "
            f"history: {run.event_types}" + (f"\n{where.rstrip()}" if where else ""),
        )
    return run.result


async def assert_history(
    client: AionClient,
    workflow_id: str,
    expected: Sequence[str],
    *,
    exact: bool = True,
) -> list[str]:
    """Assert the event types of the workflow's history (every run, in order).

    ``exact``: the history is exactly ``expected``; otherwise ``expected`` must appear in it
    in order (other events may come between). Returns the actual types.
    """
    actual = await history_types(client, workflow_id)
    if exact:
        if actual != list(expected):
            raise AssertionError(_history_mismatch(workflow_id, expected, actual))
        return actual
    remaining = iter(actual)
    missing = [kind for kind in expected if not any(kind == seen for seen in remaining)]
    if missing:
        raise AssertionError(
            f"history of {workflow_id!r} lacks, in order, {missing[0]!r} "
            f"(expected the subsequence {list(expected)}); it is {actual}"
        )
    return actual


def _history_mismatch(workflow_id: str, expected: Sequence[str], actual: list[str]) -> str:
    first = next(
        (i for i, (e, a) in enumerate(zip(expected, actual, strict=False)) if e != a),
        min(len(expected), len(actual)),
    )
    want = expected[first] if first < len(expected) else "<end>"
    got = actual[first] if first < len(actual) else "<end>"
    return (
        f"history of {workflow_id!r} differs at event {first + 1}: expected {want!r}, "
        f"got {got!r}\n  expected: {list(expected)}\n  actual:   {actual}"
    )


def with_workflows(config: StackConfig, *modules: str) -> StackConfig:
    """``config`` with ``modules`` added to its workflow modules (for fixture overrides)."""
    return replace(config, workflows=tuple(dict.fromkeys((*config.workflows, *modules))))
