"""Fan-out/fan-in: a parent starts one child per item, then aggregates their mixed outcomes.

All children are started before any is awaited, so they run concurrently; the parent then
collects every outcome, a failed child becoming an entry in ``failed`` rather than failing the
parent. Items whose index is in ``fail_every``-steps (``index % fail_every == fail_every - 1``)
fail, standing in for bad records.

Input: ``{"items": int = 50, "fail_every": int = 7}``. Result: ``{"items", "succeeded",
"failed": [{"item", "error"}], "total"}``, where ``total`` sums the successful children's
results (each child returns its index squared).
"""

from __future__ import annotations

from typing import Any

from aion import workflow

__all__ = ["DEFAULT_FAIL_EVERY", "DEFAULT_ITEMS", "expected_result", "fanout", "item"]

DEFAULT_ITEMS = 50
DEFAULT_FAIL_EVERY = 7


def _fails(index: int, fail_every: int) -> bool:
    return fail_every > 0 and index % fail_every == fail_every - 1


@workflow.defn("examples.fanout")
async def fanout(ctx: workflow.WorkflowContext, spec: dict[str, Any]) -> dict[str, Any]:
    """Start ``items`` children, await them all, and report what succeeded and what failed."""
    count = int(spec.get("items", DEFAULT_ITEMS))
    fail_every = int(spec.get("fail_every", DEFAULT_FAIL_EVERY))
    handles = [
        await ctx.start_child(
            "examples.fanout.item",
            {"index": index, "fail": _fails(index, fail_every)},
            id=f"{ctx.info.workflow_id}:item-{index:03d}",
        )
        for index in range(count)
    ]
    total = 0
    succeeded = 0
    failed: list[dict[str, Any]] = []
    for index, handle in enumerate(handles):
        try:
            total += await handle.result()
            succeeded += 1
        except workflow.ChildWorkflowFailed as error:
            failed.append({"item": index, "error": error.message})
    return {"items": count, "succeeded": succeeded, "failed": failed, "total": total}


@workflow.defn("examples.fanout.item")
async def item(ctx: workflow.WorkflowContext, spec: dict[str, Any]) -> int:
    """Process one item: its index squared, or a ``ValueError`` for a bad record."""
    if spec["fail"]:
        raise ValueError(f"item {spec['index']} is malformed")
    return int(spec["index"]) ** 2


def expected_result(
    items: int = DEFAULT_ITEMS, fail_every: int = DEFAULT_FAIL_EVERY
) -> dict[str, Any]:
    """What :func:`fanout` returns for this input (for tests and the demo)."""
    bad = [i for i in range(items) if _fails(i, fail_every)]
    return {
        "items": items,
        "succeeded": items - len(bad),
        "failed": [{"item": i, "error": f"ValueError: item {i} is malformed"} for i in bad],
        "total": sum(i * i for i in range(items) if i not in bad),
    }
