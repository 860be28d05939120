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
  close policies), refusals (replies topic), dead letters, the changelog records and the
  partition's position (the next command offset, a record of ``engine-state``: decision 69; the
  group's offset is committed outside the transactions now and then, for lag tools; without
  the changelog the transaction carries the group's offset instead). Workers
  run concurrently, so one partition's commit overlaps another's decoding and deciding, and
  the fetch loop keeps fetching while commits are in flight; a worker's batch is whatever
  arrived during its previous commit (one record when idle, many under load). A partition
  whose queue passes ``_QUEUE_HIGH`` is paused at the consumer until its worker catches up;
- without broker transactions (``AION_TRANSACTIONS=off``, or ``auto`` on a broker that lacks
  them) it runs at-least-once: outgoing commands, then event batches, then the offset commit;
  re-delivery is harmless because command ids are deduplicated and derived ids are
  deterministic.

Every owned partition converges on its own, whatever the broker does (decision 22):

- the rebalance listener only registers an assigned partition and starts its worker; the
  worker *acquires* it (producer, restore, timers, rewind to its position) and retries
  that with backoff while the broker is unreachable, so an acquisition that fails is retried,
  logged, and never leaves a partition assigned but unowned (aiokafka logs and swallows a
  listener's exception: the partition's commands were then fetched and dropped until the next
  rebalance), and a rebuild during an outage never holds up the group's rebalance;
- if emitting fails (a broker error, a producer stuck in a failed state, or no answer within
  ``_EMIT_TIMEOUT_S``), the partition's in-memory state may be ahead of the log: its producer
  and state are dropped and it is acquired again (a fresh producer, rebuilt from the log,
  rewound to its position);
- a revocation waits for a batch in flight at most ``_REVOKE_WAIT_S``, then cancels the
  worker (nothing half-done survives: an open transaction is aborted by the next owner's
  producer, an at-least-once batch without its offset commit is re-delivered and deduplicated);
  producers are closed within ``_CLOSE_TIMEOUT_S``; partitions are released concurrently, so a
  revocation always ends well inside the group's rebalance timeout.

Broker outages (issue 19): :attr:`EngineService.link` probes the cluster; ``start()`` waits for
it and retries each step (topics, the delivery-mode probe, the clients) with capped, jittered
backoff instead of exiting, and the per-partition retries above wait for its return rather than
finishing a long backoff. Only a non-retriable error (mismatched topics, transactions required
but missing, a bug) ends the process.

With ``group_instance_id`` (``AION_INSTANCE_ID``, see ``__main__``) the member is static
(KIP-345): an instance restarted under the same id takes its assignment back without a
rebalance instead of waiting for its predecessor's session to expire (decision 22).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import sqlite3
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import aiokafka.producer.sender as _aiokafka_sender
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import IllegalStateError, KafkaError, ProducerFenced
from aiokafka.structs import ConsumerRecord

from aion_common.codecs import Codec, decode_key, encode_key
from aion_common.domain import (
    LOCAL_TASK_QUEUE,
    TERMINAL_EVENT_TYPES,
    ActivityTask,
    CodecError,
    Command,
    DecodeError,
    EventBatch,
    FireTimer,
    InfrastructureError,
    InvalidInput,
    MoveWorkflow,
    PurgeWorkflow,
    QueryAnswer,
    QueryStatus,
    QueryWorkflow,
    WorkflowBlocked,
    WorkflowFailed,
)
from aion_common.kafka.admin import ensure_task_topic, ensure_topics
from aion_common.kafka.catalog import CatalogReader
from aion_common.kafka.changelog import Change, ChangelogStore, store_path
from aion_common.kafka.consumer import read_partition_to_end, stop_consumer
from aion_common.kafka.dead_letter import dead_letter_headers
from aion_common.kafka.link import RETRYING, Backoff, BrokerLink, raise_if_cancelling
from aion_common.kafka.options import client_options, max_record_bytes
from aion_common.kafka.probe import probe_capabilities
from aion_common.kafka.producer import stop_producer
from aion_common.kafka.topics import RUN_ENDED_HEADER, Topics
from aion_common.settings import Settings
from aion_engine import local_steps, queries
from aion_engine._changelog import ChangelogCorrupt, EngineChangelog, position_change
from aion_engine._offsets import CommittedOffsets
from aion_engine._recovery import (
    ENGINE_STATE_STALE_MS,
    Restored,
    load_closed,
    restore_partition,
    write_changes,
)
from aion_engine._standby import Standby
from aion_engine._state_dir import StateDirLock
from aion_engine.core import DEFAULT_CLOSED_CACHE, EngineCore
from aion_engine.decision import Decision
from aion_engine.publish_topics import PublishTopics
from aion_engine.registry import WorkflowRegistry
from aion_engine.retention import RetentionSweep, expired_in
from aion_engine.timers_service import TimerScheduler
from aion_engine.versions import Versions

__all__ = ["EngineService"]

_log = logging.getLogger("aion.engine")
_FETCH_TIMEOUT_MS = 50
_MAX_RECORDS = 2000
_MAX_BATCH = 1000  # commands per transaction, at most
_QUEUE_HIGH = 4000  # pause a partition's fetching above this many queued records ...
_QUEUE_LOW = 1000  # ... and resume it below this
_GC_YOUNG_THRESHOLD = 50_000
_SESSION_TIMEOUT_MS = 10_000
_REBALANCE_TIMEOUT_MS = 30_000
# aiokafka's produce requests fail after request_timeout_ms (40 s by default); an emit that has
# not finished well after that has a producer that will never answer (its sender task died):
# drop it and acquire the partition again.
_EMIT_TIMEOUT_S = 60.0
_STEP_TIMEOUT_S = 30.0  # one acquisition step (producer start, committed offset)
_REVOKE_WAIT_S = 10.0  # a revocation waits this long for a batch in flight, then cancels it
_CLOSE_TIMEOUT_S = 5.0  # a producer's stop (it flushes first: during an outage, for ever)
_TIMER_SEND_TIMEOUT_S = 30.0
_CATALOG_WAIT_S = 30.0  # at start: read the packages and routes before taking commands
_LOCAL_THREADS = 8  # threads for local steps that are plain functions (ctx.run)
_ACQUIRE_BACKOFF = Backoff(initial=0.2, maximum=5.0)
# With the changelog, the group's offsets are only informational (lag tools, the registry
# page, an older engine taking over): committed this often outside the transactions, and on
# release, each bounded.
_GROUP_COMMIT_S = 1.0
_GROUP_COMMIT_TIMEOUT_S = 5.0

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
    queue: str = ""  # set on a task queue's record: its topic may need creating first
    published: bool = False  # a user topic's record (ctx.publish): the topic is checked first


class _ProducerBroken(Exception):
    """A partition producer refused a transaction step: it is in a failed state for good."""


class _Owned:
    """What this instance holds for one assigned partition, and its worker's queue.

    ``core``, ``producer`` and ``timers`` exist while the partition is acquired (``ready``);
    the worker drops and re-creates them when emitting fails.
    """

    def __init__(self, partition: int) -> None:
        self.partition = partition
        self.core: EngineCore | None = None
        self.producer: AIOKafkaProducer | None = None
        self.timers: TimerScheduler | None = None
        self.queue: deque[ConsumerRecord] = deque()
        self.wake = asyncio.Event()
        self.closing = False
        self.ready = False
        self.emitting = False
        self.paused = False
        self.next_offset = -1  # records below it were processed already
        # The position of this owner's last committed transaction, and the group's offset as
        # last read or committed (with the changelog, committed to the group now and then).
        self.committed_offset: int | None = None
        self.group_offset: int | None = None
        # where the last acquisition resumed the commands, and whence that came
        self.resumed: tuple[int, str] = (0, "")
        self.acquisitions = 0
        self.worker: asyncio.Task[None] | None = None
        self.store: ChangelogStore | None = None  # the local store of its changelog
        self.changelog: EngineChangelog | None = None
        self.rebuild = False  # the next acquisition builds the changelog from the event log
        self.restored: Restored | None = None  # how the last acquisition restored it
        # The store of <prefix>.engine-closed, and its load after a restore (in the
        # background: until it is done, commands needing a workflow not in memory wait, and
        # what the partition's own transactions write to engine-closed waits in
        # closed_pending, to be applied after it).
        self.closed_store: ChangelogStore | None = None
        self.closed_load: asyncio.Task[None] | None = None
        self.closed_ready = False
        self.closed_pending: list[tuple[Change, int]] = []
        self.closed_s: float | None = None  # acquisition start to the closed load's end
        self.closed_records = 0  # engine-closed records the last load read
        self.acquire_s = 0.0  # how long the last (successful) acquisition took


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
    """Runs workflows of the partitions this instance is assigned.

    ``static_membership`` joins the group as ``<prefix>.engine.<instance_id>`` (KIP-345);
    ``session_timeout_ms`` is how long the group waits for a silent member before moving its
    partitions (for a static member, also for one that stopped cleanly: it does not leave).
    """

    def __init__(
        self,
        settings: Settings,
        registry: WorkflowRegistry,
        *,
        codec: Codec | None = None,
        max_resident: int = 10_000,
        tune_gc: bool = True,
        static_membership: bool = False,
        session_timeout_ms: int = _SESSION_TIMEOUT_MS,
        versions: Versions | None = None,
        changelog: bool | None = None,
        closed_cache: int = DEFAULT_CLOSED_CACHE,
        standbys: int = 0,
        publish_topics: PublishTopics | None = None,
    ) -> None:
        """``changelog``: keep state in ``<prefix>.engine-state`` and a local store (None:
        whenever transactions are on; without them the engine rebuilds from the event log).
        ``closed_cache``: closed workflows kept in memory beside the open ones. ``standbys``
        above 0: keep warm stores of the partitions this instance does not own (see
        :mod:`aion_engine._standby`)."""
        self._settings = settings
        self._changelog_setting = changelog
        self._changelog = False
        self._closed_cache = closed_cache
        self._standbys = standbys
        self._standby: Standby | None = None
        self._sweep: RetentionSweep | None = None
        self._stores: dict[int, ChangelogStore] = {}
        self._closed_stores: dict[int, ChangelogStore] = {}
        self._state_lock: StateDirLock | None = None
        self._registry = registry
        self._versions = versions if versions is not None else Versions(registry)
        self._versions.listeners.append(self._version_changed)
        self._codec = codec or Codec(payload_limit=settings.payload_limit_bytes)
        self._topics = Topics(settings.topic_prefix)
        self._group = f"{settings.topic_prefix}.engine"
        self._max_resident = max_resident
        self._tune_gc = tune_gc
        # KIP-345: a restarted instance with the same id takes its assignment back at once.
        self._group_instance_id = (
            f"{self._group}.{settings.instance_id}" if static_membership else None
        )
        self._session_timeout_ms = session_timeout_ms
        self._freezer = _FreezeAfterFullCollection()
        self._owned: dict[int, _Owned] = {}
        self._lock = asyncio.Lock()
        self._consumer: AIOKafkaConsumer | None = None
        self._timer_producer: AIOKafkaProducer | None = None
        self._timer_producer_lock = asyncio.Lock()
        self._offsets = CommittedOffsets(settings, self._group)
        self.link = BrokerLink(settings, name="engine")
        """Whether the cluster answers (readiness); retries wait on it."""
        self._transactional = False
        self._stopping = asyncio.Event()
        self._stopped = False
        self._failure: BaseException | None = None
        self._task_topics: set[str] = set()  # task queues' topics known to exist
        self._threads: ThreadPoolExecutor | None = None  # local steps' threads, when needed
        self._publish_topics = publish_topics or PublishTopics(settings)
        self._catalog: CatalogReader | None = None
        self._moves: set[asyncio.Task[None]] = set()
        self._group_commits: asyncio.Task[None] | None = None

    @property
    def transactional(self) -> bool:
        """Whether batches are emitted in Kafka transactions (else at-least-once)."""
        return self._transactional

    @property
    def versions_loaded(self) -> tuple[str, ...]:
        """The package versions whose code this process has (its own, and those loaded)."""
        return self._versions.loaded()

    @property
    def uses_changelog(self) -> bool:
        """Whether partitions are restored from the changelog (else rebuilt from events)."""
        return self._changelog

    def acquisitions(self) -> dict[int, dict[str, object]]:
        """How each owned partition was last acquired (restore figures, for health/benches)."""
        report: dict[int, dict[str, object]] = {}
        for partition, owned in sorted(self._owned.items()):
            if not owned.ready:
                continue
            restored = owned.restored
            if restored is None:
                report[partition] = {"seconds": round(owned.acquire_s, 3), "replayed": True}
                continue
            report[partition] = {
                "seconds": round(owned.acquire_s, 3),
                "restore_s": round(restored.seconds, 3),
                "cold": restored.catch_up.cold,
                "changelog_records_read": restored.catch_up.records,
                "built_from_events": restored.built_events,
                "open_workflows": restored.open_workflows,
                "position": owned.resumed[0],
                "position_from": owned.resumed[1],
                "closed_complete_s": None if owned.closed_s is None else round(owned.closed_s, 3),
                "closed_records_read": owned.closed_records,
            }
        return report

    @property
    def standby_partitions(self) -> list[int]:
        """Partitions whose stores this instance keeps warm without owning them."""
        return [] if self._standby is None else sorted(self._standby.following)

    @property
    def owned_partitions(self) -> list[int]:
        """Partitions this instance currently owns, acquired and rebuilt."""
        return sorted(p for p, owned in self._owned.items() if owned.ready)

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
        await self.link.start()
        retry = self.link.retry
        await retry(lambda: ensure_topics(self._settings, self._topics), what="ensuring topics")
        self._catalog = CatalogReader(self._settings, self._versions, codec=self._codec)
        await self._catalog.start()
        if not await self._catalog.caught_up(_CATALOG_WAIT_S):
            _log.warning(
                "the version catalog is not read yet; runs needing its packages wait blocked",
                extra={"waited_s": _CATALOG_WAIT_S},
            )
        self._transactional = await retry(self._choose_mode, what="probing the broker")
        self._changelog = self._transactional and self._changelog_setting is not False
        if self._changelog_setting and not self._transactional:
            raise InfrastructureError(
                "the engine changelog needs Kafka transactions (it is written in the same "
                "transaction as the events); run with AION_TRANSACTIONS=on or the changelog off",
                retriable=False,
            )
        if self._changelog and self._state_lock is None:
            self._state_lock = StateDirLock(store_path(self._settings, "engine", 0).parent)
            self._state_lock.acquire()
        retention = self._settings.retention_ms
        if self._changelog and retention is not None and self._sweep is None:
            self._sweep = RetentionSweep(retention, self._expired, self._send_timer)
            self._sweep.start()
        if self._changelog and self._standbys > 0 and self._standby is None:
            self._standby = Standby(
                self._settings,
                {
                    self._topics.engine_state: self._store,
                    self._topics.engine_closed: self._closed_store,
                },
            )
            self._standby.start()
        if self._changelog and self._group_commits is None:
            self._group_commits = asyncio.create_task(
                self._commit_group_offsets_now_and_then(), name="engine-group-commits"
            )
            self._group_commits.add_done_callback(self._worker_done)  # a bug ends run()
        await self._publish_topics.start()  # tolerates the broker away: it refreshes later
        await retry(self._offsets.start, what="connecting the offsets reader")
        self._timer_producer = await retry(self._start_timer_producer, what="starting a producer")
        self._consumer = await retry(self._start_consumer, what="joining the group")
        _log.info(
            "engine started",
            extra={
                "instance": self._settings.instance_id,
                "mode": "transactional" if self._transactional else "at-least-once",
                "group_instance_id": self._group_instance_id,
                "session_timeout_ms": self._session_timeout_ms,
                "workflow_types": sorted(self._registry.types()),
                "local_version": self._versions.local_version,
            },
        )

    async def _start_timer_producer(self) -> AIOKafkaProducer:
        producer = self._new_timer_producer()
        try:
            await producer.start()
        except BaseException:
            await _close_producer(producer, what="timer producer")
            raise
        return producer

    async def _start_consumer(self) -> AIOKafkaConsumer:
        """A new consumer each attempt: aiokafka's cannot start again after a failed start."""
        static = (
            {}
            if self._group_instance_id is None
            else {"group_instance_id": self._group_instance_id}
        )
        consumer = AIOKafkaConsumer(
            **client_options(self._settings),
            group_id=self._group,
            enable_auto_commit=False,
            isolation_level="read_committed",
            auto_offset_reset="earliest",
            max_poll_records=_MAX_RECORDS,
            session_timeout_ms=self._session_timeout_ms,
            heartbeat_interval_ms=min(1_000, self._session_timeout_ms // 3),
            rebalance_timeout_ms=_REBALANCE_TIMEOUT_MS,
            **static,
        )
        consumer.subscribe([self._topics.commands], listener=self)
        # Set before start(): the group may assign partitions (and their workers use the
        # consumer) before start() returns.
        self._consumer = consumer
        try:
            await consumer.start()
        except BaseException:
            self._consumer = None
            with contextlib.suppress(KafkaError, TimeoutError):
                await asyncio.wait_for(consumer.stop(), _CLOSE_TIMEOUT_S)
            raise
        return consumer

    async def _choose_mode(self) -> bool:
        mode = self._settings.transactions
        if mode == "off":
            return False
        capabilities = await probe_capabilities(self._settings)
        if capabilities.inconclusive:  # unreachable is not "lacks transactions": ask again
            raise InfrastructureError(
                f"probing the broker's transactions: {capabilities.transactional_error}",
                retriable=True,
            )
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
                if owned is None and tp in consumer.assignment():
                    # Assigned, but the listener has not registered it yet: fetch these again
                    # (dropping them would move the position past commands nobody handled).
                    with contextlib.suppress(IllegalStateError):
                        consumer.seek(tp, records[0].offset)
                    continue
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
        await self._stop_group_commits()
        async with self._lock:
            await asyncio.gather(*(self._release(p) for p in list(self._owned)))
        if self._consumer is not None:
            await stop_consumer(self._consumer)
        if self._catalog is not None:
            await self._catalog.stop()
        await self._publish_topics.stop()
        for task in list(self._moves):
            task.cancel()
        if self._timer_producer is not None:
            await self._timer_producer.stop()
        await self._offsets.close()
        if self._threads is not None:
            self._threads.shutdown(wait=False, cancel_futures=True)
        if self._standby is not None:
            await self._standby.stop()
        if self._sweep is not None:
            await self._sweep.stop()
        for stores in (self._stores, self._closed_stores):
            for store in stores.values():
                store.close()
            stores.clear()
        if self._state_lock is not None:
            self._state_lock.release()
            self._state_lock = None
        await self.link.stop()
        _log.info("engine stopped", extra={"instance": self._settings.instance_id})

    # -- versions ----------------------------------------------------------------------------

    def _version_changed(self, workflow_type: str, version: str) -> None:
        """A route took effect or a package arrived: blocked runs of the type may go on now.
        Each gets a ``MoveWorkflow`` (deterministic id; the move itself checks the replay)."""
        now = datetime.now(UTC)
        moves = [
            move
            for owned in self._owned.values()
            if owned.ready and owned.core is not None
            for move in owned.core.moves(workflow_type, version, now=now)
        ]
        if moves:
            task = asyncio.create_task(self._send_moves(moves), name="engine-moves")
            self._moves.add(task)
            task.add_done_callback(self._moves.discard)

    async def _send_moves(self, moves: list[MoveWorkflow]) -> None:
        for move in moves:
            try:
                await self._send_timer(move)
            except InfrastructureError:
                _log.warning(
                    "a move of a blocked run was not sent; the next route or package retries it",
                    extra={"workflow_id": move.workflow_id},
                )

    # -- rebalance -------------------------------------------------------------------------

    async def on_partitions_revoked(self, revoked: Sequence[TopicPartition]) -> None:
        """Drop the state of revoked partitions once their in-flight batch is done (bounded)."""
        async with self._lock:
            await asyncio.gather(*(self._release(tp.partition) for tp in revoked))

    async def on_partitions_assigned(self, assigned: Sequence[TopicPartition]) -> None:
        """Register each newly assigned partition; its worker acquires it (see :meth:`_work`).

        Nothing here awaits the broker: aiokafka swallows (logs) a listener's exception, and a
        listener that waits holds up the group's rebalance.
        """
        async with self._lock:
            for tp in assigned:
                if tp.partition not in self._owned:
                    if self._standby is not None:
                        self._standby.release(tp.partition)  # its owner writes the store now
                    owned = _Owned(tp.partition)
                    self._owned[tp.partition] = owned
                    owned.worker = asyncio.create_task(
                        self._work(owned), name=f"engine-p{tp.partition}"
                    )
                    owned.worker.add_done_callback(self._worker_done)

    async def _release(self, partition: int) -> None:
        """Stop ``partition``'s worker after its in-flight batch, then its timers and producer.

        The batch in flight is waited for at most ``_REVOKE_WAIT_S`` (an acquisition in progress
        not at all): then the worker is cancelled. Queued records it had not started are dropped:
        they are past the committed offset, so whoever owns the partition next reads them again.
        """
        owned = self._owned.pop(partition, None)
        if owned is None:
            return
        owned.closing = True
        owned.wake.set()
        worker = owned.worker
        if worker is not None and worker is not asyncio.current_task():
            await asyncio.wait([worker], timeout=_REVOKE_WAIT_S if owned.emitting else 0.5)
            if not worker.done():
                _log.warning(
                    "partition worker did not finish in time; cancelling it",
                    extra={"partition": partition, "emitting": owned.emitting},
                )
                worker.cancel()
            await asyncio.gather(worker, return_exceptions=True)
        owned.queue.clear()
        if self._changelog:  # the next owner may be an engine that reads only the group's
            await self._commit_group_offsets([owned])
        await self._drop(owned)
        owned.store = owned.closed_store = None
        if self._standby is not None and not self._stopping.is_set():
            self._standby.follow(partition)  # keep its stores warm
        else:
            for stores in (self._stores, self._closed_stores):
                if partition in stores:
                    stores.pop(partition).close()
        _log.info("partition released", extra={"partition": partition})

    async def _commit_group_offsets_now_and_then(self) -> None:
        while True:
            await asyncio.sleep(_GROUP_COMMIT_S)
            await self._commit_group_offsets([o for o in self._owned.values() if o.ready])

    async def _stop_group_commits(self) -> None:
        task, self._group_commits = self._group_commits, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _commit_group_offsets(self, owned: list[_Owned]) -> None:
        """Commit to the group the positions of committed transactions it lacks (with the
        changelog the group's offsets are informational, decision 69). Bounded; a failure is
        only logged: the next round, or the changelog's position, covers it."""
        consumer = self._consumer
        behind = [
            o
            for o in owned
            if o.committed_offset is not None
            and (o.group_offset is None or o.committed_offset > o.group_offset)
        ]
        if consumer is None or not behind:
            return
        offsets = {
            TopicPartition(self._topics.commands, o.partition): o.committed_offset for o in behind
        }
        try:
            await asyncio.wait_for(consumer.commit(offsets), _GROUP_COMMIT_TIMEOUT_S)
        except (KafkaError, IllegalStateError, TimeoutError) as err:
            # rebalancing, revoked meanwhile, the broker away: not an error of the engine's
            _log.info(
                "the group's offsets were not committed this time",
                extra={"partitions": sorted(o.partition for o in behind), "error": repr(err)},
            )
            return
        for o, offset in zip(behind, offsets.values(), strict=True):
            o.group_offset = offset

    def _worker_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            owned = next((o for o in self._owned.values() if o.worker is task), None)
            if owned is None or owned.closing or self._stopping.is_set():
                return  # released or stopping: the cancellation was ours
            # Cancelled by nobody here: a library's cancellation that leaked out of an await.
            # Never silent: the partition would not be served again.
            error: BaseException | None = RuntimeError(
                f"partition {owned.partition}'s worker ended cancelled while the partition is "
                "still owned (a cancellation leaked from a Kafka client call)"
            )
        else:
            error = task.exception()
        if error is not None and self._failure is None:
            # A bug: make run() raise, so the process exits and its supervisor restarts it
            # (state is rebuilt from the log). Broker trouble never ends a worker (see _work).
            _log.error("partition worker failed", exc_info=error, extra={"task": task.get_name()})
            self._failure = error

    def _new_core(
        self,
        partition: int,
        changelog: EngineChangelog | None = None,
        store: ChangelogStore | None = None,
    ) -> EngineCore:
        """A core for the partition; with a changelog, ``store`` is engine-closed's, from
        which closed workflows are read back."""
        if changelog is None or store is None:
            return EngineCore(
                self._registry,
                writer=self._settings.instance_id,
                max_resident=self._max_resident,
                versions=self._versions,
                topics=self._publish_topics,
            )
        return EngineCore(
            self._registry,
            writer=self._settings.instance_id,
            max_resident=self._max_resident,
            versions=self._versions,
            closed=lambda workflow_id: changelog.load_closed(store, workflow_id),
            closed_cache=self._closed_cache,
            topics=self._publish_topics,
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

    def _new_timer_producer(self) -> AIOKafkaProducer:
        return AIOKafkaProducer(
            **client_options(self._settings), enable_idempotence=True, linger_ms=1
        )

    async def _rebuild(self, owned: _Owned, core: EngineCore) -> int:
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
            core.apply_batch(batch)
            count += len(batch.events)
        return count

    async def _send_timer(self, command: FireTimer | MoveWorkflow | PurgeWorkflow) -> None:
        producer = self._timer_producer
        assert producer is not None
        try:
            await asyncio.wait_for(
                producer.send_and_wait(
                    self._topics.commands,
                    self._codec.encode_command(command, trusted=True),
                    key=encode_key(command.workflow_id),
                ),
                _TIMER_SEND_TIMEOUT_S,
            )
        except (KafkaError, TimeoutError) as err:
            # A producer whose sender task died accepts records and never sends them: replace
            # it, or no timer of this instance would fire again (the scheduler retries).
            await self._replace_timer_producer(producer, err)
            name = type(command).__name__
            raise InfrastructureError(f"{name} send failed: {err!r}", retriable=True) from err

    async def _replace_timer_producer(self, failed: AIOKafkaProducer, err: BaseException) -> None:
        async with self._timer_producer_lock:
            if self._timer_producer is not failed or self._stopped:
                return  # another timer replaced it already
            _log.warning(
                "timer producer failed; replacing it", extra={"error": repr(err), **RETRYING}
            )
            await _close_producer(failed, what="timer producer")
            fresh = self._new_timer_producer()
            try:
                await fresh.start()
            except KafkaError:
                await _close_producer(fresh, what="timer producer")
                return  # the broker is away: the next failed send tries again
            self._timer_producer = fresh

    # -- processing ------------------------------------------------------------------------

    async def _work(self, owned: _Owned) -> None:
        """One partition's worker, from assignment to revocation.

        Acquire the partition (retried with backoff while the broker is unreachable), then
        process whatever has queued, one transaction at a time; when emitting fails, drop the
        partition's state and producer and acquire it again.
        """
        failures = 0
        while not owned.closing:
            try:
                await self._acquire(owned)
            except sqlite3.DatabaseError as err:
                # an unusable local store (disk full, a damaged file): start it afresh from
                # the changelog
                _log.error(
                    "local store unusable; discarding it",
                    extra={"partition": owned.partition, "error": repr(err)},
                )
                self._discard_store(owned)
                await self._drop(owned)
                await _sleep_unless(owned, _ACQUIRE_BACKOFF.delay(1))
                continue
            except (KafkaError, InfrastructureError, TimeoutError, asyncio.CancelledError) as err:
                if isinstance(err, asyncio.CancelledError):
                    # Ours (revoked, stopping) ends the worker; one a Kafka client leaked out
                    # of an await (aiokafka's stop cancels its own fetches) is broker trouble.
                    raise_if_cancelling()
                failures += 1
                delay = _ACQUIRE_BACKOFF.delay(failures)
                _log.warning(
                    "partition acquisition failed; retrying",
                    extra={
                        "partition": owned.partition,
                        "attempt": failures,
                        "retry_in_s": delay,
                        "error": repr(err),
                        **RETRYING,
                    },
                )
                await self._drop(owned)
                await self._pause(owned, delay)
                continue
            failures = 0
            outcome = await self._serve(owned)
            if owned.closing:
                return  # revoked: _release drops the state
            await self._drop(owned)
            if outcome == "fenced":
                # Another producer took this partition's transactional id: a newer owner, so
                # a rebalance is under way and will revoke it from this instance. Should it
                # not, acquire it again after a session timeout (fencing the other back).
                await _sleep_unless(owned, self._session_timeout_ms / 1000)

    async def _pause(self, owned: _Owned, delay: float) -> None:
        """Back off ``delay`` seconds; less when revoked, or when the cluster returns."""
        waits = [
            asyncio.ensure_future(_sleep_unless(owned, delay)),
            asyncio.ensure_future(self.link.pause(delay)),
        ]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()
            await asyncio.gather(*waits, return_exceptions=True)

    async def _acquire(self, owned: _Owned) -> None:
        """Fence, rebuild, re-arm timers, rewind the consumer to the partition's position."""
        assert self._consumer is not None
        started = time.perf_counter()
        owned.acquisitions += 1
        tp = TopicPartition(self._topics.commands, owned.partition)
        # The producer first: starting it (transactional) fences any zombie owner and aborts
        # its open transaction, which would otherwise hold the read_committed rebuild back.
        owned.producer = self._new_producer(owned.partition)
        await asyncio.wait_for(owned.producer.start(), _STEP_TIMEOUT_S)
        core, events = await self._recover(owned)
        # Not consumer.committed(): it reads "coordinator still loading" as "none committed".
        group = await asyncio.wait_for(self._offsets.fetch(tp), _STEP_TIMEOUT_S)
        if owned.closing:
            return
        owned.resumed = self._position(owned, group)
        position = owned.resumed[0]
        owned.core = core
        owned.timers = TimerScheduler(owned.partition, self._send_timer)
        for request in core.pending_timers():
            owned.timers.arm(request.fire_at, request.command)
        owned.timers.start()
        # No await from here to `ready`: the fetch loop must not slip records of the old
        # position in between (aiokafka drops fetched data that no longer matches a seek).
        owned.queue.clear()
        owned.next_offset = owned.committed_offset = position
        owned.group_offset = group
        with contextlib.suppress(IllegalStateError):  # revoked meanwhile
            self._consumer.seek(tp, owned.next_offset)
        if owned.paused:
            self._resume(owned)
        if self._tune_gc and events:
            # The rebuilt workflows are long-lived: keep them out of every later full
            # collection (acyclic state is still freed by reference counting on release).
            gc.collect()
            gc.freeze()
        owned.ready = True
        owned.acquire_s = time.perf_counter() - started
        restored = owned.restored if self._changelog else None
        _log.info(
            "partition acquired",
            extra={
                "partition": owned.partition,
                "acquisition": owned.acquisitions,
                "events_replayed": None if restored else events,
                "restore": None
                if restored is None
                else {
                    "cold": restored.catch_up.cold,
                    "changelog_records_read": restored.catch_up.records,
                    "built_from_events": restored.built_events,
                    "open_workflows": restored.open_workflows,
                },
                "timers": owned.timers.pending,
                "position": position,
                "position_from": owned.resumed[1],
                "group_offset": group,
                "rebuild_s": round(time.perf_counter() - started, 3),
            },
        )

    def _position(self, owned: _Owned, group: int | None) -> tuple[int, str]:
        """Where the partition's commands resume, and from where that came: the position its
        changelog recorded with the state just restored; the group's offset where the changelog
        has none (off, or a log written before positions) or where the group's is further on
        (an engine of an older version served the partition since: it commits only there).
        Otherwise the group's is never ahead: only positions of committed transactions are
        committed to it (decision 69)."""
        restored = owned.restored if self._changelog else None
        recorded = None if restored is None else restored.position
        if recorded is None or (group is not None and group > recorded):
            return group or 0, "group"
        return recorded, "changelog"

    async def _recover(self, owned: _Owned) -> tuple[EngineCore, int]:
        """The partition's state: restored from the changelog, or (without one) rebuilt from
        the event log; and how many workflows (restored) or events (rebuilt) that took."""
        if self._changelog:
            core = await self._restore(owned)
            return core, len(core)
        core = self._new_core(owned.partition)
        owned.closed_ready = True  # every workflow is in memory
        return core, await self._rebuild(owned, core)

    async def _restore(self, owned: _Owned) -> EngineCore:
        """Restore the partition from its changelog (see :mod:`aion_engine._recovery`); an
        unreadable record makes the next attempt rebuild it from the event log."""
        if owned.store is None:
            owned.store = self._store(owned.partition)
        if owned.closed_store is None:
            owned.closed_store = self._closed_store(owned.partition)
        producer = owned.producer
        assert producer is not None
        rebuild, owned.rebuild = owned.rebuild, False
        began = time.perf_counter()
        owned.closed_s, owned.closed_records = None, 0
        try:
            restored = await restore_partition(
                self._settings,
                self._codec,
                producer=producer,
                store=owned.store,
                closed_store=owned.closed_store,
                partition=owned.partition,
                new_core=lambda changelog, store: self._new_core(owned.partition, changelog, store),
                rebuild=rebuild,
            )
        except ChangelogCorrupt as err:
            self._corrupt(owned, err)
            raise InfrastructureError(str(err), retriable=True) from err
        owned.restored = restored
        owned.changelog = restored.changelog
        owned.closed_load = asyncio.create_task(
            self._load_closed(owned, owned.closed_store, restored.closed_end, began),
            name=f"engine-p{owned.partition}-closed",
        )
        return restored.core

    async def _load_closed(
        self, owned: _Owned, store: ChangelogStore, end: int, began: float
    ) -> None:
        """Load engine-closed into its store (see :mod:`aion_engine._recovery`), then apply
        what the partition wrote to it meanwhile and let the commands that waited go on.
        Fails only on the broker or the store: the worker then acquires the partition again
        (the store keeps what was loaded)."""
        try:
            caught = await load_closed(self._settings, store, owned.partition, end)
            pending, owned.closed_pending = owned.closed_pending, []
            if pending:
                store.write(pending, pending[-1][1] + 1)
        finally:
            owned.wake.set()  # the worker may wait for this
        owned.closed_ready = True
        owned.closed_s = time.perf_counter() - began
        owned.closed_records = caught.records
        core = owned.core
        if core is not None:  # closed ones touched meanwhile were kept in memory
            core.release_closed([state.workflow_id for state in core.workflows_in_memory()])
        _log.info(
            "closed workflows loaded",
            extra={
                "partition": owned.partition,
                "cold": caught.cold,
                "changelog_records_read": caught.records,
                "pending_applied": len(pending),
                "since_acquisition_s": round(owned.closed_s, 3),
            },
        )

    def _expired(self, before_ms: int) -> list[tuple[int, str, int]]:
        """(partition, workflow id, last seq) of owned workflows closed before ``before_ms``."""
        found: list[tuple[int, str, int]] = []
        for partition, owned in list(self._owned.items()):
            store, changelog = owned.closed_store, owned.changelog
            if not owned.ready or not owned.closed_ready or store is None or changelog is None:
                continue
            try:
                expired = expired_in(
                    store, functools.partial(changelog.load_closed, store), before_ms
                )
            except ChangelogCorrupt as err:
                _log.warning("retention sweep skipped a partition", extra={"error": str(err)})
                continue
            found.extend((partition, workflow_id, seq) for workflow_id, seq in expired)
        return found

    def _store(self, partition: int) -> ChangelogStore:
        """Partition ``partition``'s local store (shared by its owner and the standby)."""
        store = self._stores.get(partition)
        if store is None:
            store = self._stores[partition] = ChangelogStore(
                store_path(self._settings, "engine", partition), stale_ms=ENGINE_STATE_STALE_MS
            )
        return store

    def _closed_store(self, partition: int) -> ChangelogStore:
        """Partition ``partition``'s local store of engine-closed."""
        store = self._closed_stores.get(partition)
        if store is None:
            store = self._closed_stores[partition] = ChangelogStore(
                _closed_path(store_path(self._settings, "engine", partition))
            )
        return store

    def _discard_store(self, owned: _Owned) -> None:
        owned.store = owned.closed_store = None
        state_path = store_path(self._settings, "engine", owned.partition)
        for stores, path in (
            (self._stores, state_path),
            (self._closed_stores, _closed_path(state_path)),
        ):
            store = stores.pop(owned.partition, None)
            if store is not None:
                store.close()
            for suffix in ("", "-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    path.with_name(path.name + suffix).unlink()

    def _corrupt(self, owned: _Owned, err: ChangelogCorrupt) -> None:
        _log.error(
            "unreadable engine changelog record; rebuilding the partition from the event log",
            extra={"partition": err.partition, "offset": err.offset, "error": str(err)},
        )
        owned.rebuild = True

    async def _drop(self, owned: _Owned) -> None:
        """Forget the partition's state; stop its closed load, its timers and (bounded) its
        producer."""
        owned.ready = False
        owned.core = None
        owned.changelog = None
        load, owned.closed_load = owned.closed_load, None
        if load is not None:
            load.cancel()  # it waits for a store write in progress, not for the broker
            await asyncio.gather(load, return_exceptions=True)
        owned.closed_ready = False
        owned.closed_pending = []
        timers, owned.timers = owned.timers, None
        if timers is not None:
            await timers.stop()
        producer, owned.producer = owned.producer, None
        if producer is not None:
            await _close_producer(producer, what=f"partition {owned.partition} producer")

    async def _serve(self, owned: _Owned) -> str:
        """Process queued records until revoked ("closing") or an emit fails ("failed",
        "fenced")."""
        queue = owned.queue
        while True:
            if owned.closing:
                return "closing"
            load = owned.closed_load
            if not owned.closed_ready and load is not None and load.done():
                return await self._wait_closed(owned) or "failed"  # it failed: acquire again
            if not queue:
                owned.wake.clear()
                await owned.wake.wait()
                continue
            records = [queue.popleft() for _ in range(min(len(queue), _MAX_BATCH))]
            records = [r for r in records if r.offset >= owned.next_offset]
            if records and not owned.closed_ready:
                records, held = self._split_at_closed(owned, records)
                queue.extendleft(reversed(held))
                if not records:
                    _log.info(
                        "a command waits for the closed workflows to load",
                        extra={"partition": owned.partition, "offset": held[0].offset},
                    )
                    outcome = await self._wait_closed(owned)
                    if outcome is not None:
                        return outcome
                    continue
            if records:
                outcome = await self._process(owned, records)
                if outcome is not None:
                    return outcome
            if owned.paused and len(queue) < _QUEUE_LOW and not owned.closing:
                self._resume(owned)

    @staticmethod
    def _split_at_closed(
        owned: _Owned, records: list[ConsumerRecord]
    ) -> tuple[list[ConsumerRecord], list[ConsumerRecord]]:
        """``records`` up to the first whose workflow is not in memory (it needs the closed
        load: a closed workflow, or an id a start must check against closed runs), and the
        rest. Records are processed in offset order, so the rest waits too."""
        core = owned.core
        assert core is not None
        for index, record in enumerate(records):
            try:
                workflow_id = decode_key(record.key)
            except DecodeError:
                continue  # dead-lettered without any state
            if not core.holds(workflow_id):
                return records[:index], records[index:]
        return records, []

    async def _wait_closed(self, owned: _Owned) -> str | None:
        """Wait for the closed load; "closing" if revoked meanwhile, "failed" if it failed
        (the partition is acquired again)."""
        while not owned.closed_ready:
            if owned.closing:
                return "closing"
            load = owned.closed_load
            if load is None or load.done():
                error = None if load is None or load.cancelled() else load.exception()
                _log.warning(
                    "loading the closed workflows failed; acquiring the partition again",
                    extra={"partition": owned.partition, "error": repr(error)},
                )
                return "failed"
            owned.wake.clear()
            await owned.wake.wait()
        return None

    def _resume(self, owned: _Owned) -> None:
        owned.paused = False
        assert self._consumer is not None
        with contextlib.suppress(IllegalStateError):  # revoked meanwhile
            self._consumer.resume(TopicPartition(self._topics.commands, owned.partition))

    async def _process(self, owned: _Owned, records: list[ConsumerRecord]) -> str | None:
        """Decide and emit one batch; None when it is done, else why the partition must be
        acquired again."""
        outputs: list[_Out] = []
        local: list[ActivityTask] = []
        changes: list[Change] = []
        touched: set[str] = set()
        try:
            for record in records:
                outputs.extend(self._decide(owned, record, local, changes, touched))
            if local:
                outputs.extend(await self._run_local_steps(owned, local, changes, touched))
        except ChangelogCorrupt as err:
            self._corrupt(owned, err)
            return "failed"
        if not await self._output_topics_ready(owned, outputs):
            return "failed"
        last = records[-1]
        owned.next_offset = last.offset + 1
        tp = TopicPartition(last.topic, last.partition)
        emit = self._emit_transactional if self._transactional else self._emit_at_least_once
        owned.emitting = True
        try:
            await asyncio.wait_for(
                emit(owned, outputs, changes, {tp: last.offset + 1}), _EMIT_TIMEOUT_S
            )
        except ProducerFenced:
            _log.error(
                "fenced by a newer owner; dropping the partition's state",
                extra={"partition": owned.partition},
            )
            return "fenced"
        except (KafkaError, TimeoutError, _ProducerBroken) as err:
            self.link.suspect()
            _log.warning(
                "emit failed; acquiring the partition again (rebuild from the log)",
                extra={"partition": owned.partition, "error": repr(err), **RETRYING},
            )
            return "failed"
        finally:
            owned.emitting = False
        if owned.core is not None and owned.closed_ready:
            # (during the closed load, closed workflows stay in memory: the store of
            # engine-closed gets their records after it)
            owned.core.release_closed(touched)
        return None

    async def _output_topics_ready(self, owned: _Owned, outputs: list[_Out]) -> bool:
        """Whether every topic the outputs go to exists: task queues' topics are created on
        first use; ``ctx.publish`` topics are checked (False: acquire the partition again)."""
        new_queues = {o.queue for o in outputs if o.queue and o.topic not in self._task_topics}
        if new_queues:
            try:
                await self._ensure_task_topics(new_queues)
            except (KafkaError, InfrastructureError, TimeoutError) as err:
                _log.warning(
                    "creating a task queue's topic failed; acquiring the partition again",
                    extra={
                        "partition": owned.partition,
                        "queues": sorted(new_queues),
                        "error": repr(err),
                    },
                )
                return False
        publishing = self._publish_topics.unknown(o.topic for o in outputs if o.published)
        if publishing:
            try:
                missing = await asyncio.wait_for(
                    self._publish_topics.check(publishing), _STEP_TIMEOUT_S
                )
            except (KafkaError, InfrastructureError, TimeoutError) as err:
                _log.warning(
                    "checking the topics to publish to failed; acquiring the partition again",
                    extra={"partition": owned.partition, "error": repr(err)},
                )
                return False
            if missing:
                # decided again after the acquisition, the runs publishing there block
                _log.warning(
                    "publishing to topics that do not exist; deciding the batch again",
                    extra={"partition": owned.partition, "topics": sorted(missing)},
                )
                return False
        return True

    async def _ensure_task_topics(self, queues: set[str]) -> None:
        """Create the topics of task queues used for the first time (once per process)."""
        for queue in sorted(queues):
            topic = self._topics.tasks(queue)
            await asyncio.wait_for(
                ensure_task_topic(self._settings, self._topics, queue), _STEP_TIMEOUT_S
            )
            self._task_topics.add(topic)
            _log.info("task queue ready", extra={"queue": queue, "topic": topic})

    async def _run_local_steps(
        self,
        owned: _Owned,
        local: list[ActivityTask],
        changes: list[Change],
        touched: set[str],
    ) -> list[_Out]:
        """Run the batch's local steps (``ctx.run``) concurrently, hand each report to the core
        as a worker's would arrive, and repeat while that runs more (at most
        ``local_steps.MAX_ROUNDS`` rounds): the outputs join the batch's transaction
        (:mod:`aion_engine.local_steps`)."""
        core = owned.core
        assert core is not None
        if self._threads is None:
            self._threads = ThreadPoolExecutor(_LOCAL_THREADS, thread_name_prefix="aion-step")
        outputs: list[_Out] = []

        def handle(report: local_steps.Report) -> list[ActivityTask]:
            more: list[ActivityTask] = []
            decision = core.handle(report, now=report.issued_at)
            encoded = self._record_changes(owned, report, decision, changes, touched)
            outputs.extend(self._outputs(owned, None, report, decision, more, encoded=encoded))
            return more

        await local_steps.run_batch(
            local,
            function_of=core.local_step,
            handle=handle,
            threads=self._threads,
            payload_limit=self._settings.payload_limit_bytes,
        )
        return outputs

    def _record_changes(
        self,
        owned: _Owned,
        command: Command,
        decision: Decision,
        changes: list[Change],
        touched: set[str],
    ) -> bytes | None:
        """The decision's batch encoded once (None: no batch); its changelog records join
        ``changes`` (they go out in the same transaction as the batch)."""
        touched.add(command.workflow_id)
        batch = decision.batch
        encoded = None if batch is None else self._codec.encode_batch(batch, trusted=True)
        core = owned.core
        if owned.changelog is not None and batch is not None and core is not None:
            state = core.state_of(batch.workflow_id)
            changes.extend(owned.changelog.changes(state, batch, encoded))
        return encoded

    def _decide(
        self,
        owned: _Owned,
        record: ConsumerRecord,
        local: list[ActivityTask],
        changes: list[Change],
        touched: set[str],
    ) -> list[_Out]:
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
        if isinstance(command, QueryWorkflow) and queries.expired(command, datetime.now(UTC)):
            _log.info("query past its deadline dropped", extra={**where, "name": command.name})
            return []
        # The record's timestamp, not the wall clock, is the command's time: processing the same
        # record again (at-least-once, after a crash) then yields byte-identical output.
        now = datetime.fromtimestamp(record.timestamp / 1000, UTC)
        core = owned.core
        assert core is not None  # records are only processed while the partition is acquired
        decision = core.handle(command, now=now)
        encoded = self._record_changes(owned, command, decision, changes, touched)
        return self._outputs(owned, record, command, decision, local, encoded=encoded)

    def _outputs(
        self,
        owned: _Owned,
        record: ConsumerRecord | None,
        command: Command,
        decision: Decision,
        local: list[ActivityTask],
        *,
        encoded: bytes | None,
    ) -> list[_Out]:
        """The records ``decision`` emits; attempts of local steps go to ``local`` instead of
        a topic (and their cancel notices nowhere: no attempt outlives its batch)."""
        out = [
            _Out(
                self._topics.commands,
                encode_key(outgoing.workflow_id),
                self._codec.encode_command(outgoing, trusted=True),
            )
            for outgoing in decision.outgoing
        ]
        batch = decision.batch
        if batch is not None and encoded is not None:
            out.append(
                _Out(
                    self._topics.events,
                    encode_key(batch.workflow_id),
                    encoded,
                    partition=owned.partition,
                    headers=_run_ended(batch),
                )
            )
            _log_failures(batch)
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
        if decision.answer is not None:
            out.append(self._answer(decision.answer, owned.partition))
        for queue, task in decision.tasks:
            if queue == LOCAL_TASK_QUEUE:
                if isinstance(task, ActivityTask):
                    local.append(task)
                continue
            out.append(
                _Out(
                    self._topics.tasks(queue),
                    encode_key(task.workflow_id),
                    self._codec.encode_task(task, trusted=True),
                    queue=queue,
                )
            )
        out.extend(
            _Out(p.topic, p.key, p.value, headers=p.headers, published=True)
            for p in decision.published
        )
        reason = decision.dead_letter_reason
        if reason is not None:
            _log.error(
                "command refused as an invariant violation",
                extra={"workflow_id": command.workflow_id, "command_id": command.command_id},
            )
            if record is not None:  # a local step's report has no record: nothing to skip
                out.append(self._dead_letter(record, reason, None))
        if owned.timers is not None:
            for command_id in decision.disarm:
                owned.timers.disarm(command_id)
            for request in decision.timers:
                owned.timers.arm(request.fire_at, request.command)
        return out

    def _answer(self, answer: QueryAnswer, partition: int) -> _Out:
        """A query's answer for the replies topic; one the codec refuses (a result over the
        payload limit) is answered as FAILED, saying why."""
        try:
            value = self._codec.encode_query_answer(answer, trusted=True)
        except (CodecError, InvalidInput) as err:
            failed = QueryAnswer(
                command_id=answer.command_id,
                workflow_id=answer.workflow_id,
                name=answer.name,
                status=QueryStatus.FAILED,
                message=f"the answer to query {answer.name!r} cannot be sent: {err}",
                answered_at=answer.answered_at,
                run_id=answer.run_id,
                known_queries=answer.known_queries,
                replayed=answer.replayed,
                last_seq=answer.last_seq,
            )
            value = self._codec.encode_query_answer(failed, trusted=True)
        return _Out(
            self._topics.replies, encode_key(answer.workflow_id), value, partition=partition
        )

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
        self,
        owned: _Owned,
        outputs: list[_Out],
        changes: list[Change],
        offsets: dict[TopicPartition, int],
    ) -> None:
        producer = owned.producer
        assert producer is not None
        try:
            await producer.begin_transaction()
        except AssertionError as err:  # aiokafka's state machine: a producer failed for good
            raise _ProducerBroken(f"begin_transaction refused: {err}") from err
        written: list[tuple[Change, int]] = []
        written_closed: list[tuple[Change, int]] = []
        (position,) = offsets.values()
        try:
            sends = await self._send_all(producer, outputs)
            if self._changelog:
                # The position goes with the state (decision 69): no offset in the group, so
                # no AddOffsetsToTxn and TxnOffsetCommit in the transaction.
                logged = write_changes(
                    producer,
                    self._topics.engine_state,
                    owned.partition,
                    [*(c for c in changes if not c.closed_log), position_change(position)],
                )
                logged_closed = write_changes(
                    producer,
                    self._topics.engine_closed,
                    owned.partition,
                    [c for c in changes if c.closed_log],
                )
                written, written_closed, *_ = await asyncio.gather(logged, logged_closed, *sends)  # type: ignore[assignment]
            else:
                await asyncio.gather(*sends)
                await producer.send_offsets_to_transaction(offsets, self._group)
        except KafkaError:
            with contextlib.suppress(AssertionError, KafkaError):
                # Best effort: the producer is dropped next anyway, and the next owner's
                # producer aborts whatever is left open.
                await producer.abort_transaction()
            raise
        await producer.commit_transaction()
        owned.committed_offset = position
        # Committed: the local stores follow (a crash before this only leaves them behind
        # their changelogs, which the next acquisition reads).
        try:
            if written and owned.store is not None:
                owned.store.write(written, written[-1][1] + 1)
            if written_closed and owned.closed_store is not None:
                if owned.closed_ready:
                    owned.closed_store.write(written_closed, written_closed[-1][1] + 1)
                else:  # the closed load writes it now: after it
                    owned.closed_pending.extend(written_closed)
        except sqlite3.Error as err:
            raise _ProducerBroken(f"the local store refused a write: {err!r}") from err

    async def _emit_at_least_once(
        self,
        owned: _Owned,
        outputs: list[_Out],
        changes: list[Change],
        offsets: dict[TopicPartition, int],
    ) -> None:
        producer = owned.producer
        assert producer is not None
        # Outgoing commands and tasks first, then events, then refusals and dead letters, each
        # acknowledged
        # before the next: a crash between them leaves only duplicates that command-id
        # deduplication absorbs, never an event whose outgoing commands were lost.
        # Published records go first too: at worst twice (each carries its aion.publish.id),
        # never lost behind the event that says it was published.
        stages = (
            [o for o in outputs if o.topic == self._topics.commands or o.queue or o.published],
            [o for o in outputs if o.topic == self._topics.events],
            [
                o
                for o in outputs
                if o.topic not in (self._topics.commands, self._topics.events)
                and not o.queue
                and not o.published
            ],
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
                headers = list(out.headers) or None
                futures.append(
                    await producer.send(out.topic, out.value, key=out.key, headers=headers)
                )
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


def _closed_path(state_path: Path) -> Path:
    """Where the store of engine-closed lives, beside engine-state's (``p<N>.sqlite``)."""
    return state_path.with_name(state_path.stem + "-closed" + state_path.suffix)


async def _sleep_unless(owned: _Owned, delay: float) -> None:
    """Sleep ``delay`` seconds, or less if the partition is revoked meanwhile."""
    owned.wake.clear()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(_closed(owned), delay)


async def _closed(owned: _Owned) -> None:
    while not owned.closing:
        await owned.wake.wait()
        owned.wake.clear()


async def _close_producer(producer: AIOKafkaProducer, *, what: str) -> None:
    """Stop ``producer`` within ``_CLOSE_TIMEOUT_S``: it flushes first, for ever if the broker
    is away, and what it holds is dropped anyway (uncommitted, so re-processed)."""
    await stop_producer(producer, timeout_s=_CLOSE_TIMEOUT_S, what=what)


_RUN_ENDINGS = (*TERMINAL_EVENT_TYPES, WorkflowBlocked)


def _run_ended(batch: EventBatch) -> tuple[tuple[str, bytes], ...]:
    """The :data:`RUN_ENDED_HEADER` when ``batch`` ends or blocks a run (the API's result
    long-polls wake on it, decision 60); no header otherwise."""
    for event in reversed(batch.events):
        if isinstance(event, _RUN_ENDINGS):
            return ((RUN_ENDED_HEADER, event.run_id.encode()),)
    return ()


def _log_failures(batch: EventBatch) -> None:
    """Log each run the batch fails, once, with the error's type and traceback (the user's
    file and line): where a workflow's exception is seen without asking the API."""
    for event in batch.events:
        if isinstance(event, WorkflowFailed):
            error = event.error
            _log.warning(
                "workflow failed: %s",
                error.message,
                extra={
                    "workflow_id": event.workflow_id,
                    "run_id": event.run_id,
                    "error_type": error.error_type,
                    "traceback": error.traceback,
                },
            )
