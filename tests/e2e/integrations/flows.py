"""Workflows the integration tests start through the ingress and the scheduler."""

from __future__ import annotations

from typing import Any

from aion import workflow


@workflow.defn("e2e.ingested")
async def ingested(ctx: workflow.WorkflowContext, order: dict[str, Any]) -> dict[str, Any]:
    """Started by the ingress, one per order record; publishes one record to ``order["out"]``
    *before* a durable sleep, so a run replayed after an engine restart (its timer fires into
    a fresh engine) would publish it again if replays published."""
    if "out" in order:
        await ctx.publish(order["out"], {"id": order["id"]}, key=str(order["id"]))
    await ctx.sleep(0.3)
    return {"order": order["id"], "run": ctx.info.run_id}


@workflow.defn("e2e.collector")
async def collector(ctx: workflow.WorkflowContext, expected: int) -> list[Any]:
    """Started (or signalled) by signal-with-start: takes ``expected`` signals, in order."""
    seen = []
    while len(seen) < expected:
        seen.append(await ctx.wait_signal("event"))
    return seen


@workflow.defn("e2e.tick")
async def tick(ctx: workflow.WorkflowContext, _: object) -> str:
    """Started by a schedule."""
    return ctx.info.workflow_id


@workflow.defn("e2e.napper")
async def napper(ctx: workflow.WorkflowContext, seconds: float) -> str:
    """A child that stays open a while (across its parent's continue-as-new)."""
    await ctx.sleep(seconds)
    return ctx.info.workflow_id


@workflow.defn("e2e.churn")
async def churn(ctx: workflow.WorkflowContext, state: dict[str, Any]) -> dict[str, Any]:
    """Each run starts a child that naps, takes up to three signals, and continues-as-new:
    signals keep arriving and children are open across every continue-as-new. Once it has
    ``target`` signals it awaits every child (from every run of the chain) and returns."""
    children = [*state.get("children", [])]
    child = await ctx.start_child(
        "e2e.napper", state.get("nap", 1.0), id=f"{ctx.info.workflow_id}-c{len(children)}"
    )
    children.append(child.workflow_id)
    seen = [*state.get("seen", [])]
    for _ in range(3):
        if len(seen) < state["target"]:
            seen.append(await ctx.wait_signal("n"))
    if len(seen) < state["target"]:
        ctx.continue_as_new({**state, "seen": seen, "children": children})
    results = [await ctx.get_child(c).result() for c in children]
    return {"seen": seen, "results": results, "runs": len(children)}
