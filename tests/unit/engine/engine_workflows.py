"""Workflows the engine tests run, in a registry of their own."""

from __future__ import annotations

import asyncio
from typing import Any

from aion.workflow import (
    ChildWorkflowFailed,
    ParentClosePolicy,
    SignalTimeout,
    WorkflowContext,
)
from aion_engine.registry import WorkflowRegistry


def make_registry() -> WorkflowRegistry:
    registry = WorkflowRegistry()

    @registry.defn("leaf")
    async def leaf(ctx: WorkflowContext, spec: dict[str, Any]) -> Any:
        """complete → returns; fail → raises; cancel/timeout → waits for ever."""
        mode = spec["mode"]
        if mode == "fail":
            raise ValueError(f"boom {spec['i']}")
        if mode in {"cancel", "timeout"}:
            await ctx.wait_signal("never")
        return {"i": spec["i"]}

    @registry.defn("fanout")
    async def fanout(ctx: WorkflowContext, specs: list[dict[str, Any]]) -> list[Any]:
        handles = []
        for spec in specs:
            timeout = 30 if spec["mode"] == "timeout" else None
            handle = await ctx.start_child(
                "leaf", spec, id=f"{ctx.info.workflow_id}/c{spec['i']}", execution_timeout=timeout
            )
            handles.append(handle)
        results: list[Any] = []
        for handle in handles:
            try:
                results.append(["ok", await handle.result()])
            except ChildWorkflowFailed as failed:
                results.append(["err", failed.message])
        return results

    @registry.defn("counter")
    async def counter(ctx: WorkflowContext, n: int) -> int:
        if n < 3:
            await ctx.sleep(1)
            ctx.continue_as_new(n + 1)
        return n

    @registry.defn("eager-counter")
    async def eager_counter(ctx: WorkflowContext, n: int) -> int:
        if n < 3:
            ctx.continue_as_new(n + 1)
        return n

    @registry.defn("looper")
    async def looper(ctx: WorkflowContext, n: int) -> int:
        ctx.continue_as_new(n + 1)

    @registry.defn("runs-counter")
    async def runs_counter(ctx: WorkflowContext, _: object) -> dict[str, Any]:
        return {"final": await ctx.execute_child("counter", 0, id="counter-child")}

    @registry.defn("signals")
    async def signals(ctx: WorkflowContext, _: object) -> list[Any]:
        await ctx.sleep(10)
        first = await ctx.wait_signal("x")
        second = await ctx.wait_signal("x")
        third = await ctx.wait_signal("y")
        return [first, second, third]

    @registry.defn("signal-timeout")
    async def signal_timeout(ctx: WorkflowContext, _: object) -> str:
        try:
            return str(await ctx.wait_signal("approve", timeout=60))
        except SignalTimeout:
            return "timed out"

    @registry.defn("sleeper")
    async def sleeper(ctx: WorkflowContext, seconds: float) -> str:
        await ctx.sleep(seconds)
        return f"slept until {ctx.now().isoformat()}"

    @registry.defn("waiter")
    async def waiter(ctx: WorkflowContext, _: object) -> Any:
        return await ctx.wait_signal("go")

    @registry.defn("guardian")
    async def guardian(ctx: WorkflowContext, _: object) -> list[str]:
        handles = [
            await ctx.start_child("leaf", {"mode": "cancel", "i": 0}, id="g-terminate"),
            await ctx.start_child(
                "leaf",
                {"mode": "cancel", "i": 1},
                id="g-cancel",
                parent_close_policy=ParentClosePolicy.REQUEST_CANCEL,
            ),
            await ctx.start_child(
                "leaf",
                {"mode": "cancel", "i": 2},
                id="g-abandon",
                parent_close_policy=ParentClosePolicy.ABANDON,
            ),
            await ctx.start_child("leaf", {"mode": "complete", "i": 3}, id="g-done"),
        ]
        return [str(await handle.result()) for handle in handles]

    @registry.defn("cleanup")
    async def cleanup(ctx: WorkflowContext, _: object) -> str:
        try:
            await ctx.wait_signal("never")
        except asyncio.CancelledError:
            await ctx.sleep(5)
            return "cleaned up"
        return "not cancelled"

    @registry.defn("asyncio-sleeper")
    async def asyncio_sleeper(ctx: WorkflowContext, _: object) -> None:
        await asyncio.sleep(1)

    @registry.defn("deterministic")
    async def deterministic(ctx: WorkflowContext, _: object) -> list[Any]:
        before = [ctx.random(), str(ctx.uuid4()), ctx.now().isoformat()]
        await ctx.wait_signal("go")
        return [*before, ctx.random(), str(ctx.uuid4()), ctx.now().isoformat(), ctx.info.run_id]

    @registry.defn("bad-child")
    async def bad_child(ctx: WorkflowContext, _: object) -> str:
        try:
            await ctx.execute_child("no-such-type", None, id="orphan")
        except ChildWorkflowFailed as failed:
            return failed.message
        return "started"

    @registry.defn("raiser")
    async def raiser(ctx: WorkflowContext, _: object) -> None:
        await ctx.wait_signal("go")
        raise RuntimeError("kaput")

    return registry
