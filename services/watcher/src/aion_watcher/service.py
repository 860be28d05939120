"""The watcher service: fold ``aion.events``, issue ``RecordChildTerminal``, sweep what was missed.

Plain aiokafka rather than faust-streaming, for exact commit control: an events offset is
committed only after every record produced from the events before it was acknowledged, and
faust's commit is driven by its own acks and timers (and its exactly-once mode has open
duplicate bugs, see KAFKA-NOTES). The loop, per poll:

1. fold every fetched batch into :class:`~aion_watcher.state.WatchState`;
2. start sending the records that made due, each retried with capped backoff until acked
   (:func:`~aion_watcher.delivery.deliver`), *without* waiting for their acks before the next
   poll: a terminal fetched while earlier records are in flight is not queued behind them;
3. a background committer takes the polls' offsets in order, each once every record issued
   from that poll and from every poll before it is acknowledged, and commits them (group
   ``<prefix>.watcher``, ``read_committed``, manual commits), at most every
   ``_COMMIT_SPACING`` seconds; a revoke and ``stop()`` drain it first.

A crash anywhere before step 3 re-reads from the last commit and re-issues the same records
(same deterministic ids and bytes); the engine treats them as duplicates (by command id, and by
the AlreadyRecorded rule), so re-delivery is harmless.

Restore (issue 21): the state needs each run's ``WorkflowStarted`` (a terminal carries no
parent link). It is kept in ``<prefix>.watcher-state`` (open work) and
``<prefix>.watcher-closed`` (closed workflows; see :mod:`aion_watcher.stores`): when a
partition is assigned its local store of open work catches up with the changelog, the open
facts (open workflows, watches, recorded children of open runs) are loaded, and the consumer
goes on from the group's committed offset — O(open watches), whatever the history. The closed
workflows' store is loaded in the background (decision 57); until it is, a batch that needs
the facts of a workflow not in memory on that partition (:meth:`WatchState.waits_for`: a
closed one, e.g. the parent of a child's terminal) is held: its partition is paused at that
offset and resumed when the load ends. A load that fails or stalls (no progress for
``_LOAD_STALL_S``) is retried; one that fails otherwise crashes the service. A partition
whose changelog was never built in this layout (an upgrade) is rebuilt as before changelogs:
the consumer seeks to its beginning and folds everything below the committed offset *without*
issuing, then the rebuilt facts are written whole. Records known from a restore or rebuild
whose parent has not recorded them are left to the sweep.

Reconciliation (the reference's "missed doorbell degrades to store polling"): every
``sweep_interval`` the state lists records whose parent run is open (or unknown here) and has
not recorded the child ``grace_period`` after the record was issued, and they are sent again.
The truth is the watcher's own fold of ``aion.events``: no projector is needed.

Broker outages (issue 19): :attr:`WatcherService.link` probes the cluster. ``start()`` opens the
health endpoint first, then waits for the cluster and retries each step instead of exiting;
a failed poll backs off until the cluster answers again; sends retry as before (waiting for
the cluster's return rather than a long backoff). Readiness is false while it is away.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections import deque
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass

from aiokafka import ConsumerRebalanceListener
from aiokafka.errors import IllegalStateError
from aiokafka.structs import TopicPartition

from aion_common.codecs import Codec
from aion_common.domain import DecodeError, EventBatch, InfrastructureError, RecordChildTerminal
from aion_common.kafka import (
    DeadLetterPublisher,
    KeyedProducer,
    ManualCommitConsumer,
    Record,
    Topics,
    ensure_topics,
)
from aion_common.kafka.link import RETRYING, Backoff, BrokerLink
from aion_common.settings import Settings
from aion_watcher.changelog import FORMAT, WORKFLOW, ChangelogUnreadable
from aion_watcher.config import WatcherConfig
from aion_watcher.delivery import CommandSender, KafkaCommandSender, deliver, record_fields
from aion_watcher.metrics import HealthServer, WatcherMetrics
from aion_watcher.state import Applied, WatchState
from aion_watcher.stores import Logged, WatcherStores

__all__ = ["SenderWrapper", "WatcherService"]

_log = logging.getLogger("aion_watcher")
_POLL_MS = 100
_COMMIT_SPACING = 0.05  # seconds between offset commits; a crash re-issues at most this much more
_MAX_IN_FLIGHT = 5_000  # records sent and not yet acknowledged before polling pauses
_LAG_EVERY = 1.0  # seconds between consumer-lag gauge updates
_POLL_BACKOFF = Backoff(initial=0.2, maximum=5.0)
_LOAD_STALL_S = 30.0  # a closed load with no progress for this long is cancelled and retried


@dataclass(slots=True)
class _Ticket:
    """One poll's sends and the offsets that may be committed once they are all acknowledged
    (its changelog records among them: ``logged``, written to the stores when settled)."""

    sends: list[asyncio.Task[None]]
    offsets: dict[TopicPartition, int]
    logged: asyncio.Task[Logged] | None = None


SenderWrapper = Callable[[CommandSender], CommandSender]
"""Wraps the real sender (failure injection in tests)."""


class WatcherService:
    """The watcher: ``start()``, ``run()`` until ``stop()``; see the module docstring."""

    def __init__(
        self,
        settings: Settings,
        config: WatcherConfig | None = None,
        *,
        wrap_sender: SenderWrapper | None = None,
        codec: Codec | None = None,
    ) -> None:
        """Wire the service; nothing connects before :meth:`start`."""
        self.settings = settings
        self.config = config or WatcherConfig()
        self.topics = Topics(settings.topic_prefix)
        self.group_id = f"{settings.topic_prefix}.watcher"
        self.metrics = WatcherMetrics()
        self.link = BrokerLink(settings, name="watcher")
        """Whether the cluster answers (readiness); retries wait on it."""
        self._codec = codec or Codec(payload_limit=settings.payload_limit_bytes)
        use = self.config.changelog
        self.uses_changelog = settings.transactions != "off" if use is None else use
        self._stores = WatcherStores(settings, self._codec) if self.uses_changelog else None
        self.state = WatchState(
            blind_limit=self.config.blind_reissue_limit,
            engine_reports=self.config.engine_reports_terminals,
            codec=self._codec if self._stores is not None else None,
            closed=None if self._stores is None else self._stores.load_closed,
            partitions=settings.partitions,
        )
        self._building: set[int] = set()
        self._loads: dict[int, asyncio.Task[None]] = {}
        """Background loads of the owned partitions' closed workflows."""
        self._held: dict[int, int] = {}
        """Partitions paused at an offset whose batch waits for their closed load."""
        self._assigned_at: dict[int, float] = {}
        self.restores: dict[int, dict[str, object]] = {}
        """How each partition was last taken on: restored from the changelog, or replayed
        from the event log (seconds from assignment to ready, and what was read)."""
        self._wrap = wrap_sender
        self._lock = asyncio.Lock()
        self._replay_until: dict[int, int] = {}
        self._replaying: set[int] = set()
        self._stopping = asyncio.Event()
        self._run_done = asyncio.Event()
        self._run_done.set()
        self._producer = KeyedProducer(
            settings, idempotent=settings.transactions != "off", client_id="aion-watcher"
        )
        static = self.config.static_membership
        if static is None:  # auto: a default instance id is likely shared by several watchers
            static = settings.instance_id != Settings().instance_id
        self.group_instance_id = f"{self.group_id}.{settings.instance_id}" if static else None
        self._consumer = ManualCommitConsumer(
            settings,
            [self.topics.events],
            group_id=self.group_id,
            listener=_Rebalance(self),
            client_id=f"aion-watcher-{settings.instance_id}",
            group_instance_id=self.group_instance_id,
            session_timeout_ms=round(self.config.session_timeout * 1000),
            heartbeat_interval_ms=round(self.config.heartbeat_interval * 1000),
            fetch_max_wait_ms=round(self.config.fetch_wait * 1000),
            fetch_min_bytes=self.config.fetch_bytes,
        )
        self._sender: CommandSender | None = None
        self._dead_letters = DeadLetterPublisher(self._producer, self.topics.dead_letter)
        self._http: HealthServer | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._committer: asyncio.Task[None] | None = None
        self._tickets: deque[_Ticket] = deque()
        self._in_flight = 0
        self._ticket_added = asyncio.Event()
        self._commit_lock = asyncio.Lock()
        self._to_commit: dict[TopicPartition, int] = {}
        self._lag_at = 0.0
        self._started = self._stopped = False

    @property
    def http_port(self) -> int | None:
        """The health/metrics port, when the endpoint is enabled."""
        return None if self._http is None else self._http.port

    def rebuilding(self) -> frozenset[int]:
        """Partitions still being folded silently up to their committed offset."""
        return frozenset(self._replaying)

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Ensure the topics, connect the producer and consumer, open the HTTP endpoint."""
        if self._started:
            return
        self._started = True
        if self.config.port:  # first: a watcher waiting for the broker answers live, not ready
            self._http = HealthServer(
                self.health, self.metrics.registry, host=self.config.host, port=self.config.port
            )
            await self._http.start()
        await self.link.start()
        retry = self.link.retry
        await retry(lambda: ensure_topics(self.settings, self.topics), what="ensuring topics")
        await retry(self._producer.start, what="starting the producer")
        if self._stores is not None:
            await retry(self._stores.start, what="starting the changelog producer")
        real = KafkaCommandSender(self._producer, self.topics.commands, self._codec)
        self._sender = real if self._wrap is None else self._wrap(real)
        await retry(self._consumer.start, what="joining the group")
        _log.info(
            "watcher started",
            extra={
                "group": self.group_id,
                "group_instance_id": self.group_instance_id,
                "port": self.http_port,
            },
        )

    async def run(self) -> None:
        """Consume, issue and commit until :meth:`stop`; raise on a fatal error."""
        self._run_done.clear()
        self._sweeper = asyncio.create_task(self._sweep_loop(), name="watcher.sweep")
        self._committer = asyncio.create_task(self._commit_loop(), name="watcher.commit")
        background = (self._sweeper, self._committer)
        failures = 0
        try:
            while not self._stopping.is_set():
                await self._throttle()
                try:
                    batches = await self._consumer.poll(timeout_ms=_POLL_MS)
                except InfrastructureError as err:
                    if not err.retriable:
                        raise
                    failures += 1
                    await self._poll_failed(err, failures)
                    continue
                failures = 0
                if batches:
                    async with self._lock:
                        await self._process(batches)
                await self._after_poll()
                for task in (*background, *self._loads.values()):
                    if task.done():  # a sweep, send or load that failed for good crashes it
                        task.result()
                        raise RuntimeError(f"{task.get_name()} ended while the watcher runs")
        finally:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
            if not self._stopping.is_set():
                await self._abandon()  # crashed or cancelled: nothing more is sent or committed
            self._run_done.set()

    async def _poll_failed(self, err: InfrastructureError, failures: int) -> None:
        self.link.suspect()
        _log.warning(
            "polling the events failed; retrying",
            extra={"error": str(err), "attempt": failures, **RETRYING},
        )
        await self.link.pause(_POLL_BACKOFF.delay(failures))

    async def stop(self) -> None:
        """Let ``run`` finish its batch, then close everything; idempotent."""
        if self._stopped:
            return
        self._stopped = True
        self._stopping.set()
        await self._run_done.wait()
        if self._http is not None:
            await self._http.stop()
        try:
            await self._stop_loads(list(self._loads))
            await self._drain()
            await self._consumer.stop()
        finally:
            if self._committer is not None:
                self._committer.cancel()
                await asyncio.gather(self._committer, return_exceptions=True)
            await self._producer.stop()
            if self._stores is not None:
                await self._stores.stop()
            await self.link.stop()
        for partition in self.state.owned:  # released with the group membership
            self.state.drop_partition(partition)
        _log.info("watcher stopped", extra={"group": self.group_id})

    def health(self) -> Mapping[str, object]:
        """The ``/health`` body: ``ok`` (live) while starting or running, ``ready`` while
        it also reaches Kafka (``not_ready`` says why not), partitions and watch counts."""
        crashed = not self._stopping.is_set() and any(
            task is not None and task.done() for task in (self._sweeper, self._committer)
        )
        ok = self._started and not self._stopping.is_set() and not crashed
        reason = self.link.not_ready_reason()
        body: dict[str, object] = {
            "ok": ok,
            "ready": ok and reason is None,
            "partitions": sorted(self.state.owned),
            "rebuilding": sorted(self._replaying),
            "loading_closed": sorted(self.state.loading_partitions),
            "watches": self.state.watch_count(),
            "kafka": self.link.report(),
        }
        if reason is not None:
            body["not_ready"] = reason
        return body

    # -- the loop ---------------------------------------------------------------------------

    async def _process(self, batches: Mapping[TopicPartition, list[Record]]) -> None:
        loop = asyncio.get_running_loop()
        sends: list[asyncio.Task[None]] = []
        commits: dict[TopicPartition, int] = {}
        for tp, records in batches.items():
            if tp.partition not in self.state.owned or tp.partition in self._held:
                continue  # revoked while the fetch was in flight, or waiting for its load
            replay_end = self._replay_until.get(tp.partition, 0)
            for record in records:
                emitting = record.offset >= replay_end
                batch = await self._decode(record, emitting=emitting)
                if batch is not None and self._hold(tp, record, batch):
                    if record.offset > replay_end:
                        commits[tp] = record.offset
                    break
                applied = (
                    Applied()
                    if batch is None
                    else self.state.apply(batch, partition=record.partition, now=loop.time())
                )
                if emitting:
                    sends.extend(asyncio.create_task(self._send(c)) for c in applied.records)
                    self._count(applied)
            else:
                if records and records[-1].offset >= replay_end:
                    commits[tp] = records[-1].offset + 1
        logged = self._log_changes()
        if logged is not None:
            sends.append(asyncio.create_task(_settled(logged)))
        if sends or commits:
            # Sent now, acknowledged later: the committer commits ``commits`` once these and
            # every earlier poll's sends (the changelog's included) are acknowledged.
            self._tickets.append(_Ticket(sends, commits, logged))
            self._in_flight += len(sends)
            self._ticket_added.set()

    def _log_changes(self) -> asyncio.Task[Logged] | None:
        """Send the fold's changelog records (then, acknowledged, its deferred tombstones)."""
        changes = self.state.take_changes()
        deferred = self.state.take_deferred()
        if self._stores is None or not (changes or deferred):
            return None
        return asyncio.create_task(
            self._stores.send(changes, deferred, still_closed=self.state.still_closed)
        )

    def _hold(self, tp: TopicPartition, record: Record, batch: EventBatch) -> bool:
        """Whether ``batch`` waits for a closed load: then its partition is paused at it (the
        records after it are fetched again once resumed) and True."""
        waits_for = self.state.waits_for(batch)
        if waits_for is None:
            return False
        self._held[tp.partition] = record.offset
        raw = self._consumer.raw
        raw.seek(tp, record.offset)
        raw.pause(tp)
        _log.info(
            "events wait for the closed workflows to load",
            extra={
                "partition": tp.partition,
                "offset": record.offset,
                "workflow_id": batch.workflow_id,
                "needs": waits_for,
            },
        )
        return True

    async def _throttle(self) -> None:
        # Bounded memory while the commands topic is slow or away: stop polling until the
        # oldest poll's records are acknowledged.
        while self._in_flight > _MAX_IN_FLIGHT and self._tickets:
            await asyncio.wait(self._tickets[0].sends)
            if self._committer is not None and self._committer.done():
                return  # the run loop raises its error

    async def _commit_loop(self) -> None:
        """Commit each poll's offsets once its sends and all earlier ones are acknowledged.

        Acknowledged polls are merged into one commit, sent at most every ``_COMMIT_SPACING``
        seconds: the commit's round trip is off the terminal-to-record path anyway, and a crash
        re-issues the records since the last commit, which the engine absorbs.
        """
        loop = asyncio.get_running_loop()
        last = 0.0
        while True:
            if self._tickets:
                await self._settle_front()
                front_done = bool(self._tickets) and all(t.done() for t in self._tickets[0].sends)
                if front_done and loop.time() - last < _COMMIT_SPACING:
                    continue  # keep merging acknowledged polls
            elif not self._to_commit:
                self._ticket_added.clear()
                await self._ticket_added.wait()
                continue
            wait = last + _COMMIT_SPACING - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            await self._commit_pending()
            last = loop.time()

    async def _settle_front(self) -> None:
        """Wait for the oldest ticket's acks; move its offsets to the commit; raise its error."""
        ticket = self._tickets[0]
        if ticket.sends:
            await asyncio.wait(ticket.sends)
        if not self._tickets or self._tickets[0] is not ticket:
            return  # a drain settled it meanwhile
        self._tickets.popleft()
        self._in_flight -= len(ticket.sends)
        for send in ticket.sends:
            send.result()  # a non-retriable send error: nothing past it may be committed
        if ticket.logged is not None and self._stores is not None:
            logged = ticket.logged.result()
            self._stores.apply(logged)  # in poll order: a key's newest value is written last
            self.state.release_closed(
                c.key[1:].decode() for _, c, _ in logged.written if c.key[:1] == WORKFLOW
            )
        self._to_commit.update(ticket.offsets)

    async def _commit_pending(self) -> None:
        async with self._commit_lock:  # one commit at a time, so offsets never go backwards
            while self._to_commit:
                offsets, self._to_commit = self._to_commit, {}
                await self._commit(offsets)

    async def _abandon(self) -> None:
        """Cancel unacknowledged sends and the committer; a restart re-issues those records."""
        tasks: list[asyncio.Task[None]] = [t for ticket in self._tickets for t in ticket.sends]
        if self._committer is not None:
            tasks.append(self._committer)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tickets.clear()
        self._in_flight = 0
        self._to_commit = {}

    async def _drain(self) -> None:
        """Wait until every record sent so far is acknowledged and its offsets committed."""
        while self._tickets:
            await self._settle_front()
        await self._commit_pending()

    async def _commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        # Every record below these offsets is acknowledged. A failed commit (a rebalance took the
        # partition, the broker is away) only means re-reading and re-issuing identical records
        # later, which the engine ignores: log it and go on rather than crash.
        try:
            await self._consumer.commit(offsets)
        except InfrastructureError as err:
            _log.warning(
                "offset commit failed; records since the last commit may be re-issued",
                extra={
                    "error": str(err),
                    "offsets": {tp.partition: o for tp, o in offsets.items()},
                    **RETRYING,
                },
            )

    async def _decode(self, record: Record, *, emitting: bool) -> EventBatch | None:
        try:
            return self._codec.decode_batch(
                record.value, topic=record.topic, partition=record.partition, offset=record.offset
            )
        except DecodeError as err:
            if emitting:  # below the committed offset it was dead-lettered already
                _log.error("undecodable event record: dead-lettered", extra={"error": str(err)})
                await self._dead_letters.publish(record, f"watcher: {err}", err)
                self.metrics.dead_letters.inc()
            return None

    def _count(self, applied: Applied) -> None:
        self.metrics.terminals_seen.inc(applied.terminals)
        self.metrics.records_suppressed.inc(applied.suppressed)
        if applied.duplicate:
            self.metrics.duplicate_batches.inc()

    async def _send(self, command: RecordChildTerminal) -> None:
        assert self._sender is not None, "start() wires the sender"
        await deliver(
            self._sender,
            command,
            self.config,
            on_retry=self._send_failed,
            sleep=self.link.pause,  # a retry goes out as soon as the cluster is back
        )
        self.metrics.records_issued.inc()
        if _log.isEnabledFor(logging.DEBUG):
            _log.debug("child terminal record issued", extra=record_fields(command))

    def _send_failed(self) -> None:
        self.metrics.retries.inc()
        self.link.suspect()

    async def _after_poll(self) -> None:
        now = asyncio.get_running_loop().time()
        if not self._replaying and now - self._lag_at < _LAG_EVERY:
            return
        self._lag_at = now
        raw = self._consumer.raw
        for tp in raw.assignment():
            position: int = await raw.position(tp)
            if tp.partition in self._replaying and position >= self._replay_until[tp.partition]:
                self._replaying.discard(tp.partition)
                _log.info("partition rebuilt", extra={"partition": tp.partition, "at": position})
                await self._write_rebuilt(tp.partition)
                began = self._assigned_at.get(tp.partition, time.perf_counter())
                self.restores[tp.partition] = {
                    "seconds": round(time.perf_counter() - began, 3),
                    "replayed_to": position,
                }
            end = raw.last_stable_offset(tp) or raw.highwater(tp)
            if end is not None:
                self.metrics.lag.labels(partition=str(tp.partition)).set(max(0, end - position))
        self.metrics.watches.set(self.state.watch_count())

    # -- reconciliation ---------------------------------------------------------------------

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.sweep_interval)
            await self.sweep_once()

    async def sweep_once(self) -> int:
        """Re-issue what the parents have not recorded after the grace period; return how many.

        Skipped while a partition rebuilds or loads its closed workflows: its parents' facts
        are still incomplete.
        """
        if self._replaying or self.state.loading_partitions:
            return 0
        async with self._lock:
            now = asyncio.get_running_loop().time()
            items = self.state.sweep(now=now, grace=self.config.grace_period)
            logged = self._log_changes()
            if logged is not None:
                self._tickets.append(_Ticket([asyncio.create_task(_settled(logged))], {}, logged))
                self._in_flight += 1
                self._ticket_added.set()
        for item in items:
            self.metrics.reconciliation_hits.labels(parent_status=item.parent_status.value).inc()
            _log.info(
                "reconciliation: parent has not recorded the child; re-issuing",
                extra={**record_fields(item.command), "parent_status": item.parent_status.value},
            )
        if items:
            async with asyncio.TaskGroup() as group:
                for item in items:
                    group.create_task(self._send(item.command))
        return len(items)

    # -- rebalancing ------------------------------------------------------------------------

    async def assigned(self, partitions: Collection[TopicPartition]) -> None:
        """Restore each partition from its changelog and go on from the committed offset; or
        (never built) read it from 0, folding silently below its committed offset."""
        async with self._lock:
            raw = self._consumer.raw
            for tp in partitions:
                partition = tp.partition
                self._assigned_at[partition] = time.perf_counter()
                committed = await raw.committed(tp) or 0
                if self._stores is not None and await self._restore(partition):
                    self.state.own(partition)  # after its facts are in: it counts as ready
                    self.state.loading(partition)
                    self._stores.begin_closed_load(partition)
                    await self._stop_loads([partition])  # (revoked first: none is left)
                    self._loads[partition] = asyncio.create_task(
                        self._load_closed(partition), name=f"watcher.p{partition}.closed-load"
                    )
                    raw.seek(tp, committed)
                    _log.info(
                        "partition assigned",
                        extra={"partition": partition, "restored": self.restores[partition]},
                    )
                    continue
                self.state.own(partition)
                self._replay_until[partition] = committed
                if committed:
                    self._replaying.add(partition)
                else:
                    self.restores[partition] = {"seconds": 0.0, "replayed_to": 0}
                if self._stores is not None:
                    # What the closed store holds is what the rebuild replaces (an earlier
                    # build, or the unreadable record): the fold must not read workflows back
                    # from it, or those it read would stay out of the rebuilt facts and go
                    # stale. (The open store is kept until the build: its keys that the
                    # rebuilt facts lack are tombstoned then.)
                    self._stores.reset_closed(partition)
                    if committed:
                        self.state.silence(partition)  # written whole once rebuilt
                        self._building.add(partition)
                    else:
                        await self._stores.mark_built(partition)
                raw.seek(tp, 0)
                _log.info(
                    "partition assigned", extra={"partition": partition, "rebuild_to": committed}
                )

    async def _write_rebuilt(self, partition: int) -> None:
        """A partition rebuilt from the event log: write its facts whole to the changelog."""
        if partition not in self._building or self._stores is None:
            return
        self._building.discard(partition)
        async with self._lock:  # no fold between the dump and recording changes again
            facts = self.state.dump(partition)
            self.state.silence(partition, silent=False)
            await self._stores.build(partition, facts)
        self.state.release_closed(
            c.key[1:].decode() for c in facts if c.key[:1] == WORKFLOW and not c.open
        )
        _log.info("watcher changelog built", extra={"partition": partition, "records": len(facts)})

    async def _restore(self, partition: int) -> bool:
        """Load the partition's open facts from its changelog; False if it must be rebuilt
        from the event log (never built, or a record that does not decode)."""
        assert self._stores is not None
        began = time.perf_counter()
        read = await self._stores.catch_up(partition)
        store = self._stores.store(partition)
        marker = store.marker
        if marker is None or marker.state != "complete" or marker.version != FORMAT:
            _log.warning(
                "watcher changelog never built in this layout: rebuilding the partition from "
                "the event log",
                extra={
                    "partition": partition,
                    "marker": None if marker is None else f"{marker.state} v{marker.version}",
                },
            )
            return False
        now = asyncio.get_running_loop().time()
        try:
            opened = self.state.restore(partition, store.scan_open(), now)
        except ChangelogUnreadable as err:
            _log.error(
                "unreadable watcher changelog record; rebuilding the partition from the event log",
                extra={"partition": partition, "error": f"partition {partition}: {err}"},
            )
            self.state.drop_partition(partition)
            return False
        self.restores[partition] = {
            "seconds": round(time.perf_counter() - self._assigned_at.get(partition, began), 3),
            "changelog_records_read": read,
            "open_workflows": opened,
            "watches": self.state.watch_count(),
        }
        return True

    async def _load_closed(self, partition: int) -> None:
        """Load the partition's closed workflows into their store, retrying a failure or a
        stall, then let the events held for them go on."""
        assert self._stores is not None
        stores = self._stores
        began = self._assigned_at.get(partition, time.perf_counter())
        attempt = 0
        while True:
            try:
                async with asyncio.timeout(_LOAD_STALL_S) as deadline:
                    caught = await stores.load_closed_store(partition, _extends(deadline))
                break
            except (InfrastructureError, TimeoutError, sqlite3.Error, OSError) as err:
                attempt += 1
                _log.warning(
                    "loading the closed workflows failed; retrying",
                    extra={"partition": partition, "error": repr(err), "attempt": attempt},
                )
                await self.link.pause(_POLL_BACKOFF.delay(attempt))
        async with self._lock:
            applied = stores.closed_loaded(partition)
            self.state.loading(partition, active=False)
            held = self._held.pop(partition, None)
            if held is not None:
                with contextlib.suppress(IllegalStateError):  # revoked meanwhile
                    self._consumer.raw.resume(TopicPartition(self.topics.events, partition))
            seconds = round(time.perf_counter() - began, 3)
            report = self.restores.get(partition)
            if report is not None:
                report.update(closed_loaded_s=seconds, closed_records_read=caught.records)
            self._loads.pop(partition, None)
        _log.info(
            "closed workflows loaded",
            extra={
                "partition": partition,
                "cold": caught.cold,
                "changelog_records_read": caught.records,
                "pending_applied": applied,
                "held_from": held,
                "since_assignment_s": seconds,
            },
        )

    async def _stop_loads(self, partitions: Collection[int]) -> None:
        """Cancel the partitions' closed loads (each waits for a store write in progress)."""
        tasks = [t for p in partitions if (t := self._loads.pop(p, None)) is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def revoked(self, partitions: Collection[TopicPartition]) -> None:
        """Drop what the revoked partitions taught the state (their new owner rebuilds it)."""
        async with self._lock:
            await self._drain()  # what was acknowledged is committed before handing over
            await self._stop_loads([tp.partition for tp in partitions])
            for tp in partitions:
                self._held.pop(tp.partition, None)
                self.state.drop_partition(tp.partition)
                self._replay_until.pop(tp.partition, None)
                self._replaying.discard(tp.partition)
                self._building.discard(tp.partition)
                if self._stores is not None:
                    self._stores.close(tp.partition)
                with contextlib.suppress(KeyError):
                    self.metrics.lag.remove(str(tp.partition))
                _log.info("partition revoked", extra={"partition": tp.partition})


def _extends(deadline: asyncio.Timeout) -> Callable[[int, int], None]:
    """A load's progress callback: each chunk loaded moves its stall deadline on."""

    def progress(_read: int, _total: int) -> None:
        deadline.reschedule(asyncio.get_running_loop().time() + _LOAD_STALL_S)

    return progress


async def _settled(task: asyncio.Task[Logged]) -> None:
    """Waits for a changelog write (its error surfaces where the ticket is settled)."""
    await task


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped
    def __init__(self, service: WatcherService) -> None:
        self._service = service

    async def on_partitions_revoked(self, revoked: Collection[TopicPartition]) -> None:
        await self._service.revoked(revoked)

    async def on_partitions_assigned(self, assigned: Collection[TopicPartition]) -> None:
        await self._service.assigned(assigned)
