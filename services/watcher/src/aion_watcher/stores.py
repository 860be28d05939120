"""The watcher's local stores of ``<prefix>.watcher-state``, one per owned partition, and the
changelog writes that keep them (see :mod:`aion_watcher.changelog` for what is written).

The watcher commits ``aion.events`` offsets only once every record a poll produced — the
``RecordChildTerminal`` commands *and* the changelog records of the facts it learnt — is
acknowledged, so the changelog is never behind the committed offset: a restart restores the
changelog's facts and folds again from the committed offset, which at worst re-learns what the
changelog already holds (the fold is idempotent, and a re-issued record is a duplicate the
engine drops). The local store is written in poll order, after the acknowledgement.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from aion_common.codecs import Codec
from aion_common.domain import InfrastructureError
from aion_common.kafka.changelog import (
    MARKER_KEY,
    Change,
    ChangelogStore,
    Marker,
    catch_up,
    store_path,
)
from aion_common.kafka.options import client_options
from aion_common.kafka.topics import Topics, partition_for
from aion_common.settings import Settings
from aion_watcher.changelog import ChangelogUnreadable, WorkflowFacts, decode_workflow, workflow_key

__all__ = ["Logged", "WatcherStores"]

_log = logging.getLogger("aion_watcher")


@dataclass(frozen=True, slots=True)
class Logged:
    """Changelog records of one poll, with the offsets the broker gave them."""

    written: list[tuple[int, Change, int]]


class WatcherStores:
    """The stores of the owned partitions and the producer of the changelog records."""

    def __init__(self, settings: Settings, codec: Codec) -> None:
        self._settings = settings
        self._codec = codec
        self._topic = Topics(settings.topic_prefix).watcher_state
        self._stores: dict[int, ChangelogStore] = {}
        self._producer = AIOKafkaProducer(
            **client_options(settings),
            client_id=f"aion-watcher-{settings.instance_id}-state",
            enable_idempotence=True,
            linger_ms=2,
        )

    async def start(self) -> None:
        """Connect the changelog producer."""
        await self._producer.start()

    async def stop(self) -> None:
        """Close the producer and every store."""
        try:
            await self._producer.stop()
        finally:
            for store in self._stores.values():
                store.close()
            self._stores.clear()

    def store(self, partition: int) -> ChangelogStore:
        """Partition ``partition``'s store (opened on first use)."""
        found = self._stores.get(partition)
        if found is None:
            found = self._stores[partition] = ChangelogStore(
                store_path(self._settings, "watcher", partition)
            )
        return found

    def close(self, partition: int) -> None:
        """Close a revoked partition's store (its file stays for the next time)."""
        store = self._stores.pop(partition, None)
        if store is not None:
            store.close()

    async def catch_up(self, partition: int) -> int:
        """Bring the partition's store up to the changelog's end; records read."""
        caught = await catch_up(self._settings, self._topic, partition, self.store(partition))
        return caught.records

    def load_closed(self, workflow_id: str) -> tuple[int, WorkflowFacts] | None:
        """A workflow's facts from the store of its partition, when that store is open here."""
        partition = partition_for(workflow_id, self._settings.partitions)
        store = self._stores.get(partition)
        if store is None:
            return None
        found = store.get(workflow_key(workflow_id))
        if found is None:
            return None
        value, offset = found
        try:
            return partition, decode_workflow(workflow_id, value)
        except ChangelogUnreadable as err:
            _log.error(
                "unreadable watcher changelog record; treated as unknown",
                extra={"partition": partition, "offset": offset, "error": str(err)},
            )
            return None

    async def send(self, changes: Iterable[tuple[int, Change]]) -> Logged:
        """Send changelog records and wait for the broker's acknowledgement of each."""
        pending = []
        try:
            for partition, change in changes:
                future = await self._producer.send(
                    self._topic,
                    value=change.value,
                    key=change.key,
                    partition=partition,
                    headers=change.headers(),
                )
                pending.append((partition, change, future))
            written = []
            for partition, change, future in pending:
                metadata = await future
                written.append((partition, change, int(metadata.offset)))
        except KafkaError as err:
            raise InfrastructureError(
                f"writing the watcher changelog failed: {err!r}", retriable=True
            ) from err
        return Logged(written)

    def apply(self, logged: Logged) -> None:
        """Write acknowledged records to their stores (in the order they were sent)."""
        by_partition: dict[int, list[tuple[Change, int]]] = {}
        for partition, change, offset in logged.written:
            by_partition.setdefault(partition, []).append((change, offset))
        for partition, written in by_partition.items():
            store = self._stores.get(partition)
            if store is not None:  # revoked meanwhile: its next owner reads the changelog
                store.write(written, written[-1][1] + 1)

    async def build(self, partition: int, facts: list[Change]) -> None:
        """Write a partition rebuilt from the event log whole: ``building``, every fact, then
        ``complete`` (everything older is stale)."""
        store = self.store(partition)
        store.reset()
        begun = await self.send([(partition, Change(MARKER_KEY, Marker("building", -1).encode()))])
        begun_offset = begun.written[0][2]
        logged = await self.send((partition, change) for change in facts)
        self.apply(logged)
        done = await self.send(
            [(partition, Change(MARKER_KEY, Marker("complete", begun_offset).encode()))]
        )
        marker_offset = done.written[0][2]
        store.write([], marker_offset + 1, marker=(Marker("complete", begun_offset), marker_offset))

    async def mark_built(self, partition: int) -> None:
        """A partition with nothing to rebuild: its marker alone."""
        await self.build(partition, [])
