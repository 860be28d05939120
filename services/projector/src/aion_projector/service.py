"""The projector's consume loop: ``aion.events`` (and the refusals on ``aion.replies``) into
the SQL views, exactly once.

Kafka's committed offsets are *not* the source of truth. The offsets that count are the ones
:class:`~aion_projector.projection.Projection` writes in the same SQL transaction as the view
changes; on every partition assignment (and after a transient database error) the consumer
seeks to them. So a crash at any point either leaves a transaction committed with its offsets,
or rolled back without them, and the records are fetched again from exactly where the views
stand. Offsets are also committed to Kafka *after* the SQL commit, only so that the usual lag
tooling (``kafka-consumer-groups.sh``) shows the projector's progress — at most once every
``_KAFKA_COMMIT_INTERVAL_S`` (and on stop), since each commit is a broker write that a light
load would otherwise pay per event batch (measured: about 1,100 offset commits in 12 s of
sequential single-child workflows on the ``aion dev`` stack, on the two cores the engine needs).

Per fetch (up to ``max_records`` records, one SQL transaction):

- a record that does not decode is published to the dead-letter topic, and its offset is
  advanced in SQL with the rest, so it never stops the consumer. It is dead-lettered before
  the SQL commit: a crash in between dead-letters it twice rather than never;
- a record that decodes but cannot be applied (a poison pill: it breaks an invariant of the
  views, or the database refuses it with an integrity or data error) fails the whole fetch's
  transaction; the fetch is then applied again one record per transaction, and the record
  that still fails is dead-lettered with the reason and its offset stored, so the projector
  moves on. Only *data* errors do that (see :func:`is_poison`): a transient error never
  dead-letters anything;
- the stored offset per partition is the consumer's *position* after the fetch, which also
  steps over transaction markers and aborted records, so a caught-up projector stores exactly
  the partition's end (lag 0). When a fetch comes back empty, positions that moved past
  markers alone are stored the same way;
- a transient database error (connection lost, database locked, pool timeout) backs off and
  rewinds to the stored offsets, since a commit whose answer was lost may or may not have
  happened; any other error propagates and the process restarts.

On an SQLite file the fetch's transaction runs on a synchronous connection in one worker-thread
hop (:mod:`aion_projector.one_hop`, decision 58) rather than through aiosqlite's hop per driver
call; a fetch holding a purge, the record-by-record retry and the offsets reads keep the async
engine. The rules above hold the same on either path.

Refusals (``CommandRefused`` on the replies topic) are consumed by the same consumer and
stored in the same transactions, offsets included, in ``command_refusals`` (query answers,
the topic's other records, are for whoever asked: they are stepped over, never stored); so
are the records of the dead-letter topic, in ``dead_letters`` (see
:mod:`aion_projector.dead_letters`: any record there gives a row, and one that still cannot be
stored is skipped with an error logged, never dead-lettered again, which would loop).

Broker outages (issue 19) are waited out, never a reason to exit: :attr:`ProjectorService.link`
probes the cluster; ``start()`` retries ensuring the topics and starting the clients with
capped, jittered backoff; in the loop a retriable Kafka error (a fetch, a dead letter that
could not be published) backs off until the cluster answers, then rewinds to the stored
offsets like a transient database error does (a fetch abandoned halfway is fetched again).
The backoff ends as soon as the link sees the cluster back, and its attempts are counted
afresh after a return (:class:`~aion_common.kafka.link.Attempts`), so the first error after
an outage does not wait the capped backoff the outage ran up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from aion_common.codecs import Codec
from aion_common.domain import (
    CommandRefused,
    DecodeError,
    EventBatch,
    InfrastructureError,
    InvariantViolation,
    QueryAnswer,
    WorkflowPurged,
)
from aion_common.kafka import (
    DeadLetterPublisher,
    KeyedProducer,
    Record,
    Topics,
    client_options,
    ensure_topics,
    infrastructure_error,
)
from aion_common.kafka.consumer import stop_consumer
from aion_common.kafka.link import RETRYING, Attempts, Backoff, BrokerLink
from aion_common.settings import Settings
from aion_projector.archive import Archive
from aion_projector.changes import ApplyStats
from aion_projector.database import connect, migrate, reset, session_factory
from aion_projector.dead_letters import record_dead_letters
from aion_projector.one_hop import OneHopTransactions, one_hop_url
from aion_projector.projection import (
    Delivery,
    Projection,
    RefusalDelivery,
    offsets_upsert,
    record_refusals,
)
from aion_projector.queries import stored_offsets

__all__ = ["ProjectorService", "ProjectorStatus", "is_poison", "is_transient"]

_log = logging.getLogger("aion.projector")

_FETCH_TIMEOUT_MS = 500
_KAFKA_COMMIT_INTERVAL_S = 1.0  # offsets for lag tooling only: SQL holds the ones that count
_BACKOFF_FIRST_S = 0.5
_BACKOFF_MAX_S = 30.0
_MAX_TRANSIENT_FAILURES = 10
_KAFKA_BACKOFF = Backoff(initial=0.2, maximum=5.0)
_TRANSIENT_MESSAGES = ("database is locked", "database is busy")
_REASON_MAX = 2000

_Decoded = tuple[Record, EventBatch | CommandRefused | QueryAnswer | None]
"""A record and its value decoded; None for a dead letter, which is stored undecoded."""


@dataclass(slots=True)
class ProjectorStatus:
    """What the loop has done since start, and how far behind the log end the views are."""

    applied: int = 0
    duplicates: int = 0
    held: int = 0
    dead_lettered: int = 0
    poison: int = 0
    """Records dead-lettered because they decoded but could not be applied."""
    refusals: int = 0
    purged: int = 0
    """Workflows purged (retention ran out): archived if an archive is set, rows deleted."""
    retries: int = 0
    """Transient database errors backed off from."""
    records: int = 0
    """Records consumed from the events and replies topics (dead letters are counted apart)."""
    kafka_commits: int = 0
    """Offset commits sent to Kafka (for lag tooling; at most one a second, and one on stop)."""
    next_offsets: dict[int, int] = field(default_factory=dict)
    """Per assigned events partition: the next offset the views need (as stored in SQL)."""
    reply_offsets: dict[int, int] = field(default_factory=dict)
    """Per assigned replies partition: the next offset (as stored in SQL)."""
    dead_letter_offsets: dict[int, int] = field(default_factory=dict)
    """Per assigned dead-letter partition: the next offset (as stored in SQL)."""
    dead_letters_stored: int = 0
    """Dead-letter records consumed into the ``dead_letters`` view (re-deliveries included)."""
    lag: dict[int, int] = field(default_factory=dict)
    """Per assigned events partition: records between the stored offset and the log's end."""

    @property
    def total_lag(self) -> int:
        """Records not yet projected, over every assigned partition."""
        return sum(self.lag.values())


def is_transient(err: BaseException) -> bool:
    """Whether a database error may go away by itself (connection lost, locked, timed out).

    PostgreSQL drivers report lost connections, shutdowns and deadlocks as operational or
    interface errors, and a mistaken statement as a programming or integrity error. SQLite
    reports a locked file and a missing table alike as ``OperationalError``, so there the
    message decides.
    """
    if isinstance(err, sa_exc.DBAPIError):
        if err.connection_invalidated:
            return True
        if not isinstance(err, sa_exc.OperationalError | sa_exc.InterfaceError):
            return False
        if "sqlite" in type(err.orig).__module__:
            return any(m in str(err.orig).lower() for m in _TRANSIENT_MESSAGES)
        return True
    return isinstance(err, sa_exc.TimeoutError | ConnectionError | TimeoutError)


def is_poison(err: BaseException) -> bool:
    """Whether ``err`` says the *data* cannot be applied (so retrying it can never succeed).

    An invariant of the views broken by an event, an integrity or data error from the
    database (a duplicate key, a value too long), or a value the driver could not bind. A
    transient error never is; nor is a programming error (a missing table is a deployment
    fault, not a bad record: the process restarts instead of dead-lettering everything).
    """
    if isinstance(err, InvariantViolation):
        return True
    if isinstance(err, sa_exc.DBAPIError):
        return not is_transient(err) and isinstance(err, sa_exc.IntegrityError | sa_exc.DataError)
    return isinstance(err, sa_exc.StatementError)


def _reason(err: BaseException) -> str:
    detail = err.orig if isinstance(err, sa_exc.DBAPIError) else err
    text = f"cannot be applied to the views: {type(err).__name__}: {detail}"
    return text if len(text) <= _REASON_MAX else text[: _REASON_MAX - 1] + "…"


class ProjectorService(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped
    """Consumes ``<prefix>.events`` into the views; see the module docstring for the rules.

    Lifecycle as every aion service: :meth:`start`, :meth:`run` until :meth:`stop`. To serve
    the HTTP API from the same process, run :meth:`run` as a task beside it and share
    :attr:`engine` / :attr:`sessions`.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        database_url: str | None = None,
        rebuild: bool = False,
        max_records: int = 500,
        progress_every: int = 10_000,
        archive: Archive | None = None,
    ) -> None:
        """``archive``: where purged workflows' histories go before their rows are deleted
        (None: deleted without a copy)."""
        self._settings = settings
        self._database_url = database_url or settings.database_url
        self._rebuild = rebuild
        self._max_records = max_records
        self._progress_every = progress_every
        self._topics = Topics(settings.topic_prefix)
        self._group_id = f"{settings.topic_prefix}.projector"
        self._projection = Projection(self._topics.events, archive=archive)
        self._codec = Codec(payload_limit=settings.payload_limit_bytes)
        self._status = ProjectorStatus()
        self.link = BrokerLink(settings, name="projector")
        """Whether the cluster answers (readiness); retries wait on it."""
        # Held while a fetch is applied; a revocation waits for it, so a partition never
        # moves to another member halfway through a transaction.
        self._applying = asyncio.Lock()
        self._stopping = asyncio.Event()
        self._run_done: asyncio.Event | None = None
        self._rewind_needed = False
        self._engine: AsyncEngine | None = None
        self._one_hop: OneHopTransactions | None = None
        self._sessions: async_sessionmaker[AsyncSession] | None = None
        self._producer: KeyedProducer | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._stopped = False
        self._progress_mark = 0
        self._behind = True
        self._started_at = 0.0
        self._kafka_pending: dict[TopicPartition, int] = {}
        self._kafka_committed_at = 0.0

    @property
    def engine(self) -> AsyncEngine:
        """The views' database engine (after :meth:`start`)."""
        if self._engine is None:
            raise RuntimeError("ProjectorService is not started")
        return self._engine

    @property
    def sessions(self) -> async_sessionmaker[AsyncSession]:
        """Sessions on :attr:`engine`, for readers in the same process."""
        if self._sessions is None:
            raise RuntimeError("ProjectorService is not started")
        return self._sessions

    @property
    def status(self) -> ProjectorStatus:
        """Counters and lag, updated after every committed fetch."""
        return self._status

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Create/verify topics, migrate (or reset, for a rebuild) the views, join the group.

        Waits for a Kafka cluster that is away (retrying each step), rather than failing.
        """
        await self.link.start()
        retry = self.link.retry
        await retry(lambda: ensure_topics(self._settings, self._topics), what="ensuring topics")
        self._engine = connect(self._database_url)
        self._sessions = session_factory(self._engine)
        one_hop_target = one_hop_url(self._database_url)
        if one_hop_target is not None:  # SQLite file: a fetch's transaction in one thread hop
            self._one_hop = OneHopTransactions(one_hop_target)
        if self._rebuild:
            _log.warning("rebuild: dropping every view and offset, replaying from offset 0")
            await reset(self._engine)
        else:
            await migrate(self._engine)
        self._producer = KeyedProducer(
            self._settings, idempotent=True, client_id=f"{self._group_id}-dlq"
        )
        await retry(self._producer.start, what="starting the dead-letter producer")
        self._consumer = await retry(self._start_consumer, what="joining the group")
        _log.info(
            "projector started",
            extra={
                "topics": self._consumed_topics(),
                "group": self._group_id,
                "rebuild": self._rebuild,
            },
        )

    async def _start_consumer(self) -> AIOKafkaConsumer:
        """A new consumer each attempt: aiokafka's cannot start again after a failed start."""
        consumer = AIOKafkaConsumer(
            **client_options(self._settings),
            group_id=self._group_id,
            # Static membership: a projector restarted after a crash takes its partitions
            # back at once instead of waiting out the dead member's session.
            group_instance_id=f"{self._group_id}.{self._settings.instance_id}",
            client_id=f"{self._group_id}-{self._settings.instance_id}",
            enable_auto_commit=False,
            isolation_level="read_committed",
            auto_offset_reset="earliest",
            max_poll_records=self._max_records,
        )
        consumer.subscribe(self._consumed_topics(), listener=self)
        # Set before start(): the group may assign partitions (and the listener seeks this
        # consumer to the stored offsets) before start() returns.
        self._consumer = consumer
        try:
            await consumer.start()
        except (KafkaError, OSError) as err:
            self._consumer = None
            with contextlib.suppress(KafkaError, TimeoutError):
                await asyncio.wait_for(consumer.stop(), 5)
            raise infrastructure_error(err, "starting the projector's consumer") from err
        return consumer

    def _consumed_topics(self) -> list[str]:
        return [self._topics.events, self._topics.replies, self._topics.dead_letter]

    async def run(self) -> None:
        """Project until :meth:`stop`; raise on an error a restart must handle."""
        done = self._run_done = asyncio.Event()
        self._started_at = time.monotonic()
        failures = 0
        kafka_attempts = Attempts(self.link)
        try:
            while not self._stopping.is_set():
                try:
                    await self._step()
                    failures = 0
                    kafka_attempts.succeeded()
                except InfrastructureError as err:
                    if not err.retriable:
                        raise
                    await self._kafka_back_off(err, kafka_attempts.failed())
                except (sa_exc.SQLAlchemyError, OSError, TimeoutError) as err:
                    if not is_transient(err):
                        raise
                    failures += 1
                    self._status.retries += 1
                    await self._back_off(err, failures)
        finally:
            done.set()

    async def stop(self) -> None:
        """Let the current fetch finish, then close consumer, producer and database."""
        self._stopping.set()
        if self._run_done is not None:
            await self._run_done.wait()
        if self._stopped:
            return
        self._stopped = True
        consumer, self._consumer = self._consumer, None
        producer, self._producer = self._producer, None
        engine, self._engine = self._engine, None
        try:
            if consumer is not None:
                await self._flush_kafka_offsets(consumer)
                await stop_consumer(consumer)
        finally:
            try:
                if producer is not None:
                    await producer.stop()
            finally:
                if engine is not None:
                    await engine.dispose()
                one_hop, self._one_hop = self._one_hop, None
                if one_hop is not None:
                    one_hop.dispose()
                await self.link.stop()
        _log.info("projector stopped", extra=self._counters())

    # -- rebalance -----------------------------------------------------------------------

    async def on_partitions_revoked(self, revoked: Sequence[TopicPartition]) -> None:
        """Wait for the fetch being applied; nothing else is held per partition."""
        async with self._applying:
            for tp in revoked:
                self._kafka_pending.pop(tp, None)  # the next owner commits its own
                self._stored_of(tp).pop(tp.partition, None)
                if tp.topic == self._topics.events:
                    self._status.lag.pop(tp.partition, None)

    async def on_partitions_assigned(self, assigned: Sequence[TopicPartition]) -> None:
        """Seek every assigned partition to the offset stored with the views."""
        async with self._applying:
            try:
                await self._seek_to_stored(assigned)
            except sa_exc.SQLAlchemyError as err:
                # aiokafka would only log a listener's error; rewind before the next apply.
                _log.warning("reading stored offsets failed; will rewind", extra={"err": repr(err)})
                self._rewind_needed = True

    async def _seek_to_stored(self, partitions: Sequence[TopicPartition]) -> None:
        consumer = self._running()
        async with self.sessions() as session:
            stored = await stored_offsets(session)
        for tp in partitions:
            offset = stored.get((tp.topic, tp.partition), 0)
            # An offset below the log start (never, with the events topic's retention) is
            # reset to the earliest one by auto_offset_reset.
            consumer.seek(tp, offset)
            self._stored_of(tp)[tp.partition] = offset
        _log.info(
            "partitions assigned: seeking to stored offsets",
            extra={
                "offsets": {
                    f"{tp.topic}:{tp.partition}": stored.get((tp.topic, tp.partition), 0)
                    for tp in partitions
                }
            },
        )
        self._rewind_needed = False

    # -- the loop ------------------------------------------------------------------------

    async def _step(self) -> None:
        consumer = self._running()
        if self._rewind_needed:
            async with self._applying:
                await self._seek_to_stored(list(consumer.assignment()))
        try:
            fetched: dict[TopicPartition, list[Record]] = await consumer.getmany(
                timeout_ms=_FETCH_TIMEOUT_MS, max_records=self._max_records
            )
        except KafkaError as err:
            raise infrastructure_error(err, f"consuming {self._topics.events}") from err
        # Read before any await: the position steps over markers and aborted records.
        assigned = consumer.assignment()
        positions = {tp: await consumer.position(tp) for tp in fetched if tp in assigned}
        if not any(fetched.values()):
            await self._store_idle_positions()
            return
        async with self._applying:
            assigned = consumer.assignment()
            records = [r for tp, rs in fetched.items() if tp in assigned for r in rs]
            positions = {tp: o for tp, o in positions.items() if tp in assigned}
            if not records:
                return
            stats = await self._apply(records, positions)
        await self._after_commit(records, positions, stats)

    def _stored_of(self, tp: TopicPartition) -> dict[int, int]:
        """The status map holding ``tp``'s stored offset (events or replies)."""
        if tp.topic == self._topics.replies:
            return self._status.reply_offsets
        if tp.topic == self._topics.dead_letter:
            return self._status.dead_letter_offsets
        return self._status.next_offsets

    async def _apply(
        self, records: list[Record], positions: Mapping[TopicPartition, int]
    ) -> ApplyStats:
        decoded: list[_Decoded] = []
        for record in records:
            try:
                decoded.append(self._decode(record))
            except DecodeError as err:
                await self._dead_letter(record, str(err), err)

        async def work(session: AsyncSession) -> ApplyStats:
            stats = await self._apply_decoded(session, decoded)
            await _store_offsets(session, positions)
            return stats

        try:
            if self._one_hop is not None and not any(_purges(v) for _, v in decoded):
                stats = await self._one_hop.run(work)
            else:
                async with self.sessions() as session, session.begin():
                    stats = await work(session)
        except (InvariantViolation, sa_exc.SQLAlchemyError) as err:
            if not is_poison(err):
                raise
            _log.warning(
                "a fetch could not be applied: applying it record by record to find the "
                "poison pill",
                extra={"records": len(decoded), "err": _reason(err)},
            )
            return await self._apply_singly(decoded, positions)
        return stats

    def _decode(self, record: Record) -> _Decoded:
        where = {"topic": record.topic, "partition": record.partition, "offset": record.offset}
        if record.topic == self._topics.dead_letter:
            return record, None
        if record.topic == self._topics.replies:
            return record, self._codec.decode_reply(record.value, **where)
        return record, self._codec.decode_batch(record.value, **where)

    async def _apply_decoded(self, session: AsyncSession, decoded: list[_Decoded]) -> ApplyStats:
        deliveries: list[Delivery] = []
        refusals: list[RefusalDelivery] = []
        dead: list[Record] = []
        for record, value in decoded:
            if value is None:
                dead.append(record)
            elif isinstance(value, QueryAnswer):
                continue  # a query's answer: the API that asked reads it, no view keeps it
            elif isinstance(value, CommandRefused):
                refusals.append((record.partition, record.offset, value))
            else:
                deliveries.append((record.partition, record.offset, value))
        stats = await self._projection.apply(session, deliveries, store_offsets=False)
        stats.refusals = await record_refusals(session, refusals)
        await record_dead_letters(session, dead)
        return stats

    async def _apply_singly(
        self, decoded: list[_Decoded], positions: Mapping[TopicPartition, int]
    ) -> ApplyStats:
        """One transaction per record; a record that still fails is dead-lettered, skipped.

        A transient error propagates (back-off, then rewind to the stored offsets: records
        committed here are not applied twice, their offsets having moved with them).
        """
        total = ApplyStats()
        for record, value in decoded:
            tp = TopicPartition(record.topic, record.partition)
            try:
                async with self.sessions() as session, session.begin():
                    stats = await self._apply_decoded(session, [(record, value)])
                    await _store_offsets(session, {tp: record.offset + 1})
            except (InvariantViolation, sa_exc.SQLAlchemyError) as err:
                if not is_poison(err):
                    raise
                if value is None:  # a dead letter: dead-lettering it again would loop
                    _log.error(
                        "dead letter not stored in the view: skipped",
                        extra={
                            "partition": record.partition,
                            "offset": record.offset,
                            "reason": _reason(err),
                        },
                    )
                else:
                    await self._dead_letter(record, _reason(err), err, poison=True)
                async with self.sessions() as session, session.begin():
                    await _store_offsets(session, {tp: record.offset + 1})
                continue
            total.add(stats)
        async with self.sessions() as session, session.begin():
            await _store_offsets(session, positions)
        return total

    async def _dead_letter(
        self, record: Record, reason: str, err: BaseException, *, poison: bool = False
    ) -> None:
        _log.warning(
            "event record dead-lettered: %s",
            "it cannot be applied" if poison else "it does not decode",
            extra={
                "topic": record.topic,
                "partition": record.partition,
                "offset": record.offset,
                "workflow_id": (record.key or b"").decode("utf-8", "replace"),
                "reason": reason,
            },
        )
        producer = self._producer
        if producer is None:
            raise RuntimeError("ProjectorService is not started")
        await DeadLetterPublisher(producer, self._topics.dead_letter).publish(record, reason, err)
        self._status.dead_lettered += 1
        if poison:
            self._status.poison += 1

    async def _after_commit(
        self, records: list[Record], positions: Mapping[TopicPartition, int], stats: ApplyStats
    ) -> None:
        status = self._status
        status.applied += stats.applied
        status.duplicates += stats.duplicates
        status.held += stats.held
        status.refusals += stats.refusals
        status.purged += stats.purged
        dead = sum(r.topic == self._topics.dead_letter for r in records)
        status.records += len(records) - dead
        status.dead_letters_stored += dead
        for tp, offset in positions.items():
            self._stored_of(tp)[tp.partition] = offset
        if stats.held:
            held = sorted({r.key.decode("utf-8", "replace") for r in records if r.key})[:20]
            _log.warning("events held at a seq gap", extra={"held": stats.held, "keys": held})
        _log.debug(
            "applied",
            extra={
                "records": len(records),
                "applied": stats.applied,
                "offsets": _by_partition(positions),
            },
        )
        self._update_lag()
        await self._commit_to_kafka(positions)
        self._log_progress()

    async def _store_idle_positions(self) -> None:
        """Store positions that moved past markers alone (nothing else was fetched)."""
        consumer = self._running()
        async with self._applying:
            moved = {}
            for tp in consumer.assignment():
                position = await consumer.position(tp)
                if position > self._stored_of(tp).get(tp.partition, 0):
                    moved[tp] = position
            if moved:
                async with self.sessions() as session, session.begin():
                    await _store_offsets(session, moved)
                for tp, offset in moved.items():
                    self._stored_of(tp)[tp.partition] = offset
        await self._commit_to_kafka(moved)  # also flushes what an earlier step left pending
        self._update_lag()

    async def _commit_to_kafka(self, positions: Mapping[TopicPartition, int]) -> None:
        """Commit ``positions`` (and any pending) to Kafka if the last commit is old enough."""
        self._kafka_pending.update(positions)
        if time.monotonic() - self._kafka_committed_at >= _KAFKA_COMMIT_INTERVAL_S:
            await self._flush_kafka_offsets(self._running())

    async def _flush_kafka_offsets(self, consumer: AIOKafkaConsumer) -> None:
        """For lag tooling only: SQL holds the offsets that count, so a failure is harmless."""
        pending, self._kafka_pending = self._kafka_pending, {}
        self._kafka_committed_at = time.monotonic()
        if not pending:
            return
        self._status.kafka_commits += 1
        try:
            await consumer.commit(pending)
        except KafkaError as err:
            _log.info(
                "kafka offset commit skipped (SQL holds the offsets)", extra={"err": repr(err)}
            )

    async def _kafka_back_off(self, err: InfrastructureError, failures: int) -> None:
        """Wait for the cluster (or a backoff), then rewind: a half-done fetch is refetched.

        The wait ends as soon as the link sees the cluster come back (:meth:`BrokerLink.pause`),
        even if the probe had not noticed the loss yet when the wait began."""
        self.link.suspect()
        _log.warning(
            "kafka error: backing off, then rewinding to stored offsets",
            extra={"err": str(err), "attempt": failures, **RETRYING},
        )
        self._rewind_needed = True
        pausing = asyncio.ensure_future(self.link.pause(_KAFKA_BACKOFF.delay(failures)))
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({pausing, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in (pausing, stopping):
                wait.cancel()
            await asyncio.gather(pausing, stopping, return_exceptions=True)

    async def _back_off(self, err: BaseException, failures: int) -> None:
        if failures > _MAX_TRANSIENT_FAILURES:
            raise InfrastructureError(
                f"database still failing after {_MAX_TRANSIENT_FAILURES} retries: {err!r}",
                retriable=True,
            ) from err
        delay = min(_BACKOFF_MAX_S, _BACKOFF_FIRST_S * 2 ** (failures - 1))
        _log.warning(
            "transient database error: backing off, then rewinding to stored offsets",
            extra={"err": repr(err), "attempt": failures, "delay_s": delay},
        )
        self._rewind_needed = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), delay)

    # -- progress ------------------------------------------------------------------------

    def _update_lag(self) -> None:
        consumer = self._running()
        for tp in consumer.assignment():
            if tp.topic != self._topics.events:
                continue
            end = consumer.last_stable_offset(tp)
            if end is None:
                end = consumer.highwater(tp)
            if end is not None:
                stored = self._status.next_offsets.get(tp.partition, 0)
                self._status.lag[tp.partition] = max(0, end - stored)
        behind = self._status.total_lag > 0
        if self._behind and not behind:
            _log.info("caught up with the event log", extra=self._counters())
        self._behind = behind

    def _log_progress(self) -> None:
        status = self._status
        if status.records - self._progress_mark < self._progress_every:
            return
        self._progress_mark = status.records
        elapsed = max(1e-9, time.monotonic() - self._started_at)
        _log.info(
            "projection progress",
            extra={**self._counters(), "records_per_s": round(status.records / elapsed, 1)},
        )

    def _counters(self) -> dict[str, Any]:
        status = self._status
        return {
            "records": status.records,
            "applied": status.applied,
            "duplicates": status.duplicates,
            "held": status.held,
            "dead_lettered": status.dead_lettered,
            "poison": status.poison,
            "refusals": status.refusals,
            "purged": status.purged,
            "retries": status.retries,
            "lag": status.total_lag,
        }

    def _running(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            raise RuntimeError("ProjectorService is not started")
        return self._consumer


def _purges(value: EventBatch | CommandRefused | QueryAnswer | None) -> bool:
    """Whether applying ``value`` purges a workflow (its archive write awaits a thread)."""
    return isinstance(value, EventBatch) and isinstance(value.events[-1], WorkflowPurged)


def _by_partition(positions: Mapping[TopicPartition, int]) -> dict[str, int]:
    return {f"{tp.topic}:{tp.partition}": offset for tp, offset in positions.items()}


async def _store_offsets(session: AsyncSession, positions: Mapping[TopicPartition, int]) -> None:
    """Upsert the next offset per partition, never backwards (as :class:`Projection` does).

    Also covers what ``Projection.apply`` cannot: offsets of dead-lettered records and of
    transaction markers, which carry no batch.
    """
    if not positions:
        return
    rows = [
        {"topic": tp.topic, "partition": tp.partition, "next_offset": offset}
        for tp, offset in sorted(positions.items())
    ]
    await session.execute(offsets_upsert(session.get_bind().dialect.name), rows)
