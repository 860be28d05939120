"""The dead-letter topic: records a consumer could not process, kept with why.

:class:`DeadLetterPublisher` copies a refused record's key and value bytes unchanged, with its
original headers plus ``aion.dlq.*`` headers naming the reason, the error class, the source
coordinates and the time. It writes to the *same partition number* as the source record
(every aion topic has the same count), so a workflow's dead letters sit beside its records.
:func:`read_dead_letters` and :func:`parse_dead_letter` turn them back into typed records for
tests and operators.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from aiokafka.structs import RecordMetadata

from aion_common.domain.errors import DecodeError
from aion_common.kafka.consumer import Record, read_partition_to_end
from aion_common.kafka.producer import Headers, KeyedProducer
from aion_common.settings import Settings

__all__ = [
    "DLQ_AT",
    "DLQ_ERROR",
    "DLQ_REASON",
    "DLQ_SOURCE_OFFSET",
    "DLQ_SOURCE_PARTITION",
    "DLQ_SOURCE_TOPIC",
    "DeadLetter",
    "DeadLetterPublisher",
    "dead_letter_headers",
    "parse_dead_letter",
    "read_dead_letters",
]

DLQ_REASON = "aion.dlq.reason"
DLQ_ERROR = "aion.dlq.error"
DLQ_SOURCE_TOPIC = "aion.dlq.source.topic"
DLQ_SOURCE_PARTITION = "aion.dlq.source.partition"
DLQ_SOURCE_OFFSET = "aion.dlq.source.offset"
DLQ_AT = "aion.dlq.at"
_DLQ_HEADERS = (DLQ_REASON, DLQ_ERROR, DLQ_SOURCE_TOPIC, DLQ_SOURCE_PARTITION, DLQ_SOURCE_OFFSET)


@dataclass(frozen=True, slots=True, kw_only=True)
class DeadLetter:
    """A refused record as read back from the dead-letter topic."""

    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    """The source record's own headers, without the ``aion.dlq.*`` ones."""
    reason: str
    error: str
    source_topic: str
    source_partition: int
    source_offset: int
    at: datetime
    partition: int
    offset: int


class DeadLetterPublisher:
    """Publishes refused records to ``topic`` through a started :class:`KeyedProducer`.

    With a transactional producer, call :meth:`publish` inside the transaction that commits the
    refused record's offset, so the record is dead-lettered exactly when it is skipped.
    """

    def __init__(
        self,
        producer: KeyedProducer,
        topic: str,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._producer = producer
        self._topic = topic
        self._clock = clock

    async def publish(
        self, record: Record, reason: str, error: BaseException | str
    ) -> RecordMetadata:
        """Dead-letter ``record``; ``error`` is the exception (its class is kept) or a name."""
        headers = dead_letter_headers(record, reason, error, at=self._clock())
        # The explicit partition keeps the partition number even for a key that the default
        # partitioner would place elsewhere (a foreign producer's record, or no key at all).
        return await self._producer.send_raw(
            self._topic, record.key, record.value, headers=headers, partition=record.partition
        )


def dead_letter_headers(
    record: Record, reason: str, error: BaseException | str, *, at: datetime
) -> Headers:
    """The dead letter's headers: the source record's own, then the ``aion.dlq.*`` ones.

    For producers that cannot go through :class:`DeadLetterPublisher` (the engine sends its
    dead letters on the transactional producer that commits the skipped record's offset).
    """
    error_name = error if isinstance(error, str) else type(error).__name__
    return [
        *(record.headers or ()),
        (DLQ_REASON, reason.encode("utf-8")),
        (DLQ_ERROR, error_name.encode("utf-8")),
        (DLQ_SOURCE_TOPIC, record.topic.encode("utf-8")),
        (DLQ_SOURCE_PARTITION, str(record.partition).encode("ascii")),
        (DLQ_SOURCE_OFFSET, str(record.offset).encode("ascii")),
        (DLQ_AT, at.isoformat().encode("ascii")),
    ]


def parse_dead_letter(record: Record) -> DeadLetter:
    """A dead-letter record, typed; :class:`DecodeError` if its ``aion.dlq`` headers are bad."""
    own = tuple((name, value) for name, value in record.headers if not name.startswith("aion.dlq."))
    dlq = {name: value for name, value in record.headers if name.startswith("aion.dlq.")}
    try:
        text = {name: dlq[name].decode("utf-8") for name in (*_DLQ_HEADERS, DLQ_AT)}
        return DeadLetter(
            key=record.key,
            value=record.value,
            headers=own,
            reason=text[DLQ_REASON],
            error=text[DLQ_ERROR],
            source_topic=text[DLQ_SOURCE_TOPIC],
            source_partition=int(text[DLQ_SOURCE_PARTITION]),
            source_offset=int(text[DLQ_SOURCE_OFFSET]),
            at=datetime.fromisoformat(text[DLQ_AT]),
            partition=record.partition,
            offset=record.offset,
        )
    except (KeyError, ValueError) as err:
        raise DecodeError(
            f"not an aion dead letter: {err!r}",
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
        ) from err


async def read_dead_letters(
    settings: Settings, topic: str, *, partitions: range | None = None
) -> AsyncIterator[DeadLetter]:
    """Every dead letter in ``topic`` now, partition by partition (default: all of them)."""
    for partition in partitions if partitions is not None else range(settings.partitions):
        async for record in read_partition_to_end(settings, topic, partition):
            yield parse_dead_letter(record)
