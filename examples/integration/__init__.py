"""The example integration: ``orders`` topic → a workflow per order → ``order-shipped``.

``aion ingress --config examples/integration/ingress.yaml`` turns each record of the
``orders`` topic (JSON ``{"order_id": str, "amount": int}``) into a start of :func:`order`
with id ``order-<order_id>``, exactly once; the workflow charges and ships through the example
shop's activities (:mod:`examples.order`), then publishes an ``order-shipped`` record keyed by
the order id with ``ctx.publish`` — in the engine's transaction, so each order's record
appears exactly once for read_committed readers. ``python -m examples.integration.demo``
produces 1,000 orders and checks that 1,000 ``order-shipped`` records arrive, each once.
"""

from __future__ import annotations

from typing import Any

from aion import workflow
from aion.workflow import RetryPolicy
from examples.order import charge, ship

__all__ = ["SHIPPED_TOPIC", "order"]

_STEP_TIMEOUT_S = 10.0
SHIPPED_TOPIC = "order-shipped"
"""Where each shipped order is announced (an order's ``shipped_topic`` overrides it)."""


@workflow.defn("examples.integration.order")
async def order(ctx: workflow.WorkflowContext, spec: dict[str, Any]) -> dict[str, Any]:
    """Charge and ship one order from the topic; returns what was shipped."""
    order_id = str(spec["order_id"])
    retry = RetryPolicy(initial_interval=0.2, maximum_attempts=5)
    paid = await ctx.execute_activity(
        charge, order_id, int(spec["amount"]), start_to_close=_STEP_TIMEOUT_S, retry=retry
    )
    shipment = await ctx.execute_activity(
        ship, order_id, paid["receipt"], start_to_close=_STEP_TIMEOUT_S, retry=retry
    )
    shipped = {"order_id": order_id, "receipt": paid["receipt"], "tracking": shipment["tracking"]}
    await ctx.publish(spec.get("shipped_topic", SHIPPED_TOPIC), shipped, key=order_id)
    return shipped
