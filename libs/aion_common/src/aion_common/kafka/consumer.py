"""Consumers with the commit control aion needs, and a partition reader for rebuilds.

:class:`ManualCommitConsumer` is a group consumer that never commits behind the caller's back
(``enable_auto_commit=False``) and sees only committed transactions by default
(``read_committed``). :func:`read_partition_to_end` reads one partition from its beginning to
its end *at call time* without joining a group: the engine rebuilds a partition's workflows
with it. Under ``read_committed`` the end is the last stable offset (LSO), so an open
transaction's records are neither read nor waited for.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Mapping
from types import TracebackType
from typing import Literal, Self, TypeAlias

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord, TopicPartition

from aion_common.domain.errors import InfrastructureError
from aion_common.kafka._closing import await_within
from aion_common.kafka.errors import infrastructure_error
from aion_common.kafka.options import client_options
from aion_common.settings import Settings

__all__ = [
    "IsolationLevel",
    "ManualCommitConsumer",
    "Record",
    "read_partition_to_end",
    "stop_consumer",
]

IsolationLevel = Literal["read_committed", "read_uncommitted"]
Record: TypeAlias = ConsumerRecord[bytes, bytes]

_FETCH_WAIT_MS = 500
_DEFAULT_STALL_S = 30.0
_STOP_TIMEOUT_S = 5.0


async def stop_consumer(consumer: AIOKafkaConsumer, *, timeout_s: float = _STOP_TIMEOUT_S) -> None:
    """Stop ``consumer``, which is being discarded: bounded, and never leaking aiokafka's own
    cancellations into the caller.

    aiokafka 0.14's ``Fetcher.close()`` cancels the fetch requests in flight and then awaits
    them, so stopping a consumer while a fetch is pending (the broker went away mid-fetch)
    raises ``CancelledError`` in the caller (aio-libs/aiokafka#647, #983). A task that lets it
    through ends *cancelled*, which nothing reports: an engine whose partition workers restored
    their changelogs just as the broker went down lost every worker that way and never served
    its partitions again (reproduced by ``test_engine_converges_after_broker_outages``). A
    cancellation of the calling task itself is still raised.

    A stop cut short that way (or given up on) never reached ``consumer.stop()``'s last step,
    closing the consumer's client, and a second ``stop()`` returns at once: the client's
    metadata task ran on for the life of the process, one more after every outage, logging
    for a broker long gone. Its client is then closed here (bounded too).
    """
    if await await_within(
        consumer.stop(),
        timeout_s,
        failed="a Kafka consumer did not stop cleanly",
        cut_short="a Kafka consumer's stop was cut short by its own cancelled fetches",
    ):
        return
    await _close_client(consumer, timeout_s)


async def _close_client(consumer: AIOKafkaConsumer, timeout_s: float) -> None:
    """Close the client of a consumer whose ``stop()`` did not get to it (aiokafka 0.14 keeps
    it as ``_client``; ``close()`` is idempotent)."""
    client = getattr(consumer, "_client", None)
    if client is None:
        return
    await await_within(client.close(), timeout_s, failed="a Kafka consumer's client did not close")


class ManualCommitConsumer:
    """A group consumer of ``topics`` that commits only when told to.

    Give a ``listener`` (an aiokafka ``ConsumerRebalanceListener``) to drop state on revoke and
    rebuild on assign. Offsets passed to :meth:`commit` are the *next* offset to read.

    Optional tuning, aiokafka's defaults when left ``None``: ``group_instance_id`` makes the
    member static (KIP-345: a restarted member with the same id takes its assignment back
    without a rebalance, and a stopped one does *not* leave the group: its partitions wait for
    ``session_timeout_ms`` unless it comes back), ``heartbeat_interval_ms``, and
    ``fetch_max_wait_ms`` (how long the broker holds a fetch that found nothing new; aiokafka
    sends one fetch per broker at a time, so records arriving on a partition left out of the
    fetch in flight wait up to this long) and ``fetch_min_bytes`` (how much a fetch waits to
    collect, up to ``fetch_max_wait_ms``: fewer, larger fetches for a reader off the hot path).
    """

    def __init__(
        self,
        settings: Settings,
        topics: Iterable[str],
        *,
        group_id: str,
        listener: ConsumerRebalanceListener | None = None,
        isolation_level: IsolationLevel = "read_committed",
        auto_offset_reset: Literal["earliest", "latest"] = "earliest",
        client_id: str | None = None,
        max_poll_records: int | None = None,
        group_instance_id: str | None = None,
        session_timeout_ms: int | None = None,
        heartbeat_interval_ms: int | None = None,
        fetch_max_wait_ms: int | None = None,
        fetch_min_bytes: int | None = None,
    ) -> None:
        self._topics = tuple(topics)
        self._listener = listener
        # Only what the caller set reaches aiokafka, so its defaults stay the defaults.
        tuning = {
            name: value
            for name, value in (
                ("group_instance_id", group_instance_id),
                ("session_timeout_ms", session_timeout_ms),
                ("heartbeat_interval_ms", heartbeat_interval_ms),
                ("fetch_max_wait_ms", fetch_max_wait_ms),
                ("fetch_min_bytes", fetch_min_bytes),
            )
            if value is not None
        }
        self._options = {
            **client_options(settings),
            "group_id": group_id,
            "client_id": client_id or f"aion-{settings.instance_id}",
            "enable_auto_commit": False,
            "isolation_level": isolation_level,
            "auto_offset_reset": auto_offset_reset,
            "max_poll_records": max_poll_records,
            **tuning,
        }
        self._consumer = AIOKafkaConsumer(**self._options)
        self._started = False
        self._stopped = False

    @property
    def raw(self) -> AIOKafkaConsumer:
        """The underlying aiokafka consumer, for calls this wrapper does not cover."""
        return self._consumer

    async def start(self) -> None:
        """Connect and subscribe; partitions arrive through the group's rebalance.

        A failed start (the broker is away) may be retried: the next attempt uses a fresh
        client, since aiokafka's cannot be started again once its start failed.
        """
        if self._started:
            return
        if self._listener is None:
            self._consumer.subscribe(self._topics)
        else:
            self._consumer.subscribe(self._topics, listener=self._listener)
        try:
            await self._consumer.start()
        except (KafkaError, OSError) as err:
            await stop_consumer(self._consumer)
            self._consumer = AIOKafkaConsumer(**self._options)
            raise infrastructure_error(err, f"starting a consumer of {self._topics}") from err
        self._started = True

    async def stop(self) -> None:
        """Leave the group and close; safe to call twice, or without :meth:`start`."""
        if self._stopped:
            return
        self._stopped = True
        try:
            await self._consumer.stop()
        except KafkaError as err:
            raise infrastructure_error(err, "stopping a consumer") from err

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

    async def poll(
        self, *, timeout_ms: int = _FETCH_WAIT_MS, max_records: int | None = None
    ) -> dict[TopicPartition, list[Record]]:
        """Records fetched since the last poll, by partition (empty after ``timeout_ms``)."""
        try:
            batches: dict[TopicPartition, list[Record]] = await self._consumer.getmany(
                timeout_ms=timeout_ms, max_records=max_records
            )
        except KafkaError as err:
            raise infrastructure_error(err, f"consuming {self._topics}") from err
        return batches

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Commit ``offsets`` (the next offset to read per partition) for this group."""
        try:
            await self._consumer.commit(dict(offsets))
        except KafkaError as err:
            raise infrastructure_error(err, "committing consumer offsets") from err


async def read_partition_to_end(
    settings: Settings,
    topic: str,
    partition: int,
    *,
    isolation_level: IsolationLevel = "read_committed",
    stall_timeout_s: float = _DEFAULT_STALL_S,
    start: int | None = None,
) -> AsyncIterator[Record]:
    """Yield every record of ``topic[partition]`` from its beginning (or offset ``start``) to
    its end at call time.

    No group is joined and nothing is committed. The end is fixed when reading starts (the LSO
    under ``read_committed``); records appended later are not read. If no progress is made for
    ``stall_timeout_s`` a retriable :class:`InfrastructureError` is raised instead of hanging.
    """
    tp = TopicPartition(topic, partition)
    consumer = AIOKafkaConsumer(
        **client_options(settings),
        group_id=None,
        client_id=f"aion-{settings.instance_id}-reader",
        enable_auto_commit=False,
        isolation_level=isolation_level,
        auto_offset_reset="earliest",
    )
    try:
        await consumer.start()
        consumer.assign([tp])
        # An explicit seek, not seek_to_beginning(): measured with aiokafka 0.14, the reset
        # that assign() starts can answer seek_to_beginning()'s wait, leaving the position at
        # the end, so the reader silently returned nothing.
        first: int = (await consumer.beginning_offsets([tp]))[tp]
        end: int = (await consumer.end_offsets([tp]))[tp]
        consumer.seek(tp, first if start is None else max(first, start))
        async for record in _records_until(consumer, tp, end, stall_timeout_s):
            yield record
    except KafkaError as err:
        raise infrastructure_error(err, f"reading {topic}[{partition}]") from err
    finally:
        await stop_consumer(consumer)


async def _records_until(
    consumer: AIOKafkaConsumer, tp: TopicPartition, end: int, stall_timeout_s: float
) -> AsyncIterator[Record]:
    """Fetch ``tp`` until the consumer's position reaches ``end``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + stall_timeout_s
    position: int = await consumer.position(tp)
    while position < end:
        batches = await consumer.getmany(tp, timeout_ms=_FETCH_WAIT_MS)
        for record in batches.get(tp, []):
            if record.offset >= end:
                return
            yield record
        new_position: int = await consumer.position(tp)
        if new_position > position:
            position, deadline = new_position, loop.time() + stall_timeout_s
        elif loop.time() > deadline:
            raise InfrastructureError(
                f"reading {tp.topic}[{tp.partition}] stalled at offset {position} "
                f"(end {end}) for {stall_timeout_s:g}s",
                retriable=True,
            )
