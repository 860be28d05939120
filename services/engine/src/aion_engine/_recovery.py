"""Acquiring a partition from its changelogs: catch up, build once, restore, load the closed.

The order, for partition *p* (its producer already started, so any zombie owner is fenced and
its open transaction aborted):

1. **catch up** the local store of ``engine-state`` — open work only — from its checkpoint to
   the changelog's end (a *warm* restore reads the tail only; an empty store reads the
   compacted changelog: a *cold* restore, O(open workflows));
2. **build** both changelogs from ``aion.events`` if they were never built in this layout (no
   ``complete`` marker of version :data:`~aion_engine._changelog.FORMAT`: a log written before
   changelogs existed, one built before closed heads had their own changelog, an interrupted
   build) or a record could not be read (the fallback for bad input): write the ``building``
   markers, rebuild every workflow from the event log — moving closed ones to the store of
   ``engine-closed`` as it goes, so memory stays bounded by open work — write every
   workflow's records, then the ``complete`` markers naming where the build began
   (everything older is stale) with the position the store held, written again (the state
   built from the whole event log includes every transaction up to it). Needs the event log
   from offset 0;
3. **restore** the open workflows from the store into a fresh core, and read the partition's
   position (the next command offset its last transaction recorded): the partition serves
   from here;
4. **load the closed** (:func:`load_closed`, run in the background by the service): the
   store of ``engine-closed`` caught up to the end that changelog had at step 3, its writes
   in a worker thread. Until it is done the service holds back every command that needs a
   workflow not in memory (a closed one, or an id it does not know: a start must still see
   a closed run of the id), and keeps the records its own transactions write to
   ``engine-closed`` meanwhile to apply after it.
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
from aion_engine._changelog import (
    FORMAT,
    POSITION_KEY,
    ChangelogCorrupt,
    EngineChangelog,
    position_change,
    read_position,
)
from aion_engine.core import EngineCore

__all__ = ["ENGINE_STATE_STALE_MS", "Restored", "load_closed", "restore_partition", "write_changes"]

_log = logging.getLogger("aion.engine")
_BUILD_FLUSH_BATCHES = 20_000  # event batches between moves of closed workflows to the store
_TXN_RECORDS = 2_000  # changelog records per transaction while building
_PROGRESS_S = 5.0
ENGINE_STATE_STALE_MS = 30 * 60 * 1000
"""A local store of ``engine-state`` last in step longer ago than this restores cold (cheap:
open work): the topic keeps tombstones an hour (``aion_common.kafka.admin``)."""


@dataclass(frozen=True, slots=True)
class Restored:
    """A restored partition: its core and bookkeeping, what the restore cost, where the
    closed workflows' changelog ended when it was done (:func:`load_closed` reads to there),
    and the partition's position (None: its changelog has none yet)."""

    core: EngineCore
    changelog: EngineChangelog
    catch_up: CatchUp
    built_events: int | None
    open_workflows: int
    seconds: float
    closed_end: int
    position: int | None


CoreFactory = Callable[[EngineChangelog, ChangelogStore], EngineCore]
"""``new_core(changelog, closed_store)``: a core that reads closed workflows back from the
store of ``engine-closed``."""


@dataclass(frozen=True, slots=True)
class _Log:
    """Where a partition's changelog records go: its producer, and per changelog the topic
    and its local store."""

    producer: AIOKafkaProducer
    store: ChangelogStore
    topic: str
    closed_store: ChangelogStore
    closed_topic: str
    partition: int


async def restore_partition(
    settings: Settings,
    codec: Codec,
    *,
    producer: AIOKafkaProducer,
    store: ChangelogStore,
    closed_store: ChangelogStore,
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
    if rebuild or marker is None or marker.state != "complete" or marker.version != FORMAT:
        log = _Log(
            producer, store, topics.engine_state, closed_store, topics.engine_closed, partition
        )
        built = await _build(settings, codec, log, new_core, marker)
    _, closed_end = await _event_bounds(settings, topics.engine_closed, partition)
    position = read_position(store, partition)
    changelog = EngineChangelog(codec, partition, writer=settings.instance_id)
    core = new_core(changelog, closed_store)
    count = 0
    for state in changelog.restore(store):
        core.adopt(state)
        count += 1
    return Restored(
        core,
        changelog,
        caught,
        built,
        count,
        time.perf_counter() - started,
        closed_end,
        position,
    )


async def load_closed(
    settings: Settings, closed_store: ChangelogStore, partition: int, end: int
) -> CatchUp:
    """Catch the store of ``engine-closed`` up to ``end`` (what the changelog held when the
    partition was restored), writing to the store in a worker thread."""
    return await catch_up(
        settings,
        Topics(settings.topic_prefix).engine_closed,
        partition,
        closed_store,
        progress=_progress_logger("loading closed workflows", partition),
        end=end,
        in_thread=True,
    )


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
    log: _Log, changes: Sequence[Change], markers: tuple[Marker, Marker] | None = None
) -> tuple[int, int]:
    """One transaction of changelog records (and maybe the markers: engine-state's, then
    engine-closed's), then the stores; returns the markers' offsets (else -1, -1)."""
    state = [c for c in changes if not c.closed_log]
    closed = [c for c in changes if c.closed_log]
    if markers is not None:
        state.append(Change(MARKER_KEY, markers[0].encode()))
        closed.append(Change(MARKER_KEY, markers[1].encode()))
    producer = log.producer
    await producer.begin_transaction()
    try:
        written = await write_changes(producer, log.topic, log.partition, state)
        written_closed = await write_changes(producer, log.closed_topic, log.partition, closed)
    except KafkaError:
        await producer.abort_transaction()
        raise
    await producer.commit_transaction()
    offsets = (-1, -1)
    for store, done, index in ((log.store, written, 0), (log.closed_store, written_closed, 1)):
        if not done:
            continue
        last = done[-1][1]
        if markers is None:
            store.write(done, last + 1)
        else:
            store.write(done[:-1], last + 1, marker=(markers[index], last))
            offsets = (last, offsets[1]) if index == 0 else (offsets[0], last)
    return offsets


async def _build(
    settings: Settings, codec: Codec, log: _Log, new_core: CoreFactory, marker: Marker | None
) -> int:
    """Build the partition's changelogs from ``aion.events``; returns the events read."""
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
    if marker is None:
        reason = "never built"
    elif marker.state == "complete" and marker.version != FORMAT:
        reason = f"built in layout {marker.version}, now {FORMAT}"
    else:
        reason = f"marker {marker.state}"
    _log.warning(
        "building the engine changelog from the event log",
        extra={"partition": partition, "reason": reason, "events_offsets": end},
    )
    # What engine-state holds from before (an older layout's closed heads, an interrupted
    # build's records): the keys this build does not write again are tombstoned after it, or
    # compaction would keep them for ever and every cold restore would read them again.
    before = {
        key for key, _value, _offset in store.scan_all() if key not in (MARKER_KEY, POSITION_KEY)
    }
    kept = _position_kept(store, partition)
    # what they hold is what the build replaces (and may be what was unreadable)
    store.reset()
    log.closed_store.reset()
    building = Marker("building", -1, FORMAT)
    begun = await _commit_changes(log, [], markers=(building, building))
    changelog = EngineChangelog(codec, partition, writer=settings.instance_id)
    core = new_core(changelog, log.closed_store)
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
    stale = await _tombstone_stale(log, before)
    await _commit_changes(  # the position above `begun`: the complete marker keeps it
        log,
        kept,
        markers=(Marker("complete", begun[0], FORMAT), Marker("complete", begun[1], FORMAT)),
    )
    _log.warning(
        "engine changelog built",
        extra={
            "partition": partition,
            "events": events,
            "batches": batches,
            "stale_keys_tombstoned": stale,
        },
    )
    core.clear()
    return events


def _position_kept(store: ChangelogStore, partition: int) -> list[Change]:
    """The store's position record, to write again when the build completes (none if it has
    none, or an unreadable one: the acquisition then starts from the group's offset)."""
    try:
        position = read_position(store, partition)
    except ChangelogCorrupt as err:
        _log.error("the partition's position is unreadable; dropped", extra={"error": str(err)})
        return []
    return [] if position is None else [position_change(position)]


async def _tombstone_stale(log: _Log, before: set[bytes]) -> int:
    """Tombstone in engine-state the keys of ``before`` the build did not write again; return
    how many."""
    live = {key for key, _value, _offset in log.store.scan_all()}
    stale = [Change(key, None) for key in sorted(before - live)]
    for start in range(0, len(stale), _TXN_RECORDS):
        await _commit_changes(log, stale[start : start + _TXN_RECORDS])
    return len(stale)


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
