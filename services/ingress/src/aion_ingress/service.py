"""The ingress service: the user's topics to workflow commands, each record applied once.

Topology, in one place:

- one consumer group ``<prefix>.ingress.<name>`` on the configured source topics
  (read_committed: a record exists once its producer's transaction committed);
- on assignment of a source partition: start its producer (transactional id
  ``<prefix>.ingress.<name>.<topic>.<partition>``, so starting it fences a zombie owner and
  aborts its open transaction), read the group's committed offset (``aion_common.kafka.offsets``:
  a coordinator still loading is never "nothing committed") — with none, the partition's first
  offset (``start_from: earliest``) or its end (``latest``) — seek there, then take records;
- each partition's worker takes whatever has queued (up to ``max_batch``), maps every record
  with the pure :class:`~aion_ingress.mapping.Mapper`, and emits in one transaction the
  commands (to ``<prefix>.commands``, keyed by workflow id), the dead letters of records that
  do not map (to ``<prefix>.dead-letter``, with the reason) and the consumed offsets
  (``send_offsets_to_transaction``): a record's command exists exactly when its offset is
  committed, whatever is killed when;
- without broker transactions (``AION_TRANSACTIONS=off``, or ``auto`` on a broker lacking them)
  it runs at-least-once — commands and dead letters acknowledged, then the offset commit — and
  a record read again after a crash maps to the same command id, which the engine applies once;
- an emit that fails drops the partition's producer and acquires it again (re-read from the
  committed offset); a fenced producer means a newer owner has it.

The mapping itself (templates, formats, routes, unknown types) is ``mapping.py``; this module
only moves records.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import IllegalStateError, KafkaError, ProducerFenced
from aiokafka.structs import ConsumerRecord

from aion_common.codecs import Codec
from aion_common.domain import (
    InfrastructureError,
)
from aion_common.kafka.admin import ensure_topics
from aion_common.kafka.catalog import CatalogReader
from aion_common.kafka.consumer import stop_consumer
from aion_common.kafka.errors import infrastructure_error
from aion_common.kafka.link import RETRYING, BrokerLink
from aion_common.kafka.offsets import CommittedOffsets
from aion_common.kafka.options import client_options
from aion_common.kafka.probe import probe_capabilities
from aion_common.kafka.producer import stop_producer
from aion_common.kafka.topics import Topics
from aion_common.runtime.health import HealthServer
from aion_common.settings import Settings
from aion_ingress.config import IngressConfig
from aion_ingress.emit import Emitter, Out, missing_topics, outputs_for
from aion_ingress.mapping import KnownTypes, Mapper
from aion_ingress.metrics import IngressMetrics
from aion_ingress.options import IngressOptions

__all__ = ["IngressService"]

_log = logging.getLogger("aion.ingress")
_FETCH_TIMEOUT_MS = 100
_MAX_RECORDS = 2000
_QUEUE_HIGH = 4000
_QUEUE_LOW = 1000
_EMIT_TIMEOUT_S = 60.0
_STEP_TIMEOUT_S = 30.0
_REVOKE_WAIT_S = 10.0
_CLOSE_TIMEOUT_S = 5.0
_CATALOG_WAIT_S = 10.0
_BACKOFF_FIRST_S = 0.2
_BACKOFF_MAX_S = 5.0
_TOPIC_WAIT_S = 2.0


class _Owned:
    """One assigned source partition: its producer, its queue, its worker."""

    def __init__(self, tp: TopicPartition) -> None:
        self.tp = tp
        self.producer: AIOKafkaProducer | None = None
        self.queue: deque[ConsumerRecord[bytes, bytes]] = deque()
        self.wake = asyncio.Event()
        self.closing = False
        self.ready = False
        self.emitting = False
        self.paused = False
        self.next_offset = -1
        self.worker: asyncio.Task[None] | None = None


@dataclass(slots=True)
class _Status:
    started: bool = False
    stopping: bool = False
    waiting_for: str | None = None
    counts: dict[str, int] = field(default_factory=dict)


class IngressService(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped
    """Maps the records of ``config``'s topics to commands, exactly once."""

    def __init__(
        self,
        settings: Settings,
        config: IngressConfig,
        options: IngressOptions | None = None,
        *,
        codec: Codec | None = None,
    ) -> None:
        self.settings = settings
        self.config = config
        self.options = options or IngressOptions()
        self.metrics = IngressMetrics()
        self.group_id = f"{settings.topic_prefix}.ingress.{config.name}"
        static = self.options.static_membership
        if static is None:
            static = settings.instance_id != Settings().instance_id
        self.group_instance_id = f"{self.group_id}.{settings.instance_id}" if static else None
        self._codec = codec or Codec(payload_limit=settings.payload_limit_bytes)
        self._topics = Topics(settings.topic_prefix)
        self.known_types = KnownTypes(config.workflow_types)
        self.mapper = Mapper(
            config, payload_limit=settings.payload_limit_bytes, known_types=self.known_types
        )
        self._owned: dict[TopicPartition, _Owned] = {}
        self._lock = asyncio.Lock()
        self._consumer: AIOKafkaConsumer | None = None
        self._catalog: CatalogReader | None = None
        self._offsets = CommittedOffsets(settings, self.group_id)
        self._emitter = Emitter(settings, self.group_id, transactional=False)
        self._status = _Status()
        self._failure: BaseException | None = None
        self._stopped = False
        self._http: HealthServer | None = None
        self.link = BrokerLink(settings, name=f"ingress.{config.name}")
        """Whether the cluster answers (readiness, one log line each way); waits wake on it."""

    @property
    def transactional(self) -> bool:
        """Whether batches commit in Kafka transactions (else at-least-once)."""
        return self._emitter.transactional

    @property
    def http_port(self) -> int | None:
        """The health/metrics port, when the endpoint is enabled."""
        return None if self._http is None else self._http.port

    @property
    def owned_partitions(self) -> list[tuple[str, int]]:
        """Source partitions this instance owns now (acquired)."""
        return sorted((tp.topic, tp.partition) for tp, o in self._owned.items() if o.ready)

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the endpoint; wait for the broker and the source topics; join the group."""
        if self._status.started:
            return
        if self.options.port:
            self._http = HealthServer(
                self.health, self.metrics.registry, host=self.options.host, port=self.options.port
            )
            await self._http.start()
        await self.link.start()
        delay = _BACKOFF_FIRST_S
        while True:
            try:
                await self._connect()
                break
            except InfrastructureError as err:
                if not err.retriable or self._status.stopping:
                    raise
                self.link.suspect()
                if self._status.waiting_for != str(err) and self.link.up:  # else the link said
                    _log.warning("waiting for the broker", extra={"error": str(err)})
                self._status.waiting_for = str(err)
                await self.link.pause(delay)
                delay = min(_BACKOFF_MAX_S, delay * 2)
        self._status.waiting_for = None
        self._status.started = True
        _log.info(
            "ingress started",
            extra={
                "group": self.group_id,
                "topics": list(self.config.topics),
                "routes": len(self.config.routes),
                "mode": "transactional" if self.transactional else "at-least-once",
                "group_instance_id": self.group_instance_id,
                "port": self.http_port,
            },
        )

    async def _connect(self) -> None:
        await ensure_topics(self.settings, self._topics)
        await self._source_topics()
        if self._catalog is None:
            self._catalog = CatalogReader(self.settings, self.known_types, codec=self._codec)
            await self._catalog.start()
            if not await self._catalog.caught_up(_CATALOG_WAIT_S):
                _log.warning("the routes topic is not read yet; types are checked once it is")
        self._emitter = Emitter(
            self.settings, self.group_id, transactional=await self._choose_mode()
        )
        await self._offsets.start()
        static = (
            {} if self.group_instance_id is None else {"group_instance_id": self.group_instance_id}
        )
        session_ms = round(self.options.session_timeout * 1000)
        consumer = AIOKafkaConsumer(
            **client_options(self.settings),
            group_id=self.group_id,
            client_id=f"aion-ingress-{self.settings.instance_id}",
            enable_auto_commit=False,
            isolation_level="read_committed",
            auto_offset_reset=self.config.start_from,
            max_poll_records=_MAX_RECORDS,
            session_timeout_ms=session_ms,
            heartbeat_interval_ms=min(1_000, session_ms // 3),
            fetch_max_wait_ms=100,
            **static,
        )
        consumer.subscribe(list(self.config.topics), listener=self)
        try:
            await consumer.start()
        except KafkaError as err:
            await stop_consumer(consumer)
            raise infrastructure_error(err, "joining the ingress group") from err
        self._consumer = consumer

    async def _source_topics(self) -> None:
        """Every source topic must exist: created when the configuration says so, else waited
        for (a topic the user creates later is picked up; the wait is logged and shown)."""
        while True:
            missing = await missing_topics(self.settings, self.config.topics)
            if missing and self.config.create_topics:
                await ensure_topics(self.settings, missing, configs={})
                _log.info("created source topics", extra={"topics": missing})
                continue
            if not missing:
                return
            reason = (
                f"source topics {', '.join(missing)} do not exist; create them "
                f"(or set create_topics: true in {self.config.source})"
            )
            if self._status.waiting_for != reason:
                _log.warning(
                    "waiting for source topics", extra={"topics": missing, "reason": reason}
                )
            self._status.waiting_for = reason
            if self._status.stopping:
                raise InfrastructureError(reason, retriable=False)
            await asyncio.sleep(_TOPIC_WAIT_S)

    async def _choose_mode(self) -> bool:
        mode = self.settings.transactions
        if mode == "off":
            return False
        capabilities = await probe_capabilities(self.settings)
        if mode == "on" and not capabilities.transactional:
            raise InfrastructureError(
                "AION_TRANSACTIONS=on but the broker does not support transactions: "
                f"{capabilities.transactional_error}",
                retriable=False,
            )
        if not capabilities.transactional:
            _log.warning(
                "broker lacks transactions; running at-least-once (command ids are derived "
                "from each record, so the engine applies a re-read record once)",
                extra={"reason": capabilities.transactional_error},
            )
        return bool(capabilities.transactional)

    async def run(self) -> None:
        """Fetch and hand records to the partition workers until :meth:`stop`."""
        if not self._status.started:
            await self.start()
        consumer = self._consumer
        assert consumer is not None
        while not self._status.stopping:
            if self._failure is not None:
                raise self._failure
            try:
                fetched = await consumer.getmany(
                    timeout_ms=_FETCH_TIMEOUT_MS, max_records=_MAX_RECORDS
                )
            except KafkaError as err:
                self.link.suspect()
                _log.warning("fetching failed; retrying", extra={"error": repr(err), **RETRYING})
                await self.link.pause(0.5)
                continue
            for tp, records in fetched.items():
                owned = self._owned.get(tp)
                if owned is None and tp in consumer.assignment():
                    with contextlib.suppress(IllegalStateError):
                        consumer.seek(tp, records[0].offset)
                    continue
                if owned is None or owned.closing:
                    continue
                owned.queue.extend(records)
                owned.wake.set()
                if len(owned.queue) >= _QUEUE_HIGH and not owned.paused:
                    consumer.pause(tp)
                    owned.paused = True
            self._update_lag()
        if self._failure is not None:
            raise self._failure

    async def stop(self) -> None:
        """Finish batches in flight (bounded), leave the group, close producers; idempotent."""
        if self._stopped:
            return
        self._stopped = True
        self._status.stopping = True
        async with self._lock:
            await asyncio.gather(*(self._release(tp) for tp in list(self._owned)))
        if self._consumer is not None:
            await stop_consumer(self._consumer)
        if self._catalog is not None:
            await self._catalog.stop()
        await self._offsets.close()
        await self.link.stop()
        if self._http is not None:
            await self._http.stop()
        _log.info("ingress stopped", extra={"group": self.group_id})

    def health(self) -> Mapping[str, object]:
        """The ``/health`` body: live once started; ready while every source topic exists
        and the broker answers."""
        ok = not self._status.stopping and self._failure is None
        reason = self.link.not_ready_reason() or self._status.waiting_for
        if reason is None and not self._status.started:
            reason = "starting"
        return {
            "ok": ok,
            "ready": ok and reason is None,
            "reason": reason,
            "kafka": self.link.report(),
            "group": self.group_id,
            "mode": "transactional" if self.transactional else "at-least-once",
            "partitions": [f"{t}[{p}]" for t, p in self.owned_partitions],
            "counts": dict(self._status.counts),
        }

    # -- rebalance --------------------------------------------------------------------------

    async def on_partitions_revoked(self, revoked: Sequence[TopicPartition]) -> None:
        """Let each revoked partition's batch in flight finish (bounded), then drop it."""
        async with self._lock:
            await asyncio.gather(*(self._release(tp) for tp in revoked))

    async def on_partitions_assigned(self, assigned: Sequence[TopicPartition]) -> None:
        """Register each assigned partition; its worker acquires it (nothing awaited here)."""
        async with self._lock:
            for tp in assigned:
                if tp not in self._owned:
                    owned = _Owned(tp)
                    self._owned[tp] = owned
                    owned.worker = asyncio.create_task(
                        self._work(owned), name=f"ingress-{tp.topic}-{tp.partition}"
                    )
                    owned.worker.add_done_callback(self._worker_done)

    async def _release(self, tp: TopicPartition) -> None:
        owned = self._owned.pop(tp, None)
        if owned is None:
            return
        owned.closing = True
        owned.wake.set()
        worker = owned.worker
        if worker is not None and worker is not asyncio.current_task():
            await asyncio.wait([worker], timeout=_REVOKE_WAIT_S if owned.emitting else 0.5)
            if not worker.done():
                worker.cancel()
            await asyncio.gather(worker, return_exceptions=True)
        owned.queue.clear()
        await self._drop(owned)
        with contextlib.suppress(KeyError):  # never measured: nothing to remove
            self.metrics.lag.remove(tp.topic, str(tp.partition))
        _log.info("source partition released", extra={"topic": tp.topic, "partition": tp.partition})

    def _worker_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        error = task.exception()
        if error is not None and self._failure is None:
            _log.error("partition worker failed", exc_info=error, extra={"task": task.get_name()})
            self._failure = error

    # -- one partition --------------------------------------------------------------------

    async def _work(self, owned: _Owned) -> None:
        failures = 0
        while not owned.closing:
            try:
                await self._acquire(owned)
            except (KafkaError, InfrastructureError, TimeoutError) as err:
                failures += 1
                delay = min(_BACKOFF_MAX_S, _BACKOFF_FIRST_S * 2 ** (failures - 1))
                _log.warning(
                    "source partition acquisition failed; retrying",
                    extra={**_where(owned.tp), "retry_in_s": delay, "error": repr(err)},
                )
                await self._drop(owned)
                await _sleep_unless(owned, delay)
                continue
            failures = 0
            outcome = await self._serve(owned)
            if owned.closing:
                return
            await self._drop(owned)
            if outcome == "fenced":
                await _sleep_unless(owned, self.options.session_timeout)

    async def _acquire(self, owned: _Owned) -> None:
        """Fence any zombie owner, then rewind to the committed offset."""
        assert self._consumer is not None
        owned.producer = self._emitter.new_producer(owned.tp)
        await asyncio.wait_for(owned.producer.start(), _STEP_TIMEOUT_S)
        committed = await asyncio.wait_for(self._offsets.fetch(owned.tp), _STEP_TIMEOUT_S)
        if committed is None:
            # Nothing committed yet: begin where ``start_from`` says, as an explicit offset.
            # Records fetched while this partition was being acquired are dropped below, and
            # the consumer's own position is past them: without the seek they would be lost.
            committed = await asyncio.wait_for(self._start_offset(owned.tp), _STEP_TIMEOUT_S)
        if owned.closing:
            return
        owned.queue.clear()
        owned.next_offset = committed
        with contextlib.suppress(IllegalStateError):
            self._consumer.seek(owned.tp, committed)
        if owned.paused:
            self._resume(owned)
        owned.ready = True
        _log.info(
            "source partition acquired",
            extra={**_where(owned.tp), "committed_offset": committed},
        )

    async def _start_offset(self, tp: TopicPartition) -> int:
        """Where a partition with no committed offset begins: its first offset
        (``start_from: earliest``) or its last stable offset now (``latest``)."""
        assert self._consumer is not None
        try:
            if self.config.start_from == "earliest":
                found = await self._consumer.beginning_offsets([tp])
            else:
                found = await self._consumer.end_offsets([tp])
        except KafkaError as err:
            raise infrastructure_error(err, "reading a source partition's start") from err
        return int(found[tp])

    async def _drop(self, owned: _Owned) -> None:
        owned.ready = False
        producer, owned.producer = owned.producer, None
        if producer is not None:
            await stop_producer(producer, timeout_s=_CLOSE_TIMEOUT_S, what="producer")

    async def _serve(self, owned: _Owned) -> str:
        queue = owned.queue
        while True:
            if owned.closing:
                return "closing"
            if not queue:
                owned.wake.clear()
                await owned.wake.wait()
                continue
            batch = [queue.popleft() for _ in range(min(len(queue), self.options.max_batch))]
            batch = _past(batch, owned.next_offset)
            if batch:
                outcome = await self._process(owned, batch)
                if outcome is not None:
                    return outcome
            if owned.paused and len(queue) < _QUEUE_LOW and not owned.closing:
                self._resume(owned)

    def _resume(self, owned: _Owned) -> None:
        owned.paused = False
        assert self._consumer is not None
        with contextlib.suppress(IllegalStateError):
            self._consumer.resume(owned.tp)

    async def _process(
        self, owned: _Owned, records: list[ConsumerRecord[bytes, bytes]]
    ) -> str | None:
        began = time.perf_counter()
        outputs: list[Out] = []
        outcomes: dict[str, int] = {}
        commands: list[str] = []
        for record in records:
            out, outcome, kind = outputs_for(record, self.mapper, self._codec, self._topics)
            outputs.extend(out)
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
            if kind:
                commands.append(kind)
        last = records[-1]
        offsets = {owned.tp: last.offset + 1}
        owned.emitting = True
        try:
            await asyncio.wait_for(self._emit(owned, outputs, offsets), _EMIT_TIMEOUT_S)
        except ProducerFenced:
            _log.error("fenced by a newer owner; dropping the partition", extra=_where(owned.tp))
            self.metrics.failures.inc()
            return "fenced"
        except (KafkaError, TimeoutError, AssertionError) as err:
            # AssertionError: aiokafka's transaction state machine refusing a step for good
            _log.warning(
                "emit failed; re-reading from the committed offset",
                extra={**_where(owned.tp), "error": repr(err)},
            )
            self.metrics.failures.inc()
            return "failed"
        finally:
            owned.emitting = False
        owned.next_offset = last.offset + 1
        now = time.time()
        for outcome, count in outcomes.items():
            self.metrics.records.labels(owned.tp.topic, outcome).inc(count)
            self._status.counts[outcome] = self._status.counts.get(outcome, 0) + count
        for kind in commands:
            self.metrics.commands.labels(kind).inc()
        for record in records:
            self.metrics.delay_seconds.observe(max(0.0, now - record.timestamp / 1000))
        self.metrics.transactions.inc()
        self.metrics.batch_seconds.observe(time.perf_counter() - began)
        return None

    async def _emit(
        self, owned: _Owned, outputs: list[Out], offsets: dict[TopicPartition, int]
    ) -> None:
        producer, consumer = owned.producer, self._consumer
        assert producer is not None
        assert consumer is not None
        if self._emitter.transactional:
            await self._emitter.emit_transactional(producer, outputs, offsets)
        else:
            await self._emitter.emit_at_least_once(producer, consumer, outputs, offsets)

    # -- lag --------------------------------------------------------------------------------

    def _update_lag(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        for tp, owned in list(self._owned.items()):
            if not owned.ready:
                continue
            end = consumer.last_stable_offset(tp)
            if end is None or owned.next_offset < 0:
                continue
            self.metrics.lag.labels(tp.topic, str(tp.partition)).set(
                max(0, end - owned.next_offset)
            )


def _past(
    records: list[ConsumerRecord[bytes, bytes]], offset: int
) -> list[ConsumerRecord[bytes, bytes]]:
    """The records from ``offset`` on, each offset once and in order (a fetch that was in
    flight across a seek may hand some again)."""
    kept = []
    for record in records:
        if record.offset >= offset:
            kept.append(record)
            offset = record.offset + 1
    return kept


def _where(tp: TopicPartition) -> dict[str, object]:
    return {"topic": tp.topic, "partition": tp.partition}


async def _sleep_unless(owned: _Owned, delay: float) -> None:
    owned.wake.clear()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(_closed(owned), delay)


async def _closed(owned: _Owned) -> None:
    while not owned.closing:
        await owned.wake.wait()
        owned.wake.clear()
