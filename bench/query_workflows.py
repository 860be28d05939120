"""Workflows of the queries benchmark (``python -m bench.queries``)."""

from __future__ import annotations

from typing import Any

from aion import workflow

__all__ = ["tally"]


@workflow.defn("bench.queries.tally")
async def tally(ctx: workflow.WorkflowContext, _: Any) -> int:
    """Counts ``add`` signals until ``stop``; answers ``count``."""
    total = 0

    @workflow.query("count")
    def count() -> int:
        return total

    while True:
        value = await ctx.wait_signal("add")
        if value is None:
            return total
        total += int(value)
