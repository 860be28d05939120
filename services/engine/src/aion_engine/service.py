"""The engine service: partition-owned, exactly-once command processing on Kafka.

Topology, in one place:

- one consumer group ``<prefix>.engine`` on ``<prefix>.commands``;
- on assignment of partition *p*: start *p*'s producer (transactional id ``<prefix>.engine.p<p>``,
  so starting it fences any zombie owner and aborts its open transaction), read
  ``<prefix>.events`` *p* to its end (read_committed), rebuild every workflow there, re-arm its
  pending timers, and only then take commands from *p*;
- per fetched batch of *p*'s commands: decide each command with the pure core, then emit in
  one transaction the event batches (to events *p*), outgoing commands (children, close
  policies), refusals (replies topic), dead letters, and the consumed offsets;
- without broker transactions (``AION_TRANSACTIONS=off``, or ``auto`` on a broker that lacks
  them) it runs at-least-once: outgoing commands, then event batches, then the offset commit;
  re-delivery is harmless because command ids are deduplicated and derived ids are
  deterministic.

If emitting fails, the partition's in-memory state may be ahead of the log, so the partition
is rebuilt from the log and the consumer rewinds to its committed offset before going on.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError, ProducerFenced
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


@dataclass(slots=True)
class _Out:
    """One record to emit."""

    topic: str
    key: bytes | None
    value: bytes
    partition: int | None = None
    headers: tuple[tuple[str, bytes], ...] = ()


class _Owned:
    """What this instance holds for one owned partition."""

    def __init__(self, partition: int, core: EngineCore, producer: AIOKafkaProducer) -> None:
        self.partition = partition
        self.core = core
        self.producer = producer
        self.timers: TimerScheduler | None = None


class EngineService(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped
    """Runs workflows of the partitions this instance is assigned."""

    def __init__(
        self,
        settings: Settings,
        registry: WorkflowRegistry,
        *,
        codec: Codec | None = None,
        max_resident: int = 10_000,
    ) -> None:
        self._settings = settings
        self._registry = registry
        self._codec = codec or Codec(payload_limit=settings.payload_limit_bytes)
        self._topics = Topics(settings.topic_prefix)
        self._group = f"{settings.topic_prefix}.engine"
        self._max_resident = max_resident
        self._owned: dict[int, _Owned] = {}
        self._lock = asyncio.Lock()
        self._consumer: AIOKafkaConsumer | None = None
        self._timer_producer: AIOKafkaProducer | None = None
        self._transactional = False
        self._stopping = asyncio.Event()
        self._stopped = False

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
            fetched = await consumer.getmany(timeout_ms=_FETCH_TIMEOUT_MS, max_records=_MAX_RECORDS)
            if not fetched:
                continue
            async with self._lock:
                await asyncio.gather(
                    *(
                        self._process(owned, records)
                        for tp, records in fetched.items()
                        if (owned := self._owned.get(tp.partition)) is not None
                    )
                )

    async def stop(self) -> None:
        """Leave the group and close producers; idempotent, bounded."""
        if self._stopped:
            return
        self._stopped = True
        self._stopping.set()
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
        self._owned[partition] = owned
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
        owned = self._owned.pop(partition, None)
        if owned is None:
            return
        if owned.timers is not None:
            await owned.timers.stop()
        await owned.producer.stop()
        _log.info("partition released", extra={"partition": partition})

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
                linger_ms=2,
            )
        return AIOKafkaProducer(**options, enable_idempotence=True, linger_ms=2)

    async def _rebuild(self, owned: _Owned) -> int:
        count = 0
        topic = self._topics.events
        async for record in read_partition_to_end(self._settings, topic, owned.partition):
            try:
                batch = self._codec.decode_batch(
                    record.value, topic=topic, partition=record.partition, offset=record.offset
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
                self._codec.encode_command(command),
                key=encode_key(command.workflow_id),
            )
        except KafkaError as err:
            raise InfrastructureError(f"FireTimer send failed: {err}", retriable=True) from err

    # -- processing ------------------------------------------------------------------------

    async def _process(self, owned: _Owned, records: list[ConsumerRecord]) -> None:
        outputs: list[_Out] = []
        for record in records:
            outputs.extend(self._decide(owned, record))
        last = records[-1]
        tp = TopicPartition(last.topic, last.partition)
        try:
            if self._transactional:
                await self._emit_transactional(owned, outputs, {tp: last.offset + 1})
            else:
                await self._emit_at_least_once(owned, outputs, {tp: last.offset + 1})
        except ProducerFenced:
            _log.error("fenced by a newer owner; releasing", extra={"partition": owned.partition})
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
                self._codec.encode_command(outgoing),
            )
            for outgoing in decision.outgoing
        ]
        batch = decision.batch
        if batch is not None:
            out.append(
                _Out(
                    self._topics.events,
                    encode_key(batch.workflow_id),
                    self._codec.encode_batch(batch),
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
                    self._codec.encode_refusal(refusal),
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
            await asyncio.gather(*[await self._send(producer, out) for out in outputs])
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
            await asyncio.gather(*[await self._send(producer, out) for out in stage])
        assert self._consumer is not None
        await self._consumer.commit(offsets)

    @staticmethod
    async def _send(producer: AIOKafkaProducer, out: _Out) -> asyncio.Future[object]:
        future: asyncio.Future[object] = await producer.send(
            out.topic, out.value, key=out.key, partition=out.partition, headers=list(out.headers)
        )
        return future

    async def _recover(self, owned: _Owned, tp: TopicPartition) -> None:
        assert self._consumer is not None
        await self._release(owned.partition)
        await asyncio.sleep(0.2)
        await self._acquire(owned.partition)
        committed = await self._consumer.committed(tp)
        self._consumer.seek(tp, committed or 0)
