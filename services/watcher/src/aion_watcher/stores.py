"""The watcher's local stores of ``<prefix>.watcher-state`` (open work) and
``<prefix>.watcher-closed`` (closed workflows), two per owned partition, and the changelog
writes that keep them (see :mod:`aion_watcher.changelog` for what is written).

The watcher commits ``aion.events`` offsets only once every record a poll produced — the
``RecordChildTerminal`` commands *and* the changelog records of the facts it learnt — is
acknowledged, so the changelog is never behind the committed offset: a restart restores the
changelog's facts and folds again from the committed offset, which at worst re-learns what the
changelog already holds (the fold is idempotent, and a re-issued record is a duplicate the
engine drops). The local store is written in poll order, after the acknowledgement.

A poll's records are sent in two steps: everything, then — once acknowledged — the tombstones
of the ``watcher-state`` records of workflows that closed in it (their ``watcher-closed``
records are durable by then: a crash between leaves a workflow in both, which the restore
resolves by re-folding, never in neither). Records are handed to the producer in the order
the polls were folded (one lock), so a key's newer value is never sent before an older one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from aion_common.codecs import Codec
from aion_common.domain import InfrastructureError
from aion_common.kafka.changelog import (
    MARKER_KEY,
    CatchUp,
    Change,
    ChangelogStore,
    Marker,
    catch_up,
    store_path,
)
from aion_common.kafka.options import client_options
from aion_common.kafka.topics import Topics, partition_for
from aion_common.settings import Settings
from aion_watcher.changelog import (
    FORMAT,
    WORKFLOW,
    ChangelogUnreadable,
    WorkflowFacts,
    decode_workflow,
    workflow_key,
)

__all__ = ["WATCHER_STATE_STALE_MS", "Logged", "WatcherStores"]

_log = logging.getLogger("aion_watcher")

WATCHER_STATE_STALE_MS = 30 * 60 * 1000
"""A local store of ``watcher-state`` last in step longer ago than this restores cold (cheap:
open work): the topic keeps tombstones an hour (``aion_common.kafka.admin``)."""

_STALE_CHUNK = 5_000

StillClosed = Callable[[str, int], bool]
"""``still_closed(workflow_id, token)``: :meth:`aion_watcher.state.WatchState.still_closed`."""


@dataclass(frozen=True, slots=True)
class Logged:
    """Changelog records of one poll, with the offsets the broker gave them."""

    written: list[tuple[int, Change, int]]


class WatcherStores:
    """The stores of the owned partitions and the producer of the changelog records."""

    def __init__(self, settings: Settings, codec: Codec) -> None:
        self._settings = settings
        self._codec = codec
        topics = Topics(settings.topic_prefix)
        self._topic = topics.watcher_state
        self._closed_topic = topics.watcher_closed
        self._stores: dict[int, ChangelogStore] = {}
        self._closed: dict[int, ChangelogStore] = {}
        self._loading: dict[int, list[tuple[Change, int]]] = {}
        """Partitions whose closed store is being loaded: what was written to it meanwhile."""
        self._order = asyncio.Lock()
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
            for partition in [*self._stores, *self._closed]:
                self.close(partition)

    def store(self, partition: int) -> ChangelogStore:
        """Partition ``partition``'s store of ``watcher-state`` (opened on first use)."""
        found = self._stores.get(partition)
        if found is None:
            found = self._stores[partition] = ChangelogStore(
                store_path(self._settings, "watcher", partition), stale_ms=WATCHER_STATE_STALE_MS
            )
        return found

    def closed_store(self, partition: int) -> ChangelogStore:
        """Partition ``partition``'s store of ``watcher-closed`` (opened on first use)."""
        found = self._closed.get(partition)
        if found is None:
            path = store_path(self._settings, "watcher", partition)
            found = self._closed[partition] = ChangelogStore(
                path.with_name(f"{path.stem}-closed{path.suffix}")
            )
        return found

    def close(self, partition: int) -> None:
        """Close a revoked partition's stores (their files stay for the next time); its
        closed load must be stopped first."""
        self._loading.pop(partition, None)
        for stores in (self._stores, self._closed):
            store = stores.pop(partition, None)
            if store is not None:
                store.close()

    async def catch_up(self, partition: int) -> int:
        """Bring the partition's ``watcher-state`` store up to the changelog's end (open work);
        records read."""
        caught = await catch_up(self._settings, self._topic, partition, self.store(partition))
        return caught.records

    async def load_closed_store(
        self, partition: int, progress: Callable[[int, int], None] | None = None
    ) -> CatchUp:
        """Bring the partition's ``watcher-closed`` store up to that changelog's end, writing
        in a worker thread; what the watcher writes to it meanwhile is applied after. Nothing
        may read the store until :meth:`closed_loaded`."""
        store = self.closed_store(partition)
        self.begin_closed_load(partition)
        return await catch_up(
            self._settings,
            self._closed_topic,
            partition,
            store,
            progress=progress,
            in_thread=True,
        )

    def begin_closed_load(self, partition: int) -> None:
        """From now on what is written to the partition's closed store waits for its load
        (written before, it would move the checkpoint the load starts from past what the
        load must read)."""
        self._loading.setdefault(partition, [])

    def closed_loaded(self, partition: int) -> int:
        """The load is done: apply what was written meanwhile; how many records."""
        pending = self._loading.pop(partition, [])
        store = self._closed.get(partition)
        if pending and store is not None:
            # it may be below where the load read to: never move the checkpoint back
            checkpoint = max(pending[-1][1] + 1, store.checkpoint or 0)
            store.write(pending, checkpoint)
        return len(pending)

    def load_closed(self, workflow_id: str) -> tuple[int, WorkflowFacts] | None:
        """A closed workflow's facts from the closed store of its partition, when that store
        is open here (and loaded: the fold does not ask before)."""
        partition = partition_for(workflow_id, self._settings.partitions)
        store = self._closed.get(partition)
        if store is None or partition in self._loading:
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

    async def send(
        self,
        changes: Iterable[tuple[int, Change]],
        deferred: Iterable[tuple[int, str, int]] = (),
        still_closed: StillClosed | None = None,
    ) -> Logged:
        """Send changelog records and wait for the broker's acknowledgement of each; then the
        ``watcher-state`` tombstones of the ``deferred`` closes (partition, id, token) that
        ``still_closed`` confirms, and wait for those."""
        written = await self._send_now(changes)
        deferred = list(deferred)
        if deferred and still_closed is not None:
            # checked when sent, under the lock: a later poll's open record of the same id
            # (started again) is then either already sent or sent after this tombstone
            tombstones = (
                (p, Change(workflow_key(w), None)) for p, w, t in deferred if still_closed(w, t)
            )
            written.extend(await self._send_now(tombstones))
        return Logged(written)

    async def _send_now(
        self, changes: Iterable[tuple[int, Change]]
    ) -> list[tuple[int, Change, int]]:
        pending = []
        try:
            async with self._order:
                for partition, change in changes:
                    future = await self._producer.send(
                        self._closed_topic if change.closed_log else self._topic,
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
        return written

    def apply(self, logged: Logged) -> None:
        """Write acknowledged records to their stores (in the order they were sent)."""
        by_store: dict[tuple[int, bool], list[tuple[Change, int]]] = {}
        for partition, change, offset in logged.written:
            by_store.setdefault((partition, change.closed_log), []).append((change, offset))
        for (partition, closed), written in by_store.items():
            if closed and partition in self._loading:
                self._loading[partition].extend(written)  # applied after the load
                continue
            store = (self._closed if closed else self._stores).get(partition)
            if store is not None:  # revoked meanwhile: its next owner reads the changelog
                store.write(written, max(o for _, o in written) + 1)

    def reset_closed(self, partition: int) -> None:
        """Empty the closed store (a rebuild replaces it; the fold must not read it)."""
        self.closed_store(partition).reset()

    async def build(self, partition: int, facts: list[Change]) -> None:
        """Write a partition rebuilt from the event log whole, in this layout (:data:`FORMAT`):
        ``building`` markers, every fact (open work to ``watcher-state``, closed workflows to
        ``watcher-closed``), a tombstone for every other key ``watcher-state`` held (an older
        layout's closed workflows: a cold restore would read them), then ``complete``
        markers (everything older is stale), ``watcher-state``'s last."""
        store, closed = self.store(partition), self.closed_store(partition)
        closed.reset()
        begun = {}
        for is_closed in (True, False):
            opening = Change(
                MARKER_KEY, Marker("building", -1, FORMAT).encode(), closed_log=is_closed
            )
            begun[is_closed] = (await self.send([(partition, opening)])).written[0][2]
        keep = {c.key for c in facts if not c.closed_log}
        stale = 0
        chunk: list[tuple[int, Change]] = []
        for key in _keys(store):  # nothing else uses this store while it is built
            if key not in keep:
                chunk.append((partition, Change(key, None)))
            if len(chunk) >= _STALE_CHUNK:
                stale += len((await self.send(chunk)).written)
                chunk = []
        stale += len((await self.send(chunk)).written)
        store.reset()
        self.apply(await self.send((partition, c) for c in facts))
        for is_closed, target in ((True, closed), (False, store)):  # watcher-state's last
            marker = Marker("complete", begun[is_closed], FORMAT)
            done = await self.send(
                [(partition, Change(MARKER_KEY, marker.encode(), closed_log=is_closed))]
            )
            offset = done.written[0][2]
            target.write([], offset + 1, marker=(marker, offset))
        if stale:
            _log.info(
                "watcher changelog: keys of the layout it replaces tombstoned",
                extra={"partition": partition, "records": stale},
            )

    async def mark_built(self, partition: int) -> None:
        """A partition with nothing to rebuild: its markers alone."""
        await self.build(partition, [])


def _keys(store: ChangelogStore) -> Iterator[bytes]:
    """Every workflow, watch and recorded-child key the store holds."""
    for key, _, _ in store.scan_all():
        if key[:1] in (WORKFLOW, b"a", b"r"):
            yield key
