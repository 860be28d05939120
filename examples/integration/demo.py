"""``python -m examples.integration.demo``: 1,000 orders in, 1,000 ``order-shipped`` out.

With a stack running the example's ingress (``aion dev --ingress
examples/integration/ingress.yaml``), this produces ``--orders`` JSON records to the ``orders``
topic, as any of your services would, then reads ``order-shipped`` (read_committed) until
every order of this run was announced or ``--timeout`` passes. It exits 0 only when each
order was announced exactly once. Order ids carry a run tag, so runs do not meet.
``--kafka`` (default ``$AION_KAFKA_BOOTSTRAP``; ``aion dev`` prints its broker) names the
broker.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import sys
import time
import uuid
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from examples.integration import SHIPPED_TOPIC

__all__ = ["DemoResult", "run"]


@dataclass(frozen=True)
class DemoResult:
    """What one demo run saw."""

    orders: int
    announced: int
    doubled: int
    seconds: float

    @property
    def ok(self) -> bool:
        """Every order announced, none twice."""
        return self.announced == self.orders and self.doubled == 0


async def run(
    bootstrap: str,
    *,
    orders: int = 1000,
    orders_topic: str = "orders",
    shipped_topic: str = SHIPPED_TOPIC,
    timeout: float = 300.0,  # noqa: ASYNC109 - the demo's own deadline
) -> DemoResult:
    """Produce ``orders`` orders and count their announcements."""
    tag = uuid.uuid4().hex[:8]
    consumer = AIOKafkaConsumer(
        shipped_topic,
        bootstrap_servers=bootstrap,
        isolation_level="read_committed",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        metadata_max_age_ms=1000,  # the topic may be created by the first publish
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True)
    began = time.monotonic()
    await producer.start()
    try:
        for n in range(orders):
            order_id = f"{tag}-{n}"
            order: dict[str, object] = {"order_id": order_id, "amount": 100 + n}
            if shipped_topic != SHIPPED_TOPIC:
                order["shipped_topic"] = shipped_topic
            value = json.dumps(order).encode()
            await producer.send(orders_topic, value, key=order_id.encode())
        await producer.flush()
    finally:
        await producer.stop()
    seen: collections.Counter[str] = collections.Counter()
    await consumer.start()
    try:
        while len(seen) < orders and time.monotonic() - began < timeout:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for record in records:
                    order_id = json.loads(record.value)["order_id"]
                    if order_id.startswith(f"{tag}-"):
                        seen[order_id] += 1
        await asyncio.sleep(1.0)  # a late duplicate would show up now
        for records in (await consumer.getmany(timeout_ms=500)).values():
            for record in records:
                order_id = json.loads(record.value)["order_id"]
                if order_id.startswith(f"{tag}-"):
                    seen[order_id] += 1
    finally:
        await consumer.stop()
    doubled = sum(1 for count in seen.values() if count > 1)
    return DemoResult(orders, len(seen), doubled, round(time.monotonic() - began, 1))


def main(argv: list[str] | None = None) -> int:
    """Run the demo; exit 0 iff each order was announced exactly once."""
    parser = argparse.ArgumentParser(
        prog="python -m examples.integration.demo", description=__doc__
    )
    parser.add_argument("--kafka", default=os.environ.get("AION_KAFKA_BOOTSTRAP", "127.0.0.1:9092"))
    parser.add_argument("--orders", type=int, default=1000)
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args(argv)
    result = asyncio.run(run(args.kafka, orders=args.orders, timeout=args.timeout))
    verdict = "ok" if result.ok else "FAILED"
    sys.stdout.write(
        f"{verdict}: {result.orders} orders produced, {result.announced} announced on "
        f"{SHIPPED_TOPIC}, {result.doubled} twice, in {result.seconds} s\n"
    )
    return 0 if result.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
