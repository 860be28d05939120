"""Acquiring a partition from its changelog: catch up the local store, build once, restore.

The order, for partition *p* (its producer already started, so any zombie owner is fenced and
its open transaction aborted):

1. **catch up** the local store from its checkpoint to the changelog's end (a *warm* restore
   reads the tail only; an empty store reads the compacted changelog: a *cold* restore,
   O(live keys));
2. **build** the changelog from ``aion.events`` if it was never built (no ``complete`` marker:
   a log written before changelogs existed, an interrupted build) or a record could not be read
   (the fallback for bad input): write the ``building`` marker, rebuild every workflow from
   the event log — moving closed ones to the store as it goes, so memory stays bounded by open
   work — write every workflow's records, then the ``complete`` marker naming where the build
   began (everything older is stale). Needs the event log from offset 0;
3. **restore** the open workflows from the store into a fresh core; closed ones are read back
   when a command needs them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from aion_common.codecs import Codec
from aion_common.domain import DecodeError, InfrastructureError
from aion_common.kafka.changelog import (
    MARKER_KEY,
    CatchUp,
    Change,
    ChangelogStore,
    Marker,
    catch_up,
)
from aion_common.kafka.consumer import read_partition_to_end, stop_consumer
from aion_common.kafka.errors import infrastructure_error
from aion_common.kafka.options import client_options, max_record_bytes
from aion_common.kafka.topics import Topics
from aion_common.settings import Settings
from aion_engine._changelog import EngineChangelog
from aion_engine.core import EngineCore

__all__ = ["Restored", "restore_partition", "write_changes"]

_log = logging.getLogger("aion.engine")
_BUILD_FLUSH_BATCHES = 20_000  # event batches between moves of closed workflows to the store
_TXN_RECORDS = 2_000  # changelog records per transaction while building
_PROGRESS_S = 5.0


@dataclass(frozen=True, slots=True)
class Restored:
    """A restored partition: its core and bookkeeping, and what the restore cost."""

    core: EngineCore
    changelog: EngineChangelog
    catch_up: CatchUp
    built_events: int | None
    open_workflows: int
    seconds: float


CoreFactory = Callable[[EngineChangelog, ChangelogStore], EngineCore]


@dataclass(frozen=True, slots=True)
class _Log:
    """Where a partition's changelog records go: its producer, topic partition and store."""

    producer: AIOKafkaProducer
    store: ChangelogStore
    topic: str
    partition: int


async def restore_partition(
    settings: Settings,
    codec: Codec,
    *,
    producer: AIOKafkaProducer,
    store: ChangelogStore,
    partition: int,
    new_core: CoreFactory,
    rebuild: bool = False,
) -> Restored:
    """Catch up, build if needed (or if ``rebuild``), restore; see the module docstring."""
    started = time.perf_counter()
    topics = Topics(settings.topic_prefix)
    caught = await catch_up(
        settings,
        topics.engine_state,
        partition,
        store,
        progress=_progress_logger("restoring the engine changelog", partition),
    )
    built: int | None = None
    marker = store.marker
    if rebuild or marker is None or marker.state != "complete":
        log = _Log(producer, store, topics.engine_state, partition)
        built = await _build(settings, codec, log, new_core, marker)
    changelog = EngineChangelog(codec, partition, writer=settings.instance_id)
    core = new_core(changelog, store)
    count = 0
    for state in changelog.restore(store):
        core.adopt(state)
        count += 1
    return Restored(core, changelog, caught, built, count, time.perf_counter() - started)


async def write_changes(
    producer: AIOKafkaProducer,
    topic: str,
    partition: int,
    changes: Sequence[Change],
) -> list[tuple[Change, int]]:
    """Send ``changes`` to ``topic[partition]`` inside the producer's open transaction; wait
    for the broker; return each change with its offset."""
    chunks: list[tuple[asyncio.Future[object], list[Change]]] = []
    batch = producer.create_batch()
    chunk: list[Change] = []
    for change in changes:
        appended = batch.append(
            key=change.key, value=change.value, timestamp=None, headers=change.headers()
        )
        if appended is None:  # full: send it, start the next one
            chunks.append((await producer.send_batch(batch, topic, partition=partition), chunk))
            batch, chunk = producer.create_batch(), []
            appended = batch.append(
                key=change.key, value=change.value, timestamp=None, headers=change.headers()
            )
            if appended is None:
                raise InfrastructureError(
                    f"a changelog record of {len(change.value or b'')} bytes does not fit an "
                    "empty record batch",
                    retriable=False,
                )
        chunk.append(change)
    if chunk:
        chunks.append((await producer.send_batch(batch, topic, partition=partition), chunk))
    written: list[tuple[Change, int]] = []
    for future, sent in chunks:
        metadata = await future
        base: int = metadata.offset  # type: ignore[attr-defined]  # aiokafka's RecordMetadata
        written.extend((change, base + index) for index, change in enumerate(sent))
    return written


async def _commit_changes(
    log: _Log, changes: Sequence[Change], marker: Marker | None = None
) -> int:
    """One transaction of changelog records (and maybe the marker), then the store; returns
    the marker's offset (or the last record's)."""
    records = list(changes)
    if marker is not None:
        records.append(Change(MARKER_KEY, marker.encode()))
    producer = log.producer
    await producer.begin_transaction()
    try:
        written = await write_changes(producer, log.topic, log.partition, records)
    except KafkaError:
        await producer.abort_transaction()
        raise
    await producer.commit_transaction()
    last = written[-1][1]
    if marker is None:
        log.store.write(written, last + 1)
    else:
        log.store.write(written[:-1], last + 1, marker=(marker, last))
    return last


async def _build(
    settings: Settings, codec: Codec, log: _Log, new_core: CoreFactory, marker: Marker | None
) -> int:
    """Build the partition's changelog from ``aion.events``; returns the events read."""
    topics = Topics(settings.topic_prefix)
    partition, store = log.partition, log.store
    beginning, end = await _event_bounds(settings, topics.events, partition)
    if beginning > 0:
        raise InfrastructureError(
            f"the engine changelog of partition {partition} must be built from "
            f"{topics.events}[{partition}], but the log starts at offset {beginning} (its "
            "retention deleted the beginning): restore the topic from a backup, or reset the "
            "partition's state by hand; the partition is not served until then",
            retriable=True,
        )
    reason = "never built" if marker is None else f"marker {marker.state}"
    _log.warning(
        "building the engine changelog from the event log",
        extra={"partition": partition, "reason": reason, "events_offsets": end},
    )
    store.reset()  # what it holds is what the build replaces (and may be what was unreadable)
    begun = await _commit_changes(log, [], marker=Marker("building", -1))
    changelog = EngineChangelog(codec, partition, writer=settings.instance_id)
    core = new_core(changelog, store)
    limit = max_record_bytes(settings) // 2
    dirty: dict[str, None] = {}
    batches = events = 0
    last_log = time.monotonic()
    async for record in read_partition_to_end(settings, topics.events, partition):
        try:
            batch = codec.decode_batch(
                record.value,
                topic=topics.events,
                partition=partition,
                offset=record.offset,
                trusted=True,
            )
        except DecodeError:
            _log.exception("undecodable event batch skipped while building the changelog")
            continue
        core.apply_batch(batch)
        dirty[batch.workflow_id] = None
        batches += 1
        events += len(batch.events)
        if batches % _BUILD_FLUSH_BATCHES == 0:
            await _flush(log, core, changelog, dirty, limit=limit, everything=False)
        if time.monotonic() - last_log > _PROGRESS_S:
            last_log = time.monotonic()
            _log.info(
                "building the engine changelog",
                extra={
                    "partition": partition,
                    "offset": record.offset,
                    "of": end,
                    "events": events,
                },
            )
    await _flush(log, core, changelog, dirty, limit=limit, everything=True)
    await _commit_changes(log, [], marker=Marker("complete", begun))
    _log.warning(
        "engine changelog built",
        extra={"partition": partition, "events": events, "batches": batches},
    )
    core.clear()
    return events


async def _flush(
    log: _Log,
    core: EngineCore,
    changelog: EngineChangelog,
    dirty: dict[str, None],
    *,
    limit: int,
    everything: bool,
) -> None:
    """Write the records of the workflows changed since the last flush — the closed ones only,
    unless ``everything`` — and move the closed ones out of memory."""
    written: list[str] = []
    changes: list[Change] = []
    for workflow_id in list(dirty):
        state = core.state_of(workflow_id)
        if state is None:  # purged: whatever an earlier flush wrote of it goes
            changes.extend(changelog.purged(workflow_id))
            written.append(workflow_id)
            del dirty[workflow_id]
            continue
        if state.open_run is not None and not everything:
            continue
        changes.extend(changelog.rewrite(state, limit_bytes=limit))
        written.append(workflow_id)
        del dirty[workflow_id]
        if len(changes) >= _TXN_RECORDS:
            await _commit_changes(log, changes)
            changes = []
    if changes:
        await _commit_changes(log, changes)
    core.release_closed(written)


async def _event_bounds(settings: Settings, topic: str, partition: int) -> tuple[int, int]:
    tp = TopicPartition(topic, partition)
    consumer = AIOKafkaConsumer(**client_options(settings), group_id=None, enable_auto_commit=False)
    try:
        await consumer.start()
        beginning: int = (await consumer.beginning_offsets([tp]))[tp]
        end: int = (await consumer.end_offsets([tp]))[tp]
    except KafkaError as err:
        raise infrastructure_error(err, f"reading the bounds of {topic}[{partition}]") from err
    finally:
        await stop_consumer(consumer)
    return beginning, end


def _progress_logger(what: str, partition: int) -> Callable[[int, int], None]:
    last = [time.monotonic()]

    def log(done: int, total: int) -> None:
        now = time.monotonic()
        if now - last[0] >= _PROGRESS_S or done >= total:
            last[0] = now
            _log.info(what, extra={"partition": partition, "read": done, "of": total})

    return log
