"""Workflows of the retention test (loaded by its stack's engine)."""

from __future__ import annotations

from aion import workflow


@workflow.defn("ret.parent")
async def parent(ctx: workflow.WorkflowContext, value: int) -> int:
    """Run one child and return its result plus one."""
    return int(await ctx.execute_child("ret.child", value, id=f"{ctx.info.workflow_id}-child")) + 1


@workflow.defn("ret.child")
async def child(ctx: workflow.WorkflowContext, value: int) -> int:
    """Return at once."""
    return value * 2
