"""The example integration end to end: 1,000 orders on a topic become 1,000 workflows (by the
ingress), each charging and shipping through activities and publishing one ``order-shipped``
record — exactly 1,000 records, each once, read_committed."""

from __future__ import annotations

import pytest
from examples.integration.demo import run

from aion.testing import AionStack

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


async def test_a_thousand_orders_are_shipped_and_announced_once(aion_stack: AionStack) -> None:
    prefix = aion_stack.settings.topic_prefix
    result = await run(
        aion_stack.settings.bootstrap_servers,
        orders=1000,
        orders_topic=f"{prefix}-orders",
        shipped_topic=f"{prefix}-shipped",
        timeout=240,
    )
    print(f"\nexample integration: {result}")
    assert result.announced == 1000
    assert result.doubled == 0
