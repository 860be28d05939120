"""Workflows of the end-to-end fan-out benchmark (``python -m bench.fanout``).

The engine processes the benchmark starts load this module (``--workflows
bench.fanout_workflows``); the children return at once, so the figures measure aion's own path
(API → commands → engine → events → watcher → engine), not workflow code.
"""

from __future__ import annotations

from aion import workflow

__all__ = ["child", "fanout_parent", "single_parent"]


@workflow.defn("bench.fanout.parent")
async def fanout_parent(ctx: workflow.WorkflowContext, children: int) -> int:
    """Start ``children`` children at once, then sum their results."""
    handles = [await ctx.start_child("bench.fanout.child", index) for index in range(children)]
    return sum([int(await handle.result()) for handle in handles])


@workflow.defn("bench.fanout.single")
async def single_parent(ctx: workflow.WorkflowContext, value: int) -> int:
    """Run one child and return its result."""
    return int(await ctx.execute_child("bench.fanout.child", value))


@workflow.defn("bench.fanout.child")
async def child(ctx: workflow.WorkflowContext, value: int) -> int:
    """Return at once."""
    return value
