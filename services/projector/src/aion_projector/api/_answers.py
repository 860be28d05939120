"""Where the API asks its queries: a port (:class:`QueryDesk`) and its Kafka implementation.

A query goes to the engine as a ``QueryWorkflow`` command on ``<prefix>.commands`` (keyed by
workflow id, so the engine owning the workflow gets it) and is answered on
``<prefix>.replies`` under the query's command id. :class:`KafkaQueryDesk` reads every
partition of the replies topic from its end (a :class:`~aion_projector.api._tail.TopicTail`:
every API process sees every answer and keeps those it waits for). It is positioned before the
first query is sent, so no answer can slip past it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from aion_common.codecs import Codec
from aion_common.domain import (
    DecodeError,
    InfrastructureError,
    PayloadTooLarge,
    QueryAnswer,
    QueryWorkflow,
)
from aion_common.kafka import Topics
from aion_common.kafka.options import max_record_bytes
from aion_common.settings import Settings
from aion_projector.api._sink import CommandSink
from aion_projector.api._tail import TopicTail

__all__ = ["KafkaQueryDesk", "QueryDesk"]

_log = logging.getLogger("aion.api.queries")


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
        self._tail = TopicTail(
            settings,
            self._topic,
            deliver=lambda r: self._deliver(r.value, r.partition, r.offset),
            what="query answers",
            client_id=f"aion-api-answers-{settings.instance_id}",
            log=_log,
        )

    async def start(self) -> None:
        """Begin reading answers (in the background: the topic may not exist yet)."""
        await self._tail.start()

    async def stop(self) -> None:
        """Stop reading; queries still waiting get no answer. Idempotent."""
        await self._tail.stop()
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
            await asyncio.wait_for(self._tail.ready.wait(), within)
        except TimeoutError:
            if self._tail.problem is not None:
                raise InfrastructureError(self._tail.problem, retriable=True) from None
            return None
        if not self._tail.running:
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
