"""Greet people in parallel (one child workflow each, each composing its greeting in an
activity) and wait for a human's sign-off."""

from __future__ import annotations

from aion import activity, workflow

__all__ = ["compose_greeting", "greet", "greet_all", "sign_off"]


@activity.defn
async def compose_greeting(name: str) -> str:
    """Where a real project's I/O would go (a template service, say); run by a worker."""
    return f"hello, {name}"


@workflow.defn("greet")
async def greet(ctx: workflow.WorkflowContext, name: str) -> str:
    """One greeting; an empty name fails the child."""
    if not name:
        raise ValueError("nobody to greet")
    await ctx.sleep(0.1)  # a durable timer
    greeting: str = await ctx.execute_activity(compose_greeting, name, start_to_close=10)
    return greeting


@workflow.defn("greet-all")
async def greet_all(ctx: workflow.WorkflowContext, names: list[str]) -> dict[str, str]:
    """Greet everyone in parallel; a failed child becomes a ``failed: …`` entry."""
    handles = [await ctx.start_child("greet", name) for name in names]
    greetings: dict[str, str] = {}
    for name, handle in zip(names, handles, strict=True):
        try:
            greetings[name or "?"] = await handle.result()
        except workflow.ChildWorkflowFailed as failed:
            greetings[name or "?"] = f"failed: {failed.message}"
    return greetings


@workflow.defn("sign-off")
async def sign_off(ctx: workflow.WorkflowContext, document: str) -> dict[str, str]:
    """Wait for an ``approve`` signal naming who approved ``document``."""
    approval = await ctx.wait_signal("approve")
    return {"document": document, "approved_by": str(approval["by"])}
