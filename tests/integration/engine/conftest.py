"""An in-process engine on the real broker, with test code acting as the watcher."""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from aion_common.codecs import Codec, encode_key
from aion_common.domain import (
    Command,
    Event,
    EventBatch,
    ParentLink,
    Payload,
    RecordChildTerminal,
    SignalWorkflow,
    StartWorkflow,
    WorkflowContinuedAsNew,
    WorkflowStarted,
    outcome_of,
)
from aion_common.kafka.topics import Topics
from aion_common.settings import Settings
from aion_engine.service import EngineService

from .workflows import REGISTRY


class EngineRig:
    """Drives an :class:`EngineService` through its topics and watches its events."""

    def __init__(self, settings: Settings, *, act_as_watcher: bool = True) -> None:
        self.settings = settings
        self.topics = Topics(settings.topic_prefix)
        self.codec = Codec()
        self.histories: dict[str, list[Event]] = defaultdict(list)
        self.records: dict[str, list[tuple[EventBatch, dict[str, bytes]]]] = defaultdict(list)
        """Each workflow's events records as read: the batch and the record's headers."""
        self.engine = EngineService(settings, REGISTRY)
        self._act_as_watcher = act_as_watcher
        self._parents: dict[tuple[str, str], ParentLink | None] = {}
        self._changed = asyncio.Condition()
        self._tasks: list[asyncio.Task[None]] = []
        self._producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers)
        self._consumer: AIOKafkaConsumer | None = None

    async def start(self) -> None:
        await self.engine.start()
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
        self._tasks = [
            asyncio.create_task(self.engine.run()),
            asyncio.create_task(self._watch()),
        ]

    async def stop(self) -> None:
        await self.engine.stop()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._consumer is not None:
            await self._consumer.stop()
        await self._producer.stop()

    async def send(self, command: Command) -> None:
        await self._producer.send_and_wait(
            self.topics.commands,
            self.codec.encode_command(command),
            key=encode_key(command.workflow_id),
        )

    async def signal(self, workflow_id: str, name: str, payload: Payload) -> None:
        """Send ``name`` with ``payload`` to the workflow (a fresh command id)."""
        await self.send(
            SignalWorkflow(
                command_id=str(uuid.uuid4()),
                issued_at=datetime.now(UTC),
                workflow_id=workflow_id,
                name=name,
                payload=payload,
            )
        )

    async def start_workflow(
        self, workflow_type: str, input_value: object, *, workflow_id: str | None = None, **kw: Any
    ) -> str:
        workflow_id = workflow_id or f"wf-{uuid.uuid4().hex[:12]}"
        await self.send(
            StartWorkflow(
                command_id=str(uuid.uuid4()),
                issued_at=datetime.now(UTC),
                workflow_id=workflow_id,
                workflow_type=workflow_type,
                input=Payload.from_json(input_value),
                **kw,
            )
        )
        return workflow_id

    async def wait_for(
        self, workflow_id: str, predicate: Callable[[list[Event]], bool], timeout: float = 30.0
    ) -> list[Event]:
        async def satisfied() -> None:
            async with self._changed:
                await self._changed.wait_for(lambda: predicate(self.histories[workflow_id]))

        try:
            await asyncio.wait_for(satisfied(), timeout)
        except TimeoutError:
            kinds = [type(e).__name__ for e in self.histories[workflow_id]]
            raise AssertionError(f"{workflow_id}: condition not met; history {kinds}") from None
        return list(self.histories[workflow_id])

    async def wait_closed(self, workflow_id: str, timeout: float = 30.0) -> list[Event]:
        """Wait until the workflow's latest run has a terminal other than continue-as-new."""

        def closed(history: list[Event]) -> bool:
            if not history:
                return False
            outcome = outcome_of(history[-1])
            return outcome is not None and not isinstance(history[-1], WorkflowContinuedAsNew)

        return await self.wait_for(workflow_id, closed, timeout)

    async def _watch(self) -> None:
        assert self._consumer is not None
        while True:
            fetched = await self._consumer.getmany(timeout_ms=100)
            for records in fetched.values():
                for record in records:
                    batch = self.codec.decode_batch(record.value)
                    self.records[batch.workflow_id].append((batch, dict(record.headers)))
                    history = self.histories[batch.workflow_id]
                    for event in batch.events:
                        if event.seq <= len(history):
                            continue
                        history.append(event)
                        await self._maybe_record(event)
            if fetched:
                async with self._changed:
                    self._changed.notify_all()

    async def _maybe_record(self, event: Event) -> None:
        if isinstance(event, WorkflowStarted):
            self._parents[(event.workflow_id, event.run_id)] = event.parent
            return
        outcome = outcome_of(event)
        parent = self._parents.get((event.workflow_id, event.run_id))
        if not self._act_as_watcher or outcome is None or parent is None:
            return
        if isinstance(event, WorkflowContinuedAsNew):
            return
        await self.send(
            RecordChildTerminal.of(
                parent.workflow_id,
                parent.run_id,
                child_workflow_id=event.workflow_id,
                child_run_id=event.run_id,
                outcome=outcome,
                issued_at=datetime.now(UTC),
            )
        )


@pytest.fixture
async def engine_rig(aion_settings: Settings) -> AsyncIterator[EngineRig]:
    rig = EngineRig(aion_settings)
    await rig.start()
    try:
        yield rig
    finally:
        await rig.stop()
