"""A poller that continues-as-new: poll every ``interval`` seconds until the work is ready.

Each run sleeps durably (the timer survives restarts), checks once, and — while not ready —
continues as a new run of the same workflow id carrying its state forward, so no single
run's history grows with the number of polls. The "external system" is simulated: it reports
ready on poll number ``ready_after``.

Input: ``{"ready_after": int = 3, "interval": float = 0.3, "polls": int = 0,
"checked_at": list[str] = []}``. Result: ``{"polls", "ready": True, "checked_at",
"runs"}`` where ``runs`` counts the runs of the chain (one per poll).
"""

from __future__ import annotations

from typing import Any

from aion import workflow

__all__ = ["poller"]

DEFAULT_READY_AFTER = 3
DEFAULT_INTERVAL = 0.3


@workflow.defn("examples.poller")
async def poller(ctx: workflow.WorkflowContext, state: dict[str, Any]) -> dict[str, Any]:
    """One poll per run; continue-as-new until ready."""
    await ctx.sleep(state.get("interval", DEFAULT_INTERVAL))
    polls = int(state.get("polls", 0)) + 1
    checked_at = [*state.get("checked_at", []), ctx.now().isoformat()]
    if polls < int(state.get("ready_after", DEFAULT_READY_AFTER)):
        ctx.continue_as_new({**state, "polls": polls, "checked_at": checked_at})
    return {"polls": polls, "ready": True, "checked_at": checked_at, "runs": polls}
