"""The version catalog on Kafka: ``<prefix>.packages`` and ``<prefix>.routes``, read and written.

Both topics are compacted: the live value per key is the catalog. :class:`CatalogReader` tails
them from the beginning for as long as it runs (engines and the API each keep one), handing
every record, and every deletion, to a :class:`CatalogListener`; :meth:`CatalogReader.caught_up`
waits until what was there when it started has been read. :class:`CatalogWriter` is how
``aion deploy``/``aion route`` land: a deploy writes one record per workflow type in one
transaction, so a package is either wholly there or not at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Protocol

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from aion_common.codecs import Codec
from aion_common.domain import (
    DecodeError,
    InfrastructureError,
    PackageRecord,
    RouteRecord,
    package_key,
)
from aion_common.kafka.admin import ensure_topics
from aion_common.kafka.consumer import stop_consumer
from aion_common.kafka.errors import infrastructure_error
from aion_common.kafka.options import client_options
from aion_common.kafka.producer import KeyedProducer
from aion_common.kafka.topics import Topics
from aion_common.settings import Settings

__all__ = [
    "CATALOG_RECORD_BYTES",
    "CatalogListener",
    "CatalogReader",
    "CatalogWriter",
    "catalog_topic_configs",
    "ensure_catalog_topics",
]

_log = logging.getLogger("aion.catalog")
_RETRY_S = 1.0


CATALOG_RECORD_BYTES = 16 * 1024 * 1024
"""The largest catalog record (topic ``max.message.bytes``, the writer's request size)."""


def catalog_topic_configs(topics: Topics) -> dict[str, dict[str, str]]:
    """Compacted, kept for ever (the live record per key is the catalog)."""
    config = {"cleanup.policy": "compact", "max.message.bytes": str(CATALOG_RECORD_BYTES)}
    return {topics.packages: dict(config), topics.routes: dict(config)}


async def ensure_catalog_topics(settings: Settings, topics: Topics) -> dict[str, int]:
    """Create the packages and routes topics when missing; their partition counts."""
    return await ensure_topics(
        settings,
        [topics.packages, topics.routes],
        configs=catalog_topic_configs(topics),
    )


class CatalogListener(Protocol):
    """Receives the catalog's records as they are read."""

    def package_added(self, record: PackageRecord) -> None:
        """A package record (one type of one version) was read."""

    def package_removed(self, workflow_type: str, version: str) -> None:
        """A package record was deleted (tombstone)."""

    def route_set(self, record: RouteRecord) -> None:
        """A route was read."""


class CatalogReader:
    """Tails the catalog topics into a listener, from their beginnings, until stopped."""

    def __init__(self, settings: Settings, listener: CatalogListener, *, codec: Codec) -> None:
        self._settings = settings
        self._listener = listener
        self._codec = codec
        self._topics = Topics(settings.topic_prefix)
        self._task: asyncio.Task[None] | None = None
        self._caught_up = asyncio.Event()
        self._connected = False  # the current attempt's consumer started

    async def start(self) -> None:
        """Begin tailing (in the background; retries while the broker is away)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="catalog-reader")

    async def caught_up(self, timeout: float) -> bool:  # noqa: ASYNC109 - a bounded wait
        """Wait until the records present at start were read; False after ``timeout``."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._caught_up.wait(), timeout)
        return self._caught_up.is_set()

    async def stop(self) -> None:
        """Stop tailing; idempotent."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _run(self) -> None:
        failures = 0
        while True:
            try:
                await self._tail()
            except (KafkaError, OSError, InfrastructureError) as err:
                if self._connected:
                    failures, self._connected = 0, False
                # one warning per outage, not one a second (the process's link logs loss/return)
                failures += 1
                level = logging.WARNING if failures == 1 else logging.DEBUG
                _log.log(level, "reading the catalog failed; retrying", extra={"error": repr(err)})
                await asyncio.sleep(_RETRY_S)

    async def _tail(self) -> None:
        counts = await ensure_catalog_topics(self._settings, self._topics)
        consumer = AIOKafkaConsumer(
            **client_options(self._settings),
            group_id=None,
            client_id=f"aion-{self._settings.instance_id}-catalog",
            enable_auto_commit=False,
            isolation_level="read_committed",
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=CATALOG_RECORD_BYTES,
        )
        await consumer.start()
        self._connected = True
        try:
            partitions = [
                TopicPartition(topic, p)
                for topic in (self._topics.packages, self._topics.routes)
                for p in range(counts[topic])
            ]
            consumer.assign(partitions)
            starts = await consumer.beginning_offsets(partitions)
            ends = await consumer.end_offsets(partitions)
            for tp in partitions:
                consumer.seek(tp, starts[tp])
            remaining = {tp for tp in partitions if ends[tp] > starts[tp]}
            if not remaining:
                self._caught_up.set()
            while True:
                batches = await consumer.getmany(timeout_ms=500)
                for tp, records in batches.items():
                    for record in records:
                        self._apply(tp.topic, record.key, record.value, record.offset)
                        if record.offset + 1 >= ends[tp]:
                            remaining.discard(tp)
                if not self._caught_up.is_set():
                    for tp in list(remaining):
                        if await consumer.position(tp) >= ends[tp]:
                            remaining.discard(tp)
                    if not remaining:
                        self._caught_up.set()
        finally:
            await stop_consumer(consumer)

    def _apply(self, topic: str, key: bytes | None, value: bytes | None, offset: int) -> None:
        where = {"topic": topic, "offset": offset}
        try:
            name = (key or b"").decode("utf-8")
            if topic == self._topics.packages:
                if value is None:
                    workflow_type, _, version = name.rpartition("@")
                    self._listener.package_removed(workflow_type, version)
                else:
                    self._listener.package_added(self._codec.decode_package(value, topic=topic))
            elif value is not None:
                self._listener.route_set(self._codec.decode_route(value, topic=topic))
        except (DecodeError, UnicodeDecodeError, ValueError) as err:
            # only aion writes these topics, through checks; a bad record is skipped, loudly
            _log.error("undecodable catalog record skipped", extra={**where, "error": str(err)})


class CatalogWriter:
    """Writes packages and routes (the API's side of ``aion deploy`` and ``aion route``)."""

    def __init__(self, settings: Settings, *, codec: Codec) -> None:
        self._settings = settings
        self._codec = codec
        self._topics = Topics(settings.topic_prefix)
        transactional = settings.transactions != "off"
        self._producer = KeyedProducer(
            settings,
            transactional_id=(
                f"{settings.topic_prefix}.catalog.{settings.instance_id}" if transactional else None
            ),
            client_id="aion-catalog",
            max_request_bytes=CATALOG_RECORD_BYTES,
        )
        self._transactional = transactional
        # One transaction at a time: a second begin on the producer would be refused, and a
        # write the API stopped waiting for (decision 66) may still hold one.
        self._writing = asyncio.Lock()

    async def start(self) -> None:
        """Ensure the topics and connect."""
        await ensure_catalog_topics(self._settings, self._topics)
        await self._producer.start()

    async def stop(self) -> None:
        """Flush and disconnect; idempotent."""
        await self._producer.stop()

    async def deploy(self, records: Sequence[PackageRecord]) -> None:
        """Write every type's record of one package version, atomically when the broker has
        transactions."""
        values = [
            (package_key(r.workflow_type, r.version).encode(), self._codec.encode_package(r))
            for r in records
        ]
        try:
            await self._write([(self._topics.packages, key, value) for key, value in values])
        except KafkaError as err:
            raise infrastructure_error(err, "writing a package") from err

    async def remove(self, workflow_type: str, version: str) -> None:
        """Delete one type's record of a version (a tombstone)."""
        key = package_key(workflow_type, version).encode()
        await self._write([(self._topics.packages, key, None)])

    async def route(self, record: RouteRecord) -> None:
        """Route new runs of a type to a version."""
        await self._write(
            [(self._topics.routes, record.workflow_type.encode(), self._codec.encode_route(record))]
        )

    async def _write(self, records: Sequence[tuple[str, bytes, bytes | None]]) -> None:
        """Send ``records`` in one transaction (or one by one without transactions).

        A transaction that finds the producer fenced — its previous transaction outlived the
        coordinator's timeout (it was open across a long outage), or another API process runs
        with this one's instance id — wrote nothing; it is tried once more on a new producer
        (every catalog record is a whole value under its key: writing it again is harmless).
        """
        async with self._writing:
            if not self._transactional:
                for topic, key, value in records:
                    await self._producer.send_raw(topic, key, value)
                return
            try:
                await self._transaction(records)
            except InfrastructureError:
                if not self._producer.failed_for_good:
                    raise
                _log.warning("the catalog's producer was fenced; writing again on a new one")
                await self._transaction(records)

    async def _transaction(self, records: Sequence[tuple[str, bytes, bytes | None]]) -> None:
        async with self._producer.transaction():
            for topic, key, value in records:
                await self._producer.send_raw(topic, key, value)
