"""Example workflows shipped with the engine (``aion-engine --workflows aion_engine.examples``).

They register in the default registry under ``example.*`` type names and are replayed
against a committed golden history in ``tests/replay/engine`` to catch non-determinism.
"""

from __future__ import annotations

from typing import Any

from aion import workflow

__all__ = ["order", "payment", "reminder"]


@workflow.defn("example.order")
async def order(ctx: workflow.WorkflowContext, spec: dict[str, Any]) -> dict[str, Any]:
    """Charge each line as a child payment, wait for approval (or time out), then ship."""
    handles = [
        await ctx.start_child("example.payment", {"line": index, "amount": amount})
        for index, amount in enumerate(spec["lines"])
    ]
    charged: list[Any] = []
    for handle in handles:
        try:
            charged.append(await handle.result())
        except workflow.ChildWorkflowFailed as failed:
            charged.append({"error": failed.message})
    try:
        approval = await ctx.wait_signal("approve", timeout=spec.get("approval_timeout", 3600))
    except workflow.SignalTimeout:
        approval = "auto"
    await ctx.sleep(spec.get("ship_delay", 60))
    reminders = await ctx.execute_child(
        "example.reminder",
        0,
        parent_close_policy=workflow.ParentClosePolicy.ABANDON,
    )
    return {
        "charged": charged,
        "approval": approval,
        "reminders": reminders,
        "tracking": str(ctx.uuid4()),
        "shipped_at": ctx.now().isoformat(),
    }


@workflow.defn("example.payment")
async def payment(ctx: workflow.WorkflowContext, charge: dict[str, Any]) -> dict[str, Any]:
    """Fail for negative amounts; otherwise return a receipt."""
    if charge["amount"] < 0:
        raise ValueError(f"cannot charge {charge['amount']}")
    return {"line": charge["line"], "receipt": str(ctx.uuid4())}


@workflow.defn("example.reminder")
async def reminder(ctx: workflow.WorkflowContext, sent: int) -> int:
    """Send a reminder a day, continuing-as-new after each, three in all."""
    if sent >= 3:  # noqa: PLR2004 - three reminders
        return sent
    await ctx.sleep(86_400)
    ctx.continue_as_new(sent + 1)
