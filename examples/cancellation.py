"""Cancellation that propagates to children.

The parent starts ``workers`` long-running children and waits for them. When the parent is
cancelled, the ``asyncio.CancelledError`` reaches it at its current ``await``; it lets the
error propagate, so its run ends ``CANCELLED``. Its open children then get their
parent-close policy: ``REQUEST_CANCEL`` children receive a cancellation of their own, which
they handle by cleaning up (a short durable sleep standing in for releasing a reservation)
before ending ``CANCELLED`` too; a ``TERMINATE`` child is ended at once (``terminated:…``).

Input: ``{"workers": int = 3, "terminate_last": bool = True}``. Without a cancellation the
children run until a ``finish`` signal each, and the parent returns their results.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aion import workflow

__all__ = ["job", "supervisor"]

DEFAULT_WORKERS = 3
CLEANUP_DELAY = 0.2


@workflow.defn("examples.cancellation")
async def supervisor(ctx: workflow.WorkflowContext, spec: dict[str, Any]) -> list[Any]:
    """Start the workers, wait for all of them; a cancellation propagates to every worker."""
    workers = int(spec.get("workers", DEFAULT_WORKERS))
    handles = []
    for index in range(workers):
        terminate = spec.get("terminate_last", True) and index == workers - 1
        policy = (
            workflow.ParentClosePolicy.TERMINATE
            if terminate
            else workflow.ParentClosePolicy.REQUEST_CANCEL
        )
        handles.append(
            await ctx.start_child(
                "examples.cancellation.job",
                {"index": index},
                id=f"{ctx.info.workflow_id}:job-{index}",
                parent_close_policy=policy,
            )
        )
    # A CancelledError raised here propagates: the run ends CANCELLED and the close
    # policies above reach the children that are still open.
    return [await handle.result() for handle in handles]


@workflow.defn("examples.cancellation.job")
async def job(ctx: workflow.WorkflowContext, spec: dict[str, Any]) -> dict[str, Any]:
    """Work until a ``finish`` signal; on cancellation clean up, then end cancelled."""
    try:
        payload = await ctx.wait_signal("finish")
    except asyncio.CancelledError:
        await ctx.sleep(CLEANUP_DELAY)  # release what the job held, durably
        raise
    return {"index": spec["index"], "finished": payload}
