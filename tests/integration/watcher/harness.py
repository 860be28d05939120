"""Test rig for the watcher on a real broker: the test plays the engine.

:class:`Flow` builds one workflow's event batches (contiguous seqs across runs).
:class:`Rig` publishes them to ``aion.events``, collects every command the watcher produces on
``aion.commands``, and — when ``engine=True`` — applies each ``RecordChildTerminal`` the way the
engine does, with the domain's own ``decide_child_terminal_record`` (ParentTerminal,
AlreadyRecorded, the Cancelled/TimedOut prefixes, ContinuedAsNew refused), appending the
recorded event to the parent's history on ``aion.events`` so the watcher sees it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from aion_common.codecs import Codec
from aion_common.domain import (
    ChildWorkflowCompleted,
    ChildWorkflowFailed,
    Event,
    EventBatch,
    InfrastructureError,
    ParentLink,
    Payload,
    RecordChildTerminal,
    RecordDecision,
    Recorded,
    RecordRefused,
    WorkflowCancelled,
    WorkflowCompleted,
    WorkflowContinuedAsNew,
    WorkflowError,
    WorkflowFailed,
    WorkflowStarted,
    WorkflowTimedOut,
    decide_child_terminal_record,
)
from aion_common.kafka import KeyedProducer, Topics, ensure_topics
from aion_common.settings import Settings
from aion_watcher import CommandSender, SenderWrapper, WatcherConfig, WatcherService

# these tests publish terminals themselves (no engine reports them): the watcher issues
FAST = WatcherConfig(
    initial_backoff=0.01,
    max_backoff=0.05,
    grace_period=0.6,
    sweep_interval=0.1,
    engine_reports_terminals=False,
)


@dataclass
class Flow:
    """One workflow id; each builder call appends to ``history`` and returns the batch."""

    workflow_id: str = field(default_factory=lambda: f"wf-{uuid.uuid4().hex[:10]}")
    history: list[Event] = field(default_factory=list)
    run_id: str = ""
    first_run_id: str = ""
    parent: ParentLink | None = None

    def _env(self) -> dict[str, Any]:
        return {
            "workflow_id": self.workflow_id,
            "run_id": self.run_id,
            "seq": len(self.history) + 1,
            "recorded_at": datetime.now(UTC),
            "command_id": str(uuid.uuid4()),
        }

    def _add(self, *events: Event) -> EventBatch:
        return EventBatch(
            workflow_id=self.workflow_id, command_id=str(uuid.uuid4()), writer="rig", events=events
        )

    def _push(self, event: Event) -> Event:
        self.history.append(event)
        return event

    def _started(self, previous: str | None) -> Event:
        return self._push(
            WorkflowStarted(
                **self._env(),
                workflow_type="t",
                input=Payload.from_json(None),
                first_run_id=self.first_run_id,
                previous_run_id=previous,
                parent=self.parent,
            )
        )

    def start(self, parent: Flow | None = None) -> EventBatch:
        """A new first run (also a reuse of the id after it closed)."""
        self.run_id = self.first_run_id = str(uuid.uuid4())
        self.parent = (
            None
            if parent is None
            else ParentLink(workflow_id=parent.workflow_id, run_id=parent.run_id)
        )
        return self._add(self._started(None))

    def complete(self, result: object = "ok") -> EventBatch:
        return self._add(
            self._push(WorkflowCompleted(**self._env(), result=Payload.from_json(result)))
        )

    def fail(self, message: str) -> EventBatch:
        error = WorkflowError(message=message)
        return self._add(self._push(WorkflowFailed(**self._env(), error=error)))

    def cancel(self, reason: str) -> EventBatch:
        return self._add(self._push(WorkflowCancelled(**self._env(), reason=reason)))

    def time_out(self, timeout: str) -> EventBatch:
        return self._add(self._push(WorkflowTimedOut(**self._env(), timeout=timeout)))

    def continue_as_new(self) -> EventBatch:
        previous, next_run = self.run_id, str(uuid.uuid4())
        closing = self._push(
            WorkflowContinuedAsNew(
                **self._env(),
                input=Payload.from_json(None),
                workflow_type=None,
                next_run_id=next_run,
            )
        )
        self.run_id = next_run
        return self._add(closing, self._started(previous))

    def child_terminals(self, child: Flow | None = None) -> list[Event]:
        """Child-terminal events in this workflow's history (for ``child``, or all)."""
        return [
            e
            for e in self.history
            if isinstance(e, ChildWorkflowCompleted | ChildWorkflowFailed)
            and (child is None or e.child_workflow_id == child.workflow_id)
        ]


class Rig:
    """The broker side of a watcher test (see the module docstring)."""

    def __init__(self, settings: Settings, *, engine: bool = True) -> None:
        self.settings = settings
        self.topics = Topics(settings.topic_prefix)
        self.codec = Codec()
        self.flows: dict[str, Flow] = {}
        self.commands: list[RecordChildTerminal] = []
        self.decisions: list[tuple[RecordChildTerminal, RecordDecision]] = []
        self._engine = engine
        self._published: dict[str, int] = {}
        self._producer = KeyedProducer(settings)
        self._reader: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._changed = asyncio.Condition()

    def flow(self) -> Flow:
        flow = Flow()
        self.flows[flow.workflow_id] = flow
        return flow

    async def __aenter__(self) -> Rig:
        await ensure_topics(self.settings, self.topics)
        await self._producer.start()
        self._reader = AIOKafkaConsumer(
            bootstrap_servers=self.settings.bootstrap_servers,
            enable_auto_commit=False,
            isolation_level="read_committed",
        )
        await self._reader.start()
        parts = [TopicPartition(self.topics.commands, p) for p in range(self.settings.partitions)]
        self._reader.assign(parts)
        await self._reader.seek_to_beginning(*parts)
        self._task = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        assert self._reader is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        await self._reader.stop()
        await self._producer.stop()

    async def publish(self, *batches: EventBatch) -> None:
        """Append batches to ``aion.events`` as the engine would (one record per batch)."""
        for batch in batches:
            self._published[batch.workflow_id] = max(
                batch.last_seq, self._published.get(batch.workflow_id, 0)
            )
            value = self.codec.encode_batch(batch)
            await self._producer.send(self.topics.events, batch.workflow_id, value)

    async def _read(self) -> None:
        assert self._reader is not None
        while True:
            fetched = await self._reader.getmany(timeout_ms=100)
            for records in fetched.values():
                for record in records:
                    command = self.codec.decode_command(record.value)
                    assert isinstance(command, RecordChildTerminal)
                    self.commands.append(command)
                    if self._engine:
                        await self._apply(command)
            if fetched:
                async with self._changed:
                    self._changed.notify_all()

    async def _apply(self, command: RecordChildTerminal) -> None:
        parent = self.flows[command.workflow_id]
        visible = parent.history[: self._published.get(parent.workflow_id, 0)]
        if not visible:
            self.decisions.append((command, RecordRefused("parent workflow does not exist yet")))
            return
        decision = decide_child_terminal_record(
            visible,
            parent_run_id=command.parent_run_id,
            child_workflow_id=command.child_workflow_id,
            outcome=command.outcome,
            command_id=command.command_id,
            recorded_at=datetime.now(UTC),
        )
        self.decisions.append((command, decision))
        if isinstance(decision, Recorded):
            parent.history.append(decision.event)
            await self.publish(parent._add(decision.event))

    async def wait_until(self, predicate: Callable[[], bool], timeout: float = 20.0) -> None:
        """Wait until ``predicate()`` holds (checked whenever commands arrive, and every 50 ms)."""
        async with asyncio.timeout(timeout):
            while not predicate():
                async with self._changed:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._changed.wait(), 0.05)

    def commands_for(self, child: Flow) -> list[RecordChildTerminal]:
        return [c for c in self.commands if c.child_workflow_id == child.workflow_id]

    @staticmethod
    def settings_for(settings: Settings, *, instance_id: str) -> Settings:
        """``settings`` of another watcher instance (its own, empty, local stores)."""
        return dataclasses.replace(settings, instance_id=instance_id)

    @contextlib.asynccontextmanager
    async def watcher(
        self,
        config: WatcherConfig = FAST,
        *,
        wrap: SenderWrapper | None = None,
        settings: Settings | None = None,
    ) -> AsyncIterator[WatcherService]:
        """A running watcher that owns every partition; stopped (cleanly) on exit."""
        service = WatcherService(settings or self.settings, config, wrap_sender=wrap)
        await service.start()
        task = asyncio.create_task(service.run())
        try:
            await self.wait_until(
                lambda: (
                    (
                        len(service.state.owned) == self.settings.partitions
                        and not service.rebuilding()
                    )
                    or task.done()
                ),
                timeout=30,
            )
            if task.done():
                task.result()
            yield service
        finally:
            await service.stop()
            await task


class Flaky:
    """Fails the next ``failures`` sends with a retriable error, then sends for real."""

    def __init__(self, inner: CommandSender, failures: int) -> None:
        self.inner, self.failures, self.attempts = inner, failures, 0

    async def send(self, command: RecordChildTerminal) -> None:
        self.attempts += 1
        if self.failures > 0:
            self.failures -= 1
            raise InfrastructureError("injected transient produce failure", retriable=True)
        await self.inner.send(command)


class Dropping:
    """Reports success for the first ``drops`` sends without sending them: lost commands."""

    def __init__(self, inner: CommandSender, drops: int) -> None:
        self.inner, self.drops = inner, drops

    async def send(self, command: RecordChildTerminal) -> None:
        if self.drops > 0:
            self.drops -= 1
            return
        await self.inner.send(command)


class AckLost:
    """Sends for real, then reports a retriable failure ``times`` times: durable but unacked."""

    def __init__(self, inner: CommandSender, times: int) -> None:
        self.inner, self.times = inner, times

    async def send(self, command: RecordChildTerminal) -> None:
        await self.inner.send(command)
        if self.times > 0:
            self.times -= 1
            raise InfrastructureError("injected: acknowledgement lost", retriable=True)


def spawn_watcher(settings: Settings, log_path: Path, **env: str) -> subprocess.Popen[bytes]:
    """``python -m aion_watcher`` on ``settings``, JSON logs to ``log_path``; ``env`` adds to it."""
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "aion_watcher"],
            env={
                **os.environ,
                "AION_KAFKA_BOOTSTRAP": settings.bootstrap_servers,
                "AION_TOPIC_PREFIX": settings.topic_prefix,
                "AION_PARTITIONS": str(settings.partitions),
                "AION_LOG_LEVEL": "INFO",
                **env,
            },
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def assigned_partitions(log_path: Path) -> list[int]:
    """Partitions a watcher logged as assigned (in ``log_path``), in order."""
    found = []
    for line in log_path.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if record.get("msg") == "partition assigned":
                found.append(int(record["partition"]))
    return found
