"""The example integration end to end: 1,000 orders on a topic become 1,000 workflows (by the
ingress), each charging and shipping through activities and publishing one ``order-shipped``
record — exactly 1,000 records, each once, read_committed."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from examples.integration.demo import run

from aion.testing import AionStack

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


async def _until_topic(bootstrap: str, topic: str) -> None:
    """The ingress creates its source topic when it starts (``create_topics: true``), which
    the stack's readiness does not wait for; the broker creates no topic on a produce."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        for _ in range(300):
            if topic in await admin.list_topics():
                return
            await asyncio.sleep(0.2)
        raise AssertionError(f"the ingress did not create {topic}")
    finally:
        await admin.close()


async def test_a_thousand_orders_are_shipped_and_announced_once(aion_stack: AionStack) -> None:
    prefix = aion_stack.settings.topic_prefix
    bootstrap = aion_stack.settings.bootstrap_servers
    await _until_topic(bootstrap, f"{prefix}-orders")
    result = await run(
        bootstrap,
        orders=1000,
        orders_topic=f"{prefix}-orders",
        shipped_topic=f"{prefix}-shipped",
        timeout=240,
    )
    print(f"\nexample integration: {result}")
    assert result.announced == 1000
    assert result.doubled == 0
