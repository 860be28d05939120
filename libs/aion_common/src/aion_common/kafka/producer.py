"""A producer whose records are keyed by workflow id, with aion's errors and lifecycle.

The key is ``codecs.encode_key(workflow_id)`` and the partition is chosen by aiokafka's
default partitioner (murmur2, as the Java client), so a workflow lands on
:func:`aion_common.kafka.topics.partition_for` in every aion topic. aiokafka errors leave this
module as :class:`InfrastructureError` carrying aiokafka's ``retriable`` verdict.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any, Self, TypeAlias

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.structs import RecordMetadata, TopicPartition

from aion_common.codecs import encode_key
from aion_common.kafka._closing import await_within
from aion_common.kafka.errors import infrastructure_error
from aion_common.kafka.options import client_options, max_record_bytes
from aion_common.settings import Settings

__all__ = ["Headers", "KeyedProducer", "stop_producer"]

_log = logging.getLogger(__name__)
_STOP_TIMEOUT_S = 10.0

Headers: TypeAlias = Sequence[tuple[str, bytes]]


async def stop_producer(
    producer: AIOKafkaProducer,
    *,
    timeout_s: float = _STOP_TIMEOUT_S,
    what: str = "a Kafka producer",
) -> None:
    """Stop ``producer``, which is being discarded: bounded, never leaking aiokafka's own
    cancellations into the caller, and never leaving its sender or its client running.

    aiokafka 0.14's ``stop()`` marks the producer closed, waits for its batches to be delivered
    (for as long as the broker is away), and only then cancels its sender task and closes its
    client. A stop cut short there (given up on after ``timeout_s``, failed, or ended by its
    own cancelled tasks) skipped both, and a second ``stop()`` returns at once: the sender went
    on retrying its batches and the client's metadata task ran for the life of the process.
    They are then ended here, in ``stop()``'s order and each bounded too; what is still unsent
    is dropped. ``what`` names the producer in the log. A cancellation of the calling task is
    still raised.
    """
    if await await_within(
        producer.stop(),
        timeout_s,
        failed=f"{what} did not stop cleanly",
        cut_short=f"{what}'s stop was cut short by its own cancelled tasks",
    ):
        return
    sender = getattr(producer, "_sender", None)  # aiokafka 0.14 keeps it there
    if sender is not None:
        await await_within(sender.close(), timeout_s, failed=f"{what}'s sender did not stop")
    await await_within(producer.client.close(), timeout_s, failed=f"{what}'s client did not close")


class KeyedProducer:
    """An aiokafka producer for aion records; transactional when given a ``transactional_id``.

    ``idempotent=True`` asks the broker for a producer id so retries never duplicate a record
    (Apache Kafka supports it; check with ``probe_capabilities`` when unsure). A transactional
    producer is always idempotent. ``request_timeout_ms`` also bounds how long a send waits for
    a topic's metadata (a missing topic fails after it). Use ``async with`` or
    :meth:`start`/:meth:`stop`.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        transactional_id: str | None = None,
        idempotent: bool = False,
        client_id: str | None = None,
        request_timeout_ms: int = 40_000,
        max_request_bytes: int | None = None,
    ) -> None:
        self._settings = settings
        self._request_timeout_ms = request_timeout_ms
        self._max_request_bytes = max_request_bytes or max_record_bytes(settings)
        self._transactional_id = transactional_id
        self._idempotent = idempotent or transactional_id is not None
        self._client_id = client_id or f"aion-{settings.instance_id}"
        self._producer: AIOKafkaProducer | None = None
        self._replacing = False

    @property
    def transactional_id(self) -> str | None:
        """The transactional id this producer fences zombies with, if any."""
        return self._transactional_id

    async def start(self) -> None:
        """Connect; a transactional or idempotent producer also obtains its producer id."""
        if self._producer is not None:
            return
        producer = AIOKafkaProducer(
            **client_options(self._settings),
            client_id=self._client_id,
            acks="all",
            enable_idempotence=self._idempotent,
            transactional_id=self._transactional_id,
            max_request_size=self._max_request_bytes,
            request_timeout_ms=self._request_timeout_ms,
        )
        try:
            await producer.start()
        except KafkaError as err:
            await producer.stop()
            raise infrastructure_error(err, "starting the Kafka producer") from err
        self._producer = producer

    async def stop(self, timeout_s: float = _STOP_TIMEOUT_S) -> None:
        """Flush and close; safe to call twice, or without :meth:`start`.

        Bounded (:func:`stop_producer`): aiokafka flushes for as long as the broker is away, so
        after ``timeout_s`` what is still unsent is dropped (every caller awaits its sends'
        acknowledgements, so nothing it was told is durable is lost). A stop that fails is
        logged, not raised: the producer is discarded either way.
        """
        self._replacing = False  # stopped on purpose: a transaction now refuses, starts nothing
        await self._discard(timeout_s)

    async def _discard(self, timeout_s: float = _STOP_TIMEOUT_S) -> None:
        producer, self._producer = self._producer, None
        if producer is None:
            return
        await stop_producer(producer, timeout_s=timeout_s, what=f"Kafka producer {self._client_id}")

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def send(
        self, topic: str, workflow_id: str, value: bytes, *, headers: Headers = ()
    ) -> RecordMetadata:
        """Send ``value`` keyed by ``workflow_id`` and wait for the broker's acknowledgement."""
        return await self.send_raw(topic, encode_key(workflow_id), value, headers=headers)

    async def send_raw(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        *,
        headers: Headers = (),
        partition: int | None = None,
    ) -> RecordMetadata:
        """Send pre-encoded key bytes (or to an explicit ``partition``) and wait for the ack."""
        producer = self._running()
        try:
            delivery = await producer.send(
                topic, value=value, key=key, partition=partition, headers=list(headers)
            )
            metadata: RecordMetadata = await delivery
        except KafkaError as err:
            raise infrastructure_error(err, f"producing to {topic}") from err
        return metadata

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        """Begin a transaction; commit on normal exit, abort if the body raises.

        A producer that failed for good — fenced by a newer one with its transactional id, or
        its transaction aborted by the coordinator for outliving ``transaction.timeout.ms``
        (a transaction open across a long broker outage) — can begin nothing again (aiokafka
        refuses every later ``begin_transaction``). It is replaced here by a new producer (a
        new epoch) before the next transaction begins; the transaction that found it fenced
        has failed already, with the fence as its error.
        """
        if self._replacing:  # a replacement that could not start: start it now
            await self.start()
            self._replacing = False
        producer = self._running()
        if _failed_for_good(producer):
            producer = await self._renew()
        try:
            await producer.begin_transaction()
        except KafkaError as err:
            raise infrastructure_error(err, "beginning a transaction") from err
        try:
            yield
        except BaseException:
            await self._abort(producer)
            raise
        try:
            await producer.commit_transaction()
        except KafkaError as err:
            raise infrastructure_error(err, "committing a transaction") from err

    async def send_offsets_to_transaction(
        self, offsets: Mapping[TopicPartition, int], group_id: str
    ) -> None:
        """Commit ``group_id``'s consumed ``offsets`` (next offset to read) with the transaction."""
        producer = self._running()
        try:
            await producer.send_offsets_to_transaction(dict(offsets), group_id)
        except KafkaError as err:
            raise infrastructure_error(err, "adding offsets to a transaction") from err

    @property
    def failed_for_good(self) -> bool:
        """Whether the producer is fenced or otherwise failed for good (the next
        :meth:`transaction` replaces it)."""
        return self._producer is not None and _failed_for_good(self._producer)

    async def _renew(self) -> AIOKafkaProducer:
        _log.warning(
            "the Kafka producer was fenced or failed for good; starting a new one",
            extra={"txn": self._transactional_id, "client_id": self._client_id},
        )
        self._replacing = True  # until the new one started (even if this is cancelled midway):
        await self._discard()  # the next transaction tries again
        await self.start()
        self._replacing = False
        return self._running()

    async def _abort(self, producer: AIOKafkaProducer) -> None:
        """Abort after the body failed; the body's error is the one the caller sees."""
        if _failed_for_good(producer):
            return  # a fenced or failed producer cannot abort; the body's error says why
        try:
            await producer.abort_transaction()
        except KafkaError:
            _log.exception("aborting a transaction failed", extra={"txn": self._transactional_id})

    def _running(self) -> AIOKafkaProducer:
        if self._producer is None:
            raise RuntimeError("KeyedProducer is not started: call start() first")
        return self._producer


def _failed_for_good(producer: AIOKafkaProducer) -> bool:
    txn_manager: Any = producer._txn_manager  # aiokafka has no public check
    return txn_manager is not None and bool(txn_manager.is_fatal_error())
