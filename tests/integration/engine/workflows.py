"""Workflows the engine integration tests run, in their own registry."""

from __future__ import annotations

from typing import Any

from aion.workflow import ChildWorkflowFailed, WorkflowContext
from aion_common.domain import ParentClosePolicy
from aion_engine.registry import WorkflowRegistry

REGISTRY = WorkflowRegistry()


@REGISTRY.defn("it.parent")
async def parent(ctx: WorkflowContext, input: dict[str, Any]) -> list[dict[str, Any]]:
    """Start one child per requested outcome, then collect every child's result in order."""
    handles = []
    for index, outcome in enumerate(input["outcomes"]):
        timeout = 1.0 if outcome == "time_out" else None
        handles.append(
            await ctx.start_child(
                "it.child", {"outcome": outcome, "i": index}, execution_timeout=timeout
            )
        )
    results: list[dict[str, Any]] = []
    for handle in handles:
        try:
            results.append({"ok": await handle.result()})
        except ChildWorkflowFailed as err:
            results.append({"error": err.message})
    return results


@REGISTRY.defn("it.child")
async def child(ctx: WorkflowContext, input: dict[str, Any]) -> dict[str, Any]:
    """Complete, fail, or block (to be cancelled or timed out), as the input says."""
    outcome = input["outcome"]
    if outcome == "complete":
        return {"i": input["i"]}
    if outcome == "fail":
        raise ValueError(f"child {input['i']} failed")
    await ctx.sleep(3600)
    return {"i": input["i"], "slept": True}


@REGISTRY.defn("it.sleeper")
async def sleeper(ctx: WorkflowContext, input: dict[str, Any]) -> str:
    """A durable sleep, then a result."""
    await ctx.sleep(input["seconds"])
    return "woke"


@REGISTRY.defn("it.approval")
async def approval(ctx: WorkflowContext, input: dict[str, Any]) -> list[Any]:
    """Wait for ``count`` signals named ``approve`` and return their payloads in order."""
    return [await ctx.wait_signal("approve") for _ in range(input["count"])]


@REGISTRY.defn("it.poller")
async def poller(ctx: WorkflowContext, input: dict[str, Any]) -> dict[str, Any]:
    """Continue-as-new ``remaining`` times, then complete."""
    if input["remaining"] > 0:
        ctx.continue_as_new({"remaining": input["remaining"] - 1, "runs": input["runs"] + 1})
    return {"runs": input["runs"]}


@REGISTRY.defn("it.policy_parent")
async def policy_parent(ctx: WorkflowContext, input: dict[str, Any]) -> str:
    """Start two blocking children under ``policy`` and wait on them (to be cancelled)."""
    policy = ParentClosePolicy[input["policy"]]
    handles = [
        await ctx.start_child("it.child", {"outcome": "block", "i": i}, parent_close_policy=policy)
        for i in range(2)
    ]
    for handle in handles:
        await handle.result()
    return "unreachable"
