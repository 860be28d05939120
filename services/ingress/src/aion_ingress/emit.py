"""What the ingress sends for a batch, and how: one transaction, or at-least-once.

:func:`outputs_for` turns one record into the records to emit (its command, or its dead
letter); :class:`Emitter` makes a source partition's producer and sends a batch's outputs
with the consumed offsets — in one Kafka transaction, or (without broker transactions)
acknowledged first and the offsets committed after.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord

from aion_common.codecs import Codec, encode_key
from aion_common.domain import (
    CodecError,
    Command,
    InvalidInput,
    SignalWithStartWorkflow,
    SignalWorkflow,
)
from aion_common.kafka.dead_letter import dead_letter_headers
from aion_common.kafka.errors import infrastructure_error
from aion_common.kafka.options import client_options, max_record_bytes
from aion_common.kafka.topics import Topics
from aion_common.settings import Settings
from aion_ingress.mapping import Mapper, Skipped, Unmapped

__all__ = ["Emitter", "Out", "missing_topics", "outputs_for"]

_log = logging.getLogger("aion.ingress")


@dataclass(slots=True)
class Out:
    """One record to emit."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()


def outputs_for(
    record: ConsumerRecord[bytes, bytes], mapper: Mapper, codec: Codec, topics: Topics
) -> tuple[list[Out], str, str]:
    """The records to emit for ``record``, its outcome, and its command type (if any)."""
    mapped = mapper.map(record)
    if isinstance(mapped, Skipped):
        return [], "skipped", ""
    if not isinstance(mapped, Unmapped):
        try:
            value = codec.encode_command(mapped)
        except (InvalidInput, CodecError) as err:
            mapped = Unmapped(f"the command does not encode: {err}", type(err).__name__)
        else:
            _log.debug("record mapped", extra={**_record(record), **_command(mapped)})
            out = Out(topics.commands, encode_key(mapped.workflow_id), value)
            return [out], "command", type(mapped).__name__
    _log.warning(
        "record dead-lettered",
        extra={**_record(record), "reason": mapped.reason, "error": mapped.error},
    )
    headers = dead_letter_headers(record, mapped.reason, mapped.error, at=datetime.now(UTC))
    out = Out(topics.dead_letter, record.key, record.value, tuple(headers))
    return [out], "dead_letter", ""


class Emitter:
    """Producers for source partitions, and a batch's emit."""

    def __init__(self, settings: Settings, group_id: str, *, transactional: bool) -> None:
        self.settings = settings
        self.group_id = group_id
        self.transactional = transactional

    def new_producer(self, tp: TopicPartition) -> AIOKafkaProducer:
        """The producer of source partition ``tp`` (transactional id per partition)."""
        options = {
            **client_options(self.settings),
            "max_request_size": max_record_bytes(self.settings),
            "client_id": f"aion-ingress-{self.settings.instance_id}",
        }
        if self.transactional:
            return AIOKafkaProducer(
                **options,
                transactional_id=f"{self.group_id}.{tp.topic}.{tp.partition}",
                enable_idempotence=True,
                linger_ms=0,
            )
        return AIOKafkaProducer(**options, enable_idempotence=True, linger_ms=0)

    async def emit_transactional(
        self,
        producer: AIOKafkaProducer,
        outputs: list[Out],
        offsets: dict[TopicPartition, int],
    ) -> None:
        """Everything of the batch and its offsets in one transaction."""
        await producer.begin_transaction()
        try:
            futures = [
                await producer.send(o.topic, o.value, key=o.key, headers=list(o.headers))
                for o in outputs
            ]
            await asyncio.gather(*futures)
            await producer.send_offsets_to_transaction(offsets, self.group_id)
        except KafkaError:
            with contextlib.suppress(AssertionError, KafkaError):
                await producer.abort_transaction()
            raise
        await producer.commit_transaction()

    async def emit_at_least_once(
        self,
        producer: AIOKafkaProducer,
        consumer: AIOKafkaConsumer,
        outputs: list[Out],
        offsets: dict[TopicPartition, int],
    ) -> None:
        """Outputs acknowledged, then the offsets committed (a crash between: re-read, and
        the engine applies the same command ids once)."""
        futures = [
            await producer.send(o.topic, o.value, key=o.key, headers=list(o.headers))
            for o in outputs
        ]
        await asyncio.gather(*futures)
        await consumer.commit(offsets)


async def missing_topics(settings: Settings, topics: Sequence[str]) -> list[str]:
    """Which of ``topics`` the broker does not have (listing never auto-creates a topic)."""
    admin = AIOKafkaAdminClient(**client_options(settings), client_id="aion-ingress-admin")
    try:
        await admin.start()
        existing = set(await admin.list_topics())
    except KafkaError as err:
        raise infrastructure_error(err, "listing topics") from err
    finally:
        await admin.close()
    return [t for t in topics if t not in existing]


def _record(record: ConsumerRecord[bytes, bytes]) -> dict[str, object]:
    return {"topic": record.topic, "partition": record.partition, "offset": record.offset}


def _command(command: Command) -> dict[str, object]:
    extra: dict[str, object] = {
        "workflow_id": command.workflow_id,
        "command_id": command.command_id,
        "command": type(command).__name__,
    }
    if isinstance(command, SignalWorkflow):
        extra["signal"] = command.name
    elif isinstance(command, SignalWithStartWorkflow):
        extra["signal"] = command.signal_name
    return extra
