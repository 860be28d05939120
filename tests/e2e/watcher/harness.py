"""The watcher as a subprocess, and a driver that starts parents and watches ``aion.events``.

The engine subprocess comes from ``tests.e2e.engine.harness.EngineProcess``; it loads this
directory's workflows through ``AION_WORKFLOWS`` (see :func:`engine_env`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import uuid
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from aion_common.codecs import Codec, encode_key
from aion_common.domain import (
    CancelWorkflow,
    ChildWorkflowCompleted,
    ChildWorkflowFailed,
    Command,
    Event,
    Payload,
    SignalWorkflow,
    StartWorkflow,
    WorkflowContinuedAsNew,
    WorkflowStarted,
    outcome_of,
)
from aion_common.kafka.consumer import stop_consumer
from aion_common.kafka.topics import Topics
from aion_common.settings import Settings
from e2e.engine.harness import ServiceProcess, kafka_retrying, raise_if_ended

REPO_ROOT = Path(__file__).resolve().parents[3]
WORKFLOWS_MODULE = "tests.e2e.watcher.workflows"


def engine_env() -> dict[str, str]:
    """What ``EngineProcess`` (which copies ``os.environ``) needs to load this test's workflows."""
    return {"AION_WORKFLOWS": WORKFLOWS_MODULE}


class WatcherProcess(ServiceProcess):
    """``python -m aion_watcher`` as a subprocess that can be SIGKILLed and restarted."""

    def argv(self) -> list[str]:
        return ["-m", "aion_watcher"]

    def assigned(self, start: int | None = None) -> list[int]:
        """Partitions start number ``start`` (default: the current one) logged as assigned."""
        return [
            int(r["partition"])
            for r in self.log_records(start or self.starts)
            if r.get("message", r.get("msg")) == "partition assigned"
        ]


class Driver:
    """The test's client side: sends commands, and folds ``aion.events`` (no group, from 0).

    It keeps every event by (workflow_id, seq) — duplicates are dropped as readers must — and
    the set of workflows whose current run is closed. ``cancel_open`` names workflows to cancel
    (reason ``op-<value>`` from their input) whenever they are seen open: re-sent every few
    seconds until they close, so a cancel that raced a start or an outage is not lost.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topics = Topics(settings.topic_prefix)
        self.codec = Codec()
        self.histories: dict[str, dict[int, Event]] = defaultdict(dict)
        self.open: dict[str, WorkflowStarted] = {}
        self.closed: set[str] = set()
        self.cancel_open: set[str] = set()
        self.child_terminals_seen = 0
        self.send_failures: list[str] = []  # sends (and reads) retried, with the error
        self.changed = asyncio.Event()
        self._producer = AIOKafkaProducer(
            bootstrap_servers=settings.bootstrap_servers, enable_idempotence=True
        )
        self._consumer: AIOKafkaConsumer | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> Driver:
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
            asyncio.create_task(self._read(), name="driver.read"),
            asyncio.create_task(self._cancel_loop(), name="driver.cancel"),
        ]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._consumer is not None:
            await stop_consumer(self._consumer)
        await self._producer.stop()

    async def send(self, command: Command) -> None:
        await self._producer.send_and_wait(
            self.topics.commands,
            self.codec.encode_command(command),
            key=encode_key(command.workflow_id),
        )

    async def start_workflow(self, workflow_type: str, workflow_id: str, input_value: Any) -> None:
        await self.send(
            StartWorkflow(
                command_id=str(uuid.uuid4()),
                issued_at=datetime.now(UTC),
                workflow_id=workflow_id,
                workflow_type=workflow_type,
                input=Payload.from_json(input_value),
            )
        )

    async def signal(self, workflow_id: str, name: str, value: Any = None) -> None:
        await self.send(
            SignalWorkflow(
                command_id=str(uuid.uuid4()),
                issued_at=datetime.now(UTC),
                workflow_id=workflow_id,
                name=name,
                payload=Payload.from_json(value),
            )
        )

    async def wait_closed(self, workflow_ids: set[str], timeout: float) -> None:
        async with asyncio.timeout(timeout):
            while not workflow_ids <= self.closed:
                raise_if_ended(self._tasks, "driver")  # a dead reader or canceller: say so
                self.changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.changed.wait(), 1.0)

    def history(self, workflow_id: str) -> list[Event]:
        events = self.histories.get(workflow_id, {})
        return [events[seq] for seq in sorted(events)]

    async def _read(self) -> None:
        assert self._consumer is not None
        getmany = functools.partial(self._consumer.getmany, timeout_ms=100)
        while True:
            fetched = await kafka_retrying(getmany, self.send_failures, "read")
            for records in fetched.values():
                for record in records:
                    batch = self.codec.decode_batch(record.value)
                    for event in batch.events:
                        self._fold(event)
            if fetched:
                self.changed.set()

    def _fold(self, event: Event) -> None:
        history = self.histories[event.workflow_id]
        if event.seq in history:
            return
        history[event.seq] = event
        if isinstance(event, WorkflowStarted):
            self.open[event.workflow_id] = event
            self.closed.discard(event.workflow_id)
        elif isinstance(event, ChildWorkflowCompleted | ChildWorkflowFailed):
            self.child_terminals_seen += 1
        elif outcome_of(event) is not None and not isinstance(event, WorkflowContinuedAsNew):
            self.open.pop(event.workflow_id, None)
            self.closed.add(event.workflow_id)

    async def _cancel_loop(self) -> None:
        asked: dict[str, float] = {}
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(0.2)
            for workflow_id in sorted(self.cancel_open & self.open.keys()):
                started = self.open.get(workflow_id)  # closed while an earlier cancel was sent
                if started is None or loop.time() - asked.get(workflow_id, -1e9) < 3.0:
                    continue
                asked[workflow_id] = loop.time()
                value = started.input.to_json()["value"]  # type: ignore[index]
                cancel = CancelWorkflow(
                    command_id=str(uuid.uuid4()),
                    issued_at=datetime.now(UTC),
                    workflow_id=workflow_id,
                    reason=f"op-{value}",
                )
                # Before kafka_retrying, a CancelledError aiokafka leaked after the outage ended
                # this loop silently and every later cancel-kind child stayed open (the watcher
                # chaos test's rare 150 s timeout).
                send = functools.partial(self.send, cancel)
                await kafka_retrying(send, self.send_failures, f"cancel {workflow_id}")
