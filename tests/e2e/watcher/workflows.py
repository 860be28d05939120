"""Workflows of the watcher's e2e test and benchmark, registered in the DEFAULT registry.

The engine runs them as a subprocess: ``python -m aion_engine --workflows
tests.e2e.watcher.workflows``.

``wx.parent`` starts its children with explicit ids (so the test can address them), then
awaits each and returns ``{child id: {"ok": result} | {"error": message}}``. ``wx.child`` runs
``hops`` continue-as-new hops (each run blocks on a short durable sleep first, so the chain
spans several event batches), then ends as its ``kind`` says:

- ``complete``: returns ``value``;
- ``fail``: raises ``ValueError("boom-<value>")`` (``ValueError: boom-<value>``);
- ``cancel``: waits for a signal that never comes, until the test sends ``CancelWorkflow``
  with reason ``op-<value>`` (the parent sees ``cancelled:op-<value>``);
- ``timeout``: sleeps for a minute under a 500 ms execution timeout (``timed_out:500ms``);
- ``signal`` (benchmark): waits for signal ``go`` and returns ``value``.
"""

from __future__ import annotations

from typing import Any

from aion import workflow

TIMEOUT_S = 0.5
HOP_SLEEP_S = 0.2


def expected_outcome(child: dict[str, Any]) -> dict[str, Any]:
    """What ``wx.parent`` reports for ``child`` (its spec)."""
    value = child["value"]
    match child["kind"]:
        case "complete" | "signal":
            return {"ok": value}
        case "fail":
            return {"error": f"ValueError: boom-{value}"}
        case "cancel":
            return {"error": f"cancelled:op-{value}"}
        case "timeout":
            return {"error": "timed_out:500ms"}
        case other:
            raise ValueError(f"unknown child kind {other!r}")


@workflow.defn("wx.parent")
async def parent(ctx: workflow.WorkflowContext, spec: dict[str, Any]) -> dict[str, Any]:
    """Start every child in ``spec["children"]``, then collect their outcomes in order."""
    handles = []
    for child_spec in spec["children"]:
        timeout = TIMEOUT_S if child_spec["kind"] == "timeout" else None
        handles.append(
            await ctx.start_child(
                "wx.child", child_spec, id=child_spec["id"], execution_timeout=timeout
            )
        )
    outcomes: dict[str, Any] = {}
    for handle in handles:
        try:
            outcomes[handle.workflow_id] = {"ok": await handle.result()}
        except workflow.ChildWorkflowFailed as err:
            outcomes[handle.workflow_id] = {"error": err.message}
    return outcomes


@workflow.defn("wx.child")
async def child(ctx: workflow.WorkflowContext, spec: dict[str, Any]) -> Any:
    """Hop ``hops`` times, optionally sleep, then end as ``kind`` says (module docstring)."""
    if spec.get("hops", 0) > 0:
        await ctx.sleep(HOP_SLEEP_S)
        ctx.continue_as_new({**spec, "hops": spec["hops"] - 1})
    if spec.get("sleep"):
        await ctx.sleep(spec["sleep"])
    value = spec["value"]
    match spec["kind"]:
        case "complete":
            return value
        case "fail":
            raise ValueError(f"boom-{value}")
        case "cancel":
            await ctx.wait_signal("never")
            return "not cancelled"
        case "timeout":
            await ctx.sleep(60)
            return "not timed out"
        case "signal":
            await ctx.wait_signal("go")
            return value
        case other:
            raise ValueError(f"unknown child kind {other!r}")
