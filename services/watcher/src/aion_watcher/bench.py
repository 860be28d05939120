"""Watcher benchmark: ``python -m aion_watcher.bench`` prints one JSON object per line.

Starts its own Apache Kafka broker unless ``AION_BENCH_KAFKA=host:port`` names one, and plays
the engine: it appends event batches to ``aion.events`` and reads ``aion.commands``.

- *latency*: children complete at a steady ``--rate`` per second; for each, the time from the
  terminal's batch being acknowledged on ``aion.events`` to its ``RecordChildTerminal`` being
  readable on ``aion.commands`` (p50, p99). The engine's apply time is not included.
- *throughput*: ``--terminals`` children (start + terminal batches, 10 per parent) are on the
  topic before the watcher starts; terminals/s is measured from its first record issued to its
  last.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition

from aion_common.codecs import Codec
from aion_common.domain import (
    EventBatch,
    ParentLink,
    Payload,
    WorkflowCompleted,
    WorkflowStarted,
)
from aion_common.kafka import KeyedProducer, Topics, ensure_topics
from aion_common.settings import Settings
from aion_watcher.config import WatcherConfig
from aion_watcher.service import WatcherService

_INPUT = Payload.from_json({"n": 1})
_CHILDREN_PER_PARENT = 10


def _emit(metric: str, value: float, unit: str, **extra: object) -> None:
    line = {"bench": "watcher", "metric": metric, "value": round(value, 3), "unit": unit, **extra}
    sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()


def _start(workflow_id: str, parent: ParentLink | None) -> EventBatch:
    run = f"{workflow_id}-r1"
    started = WorkflowStarted(
        workflow_id=workflow_id,
        run_id=run,
        seq=1,
        recorded_at=datetime.now(UTC),
        command_id=str(uuid.uuid4()),
        workflow_type="bench",
        input=_INPUT,
        first_run_id=run,
        parent=parent,
    )
    return EventBatch(workflow_id=workflow_id, command_id="c", writer="bench", events=(started,))


def _complete(workflow_id: str) -> EventBatch:
    done = WorkflowCompleted(
        workflow_id=workflow_id,
        run_id=f"{workflow_id}-r1",
        seq=2,
        recorded_at=datetime.now(UTC),
        command_id=str(uuid.uuid4()),
        result=_INPUT,
    )
    return EventBatch(workflow_id=workflow_id, command_id="c", writer="bench", events=(done,))


class _Bench:
    def __init__(self, bootstrap: str, partitions: int) -> None:
        prefix = f"bench{uuid.uuid4().hex[:6]}"
        self.settings = Settings(
            bootstrap_servers=bootstrap, topic_prefix=prefix, partitions=partitions
        )
        self.topics = Topics(prefix)
        self.codec = Codec()
        self.producer = KeyedProducer(self.settings)

    async def publish(self, batches: list[EventBatch]) -> None:
        sends = [
            self.producer.send(self.topics.events, b.workflow_id, self.codec.encode_batch(b))
            for b in batches
        ]
        for chunk in range(0, len(sends), 2000):
            await asyncio.gather(*sends[chunk : chunk + 2000])

    def family(self, parents: int) -> tuple[list[EventBatch], list[str]]:
        starts: list[EventBatch] = []
        children: list[str] = []
        for p in range(parents):
            parent_id = f"p-{p}-{uuid.uuid4().hex[:6]}"
            starts.append(_start(parent_id, None))
            link = ParentLink(workflow_id=parent_id, run_id=f"{parent_id}-r1")
            for c in range(_CHILDREN_PER_PARENT):
                child_id = f"{parent_id}-c{c}"
                starts.append(_start(child_id, link))
                children.append(child_id)
        return starts, children

    async def watcher(self) -> tuple[WatcherService, asyncio.Task[None]]:
        service = WatcherService(self.settings, WatcherConfig(grace_period=60, sweep_interval=5))
        await service.start()
        task = asyncio.create_task(service.run())
        while len(service.state.owned) < self.settings.partitions:  # noqa: ASYNC110 - no event to wait on
            await asyncio.sleep(0.01)
        return service, task


async def _latency(bootstrap: str, partitions: int, rate: float, seconds: float) -> None:
    bench = _Bench(bootstrap, partitions)
    await ensure_topics(bench.settings, bench.topics)
    await bench.producer.start()
    starts, children = bench.family(max(1, int(rate * seconds) // _CHILDREN_PER_PARENT))
    await bench.publish(starts)
    reader = AIOKafkaConsumer(bootstrap_servers=bootstrap, fetch_max_wait_ms=100)
    await reader.start()
    parts = [TopicPartition(bench.topics.commands, p) for p in range(partitions)]
    reader.assign(parts)
    await reader.seek_to_end(*parts)
    service, task = await bench.watcher()
    acked: dict[str, float] = {}
    seen: dict[str, float] = {}

    async def read() -> None:
        while len(seen) < len(children):
            for records in (await reader.getmany(timeout_ms=50)).values():
                now = time.perf_counter()
                for record in records:
                    command = bench.codec.decode_command(record.value)
                    seen[getattr(command, "child_workflow_id", "")] = now

    async def complete(child: str) -> None:
        await bench.publish([_complete(child)])
        acked[child] = time.perf_counter()

    reading = asyncio.create_task(read())
    pending: list[asyncio.Task[None]] = []
    begin = time.perf_counter()
    for index, child in enumerate(children):
        await asyncio.sleep(max(0.0, begin + index / rate - time.perf_counter()))
        pending.append(asyncio.create_task(complete(child)))
    await asyncio.gather(*pending)
    await asyncio.wait_for(reading, 60)
    # The first second warms the clients up (metadata, connections); it is reported apart.
    warm = int(rate)
    for name, sample in (("", children[warm:]), ("warmup_", children[:warm])):
        latencies = sorted((seen[c] - acked[c]) * 1000 for c in sample)
        for q in (50, 99):
            value = latencies[min(len(latencies) - 1, int(len(latencies) * q / 100))]
            _emit(f"{name}terminal_to_command_p{q}", value, "ms", rate=rate, samples=len(sample))
    await service.stop()
    await task
    await reader.stop()
    await bench.producer.stop()


async def _throughput(bootstrap: str, partitions: int, terminals: int) -> None:
    bench = _Bench(bootstrap, partitions)
    await ensure_topics(bench.settings, bench.topics)
    await bench.producer.start()
    starts, children = bench.family(max(1, terminals // _CHILDREN_PER_PARENT))
    await bench.publish(starts)
    await bench.publish([_complete(c) for c in children])
    service, task = await bench.watcher()
    issued = "aion_watcher_records_issued_total"
    while service.metrics.value(issued) == 0:  # noqa: ASYNC110 - sampling a counter
        await asyncio.sleep(0.001)
    first = time.perf_counter()
    while service.metrics.value(issued) < len(children):  # noqa: ASYNC110 - sampling a counter
        await asyncio.sleep(0.005)
    elapsed = time.perf_counter() - first
    _emit("terminals_per_second", len(children) / elapsed, "1/s", terminals=len(children))
    await service.stop()
    await task
    await bench.producer.stop()


async def run(bootstrap: str, args: argparse.Namespace) -> None:
    """Both measurements against ``bootstrap``."""
    await _latency(bootstrap, args.partitions, args.rate, args.seconds)
    await _throughput(bootstrap, args.partitions, args.terminals)


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, find or start a broker, run."""
    parser = argparse.ArgumentParser(prog="python -m aion_watcher.bench", description=__doc__)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--rate", type=float, default=100.0, help="children completed per s")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--terminals", type=int, default=20_000)
    args = parser.parse_args(argv)
    external = os.environ.get("AION_BENCH_KAFKA")
    if external:
        asyncio.run(run(external, args))
        return 0
    from aion_common.testing.broker import KafkaBroker  # noqa: PLC0415 - only when needed

    with tempfile.TemporaryDirectory(prefix="aion-bench-kafka-") as data_dir:
        broker = KafkaBroker(Path(data_dir), die_with_parent=True, heap="1g")
        broker.start()
        try:
            asyncio.run(run(broker.bootstrap_servers, args))
        finally:
            broker.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
