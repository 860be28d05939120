"""Workflows the query end-to-end tests run (the engine and the worker load this module)."""

from __future__ import annotations

from typing import Any

from aion import activity, workflow
from aion.workflow import RetryPolicy

HOUR = 3600.0


@activity.defn
def unreachable(order_id: str) -> str:
    """Always fails (a provider that is down): the activity backs off for an hour."""
    raise ConnectionError(f"provider down for {order_id}")


@workflow.defn("q.cart")
async def cart(ctx: workflow.WorkflowContext, owner: str) -> dict[str, Any]:
    """Collects ``add`` signals until ``done``; answers ``state`` and refuses ``sneaky``."""
    items: list[str] = []

    @workflow.query("state")
    def state() -> dict[str, Any]:
        return {"owner": owner, "items": items}

    @workflow.query("sneaky")
    async def sneaky() -> int:
        await ctx.sleep(1)  # refused: a query may not decide
        return len(items)

    while True:
        item = await ctx.wait_signal("add", timeout=HOUR)
        if item == "done":
            return {"owner": owner, "items": items}
        items.append(item)


@workflow.defn("q.sleeper")
async def sleeper(ctx: workflow.WorkflowContext, _: Any) -> str:
    """Sleeps an hour."""
    await ctx.sleep(HOUR)
    return "awake"


@workflow.defn("q.hold")
async def hold(ctx: workflow.WorkflowContext, _: Any) -> Any:
    """Waits for ``release`` (no deadline)."""
    return await ctx.wait_signal("release")


@workflow.defn("q.parent")
async def parent(ctx: workflow.WorkflowContext, child_id: str) -> Any:
    """Waits on one child, through a helper (two frames of its own)."""
    return await _await_child(ctx, child_id)


async def _await_child(ctx: workflow.WorkflowContext, child_id: str) -> Any:
    return await ctx.execute_child("q.hold", None, id=child_id)


@workflow.defn("q.retrying")
async def retrying(ctx: workflow.WorkflowContext, order_id: str) -> str:
    """An activity whose first attempt fails; the next is an hour away."""
    result: str = await ctx.execute_activity(
        unreachable, order_id, start_to_close=30, retry=RetryPolicy(initial_interval=HOUR)
    )
    return result
