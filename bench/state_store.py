"""Local state store benchmark: ``python -m bench.state_store`` (decision 37's measurement).

The engine keeps each partition's changelog in a local store (``aion_common.kafka.changelog.
ChangelogStore``, SQLite). The issue asked to measure SQLite, LMDB and RocksDB and choose; this
replays the engine's own changelog records (made by :mod:`bench._history`: the engine's core
and codec, ``--open`` waiting workflows, then parent/child pairs run to completion) into each
store through the same five operations the engine does, each timed on its own:

- **load**: every record in order, in chunks of 5,000 per transaction with the checkpoint (a
  cold restore: heads, run records and their tombstones; an upsert also moves the entry's
  open/closed index entries, a tombstone removes them);
- **commit**: the records of one more closed pair per transaction, each with its checkpoint
  (what the engine writes after each Kafka transaction), ``--commits`` of them: µs each;
- **point read**: ``--reads`` random closed workflows' heads (a command to a workflow that
  left the heap);
- **scan open**: every open entry (an acquisition's restore);
- **sweep**: the 1,000 oldest closed entries by close time (retention);

and the store's size on disk, and the time to open it again. SQLite is the real
``ChangelogStore``; LMDB (``lmdb``) and RocksDB (``rocksdict``) are the same operations over
one key space with index entries kept beside the data (``e`` entry, ``o`` open, ``c`` closed by
close time, ``m`` meta), written in one transaction / write batch. A backend whose package is
not installed is reported as skipped (``pip install lmdb rocksdict`` to measure them).

Prints one JSON line per figure. Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import struct
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

from aion_common.kafka.changelog import Change, ChangelogStore
from bench import _history

BENCH = "state_store"
_CHUNK = 5_000
_U64 = struct.Struct(">Q")


def line(metric: str, value: float, unit: str, **extra: Any) -> None:
    """One JSON line of this benchmark."""
    record = {"bench": BENCH, "metric": metric, "value": value, "unit": unit, **extra}
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


class Store(Protocol):
    """What the engine asks of a partition's local store."""

    def write(self, changes: Sequence[tuple[Change, int]], checkpoint: int) -> None: ...
    def get(self, key: bytes) -> bytes | None: ...
    def scan_open(self) -> int: ...
    def closed_before(self, at_ms: int, limit: int) -> int: ...
    def close(self) -> None: ...


class SqliteStore:
    """The engine's own store."""

    def __init__(self, path: Path) -> None:
        self._store = ChangelogStore(path / "p0.sqlite")

    def write(self, changes: Sequence[tuple[Change, int]], checkpoint: int) -> None:
        self._store.write(changes, checkpoint)

    def get(self, key: bytes) -> bytes | None:
        found = self._store.get(key)
        return None if found is None else found[0]

    def scan_open(self) -> int:
        return sum(1 for _ in self._store.scan_open())

    def closed_before(self, at_ms: int, limit: int) -> int:
        return len(self._store.closed_before(at_ms, limit))

    def close(self) -> None:
        self._store.close()


def _meta_of(change: Change, offset: int) -> bytes:
    """An entry's header in the KV stores: open flag, closed-at (0: none), offset."""
    return bytes([int(change.open)]) + _U64.pack(change.closed_at_ms or 0) + _U64.pack(offset)


def _index_keys(key: bytes, header: bytes) -> list[bytes]:
    keys = []
    if header[0]:
        keys.append(b"o" + key)
    closed_at = _U64.unpack_from(header, 1)[0]
    if closed_at:
        keys.append(b"c" + _U64.pack(closed_at) + key)
    return keys


class _Kv:
    """The ops of a sorted KV store, over which both KV backends implement :class:`Store`."""

    def _plan(
        self, changes: Sequence[tuple[Change, int]], checkpoint: int
    ) -> tuple[list[tuple[bytes, bytes]], list[bytes]]:
        latest: dict[bytes, tuple[Change, int]] = {}
        for change, offset in changes:
            latest[change.key] = (change, offset)
        puts: list[tuple[bytes, bytes]] = []
        deletes: list[bytes] = []
        for key, (change, offset) in latest.items():
            old = self._raw(b"e" + key)
            if old is not None:
                deletes.extend(_index_keys(key, old[:17]))
            if change.value is None:
                if old is not None:
                    deletes.append(b"e" + key)
                continue
            header = _meta_of(change, offset)
            puts.append((b"e" + key, header + change.value))
            puts.extend((index, b"") for index in _index_keys(key, header))
        puts.append((b"mcheckpoint", str(checkpoint).encode()))
        puts.append((b"mcheckpoint_at", str(int(time.time() * 1000)).encode()))
        wanted = {k for k, _ in puts}
        return puts, [k for k in deletes if k not in wanted]

    def _raw(self, key: bytes) -> bytes | None:
        raise NotImplementedError

    def get(self, key: bytes) -> bytes | None:
        raw = self._raw(b"e" + key)
        return None if raw is None else raw[17:]


class LmdbStore(_Kv):
    """LMDB: one environment per partition, one write transaction per write."""

    def __init__(self, path: Path, *, sync: bool) -> None:
        import lmdb  # noqa: PLC0415 - optional

        path.mkdir(parents=True, exist_ok=True)
        self._env = lmdb.open(str(path), map_size=16 << 30, sync=sync, metasync=sync)

    def _raw(self, key: bytes) -> bytes | None:
        with self._env.begin() as txn:
            value = txn.get(key)
        return None if value is None else bytes(value)

    def write(self, changes: Sequence[tuple[Change, int]], checkpoint: int) -> None:
        puts, deletes = self._plan(changes, checkpoint)
        with self._env.begin(write=True) as txn:
            for key in deletes:
                txn.delete(key)
            for key, value in puts:
                txn.put(key, value)

    def _scan(self, prefix: bytes, limit: int | None = None) -> Iterator[bytes]:
        with self._env.begin() as txn:
            cursor = txn.cursor()
            if not cursor.set_range(prefix):
                return
            for count, key in enumerate(cursor.iternext(keys=True, values=False)):
                if not key.startswith(prefix) or (limit is not None and count >= limit):
                    return
                yield bytes(key)

    def scan_open(self) -> int:
        count = 0
        with self._env.begin() as txn:
            for key in list(self._scan(b"o")):
                if txn.get(b"e" + key[1:]) is not None:
                    count += 1
        return count

    def closed_before(self, at_ms: int, limit: int) -> int:
        bound = b"c" + _U64.pack(at_ms)
        return sum(1 for key in self._scan(b"c", limit) if key < bound)

    def close(self) -> None:
        self._env.close()


class RocksStore(_Kv):
    """RocksDB (rocksdict): one database per partition, one write batch per write."""

    def __init__(self, path: Path) -> None:
        from rocksdict import Options, Rdict  # noqa: PLC0415 - optional

        options = Options(raw_mode=True)
        options.create_if_missing(True)
        self._db = Rdict(str(path), options=options)

    def _raw(self, key: bytes) -> bytes | None:
        value = self._db.get(key)
        return None if value is None else bytes(value)

    def write(self, changes: Sequence[tuple[Change, int]], checkpoint: int) -> None:
        from rocksdict import WriteBatch  # noqa: PLC0415 - optional

        puts, deletes = self._plan(changes, checkpoint)
        batch = WriteBatch(raw_mode=True)
        for key in deletes:
            batch.delete(key)
        for key, value in puts:
            batch.put(key, value)
        self._db.write(batch)

    def _keys(self, prefix: bytes) -> Iterator[bytes]:
        iterator = self._db.iter()
        iterator.seek(prefix)
        while iterator.valid():
            key = bytes(iterator.key())
            if not key.startswith(prefix):
                return
            yield key
            iterator.next()

    def scan_open(self) -> int:
        return sum(1 for key in list(self._keys(b"o")) if self._raw(b"e" + key[1:]) is not None)

    def closed_before(self, at_ms: int, limit: int) -> int:
        bound = b"c" + _U64.pack(at_ms)
        count = 0
        for key in self._keys(b"c"):
            if count >= limit or key >= bound:
                break
            count += 1
        return count

    def close(self) -> None:
        self._db.close()


def _open(backend: str, path: Path) -> Store:
    if backend == "sqlite":
        return SqliteStore(path)
    if backend == "lmdb":
        return LmdbStore(path, sync=True)
    if backend == "lmdb-nosync":
        return LmdbStore(path, sync=False)
    return RocksStore(path)


def _available(backend: str) -> bool:
    module = {"lmdb": "lmdb", "lmdb-nosync": "lmdb", "rocksdb": "rocksdict"}.get(backend)
    if module is None:
        return True
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def _records(open_workflows: int, closed_pairs: int) -> tuple[list[Change], list[list[Change]]]:
    """The changelog's records in order (the load), and one more pair's per step (the commits)."""
    steps = _history.engine_history(open_workflows=open_workflows)
    loaded: list[Change] = []
    pairs = 0
    for step in steps:
        loaded.extend(step.changes)
        if step.closed_pair:
            pairs += 1
            if pairs >= closed_pairs:
                break
    commits: list[list[Change]] = []
    for step in steps:
        commits.append(step.changes)
        if step.closed_pair and len(commits) >= 4 * 1_000:
            break
    return loaded, commits


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def measure(
    backend: str, root: Path, loaded: list[Change], commits: list[list[Change]], args: Any
) -> None:
    """Every figure for one backend."""
    path = root / backend
    store = _open(backend, path)
    offset = 0
    began = time.perf_counter()
    for start in range(0, len(loaded), _CHUNK):
        chunk = loaded[start : start + _CHUNK]
        store.write([(c, offset + i) for i, c in enumerate(chunk)], offset + len(chunk))
        offset += len(chunk)
    load_s = time.perf_counter() - began
    line(
        "load_s",
        round(load_s, 2),
        "s",
        backend=backend,
        records=len(loaded),
        records_per_s=round(len(loaded) / load_s),
    )
    steps = commits[: args.commits]
    began = time.perf_counter()
    for changes in steps:
        store.write([(c, offset + i) for i, c in enumerate(changes)], offset + len(changes))
        offset += len(changes)
    commit_s = time.perf_counter() - began
    line("commit_us", round(commit_s / len(steps) * 1e6, 1), "us", backend=backend, n=len(steps))
    closed_keys = [
        c.key
        for c in loaded
        if c.closed_at_ms is not None and c.value is not None and b"\0" not in c.key
    ]
    sample = random.Random(7).choices(closed_keys, k=args.reads)
    began = time.perf_counter()
    found = sum(1 for key in sample if store.get(key) is not None)
    read_s = time.perf_counter() - began
    line(
        "point_read_us",
        round(read_s / len(sample) * 1e6, 2),
        "us",
        backend=backend,
        n=len(sample),
        found=found,
    )
    began = time.perf_counter()
    opened = store.scan_open()
    line(
        "scan_open_ms",
        round((time.perf_counter() - began) * 1000, 1),
        "ms",
        backend=backend,
        entries=opened,
    )
    began = time.perf_counter()
    swept = store.closed_before(int(time.time() * 1000) + 1, 1_000)
    line(
        "sweep_ms",
        round((time.perf_counter() - began) * 1000, 2),
        "ms",
        backend=backend,
        entries=swept,
    )
    store.close()
    line("disk_mb", round(_size(path) / 1e6, 1), "MB", backend=backend)
    began = time.perf_counter()
    again = _open(backend, path)
    again.get(closed_keys[0])
    line("reopen_ms", round((time.perf_counter() - began) * 1000, 1), "ms", backend=backend)
    again.close()


def main(argv: list[str] | None = None) -> int:
    """Measure each backend and print its JSON lines."""
    parser = argparse.ArgumentParser(prog="python -m bench.state_store", description=__doc__)
    parser.add_argument("--open", type=int, default=10_000, help="open workflows")
    parser.add_argument(
        "--closed", type=int, default=166_667, help="closed parent/child pairs (6 events each)"
    )
    parser.add_argument("--commits", type=int, default=2_000, help="commit transactions timed")
    parser.add_argument("--reads", type=int, default=20_000, help="point reads timed")
    parser.add_argument(
        "--backends",
        type=lambda text: text.split(","),
        default=["sqlite", "lmdb", "lmdb-nosync", "rocksdb"],
    )
    args = parser.parse_args(argv)
    began = time.perf_counter()
    loaded, commits = _records(args.open, args.closed)
    sys.stderr.write(
        f"state_store: {len(loaded):,} changelog records made in "
        f"{time.perf_counter() - began:.1f} s\n"
    )
    root = Path(tempfile.mkdtemp(prefix="aion-bench-store-", dir=os.environ.get("TMPDIR")))
    try:
        for backend in args.backends:
            if not _available(backend):
                line("skipped", 0, "", backend=backend, note="package not installed")
                continue
            measure(backend, root, loaded, commits, args)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
