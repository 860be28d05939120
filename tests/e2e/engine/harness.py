"""Engine subprocesses, and test code acting as the watcher, for the engine's e2e tests."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from aion_common.codecs import Codec, encode_key
from aion_common.domain import (
    Event,
    EventBatch,
    ParentLink,
    Payload,
    RecordChildTerminal,
    StartWorkflow,
    WorkflowCompleted,
    WorkflowContinuedAsNew,
    WorkflowStarted,
    derive_id,
    outcome_of,
)
from aion_common.kafka.consumer import read_partition_to_end, stop_consumer
from aion_common.kafka.link import raise_if_cancelling
from aion_common.kafka.producer import stop_producer
from aion_common.kafka.topics import Topics
from aion_common.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[3]
WORKFLOWS_MODULE = "tests.e2e.engine.crash_workflows"
KAFKA_CALL_TIMEOUT_S = 10.0  # a test client's send or fetch that takes longer is cut and retried

T = TypeVar("T")


async def kafka_retrying(call: Callable[[], Awaitable[T]], failures: list[str], what: str) -> T:
    """``await call()`` until it succeeds: for a test's own Kafka loops, which must outlive a
    broker outage.

    After an outage aiokafka can hang a send or a fetch, or let a ``CancelledError`` out of its
    own retries (aio-libs/aiokafka#647); a loop that caught only ``Exception`` then ended
    silently and the test waited out its whole timeout. So each attempt is bounded
    (:data:`KAFKA_CALL_TIMEOUT_S`), and a ``KafkaError``, that timeout or a leaked cancellation
    is noted in ``failures`` and retried after 0.5 s. Only a cancellation of the calling task
    itself ends it.
    """
    while True:
        try:
            return await asyncio.wait_for(call(), KAFKA_CALL_TIMEOUT_S)
        except (KafkaError, TimeoutError, asyncio.CancelledError) as err:
            raise_if_cancelling()
            failures.append(f"{what}: {err!r}")
            await asyncio.sleep(0.5)


def raise_if_ended(tasks: Iterable[asyncio.Task[Any]], owner: str) -> None:
    """Fail at once, with its error, if one of ``owner``'s background loops (which run until
    stopped) has ended: a wait on them would otherwise time out saying nothing."""
    for task in tasks:
        if task.done():
            error = None if task.cancelled() else task.exception()
            raise AssertionError(f"the {owner}'s {task.get_name()} ended: {error!r}")


def expected_sum(spec: dict[str, Any]) -> int:
    """What ``e2e.parent`` (see crash_workflows) returns for ``spec``."""
    return sum(spec["base"] * 10 + i for i in range(spec["children"]))


class ServiceProcess:
    """An aion service (``python -m <module>``) as a subprocess that can be SIGKILLed and restarted.

    Each start logs to ``<log_dir>/<instance_id>-<start number>.log``.
    """

    def __init__(
        self,
        settings: Settings,
        log_dir: Path,
        *,
        instance_id: str,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.settings = settings
        self.extra_env = dict(extra_env or {})
        self.log_dir = log_dir
        self.instance_id = instance_id
        self.starts = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def argv(self) -> list[str]:
        """The command line after ``python``."""
        raise NotImplementedError

    def service_env(self) -> dict[str, str]:
        """Variables this kind of service needs beyond the shared settings."""
        return {}

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"{self.instance_id}-{self.starts}.log"

    def start(self) -> None:
        assert self._process is None or self._process.poll() is not None
        self.starts += 1
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p
            ),
            "AION_KAFKA_BOOTSTRAP": self.settings.bootstrap_servers,
            "AION_TOPIC_PREFIX": self.settings.topic_prefix,
            "AION_PARTITIONS": str(self.settings.partitions),
            "AION_INSTANCE_ID": self.instance_id,
            "AION_LOG_LEVEL": "INFO",
            # a crash of the interpreter, even before logging is set up, leaves its stacks
            # in the log instead of an empty file
            "PYTHONFAULTHANDLER": "1",
            "AION_STATE_DIR": str(self.log_dir / "state"),
            **self.service_env(),
            **self.extra_env,
        }
        self._log = self.log_path.open("wb")
        self._process = subprocess.Popen(
            [sys.executable, *self.argv()],
            cwd=REPO_ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def kill(self) -> None:
        """SIGKILL: no cleanup of any kind runs in the service."""
        assert self._process is not None
        self._process.send_signal(signal.SIGKILL)
        self._process.wait()
        self._close_log()

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM and wait; return the exit status (None if it was never started)."""
        process = self._process
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._close_log()
        return process.returncode

    def alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def exit_code(self) -> int | None:
        return None if self._process is None else self._process.poll()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_records(self, start: int | None = None) -> list[dict[str, Any]]:
        """The JSON log lines of start number ``start`` (default: the current one)."""
        path = self.log_dir / f"{self.instance_id}-{start or self.starts}.log"
        records = []
        for line in path.read_text(errors="replace").splitlines():
            try:
                records.append(json.loads(line))
            except ValueError:
                continue
        return records

    def generations(self, start: int | None = None) -> list[int]:
        """The consumer group generations this start joined, in order (aiokafka's log)."""
        joined = re.compile(r"^Joined group '.*' \(generation (\d+)\)")
        found = (joined.match(str(r.get("msg", ""))) for r in self.log_records(start))
        return [int(m.group(1)) for m in found if m]


class EngineProcess(ServiceProcess):
    """``python -m aion_engine`` with this directory's crash workflows, in a delivery mode."""

    def __init__(
        self,
        settings: Settings,
        log_dir: Path,
        *,
        transactions: str,
        instance_id: str,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        super().__init__(settings, log_dir, instance_id=instance_id, extra_env=extra_env)
        self.transactions = transactions

    def argv(self) -> list[str]:
        return ["-m", "aion_engine", "--workflows", WORKFLOWS_MODULE]

    def service_env(self) -> dict[str, str]:
        return {"AION_TRANSACTIONS": self.transactions}

    def acquired(self, start: int | None = None) -> list[int]:
        """Partitions this start logged as acquired, in order."""
        return [
            int(r["partition"])
            for r in self.log_records(start)
            if r.get("message", r.get("msg")) == "partition acquired"
        ]


def stacks_of(engine: ServiceProcess) -> str:
    """A running engine's (or watcher's) stacks, for a failure's message: its asyncio tasks
    (logged on SIGUSR1), its threads (faulthandler on SIGUSR2, answered even when the event
    loop is blocked; ``py-spy dump`` too, when installed, taken first: it needs nothing of the
    process, which may be stuck before it installed its signal handlers). A process that is
    no longer running: its exit status and the last lines of its log."""
    pid = engine.pid
    if pid is None or not engine.alive():
        tail = engine.log_path.read_text(errors="replace").splitlines()[-20:]
        return "\n".join(
            [
                f"({engine.instance_id} start {engine.starts} not running: exit status "
                f"{engine.exit_code()}; the last lines of {engine.log_path}:",
                *tail,
                ")",
            ]
        )
    parts = [f"{engine.instance_id} pid {pid}, start {engine.starts}, log {engine.log_path}"]
    py_spy = Path(sys.executable).with_name("py-spy")
    if py_spy.exists():
        dumped = subprocess.run(
            [str(py_spy), "dump", "--pid", str(pid)], capture_output=True, text=True, check=False
        )
        parts.append(dumped.stdout + dumped.stderr)
    os.kill(pid, signal.SIGUSR1)
    time.sleep(1.0)  # a failure report: nothing else needs the loop now
    dumps = [r for r in engine.log_records() if r.get("msg") == "asyncio task dump"]
    parts.append(str(dumps[-1].get("dump")) if dumps else "(no task dump logged)")
    own = [  # the engine's own last lines (aiokafka's retry noise left out)
        r for r in engine.log_records() if not str(r.get("logger", "")).startswith("aiokafka")
    ]
    parts.append("last engine log lines:")
    parts.extend(str({k: v for k, v in r.items() if k != "dump"}) for r in own[-15:])
    # Every thread's stack (faulthandler, on SIGUSR2): there even when the loop is blocked.
    os.kill(pid, signal.SIGUSR2)
    time.sleep(0.5)
    text = engine.log_path.read_text(errors="replace").splitlines()
    dumped_at = max(
        (i for i, line in enumerate(text) if line.startswith(("Thread 0x", "Current thread 0x"))),
        default=None,
    )
    if dumped_at is not None:
        begin = dumped_at
        while begin > 0 and not text[begin - 1].startswith("{"):
            begin -= 1
        parts.append("threads (faulthandler):")
        parts.extend(line for line in text[begin:] if not line.startswith("{"))
    return "\n".join(parts)


@dataclass(slots=True)
class _Start:
    """A start command's bytes, and its send's delivery while one is in flight."""

    workflow_id: str
    value: bytes
    delivery: asyncio.Future[Any] | None = None


@dataclass
class Watcher:
    """Test code acting as the watcher: reads every events partition from its beginning
    (read_committed, no group, so it is restart-safe by construction) and sends each child's
    terminal to its parent as ``RecordChildTerminal`` with the deterministic command id."""

    settings: Settings
    codec: Codec = field(default_factory=Codec)
    histories: dict[str, dict[int, Event]] = field(default_factory=lambda: defaultdict(dict))
    closed: dict[str, Event] = field(default_factory=dict)
    events_seen: int = 0
    kafka_failures: list[str] = field(default_factory=list)  # reads and sends retried, why

    def __post_init__(self) -> None:
        self.topics = Topics(self.settings.topic_prefix)
        self._parents: dict[tuple[str, str], ParentLink | None] = {}
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self.settings.bootstrap_servers, enable_idempotence=True
        )
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._starts: list[_Start] = []  # queued by send_start, not yet flushed
        self.changed = asyncio.Event()

    async def start(self) -> None:
        await self._producer.start()
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.bootstrap_servers,
            isolation_level="read_committed",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        await self._consumer.start()
        self._consumer.assign(
            [TopicPartition(self.topics.events, p) for p in range(self.settings.partitions)]
        )
        self._task = asyncio.create_task(self._run(), name="reader")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._consumer is not None:
            await stop_consumer(self._consumer)
        await stop_producer(self._producer, what="the test watcher's producer")

    async def send_start(self, workflow_type: str, input_value: object, workflow_id: str) -> None:
        """Queue a start of ``workflow_id``; :meth:`flush` waits until it is acknowledged.

        The command id derives from the workflow id, so a start sent again after a failed or
        timed-out send is the same command, which the engine applies once (a fresh id would
        start the workflow twice, or be refused as a duplicate start).
        """
        command = StartWorkflow(
            command_id=derive_id("e2e-start", workflow_id),
            issued_at=datetime.now(UTC),
            workflow_id=workflow_id,
            workflow_type=workflow_type,
            input=Payload.from_json(input_value),
        )
        start = _Start(workflow_id, self.codec.encode_command(command))
        self._starts.append(start)
        await kafka_retrying(
            functools.partial(self._queue, start), self.kafka_failures, f"start {workflow_id}"
        )

    async def flush(self) -> None:
        """Until every start queued so far is acknowledged; one whose send failed or timed
        out (a broker outage) is sent again, the same command, until it is."""
        starts, self._starts = self._starts, []
        for start in starts:
            deliver = functools.partial(self._deliver, start)
            await kafka_retrying(deliver, self.kafka_failures, f"start {start.workflow_id}")

    async def _queue(self, start: _Start) -> None:
        start.delivery = await self._producer.send(
            self.topics.commands, start.value, key=encode_key(start.workflow_id)
        )

    async def _deliver(self, start: _Start) -> None:
        if start.delivery is None:  # never queued, or its send failed: send it again
            await self._queue(start)
        assert start.delivery is not None
        try:
            # Shielded: a timed-out wait must not cancel aiokafka's own future.
            await asyncio.shield(start.delivery)
        except BaseException:
            start.delivery = None
            raise

    async def wait_closed(self, workflow_ids: set[str], timeout: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not workflow_ids <= self.closed.keys():
            raise_if_ended([self._task] if self._task else [], "test watcher")
            remaining = deadline - loop.time()
            if remaining <= 0:
                missing = sorted(workflow_ids - self.closed.keys())
                raise AssertionError(
                    f"{len(missing)} workflows not closed, e.g. {missing[:5]}; the test watcher"
                    f" retried {len(self.kafka_failures)} Kafka calls: {self.kafka_failures[-3:]}"
                )
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), min(remaining, 1.0))

    async def _run(self) -> None:
        assert self._consumer is not None
        getmany = functools.partial(self._consumer.getmany, timeout_ms=100)
        while True:
            fetched = await kafka_retrying(getmany, self.kafka_failures, "read")
            commands = []
            for records in fetched.values():
                for record in records:
                    batch = self.codec.decode_batch(record.value)
                    for event in batch.events:
                        history = self.histories[batch.workflow_id]
                        if event.seq in history:
                            continue  # a duplicate record: readers dedupe by seq
                        history[event.seq] = event
                        self.events_seen += 1
                        command = self._on_event(event)
                        if command is not None:
                            commands.append(command)
            if commands:  # all again after a failure: the engine drops a terminal's repeats
                send_all = functools.partial(self._send_all, commands)
                await kafka_retrying(send_all, self.kafka_failures, f"send {len(commands)}")
            if fetched:
                self.changed.set()

    async def _send_all(self, commands: list[RecordChildTerminal]) -> None:
        sends = [
            await self._producer.send(
                self.topics.commands,
                self.codec.encode_command(command),
                key=encode_key(command.workflow_id),
            )
            for command in commands
        ]
        await asyncio.gather(*sends)

    def _on_event(self, event: Event) -> RecordChildTerminal | None:
        if isinstance(event, WorkflowStarted):
            self._parents[(event.workflow_id, event.run_id)] = event.parent
            return None
        outcome = outcome_of(event)
        if outcome is None or isinstance(event, WorkflowContinuedAsNew):
            return None
        self.closed[event.workflow_id] = event
        parent = self._parents.get((event.workflow_id, event.run_id))
        if parent is None:
            return None
        return RecordChildTerminal.of(
            parent.workflow_id,
            parent.run_id,
            child_workflow_id=event.workflow_id,
            child_run_id=event.run_id,
            outcome=outcome,
            issued_at=datetime.now(UTC),
        )


async def until(
    condition: Callable[[], object], timeout: float, what: str, *, poll: float = 0.05
) -> None:
    """Wait until ``condition()`` is truthy; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(poll)


async def read_all_events(settings: Settings) -> list[tuple[int, int, EventBatch]]:
    """Every record of the events topic end to end, read_committed: (partition, offset, batch)."""
    codec = Codec()
    topic = Topics(settings.topic_prefix).events
    out: list[tuple[int, int, EventBatch]] = []
    for partition in range(settings.partitions):
        out.extend(
            [
                (partition, record.offset, codec.decode_batch(record.value))
                async for record in read_partition_to_end(settings, topic, partition)
            ]
        )
    return out


async def count_records(settings: Settings, topic: str) -> int:
    count = 0
    for partition in range(settings.partitions):
        async for _ in read_partition_to_end(settings, topic, partition):
            count += 1
    return count


def result_of(event: Event) -> object:
    assert isinstance(event, WorkflowCompleted), f"expected completion, got {event!r}"
    return event.result.to_json()


async def changelog_states(settings: Settings, directory: Path) -> dict[str, dict[str, Any]]:
    """Every workflow's state as a cold restore from ``<prefix>.engine-state`` (open work) and
    ``<prefix>.engine-closed`` (closed workflows) sees it (fresh stores per partition under
    ``directory``), in :func:`observable` form. A workflow in both is an error."""
    from aion_common.kafka.changelog import ChangelogStore, catch_up
    from aion_engine._changelog import POSITION_KEY, EngineChangelog
    from aion_engine._snapshot import observable

    codec = Codec()
    topics = Topics(settings.topic_prefix)
    states: dict[str, dict[str, Any]] = {}
    for partition in range(settings.partitions):
        tag = uuid.uuid4().hex[:6]
        store = ChangelogStore(directory / f"check-{tag}-p{partition}.sqlite")
        closed_store = ChangelogStore(directory / f"check-{tag}-p{partition}-closed.sqlite")
        try:
            await catch_up(settings, topics.engine_state, partition, store)
            await catch_up(settings, topics.engine_closed, partition, closed_store)
            opened, entries = store.counts()
            position = store.get(POSITION_KEY) is not None  # the one entry not of a workflow
            assert opened + position == entries, "engine-state holds closed entries"
            changelog = EngineChangelog(codec, partition)
            for state in changelog.restore(store):
                states[state.workflow_id] = observable(state)
            for key, _value, _offset in list(closed_store.scan_all()):
                workflow_id = key.decode()
                assert workflow_id not in states, f"{workflow_id} is open and closed"
                closed = changelog.load_closed(closed_store, workflow_id)
                assert closed is not None
                assert closed.open_run is None, f"{workflow_id} in engine-closed is open"
                states[workflow_id] = observable(closed)
        finally:
            store.close()
            closed_store.close()
    return states


async def event_log_states(settings: Settings) -> dict[str, dict[str, Any]]:
    """Every workflow's state rebuilt from ``<prefix>.events`` (the truth), same form."""
    from aion_engine._snapshot import observable
    from aion_engine.core import EngineCore
    from aion_engine.registry import WorkflowRegistry

    core = EngineCore(WorkflowRegistry())
    for _partition, _offset, batch in await read_all_events(settings):
        core.apply_batch(batch)
    states: dict[str, dict[str, Any]] = {}
    for state in core.workflows_in_memory():
        states[state.workflow_id] = observable(state)
    return states


async def assert_changelog_matches_events(settings: Settings, directory: Path) -> int:
    """The engine's changelog and its event log describe the same state (both or neither of
    every transaction made it); returns how many workflows were compared."""
    from_changelog = await changelog_states(settings, directory)
    from_events = await event_log_states(settings)
    assert from_changelog.keys() == from_events.keys(), sorted(
        from_changelog.keys() ^ from_events.keys()
    )[:5]
    for workflow_id, state in from_events.items():
        assert from_changelog[workflow_id] == state, workflow_id
    return len(from_events)
