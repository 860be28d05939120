"""Workflows of the recovery benchmark (``python -m bench.recovery``).

The history the benchmark writes straight to the topics is made by the engine's core running
these (a parent that runs one child, and an open workflow that waits for a signal with a
durable day-long deadline), and the engine processes it starts load this module too.
"""

from __future__ import annotations

from aion import workflow

__all__ = ["child", "parent", "quick", "waiting"]


@workflow.defn("recovery.parent")
async def parent(ctx: workflow.WorkflowContext, value: int) -> int:
    """Run one child and return its result plus one."""
    return int(await ctx.execute_child("recovery.child", value)) + 1


@workflow.defn("recovery.child")
async def child(ctx: workflow.WorkflowContext, value: int) -> int:
    """Return at once."""
    return value * 2


@workflow.defn("recovery.waiting")
async def waiting(ctx: workflow.WorkflowContext, value: int) -> object:
    """Open work: wait for a signal, with a durable timer a day away."""
    return await ctx.wait_signal("go", timeout=86_400)


@workflow.defn("recovery.quick")
async def quick(ctx: workflow.WorkflowContext, value: int) -> int:
    """A probe: completes in its first step."""
    return value
