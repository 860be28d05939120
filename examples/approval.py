"""An approval that waits for a human decision, with a deadline.

The workflow waits for a ``decision`` signal (payload ``{"approved": bool, "by": str}``). A
signal sent before the wait begins is buffered, so nothing is lost. If no decision arrives
within ``timeout`` seconds the request is not left hanging: it completes as ``expired``, with
the policy outcome ``auto_decision`` (rejected unless the input says otherwise).

Input: ``{"request": str, "timeout": float = 2.0, "auto_decision": "rejected"}``.
Result: ``{"request", "status": "approved" | "rejected" | "expired", "by", "decided_at"}``.
Query ``status`` (``aion query ID status``): the same fields while it waits (``waiting``),
and once decided; after the run closed it is answered by replaying it.
"""

from __future__ import annotations

from typing import Any

from aion import workflow

__all__ = ["approval"]

DEFAULT_TIMEOUT = 2.0


@workflow.defn("examples.approval")
async def approval(ctx: workflow.WorkflowContext, spec: dict[str, Any]) -> dict[str, Any]:
    """Wait for the ``decision`` signal or the timeout, whichever comes first."""
    state: dict[str, Any] = {"request": spec["request"], "status": "waiting", "by": None}

    @workflow.query("status")
    def status() -> dict[str, Any]:
        """Where the request stands (read-only: it only reads ``state``)."""
        return state

    try:
        decision = await ctx.wait_signal("decision", timeout=spec.get("timeout", DEFAULT_TIMEOUT))
    except workflow.SignalTimeout:
        state.update(
            status="expired",
            outcome=spec.get("auto_decision", "rejected"),
            decided_at=ctx.now().isoformat(),
        )
        return dict(state)
    approved = bool(decision.get("approved")) if isinstance(decision, dict) else False
    verdict = "approved" if approved else "rejected"
    state.update(
        status=verdict,
        outcome=verdict,
        by=decision.get("by") if isinstance(decision, dict) else None,
        decided_at=ctx.now().isoformat(),
    )
    return dict(state)
