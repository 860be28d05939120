"""Workflows and activities of the activities benchmark (``python -m bench.activities``).

The engine loads the workflows and the worker the activities (both import this module); the
activity returns at once, so the figures measure aion's own path — engine → task topic →
worker → commands → engine — not activity code.
"""

from __future__ import annotations

from aion import activity, workflow

__all__ = ["fan", "local_steps", "noop", "single", "step", "steps"]


@activity.defn(name="bench.noop")
async def noop(value: int) -> int:
    """Return at once."""
    return value


@workflow.defn("bench.activities.fan")
async def fan(ctx: workflow.WorkflowContext, count: int) -> int:
    """Start ``count`` activities at once, then sum their results."""
    handles = [await ctx.start_activity(noop, i, start_to_close=30) for i in range(count)]
    return sum([int(await handle.result()) for handle in handles])


@workflow.defn("bench.activities.single")
async def single(ctx: workflow.WorkflowContext, value: int) -> int:
    """Run one activity and return its result."""
    return int(await ctx.execute_activity(noop, value, start_to_close=30))


@workflow.defn("bench.steps.activities")
async def steps(ctx: workflow.WorkflowContext, count: int) -> int:
    """``count`` activities one after another (the peers' 10-step workflow), summing their
    results as the peers' steppers do: ``count * (count - 1) // 2``."""
    total = 0
    for i in range(count):
        total += int(await ctx.execute_activity(noop, i, start_to_close=30))
    return total


async def step(value: int) -> int:
    """A local step that returns at once (the peers' steps do the same)."""
    return value


@workflow.defn("bench.steps.local")
async def local_steps(ctx: workflow.WorkflowContext, count: int) -> int:
    """``count`` local steps (``ctx.run``) one after another, summing as :func:`steps` does."""
    total = 0
    for i in range(count):
        total += int(await ctx.run(step, i))
    return total
