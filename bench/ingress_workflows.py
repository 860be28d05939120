"""Workflows of the ingress benchmark (``python -m bench.ingress``): they return at once, so
the figures measure the path from a record to a started run, not workflow code."""

from __future__ import annotations

from typing import Any

from aion import workflow

__all__ = ["noop", "publisher"]


@workflow.defn("bench.ingress.noop")
async def noop(ctx: workflow.WorkflowContext, order: dict[str, Any]) -> str:
    """Return the order's id."""
    return str(order["id"])


@workflow.defn("bench.ingress.publisher")
async def publisher(ctx: workflow.WorkflowContext, spec: dict[str, Any]) -> int:
    """Publish ``spec["count"]`` records to ``spec["topic"]`` in one step."""
    for index in range(int(spec["count"])):
        await ctx.publish(spec["topic"], {"wf": ctx.info.workflow_id, "n": index}, key=str(index))
    return int(spec["count"])
