"""The engine service: partition-owned, exactly-once command processing on Kafka.

Topology, in one place:

- one consumer group ``<prefix>.engine`` on ``<prefix>.commands``;
- on assignment of partition *p*: start *p*'s producer (transactional id ``<prefix>.engine.p<p>``,
  so starting it fences any zombie owner and aborts its open transaction), read
  ``<prefix>.events`` *p* to its end (read_committed), rebuild every workflow there, re-arm its
  pending timers, and only then take commands from *p*;
- one fetch loop hands each partition's records to that partition's worker task, which takes
  whatever has queued (up to ``_MAX_BATCH``), decides each command with the pure core, then
  emits in one transaction the event batches (to events *p*), outgoing commands (children,
  close policies), refusals (replies topic), dead letters, and the consumed offsets. Workers
  run concurrently, so one partition's commit overlaps another's decoding and deciding, and
  the fetch loop keeps fetching while commits are in flight; a worker's batch is whatever
  arrived during its previous commit (one record when idle, many under load). A partition
  whose queue passes ``_QUEUE_HIGH`` is paused at the consumer until its worker catches up;
- without broker transactions (``AION_TRANSACTIONS=off``, or ``auto`` on a broker that lacks
  them) it runs at-least-once: outgoing commands, then event batches, then the offset commit;
  re-delivery is harmless because command ids are deduplicated and derived ids are
  deterministic.

If emitting fails, the partition's in-memory state may be ahead of the log, so the partition
is rebuilt from the log and the consumer rewinds to its committed offset before going on.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import aiokafka.producer.sender as _aiokafka_sender
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import IllegalStateError, KafkaError, ProducerFenced
from aiokafka.structs import ConsumerRecord

from aion_common.codecs import Codec, decode_key, encode_key
from aion_common.domain import Command, DecodeError, FireTimer, InfrastructureError
from aion_common.kafka.admin import ensure_topics
from aion_common.kafka.consumer import read_partition_to_end
from aion_common.kafka.dead_letter import dead_letter_headers
from aion_common.kafka.options import client_options, max_record_bytes
from aion_common.kafka.probe import probe_capabilities
from aion_common.kafka.topics import Topics
from aion_common.settings import Settings
from aion_engine.core import EngineCore
from aion_engine.decision import Decision
from aion_engine.registry import WorkflowRegistry
from aion_engine.timers_service import TimerScheduler

__all__ = ["EngineService"]

_log = logging.getLogger("aion.engine")
_FETCH_TIMEOUT_MS = 50
_MAX_RECORDS = 2000
_MAX_BATCH = 1000  # commands per transaction, at most
_QUEUE_HIGH = 4000  # pause a partition's fetching above this many queued records ...
_QUEUE_LOW = 1000  # ... and resume it below this
_GC_YOUNG_THRESHOLD = 50_000

# A transactional producer's first AddPartitionsToTxn after a commit is refused with
# CONCURRENT_TRANSACTIONS until the coordinator has written the commit markers (KAFKA-5477),
# which on a local broker takes a millisecond or two; aiokafka then sleeps a fixed 20 ms, which
# capped every partition at ~40 transactions/s and added 20 ms to every command's latency
# (measured: begin+send 22 ms -> 4 ms, one transaction cycle 25 ms -> 6-8 ms). Retrying every
# 2 ms costs one small request per retry. Process-wide, so only the engine process sets it.
_aiokafka_sender.BACKOFF_OVERRIDE = 0.002


@dataclass(slots=True)
class _Out:
    """One record to emit."""

    topic: str
    key: bytes | None
    value: bytes
    partition: int | None = None
    headers: tuple[tuple[str, bytes], ...] = ()


class _Owned:
    """What this instance holds for one owned partition, and its worker's queue."""

    def __init__(self, partition: int, core: EngineCore, producer: AIOKafkaProducer) -> None:
        self.partition = partition
        self.core = core
        self.producer = producer
        self.timers: TimerScheduler | None = None
        self.queue: deque[ConsumerRecord] = deque()
        self.wake = asyncio.Event()
        self.closing = False
        self.paused = False
        self.next_offset = -1  # records below it were processed already
        self.worker: asyncio.Task[None] | None = None


class _FreezeAfterFullCollection:
    """A gc callback: when a full collection ends, freeze everything it left.

    At that moment every tracked object is reachable (the collection just freed the rest), so
    freezing moves only live, overwhelmingly long-lived workflow state out of later full
    collections, which then scan just what was allocated since: their pause stops growing
    with the number of workflows held. Cycles that frozen objects form later are not
    collected; the engine's state and executors hold none (failures' tracebacks form cycles
    among objects created and dropped within one command, long after any freeze).
    """

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "stop" and info.get("generation") == 2:  # noqa: PLR2004 - the oldest
            gc.freeze()


class EngineService(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped
    """Runs workflows of the partitions this instance is assigned."""

    def __init__(
        self,
        settings: Settings,
        registry: WorkflowRegistry,
        *,
        codec: Codec | None = None,
        max_resident: int = 10_000,
        tune_gc: bool = True,
    ) -> None:
        self._settings = settings
        self._registry = registry
        self._codec = codec or Codec(payload_limit=settings.payload_limit_bytes)
        self._topics = Topics(settings.topic_prefix)
        self._group = f"{settings.topic_prefix}.engine"
        self._max_resident = max_resident
        self._tune_gc = tune_gc
        self._freezer = _FreezeAfterFullCollection()
        self._owned: dict[int, _Owned] = {}
        self._lock = asyncio.Lock()
        self._consumer: AIOKafkaConsumer | None = None
        self._timer_producer: AIOKafkaProducer | None = None
        self._transactional = False
        self._stopping = asyncio.Event()
        self._stopped = False
        self._failure: BaseException | None = None

    @property
    def transactional(self) -> bool:
        """Whether batches are emitted in Kafka transactions (else at-least-once)."""
        return self._transactional

    @property
    def owned_partitions(self) -> list[int]:
        """Partitions this instance currently owns."""
        return sorted(self._owned)

    async def start(self) -> None:
        """Check topics, choose the delivery mode, join the group."""
        if self._tune_gc:
            # The engine holds every workflow of its partitions in memory: with CPython's
            # default young-generation threshold (700 allocations) a busy engine collects
            # hundreds of times a second and its full collections, scanning the whole state,
            # stalled every partition for 60-150 ms (bench p99). Collect young objects every
            # 50,000 allocations instead; rebuilt state is frozen out of full collections on
            # acquisition (_acquire), and so is what survives any full collection
            # (_FreezeAfterFullCollection).
            gc.set_threshold(_GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
            if self._freezer not in gc.callbacks:
                gc.callbacks.append(self._freezer)
        await ensure_topics(self._settings, self._topics)
        self._transactional = await self._choose_mode()
        self._timer_producer = AIOKafkaProducer(
            **client_options(self._settings), enable_idempotence=True, linger_ms=1
        )
        await self._timer_producer.start()
        self._consumer = AIOKafkaConsumer(
            **client_options(self._settings),
            group_id=self._group,
            enable_auto_commit=False,
            isolation_level="read_committed",
            auto_offset_reset="earliest",
            max_poll_records=_MAX_RECORDS,
            session_timeout_ms=10_000,
            heartbeat_interval_ms=1_000,
            rebalance_timeout_ms=30_000,
        )
        self._consumer.subscribe([self._topics.commands], listener=self)
        await self._consumer.start()
        _log.info(
            "engine started",
            extra={
                "instance": self._settings.instance_id,
                "mode": "transactional" if self._transactional else "at-least-once",
                "workflow_types": sorted(self._registry.types()),
            },
        )

    async def _choose_mode(self) -> bool:
        mode = self._settings.transactions
        if mode == "off":
            return False
        capabilities = await probe_capabilities(self._settings)
        if mode == "on" and not capabilities.transactional:
            raise InfrastructureError(
                "AION_TRANSACTIONS=on but the broker does not support transactions: "
                f"{capabilities.transactional_error}",
                retriable=False,
            )
        if not capabilities.transactional:
            _log.warning(
                "broker lacks transactions; running at-least-once with deduplication",
                extra={"reason": capabilities.transactional_error},
            )
        return bool(capabilities.transactional)

    async def run(self) -> None:
        """Process commands until :meth:`stop`."""
        if self._consumer is None:
            await self.start()
        consumer = self._consumer
        assert consumer is not None
        while not self._stopping.is_set():
            if self._failure is not None:
                raise self._failure
            fetched = await consumer.getmany(timeout_ms=_FETCH_TIMEOUT_MS, max_records=_MAX_RECORDS)
            for tp, records in fetched.items():
                owned = self._owned.get(tp.partition)
                if owned is None:
                    # The consumer fetches as soon as a partition is assigned, before the
                    # rebalance listener has rebuilt it: wait for the listener to finish.
                    async with self._lock:
                        owned = self._owned.get(tp.partition)
                if owned is None or owned.closing:
                    continue  # not ours (any more): the next owner reads them from the offsets
                owned.queue.extend(records)
                owned.wake.set()
                if len(owned.queue) >= _QUEUE_HIGH and not owned.paused:
                    consumer.pause(tp)
                    owned.paused = True
        if self._failure is not None:
            raise self._failure

    async def stop(self) -> None:
        """Leave the group and close producers; idempotent, bounded."""
        if self._stopped:
            return
        self._stopped = True
        self._stopping.set()
        if self._freezer in gc.callbacks:
            gc.callbacks.remove(self._freezer)
        async with self._lock:
            for partition in list(self._owned):
                await self._release(partition)
        if self._consumer is not None:
            await self._consumer.stop()
        if self._timer_producer is not None:
            await self._timer_producer.stop()
        _log.info("engine stopped", extra={"instance": self._settings.instance_id})

    # -- rebalance -------------------------------------------------------------------------

    async def on_partitions_revoked(self, revoked: Sequence[TopicPartition]) -> None:
        """Drop the state of revoked partitions once their in-flight batch is done."""
        async with self._lock:
            for tp in revoked:
                await self._release(tp.partition)

    async def on_partitions_assigned(self, assigned: Sequence[TopicPartition]) -> None:
        """Fence, rebuild and re-arm timers for each newly assigned partition."""
        async with self._lock:
            for tp in assigned:
                if tp.partition not in self._owned:
                    await self._acquire(tp.partition)

    async def _acquire(self, partition: int) -> None:
        started = time.perf_counter()
        producer = self._new_producer(partition)
        await producer.start()
        owned = _Owned(partition, self._new_core(partition), producer)
        events = await self._rebuild(owned)
        owned.timers = TimerScheduler(partition, self._send_timer)
        for request in owned.core.pending_timers():
            owned.timers.arm(request.fire_at, request.command)
        owned.timers.start()
        if self._tune_gc and events:
            # The rebuilt workflows are long-lived: keep them out of every later full
            # collection (acyclic state is still freed by reference counting on release).
            gc.collect()
            gc.freeze()
        self._owned[partition] = owned
        owned.worker = asyncio.create_task(self._work(owned), name=f"engine-p{partition}")
        owned.worker.add_done_callback(self._worker_done)
        _log.info(
            "partition acquired",
            extra={
                "partition": partition,
                "events_replayed": events,
                "timers": owned.timers.pending,
                "rebuild_s": round(time.perf_counter() - started, 3),
            },
        )

    async def _release(self, partition: int) -> None:
        """Stop ``partition``'s worker after its in-flight batch, then its timers and producer.

        Queued records it had not started are dropped: they are past the committed offset, so
        whoever owns the partition next reads them again.
        """
        owned = self._owned.pop(partition, None)
        if owned is None:
            return
        owned.closing = True
        owned.wake.set()
        worker = owned.worker
        if worker is not None and worker is not asyncio.current_task():
            await asyncio.gather(worker, return_exceptions=True)
        owned.queue.clear()
        if owned.timers is not None:
            await owned.timers.stop()
        await owned.producer.stop()
        _log.info("partition released", extra={"partition": partition})

    def _worker_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        error = task.exception()
        if error is not None and self._failure is None:
            # A bug or a broken partition: make run() raise, so the process exits and its
            # supervisor restarts it (state is rebuilt from the log).
            _log.error("partition worker failed", exc_info=error, extra={"task": task.get_name()})
            self._failure = error

    def _new_core(self, partition: int) -> EngineCore:
        return EngineCore(
            self._registry, writer=self._settings.instance_id, max_resident=self._max_resident
        )

    def _new_producer(self, partition: int) -> AIOKafkaProducer:
        options = {
            **client_options(self._settings),
            "max_request_size": max_record_bytes(self._settings),
        }
        if self._transactional:
            return AIOKafkaProducer(
                **options,
                transactional_id=f"{self._group}.p{partition}",
                enable_idempotence=True,
                linger_ms=0,  # a transaction sends everything at once; lingering only delays
            )
        return AIOKafkaProducer(**options, enable_idempotence=True, linger_ms=0)

    async def _rebuild(self, owned: _Owned) -> int:
        count = 0
        topic = self._topics.events
        async for record in read_partition_to_end(self._settings, topic, owned.partition):
            try:
                # trusted: the engine alone writes this log, and checked every value it wrote
                batch = self._codec.decode_batch(
                    record.value,
                    topic=topic,
                    partition=record.partition,
                    offset=record.offset,
                    trusted=True,
                )
            except DecodeError:
                # Only the engine writes events; an undecodable one was quarantined already
                # by the projector/watcher. The engine must not guess at it.
                _log.exception("undecodable event batch skipped during rebuild")
                continue
            owned.core.apply_batch(batch)
            count += len(batch.events)
        return count

    async def _send_timer(self, command: FireTimer) -> None:
        producer = self._timer_producer
        assert producer is not None
        try:
            await producer.send_and_wait(
                self._topics.commands,
                self._codec.encode_command(command, trusted=True),
                key=encode_key(command.workflow_id),
            )
        except KafkaError as err:
            raise InfrastructureError(f"FireTimer send failed: {err}", retriable=True) from err

    # -- processing ------------------------------------------------------------------------

    async def _work(self, owned: _Owned) -> None:
        """One partition's worker: process whatever has queued, one transaction at a time."""
        queue = owned.queue
        while True:
            if owned.closing:
                return
            if not queue:
                owned.wake.clear()
                await owned.wake.wait()
                continue
            records = [queue.popleft() for _ in range(min(len(queue), _MAX_BATCH))]
            records = [r for r in records if r.offset >= owned.next_offset]
            if records:
                await self._process(owned, records)
            if owned.paused and len(queue) < _QUEUE_LOW and not owned.closing:
                self._resume(owned)

    def _resume(self, owned: _Owned) -> None:
        owned.paused = False
        assert self._consumer is not None
        with contextlib.suppress(IllegalStateError):  # revoked meanwhile
            self._consumer.resume(TopicPartition(self._topics.commands, owned.partition))

    async def _process(self, owned: _Owned, records: list[ConsumerRecord]) -> None:
        outputs: list[_Out] = []
        for record in records:
            outputs.extend(self._decide(owned, record))
        last = records[-1]
        owned.next_offset = last.offset + 1
        tp = TopicPartition(last.topic, last.partition)
        try:
            if self._transactional:
                await self._emit_transactional(owned, outputs, {tp: last.offset + 1})
            else:
                await self._emit_at_least_once(owned, outputs, {tp: last.offset + 1})
        except ProducerFenced:
            _log.error("fenced by a newer owner; releasing", extra={"partition": owned.partition})
            if self._owned.get(owned.partition) is owned:
                await self._release(owned.partition)
        except KafkaError as err:
            _log.warning(
                "emit failed; rebuilding partition from the log",
                extra={"partition": owned.partition, "error": repr(err)},
            )
            await self._recover(owned, tp)

    def _decide(self, owned: _Owned, record: ConsumerRecord) -> list[_Out]:
        where = {"topic": record.topic, "partition": record.partition, "offset": record.offset}
        try:
            workflow_id = decode_key(record.key, **where)
            command = self._codec.decode_command(record.value, **where)
        except DecodeError as err:
            _log.warning("undecodable command dead-lettered", extra={**where, "error": str(err)})
            return [self._dead_letter(record, err.problem, err)]
        if command.workflow_id != workflow_id:
            reason = f"record key {workflow_id!r} is not the command's workflow id"
            return [self._dead_letter(record, reason, None)]
        # The record's timestamp, not the wall clock, is the command's time: processing the same
        # record again (at-least-once, after a crash) then yields byte-identical output.
        now = datetime.fromtimestamp(record.timestamp / 1000, UTC)
        decision = owned.core.handle(command, now=now)
        return self._outputs(owned, record, command, decision)

    def _outputs(
        self, owned: _Owned, record: ConsumerRecord, command: Command, decision: Decision
    ) -> list[_Out]:
        out = [
            _Out(
                self._topics.commands,
                encode_key(outgoing.workflow_id),
                self._codec.encode_command(outgoing, trusted=True),
            )
            for outgoing in decision.outgoing
        ]
        batch = decision.batch
        if batch is not None:
            out.append(
                _Out(
                    self._topics.events,
                    encode_key(batch.workflow_id),
                    self._codec.encode_batch(batch, trusted=True),
                    partition=owned.partition,
                )
            )
        refusal = decision.refusal
        if refusal is not None:
            _log.info(
                "command refused",
                extra={
                    "workflow_id": command.workflow_id,
                    "command_id": command.command_id,
                    "code": refusal.code.value,
                    "reason": refusal.reason,
                },
            )
            out.append(
                _Out(
                    self._topics.replies,
                    encode_key(refusal.workflow_id),
                    self._codec.encode_refusal(refusal, trusted=True),
                    partition=owned.partition,
                )
            )
        reason = decision.dead_letter_reason
        if reason is not None:
            _log.error(
                "command refused as an invariant violation",
                extra={"workflow_id": command.workflow_id, "command_id": command.command_id},
            )
            out.append(self._dead_letter(record, reason, None))
        if owned.timers is not None:
            for request in decision.timers:
                owned.timers.arm(request.fire_at, request.command)
        return out

    def _dead_letter(
        self, record: ConsumerRecord, reason: str, error: BaseException | None
    ) -> _Out:
        # Not through DeadLetterPublisher: the dead letter must go out in the same transaction
        # as the skipped command's offset, on the partition's own producer.
        error_name: BaseException | str = "InvariantViolation" if error is None else error
        headers = dead_letter_headers(record, reason, error_name, at=datetime.now(UTC))
        return _Out(
            self._topics.dead_letter,
            record.key,
            record.value or b"",
            partition=record.partition,
            headers=tuple(headers),
        )

    async def _emit_transactional(
        self, owned: _Owned, outputs: list[_Out], offsets: dict[TopicPartition, int]
    ) -> None:
        producer = owned.producer
        await producer.begin_transaction()
        try:
            await asyncio.gather(*await self._send_all(producer, outputs))
            await producer.send_offsets_to_transaction(offsets, self._group)
        except KafkaError:
            await producer.abort_transaction()
            raise
        await producer.commit_transaction()

    async def _emit_at_least_once(
        self, owned: _Owned, outputs: list[_Out], offsets: dict[TopicPartition, int]
    ) -> None:
        producer = owned.producer
        # Outgoing commands first, then events, then refusals and dead letters, each acknowledged
        # before the next: a crash between them leaves only duplicates that command-id
        # deduplication absorbs, never an event whose outgoing commands were lost.
        stages = (
            [o for o in outputs if o.topic == self._topics.commands],
            [o for o in outputs if o.topic == self._topics.events],
            [o for o in outputs if o.topic not in (self._topics.commands, self._topics.events)],
        )
        for stage in stages:
            if not stage:
                continue
            await asyncio.gather(*await self._send_all(producer, stage))
        assert self._consumer is not None
        await self._consumer.commit(offsets)

    @staticmethod
    async def _send_all(
        producer: AIOKafkaProducer, outputs: list[_Out]
    ) -> list[asyncio.Future[object]]:
        """Queue ``outputs`` in order; the futures complete when the broker has them.

        Records for a fixed partition (events, replies, dead letters: the owned partition) go
        as whole record batches, which costs a fraction of ``send`` per record; records
        partitioned by key (outgoing commands) go through ``send``.
        """
        futures: list[asyncio.Future[object]] = []
        by_partition: dict[tuple[str, int], list[_Out]] = {}
        for out in outputs:
            if out.partition is None:
                futures.append(await producer.send(out.topic, out.value, key=out.key))
            else:
                by_partition.setdefault((out.topic, out.partition), []).append(out)
        for (topic, partition), outs in by_partition.items():
            batch = producer.create_batch()
            for out in outs:
                appended = batch.append(
                    key=out.key, value=out.value, timestamp=None, headers=list(out.headers)
                )
                if appended is None:  # full: send it, start the next one
                    futures.append(await producer.send_batch(batch, topic, partition=partition))
                    batch = producer.create_batch()
                    appended = batch.append(
                        key=out.key, value=out.value, timestamp=None, headers=list(out.headers)
                    )
                    if appended is None:
                        raise InfrastructureError(
                            f"a {len(out.value)}-byte record does not fit an empty record batch",
                            retriable=False,
                        )
            futures.append(await producer.send_batch(batch, topic, partition=partition))
        return futures

    async def _recover(self, owned: _Owned, tp: TopicPartition) -> None:
        """Runs in the partition's worker: rebuild the partition in place, rewind the consumer."""
        assert self._consumer is not None
        if owned.timers is not None:
            await owned.timers.stop()
        await owned.producer.stop()
        owned.queue.clear()
        await asyncio.sleep(0.2)
        if owned.closing:
            return  # revoked meanwhile; _release finishes the job
        started = time.perf_counter()
        owned.producer = self._new_producer(owned.partition)
        await owned.producer.start()
        owned.core = self._new_core(owned.partition)
        events = await self._rebuild(owned)
        owned.timers = TimerScheduler(owned.partition, self._send_timer)
        for request in owned.core.pending_timers():
            owned.timers.arm(request.fire_at, request.command)
        owned.timers.start()
        committed = await self._consumer.committed(tp)
        owned.queue.clear()
        owned.next_offset = committed or 0
        with contextlib.suppress(IllegalStateError):  # revoked meanwhile
            self._consumer.seek(tp, committed or 0)
        _log.info(
            "partition rebuilt after a failed emit",
            extra={
                "partition": owned.partition,
                "events_replayed": events,
                "rebuild_s": round(time.perf_counter() - started, 3),
            },
        )
