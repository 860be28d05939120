"""The floor under every engine step: ``python -m bench.kafka_txn`` (run by ``python -m bench``).

One transactional aiokafka producer runs the engine's transaction shape in a loop, nothing else
on the machine's cores but the broker: begin, two records to two partitions (its events batch
and one outgoing command), wait for their acknowledgements, add the consumed offset
(AddOffsetsToTxn + TxnOffsetCommit), commit (EndTxn), then wait until a read_committed consumer
sees the records (the coordinator has written the markers). Each phase is timed; one JSON line
per phase and quantile. Whatever the engine does on top — decoding, deciding, encoding — adds to
``total``; a parent that starts a child and awaits it crosses three such transactions plus the
watcher's hop.

Uses the engine's 2 ms CONCURRENT_TRANSACTIONS retry (``docs/decisions.md`` 17). Starts its own
broker unless ``AION_BENCH_KAFKA=host:port`` names one.
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
from pathlib import Path

import aiokafka.producer.sender as _aiokafka_sender
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from aion_common.testing import percentile

_PHASES = ("records_acked", "offsets_added", "committed", "visible", "total")


async def _cycles(bootstrap: str, cycles: int, warm_up: int) -> dict[str, list[float]]:
    name = f"txnbench{uuid.uuid4().hex[:6]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, 2, 1), NewTopic(f"{name}.in", 1, 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        transactional_id=name,
        enable_idempotence=True,
        linger_ms=0,
    )
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, isolation_level="read_committed", fetch_max_wait_ms=500
    )
    await producer.start()
    await consumer.start()
    timings: dict[str, list[float]] = {phase: [] for phase in _PHASES}
    try:
        watched = TopicPartition(name, 0)
        consumer.assign([watched])
        await consumer.seek_to_end(watched)
        await consumer.position(watched)
        value = b"x" * 200
        for cycle in range(warm_up + cycles):
            began = time.perf_counter()
            await producer.begin_transaction()
            sent = [
                await producer.send(name, value, partition=0),
                await producer.send(name, value, partition=1),
            ]
            await asyncio.gather(*sent)
            acked = time.perf_counter()
            offsets = {TopicPartition(f"{name}.in", 0): cycle + 1}
            await producer.send_offsets_to_transaction(offsets, f"{name}.group")
            added = time.perf_counter()
            await producer.commit_transaction()
            committed = time.perf_counter()
            while not (await consumer.getmany(watched, timeout_ms=1000)).get(watched):
                continue
            seen = time.perf_counter()
            if cycle < warm_up:
                continue
            spans = (
                acked - began,
                added - acked,
                committed - added,
                seen - committed,
                seen - began,
            )
            for phase, span in zip(_PHASES, spans, strict=True):
                timings[phase].append(span * 1000)
    finally:
        await consumer.stop()
        await producer.stop()
    return timings


def _report(timings: dict[str, list[float]]) -> None:
    for phase, values in timings.items():
        for label, q in (("p50", 0.5), ("p99", 0.99)):
            line = {
                "bench": "kafka_txn",
                "metric": f"{phase}_{label}_ms",
                "value": round(percentile(values, q), 2),
                "unit": "ms",
                "samples": len(values),
            }
            sys.stdout.write(json.dumps(line) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.kafka_txn", description=__doc__)
    parser.add_argument("--cycles", type=int, default=3000)
    parser.add_argument("--warm-up", type=int, default=500)
    args = parser.parse_args(argv)
    _aiokafka_sender.BACKOFF_OVERRIDE = 0.002  # as the engine (decision 17)
    external = os.environ.get("AION_BENCH_KAFKA")
    if external:
        _report(asyncio.run(_cycles(external, args.cycles, args.warm_up)))
        return 0
    from aion_common.testing.broker import KafkaBroker  # noqa: PLC0415 - only when needed

    with tempfile.TemporaryDirectory(prefix="aion-bench-kafka-") as data_dir:
        broker = KafkaBroker(Path(data_dir), die_with_parent=True)
        broker.start()
        try:
            _report(asyncio.run(_cycles(broker.bootstrap_servers, args.cycles, args.warm_up)))
        finally:
            broker.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
