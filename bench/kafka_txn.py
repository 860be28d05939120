"""The floor under every engine step: ``python -m bench.kafka_txn`` (run by ``python -m bench``).

One transactional aiokafka producer runs the engine's transaction shape in a loop, nothing else
on the machine's cores but the broker: begin, two records to two partitions (its events batch
and one outgoing command), wait for their acknowledgements, add the consumed offset
(AddOffsetsToTxn + TxnOffsetCommit), commit (EndTxn), then wait until a read_committed consumer
sees the records (the coordinator has written the markers). Each phase is timed; one JSON line
per phase and quantile. Whatever the engine does on top — decoding, deciding, encoding — adds to
``total``; a parent that starts a child and awaits it crosses three such transactions plus the
watcher's hop.

``--shapes`` times other ways to carry the consumed offset, alternated with the engine's in the
same run, each printed with its ratio to it (decision 68):

- ``group`` (the engine's): the records acknowledged, then the offset in the consumer group
  (``send_offsets_to_transaction``: AddOffsetsToTxn + TxnOffsetCommit);
- ``alongside``: the offset sent while the records are in flight (measured: no gain at p50 and
  a tail of ~110 ms);
- ``in-log``: no group offset at all, one more record on a third partition in its place: the
  floor of a design that keeps the consumed position in the engine's changelog.

Uses the engine's 2 ms CONCURRENT_TRANSACTIONS retry (``docs/decisions.md`` 17). Starts its own
broker unless ``AION_BENCH_KAFKA=host:port`` names one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid

import aiokafka.producer.sender as _aiokafka_sender
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from aion_common.testing import percentile
from bench._kafka import bench_kafka

_PHASES = ("records_acked", "offsets_added", "committed", "visible", "total")
SHAPES = ("group", "alongside", "in-log")
_ROUNDS = 3


async def _cycles(
    bootstrap: str, cycles: int, warm_up: int, shape: str = "group"
) -> dict[str, list[float]]:
    name = f"txnbench{uuid.uuid4().hex[:6]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        # min.insync.replicas 1 whatever the broker's default: one node here
        single = {"min.insync.replicas": "1"}
        await admin.create_topics(
            [
                NewTopic(name, 2, 1, topic_configs=single),
                NewTopic(f"{name}.in", 1, 1, topic_configs=single),
            ]
        )
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
            offsets = {TopicPartition(f"{name}.in", 0): cycle + 1}
            # ``acked`` once what ``sent`` holds is answered: alongside, the offset is in it
            if shape == "alongside":
                sent.append(producer.send_offsets_to_transaction(offsets, f"{name}.group"))
            elif shape == "in-log":  # the position as one more record of the transaction
                sent.append(await producer.send(f"{name}.in", str(cycle + 1).encode(), partition=0))
            await asyncio.gather(*sent)
            acked = time.perf_counter()
            if shape == "group":
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


async def _shapes(
    bootstrap: str, shapes: list[str], cycles: int, warm_up: int
) -> dict[str, dict[str, list[float]]]:
    """Each shape's cycles in ``_ROUNDS`` alternating turns (one shape alone: one turn)."""
    rounds = _ROUNDS if len(shapes) > 1 else 1
    timings: dict[str, dict[str, list[float]]] = {
        shape: {phase: [] for phase in _PHASES} for shape in shapes
    }
    for _ in range(rounds):
        for shape in shapes:
            turn = await _cycles(bootstrap, max(1, cycles // rounds), warm_up // rounds, shape)
            for phase, values in turn.items():
                timings[shape][phase].extend(values)
    return timings


def _line(metric: str, value: float, unit: str, samples: int, shape: str | None) -> None:
    line: dict[str, object] = {"bench": "kafka_txn", "metric": metric}
    if shape is not None:
        line["shape"] = shape
    line |= {"value": value, "unit": unit, "samples": samples}
    sys.stdout.write(json.dumps(line) + "\n")


def _report(by_shape: dict[str, dict[str, list[float]]]) -> None:
    several = len(by_shape) > 1
    for shape, timings in by_shape.items():
        for phase, values in timings.items():
            for label, q in (("p50", 0.5), ("p99", 0.99)):
                value = round(percentile(values, q), 2)
                _line(f"{phase}_{label}_ms", value, "ms", len(values), shape if several else None)
    base = by_shape.get("group")
    if base is None or not several:
        return
    for shape, timings in by_shape.items():
        if shape == "group":
            continue
        for label, q in (("p50", 0.5), ("p99", 0.99)):
            theirs, ours = percentile(timings["total"], q), percentile(base["total"], q)
            ratio = round(theirs / ours, 3) if ours else float("nan")
            sys.stderr.write(
                f"total {label}: {shape} {theirs:.2f} ms, group {ours:.2f} ms, ratio {ratio}\n"
            )
            _line(f"total_{label}_ratio_to_group", ratio, "ratio", len(timings["total"]), shape)


def _shape_list(text: str) -> list[str]:
    shapes = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in shapes if s not in SHAPES]
    if not shapes or unknown:
        raise argparse.ArgumentTypeError(
            f"unknown shape {', '.join(unknown) or '(none)'}: choose from {', '.join(SHAPES)}"
        )
    return shapes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.kafka_txn", description=__doc__)
    parser.add_argument("--cycles", type=int, default=3000)
    parser.add_argument("--warm-up", type=int, default=500)
    parser.add_argument(
        "--shapes",
        type=_shape_list,
        default=["group"],
        help=f"comma-separated, from {', '.join(SHAPES)} (default: group, the engine's)",
    )
    args = parser.parse_args(argv)
    _aiokafka_sender.BACKOFF_OVERRIDE = 0.002  # as the engine (decision 17)
    with bench_kafka() as kafka:
        _report(asyncio.run(_shapes(kafka.bootstrap, args.shapes, args.cycles, args.warm_up)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
