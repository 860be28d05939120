"""State changelogs: a compacted topic per service, materialised per partition in a local store.

A service that keeps state per partition (the engine, the watcher) writes every change of it to
its changelog topic, keyed by what changed, on the partition the state belongs to; the latest
record per key *is* the state, and a tombstone (no value) deletes it. Kafka compaction keeps
the topic's size at the live keys. This module is the part every such service shares:

- :class:`Change` is one changelog record: key, value (None: a tombstone) and what the store
  indexes without decoding — whether the entry belongs to open work (restored into memory on
  acquisition) and, for a closed workflow, when it closed (for retention);
- :class:`ChangelogStore` is one partition's changelog in a local SQLite file: the live
  entries, the changelog offset they reflect (the *checkpoint*), and the build marker;
- :func:`catch_up` reads a changelog partition from the store's checkpoint (or its beginning,
  for an empty store) to its end and applies it: O(tail) for a store that was in step, O(live
  keys) for a fresh one.

The *build marker* (key :data:`MARKER_KEY`) tells "never built" from "compacted to nothing":
a service that finds none builds its changelog from its input topic once (the upgrade from a
log written without changelogs), writing ``building`` first and ``complete`` after the rebuilt
state; ``complete`` names the offset the build began at, and every entry written below it is
stale (a reader drops them), so a rebuild also replaces whatever a bad record left behind.

Why SQLite (docs/decisions.md, "Recovery that does not grow with history"): in the standard
library, one file per partition, transactional (entries and checkpoint change together, so a
crash leaves a consistent, possibly older, store), and fast enough for the access pattern —
batched upserts after each commit, point reads of closed workflows, one indexed scan of open
work on acquisition.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord, TopicPartition

from aion_common.domain.errors import InfrastructureError
from aion_common.kafka.consumer import stop_consumer
from aion_common.kafka.errors import infrastructure_error
from aion_common.kafka.options import client_options
from aion_common.settings import Settings

__all__ = [
    "MARKER_KEY",
    "STALE_CHECKPOINT_MS",
    "STATE_HEADER",
    "CatchUp",
    "Change",
    "ChangelogStore",
    "Marker",
    "apply_records",
    "catch_up",
    "store_path",
]

_log = logging.getLogger("aion.changelog")

MARKER_KEY: Final = b"\x00aion.changelog"
"""The build marker's key (no workflow id starts with a NUL: ids are printable)."""

STATE_HEADER: Final = "aion.state"
"""Header naming what the store indexes: ``open``, or ``closed:<epoch ms>``."""

STALE_CHECKPOINT_MS: Final = 12 * 60 * 60 * 1000
"""A store last brought up to date longer ago than this is discarded and rebuilt from the
changelog: compaction drops tombstones a day (the topics' ``delete.retention.ms``) after they
were written, so a store that slept longer could miss a deletion."""

_CHUNK = 5_000
_FETCH_WAIT_MS = 200
_STALL_S = 30.0


@dataclass(frozen=True, slots=True)
class Change:
    """One changelog record: ``value`` None is a tombstone (the key is deleted)."""

    key: bytes
    value: bytes | None
    open: bool = False
    """The entry belongs to open work (restored into memory when the partition is acquired)."""
    closed_at_ms: int | None = None
    """When the workflow the entry describes closed (retention sweeps by it)."""
    closed_log: bool = False
    """The record goes to the service's changelog of closed state (the engine's
    ``<prefix>.engine-closed``), not to its changelog of open state."""

    def headers(self) -> list[tuple[str, bytes]]:
        """The record's headers (what the store indexes, readable without decoding)."""
        if self.value is None:
            return []
        if self.open:
            return [(STATE_HEADER, b"open")]
        if self.closed_at_ms is not None:
            return [(STATE_HEADER, b"closed:%d" % self.closed_at_ms)]
        return []

    @classmethod
    def from_record(
        cls, key: bytes, value: bytes | None, headers: Sequence[tuple[str, bytes]]
    ) -> Change:
        """The change a consumed record holds."""
        is_open, closed_at = False, None
        for name, raw in headers:
            if name != STATE_HEADER:
                continue
            if raw == b"open":
                is_open = True
            elif raw.startswith(b"closed:"):
                with contextlib.suppress(ValueError):
                    closed_at = int(raw[len(b"closed:") :])
        return cls(key, value, is_open, closed_at)


@dataclass(frozen=True, slots=True)
class Marker:
    """The build marker: ``building`` since offset ``begun``, or ``complete`` (entries below
    ``begun`` are stale). ``version`` is the layout of the records the build wrote: a service
    that changes its layout bumps it, and a changelog built in an older one is built again."""

    state: Literal["building", "complete"]
    begun: int
    version: int = 1

    def encode(self) -> bytes:
        """The marker record's value."""
        fields: dict[str, object] = {"state": self.state, "begun": self.begun}
        if self.version != 1:
            fields["version"] = self.version
        return json.dumps(fields).encode()

    @classmethod
    def decode(cls, raw: bytes | None) -> Marker | None:
        """The marker a record value holds (None for anything else)."""
        if raw is None:
            return None
        try:
            data = json.loads(raw)
            state, begun = data["state"], int(data["begun"])
            version = int(data.get("version", 1))
        except (ValueError, KeyError, TypeError, AttributeError):
            return None
        if state not in ("building", "complete"):
            return None
        return cls(state, begun, version)


def store_path(settings: Settings, service: str, partition: int) -> Path:
    """Where ``service`` of this instance keeps partition ``partition``'s store."""
    root = Path(settings.state_dir) / settings.topic_prefix / f"{service}-{settings.instance_id}"
    return root / f"p{partition}.sqlite"


class ChangelogStore:
    """One changelog partition's live entries in a SQLite file, with the offset they reflect.

    Not thread-safe; every call is a short synchronous SQLite transaction (the caller's event
    loop waits for it). :meth:`write` applies changes and moves the checkpoint in one
    transaction, so the file is always a consistent image of the changelog at its checkpoint.
    """

    def __init__(self, path: Path, *, stale_ms: int = STALE_CHECKPOINT_MS) -> None:
        """Open (creating) the store at ``path``. ``stale_ms``: a checkpoint older than this
        is not trusted (:func:`catch_up` starts afresh): under half its changelog topic's
        ``delete.retention.ms``, the time compaction keeps tombstones readable."""
        self.path = path
        self.stale_ms = stale_ms
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        # A process crash loses nothing the WAL holds; a power loss may lose the newest writes,
        # which only moves the checkpoint back (the changelog has them).
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(
            """
            CREATE TABLE IF NOT EXISTS entries (
                key BLOB PRIMARY KEY, value BLOB NOT NULL, offset INTEGER NOT NULL,
                open INTEGER NOT NULL, closed_at INTEGER
            ) WITHOUT ROWID;
            CREATE INDEX IF NOT EXISTS entries_open ON entries (key) WHERE open = 1;
            CREATE INDEX IF NOT EXISTS entries_closed ON entries (closed_at)
                WHERE closed_at IS NOT NULL;
            CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
            """
        )

    def close(self) -> None:
        """Close the file (idempotent)."""
        with contextlib.suppress(sqlite3.ProgrammingError):
            self._db.close()

    # -- meta ------------------------------------------------------------------------------

    def _meta(self, name: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return None if row is None else str(row[0])

    def _set_meta(self, name: str, value: str) -> None:
        self._db.execute(
            "INSERT INTO meta (name, value) VALUES (?, ?) "
            "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            (name, value),
        )

    @property
    def checkpoint(self) -> int | None:
        """The next changelog offset to read (None: nothing read yet)."""
        raw = self._meta("checkpoint")
        return None if raw is None else int(raw)

    @property
    def checkpoint_age_ms(self) -> int | None:
        """How long ago the checkpoint last moved (None: never)."""
        raw = self._meta("checkpoint_at")
        return None if raw is None else max(0, _now_ms() - int(raw))

    @property
    def marker(self) -> Marker | None:
        """The build marker read so far (None: the changelog has none up to the checkpoint)."""
        raw = self._meta("marker")
        return None if raw is None else Marker.decode(raw.encode())

    # -- reads -----------------------------------------------------------------------------

    def get(self, key: bytes) -> tuple[bytes, int] | None:
        """The live value of ``key`` and the changelog offset it came from, if any."""
        row = self._db.execute("SELECT value, offset FROM entries WHERE key = ?", (key,)).fetchone()
        return None if row is None else (bytes(row[0]), int(row[1]))

    def scan_open(self) -> Iterator[tuple[bytes, bytes, int]]:
        """Every open entry ``(key, value, offset)``, in key order."""
        cursor = self._db.execute(
            "SELECT key, value, offset FROM entries WHERE open = 1 ORDER BY key"
        )
        for key, value, offset in cursor:
            yield bytes(key), bytes(value), int(offset)

    def scan_all(self) -> Iterator[tuple[bytes, bytes, int]]:
        """Every entry ``(key, value, offset)``, in key order."""
        for key, value, offset in self._db.execute(
            "SELECT key, value, offset FROM entries ORDER BY key"
        ):
            yield bytes(key), bytes(value), int(offset)

    def scan_prefix(self, prefix: bytes) -> list[tuple[bytes, bytes, int]]:
        """Every entry whose key starts with ``prefix``, in key order."""
        cursor = self._db.execute(
            "SELECT key, value, offset FROM entries WHERE key >= ? AND key < ? ORDER BY key",
            (prefix, prefix + b"\xff" * 8),
        )
        return [(bytes(k), bytes(v), int(o)) for k, v, o in cursor]

    def closed_before(self, at_ms: int, limit: int) -> list[tuple[bytes, int]]:
        """Up to ``limit`` entries ``(key, closed_at_ms)`` closed before ``at_ms``, oldest first."""
        cursor = self._db.execute(
            "SELECT key, closed_at FROM entries WHERE closed_at IS NOT NULL AND closed_at < ? "
            "ORDER BY closed_at LIMIT ?",
            (at_ms, limit),
        )
        return [(bytes(k), int(c)) for k, c in cursor]

    def counts(self) -> tuple[int, int]:
        """(open entries, all entries)."""
        opened = self._db.execute("SELECT count(*) FROM entries WHERE open = 1").fetchone()[0]
        total = self._db.execute("SELECT count(*) FROM entries").fetchone()[0]
        return int(opened), int(total)

    # -- writes ----------------------------------------------------------------------------

    def write(
        self,
        changes: Sequence[tuple[Change, int]],
        checkpoint: int,
        *,
        marker: tuple[Marker, int] | None = None,
    ) -> None:
        """Apply ``(change, offset)`` pairs in order, then move the checkpoint, atomically.

        A ``marker`` (read at the given offset) is stored too; a complete one drops every entry
        written below the offset its build began at.
        """
        latest: dict[bytes, tuple[Change, int]] = {}
        for change, offset in changes:
            latest[change.key] = (change, offset)
        upserts = [
            (c.key, c.value, o, int(c.open), c.closed_at_ms)
            for c, o in latest.values()
            if c.value is not None
        ]
        deletes = [(c.key,) for c, _ in latest.values() if c.value is None]
        db = self._db
        db.execute("BEGIN")
        try:
            if upserts:
                db.executemany(
                    "INSERT INTO entries (key, value, offset, open, closed_at) "
                    "VALUES (?, ?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET "
                    "value = excluded.value, offset = excluded.offset, open = excluded.open, "
                    "closed_at = excluded.closed_at",
                    upserts,
                )
            if deletes:
                db.executemany("DELETE FROM entries WHERE key = ?", deletes)
            if marker is not None:
                found, _ = marker
                self._set_meta("marker", found.encode().decode())
                if found.state == "complete":
                    db.execute("DELETE FROM entries WHERE offset < ?", (found.begun,))
            self._set_meta("checkpoint", str(checkpoint))
            self._set_meta("checkpoint_at", str(_now_ms()))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def reset(self) -> None:
        """Forget everything (the store is rebuilt from the changelog's beginning)."""
        self._db.execute("BEGIN")
        self._db.execute("DELETE FROM entries")
        self._db.execute("DELETE FROM meta")
        self._db.execute("COMMIT")


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True, slots=True)
class CatchUp:
    """What :func:`catch_up` did: where it read from and to, how many records, and whether the
    store started empty (a *cold* restore, O(live keys)) or from a checkpoint (*warm*, O(tail))."""

    start: int
    end: int
    records: int
    cold: bool
    seconds: float


async def catch_up(
    settings: Settings,
    topic: str,
    partition: int,
    store: ChangelogStore,
    *,
    progress: Callable[[int, int], None] | None = None,
    stall_timeout_s: float = _STALL_S,
    end: int | None = None,
    in_thread: bool = False,
) -> CatchUp:
    """Bring ``store`` up to ``topic[partition]``'s end (read_committed, its end at call time,
    or ``end`` when given: what a caller that writes the topic itself meanwhile knew was there).

    Reads from the store's checkpoint, or from the beginning when the store is empty or its
    checkpoint is older than its ``stale_ms`` (then the store is reset first).
    ``progress(read, total)`` is called after every chunk applied. ``in_thread``: each chunk
    is written to the store in a worker thread, so the event loop goes on serving meanwhile
    (nothing else may use the store until this returns).
    """
    began = time.perf_counter()
    age = store.checkpoint_age_ms
    if age is not None and age > store.stale_ms:
        _log.warning(
            "local store too old to trust (it may have missed compacted tombstones); rebuilding",
            extra={"topic": topic, "partition": partition, "age_s": age // 1000},
        )
        store.reset()
    checkpoint = store.checkpoint
    tp = TopicPartition(topic, partition)
    consumer = AIOKafkaConsumer(
        **client_options(settings),
        group_id=None,
        client_id=f"aion-{settings.instance_id}-changelog",
        enable_auto_commit=False,
        isolation_level="read_committed",
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=8 * 1024 * 1024,
    )
    try:
        await consumer.start()
        consumer.assign([tp])
        first: int = (await consumer.beginning_offsets([tp]))[tp]
        if end is None:
            end = (await consumer.end_offsets([tp]))[tp]
        if checkpoint is not None and checkpoint > end:
            # the topic is shorter than what the store saw: it was recreated; start afresh
            _log.warning(
                "local store is ahead of its changelog (the topic was recreated); rebuilding",
                extra={"topic": topic, "partition": partition, "checkpoint": checkpoint},
            )
            store.reset()
            checkpoint = None
        start = first if checkpoint is None else max(first, checkpoint)
        if start >= end:
            if checkpoint is None or checkpoint < end:
                store.write([], end)
            return CatchUp(start, end, 0, checkpoint is None, time.perf_counter() - began)
        consumer.seek(tp, start)
        records = await _apply(
            consumer, tp, (start, end), store, progress, stall_timeout_s, in_thread=in_thread
        )
        return CatchUp(start, end, records, checkpoint is None, time.perf_counter() - began)
    except KafkaError as err:
        raise infrastructure_error(err, f"reading {topic}[{partition}]") from err
    finally:
        await stop_consumer(consumer)


async def _apply(  # noqa: PLR0917 - one reading pass
    consumer: AIOKafkaConsumer,
    tp: TopicPartition,
    bounds: tuple[int, int],
    store: ChangelogStore,
    progress: Callable[[int, int], None] | None,
    stall_timeout_s: float,
    *,
    in_thread: bool = False,
) -> int:
    """Apply ``tp`` from ``bounds[0]`` to ``bounds[1]`` to the store, in chunks."""
    start, end = bounds
    records = 0
    chunk: list[ConsumerRecord[bytes, bytes]] = []

    async def apply(chunk: list[ConsumerRecord[bytes, bytes]], checkpoint: int) -> None:
        if in_thread:
            await _in_thread(apply_records, store, chunk, checkpoint)
        else:
            apply_records(store, chunk, checkpoint)

    async for record in _records(consumer, tp, end, stall_timeout_s):
        records += 1
        chunk.append(record)
        if len(chunk) >= _CHUNK:
            await apply(chunk, chunk[-1].offset + 1)
            chunk = []
            if progress is not None:
                progress(record.offset + 1 - start, end - start)
    await apply(chunk, end)
    if progress is not None:
        progress(end - start, end - start)
    return records


async def _in_thread(fn: Callable[..., None], *args: object) -> None:
    """``fn(*args)`` in a worker thread; a cancellation waits for it to finish first (the
    store must not be used by two threads at once), then propagates."""
    future = asyncio.get_running_loop().run_in_executor(None, functools.partial(fn, *args))
    try:
        await asyncio.shield(future)
    except asyncio.CancelledError:
        while not future.done():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait([future])
        raise


def apply_records(
    store: ChangelogStore, records: Sequence[ConsumerRecord[bytes, bytes]], checkpoint: int
) -> None:
    """Apply consumed changelog records to ``store`` and move its checkpoint to
    ``checkpoint`` (the next offset to read); a build marker is applied where it stands."""
    pending: list[tuple[Change, int]] = []
    for record in records:
        if record.key == MARKER_KEY:
            marker = Marker.decode(record.value)
            if marker is not None:
                store.write(pending, record.offset + 1, marker=(marker, record.offset))
                pending = []
                continue
        if record.key is None:
            continue  # not ours: nothing keyed it
        pending.append(
            (Change.from_record(record.key, record.value, record.headers), record.offset)
        )
    store.write(pending, checkpoint)


async def _records(
    consumer: AIOKafkaConsumer, tp: TopicPartition, end: int, stall_timeout_s: float
) -> AsyncIterator[ConsumerRecord[bytes, bytes]]:
    position: int = await consumer.position(tp)
    deadline = time.monotonic() + stall_timeout_s
    while position < end:
        batches = await consumer.getmany(tp, timeout_ms=_FETCH_WAIT_MS, max_records=_CHUNK)
        for record in batches.get(tp, []):
            if record.offset >= end:
                return
            yield record
        new_position: int = await consumer.position(tp)
        if new_position > position:
            position, deadline = new_position, time.monotonic() + stall_timeout_s
        elif time.monotonic() > deadline:
            raise InfrastructureError(
                f"reading {tp.topic}[{tp.partition}] stalled at offset {position} "
                f"(end {end}) for {stall_timeout_s:g}s",
                retriable=True,
            )
