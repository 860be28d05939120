"""A consumer group's committed offset, read so that "not known yet" is never "none committed".

aiokafka's ``AIOKafkaConsumer.committed()`` (and its own position lookup on assignment) sends
OffsetFetch v2+ but ignores the response's *top-level* error code. A group coordinator still
loading after a broker restart answers with that error set (COORDINATOR_LOAD_IN_PROGRESS) and
every partition at offset -1 without a partition error, which aiokafka reads as "no committed
offset": measured here, right after an outage the engine rewound three partitions to offset 0
and re-read every command they ever had. Deduplication absorbed it, but only within the window
of remembered command ids (decision 13). This reader retries on the coordinator errors,
top-level or per partition, and returns None only when the broker says nothing is committed.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import TopicPartition
from aiokafka.client import AIOKafkaClient, CoordinationType
from aiokafka.errors import KafkaError, for_code
from aiokafka.protocol.commit import OffsetFetchRequest

from aion_common.kafka.options import client_options
from aion_common.settings import Settings

__all__ = ["CommittedOffsets", "OffsetFetchRetry", "committed_from_response"]

# COORDINATOR_LOAD_IN_PROGRESS, COORDINATOR_NOT_AVAILABLE, NOT_COORDINATOR, UNSTABLE_OFFSET_COMMIT
_RETRY_CODES = frozenset({14, 15, 16, 88})
_RETRY_BACKOFF_S = 0.1


class OffsetFetchRetry(Exception):
    """The coordinator cannot answer yet; ask again."""


def committed_from_response(response: Any, tp: TopicPartition) -> int | None:
    """The committed offset of ``tp`` in an OffsetFetch response (None: nothing committed).

    Raises :class:`OffsetFetchRetry` on a coordinator error, top-level or per partition, and
    :class:`KafkaError` on any other error.
    """
    for code in (getattr(response, "error_code", 0), *_partition_codes(response, tp)):
        if code in _RETRY_CODES:
            raise OffsetFetchRetry(
                f"OffsetFetch for {tp}: error {code} ({for_code(code).__name__})"
            )
        if code:
            raise KafkaError(f"OffsetFetch for {tp}: {for_code(code).__name__} ({code})")
    for topic, partitions in response.topics:
        for partition, offset, _metadata, _error in partitions:
            if topic == tp.topic and partition == tp.partition:
                return None if offset < 0 else int(offset)
    return None


def _partition_codes(response: Any, tp: TopicPartition) -> list[int]:
    return [
        int(error)
        for topic, partitions in response.topics
        for partition, _offset, _metadata, error in partitions
        if topic == tp.topic and partition == tp.partition
    ]


class CommittedOffsets:
    """Reads a group's committed offsets over a client of its own."""

    def __init__(self, settings: Settings, group: str) -> None:
        self._settings = settings
        self._group = group
        self._client: AIOKafkaClient | None = None

    async def start(self) -> None:
        """Connect (aiokafka's client must be created inside the running loop)."""
        if self._client is None:
            client = AIOKafkaClient(
                **client_options(self._settings),
                client_id=f"aion-{self._settings.instance_id}-offsets",
            )
            try:
                await client.bootstrap()
            except BaseException:
                await client.close()
                raise  # the broker is away: a later start() tries again with a fresh client
            self._client = client

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    async def fetch(self, tp: TopicPartition) -> int | None:
        """``tp``'s committed offset; retries until the coordinator answers (bound it)."""
        client = self._client
        if client is None:
            raise RuntimeError("CommittedOffsets.fetch() before start()")
        while True:
            try:
                node = await client.coordinator_lookup(CoordinationType.GROUP, self._group)
                request = OffsetFetchRequest(self._group, [(tp.topic, [tp.partition])])
                response = await client.send(node, request)
                return committed_from_response(response, tp)
            except OffsetFetchRetry:
                pass
            except KafkaError as err:
                if not err.retriable:
                    raise
            await asyncio.sleep(_RETRY_BACKOFF_S)
