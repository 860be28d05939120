"""Can faust-streaming carry the ingress contract? ``python -m bench.faust_ingress_probe``.

The ingress must emit each source record's command and commit that record's offset in *one*
Kafka transaction, so a reader of the output (read_committed) sees every record's output
exactly once whatever is killed when. faust-streaming (the pinned version) offers
``processing_guarantee="exactly_once"``; this probe gives it that job in its best case and
counts:

1. 2,000 records on a 3-partition source topic; a faust agent (exactly_once) sends one record
   per source record to a 3-partition output topic, keyed like the source (the same partition
   counts, so every destination partition has a transaction of its own);
2. the worker is SIGKILLed twice while it works, then runs until its group's committed
   offsets reach the end of the source;
3. the output is read with read_committed: records missing, records doubled.

Then the shape aion's ingress really has: the same agent sending to a 6-partition topic
(``aion.commands`` has ``AION_PARTITIONS`` partitions, whatever the user's topic has).

Starts its own broker unless ``AION_BENCH_KAFKA=host:port`` names one. Not part of
``make bench``: it measures faust, not aion. Results go to ``docs/decisions.md``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench._kafka import bench_kafka

_RECORDS = 2000
_KILL_AFTER_S = (6.0, 5.0)
_FINAL_LIMIT_S = 90.0


def _worker(bootstrap: str, app_id: str, source: str, out: str, partitions: int) -> None:
    """The faust app (run in a child process): one output record per source record."""
    import faust  # noqa: PLC0415 - only the child needs it

    app = faust.App(
        app_id,
        broker=f"kafka://{bootstrap}",
        store="memory://",
        web_enabled=False,
        processing_guarantee="exactly_once",
        topic_partitions=partitions,
        broker_commit_every=50,
        broker_commit_interval=0.5,
        broker_session_timeout=6,
        broker_rebalance_timeout=10,
        consumer_auto_offset_reset="earliest",
    )
    source_topic = app.topic(source, key_serializer="raw", value_serializer="raw")
    out_topic = app.topic(out, key_serializer="raw", value_serializer="raw")

    async def relay(stream: Any) -> None:
        async for event in stream.events():
            await asyncio.sleep(0.002)  # work takes a moment, as mapping and encoding do
            await out_topic.send(key=event.key, value=event.value)

    app.agent(source_topic, name="relay")(relay)
    app.main()


class _Probe:
    def __init__(self, bootstrap: str, out_partitions: int) -> None:
        tag = uuid.uuid4().hex[:6]
        self.bootstrap = bootstrap
        self.source = f"src{tag}"
        self.out = f"out{tag}"
        self.app_id = f"probe{tag}"
        self.out_partitions = out_partitions

    async def create_topics(self) -> None:
        from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # noqa: PLC0415

        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await admin.start()
        try:
            await admin.create_topics(
                [NewTopic(self.source, 3, 1), NewTopic(self.out, self.out_partitions, 1)]
            )
        finally:
            await admin.close()

    async def produce(self) -> None:
        from aiokafka import AIOKafkaProducer  # noqa: PLC0415

        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap)
        await producer.start()
        try:
            for index in range(_RECORDS):
                await producer.send(self.source, str(index).encode(), key=f"k{index}".encode())
            await producer.flush()
        finally:
            await producer.stop()

    async def lag(self) -> int:
        from aiokafka import AIOKafkaConsumer, TopicPartition  # noqa: PLC0415

        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, group_id=self.app_id, enable_auto_commit=False
        )
        await consumer.start()
        try:
            tps = [TopicPartition(self.source, p) for p in range(3)]
            ends = await consumer.end_offsets(tps)
            committed = [await consumer.committed(tp) or 0 for tp in tps]
            return sum(ends[tp] - c for tp, c in zip(tps, committed, strict=True))
        finally:
            await consumer.stop()

    async def outputs(self) -> collections.Counter[str]:
        from aiokafka import AIOKafkaConsumer  # noqa: PLC0415

        consumer = AIOKafkaConsumer(
            self.out,
            bootstrap_servers=self.bootstrap,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            enable_auto_commit=False,
        )
        await consumer.start()
        seen: collections.Counter[str] = collections.Counter()
        try:
            quiet = 0
            while quiet < 5:
                batches = await consumer.getmany(timeout_ms=400)
                quiet = 0 if batches else quiet + 1
                for records in batches.values():
                    seen.update(r.value.decode() for r in records)
        finally:
            await consumer.stop()
        return seen

    def spawn(self, log: Path) -> subprocess.Popen[bytes]:
        argv = [
            sys.executable,
            "-m",
            "bench.faust_ingress_probe",
            "worker",
            self.bootstrap,
            self.app_id,
            self.source,
            self.out,
            str(self.out_partitions),
        ]
        with log.open("ab") as sink:
            return subprocess.Popen(
                [*argv, "worker", "-l", "warn"],
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )


async def _case(bootstrap: str, out_partitions: int, logs: Path) -> str:
    probe = _Probe(bootstrap, out_partitions)
    await probe.create_topics()
    await probe.produce()
    log = logs / f"faust-{out_partitions}.log"
    kills = 0
    for delay in _KILL_AFTER_S:
        worker = probe.spawn(log)
        await asyncio.sleep(delay)
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
            kills += 1
        worker.wait()
    worker = probe.spawn(log)
    deadline = time.monotonic() + _FINAL_LIMIT_S
    lag = await probe.lag()
    while lag and time.monotonic() < deadline and worker.poll() is None:
        await asyncio.sleep(1.0)
        lag = await probe.lag()
    crashed = worker.poll() is not None
    with contextlib.suppress(ProcessLookupError):
        os.killpg(worker.pid, signal.SIGTERM)
    worker.wait()
    seen = await probe.outputs()
    missing = sum(1 for i in range(_RECORDS) if str(i) not in seen)
    doubled = sum(1 for count in seen.values() if count > 1)
    errors = [
        line.strip()
        for line in log.read_text(errors="replace").splitlines()
        if "ProducerSendError" in line or "No transaction producer" in line
    ]
    return (
        f"source 3 partitions -> output {out_partitions} partitions: {_RECORDS} records, "
        f"{kills} SIGKILLs, final worker {'crashed' if crashed else 'ran'} with source lag {lag}; "
        f"outputs (read_committed) {sum(seen.values())}, missing {missing}, doubled {doubled}; "
        f"'No transaction producer' errors logged {len(errors)}"
    )


async def _run(bootstrap: str) -> None:
    with tempfile.TemporaryDirectory(prefix="aion-faust-ingress-") as logs:
        for out_partitions in (3, 6):
            sys.stdout.write(await _case(bootstrap, out_partitions, Path(logs)) + "\n")
            sys.stdout.flush()


def main() -> int:
    """Run the probe (or, as ``worker ...``, the faust app it kills)."""
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        bootstrap, app_id, source, out, partitions = sys.argv[2:7]
        sys.argv = [sys.argv[0], *sys.argv[7:]]
        _worker(bootstrap, app_id, source, out, int(partitions))
        return 0
    logging.basicConfig(level=logging.ERROR)
    import faust  # noqa: PLC0415

    sys.stdout.write(f"faust-streaming {faust.__version__}\n")
    with bench_kafka() as kafka:
        asyncio.run(_run(kafka.bootstrap))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
