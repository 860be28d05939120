"""The scheduler service: starts each schedule's runs when they are due, each fire once.

Topology, in one place:

- one consumer group ``<prefix>.scheduler`` on ``<prefix>.schedules``, used only to share the
  partitions out (nothing is committed: an owner always reads its partition from the start);
- on assignment of partition *p*: start *p*'s producer (transactional id
  ``<prefix>.scheduler.p<p>``: starting it fences a zombie owner and aborts its open
  transaction), read ``<prefix>.schedule-state`` *p* to its end (read_committed), then read
  the definitions and triggers of *p* from the beginning; fire nothing until both are read;
- one task per partition sleeps until its earliest due fire (or a record arrives), decides
  each due schedule with the pure :class:`~aion_scheduler.book.Book`, and emits in one
  transaction the ``StartWorkflow`` commands (ids from schedule and nominal fire time), the
  schedules' new states and the deletion of the triggers it handled. A crash before the commit
  leaves the state as it was: the same fires are decided again, under the same ids, and the
  engine applies each once (and refuses any later duplicate: ``REJECT_DUPLICATE``);
- overlap policies other than ``ALLOW_ALL`` watch the runs they start (``watch.py``).

Without broker transactions it runs at-least-once: commands acknowledged first, then states.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import IllegalStateError, KafkaError, ProducerFenced
from aiokafka.structs import ConsumerRecord

from aion_common.codecs import Codec, encode_key
from aion_common.domain import (
    DecodeError,
    InfrastructureError,
    ScheduledRun,
    ScheduleRecord,
    trigger_key,
)
from aion_common.kafka.admin import ensure_topics
from aion_common.kafka.consumer import read_partition_to_end, stop_consumer
from aion_common.kafka.errors import infrastructure_error
from aion_common.kafka.link import RETRYING, BrokerLink
from aion_common.kafka.options import client_options
from aion_common.kafka.probe import probe_capabilities
from aion_common.kafka.producer import stop_producer
from aion_common.kafka.schedules import decode_schedule_key, ensure_schedule_topics
from aion_common.kafka.topics import Topics
from aion_common.runtime.health import HealthServer
from aion_common.settings import Settings
from aion_scheduler.book import Book, Step
from aion_scheduler.metrics import SchedulerMetrics
from aion_scheduler.options import SchedulerOptions
from aion_scheduler.watch import RunWatch

__all__ = ["SchedulerService"]

_log = logging.getLogger("aion.scheduler")
_FETCH_TIMEOUT_MS = 200
_STEP_TIMEOUT_S = 30.0
_EMIT_TIMEOUT_S = 60.0
_CLOSE_TIMEOUT_S = 5.0
_REVOKE_WAIT_S = 10.0
_BACKOFF_FIRST_S = 0.2
_BACKOFF_MAX_S = 5.0
_IDLE_S = 60.0  # nothing due: look again at least this often


@dataclass(frozen=True, slots=True)
class _Out:
    topic: str
    key: bytes
    value: bytes | None
    partition: int | None = None


async def _queue(producer: AIOKafkaProducer, out: _Out) -> asyncio.Future[object]:
    future: asyncio.Future[object] = await producer.send(
        out.topic, out.value, key=out.key, partition=out.partition
    )
    return future


def _key(text: str) -> bytes:
    return text.encode("utf-8")


class _Owned:
    """One owned partition of the schedules topic."""

    def __init__(self, partition: int) -> None:
        self.partition = partition
        self.book = Book()
        self.producer: AIOKafkaProducer | None = None
        self.wake = asyncio.Event()
        self.closing = False
        self.ready = False  # the consumer was rewound: records may be applied
        self.read_to = 0  # definitions and triggers read below this offset
        self.end_at_acquire = 0
        self.emitting = False
        self.worker: asyncio.Task[None] | None = None

    @property
    def caught_up(self) -> bool:
        """Whether every definition present at acquisition has been read."""
        return self.ready and self.read_to >= self.end_at_acquire


class SchedulerService(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped
    """Starts the runs of the schedules of the partitions this instance is assigned."""

    def __init__(
        self,
        settings: Settings,
        options: SchedulerOptions | None = None,
        *,
        codec: Codec | None = None,
    ) -> None:
        self.settings = settings
        self.options = options or SchedulerOptions()
        self.metrics = SchedulerMetrics()
        self._codec = codec or Codec(payload_limit=settings.payload_limit_bytes)
        self._topics = Topics(settings.topic_prefix)
        self.group_id = f"{settings.topic_prefix}.scheduler"
        static = self.options.static_membership
        if static is None:
            static = settings.instance_id != Settings().instance_id
        self.group_instance_id = f"{self.group_id}.{settings.instance_id}" if static else None
        self._watch = RunWatch(settings, self._codec)
        self._owned: dict[int, _Owned] = {}
        self._lock = asyncio.Lock()
        self._consumer: AIOKafkaConsumer | None = None
        self._transactional = False
        self._started = False
        self._stopping = False
        self._stopped = False
        self._waiting_for: str | None = None
        self._failure: BaseException | None = None
        self._http: HealthServer | None = None
        self.link = BrokerLink(settings, name="scheduler")
        """Whether the cluster answers (readiness, one log line each way); waits wake on it."""

    @property
    def owned_partitions(self) -> list[int]:
        """Partitions acquired and read."""
        return sorted(p for p, o in self._owned.items() if o.caught_up)

    @property
    def http_port(self) -> int | None:
        """The health/metrics port, when the endpoint is enabled."""
        return None if self._http is None else self._http.port

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the endpoint, wait for the broker, create the topics, join the group."""
        if self._started:
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
                if not err.retriable or self._stopping:
                    raise
                self.link.suspect()
                if self._waiting_for is None and self.link.up:  # else the link said it once
                    _log.warning("waiting for the broker", extra={"error": str(err)})
                self._waiting_for = str(err)
                await self.link.pause(delay)
                delay = min(_BACKOFF_MAX_S, delay * 2)
        self._waiting_for = None
        self._started = True
        _log.info(
            "scheduler started",
            extra={
                "group": self.group_id,
                "mode": "transactional" if self._transactional else "at-least-once",
                "group_instance_id": self.group_instance_id,
                "port": self.http_port,
            },
        )

    async def _connect(self) -> None:
        await ensure_topics(self.settings, self._topics)
        await ensure_schedule_topics(self.settings, self._topics)
        self._transactional = await self._choose_mode()
        instance = self.group_instance_id
        session_ms = round(self.options.session_timeout * 1000)
        consumer = AIOKafkaConsumer(
            **client_options(self.settings),
            group_id=self.group_id,
            client_id=f"aion-scheduler-{self.settings.instance_id}",
            enable_auto_commit=False,
            isolation_level="read_committed",
            auto_offset_reset="earliest",
            session_timeout_ms=session_ms,
            heartbeat_interval_ms=min(1_000, session_ms // 3),
            fetch_max_wait_ms=100,
            **({} if instance is None else {"group_instance_id": instance}),
        )
        consumer.subscribe([self._topics.schedules], listener=self)
        try:
            await consumer.start()
        except KafkaError as err:
            await stop_consumer(consumer)
            raise infrastructure_error(err, "joining the scheduler group") from err
        self._consumer = consumer

    async def _choose_mode(self) -> bool:
        if self.settings.transactions == "off":
            return False
        capabilities = await probe_capabilities(self.settings)
        if self.settings.transactions == "on" and not capabilities.transactional:
            raise InfrastructureError(
                "AION_TRANSACTIONS=on but the broker does not support transactions: "
                f"{capabilities.transactional_error}",
                retriable=False,
            )
        return bool(capabilities.transactional)

    async def run(self) -> None:
        """Read definitions and triggers into the owning partition's book until stopped."""
        if not self._started:
            await self.start()
        consumer = self._consumer
        assert consumer is not None
        while not self._stopping:
            if self._failure is not None:
                raise self._failure
            try:
                fetched = await consumer.getmany(timeout_ms=_FETCH_TIMEOUT_MS)
            except KafkaError as err:
                self.link.suspect()
                _log.warning(
                    "fetching schedules failed; retrying", extra={"error": repr(err), **RETRYING}
                )
                await self.link.pause(0.5)
                continue
            for tp, records in fetched.items():
                owned = self._owned.get(tp.partition)
                if owned is None or not owned.ready or owned.closing:
                    continue  # the acquisition rewinds and reads them again
                for record in records:
                    self._apply(owned.book, record)
                owned.read_to = records[-1].offset + 1
                owned.wake.set()
            self.metrics.schedules.set(sum(len(o.book.definitions) for o in self._owned.values()))
        if self._failure is not None:
            raise self._failure

    async def stop(self) -> None:
        """Finish emits in flight (bounded), leave the group; idempotent."""
        if self._stopped:
            return
        self._stopped = True
        self._stopping = True
        async with self._lock:
            await asyncio.gather(*(self._release(p) for p in list(self._owned)))
        if self._consumer is not None:
            await stop_consumer(self._consumer)
        await self.link.stop()
        if self._http is not None:
            await self._http.stop()
        _log.info("scheduler stopped", extra={"group": self.group_id})

    def health(self) -> Mapping[str, object]:
        """The ``/health`` body."""
        ok = not self._stopping and self._failure is None
        reason = self.link.not_ready_reason() or self._waiting_for
        if reason is None and not self._started:
            reason = "starting"
        return {
            "ok": ok,
            "ready": ok and reason is None,
            "reason": reason,
            "kafka": self.link.report(),
            "partitions": self.owned_partitions,
            "schedules": sum(len(o.book.definitions) for o in self._owned.values()),
        }

    def _apply(self, book: Book, record: ConsumerRecord[bytes, bytes]) -> None:
        try:
            schedule_id, request_id = decode_schedule_key(record.key)
            if request_id is not None:
                key = trigger_key(schedule_id, request_id)
                trigger = (
                    None if record.value is None else self._codec.decode_schedule(record.value)
                )
                book.trigger(key, None if isinstance(trigger, ScheduleRecord) else trigger)
                return
            found = None if record.value is None else self._codec.decode_schedule(record.value)
            book.definition(schedule_id, found if isinstance(found, ScheduleRecord) else None)
        except (DecodeError, UnicodeDecodeError) as err:
            # only the API writes this topic, through checks; a bad record is skipped, loudly
            _log.error(
                "undecodable schedule record skipped",
                extra={"partition": record.partition, "offset": record.offset, "error": str(err)},
            )

    # -- rebalance --------------------------------------------------------------------------

    async def on_partitions_revoked(self, revoked: Sequence[TopicPartition]) -> None:
        """Drop revoked partitions once their emit in flight is done (bounded)."""
        async with self._lock:
            await asyncio.gather(*(self._release(tp.partition) for tp in revoked))

    async def on_partitions_assigned(self, assigned: Sequence[TopicPartition]) -> None:
        """Register each assigned partition; its worker acquires it."""
        async with self._lock:
            for tp in assigned:
                if tp.partition not in self._owned:
                    owned = _Owned(tp.partition)
                    self._owned[tp.partition] = owned
                    owned.worker = asyncio.create_task(
                        self._work(owned), name=f"scheduler-p{tp.partition}"
                    )
                    owned.worker.add_done_callback(self._worker_done)

    async def _release(self, partition: int) -> None:
        owned = self._owned.pop(partition, None)
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
        await self._drop(owned)
        _log.info("schedule partition released", extra={"partition": partition})

    def _worker_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        error = task.exception()
        if error is not None and self._failure is None:
            _log.error("partition worker failed", exc_info=error, extra={"task": task.get_name()})
            self._failure = error

    # -- one partition ----------------------------------------------------------------------

    async def _work(self, owned: _Owned) -> None:
        failures = 0
        while not owned.closing:
            try:
                await self._acquire(owned)
            except (KafkaError, InfrastructureError, TimeoutError) as err:
                failures += 1
                delay = min(_BACKOFF_MAX_S, _BACKOFF_FIRST_S * 2 ** (failures - 1))
                _log.warning(
                    "schedule partition acquisition failed; retrying",
                    extra={"partition": owned.partition, "retry_in_s": delay, "error": repr(err)},
                )
                await self._drop(owned)
                await _sleep(owned, delay)
                continue
            failures = 0
            outcome = await self._serve(owned)
            if owned.closing:
                return
            await self._drop(owned)
            if outcome == "fenced":
                await _sleep(owned, self.options.session_timeout)

    async def _acquire(self, owned: _Owned) -> None:
        """Fence, read the states, rewind the definitions."""
        assert self._consumer is not None
        owned.producer = self._new_producer(owned.partition)
        await asyncio.wait_for(owned.producer.start(), _STEP_TIMEOUT_S)
        book = Book()
        async for record in read_partition_to_end(
            self.settings, self._topics.schedule_state, owned.partition
        ):
            schedule_id, _ = decode_schedule_key(record.key)
            try:
                state = (
                    None
                    if record.value is None
                    else self._codec.decode_schedule_state(record.value)
                )
            except DecodeError as err:
                _log.error("undecodable schedule state skipped", extra={"error": str(err)})
                continue
            book.state(schedule_id, state)
        tp = TopicPartition(self._topics.schedules, owned.partition)
        begin = (await self._consumer.beginning_offsets([tp]))[tp]
        end = (await self._consumer.end_offsets([tp]))[tp]
        if owned.closing:
            return
        # No await from here to `ready`: fetched records of the old position must not slip in.
        owned.book = book
        owned.end_at_acquire = end
        owned.read_to = begin
        with contextlib.suppress(IllegalStateError):
            self._consumer.seek(tp, begin)
        owned.ready = True
        _log.info(
            "schedule partition acquired",
            extra={"partition": owned.partition, "states": len(book.states), "end": end},
        )

    async def _drop(self, owned: _Owned) -> None:
        owned.ready = False
        producer, owned.producer = owned.producer, None
        if producer is not None:
            await stop_producer(producer, timeout_s=_CLOSE_TIMEOUT_S, what="producer")

    async def _serve(self, owned: _Owned) -> str:
        """Fire what is due, then sleep until the next fire or a new record."""
        while not owned.closing:
            if not owned.caught_up:
                await _wait(owned, 1.0)
                continue
            now = datetime.now(UTC)
            due, wake = self._due(owned.book, now)
            if due:
                try:
                    steps = await self._decide(owned.book, due, now)
                except (KafkaError, InfrastructureError, TimeoutError) as err:
                    _log.warning("checking runs failed; retrying", extra={"error": repr(err)})
                    await _wait(owned, 1.0)
                    continue
                outcome = await self._emit(owned, steps)
                if outcome is not None:
                    return outcome
                continue
            delay = _IDLE_S if wake is None else max(0.0, (wake - now).total_seconds())
            await _wait(owned, min(delay, _IDLE_S))
        return "closing"

    def _due(self, book: Book, now: datetime) -> tuple[list[str], datetime | None]:
        due: list[str] = []
        earliest: datetime | None = None
        for schedule_id in book.schedule_ids():
            at = book.wake_at(schedule_id, now)
            if at is None:
                continue
            if at <= now:
                due.append(schedule_id)
            elif earliest is None or at < earliest:
                earliest = at
        if book.orphans():
            due.extend(book.orphans())
        return due, earliest

    async def _decide(self, book: Book, due: list[str], now: datetime) -> list[Step]:
        steps: list[Step] = []
        for schedule_id in due:
            if schedule_id not in book.definitions:
                continue  # an orphan state: deleted in _emit
            open_runs: set[str] = set()
            state = book.states.get(schedule_id)
            if state is not None and state.running:
                open_runs, moved = await self._watch.open_runs(state.running)
                book.state(schedule_id, replace(state, running=tuple(moved)))
            step = book.step(schedule_id, now, open_runs)
            if step is not None:
                steps.append(step)
        watched = [f.command.workflow_id for s in steps for f in s.fires if f.watched]
        offsets = await self._watch.offsets_for(watched)
        return [
            replace(
                s,
                state=replace(
                    s.state,
                    running=s.state.running
                    + tuple(
                        ScheduledRun(
                            workflow_id=f.command.workflow_id,
                            command_id=f.command.command_id,
                            nominal_at=f.nominal,
                            events_offset=offsets[f.command.workflow_id][0],
                            replies_offset=offsets[f.command.workflow_id][1],
                        )
                        for f in s.fires
                        if f.watched
                    ),
                ),
            )
            for s in steps
        ]

    async def _emit(self, owned: _Owned, steps: list[Step]) -> str | None:
        """Send the starts, states and trigger deletions of ``steps`` (one transaction)."""
        p = owned.partition
        starts = [
            _Out(
                self._topics.commands,
                encode_key(f.command.workflow_id),
                self._codec.encode_command(f.command),
            )
            for step in steps
            for f in step.fires
        ]
        states = [
            _Out(self._topics.schedule_state, _key(s.state.schedule_id), self._encode(s), p)
            for s in steps
        ]
        states += [
            _Out(self._topics.schedule_state, _key(orphan), None, p)
            for orphan in owned.book.orphans()
        ]
        states += [
            _Out(self._topics.schedules, _key(key), None, p)
            for step in steps
            for key in step.triggers_done
        ]
        began = time.perf_counter()
        owned.emitting = True
        try:
            await asyncio.wait_for(self._send(owned, starts, states), _EMIT_TIMEOUT_S)
        except ProducerFenced:
            _log.error("fenced by a newer owner", extra={"partition": p})
            return "fenced"
        except (KafkaError, TimeoutError, AssertionError) as err:
            _log.warning(
                "emit failed; acquiring the partition again",
                extra={"partition": p, "error": repr(err)},
            )
            return "failed"
        finally:
            owned.emitting = False
        self._applied(owned.book, steps)
        self.metrics.emit_seconds.observe(time.perf_counter() - began)
        return None

    def _encode(self, step: Step) -> bytes:
        return self._codec.encode_schedule(step.state)

    def _applied(self, book: Book, steps: list[Step]) -> None:
        for step in steps:
            book.state(step.state.schedule_id, step.state)
            for key in step.triggers_done:
                book.trigger(key, None)
            for fire in step.fires:
                _log.info(
                    "schedule fired",
                    extra={
                        "schedule": step.state.schedule_id,
                        "workflow_id": fire.command.workflow_id,
                        "command_id": fire.command.command_id,
                        "nominal": fire.nominal.isoformat(),
                    },
                )
                self.metrics.fires.labels("started").inc()
                delay = (datetime.now(UTC) - fire.nominal).total_seconds()
                self.metrics.delay.observe(max(0.0, delay))
        for orphan in book.orphans():
            book.state(orphan, None)

    async def _send(self, owned: _Owned, first: list[_Out], then: list[_Out]) -> None:
        producer = owned.producer
        assert producer is not None
        if self._transactional:
            await producer.begin_transaction()
            try:
                futures = [await _queue(producer, o) for o in [*first, *then]]
                await asyncio.gather(*futures)
            except KafkaError:
                with contextlib.suppress(AssertionError, KafkaError):
                    await producer.abort_transaction()
                raise
            await producer.commit_transaction()
            return
        for stage in (first, then):  # starts acknowledged before the state that records them
            await asyncio.gather(*[await _queue(producer, o) for o in stage])

    def _new_producer(self, partition: int) -> AIOKafkaProducer:
        options = {**client_options(self.settings), "client_id": "aion-scheduler"}
        if self._transactional:
            return AIOKafkaProducer(
                **options,
                transactional_id=f"{self.group_id}.p{partition}",
                enable_idempotence=True,
                linger_ms=0,
            )
        return AIOKafkaProducer(**options, enable_idempotence=True, linger_ms=0)


async def _wait(owned: _Owned, seconds: float) -> None:
    """Sleep ``seconds`` or until a record arrives or the partition is revoked."""
    owned.wake.clear()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(owned.wake.wait(), seconds)


async def _sleep(owned: _Owned, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not owned.closing and time.monotonic() < deadline:
        await _wait(owned, deadline - time.monotonic())
