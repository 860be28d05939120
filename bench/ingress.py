"""Ingress benchmark: ``python -m bench.ingress`` (also run by ``python -m bench``).

Runs the stack ``make dev`` runs (``aion_dev.Stack``) with an ``aion ingress`` mapping a
source topic to starts of :mod:`bench.ingress_workflows`, and measures, in one run on one
stack so the ratios compare like with like on a noisy machine:

- **ingress records/s to started workflows** (``ingress_starts_per_s``): ``--records`` (5,000)
  JSON records produced at once to the source topic; started workflows / time from the first
  record produced to the last ``WorkflowStarted`` seen by a read_committed consumer;
- **direct starts/s** (``direct_starts_per_s``): the same number of ``StartWorkflow`` commands
  produced straight to ``<prefix>.commands`` (``aion.KafkaCommands``), the path without the
  ingress; ``ratio_ingress_to_direct`` compares them;
- **record → first event** (``record_to_started_p50/p99_ms``): from each source record's
  timestamp to the timestamp of the events record holding its run's ``WorkflowStarted``, for
  the throughput phase and for ``--paced`` (300) records produced at ``--rate`` (100/s), where
  nothing queues;
- **publish records/s** (``published_records_per_s``): ``--publishers`` (500) workflows, each
  publishing ``--per-workflow`` (10) records with ``ctx.publish`` in one step, started at once;
  records visible to a read_committed consumer of the output topic / time from the first start
  to the last record seen; and the same number of workflows that publish nothing
  (``plain_workflows_per_s``): ``ratio_publishing_to_plain_workflows_per_s`` is what ten
  publishes cost a workflow.

Every figure and both sides of each ratio are printed; nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from aion import KafkaCommands
from aion_common.codecs import Codec
from aion_common.domain import WorkflowStarted
from aion_common.kafka.topics import Topics
from aion_common.settings import Settings
from aion_common.testing import percentile
from aion_dev import Stack, StackConfig

_ROOT = Path(__file__).resolve().parents[1]
_TYPE = "bench.ingress.noop"
_PUBLISHER = "bench.ingress.publisher"


def _line(metric: str, value: float, unit: str, **extra: Any) -> None:
    record = {"bench": "ingress", "metric": metric, "value": value, "unit": unit, **extra}
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


class StartWatcher:
    """Reads the events topic (read_committed) from its end: when each workflow started."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._topic = Topics(settings.topic_prefix).events
        self._codec = Codec()
        self.started: dict[str, tuple[float, float]] = {}
        """workflow id -> (events record timestamp, when this consumer received it), seconds."""
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.bootstrap_servers,
            isolation_level="read_committed",
            enable_auto_commit=False,
            fetch_max_wait_ms=500,
        )
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._consumer.start()
        partitions = [TopicPartition(self._topic, p) for p in range(self._settings.partitions)]
        self._consumer.assign(partitions)
        await self._consumer.seek_to_end(*partitions)
        for tp in partitions:
            await self._consumer.position(tp)
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._consumer.stop()

    async def until(self, ids: list[str], timeout: float) -> float:  # noqa: ASYNC109
        """Wait until every id started; the latest receive time."""
        deadline = time.monotonic() + timeout
        while any(i not in self.started for i in ids):
            if time.monotonic() > deadline:
                missing = sum(1 for i in ids if i not in self.started)
                raise RuntimeError(f"{missing} of {len(ids)} workflows did not start")
            await asyncio.sleep(0.01)
        return max(self.started[i][1] for i in ids)

    async def _run(self) -> None:
        while True:
            fetched = await self._consumer.getmany(timeout_ms=100, max_records=5000)
            received = time.time()
            for records in fetched.values():
                for record in records:
                    for event in self._codec.decode_batch(record.value, trusted=True).events:
                        if isinstance(event, WorkflowStarted):
                            self.started[event.workflow_id] = (record.timestamp / 1000, received)


async def _produce(
    settings: Settings, topic: str, run: str, count: int, rate: float | None
) -> dict[str, float]:
    """Produce ``count`` orders (paced at ``rate``/s if given); id -> record timestamp (s)."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, linger_ms=2)
    await producer.start()
    stamps: dict[str, float] = {}
    began = time.monotonic()
    try:
        futures = []
        for index in range(count):
            if rate is not None:
                await asyncio.sleep(max(0.0, began + index / rate - time.monotonic()))
            order = f"{run}-{index}"
            now_ms = int(time.time() * 1000)
            stamps[f"order-{order}"] = now_ms / 1000
            value = json.dumps({"id": order, "amount": index}).encode()
            futures.append(
                await producer.send(topic, value, key=order.encode(), timestamp_ms=now_ms)
            )
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return stamps


def _latencies(name: str, watcher: StartWatcher, stamps: dict[str, float], shape: str) -> None:
    delays = [(watcher.started[w][0] - t) * 1000 for w, t in stamps.items()]
    for p in (50, 99):
        _line(f"{name}_p{p}_ms", round(percentile(delays, p / 100), 1), "ms", shape=shape)


async def _ingress_phase(
    stack: Stack, watcher: StartWatcher, topic: str, count: int, *, report: bool
) -> float:
    run = uuid.uuid4().hex[:6]
    began = time.time()
    stamps = await _produce(stack.settings, topic, run, count, None)
    last = await watcher.until(list(stamps), 600)
    rate = count / (last - began)
    if report:
        shape = f"{count} records produced at once"
        _line("ingress_starts_per_s", round(rate, 1), "workflows/s", shape=shape,
              seconds=round(last - began, 3))  # fmt: skip
        _latencies("record_to_started", watcher, stamps, shape)
    return rate


async def _direct_phase(stack: Stack, watcher: StartWatcher, count: int, *, report: bool) -> float:
    run = uuid.uuid4().hex[:6]
    ids = [f"direct-{run}-{i}" for i in range(count)]
    began = time.time()
    async with KafkaCommands(stack.settings) as commands:
        gate = asyncio.Semaphore(256)

        async def start(index: int) -> None:
            async with gate:
                await commands.start(_TYPE, {"id": ids[index], "amount": index}, id=ids[index])

        await asyncio.gather(*(start(i) for i in range(count)))
    last = await watcher.until(ids, 600)
    rate = count / (last - began)
    if report:
        shape = f"{count} StartWorkflow commands sent at once"
        seconds = round(last - began, 3)
        _line("direct_starts_per_s", round(rate, 1), "workflows/s", shape=shape, seconds=seconds)
    return rate


async def _paced_phase(
    stack: Stack, watcher: StartWatcher, topic: str, count: int, rate: float
) -> None:
    run = uuid.uuid4().hex[:6]
    stamps = await _produce(stack.settings, topic, run, count, rate)
    await watcher.until(list(stamps), 120)
    _latencies("record_to_started", watcher, stamps, f"{count} records at {rate:g}/s")


async def _count_records(
    settings: Settings,
    topic: str,
    expected: int,
    timeout: float,  # noqa: ASYNC109 - a bounded wait of its own
) -> float:
    """Read ``topic`` (read_committed, every partition) until ``expected`` records; the time
    the last arrived."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=settings.bootstrap_servers,
        isolation_level="read_committed",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        metadata_max_age_ms=500,
        fetch_max_wait_ms=100,
    )
    await consumer.start()
    seen, last = 0, time.time()
    deadline = time.monotonic() + timeout
    try:
        while seen < expected:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{seen} of {expected} published records seen")
            for records in (await consumer.getmany(timeout_ms=200, max_records=10_000)).values():
                seen += len(records)
                last = time.time()
    finally:
        await consumer.stop()
    return last


async def _publish_phase(
    stack: Stack, watcher: StartWatcher, workflows: int, per_workflow: int, *, report: bool
) -> None:
    run = uuid.uuid4().hex[:6]
    topic = f"{stack.settings.topic_prefix}-published-{run}"
    publishers = [f"pub-{run}-{i}" for i in range(workflows)]
    plain = [f"plain-{run}-{i}" for i in range(workflows)]
    async with KafkaCommands(stack.settings) as commands:
        began = time.time()
        await asyncio.gather(
            *(commands.start(_PUBLISHER, {"topic": topic, "count": per_workflow}, id=w)
              for w in publishers)
        )  # fmt: skip
        last = await _count_records(stack.settings, topic, workflows * per_workflow, 600)
        published_rate = workflows * per_workflow / (last - began)
        publishing_wf_rate = workflows / (last - began)
        began = time.time()
        await asyncio.gather(*(commands.start(_TYPE, {"id": w}, id=w) for w in plain))
        plain_last = await watcher.until(plain, 600)
        plain_rate = workflows / (plain_last - began)
    if report:
        shape = f"{workflows} workflows x {per_workflow} publishes"
        _line("published_records_per_s", round(published_rate, 1), "records/s", shape=shape)
        _line("publishing_workflows_per_s", round(publishing_wf_rate, 1), "workflows/s",
              shape=shape)  # fmt: skip
        _line("plain_workflows_per_s", round(plain_rate, 1), "workflows/s",
              shape=f"{workflows} workflows that publish nothing")  # fmt: skip
        _line("ratio_publishing_to_plain_workflows_per_s",
              round(publishing_wf_rate / plain_rate, 3), "ratio",
              publishing=round(publishing_wf_rate, 1), plain=round(plain_rate, 1))  # fmt: skip


async def _main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="aion-bench-ingress-") as home:
        prefix = f"ingress-{uuid.uuid4().hex[:8]}"
        topic = f"{prefix}-orders"
        mapping = Path(home) / "ingress.json"
        mapping.write_text(
            json.dumps(
                {
                    "name": "bench",
                    "create_topics": True,
                    "routes": [
                        {
                            "topic": topic,
                            "action": "start",
                            "workflow_type": _TYPE,
                            "workflow_id": "order-{value.id}",
                        }
                    ],
                }
            )
        )
        config = StackConfig(
            home=Path(home),
            kafka_bootstrap=args.kafka,
            workflows=("bench.ingress_workflows",),
            topic_prefix=prefix,
            partitions=args.partitions,
            pythonpath=(str(_ROOT),),
            ingress=(mapping,),
            scheduler=False,
            env={"AION_PUBLISH_CREATE_TOPICS": "on"},
        )
        began = time.monotonic()
        async with Stack(config) as stack:
            _line("stack_ready_s", round(time.monotonic() - began, 2), "s")
            watcher = StartWatcher(stack.settings)
            await watcher.start()
            try:
                await _ingress_phase(stack, watcher, topic, 200, report=False)  # warm-up
                await _direct_phase(stack, watcher, 200, report=False)
                ingress = await _ingress_phase(stack, watcher, topic, args.records, report=True)
                direct = await _direct_phase(stack, watcher, args.records, report=True)
                _line("ratio_ingress_to_direct", round(ingress / direct, 3), "ratio",
                      ingress=round(ingress, 1), direct=round(direct, 1))  # fmt: skip
                await _paced_phase(stack, watcher, topic, args.paced, args.rate)
                await _publish_phase(stack, watcher, 20, 2, report=False)  # warm-up
                await _publish_phase(
                    stack, watcher, args.publishers, args.per_workflow, report=True
                )
            finally:
                await watcher.stop()


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; JSON lines on stdout."""
    parser = argparse.ArgumentParser(prog="python -m bench.ingress", description=__doc__)
    parser.add_argument("--kafka", default=os.environ.get("AION_BENCH_KAFKA") or None)
    parser.add_argument("--records", type=int, default=5000)
    parser.add_argument("--paced", type=int, default=300)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--publishers", type=int, default=500)
    parser.add_argument("--per-workflow", type=int, default=10)
    parser.add_argument("--partitions", type=int, default=6)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    asyncio.run(_main(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
