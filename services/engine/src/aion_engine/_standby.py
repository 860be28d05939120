"""Standby replicas (Kafka Streams' ``num.standby.replicas``): warm stores of partitions this
engine does not own.

One group-less consumer follows ``<prefix>.engine-state`` and ``<prefix>.engine-closed`` for
every partition the instance does not own and applies what it reads to that partition's local
stores, as the owner's commits land (read_committed). When the group assigns such a partition
here, the acquisition finds its stores a few records behind the changelogs' ends, so it reads
only their tails (a warm restore, and a closed load done at once) instead of the whole
compacted changelogs: failover after an owner dies is bounded by the group's session
timeout, not by the restore.

The tailer and the owner never write one store at once: :meth:`Standby.release` stops the
tailing of a partition synchronously (every store write is synchronous, so none is half done
when it returns), and :meth:`Standby.follow` hands a revoked partition back, resuming from the
store's checkpoint.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from aion_common.kafka.changelog import ChangelogStore, apply_records
from aion_common.kafka.consumer import stop_consumer
from aion_common.kafka.options import client_options
from aion_common.settings import Settings

__all__ = ["Standby"]

_log = logging.getLogger("aion.engine.standby")
_POLL_MS = 200
_RETRY_S = 2.0


class Standby:
    """Keeps the stores of partitions not owned here in step with their changelog."""

    def __init__(
        self, settings: Settings, stores: Mapping[str, Callable[[int], ChangelogStore]]
    ) -> None:
        """``stores``: per changelog topic, the local store of a partition."""
        self._settings = settings
        self._stores = dict(stores)
        self._following: set[int] = set(range(settings.partitions))
        self._moved = asyncio.Event()
        self._moved.set()
        self._task: asyncio.Task[None] | None = None
        self.records = 0

    def start(self) -> None:
        """Begin tailing (idempotent)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="engine-standby")

    async def stop(self) -> None:
        """Stop tailing (idempotent)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    @property
    def following(self) -> frozenset[int]:
        """Partitions tailed now."""
        return frozenset(self._following)

    def release(self, partition: int) -> None:
        """Stop tailing ``partition`` (its owner takes the store over)."""
        self._following.discard(partition)
        self._moved.set()

    def follow(self, partition: int) -> None:
        """Tail ``partition`` again, from its store's checkpoint."""
        self._following.add(partition)
        self._moved.set()

    async def _run(self) -> None:
        while True:
            consumer = AIOKafkaConsumer(
                **client_options(self._settings),
                group_id=None,
                client_id=f"aion-{self._settings.instance_id}-standby",
                enable_auto_commit=False,
                isolation_level="read_committed",
                auto_offset_reset="earliest",
            )
            try:
                await consumer.start()
                await self._tail(consumer)
            except KafkaError as err:
                _log.warning("standby tailing failed; retrying", extra={"error": repr(err)})
            finally:
                await stop_consumer(consumer)
            await asyncio.sleep(_RETRY_S)

    async def _tail(self, consumer: AIOKafkaConsumer) -> None:
        assigned: set[int] = set()
        while True:
            if self._moved.is_set():
                self._moved.clear()
                assigned = await self._assign(consumer)
            fetched = await consumer.getmany(timeout_ms=_POLL_MS)
            for tp, records in fetched.items():
                partition = tp.partition
                if partition not in self._following or partition not in assigned or not records:
                    continue  # owned here now (or being handed over): the owner writes it
                store = self._stores[tp.topic](partition)
                apply_records(store, records, records[-1].offset + 1)
                self.records += len(records)

    async def _assign(self, consumer: AIOKafkaConsumer) -> set[int]:
        partitions = sorted(self._following)
        tps = [TopicPartition(topic, p) for topic in self._stores for p in partitions]
        consumer.assign(tps)
        if not tps:
            return set()
        beginnings = await consumer.beginning_offsets(tps)
        for tp in tps:
            store = self._stores[tp.topic](tp.partition)
            age = store.checkpoint_age_ms
            if age is not None and age > store.stale_ms:
                store.reset()  # it may have missed compacted tombstones: follow from scratch
            consumer.seek(tp, max(beginnings[tp], store.checkpoint or 0))
        _log.info("standby follows", extra={"partitions": partitions})
        return set(partitions)
