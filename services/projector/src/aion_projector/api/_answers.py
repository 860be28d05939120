"""Where the API asks its queries: a port (:class:`QueryDesk`) and its Kafka implementation.

A query goes to the engine as a ``QueryWorkflow`` command on ``<prefix>.commands`` (keyed by
workflow id, so the engine owning the workflow gets it) and is answered on
``<prefix>.replies`` under the query's command id. :class:`KafkaQueryDesk` reads every
partition of the replies topic from its end (no consumer group: every API process sees every
answer and keeps those it waits for), ``read_committed`` like every reader of what the engine
writes. It is positioned before the first query is sent, so no answer can slip past it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Protocol

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from aion_common.codecs import Codec
from aion_common.domain import (
    DecodeError,
    InfrastructureError,
    PayloadTooLarge,
    QueryAnswer,
    QueryWorkflow,
)
from aion_common.kafka import Topics, client_options, ensure_topics
from aion_common.kafka.consumer import stop_consumer
from aion_common.kafka.options import max_record_bytes
from aion_common.settings import Settings
from aion_projector.api._sink import CommandSink

__all__ = ["KafkaQueryDesk", "QueryDesk"]

_log = logging.getLogger("aion.api.queries")
_FETCH_MS = 200
_RETRY_S = 1.0


class QueryDesk(Protocol):
    """Sends a query to the engine and waits for its answer."""

    async def ask(self, query: QueryWorkflow, within: float) -> QueryAnswer | None:
        """The engine's answer, or None when none came within ``within`` seconds; raises
        ``InfrastructureError`` when the query could not be sent and ``PayloadTooLarge`` when
        it is larger than one Kafka record may be (a closed run's long history)."""


class KafkaQueryDesk:
    """Queries sent through ``sink``, answers read from ``<prefix>.replies``.

    ``start`` (or ``async with``) begins reading; until the replies topic exists and the
    reader is at its end, :meth:`ask` waits for it (within the query's timeout).
    """

    def __init__(
        self, settings: Settings, sink: CommandSink, *, codec: Codec | None = None
    ) -> None:
        self._settings = settings
        self._sink = sink
        self._codec = codec or Codec(payload_limit=settings.payload_limit_bytes)
        self._topic = Topics(settings.topic_prefix).replies
        self._limit = max_record_bytes(settings)
        self._waiting: dict[str, asyncio.Future[QueryAnswer]] = {}
        self._ready = asyncio.Event()
        self._problem: str | None = None  # why answers cannot be read now, if known
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Begin reading answers (in the background: the topic may not exist yet)."""
        if self._task is None:
            self._task = asyncio.create_task(self._read(), name="api-query-answers")

    async def stop(self) -> None:
        """Stop reading; queries still waiting get no answer. Idempotent."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for future in self._waiting.values():
            future.cancel()

    async def __aenter__(self) -> KafkaQueryDesk:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()

    async def ask(self, query: QueryWorkflow, within: float) -> QueryAnswer | None:
        """Send ``query`` once the reader is positioned, then wait for its answer."""
        if query.history is not None:
            size = len(self._codec.encode_command(query))
            if size > self._limit:
                raise PayloadTooLarge(size, self._limit)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        try:
            await asyncio.wait_for(self._ready.wait(), within)
        except TimeoutError:
            if self._problem is not None:
                raise InfrastructureError(self._problem, retriable=True) from None
            return None
        if self._task is None or self._task.done():
            raise InfrastructureError(
                "the API's reader of query answers is not running", retriable=False
            )
        future: asyncio.Future[QueryAnswer] = loop.create_future()
        self._waiting[query.command_id] = future
        try:
            await self._sink.send(query)
            return await asyncio.wait_for(future, max(0.0, deadline - loop.time()))
        except TimeoutError:
            return None
        finally:
            self._waiting.pop(query.command_id, None)

    async def _read(self) -> None:
        failures = 0
        while True:
            try:
                # every aion topic has the same partition count (checked here, as services do)
                counts = await ensure_topics(self._settings, Topics(self._settings.topic_prefix))
                failures = 0
            except InfrastructureError as err:
                self._problem = str(err)
                failures += 1  # one warning, not one a second while Kafka is away (issue 19)
                level = logging.WARNING if failures == 1 else logging.DEBUG
                _log.log(level, "query answers cannot be read yet", extra={"error": str(err)})
                await asyncio.sleep(_RETRY_S)
                continue
            consumer = AIOKafkaConsumer(
                **client_options(self._settings),
                enable_auto_commit=False,
                isolation_level="read_committed",
                client_id=f"aion-api-answers-{self._settings.instance_id}",
            )
            try:
                await consumer.start()
                await self._position(consumer, counts[self._topic])
                while True:
                    batches = await consumer.getmany(timeout_ms=_FETCH_MS)
                    for records in batches.values():
                        for record in records:
                            self._deliver(record.value, record.partition, record.offset)
            except KafkaError as err:
                self._ready.clear()
                self._problem = f"reading {self._topic} failed: {err!r}"
                _log.warning("reading query answers failed; retrying", extra={"error": repr(err)})
                await asyncio.sleep(_RETRY_S)
            finally:
                await stop_consumer(consumer)

    async def _position(self, consumer: AIOKafkaConsumer, partitions: int) -> None:
        """Assign every replies partition and move to its end (resolved now, not lazily)."""
        assigned = [TopicPartition(self._topic, p) for p in range(partitions)]
        consumer.assign(assigned)
        await consumer.seek_to_end(*assigned)
        for tp in assigned:
            await consumer.position(tp)
        self._problem = None
        self._ready.set()
        _log.info("reading query answers", extra={"partitions": partitions})

    def _deliver(self, value: bytes | None, partition: int, offset: int) -> None:
        try:
            reply = self._codec.decode_reply(
                value, topic=self._topic, partition=partition, offset=offset
            )
        except DecodeError as err:
            # the projector dead-letters what does not decode; here it is just not an answer
            _log.debug("undecodable reply skipped", extra={"error": str(err)})
            return
        if not isinstance(reply, QueryAnswer):
            return
        future = self._waiting.get(reply.command_id)
        if future is not None and not future.done():
            future.set_result(reply)
