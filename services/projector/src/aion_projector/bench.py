"""Projection throughput and lag: ``python -m aion_projector.bench --database URL``.

1. Throughput: builds a realistic mix (starts, signals, children scheduled and recorded,
   continue-as-new, completions) in records of 1 to 3 events, applies it in transactions of
   ``--per-apply`` records as the consumer loop would: events/s.
2. Lag under a steady load (``--lag-seconds`` > 0): the same mix is produced to a fresh events
   topic at ``--lag-rate`` events/s while ``aion-projector`` (its own process, as deployed)
   consumes it; the stored offsets are sampled every 50 ms. Reports the events behind (max and
   mean over the samples) and the seconds from each record's send until its offset is stored
   with the views (p50, p95, max). The broker is ``AION_BENCH_KAFKA`` or one started here.
3. Catch-up (``--catch-up-events`` > 0): that many events of the mix are produced to a fresh
   events topic first, then ``aion-projector`` is started on them: events/s from its first
   stored transaction to the last, i.e. Kafka to SQL through the deployed process (decode,
   apply, offsets), without its start-up and group join.

``--database postgresql`` uses a scratch database on the PostgreSQL of ``make postgres`` (or
``AION_TEST_DATABASE_URL``), created for the run and dropped after. Any other URL has its
projector tables RESET: point it at a scratch database. Prints one JSON object per line.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import itertools
import json
import os
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from sqlalchemy import text
from sqlalchemy.pool import NullPool

from aion_common.codecs import Codec, encode_key
from aion_common.domain import (
    ChildWorkflowCompleted,
    ChildWorkflowScheduled,
    Event,
    EventBatch,
    ParentClosePolicy,
    Payload,
    SignalReceived,
    WorkflowCompleted,
    WorkflowContinuedAsNew,
    WorkflowStarted,
)
from aion_common.kafka import Topics, ensure_topics
from aion_common.settings import Settings
from aion_projector.database import connect, reset, session_factory
from aion_projector.projection import Delivery, Projection

_T0 = datetime(2026, 1, 1, tzinfo=UTC)
_INPUT = Payload.from_json({"order": 1234, "items": ["a", "b", "c"], "note": "x" * 80})


def _workflow(index: int, partitions: int) -> list[Delivery]:
    """One workflow's records: 10 events in 5 records, across two runs."""
    wid = f"bench-{index:07d}"
    at = _T0 + timedelta(milliseconds=index)
    r1, r2 = f"{wid}-r1", f"{wid}-r2"
    batches: list[tuple[Event, ...]] = [
        (
            WorkflowStarted(
                workflow_id=wid,
                recorded_at=at,
                run_id=r1,
                seq=1,
                command_id="c1",
                workflow_type="order",
                input=_INPUT,
                first_run_id=r1,
                package_version="1.0",
            ),
            ChildWorkflowScheduled(
                workflow_id=wid,
                recorded_at=at,
                run_id=r1,
                seq=2,
                command_id="c1",
                child_workflow_id=f"{wid}-child",
                child_workflow_type="pay",
                input=_INPUT,
                parent_close_policy=ParentClosePolicy.TERMINATE,
                start_command_id=f"{wid}-s",
            ),
        ),
        (
            SignalReceived(
                workflow_id=wid,
                recorded_at=at,
                run_id=r1,
                seq=3,
                command_id="c2",
                name="go",
                payload=_INPUT,
            ),
        ),
        (
            ChildWorkflowCompleted(
                workflow_id=wid,
                recorded_at=at,
                run_id=r1,
                seq=4,
                command_id="c3",
                child_workflow_id=f"{wid}-child",
                result=_INPUT,
            ),
            WorkflowContinuedAsNew(
                workflow_id=wid,
                recorded_at=at,
                run_id=r1,
                seq=5,
                command_id="c3",
                input=_INPUT,
                workflow_type=None,
                next_run_id=r2,
            ),
            WorkflowStarted(
                workflow_id=wid,
                recorded_at=at,
                run_id=r2,
                seq=6,
                command_id="c3",
                workflow_type="order",
                input=_INPUT,
                first_run_id=r1,
                previous_run_id=r1,
                package_version="1.0",
            ),
        ),
        (
            SignalReceived(
                workflow_id=wid,
                recorded_at=at,
                run_id=r2,
                seq=7,
                command_id="c4",
                name="a",
                payload=_INPUT,
            ),
            SignalReceived(
                workflow_id=wid,
                recorded_at=at,
                run_id=r2,
                seq=8,
                command_id="c4",
                name="b",
                payload=_INPUT,
            ),
        ),
        (
            SignalReceived(
                workflow_id=wid,
                recorded_at=at,
                run_id=r2,
                seq=9,
                command_id="c5",
                name="c",
                payload=_INPUT,
            ),
            WorkflowCompleted(
                workflow_id=wid, recorded_at=at, run_id=r2, seq=10, command_id="c5", result=_INPUT
            ),
        ),
    ]
    partition = index % partitions
    return [
        (
            partition,
            0,
            EventBatch(workflow_id=wid, command_id=b[0].command_id, writer="engine-1", events=b),
        )
        for b in batches
    ]


def _workload(events: int, partitions: int, concurrent: int) -> list[Delivery]:
    """Interleave ``concurrent`` workflows at a time, as a busy partition would hold them."""
    workflows = [_workflow(i, partitions) for i in range(max(1, events // 10))]
    out: list[Delivery] = []
    offsets = [0] * partitions
    for start in range(0, len(workflows), concurrent):
        group = workflows[start : start + concurrent]
        for step in range(5):
            for records in group:
                partition, _, batch = records[step]
                out.append((partition, offsets[partition], batch))
                offsets[partition] += 1
    return out


async def _run(url: str, events: int, per_apply: int) -> dict[str, object]:
    engine = connect(url)
    try:
        await reset(engine)
        deliveries = _workload(events, partitions=6, concurrent=200)
        total = sum(len(b.events) for _, _, b in deliveries)
        sessions = session_factory(engine)
        projection = Projection("aion.events")
        started = time.perf_counter()
        for start in range(0, len(deliveries), per_apply):
            async with sessions() as session:
                await projection.apply(session, deliveries[start : start + per_apply])
        elapsed = time.perf_counter() - started
        return {
            "bench": "projection",
            "metric": "events_per_s",
            "value": round(total / elapsed, 1),
            "unit": "events/s",
            "backend": engine.dialect.name,
            "events": total,
            "per_apply": per_apply,
            "seconds": round(elapsed, 3),
        }
    finally:
        await engine.dispose()


_SAMPLE_S = 0.05


Sent = dict[int, collections.deque[tuple[float, int, int]]]
"""Per partition, in offset order: (send time, offset, events) of records not yet stored."""


def _encoded(settings: Settings, events: int) -> list[tuple[bytes, bytes, int]]:
    """``events`` of the mix as records to send: (key, value, events in it)."""
    deliveries = _workload(events, partitions=settings.partitions, concurrent=200)
    codec = Codec()
    return [
        (encode_key(b.workflow_id), codec.encode_batch(b), len(b.events)) for _, _, b in deliveries
    ]


async def _started_producer(settings: Settings) -> AIOKafkaProducer:
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers, acks="all", linger_ms=5
    )
    await producer.start()
    return producer


async def _produce_steadily(settings: Settings, rate: float, seconds: float, sent: Sent) -> None:
    """Send the mix at ``rate`` events/s for ``seconds``, noting each record in ``sent``."""
    records = _encoded(settings, int(rate * seconds))
    producer = await _started_producer(settings)
    try:
        topic = Topics(settings.topic_prefix).events
        started = time.monotonic()
        events = index = 0
        while index < len(records):
            due = rate * (time.monotonic() - started)
            batch = []
            while index < len(records) and events < due:
                key, value, n = records[index]
                batch.append((time.monotonic(), n, await producer.send(topic, value, key=key)))
                events += n
                index += 1
            for at, n, future in batch:
                meta = await future
                sent[meta.partition].append((at, meta.offset, n))
            await asyncio.sleep(_SAMPLE_S / 2)
    finally:
        await producer.stop()


async def _stored(engine: Any, topic: str) -> dict[int, int]:
    try:
        async with engine.connect() as connection:
            rows = await connection.execute(
                text("SELECT partition, next_offset FROM projector_offsets WHERE topic = :t"),
                {"t": topic},
            )
            return {int(p): int(o) for p, o in rows}
    except Exception:  # noqa: BLE001  # not migrated yet: nothing stored
        return {}


async def _fresh(url: str, bootstrap: str) -> tuple[Settings, Any]:
    """Settings for a fresh topic prefix (topics created) and the views' engine, reset."""
    settings = Settings(
        bootstrap_servers=bootstrap, topic_prefix=f"bench{uuid.uuid4().hex[:8]}", partitions=6
    )
    await ensure_topics(settings, Topics(settings.topic_prefix))
    engine = connect(url, poolclass=NullPool)
    await reset(engine)
    return settings, engine


async def _spawn_projector(settings: Settings, url: str) -> asyncio.subprocess.Process:
    env = os.environ | {
        "AION_KAFKA_BOOTSTRAP": settings.bootstrap_servers,
        "AION_TOPIC_PREFIX": settings.topic_prefix,
        "AION_PARTITIONS": str(settings.partitions),
        "AION_DATABASE_URL": url,
        "AION_LOG_LEVEL": "WARNING",
    }
    return await asyncio.create_subprocess_exec(sys.executable, "-m", "aion_projector", env=env)


async def _stop(projector: asyncio.subprocess.Process) -> None:
    if projector.returncode is None:
        projector.send_signal(signal.SIGTERM)
    await asyncio.wait_for(projector.wait(), 30)


async def _produce_all(settings: Settings, events: int) -> dict[int, list[int]]:
    """Send ``events`` of the mix at once; per partition, each record's event count by offset."""
    records = _encoded(settings, events)
    producer = await _started_producer(settings)
    placed: dict[int, list[tuple[int, int]]] = collections.defaultdict(list)
    try:
        topic = Topics(settings.topic_prefix).events
        futures = [(n, await producer.send(topic, value, key=key)) for key, value, n in records]
        for count, future in futures:
            meta = await future
            placed[meta.partition].append((meta.offset, count))
    finally:
        await producer.stop()
    return {p: [count for _, count in sorted(records)] for p, records in placed.items()}


async def _catch_up(url: str, bootstrap: str, events: int) -> dict[str, object]:
    settings, engine = await _fresh(url, bootstrap)
    topic = Topics(settings.topic_prefix).events
    counts = await _produce_all(settings, events)
    # events below each offset: a fresh topic of a non-transactional producer has no gaps
    below = {p: list(itertools.accumulate(c, initial=0)) for p, c in counts.items()}
    total = sum(sums[-1] for sums in below.values())

    def stored_events(stored: dict[int, int]) -> int:
        return sum(sums[min(stored.get(p, 0), len(sums) - 1)] for p, sums in below.items())

    projector = await _spawn_projector(settings, url)
    first: tuple[float, int] | None = None
    try:
        deadline = time.monotonic() + 300
        while True:
            await asyncio.sleep(_SAMPLE_S)
            done, now = stored_events(await _stored(engine, topic)), time.monotonic()
            if first is None and done > 0:
                first = (now, done)
            if done >= total:
                break
            if time.monotonic() > deadline or projector.returncode is not None:
                raise RuntimeError("the projector did not catch up (or exited)")
    finally:
        await _stop(projector)
        await engine.dispose()
    assert first is not None
    seconds = now - first[0]
    return {
        "bench": "projection",
        "metric": "kafka_to_sql_events_per_s",
        "value": round((total - first[1]) / seconds, 1) if seconds > 0 else float(total),
        "unit": "events/s",
        "backend": engine.dialect.name,
        "events": total,
        "seconds": round(seconds, 3),
        "note": "aion-projector catching up on a backlog, first stored transaction to last",
    }


async def _lag(url: str, bootstrap: str, rate: float, seconds: float) -> list[dict[str, object]]:
    settings, engine = await _fresh(url, bootstrap)
    topic = Topics(settings.topic_prefix).events
    projector = await _spawn_projector(settings, url)
    sent: Sent = collections.defaultdict(collections.deque)
    behind: list[int] = []
    waits: list[float] = []
    try:
        await asyncio.sleep(3)  # let it join the group: the load starts on a ready projector
        producing = asyncio.create_task(_produce_steadily(settings, rate, seconds, sent))
        deadline = time.monotonic() + seconds + 120
        while not (producing.done() and not any(sent.values())):
            if time.monotonic() > deadline or projector.returncode is not None:
                raise RuntimeError("the projector did not keep up (or exited)")
            await asyncio.sleep(_SAMPLE_S)
            stored, now = await _stored(engine, topic), time.monotonic()
            for partition, records in sent.items():
                while records and records[0][1] < stored.get(partition, 0):
                    waits.append(now - records.popleft()[0])
            if not producing.done():
                behind.append(sum(n for records in sent.values() for _, _, n in records))
        await producing
    finally:
        await _stop(projector)
        await engine.dispose()
    waits.sort()
    common = {"bench": "projection", "backend": engine.dialect.name, "rate": rate}
    return [
        {**common, "metric": "lag_events_max", "value": max(behind, default=0), "unit": "events"},
        {
            **common,
            "metric": "lag_events_mean",
            "value": round(statistics.fmean(behind), 1) if behind else 0,
            "unit": "events",
        },
        *(
            {**common, "metric": f"lag_seconds_{name}", "value": round(value, 3), "unit": "s"}
            for name, value in (
                ("p50", waits[len(waits) // 2]),
                ("p95", waits[int(len(waits) * 0.95)]),
                ("max", waits[-1]),
            )
        ),
    ]


@contextlib.contextmanager
def _scratch_postgres() -> Iterator[str]:
    from aion_common.testing import postgres  # noqa: PLC0415  # only for this option

    server = os.environ.get(postgres.ENV_URL) or postgres.read_provisioned_url()
    if server is None:
        raise SystemExit("no PostgreSQL: run `make postgres` or set AION_TEST_DATABASE_URL")
    name = f"aion_bench_{uuid.uuid4().hex[:8]}"
    url = postgres.create_database(server, name)
    try:
        yield url
    finally:
        postgres.drop_database(server, name)


@contextlib.contextmanager
def _broker() -> Iterator[str]:
    external = os.environ.get("AION_BENCH_KAFKA")
    if external:
        yield external
        return
    from aion_common.testing.broker import KafkaBroker  # noqa: PLC0415  # only when needed

    with tempfile.TemporaryDirectory(prefix="aion-bench-kafka-") as data_dir:
        broker = KafkaBroker(Path(data_dir), die_with_parent=True, heap="512m")
        broker.start()
        try:
            yield broker.bootstrap_servers
        finally:
            broker.stop()


def _print(line: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run the benchmarks, print their JSON lines."""
    parser = argparse.ArgumentParser(prog="python -m aion_projector.bench")
    parser.add_argument(
        "--database",
        required=True,
        help="SQLAlchemy async URL (tables reset!), or 'postgresql' for a scratch database",
    )
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--per-apply", type=int, default=500, help="records per transaction")
    parser.add_argument("--lag-seconds", type=float, default=0.0, help="0: no lag run")
    parser.add_argument("--lag-rate", type=float, default=2000.0, help="events/s produced")
    parser.add_argument(
        "--catch-up-events", type=int, default=0, help="backlog for the catch-up run (0: none)"
    )
    args = parser.parse_args(argv)
    with contextlib.ExitStack() as scope:
        url = scope.enter_context(_scratch_postgres()) if args.database == "postgresql" else None
        url = url or args.database
        _print(asyncio.run(_run(url, args.events, args.per_apply)))
        if args.lag_seconds > 0 or args.catch_up_events > 0:
            bootstrap = scope.enter_context(_broker())
        if args.lag_seconds > 0:
            for line in asyncio.run(_lag(url, bootstrap, args.lag_rate, args.lag_seconds)):
                _print(line)
        if args.catch_up_events > 0:
            _print(asyncio.run(_catch_up(url, bootstrap, args.catch_up_events)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
