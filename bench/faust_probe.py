"""What faust-streaming could not do for the watcher, measured: ``python -m bench.faust_probe``.

The watcher's state is a fold over ``aion.events`` from offset 0, rebuilt on every assignment,
that emits only past the committed offset (``docs/decisions.md`` 11). This probe asks
faust-streaming (the pinned version) for the first half of that — read a partition below its
committed offset again — the two ways an application can:

1. life 1: an agent reads 500 records of a one-partition topic; faust commits 500;
2. life 2: 100 more records; the app seeks the partition to 0 in its
   ``on_partitions_assigned`` signal handler;
3. life 3: 100 more; the agent seeks to 0 itself when its first record arrives.

It prints, per life, how many records the agent saw and how many lay below the committed
offset (the history a rebuild needs). Measured on faust-streaming 0.15.3 with Apache Kafka
4.1.1: 0 in both lives 2 and 3 — faust seeks every assigned partition back to the committed
offset after the application's hooks ran, and again when a seek lands while its flow is
stopped. Starts its own broker unless ``AION_BENCH_KAFKA=host:port`` names one. Not part of
``make bench``: it measures faust, not aion.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import uuid
from typing import Any

import faust
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bench._kafka import bench_kafka

_FIRST = 500
_MORE = 100


class _Probe:
    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self.topic = f"faustprobe{uuid.uuid4().hex[:6]}"
        self.group = f"{self.topic}-app"
        self.produced = 0

    async def create_topic(self) -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(self.topic, 1, 1)])
        finally:
            await admin.close()

    async def produce(self, count: int) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap)
        await producer.start()
        try:
            for index in range(self.produced, self.produced + count):
                await producer.send(self.topic, str(index).encode(), partition=0)
            await producer.flush()
        finally:
            await producer.stop()
        self.produced += count

    async def committed(self) -> int:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, group_id=self.group, enable_auto_commit=False
        )
        await consumer.start()
        try:
            return int(await consumer.committed(TopicPartition(self.topic, 0)) or 0)
        finally:
            await consumer.stop()

    def app(self, rewind: str | None, seen: list[int], newest: asyncio.Event) -> faust.App:
        app = faust.App(
            self.group,
            broker=f"kafka://{self.bootstrap}",
            store="memory://",
            web_enabled=False,
            topic_partitions=1,
            broker_commit_every=10,
            broker_commit_interval=0.2,
            consumer_auto_offset_reset="earliest",
        )
        topic = app.topic(self.topic, value_serializer="raw")
        rewound = False

        async def fold(stream: Any) -> None:
            nonlocal rewound
            async for event in stream.events():
                seen.append(event.message.offset)
                if event.message.offset == self.produced - 1:
                    newest.set()
                if rewind == "agent" and not rewound:
                    rewound = True
                    await app.consumer.seek(event.message.tp, 0)

        app.agent(topic, name="fold")(fold)
        if rewind == "assigned":

            async def to_zero(sender: Any, assigned: Any, **_: Any) -> None:
                for tp in assigned:
                    if tp.topic == self.topic:
                        await app.consumer.seek(tp, 0)

            app.on_partitions_assigned.connect(to_zero)
        return app

    async def life(self, rewind: str | None, limit_s: float = 20.0) -> list[int]:
        seen: list[int] = []
        newest = asyncio.Event()  # the agent has the latest record produced
        app = self.app(rewind, seen, newest)
        await app.start()
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(newest.wait(), limit_s)
            await asyncio.sleep(1.0)  # its commits land
        finally:
            await app.stop()
        return seen


async def _run(bootstrap: str) -> None:
    probe = _Probe(bootstrap)
    await probe.create_topic()
    await probe.produce(_FIRST)
    lives = [("life 1: read everything", None), ("life 2: seek to 0 on assignment", "assigned")]
    lives.append(("life 3: seek to 0 from the agent", "agent"))
    for label, rewind in lives:
        committed = await probe.committed()
        seen = await probe.life(rewind)
        below = sum(1 for offset in seen if offset < committed)
        sys.stdout.write(
            f"{label}: committed offset before {committed}, records seen {len(seen)} "
            f"(lowest offset {min(seen, default=None)}), below the committed offset {below}\n"
        )
        await probe.produce(_MORE)


def main() -> int:
    logging.basicConfig(level=logging.ERROR)
    sys.stdout.write(f"faust-streaming {faust.__version__}\n")
    with bench_kafka() as kafka:
        asyncio.run(_run(kafka.bootstrap))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
