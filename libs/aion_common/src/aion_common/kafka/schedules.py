"""Schedules on Kafka: ``<prefix>.schedules`` and ``<prefix>.schedule-state``, read and written.

Both topics are compacted and keyed by schedule id, with the shared partition count, so a
schedule's definition, its trigger requests (written to its partition under
:func:`~aion_common.domain.trigger_key`) and its state share a partition number, which the
scheduler owns as a unit. :class:`ScheduleWriter` is the API's side (create, update, pause,
resume, delete, trigger); :class:`ScheduleView` tails both topics for the API's reads.

After the broker was lost the view reads both topics again from their beginnings (compaction
may have removed records it never saw), into tables of its own: the view it had is served
until the new one holds everything that was there when the reader reconnected, then the two
are swapped. A reader that answered an empty list while it reloaded made every schedule
vanish for a moment after an outage.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from aion_common.codecs import Codec
from aion_common.domain import (
    DecodeError,
    InfrastructureError,
    ScheduleRecord,
    ScheduleState,
    ScheduleTrigger,
    trigger_key,
)
from aion_common.kafka.admin import ensure_topics
from aion_common.kafka.consumer import stop_consumer
from aion_common.kafka.errors import infrastructure_error
from aion_common.kafka.link import raise_if_cancelling
from aion_common.kafka.options import client_options
from aion_common.kafka.producer import KeyedProducer
from aion_common.kafka.topics import Topics, partition_for
from aion_common.settings import Settings

__all__ = [
    "ScheduleEntry",
    "ScheduleView",
    "ScheduleWriter",
    "decode_schedule_key",
    "ensure_schedule_topics",
    "schedule_topic_configs",
]

_log = logging.getLogger("aion.schedules")
_RETRY_S = 1.0
_TRIGGER_MARK = "\x1ftrigger\x1f"


def schedule_topic_configs(topics: Topics) -> dict[str, dict[str, str]]:
    """Compacted, kept for ever: the live record per key is the schedule (or its state)."""
    config = {"cleanup.policy": "compact"}
    return {topics.schedules: dict(config), topics.schedule_state: dict(config)}


async def ensure_schedule_topics(settings: Settings, topics: Topics) -> dict[str, int]:
    """Create the schedules and schedule-state topics when missing; their partition counts."""
    return await ensure_topics(
        settings,
        [topics.schedules, topics.schedule_state],
        configs=schedule_topic_configs(topics),
    )


def decode_schedule_key(key: bytes | None) -> tuple[str, str | None]:
    """(schedule id, trigger request id or None) of a schedules-topic key."""
    text = (key or b"").decode("utf-8")
    schedule_id, mark, request_id = text.partition(_TRIGGER_MARK)
    return schedule_id, (request_id if mark else None)


class ScheduleWriter:
    """Writes definitions and trigger requests (the API's side of ``aion schedule``)."""

    def __init__(self, settings: Settings, *, codec: Codec) -> None:
        self._settings = settings
        self._codec = codec
        self._topics = Topics(settings.topic_prefix)
        self._producer = KeyedProducer(
            settings, idempotent=settings.transactions != "off", client_id="aion-schedules"
        )

    async def start(self) -> None:
        """Ensure the topics and connect."""
        await ensure_schedule_topics(self._settings, self._topics)
        await self._producer.start()

    async def stop(self) -> None:
        """Flush and disconnect; idempotent."""
        await self._producer.stop()

    async def put(self, record: ScheduleRecord) -> None:
        """Create or replace a schedule's definition."""
        await self._send(
            record.schedule_id, record.schedule_id, self._codec.encode_schedule(record)
        )

    async def delete(self, schedule_id: str) -> None:
        """Delete a schedule (a tombstone; the scheduler deletes its state)."""
        await self._send(schedule_id, schedule_id, None)

    async def trigger(self, trigger: ScheduleTrigger) -> None:
        """Ask the scheduler to fire ``trigger.schedule_id`` now."""
        key = trigger_key(trigger.schedule_id, trigger.request_id)
        await self._send(trigger.schedule_id, key, self._codec.encode_schedule(trigger))

    async def _send(self, schedule_id: str, key: str, value: bytes | None) -> None:
        partition = partition_for(schedule_id, self._settings.partitions)
        await self._producer.send_raw(
            self._topics.schedules, key.encode("utf-8"), value, partition=partition
        )


@dataclass(slots=True)
class ScheduleEntry:
    """What the API knows of one schedule."""

    record: ScheduleRecord
    state: ScheduleState | None = None
    pending_triggers: int = 0


@dataclass(slots=True)
class _Tables:
    records: dict[str, ScheduleRecord] = field(default_factory=dict)
    states: dict[str, ScheduleState] = field(default_factory=dict)
    triggers: dict[str, str] = field(default_factory=dict)  # trigger key -> schedule id


class ScheduleView:
    """Tails both schedule topics from their beginnings into memory, for the API's reads.

    Reads answer from the last complete view: nothing until the first read of the topics
    reached their ends (:attr:`loaded`), and after a failure the view from before it until
    the topics were read again (:attr:`current` is false meanwhile).
    """

    def __init__(self, settings: Settings, *, codec: Codec) -> None:
        self._settings = settings
        self._codec = codec
        self._topics = Topics(settings.topic_prefix)
        self._tables = _Tables()  # what reads answer from: the last complete view
        self._task: asyncio.Task[None] | None = None
        self._caught_up = asyncio.Event()
        self._reading = False  # the topics answered since the last failure
        self._current = False  # the served tables are being tailed (no failure since the load)
        self._stale_since: float | None = None  # wall time the served tables stopped being tailed
        self._loads = 0

    @property
    def loaded(self) -> bool:
        """The topics were read to their ends at least once: the reads mean something."""
        return self._caught_up.is_set()

    @property
    def loads(self) -> int:
        """How often the topics were read to their ends: once, and again after each failure."""
        return self._loads

    @property
    def current(self) -> bool:
        """The view is complete and tailed since: no read failed since it was loaded."""
        return self._current

    @property
    def stale_since(self) -> float | None:
        """When (epoch seconds) a loaded view stopped being tailed, while it is not current."""
        return None if self._current else self._stale_since

    def get(self, schedule_id: str) -> ScheduleEntry | None:
        """The schedule ``schedule_id`` as last read, or None."""
        record = self._tables.records.get(schedule_id)
        if record is None:
            return None
        pending = sum(1 for s in self._tables.triggers.values() if s == schedule_id)
        return ScheduleEntry(record, self._tables.states.get(schedule_id), pending)

    def all(self) -> list[ScheduleEntry]:
        """Every schedule, by id."""
        entries = (self.get(s) for s in sorted(self._tables.records))
        return [e for e in entries if e is not None]

    async def start(self) -> None:
        """Begin tailing in the background (retries while the broker is away)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="schedule-view")

    async def caught_up(self, timeout: float) -> bool:  # noqa: ASYNC109 - a bounded wait
        """Wait until what was there at start is read; False after ``timeout``."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._caught_up.wait(), timeout)
        return self._caught_up.is_set()

    async def stop(self) -> None:
        """Stop tailing; idempotent."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _run(self) -> None:
        failures = 0
        while True:
            try:
                await self._tail()
            except (KafkaError, OSError, InfrastructureError, asyncio.CancelledError) as err:
                # aiokafka can let a CancelledError of its own out after an outage (see
                # stop_consumer); only a cancellation of this task itself ends the reader.
                raise_if_cancelling()
                if self._current:
                    self._current, self._stale_since = False, time.time()
                if self._reading:
                    failures, self._reading = 0, False
                # one warning per outage, not one a second (the process's link logs loss/return)
                failures += 1
                level = logging.WARNING if failures == 1 else logging.DEBUG
                _log.log(
                    level, "reading the schedules failed; retrying", extra={"error": repr(err)}
                )
                await asyncio.sleep(_RETRY_S)

    async def _tail(self) -> None:
        counts = await ensure_schedule_topics(self._settings, self._topics)
        consumer = AIOKafkaConsumer(
            **client_options(self._settings),
            group_id=None,
            client_id=f"aion-{self._settings.instance_id}-schedules",
            enable_auto_commit=False,
            isolation_level="read_committed",
            auto_offset_reset="earliest",
        )
        try:
            await consumer.start()
            partitions = [
                TopicPartition(topic, p)
                for topic in (self._topics.schedules, self._topics.schedule_state)
                for p in range(counts[topic])
            ]
            consumer.assign(partitions)
            starts = await consumer.beginning_offsets(partitions)
            ends = await consumer.end_offsets(partitions)
            self._reading = True
            for tp in partitions:
                consumer.seek(tp, starts[tp])
            remaining = {tp for tp in partitions if ends[tp] > starts[tp]}
            # Built aside: reads keep the last complete view until this one is complete.
            loading: _Tables | None = _Tables()
            while True:
                if loading is not None and not remaining:
                    self._tables, loading = loading, None
                    self._current, self._stale_since = True, None
                    self._loads += 1
                    self._caught_up.set()
                tables = self._tables if loading is None else loading
                for tp, records in (await consumer.getmany(timeout_ms=500)).items():
                    for record in records:
                        self._apply(tables, tp.topic, record.key, record.value)
                    if records and records[-1].offset + 1 >= ends[tp]:
                        remaining.discard(tp)
                for tp in list(remaining):
                    if await consumer.position(tp) >= ends[tp]:
                        remaining.discard(tp)
        except KafkaError as err:
            raise infrastructure_error(err, "reading the schedules") from err
        finally:
            await stop_consumer(consumer)

    def _apply(self, tables: _Tables, topic: str, key: bytes | None, value: bytes | None) -> None:
        try:
            schedule_id, request_id = decode_schedule_key(key)
            if topic == self._topics.schedule_state:
                if value is None:
                    tables.states.pop(schedule_id, None)
                else:
                    tables.states[schedule_id] = self._codec.decode_schedule_state(value)
            elif request_id is not None:
                trigger = (key or b"").decode("utf-8")
                if value is None:
                    tables.triggers.pop(trigger, None)
                else:
                    tables.triggers[trigger] = schedule_id
            elif value is None:
                tables.records.pop(schedule_id, None)
            else:
                found = self._codec.decode_schedule(value)
                if isinstance(found, ScheduleRecord):
                    tables.records[schedule_id] = found
        except (DecodeError, UnicodeDecodeError) as err:
            _log.error("undecodable schedule record skipped", extra={"error": str(err)})
