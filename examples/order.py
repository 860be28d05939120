"""Order fulfilment: charge the payment, retrying a declined attempt, then ship.

The parent starts a ``examples.order.payment`` child per attempt (ids ``<order>:payment-1``,
``<order>:payment-2``, …). A failed payment is retried after a durable back-off, with a new
child id, up to ``max_payment_attempts``; once paid, a ``examples.order.shipping`` child ships
the order. When every attempt fails the order fails with :class:`PaymentDeclined`.

Input: ``{"order_id": str, "amount": int, "fail_payment_attempts": int = 0,
"max_payment_attempts": int = 3, "retry_delay": float = 0.2}``. The payment child fails its
first ``fail_payment_attempts`` attempts, standing in for a flaky payment provider.
"""

from __future__ import annotations

from typing import Any

from aion import workflow

__all__ = ["PaymentDeclined", "order", "payment", "shipping"]

DEFAULT_MAX_PAYMENT_ATTEMPTS = 3
DEFAULT_RETRY_DELAY = 0.2


class PaymentDeclined(Exception):
    """Every payment attempt of an order failed."""


@workflow.defn("examples.order")
async def order(ctx: workflow.WorkflowContext, spec: dict[str, Any]) -> dict[str, Any]:
    """Pay (with retries), then ship; returns the receipt, tracking number and attempts."""
    order_id = ctx.info.workflow_id
    max_attempts = int(spec.get("max_payment_attempts", DEFAULT_MAX_PAYMENT_ATTEMPTS))
    failures: list[str] = []
    receipt: dict[str, Any] | None = None
    for attempt in range(1, max_attempts + 1):
        charge = {
            "order_id": spec["order_id"],
            "amount": spec["amount"],
            "attempt": attempt,
            "fail_attempts": spec.get("fail_payment_attempts", 0),
        }
        try:
            receipt = await ctx.execute_child(
                "examples.order.payment", charge, id=f"{order_id}:payment-{attempt}"
            )
            break
        except workflow.ChildWorkflowFailed as failed:
            failures.append(failed.message)
            if attempt < max_attempts:
                await ctx.sleep(spec.get("retry_delay", DEFAULT_RETRY_DELAY))
    if receipt is None:
        raise PaymentDeclined(
            f"order {spec['order_id']}: payment declined {max_attempts} times: {failures[-1]}"
        )
    shipment = await ctx.execute_child(
        "examples.order.shipping",
        {"order_id": spec["order_id"], "receipt": receipt["receipt"]},
        id=f"{order_id}:shipping",
    )
    return {
        "order_id": spec["order_id"],
        "status": "shipped",
        "receipt": receipt["receipt"],
        "tracking": shipment["tracking"],
        "payment_attempts": len(failures) + 1,
        "payment_failures": failures,
    }


@workflow.defn("examples.order.payment")
async def payment(ctx: workflow.WorkflowContext, charge: dict[str, Any]) -> dict[str, Any]:
    """Charge ``amount``; fails while ``attempt <= fail_attempts`` (a flaky provider)."""
    if charge["attempt"] <= charge["fail_attempts"]:
        raise ConnectionError(f"payment provider unavailable (attempt {charge['attempt']})")
    if charge["amount"] <= 0:
        raise ValueError(f"cannot charge {charge['amount']}")
    return {"receipt": f"rcpt-{ctx.uuid4().hex[:12]}", "amount": charge["amount"]}


@workflow.defn("examples.order.shipping")
async def shipping(ctx: workflow.WorkflowContext, shipment: dict[str, Any]) -> dict[str, Any]:
    """Book the parcel; returns a deterministic tracking number."""
    return {"order_id": shipment["order_id"], "tracking": f"TRK-{ctx.uuid4().hex[:10].upper()}"}
