"""Event batches as the engine appends them, produced to a real events topic, and view dumps.

:func:`family` is one parent workflow with a child and a continue-as-new: 10 events in 7
records (2 workflow ids). :class:`EventsWriter` produces encoded batches in transactions, the
way the engine does (keyed by workflow id, ``read_committed`` readers see only commits).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from aion_common.codecs import Codec, encode_key
from aion_common.domain import (
    ChildWorkflowCompleted,
    ChildWorkflowScheduled,
    Event,
    EventBatch,
    ParentClosePolicy,
    ParentLink,
    Payload,
    SignalReceived,
    WorkflowCompleted,
    WorkflowContinuedAsNew,
    WorkflowStarted,
)
from aion_common.kafka import Topics, ensure_topics
from aion_common.settings import Settings
from aion_projector.schema import Base

T0 = datetime(2026, 1, 1, tzinfo=UTC)
_PAYLOAD = Payload.from_json({"order": 42, "items": ["a", "b"]})


def _envelope(workflow_id: str, run_id: str, seq: int, at: datetime, cmd: str) -> dict[str, Any]:
    return {
        "workflow_id": workflow_id,
        "run_id": run_id,
        "seq": seq,
        "recorded_at": at,
        "command_id": cmd,
    }


def _batch(workflow_id: str, cmd: str, *events: Event) -> EventBatch:
    return EventBatch(workflow_id=workflow_id, command_id=cmd, writer="engine-1", events=events)


def family(index: int, *, prefix: str = "wf") -> list[EventBatch]:
    """Parent ``{prefix}-{index}`` (two runs) and its child: 10 events, in append order."""
    p, c = f"{prefix}-{index:05d}", f"{prefix}-{index:05d}-child"
    r1, r2, rc = f"{p}-r1", f"{p}-r2", f"{c}-r1"
    at = T0 + timedelta(milliseconds=index)

    def env(wid: str, run: str, seq: int, cmd: str) -> dict[str, Any]:
        return _envelope(wid, run, seq, at, cmd)

    started = {"workflow_type": "order", "input": _PAYLOAD, "package_version": "1.0.0"}
    return [
        _batch(
            p,
            f"{p}-c1",
            WorkflowStarted(**env(p, r1, 1, f"{p}-c1"), **started, first_run_id=r1),
            ChildWorkflowScheduled(
                **env(p, r1, 2, f"{p}-c1"),
                child_workflow_id=c,
                child_workflow_type="pay",
                input=_PAYLOAD,
                parent_close_policy=ParentClosePolicy.TERMINATE,
                start_command_id=f"{c}-start",
            ),
        ),
        _batch(
            c,
            f"{c}-start",
            WorkflowStarted(
                **env(c, rc, 1, f"{c}-start"),
                workflow_type="pay",
                input=_PAYLOAD,
                package_version="1.0.0",
                first_run_id=rc,
                parent=ParentLink(workflow_id=p, run_id=r1),
            ),
        ),
        _batch(
            p,
            f"{p}-c2",
            SignalReceived(**env(p, r1, 3, f"{p}-c2"), name="go", payload=_PAYLOAD),
        ),
        _batch(c, f"{c}-c2", WorkflowCompleted(**env(c, rc, 2, f"{c}-c2"), result=_PAYLOAD)),
        _batch(
            p,
            f"{p}-c3",
            ChildWorkflowCompleted(
                **env(p, r1, 4, f"{p}-c3"), child_workflow_id=c, result=_PAYLOAD
            ),
            WorkflowContinuedAsNew(
                **env(p, r1, 5, f"{p}-c3"), input=_PAYLOAD, workflow_type=None, next_run_id=r2
            ),
            WorkflowStarted(
                **env(p, r2, 6, f"{p}-c3"), **started, first_run_id=r1, previous_run_id=r1
            ),
        ),
        _batch(
            p,
            f"{p}-c4",
            SignalReceived(**env(p, r2, 7, f"{p}-c4"), name="more", payload=_PAYLOAD),
        ),
        _batch(p, f"{p}-c5", WorkflowCompleted(**env(p, r2, 8, f"{p}-c5"), result=_PAYLOAD)),
    ]


def interleaved(families: int, *, prefix: str = "wf", concurrent: int = 100) -> list[EventBatch]:
    """``families`` families, ``concurrent`` at a time interleaved step by step."""
    out: list[EventBatch] = []
    for start in range(0, families, concurrent):
        group = [family(i, prefix=prefix) for i in range(start, min(families, start + concurrent))]
        for step in range(len(group[0])):
            out.extend(records[step] for records in group)
    return out


class EventsWriter:
    """Produces encoded batches to the events topic in transactions, as the engine does."""

    def __init__(self, settings: Settings, *, transactional_id: str = "test-engine") -> None:
        self._settings = settings
        self.topic = f"{settings.topic_prefix}.events"
        self.codec = Codec()
        self._producer = AIOKafkaProducer(
            bootstrap_servers=settings.bootstrap_servers,
            transactional_id=f"{settings.topic_prefix}-{transactional_id}",
            acks="all",
            linger_ms=5,
        )

    async def __aenter__(self) -> EventsWriter:
        await ensure_topics(self._settings, Topics(self._settings.topic_prefix))
        await self._producer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._producer.stop()

    async def write(self, batches: Iterable[EventBatch], *, per_txn: int = 500) -> None:
        """Produce ``batches`` in order, ``per_txn`` records per committed transaction."""
        pending = list(batches)
        for start in range(0, len(pending), per_txn):
            async with self._producer.transaction():
                for batch in pending[start : start + per_txn]:
                    await self._send(encode_key(batch.workflow_id), self.codec.encode_batch(batch))

    async def write_raw(self, key: bytes, value: bytes) -> None:
        """One committed record of arbitrary bytes (a foreign or corrupt producer)."""
        async with self._producer.transaction():
            await self._send(key, value)

    async def write_aborted(self, batches: Sequence[EventBatch]) -> None:
        """Batches in a transaction that aborts: a ``read_committed`` reader never sees them."""
        await self._producer.begin_transaction()
        for batch in batches:
            await self._send(encode_key(batch.workflow_id), self.codec.encode_batch(batch))
        await self._producer.abort_transaction()

    async def _send(self, key: bytes, value: bytes) -> None:
        await self._producer.send(self.topic, value=value, key=key)


async def end_offsets(settings: Settings) -> dict[int, int]:
    """The committed end (LSO) of every events partition."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers, isolation_level="read_committed"
    )
    await consumer.start()
    try:
        tps = [
            TopicPartition(f"{settings.topic_prefix}.events", p) for p in range(settings.partitions)
        ]
        ends = await consumer.end_offsets(tps)
    finally:
        await consumer.stop()
    return {tp.partition: offset for tp, offset in ends.items()}


async def dump(engine: AsyncEngine) -> dict[str, list[tuple[Any, ...]]]:
    """Every projector table, every row, in primary-key order."""
    tables: dict[str, list[tuple[Any, ...]]] = {}
    async with engine.connect() as connection:
        for table in Base.metadata.sorted_tables:
            keys = ", ".join(f'"{c.name}"' for c in table.primary_key.columns)
            result = await connection.execute(text(f"SELECT * FROM {table.name} ORDER BY {keys}"))
            tables[table.name] = [tuple(row) for row in result]
    return tables


def sqlite_offsets(path: Path, topic: str) -> dict[int, int]:
    """Stored offsets read straight from a SQLite file a projector process is writing."""
    if not path.exists():
        return {}
    with sqlite3.connect(path, timeout=10) as connection:
        try:
            rows = connection.execute(
                "SELECT partition, next_offset FROM projector_offsets WHERE topic = ?", (topic,)
            ).fetchall()
        except sqlite3.OperationalError:  # not migrated yet
            return {}
    return {int(p): int(o) for p, o in rows}
