"""The worker service: runs the activities of one task queue, many at a time, at least once.

Topology, in one place:

- one consumer group ``<prefix>.worker.<queue>`` on ``<prefix>.tasks.<queue>`` (read_committed:
  a task exists once the engine's transaction that scheduled it committed);
- each task record becomes an :class:`~aion_worker.attempt.Attempt` once a slot is free
  (``max_concurrent``); fetched tasks wait in a bounded backlog, and partitions are paused
  while it is full, so a cancel notice behind a waiting task is still read soon;
- every outcome goes back to ``<prefix>.commands`` keyed by the workflow id, with a command
  id derived from (activity, attempt, kind), retried with capped backoff until acknowledged;
- offsets are committed only up to the oldest task not yet reported (:class:`Watermarks`): a
  crash re-delivers the unfinished tasks (and any finished after them — at-least-once, which
  the engine deduplicates by command id);
- a cancel notice cancels the attempt running here (``CancelledError`` in an async activity,
  from ``heartbeat()`` in a sync one) or drops a task still waiting;
- SIGTERM: stop fetching, give running attempts ``shutdown_grace`` to finish, abandon the rest
  (unreported and uncommitted: the next owner runs them again), commit, leave the group.

Broker outages are waited out as by every aion service (issue 19): :attr:`WorkerService.link`
probes the cluster, logs one line when it is lost and one when it is back, and makes the
worker not ready meanwhile; start-up steps, polls and reports retry, waiting for its return.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections import deque
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiokafka import ConsumerRebalanceListener
from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition

from aion_common.codecs import Codec, decode_key
from aion_common.domain import (
    ActivityTask,
    CancelActivityTask,
    Command,
    DecodeError,
    InfrastructureError,
    RecordActivityStarted,
    activity_outcome_id,
)
from aion_common.kafka.admin import ensure_task_topic, ensure_topics
from aion_common.kafka.consumer import ManualCommitConsumer, Record
from aion_common.kafka.dead_letter import DeadLetterPublisher
from aion_common.kafka.link import RETRYING, Backoff, BrokerLink
from aion_common.kafka.producer import KeyedProducer
from aion_common.kafka.topics import Topics
from aion_common.runtime.health import HealthServer
from aion_common.settings import Settings
from aion_worker.attempt import Attempt, Outcome
from aion_worker.config import WorkerConfig
from aion_worker.heartbeats import Heartbeats
from aion_worker.metrics import WorkerMetrics
from aion_worker.registry import ActivityRegistry
from aion_worker.watermarks import Watermarks

__all__ = ["WorkerService"]

_log = logging.getLogger("aion.worker")
_POLL_MS = 100
_COMMIT_EVERY_S = 0.2
_LAZY_START_S = 0.1  # an attempt still running this long reports that it started
_BACKOFF_FIRST_S = 0.05
_BACKOFF_MAX_S = 5.0
_BACKOFF = Backoff(initial=_BACKOFF_FIRST_S, maximum=_BACKOFF_MAX_S)


@dataclass(slots=True)
class _Running:
    record: Record
    attempt: Attempt
    heartbeats: Heartbeats
    started_sent: bool = False
    lazy_start: asyncio.TimerHandle | None = None


@dataclass(slots=True)
class _Waiting:
    record: Record
    task: ActivityTask
    dropped: bool = False


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped
    def __init__(self, service: WorkerService) -> None:
        self._service = service

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self._service.revoked([tp.partition for tp in revoked])

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        self._service.assigned([tp.partition for tp in assigned])


@dataclass(slots=True)
class _Status:
    started: bool = False
    stopping: bool = False
    partitions: set[int] = field(default_factory=set)


class WorkerService:
    """Runs the activities of ``config.task_queue`` that ``registry`` holds."""

    def __init__(
        self,
        settings: Settings,
        config: WorkerConfig,
        registry: ActivityRegistry,
        *,
        codec: Codec | None = None,
    ) -> None:
        self.settings = settings
        self.config = config
        self.registry = registry
        self.metrics = WorkerMetrics()
        self.link = BrokerLink(settings, name="worker")
        """Whether the cluster answers (readiness); retries wait on it."""
        self.payload_limit = settings.payload_limit_bytes
        self.worker_id = f"{settings.instance_id}@{socket.gethostname()}:{os.getpid()}"[:128]
        self._codec = codec or Codec(payload_limit=settings.payload_limit_bytes)
        self._topics = Topics(settings.topic_prefix)
        self.topic = self._topics.tasks(config.task_queue)
        self.group_id = f"{settings.topic_prefix}.worker.{config.task_queue}"
        static = config.static_membership
        if static is None:
            static = settings.instance_id != Settings().instance_id
        self.group_instance_id = f"{self.group_id}.{settings.instance_id}" if static else None
        self._producer = KeyedProducer(
            settings, idempotent=settings.transactions != "off", client_id="aion-worker"
        )
        self._consumer = ManualCommitConsumer(
            settings,
            [self.topic],
            group_id=self.group_id,
            listener=_Rebalance(self),
            client_id=f"aion-worker-{settings.instance_id}",
            group_instance_id=self.group_instance_id,
            session_timeout_ms=round(config.session_timeout * 1000),
            heartbeat_interval_ms=round(min(3.0, config.session_timeout / 5) * 1000),
            fetch_max_wait_ms=100,
        )
        self._dead_letters = DeadLetterPublisher(self._producer, self._topics.dead_letter)
        self._threads = ThreadPoolExecutor(config.thread_count, thread_name_prefix="aion-activity")
        self._marks = Watermarks()
        self._committed: dict[int, int] = {}
        self._waiting: deque[_Waiting] = deque()
        self._waiting_by_id: dict[str, _Waiting] = {}
        self._running: dict[str, _Running] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self._paused = False
        self._closing = False  # past the shutdown grace: sends give up
        self._status = _Status()
        self._run_done = asyncio.Event()
        self._run_done.set()
        self._http: HealthServer | None = None
        self._stopped = False
        self._failure: BaseException | None = None

    @property
    def http_port(self) -> int | None:
        """The health/metrics port, when the endpoint is enabled."""
        return None if self._http is None else self._http.port

    @property
    def backlog_limit(self) -> int:
        """Tasks fetched and waiting for a slot before fetching pauses."""
        return max(64, 2 * self.config.max_concurrent)

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Ensure the topics (waiting for the broker), connect, open the HTTP endpoint."""
        if self._status.started:
            return
        if self.config.port:
            self._http = HealthServer(
                self.health, self.metrics.registry, host=self.config.host, port=self.config.port
            )
            await self._http.start()
        await self._until_connected()
        self._status.started = True
        _log.info(
            "worker started",
            extra={
                "worker": self.worker_id,
                "task_queue": self.config.task_queue,
                "topic": self.topic,
                "group_instance_id": self.group_instance_id,
                "activities": list(self.registry.names()),
                "max_concurrent": self.config.max_concurrent,
                "port": self.http_port,
            },
        )

    async def _until_connected(self) -> None:
        """Topics, producer and consumer; a broker that is not there yet is waited for."""
        await self.link.start()
        retry = self.link.retry
        await retry(lambda: ensure_topics(self.settings, self._topics), what="ensuring topics")
        await retry(
            lambda: ensure_task_topic(self.settings, self._topics, self.config.task_queue),
            what="ensuring the task topic",
        )
        await retry(self._producer.start, what="starting the producer")
        await retry(self._consumer.start, what="joining the group")

    async def run(self) -> None:
        """Fetch, run and report until :meth:`stop`; raise on a fatal error."""
        if not self._status.started:
            await self.start()
        self._run_done.clear()
        committer = asyncio.create_task(self._commit_loop(), name="worker.commit")
        try:
            while not self._status.stopping:
                if self._failure is not None:
                    raise self._failure
                batches = await self._poll()
                for tp, records in batches.items():
                    if tp.partition not in self._status.partitions:
                        continue  # revoked while the fetch was in flight
                    for record in records:
                        self._take(record)
                self._start_waiting()
                self._flow_control()
                if committer.done():
                    committer.result()
                    raise RuntimeError("the worker's committer ended while it runs")
        finally:
            committer.cancel()
            await asyncio.gather(committer, return_exceptions=True)
            self._run_done.set()

    async def _poll(self) -> Mapping[TopicPartition, list[Record]]:
        try:
            batches = await self._consumer.poll(timeout_ms=_POLL_MS)
        except InfrastructureError as err:
            if not err.retriable:
                raise
            self.link.suspect()
            _log.warning("fetching tasks failed; retrying", extra={"error": str(err), **RETRYING})
            await self.link.pause(0.5)
            return {}
        return batches

    async def stop(self) -> None:
        """Stop fetching, let running attempts finish within the grace period, abandon the
        rest, commit, and leave the group; idempotent."""
        if self._stopped:
            return
        self._stopped = True
        self._status.stopping = True
        await self._run_done.wait()
        for waiting in self._waiting:
            waiting.dropped = True  # never started: uncommitted, so the next owner runs them
        self._waiting.clear()
        grace = self.config.shutdown_grace
        running = list(self._running.values())
        if running:
            _log.info(
                "stopping: waiting for running attempts",
                extra={"running": len(running), "grace_s": grace},
            )
            await self._wait_background(grace)
        self._closing = True
        for entry in list(self._running.values()):
            entry.attempt.abandon()
        await self._wait_background(5.0)
        with contextlib.suppress(InfrastructureError, KafkaError):
            await self._commit()
        try:
            await self._consumer.stop()
        finally:
            await self._producer.stop()
            self._threads.shutdown(wait=False, cancel_futures=True)
            if self._http is not None:
                await self._http.stop()
            await self.link.stop()
        _log.info("worker stopped", extra={"worker": self.worker_id})

    async def _wait_background(self, seconds: float) -> None:
        if self._background:
            await asyncio.wait(set(self._background), timeout=seconds)

    def health(self) -> Mapping[str, object]:
        """The ``/health`` body: live while starting or running; ready while the broker
        answers (``not_ready`` says why not)."""
        ok = not self._status.stopping and self._failure is None
        reason = self.link.not_ready_reason()
        if reason is None and not self._status.started:
            reason = "starting"
        body: dict[str, object] = {
            "ok": ok,
            "ready": ok and reason is None,
            "kafka": self.link.report(),
            "task_queue": self.config.task_queue,
            "partitions": sorted(self._status.partitions),
            "running": len(self._running),
            "waiting": len(self._waiting),
            "activities": list(self.registry.names()),
        }
        if reason is not None:
            body["not_ready"] = reason
        return body

    # -- rebalances -------------------------------------------------------------------------

    def assigned(self, partitions: list[int]) -> None:
        """The group gave this worker ``partitions``; reading starts at their commits."""
        self._status.partitions.update(partitions)
        _log.info("task partitions assigned", extra={"partitions": sorted(partitions)})

    async def revoked(self, partitions: list[int]) -> None:
        """Commit what is done, then forget the partitions: their next owner reads from the
        commit (attempts still running here finish and report; the engine keeps the first)."""
        with contextlib.suppress(InfrastructureError, KafkaError):
            await self._commit(partitions)
        for partition in partitions:
            self._status.partitions.discard(partition)
            self._marks.forget(partition)
            self._committed.pop(partition, None)
        for waiting in self._waiting:
            if waiting.record.partition in partitions:
                waiting.dropped = True
        self._waiting = deque(w for w in self._waiting if not w.dropped)
        self._waiting_by_id = {w.task.activity_id: w for w in self._waiting}
        _log.info("task partitions revoked", extra={"partitions": sorted(partitions)})

    # -- records ----------------------------------------------------------------------------

    def _take(self, record: Record) -> None:
        where = {"topic": record.topic, "partition": record.partition, "offset": record.offset}
        self._marks.take(record.partition, record.offset)
        try:
            task = self._decode(record)
        except DecodeError as err:
            _log.warning(
                "undecodable task record dead-lettered", extra={**where, "error": str(err)}
            )
            self.metrics.dead_letters.inc()
            self.spawn(self._dead_letter(record, err), name="worker.dead-letter")
            return
        if isinstance(task, CancelActivityTask):
            self._cancel(task)
            self._marks.done(record.partition, record.offset)
            return
        deadline = task.schedule_to_close_deadline
        if deadline is not None and deadline <= datetime.now(UTC):
            self.metrics.skipped.inc()  # the engine has timed the activity out already
            self._marks.done(record.partition, record.offset)
            return
        waiting = _Waiting(record, task)
        self._waiting.append(waiting)
        self._waiting_by_id[task.activity_id] = waiting

    def _decode(self, record: Record) -> ActivityTask | CancelActivityTask:
        where = {"topic": record.topic, "partition": record.partition, "offset": record.offset}
        workflow_id = decode_key(record.key, **where)
        task = self._codec.decode_task(record.value, **where)
        if task.workflow_id != workflow_id:
            raise DecodeError(f"record key {workflow_id!r} is not the task's workflow id", **where)
        return task

    def _cancel(self, notice: CancelActivityTask) -> None:
        running = self._running.get(notice.activity_id)
        if running is not None and notice.target_attempt in (0, running.attempt.task.attempt):
            _log.info(
                "cancelling a running attempt",
                extra={
                    "workflow_id": notice.workflow_id,
                    "activity_id": notice.activity_id,
                    "attempt": running.attempt.task.attempt,
                    "reason": notice.reason,
                },
            )
            running.attempt.cancel(notice.reason)
        waiting = self._waiting_by_id.get(notice.activity_id)
        if waiting is not None and notice.target_attempt in (0, waiting.task.attempt):
            waiting.dropped = True  # never started; the engine ended it already
            del self._waiting_by_id[notice.activity_id]
            self._marks.done(waiting.record.partition, waiting.record.offset)
            self.metrics.skipped.inc()

    def _start_waiting(self) -> None:
        while self._waiting and len(self._running) < self.config.max_concurrent:
            waiting = self._waiting.popleft()
            if waiting.dropped:
                continue
            self._waiting_by_id.pop(waiting.task.activity_id, None)
            self._launch(waiting.record, waiting.task)
        self.metrics.backlog.set(len(self._waiting))

    def _flow_control(self) -> None:
        consumer = self._consumer.raw
        if not self._paused and len(self._waiting) >= self.backlog_limit:
            consumer.pause(*consumer.assignment())
            self._paused = True
        elif self._paused and len(self._waiting) < self.backlog_limit // 2:
            consumer.resume(*consumer.assignment())
            self._paused = False

    def _launch(self, record: Record, task: ActivityTask) -> None:
        heartbeats = Heartbeats(task, self.send_command, self.spawn, limit=self.payload_limit)
        attempt = Attempt(
            task,
            self.registry.get(task.activity_type),
            known=self.registry.names(),
            worker=self.worker_id,
            threads=self._threads,
            payload_limit=self.payload_limit,
            on_heartbeat=heartbeats,
        )
        previous = self._running.get(task.activity_id)
        if previous is not None:
            previous.attempt.abandon()  # a newer attempt of the same activity: the old is stale
        entry = _Running(record, attempt, heartbeats)
        self._running[task.activity_id] = entry
        self.metrics.running.set(len(self._running))
        self.metrics.queued.observe(
            max(0.0, (attempt.started_at - task.attempt_scheduled_at).total_seconds())
        )
        if task.attempt > 1:
            self.metrics.retried.inc()
        self.spawn(self._execute(entry), name=f"activity {task.activity_type}")

    async def _execute(self, entry: _Running) -> None:
        attempt, task = entry.attempt, entry.attempt.task
        began = time.perf_counter()
        if task.options.schedule_to_start_ms is not None:
            await self._send_started(entry)  # the engine's schedule-to-start clock is running
        else:
            entry.lazy_start = asyncio.get_running_loop().call_later(
                _LAZY_START_S, lambda: self.spawn(self._send_started(entry), name="worker.started")
            )
        try:
            outcome = await attempt.run()
        finally:
            if entry.lazy_start is not None:
                entry.lazy_start.cancel()
            entry.heartbeats.close()
        try:
            await self._report(entry, outcome, time.perf_counter() - began)
        finally:
            if self._running.get(task.activity_id) is entry:
                del self._running[task.activity_id]
            self.metrics.running.set(len(self._running))
            if not self._status.stopping:
                self._start_waiting()  # a slot is free

    async def _send_started(self, entry: _Running) -> None:
        if entry.started_sent:
            return
        entry.started_sent = True
        task = entry.attempt.task
        await self.send_command(
            RecordActivityStarted(
                command_id=activity_outcome_id(task.activity_id, task.attempt, "started"),
                issued_at=datetime.now(UTC),
                workflow_id=task.workflow_id,
                run_id=task.run_id,
                activity_id=task.activity_id,
                attempt=task.attempt,
                worker=self.worker_id,
            )
        )

    async def _report(self, entry: _Running, outcome: Outcome, seconds: float) -> None:
        record, task = entry.record, entry.attempt.task
        log = {
            "workflow_id": task.workflow_id,
            "run_id": task.run_id,
            "activity_id": task.activity_id,
            "activity_type": task.activity_type,
            "attempt": task.attempt,
        }
        if outcome.abandoned:
            self.metrics.abandoned.inc()
            if self._status.stopping:
                return  # uncommitted: the partition's next owner runs it again
            _log.warning("attempt abandoned past its deadline", extra=log)
            self._marks.done(record.partition, record.offset)
            return
        if outcome.result is not None:
            self.metrics.completed.inc()
        else:
            assert outcome.error is not None
            (self.metrics.cancelled if outcome.cancelled else self.metrics.failed).inc()
            _log.info("attempt failed", extra={**log, "error": outcome.error.message})
        command = outcome.report(task)
        self.metrics.latency.observe(seconds)
        if await self.send_command(command):
            self._marks.done(record.partition, record.offset)

    async def send_command(self, command: Command) -> bool:
        """Send ``command`` to the engine, retrying with capped backoff until the broker
        acknowledges it; False if it could not be sent (stopping, or refused for good)."""
        value = self._codec.encode_command(command)
        attempt = 0
        while True:
            try:
                await self._producer.send(self._topics.commands, command.workflow_id, value)
            except InfrastructureError as err:
                if not err.retriable or self._closing:
                    _log.error(
                        "report not sent",
                        extra={"workflow_id": command.workflow_id, "error": str(err)},
                    )
                    return False
                attempt += 1
                self.link.suspect()
                _log.warning(
                    "sending a report failed; retrying", extra={"error": str(err), **RETRYING}
                )
                await self.link.pause(_BACKOFF.delay(attempt))
                continue
            return True

    async def _dead_letter(self, record: Record, err: DecodeError) -> None:
        delay = _BACKOFF_FIRST_S
        while not self._closing:
            try:
                await self._dead_letters.publish(record, err.problem, err)
            except InfrastructureError:
                await asyncio.sleep(delay)
                delay = min(_BACKOFF_MAX_S, delay * 2)
                continue
            self._marks.done(record.partition, record.offset)
            return

    # -- commits ----------------------------------------------------------------------------

    async def _commit_loop(self) -> None:
        while True:
            await asyncio.sleep(_COMMIT_EVERY_S)
            try:
                await self._commit()
            except (InfrastructureError, KafkaError) as err:
                _log.info("offset commit failed; retrying", extra={"error": repr(err)})

    async def _commit(self, partitions: list[int] | None = None) -> None:
        offsets: dict[TopicPartition, int] = {}
        for partition in partitions if partitions is not None else self._marks.partitions():
            offset = self._marks.committable(partition)
            if offset is not None and offset != self._committed.get(partition):
                offsets[TopicPartition(self.topic, partition)] = offset
        if not offsets:
            return
        await self._consumer.commit(offsets)
        for tp, offset in offsets.items():
            self._committed[tp.partition] = offset

    # -- helpers ----------------------------------------------------------------------------

    def spawn(self, coro: Any, *, name: str) -> None:
        """Run ``coro`` in the background, kept until it ends; a bug in it stops the worker."""
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        self._background.add(task)
        task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[Any]) -> None:
        self._background.discard(task)
        if task.cancelled():
            return
        error = task.exception()
        if error is not None and self._failure is None:
            _log.error("worker task failed", exc_info=error, extra={"task": task.get_name()})
            self._failure = error
