"""Reading a topic's new records in the API process: :class:`TopicTail`.

The API follows two topics the engine writes, each for what it is waiting for: the replies
(query answers, :mod:`~aion_projector.api._answers`) and the events (runs that end,
:mod:`~aion_projector.api._endings`). Both read every partition from its end with no
consumer group (every API process sees every record and keeps what it waits for),
``read_committed`` like every reader of what the engine writes, and wait out a broker
outage by reading again from the end: what they wait for is also in the views, which a
waiter reads again anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord

from aion_common.domain import InfrastructureError
from aion_common.kafka import Topics, client_options, ensure_topics
from aion_common.kafka.consumer import stop_consumer
from aion_common.settings import Settings

__all__ = ["TopicTail"]

_FETCH_MS = 200
_RETRY_S = 1.0


class TopicTail:
    """Hands every record appended to ``topic`` after :meth:`start` to ``deliver``.

    ``ready`` is set once every partition is positioned at its end (so nothing appended after
    that can slip past), and cleared while reading fails; ``problem`` then says why.
    ``what`` names the records in the log lines ("query answers").
    """

    def __init__(
        self,
        settings: Settings,
        topic: str,
        *,
        deliver: Callable[[ConsumerRecord[bytes, bytes]], None],
        what: str,
        client_id: str,
        log: logging.Logger,
    ) -> None:
        self._settings = settings
        self._topic = topic
        self._deliver = deliver
        self._what = what
        self._client_id = client_id
        self._log = log
        self.ready = asyncio.Event()
        self.problem: str | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        """Whether the reader is running (started, not stopped, not failed for good)."""
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        """Begin reading (in the background: the topic may not exist yet)."""
        if self._task is None:
            self._task = asyncio.create_task(self._read(), name=f"api-tail-{self._topic}")

    async def stop(self) -> None:
        """Stop reading. Idempotent."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.ready.clear()

    async def _read(self) -> None:
        failures = 0
        while True:
            try:
                # every aion topic has the same partition count (checked here, as services do)
                counts = await ensure_topics(self._settings, Topics(self._settings.topic_prefix))
                failures = 0
            except InfrastructureError as err:
                self.problem = str(err)
                failures += 1  # one warning, not one a second while Kafka is away (issue 19)
                level = logging.WARNING if failures == 1 else logging.DEBUG
                self._log.log(level, "%s cannot be read yet", self._what, extra={"error": str(err)})
                await asyncio.sleep(_RETRY_S)
                continue
            consumer = AIOKafkaConsumer(
                **client_options(self._settings),
                enable_auto_commit=False,
                isolation_level="read_committed",
                client_id=self._client_id,
            )
            try:
                await consumer.start()
                await self._position(consumer, counts[self._topic])
                while True:
                    batches = await consumer.getmany(timeout_ms=_FETCH_MS)
                    for records in batches.values():
                        for record in records:
                            self._deliver(record)
            except KafkaError as err:
                self.ready.clear()
                self.problem = f"reading {self._topic} failed: {err!r}"
                self._log.warning(
                    "reading %s failed; retrying", self._what, extra={"error": repr(err)}
                )
                await asyncio.sleep(_RETRY_S)
            finally:
                await stop_consumer(consumer)

    async def _position(self, consumer: AIOKafkaConsumer, partitions: int) -> None:
        """Assign every partition and move to its end (resolved now, not lazily)."""
        assigned = [TopicPartition(self._topic, p) for p in range(partitions)]
        consumer.assign(assigned)
        await consumer.seek_to_end(*assigned)
        for tp in assigned:
            await consumer.position(tp)
        self.problem = None
        self.ready.set()
        self._log.info("reading %s", self._what, extra={"partitions": partitions})
